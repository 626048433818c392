/*
 * parleyctl_user.c - `parleyctl -d DIR user add|passwd|del|list`.
 *
 * JIDs are prepped with common/jid and must be bare (node@domain) in the
 * domain init configured. A password comes from the command line or, when
 * omitted, from stdin: one line, not echoed when stdin is a terminal. It
 * is used as UTF-8 bytes (no SASLprep yet, see common/scram.h) and stored
 * only as SCRAM-SHA-1 and SCRAM-SHA-256 keys: add and passwd write the
 * users row and both credentials rows in one transaction. On a stopped
 * instance the private cluster runs for the command's time only
 * (ctl_pg_borrow), so `init`, `user add`, `start` is a valid order.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "common/jid.h"
#include "common/mem.h"
#include "common/scram.h"
#include "tools/parleyctl.h"

/* A prepped bare JID in c's domain into out; 0 or 1 (printed). */
static int user_jid(const struct ctl *c, const char *arg, char *out, size_t outlen)
{
    int err = 0;
    struct jid *j = jid_new(arg, &err);
    if (j == NULL) {
        ctl_err("'%s' is not a valid JID", arg);
        return 1;
    }
    int rc = 1;
    if (j->node == NULL || j->resource != NULL)
        ctl_err("'%s': a user's JID is user@domain, without a resource", arg);
    else if (strcmp(j->domain, c->domain) != 0)
        ctl_err("'%s': unknown domain %s (this server serves %s)", arg, j->domain, c->domain);
    else if (j->bare_len >= outlen)
        ctl_err("'%s': too long", arg);
    else {
        memcpy(out, j->bare, j->bare_len + 1);
        rc = 0;
    }
    jid_free(j);
    return rc;
}

/* The password from argv or stdin into pw; 0 or 1 (printed). */
static int user_password(const char *arg, char *pw, size_t pwlen)
{
    if (arg != NULL) {
        if (strlen(arg) >= pwlen) {
            ctl_err("the password is longer than %d bytes", SCRAM_PASSWORD_MAX);
            return 1;
        }
        snprintf(pw, pwlen, "%s", arg);
    } else {
        struct termios old, quiet;
        bool tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
        if (tty) {
            fputs("Password: ", stderr);
            quiet = old;
            quiet.c_lflag &= (tcflag_t)~ECHO;
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        }
        char *got = fgets(pw, (int)pwlen, stdin);
        if (tty) {
            tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
            fputc('\n', stderr);
        }
        if (got == NULL) {
            ctl_err("no password given (on the command line or stdin)");
            return 1;
        }
        size_t n = strlen(pw);
        if (n > 0 && pw[n - 1] != '\n' && !feof(stdin)) {
            ctl_err("the password is longer than %d bytes", SCRAM_PASSWORD_MAX);
            return 1;
        }
        while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r'))
            pw[--n] = '\0';
    }
    if (pw[0] == '\0') {
        ctl_err("the password is empty");
        return 1;
    }
    return 0;
}

static bool user_is_state(const PGresult *res, const char *sqlstate)
{
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    return st != NULL && strcmp(st, sqlstate) == 0;
}

/* Run a parameterised command; the result (caller clears) or NULL printed. */
static PGresult *user_query(PGconn *conn, const char *sql, int n, const char *const *vals,
                            const int *lens, const int *fmts, const char *what)
{
    PGresult *res = PQexecParams(conn, sql, n, NULL, vals, lens, fmts, 0);
    ExecStatusType st = PQresultStatus(res);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    if (user_is_state(res, "23505"))
        ctl_err("%s: the user exists already", what);
    else
        ctl_db_error(conn, res, what);
    PQclear(res);
    return NULL;
}

static int user_simple(PGconn *conn, const char *sql)
{
    PGresult *res = user_query(conn, sql, 0, NULL, NULL, NULL, sql);
    PQclear(res);
    return res != NULL ? 0 : 1;
}

/* Both credentials rows for jid (inside the caller's transaction). */
static int user_credentials(PGconn *conn, const char *jid, const char *pw)
{
    for (int h = 0; h < SCRAM_HASH_COUNT; h++) {
        struct scram_keys k;
        char iter[16];
        if (scram_keys_new((enum scram_hash)h, pw, strlen(pw), SCRAM_ITER_DEFAULT, &k) < 0) {
            ctl_err("cannot derive the SCRAM keys (password too long?)");
            return 1;
        }
        snprintf(iter, sizeof(iter), "%u", k.iterations);
        const char *vals[] = {jid,  scram_mech_name(k.hash),    (const char *)k.salt,
                              iter, (const char *)k.stored_key, (const char *)k.server_key};
        const int lens[] = {0, 0, (int)k.salt_len, 0, (int)k.key_len, (int)k.key_len};
        const int fmts[] = {0, 0, 1, 0, 1, 1};
        PGresult *res = user_query(conn,
                                   "INSERT INTO credentials (jid, mechanism, salt, iterations, "
                                   "stored_key, server_key) VALUES ($1, $2, $3, $4::int, $5, $6)",
                                   6, vals, lens, fmts, "storing the credentials");
        mem_wipe(&k, sizeof(k));
        PQclear(res);
        if (res == NULL)
            return 1;
    }
    return 0;
}

