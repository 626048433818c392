/*
 * parleyctl_db.c - the database: connecting, the private cluster (initdb,
 * pg_ctl), roles, migrations, and `parleyctl db migrate|status`.
 *
 * Synchronous libpq throughout: parleyctl is a command-line tool, not an
 * event loop. The private cluster lives in DIR/pg (0711): data/ (initdb), run/
 * (its Unix socket, reachable by the daemons' users; listen_addresses is empty, so no TCP at all),
 * and postgres.log. Every role authenticates with scram-sha-256; the passwords are in
 * DIR/etc/secrets/db-<role>. As root, initdb and the postmaster run as the system user parley-db
 * (PostgreSQL refuses to run as root).
 *
 * Role passwords are sent as SCRAM verifiers computed here
 * (PQencryptPasswordConn), so the server never sees them in clear; DDL
 * takes no parameters, so the verifier is quoted with PQescapeLiteral.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/mem.h"
#include "common/rand.h"
#include "storage/migrate.h"
#include "tools/parleyctl.h"

/* The socket's port number (only its name: no TCP listener). */
#define PG_PORT "5432"

/* Roles the daemons log in as, with the system user owning the password. */
static const struct {
    const char *role;
    const char *user;
} db_roles[] = {{CTL_ROLE_C2S, "parley-c2s"}, {CTL_ROLE_SM, "parley-sm"}};

void ctl_db_error(PGconn *conn, const PGresult *res, const char *what)
{
    const char *msg = res != NULL ? PQresultErrorMessage(res) : "";
    if (msg == NULL || msg[0] == '\0')
        msg = PQerrorMessage(conn);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        n--;
    ctl_err("%s: %.*s", what, (int)n, msg);
}