static int user_add_or_passwd(const struct ctl *c, PGconn *conn, bool add, const char *jid,
                              const char *pw)
{
    if (user_simple(conn, "BEGIN") != 0)
        return 1;
    const char *vals[] = {jid, c->domain};
    PGresult *res;
    if (add) {
        res = user_query(conn, "INSERT INTO users (jid, domain) VALUES ($1, $2)", 2, vals, NULL,
                         NULL, jid);
    } else {
        res = user_query(conn, "SELECT 1 FROM users WHERE jid = $1 FOR UPDATE", 1, vals, NULL, NULL,
                         jid);
        if (res != NULL && PQntuples(res) == 0) {
            ctl_err("%s: no such user", jid);
            PQclear(res);
            res = NULL;
        }
        PQclear(res);
        if (res != NULL)
            res = user_query(conn, "DELETE FROM credentials WHERE jid = $1", 1, vals, NULL, NULL,
                             jid);
    }
    int rc = res != NULL ? user_credentials(conn, jid, pw) : 1;
    PQclear(res);
    if (rc == 0)
        rc = user_simple(conn, "COMMIT");
    else
        user_simple(conn, "ROLLBACK");
    return rc;
}

static int user_del(PGconn *conn, const char *jid)
{
    const char *vals[] = {jid};
    PGresult *res = user_query(conn, "DELETE FROM users WHERE jid = $1", 1, vals, NULL, NULL, jid);
    if (res == NULL)
        return 1;
    int rc = strcmp(PQcmdTuples(res), "1") == 0 ? 0 : 1;
    if (rc != 0)
        ctl_err("%s: no such user", jid);
    PQclear(res);
    return rc;
}

static int user_list(const struct ctl *c, PGconn *conn, const char *domain)
{
    PGresult *res;
    if (domain != NULL) {
        char *prepped = NULL;
        if (jid_prep_domain(domain, strlen(domain), &prepped, NULL) < 0) {
            ctl_err("'%s' is not a valid domain", domain);
            return 1;
        }
        if (strcmp(prepped, c->domain) != 0) {
            ctl_err("unknown domain %s (this server serves %s)", prepped, c->domain);
            free(prepped);
            return 1;
        }
        const char *vals[] = {prepped};
        res = user_query(conn, "SELECT jid FROM users WHERE domain = $1 ORDER BY jid", 1, vals,
                         NULL, NULL, "listing users");
        free(prepped);
    } else {
        res = user_query(conn, "SELECT jid FROM users ORDER BY jid", 0, NULL, NULL, NULL,
                         "listing users");
    }
    if (res == NULL)
        return 1;
    for (int i = 0; i < PQntuples(res); i++)
        printf("%s\n", PQgetvalue(res, i, 0));
    PQclear(res);
    return 0;
}

int ctl_cmd_user(struct ctl *c, int argc, char **argv)
{
    const char *sub = argc >= 2 ? argv[1] : "";
    bool add = strcmp(sub, "add") == 0, passwd = strcmp(sub, "passwd") == 0;
    bool del = strcmp(sub, "del") == 0, list = strcmp(sub, "list") == 0;
    if (!((add || passwd) && (argc == 3 || argc == 4)) && !(del && argc == 3) &&
        !(list && argc <= 3)) {
        ctl_err("usage: parleyctl -d DIR user add|passwd JID [PASSWORD] | user del JID | "
                "user list [DOMAIN]");
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    char jid[JID_FULL_MAX + 1], pw[SCRAM_PASSWORD_MAX + 2];
    if (!list && user_jid(c, argv[2], jid, sizeof(jid)) != 0)
        return 1;
    if ((add || passwd) && user_password(argc == 4 ? argv[3] : NULL, pw, sizeof(pw)) != 0) {
        mem_wipe(pw, sizeof(pw));
        return 1;
    }
    int lockfd;
    PGconn *conn = ctl_pg_borrow(c, &lockfd) < 0 ? NULL : ctl_db_connect(c);
    int rc = 1;
    if (conn != NULL) {
        if (add || passwd)
            rc = user_add_or_passwd(c, conn, add, jid, pw);
        else if (del)
            rc = user_del(conn, jid);
        else
            rc = user_list(c, conn, argc == 3 ? argv[2] : NULL);
    }
    mem_wipe(pw, sizeof(pw));
    PQfinish(conn);
    ctl_pg_return(c, lockfd);
    if (rc == 0 && !list)
        ctl_note("%s: %s", jid, add ? "added" : passwd ? "password changed" : "deleted");
    return rc;
}