static PGconn *db_connect_as(const struct ctl *c, const char *db, const char *role)
{
    char host[CTL_PATH_MAX], pwfile[CTL_PATH_MAX], pw[256];
    ctl_path(c, host, "pg/run");
    ctl_path(c, pwfile, "etc/secrets/db-%s", role);
    if (ctl_read_file(pwfile, pw, sizeof(pw)) < 0) {
        ctl_err("cannot read the password of %s from %s: %s", role, pwfile, strerror(errno));
        return NULL;
    }
    const char *keys[] = {"host", "port", "dbname", "user", "password", "connect_timeout", NULL};
    const char *vals[] = {host, PG_PORT, db, role, pw, "10", NULL};
    PGconn *conn = PQconnectdbParams(keys, vals, 0);
    mem_wipe(pw, sizeof(pw));
    if (PQstatus(conn) != CONNECTION_OK) {
        ctl_db_error(conn, NULL, "cannot connect to the database");
        ctl_err("is it running? `parleyctl -d %s start` starts the private cluster in %s/pg",
                c->dir, c->dir);
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

PGconn *ctl_db_connect(const struct ctl *c)
{
    if (c->private_db)
        return db_connect_as(c, CTL_DB_NAME, CTL_ROLE_ADMIN);
    PGconn *conn = PQconnectdb(c->dsn);
    if (PQstatus(conn) != CONNECTION_OK) {
        ctl_db_error(conn, NULL, "cannot connect to the database (the DSN in etc/parley.xml)");
        PQfinish(conn);
        return NULL;
    }
    return conn;
}

/* Run one command without parameters; 0 or 1 (printed). */
static int db_exec(PGconn *conn, const char *sql, const char *what)
{
    PGresult *res = PQexec(conn, sql);
    int ok = PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK;
    if (!ok)
        ctl_db_error(conn, res, what);
    PQclear(res);
    return ok ? 0 : 1;
}

/* A fresh password for role, written to its secret file (owned by user),
 * and the role given LOGIN with it (CREATE when create). */
static int db_role_password(const struct ctl *c, PGconn *conn, const char *role, const char *user,
                            bool create)
{
    char pw[2 * RAND_ID_HEXLEN + 1], path[CTL_PATH_MAX], sql[1024];
    uid_t uid = 0;
    gid_t gid = 0;
    if (c->as_root && user != NULL && ctl_user_ids(c, user, &uid, &gid) != 0)
        return 1;
    rand_id_hex(pw);
    rand_id_hex(pw + RAND_ID_HEXLEN);
    ctl_path(c, path, "etc/secrets/db-%s", role);
    if (ctl_write_file(c, path, pw, strlen(pw), 0600, uid, gid) != 0) {
        mem_wipe(pw, sizeof(pw));
        return 1;
    }
    char *verifier = PQencryptPasswordConn(conn, pw, role, "scram-sha-256");
    mem_wipe(pw, sizeof(pw));
    if (verifier == NULL) {
        ctl_db_error(conn, NULL, "cannot compute the password verifier");
        return 1;
    }
    char *lit = PQescapeLiteral(conn, verifier, strlen(verifier));
    char *ident = PQescapeIdentifier(conn, role, strlen(role));
    PQfreemem(verifier);
    int rc = 1;
    if (lit != NULL && ident != NULL) {
        snprintf(sql, sizeof(sql), "%s ROLE %s LOGIN PASSWORD %s", create ? "CREATE" : "ALTER",
                 ident, lit);
        rc = db_exec(conn, sql, create ? "CREATE ROLE" : "ALTER ROLE");
    }
    PQfreemem(lit);
    PQfreemem(ident);
    return rc;
}

int ctl_db_roles_login(const struct ctl *c, PGconn *conn)
{
    for (size_t i = 0; i < sizeof(db_roles) / sizeof(db_roles[0]); i++) {
        if (db_role_password(c, conn, db_roles[i].role, db_roles[i].user, false) != 0)
            return 1;
    }
    return 0;
}

int ctl_db_migrate(const struct ctl *c, PGconn *conn, bool quiet)
{
    char dir[CTL_PATH_MAX], err[1024];
    int applied = 0;
    ctl_schema_dir(c, dir);
    if (storage_migrate(conn, dir, &applied, err, sizeof(err)) < 0) {
        ctl_err("migration failed: %s", err);
        return 1;
    }
    if (!quiet)
        printf("schema: %d migration%s applied\n", applied, applied == 1 ? "" : "s");
    return 0;
}

/* /usr/lib/postgresql/<version>/bin of the cluster (its PG_VERSION), or of
 * the newest installed version when there is no cluster yet. */
static int pg_bindir(const struct ctl *c, char *out)
{
    char path[CTL_PATH_MAX], ver[32];
    ctl_path(c, path, "pg/data/PG_VERSION");
    if (ctl_read_file(path, ver, sizeof(ver)) == 0 && ver[0] != '\0' &&
        strspn(ver, "0123456789.") == strlen(ver)) {
        snprintf(out, CTL_PATH_MAX, "/usr/lib/postgresql/%s/bin", ver);
        return 0;
    }
    glob_t g;
    long best = -1;
    if (glob("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) {
            long v = strtol(g.gl_pathv[i] + strlen("/usr/lib/postgresql/"), NULL, 10);
            if (v > best) {
                best = v;
                snprintf(out, CTL_PATH_MAX, "%.*s", (int)(strlen(g.gl_pathv[i]) - 7),
                         g.gl_pathv[i]);
            }
        }
        globfree(&g);
    }
    if (best < 0) {
        ctl_err("no PostgreSQL server found (/usr/lib/postgresql/*/bin/initdb): install the "
                "Debian package postgresql, or give init --db DSN");
        return 1;
    }
    return 0;
}

bool ctl_pg_running(const struct ctl *c)
{
    char path[CTL_PATH_MAX];
    ctl_path(c, path, "pg/data/postmaster.pid");
    return ctl_pidfile_alive(path) != 0;
}

static int pg_ctl(const struct ctl *c, const char *action)
{
    char bindir[CTL_PATH_MAX], exe[CTL_PATH_MAX + 16], data[CTL_PATH_MAX], log[CTL_PATH_MAX];
    if (pg_bindir(c, bindir) != 0)
        return 1;
    snprintf(exe, sizeof(exe), "%s/pg_ctl", bindir);
    ctl_path(c, data, "pg/data");
    ctl_path(c, log, "pg/postgres.log");
    const char *argv[] = {exe,  "-D", data, "-l",   log,    "-w", "-t",
                          "60", "-s", "-m", "fast", action, NULL};
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    int st = ctl_exec(c, argv, CTL_DB_USER, devnull);
    if (devnull >= 0)
        close(devnull);
    if (st != 0) {
        ctl_err("pg_ctl %s failed for %s (exit %d); see %s", action, data, st, log);
        return 1;
    }
    return 0;
}

int ctl_pg_start(const struct ctl *c)
{
    if (!c->private_db || ctl_pg_running(c))
        return 0;
    return pg_ctl(c, "start");
}

int ctl_pg_stop(const struct ctl *c)
{
    if (!c->private_db || !ctl_pg_running(c))
        return 0;
    return pg_ctl(c, "stop");
}

int ctl_pg_borrow(const struct ctl *c, int *lockfd)
{
    char path[CTL_PATH_MAX];
    *lockfd = -1;
    if (!c->private_db || ctl_pg_running(c) || ctl_sup_pid(c) != 0)
        return 0;
    /* start.lock keeps a `start` out while the cluster is ours, so that
     * the stop below never takes it from a service that began meanwhile. */
    ctl_path(c, path, "ctl/start.lock");
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0) {
        ctl_err("`parleyctl -d %s start` is running; try again once it is done", c->dir);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    if (ctl_pg_running(c) || ctl_sup_pid(c) != 0) {
        close(fd);
        return 0;
    }
    if (ctl_pg_start(c) != 0) {
        close(fd);
        return -1;
    }
    *lockfd = fd;
    return 1;
}

void ctl_pg_return(const struct ctl *c, int lockfd)
{
    if (lockfd < 0)
        return;
    ctl_pg_stop(c);
    close(lockfd);
}

/* Append to (or replace) a file of the cluster, keeping its owner. */
static int pg_conf_write(const char *path, const char *text, bool append)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | (append ? O_APPEND : O_TRUNC));
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd) < 0) {
        ctl_err("cannot write %s: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

int ctl_pg_create(struct ctl *c)
{
    char bindir[CTL_PATH_MAX], exe[CTL_PATH_MAX + 16], pg[CTL_PATH_MAX], data[CTL_PATH_MAX];
    char run[CTL_PATH_MAX], pwfile[CTL_PATH_MAX], log[CTL_PATH_MAX], conf[2 * CTL_PATH_MAX];
    uid_t uid = 0;
    gid_t gid = 0;
    if (pg_bindir(c, bindir) != 0)
        return 1;
    if (c->as_root && ctl_user_ids(c, CTL_DB_USER, &uid, &gid) != 0)
        return 1;
    ctl_path(c, pg, "pg");
    ctl_path(c, data, "pg/data");
    ctl_path(c, run, "pg/run");
    ctl_path(c, log, "pg/initdb.log");
    /* pg/ is 0711: the daemons' users pass through it to the socket in
     * run/ but cannot list it; data/ is initdb's, 0700. */
    if (ctl_mkdir(c, pg, 0711, uid, gid) != 0 || ctl_mkdir(c, run, 0755, uid, gid) != 0)
        return 1;
    /* The superuser's password: kept for the operator in secrets/, and
     * given to initdb in a file parley-db can read, removed after. */
    char pw[2 * RAND_ID_HEXLEN + 2];
    rand_id_hex(pw);
    rand_id_hex(pw + RAND_ID_HEXLEN);
    ctl_path(c, pwfile, "etc/secrets/db-postgres");
    int rc = ctl_write_file(c, pwfile, pw, strlen(pw), 0600, 0, 0);
    ctl_path(c, pwfile, "pg/initdb.pw");
    if (rc == 0)
        rc = ctl_write_file(c, pwfile, pw, strlen(pw), 0600, uid, gid);
    mem_wipe(pw, sizeof(pw));
    if (rc != 0)
        return 1;

    snprintf(exe, sizeof(exe), "%s/initdb", bindir);
    char pwopt[CTL_PATH_MAX + 16];
    snprintf(pwopt, sizeof(pwopt), "--pwfile=%s", pwfile);
    const char *argv[] = {exe,        "-D",   data,         "-U",
                          "postgres", pwopt,  "-A",         "scram-sha-256",
                          "-E",       "UTF8", "--locale=C", NULL};
    /* pg/ belongs to parley-db: a fresh file, never one planted there. */
    int out = unlink(log) == 0 || errno == ENOENT
                  ? open(log, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600)
                  : -1;
    if (out >= 0 && c->as_root && fchown(out, uid, gid) < 0) {
        close(out);
        out = -1;
    }
    int st = ctl_exec(c, argv, CTL_DB_USER, out);
    if (out >= 0)
        close(out);
    unlink(pwfile);
    if (st != 0) {
        ctl_err("initdb failed (exit %d); see %s", st, log);
        return 1;
    }
    ctl_path(c, pwfile, "pg/data/postgresql.conf");
    snprintf(conf, sizeof(conf),
             "\n# parleyctl init: a private cluster, reachable only on its Unix socket.\n"
             "listen_addresses = ''\n"
             "port = " PG_PORT "\n"
             "unix_socket_directories = '%s'\n"
             "unix_socket_permissions = 0777\n"
             "password_encryption = 'scram-sha-256'\n",
             run);
    if (pg_conf_write(pwfile, conf, true) != 0)
        return 1;
    ctl_path(c, pwfile, "pg/data/pg_hba.conf");
    if (pg_conf_write(pwfile,
                      "# parleyctl init: local connections only, SCRAM for every role.\n"
                      "local all all scram-sha-256\n",
                      false) != 0)
        return 1;

    if (pg_ctl(c, "start") != 0)
        return 1;
    rc = 1;
    PGconn *su = db_connect_as(c, "postgres", "postgres");
    PGconn *admin = NULL;
    if (su != NULL && db_role_password(c, su, CTL_ROLE_ADMIN, NULL, true) == 0 &&
        db_role_password(c, su, CTL_ROLE_C2S, "parley-c2s", true) == 0 &&
        db_role_password(c, su, CTL_ROLE_SM, "parley-sm", true) == 0 &&
        db_exec(su, "CREATE DATABASE " CTL_DB_NAME " OWNER " CTL_ROLE_ADMIN " ENCODING 'UTF8'",
                "CREATE DATABASE") == 0 &&
        db_exec(su, "REVOKE ALL ON DATABASE " CTL_DB_NAME " FROM PUBLIC", "REVOKE") == 0 &&
        db_exec(su, "GRANT CONNECT ON DATABASE " CTL_DB_NAME " TO " CTL_ROLE_C2S ", " CTL_ROLE_SM,
                "GRANT CONNECT") == 0 &&
        (admin = db_connect_as(c, CTL_DB_NAME, CTL_ROLE_ADMIN)) != NULL &&
        ctl_db_migrate(c, admin, false) == 0 &&
        db_exec(su, "ALTER ROLE " CTL_ROLE_C2S " LOGIN", "ALTER ROLE") == 0 &&
        db_exec(su, "ALTER ROLE " CTL_ROLE_SM " LOGIN", "ALTER ROLE") == 0)
        rc = 0;
    PQfinish(admin);
    PQfinish(su);
    /* init leaves the cluster stopped: `start` runs it. */
    if (pg_ctl(c, "stop") != 0)
        rc = 1;
    return rc;
}

int ctl_cmd_db(struct ctl *c, int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "migrate") != 0 && strcmp(argv[1], "status") != 0)) {
        ctl_err("usage: parleyctl -d DIR db migrate|status");
        return 2;
    }
    int lockfd;
    if (ctl_load(c) != 0 || ctl_pg_borrow(c, &lockfd) < 0)
        return 1;
    PGconn *conn = ctl_db_connect(c);
    if (conn == NULL) {
        ctl_pg_return(c, lockfd);
        return 1;
    }
    int rc;
    if (strcmp(argv[1], "migrate") == 0) {
        rc = ctl_db_migrate(c, conn, false);
    } else {
        char dir[CTL_PATH_MAX], err[1024];
        int current = 0, latest = 0;
        ctl_schema_dir(c, dir);
        rc = storage_schema_status(conn, dir, &current, &latest, err, sizeof(err)) < 0;
        if (rc != 0)
            ctl_err("cannot read the schema version: %s", err);
        else
            printf("schema version %d of %d%s\n", current, latest,
                   current == latest ? " (up to date)" : " (run `parleyctl db migrate`)");
        if (rc == 0 && current != latest)
            rc = 1;
    }
    PQfinish(conn);
    ctl_pg_return(c, lockfd);
    return rc;
}
