/*
 * parleyctl_init.c - `parleyctl -d DIR init --domain D ...`: a new instance.
 *
 * In order: check DIR is new; as root, create the system users; the
 * directories (as root, DIR's parents must already let the daemons' users
 * through: init refuses rather than change them); the router's per-daemon secrets; a
 * self-signed certificate for D; the daemon configs from the templates;
 * the database (a private cluster, or the schema applied through --db);
 * and last DIR/etc/parley.xml, whose presence marks DIR as initialised. A
 * failure half-way leaves DIR for inspection and tells to remove it:
 * re-running init on an existing DIR is refused rather than guessed at.
 */
#include "autoconfig.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/jid.h"
#include "common/mem.h"
#include "common/rand.h"
#include "common/tls.h"
#include "common/xml.h"
#include "tools/parleyctl.h"

/* Templates init fills, from the data directory; later daemons add theirs. */
static const char *const init_templates[] = {"router.xml.in", "router-users.xml.in"};

/* Router secrets: file name under etc/secrets and the daemon that owns it
 * (the router reads them too: group parley-router). */
static const struct {
    const char *name;
    const char *user;
} init_secrets[] = {{"sm", "parley-sm"}, {"c2s-1", "parley-c2s"}, {"s2s", "parley-s2s"}};

static const char *const init_users[] = {"parley-router", "parley-c2s", "parley-s2s", "parley-sm",
                                         CTL_DB_USER};

#define CERT_DAYS 3650

static int init_system_users(const struct ctl *c)
{
    for (size_t i = 0; i < sizeof(init_users) / sizeof(init_users[0]); i++) {
        if (getpwnam(init_users[i]) != NULL)
            continue;
        const char *argv[] = {"/usr/sbin/useradd", "--system",     "--no-create-home",
                              "--home-dir",        "/nonexistent", "--shell",
                              "/usr/sbin/nologin", init_users[i],  NULL};
        if (ctl_exec(c, argv, NULL, -1) != 0) {
            ctl_err("useradd %s failed", init_users[i]);
            return 1;
        }
        ctl_note("created system user %s", init_users[i]);
    }
    return 0;
}

/* mkdir (if missing) with mode and owner (user, or the invoking user). */
static int init_mkdir(const struct ctl *c, const char *path, mode_t mode, const char *user)
{
    uid_t uid = 0;
    gid_t gid = 0;
    if (c->as_root && user != NULL && ctl_user_ids(c, user, &uid, &gid) != 0)
        return 1;
    return ctl_mkdir(c, path, mode, uid, gid);
}

/* As root: every ancestor of DIR must let the daemons' users through.
 * They are not ours to change: name the one in the way instead. */
static int init_parents_reachable(const struct ctl *c)
{
    char p[CTL_PATH_MAX];
    snprintf(p, sizeof(p), "%s", c->dir);
    for (char *slash = strrchr(p, '/'); slash != NULL; slash = strrchr(p, '/')) {
        if (slash == p)
            slash[1] = '\0';
        else
            *slash = '\0';
        struct stat st;
        if (stat(p, &st) < 0) {
            ctl_err("stat %s: %s", p, strerror(errno));
            return 1;
        }
        if ((st.st_mode & S_IXOTH) == 0) {
            ctl_err("%s is not searchable by others (o+x), so the daemons' users cannot reach "
                    "%s: choose a DIR they can reach, or `chmod o+x %s` if that is acceptable",
                    p, c->dir, p);
            return 1;
        }
        if (slash == p)
            break;
    }
    return 0;
}

/* An existing DIR must be a directory (not a symlink) of the invoking user. */
static int init_dir_check(const struct ctl *c)
{
    struct stat st;
    if (lstat(c->dir, &st) < 0)
        return 0;
    if (!S_ISDIR(st.st_mode)) {
        ctl_err("%s exists and is not a directory (a symlink?): refused", c->dir);
        return 1;
    }
    if (st.st_uid != geteuid()) {
        ctl_err("%s exists and belongs to uid %u, not to you: refused", c->dir,
                (unsigned)st.st_uid);
        return 1;
    }
    return 0;
}

static int init_secret_file(const struct ctl *c, const char *name, const char *owner, mode_t mode,
                            const char *group_of)
{
    char path[CTL_PATH_MAX], hex[2 * RAND_ID_HEXLEN + 2];
    uid_t uid = 0, guid;
    gid_t gid = 0;
    if (c->as_root && (ctl_user_ids(c, owner, &uid, &gid) != 0 ||
                       (group_of != NULL && ctl_user_ids(c, group_of, &guid, &gid) != 0)))
        return 1;
    rand_id_hex(hex);
    rand_id_hex(hex + RAND_ID_HEXLEN);
    hex[2 * RAND_ID_HEXLEN] = '\n';
    ctl_path(c, path, "etc/secrets/%s", name);
    int rc = ctl_write_file(c, path, hex, 2 * RAND_ID_HEXLEN + 1, mode, uid, gid);
    mem_wipe(hex, sizeof(hex));
    return rc;
}

/* Replace every "@name@" in text with its value; other text is copied. */
struct init_var {
    const char *name;
    char value[CTL_PATH_MAX];
};

static int init_fill(const char *tmpl_name, const char *text, const struct init_var *vars,
                     size_t nvars, struct buf *out)
{
    const char *p = text;
    while (*p != '\0') {
        const char *at = strchr(p, '@');
        if (at == NULL) {
            buf_append(out, p, strlen(p));
            break;
        }
        buf_append(out, p, (size_t)(at - p));
        const char *end = strchr(at + 1, '@');
        size_t n = end != NULL ? (size_t)(end - at - 1) : 0;
        bool done = false;
        for (size_t i = 0; end != NULL && i < nvars; i++) {
            if (strlen(vars[i].name) == n && memcmp(vars[i].name, at + 1, n) == 0) {
                buf_append(out, vars[i].value, strlen(vars[i].value));
                p = end + 1;
                done = true;
                break;
            }
        }
        if (!done) {
            /* Not ours (e.g. "@placeholders@" in a comment): kept as is. */
            buf_append(out, "@", 1);
            p = at + 1;
        }
    }
    return 0;
}

static int init_templates_write(const struct ctl *c)
{
    char uidbuf[3][32];
    const char *uid_users[3] = {"parley-sm", "parley-c2s", "parley-s2s"};
    for (int i = 0; i < 3; i++) {
        uid_t uid;
        gid_t gid;
        if (ctl_user_ids(c, uid_users[i], &uid, &gid) != 0)
            return 1;
        snprintf(uidbuf[i], sizeof(uidbuf[i]), "%u", (unsigned)uid);
    }
    struct passwd *me = getpwuid(getuid());
    if (!c->as_root && me == NULL) {
        ctl_err("who am I? uid %u has no passwd entry", (unsigned)getuid());
        return 1;
    }
    struct init_var vars[] = {
        {"domain", ""},   {"router_user", ""},  {"runstatedir", ""}, {"sysconfdir", ""},
        {"sm_uid", ""},   {"c2s_uid", ""},      {"s2s_uid", ""},     {"router_port", ""},
        {"c2s_port", ""}, {"c2s_tls_port", ""}, {"s2s_port", ""},
    };
    snprintf(vars[0].value, CTL_PATH_MAX, "%s", c->domain);
    snprintf(vars[1].value, CTL_PATH_MAX, "%s", c->as_root ? "parley-router" : me->pw_name);
    /* The templates name @runstatedir@/parley and @sysconfdir@/parley: an
     * instance keeps both inside DIR, so "/parley" is folded in below. The
     * router's run files go to its own directory, run/router, the only one
     * under run/ it may write (only the router's templates exist so far;
     * each daemon gets its own run/<name> when its templates come). */
    ctl_path(c, vars[2].value, "run/router");
    ctl_path(c, vars[3].value, "etc");
    snprintf(vars[4].value, CTL_PATH_MAX, "%s", uidbuf[0]);
    snprintf(vars[5].value, CTL_PATH_MAX, "%s", uidbuf[1]);
    snprintf(vars[6].value, CTL_PATH_MAX, "%s", uidbuf[2]);
    snprintf(vars[7].value, CTL_PATH_MAX, "%d", c->router_port);
    snprintf(vars[8].value, CTL_PATH_MAX, "%d", c->c2s_port);
    snprintf(vars[9].value, CTL_PATH_MAX, "%d", c->c2s_tls_port);
    snprintf(vars[10].value, CTL_PATH_MAX, "%d", c->s2s_port);

    for (size_t t = 0; t < sizeof(init_templates) / sizeof(init_templates[0]); t++) {
        char src[CTL_PATH_MAX], dst[CTL_PATH_MAX];
        static char text[256 * 1024];
        snprintf(src, sizeof(src), "%s/%s", ctl_datadir(c), init_templates[t]);
        if (ctl_read_file(src, text, sizeof(text)) < 0) {
            ctl_err("cannot read the template %s: %s (set PARLEY_DATADIR or -T to the directory "
                    "holding the *.xml.in templates)",
                    src, strerror(errno));
            return 1;
        }
        /* Fold the packaging paths into the instance's layout. */
        struct buf pre, out;
        buf_init(&pre);
        buf_init(&out);
        const char *p = text;
        for (const char *m; (m = strstr(p, "/parley/")) != NULL; p = m + 7) {
            bool packaged = (m - p >= 13 && memcmp(m - 13, "@runstatedir@", 13) == 0) ||
                            (m - p >= 12 && memcmp(m - 12, "@sysconfdir@", 12) == 0);
            buf_append(&pre, p, (size_t)(m - p));
            if (!packaged)
                buf_append(&pre, "/parley", 7);
        }
        buf_append(&pre, p, strlen(p) + 1);
        int rc = init_fill(init_templates[t], pre.data, vars, sizeof(vars) / sizeof(vars[0]), &out);
        buf_append_byte(&out, '\0');
        ctl_path(c, dst, "etc/%.*s", (int)(strlen(init_templates[t]) - 3), init_templates[t]);
        if (rc == 0)
            rc = ctl_write_file(c, dst, out.data, strlen(out.data), 0644, 0, 0);
        buf_free(&pre);
        buf_free(&out);
        if (rc != 0)
            return 1;
    }
    return 0;
}

static int init_parley_xml(const struct ctl *c)
{
    char path[CTL_PATH_MAX];
    struct buf b;
    buf_init(&b);
    char head[2048];
    snprintf(head, sizeof(head),
             "<?xml version='1.0'?>\n"
             "<!-- parley.xml - written by `parleyctl init`: what the instance in this\n"
             "     directory is. parleyctl reads it; the daemons read their own files. -->\n"
             "<parley>\n"
             "  <domain>%s</domain>\n"
             "  <ports c2s='%d' c2s-tls='%d' s2s='%d' router='%d'/>\n",
             c->domain, c->c2s_port, c->c2s_tls_port, c->s2s_port, c->router_port);
    buf_append(&b, head, strlen(head));
    if (c->private_db) {
        const char *db = "  <!-- the private PostgreSQL cluster in pg/ -->\n"
                         "  <db private='true'/>\n";
        buf_append(&b, db, strlen(db));
    } else {
        buf_append(&b, "  <db><dsn>", 11);
        xml_escape_text(c->dsn, strlen(c->dsn), &b);
        buf_append(&b, "</dsn></db>\n", 12);
    }
    buf_append(&b, "</parley>\n", 10);
    ctl_path(c, path, "etc/parley.xml");
    /* A DSN may hold a password. */
    int rc = ctl_write_file(c, path, b.data, b.len, c->private_db ? 0644 : 0600, 0, 0);
    buf_free(&b);
    return rc;
}

static int init_port(const char *opt, const char *arg, int *out)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (*arg == '\0' || *end != '\0' || v < 1 || v > 65535) {
        ctl_err("%s: '%s' is not a port number (1..65535)", opt, arg);
        return 1;
    }
    *out = (int)v;
    return 0;
}

int ctl_cmd_init(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {
        {"domain", required_argument, NULL, 'D'},
        {"db", required_argument, NULL, 'b'},
        {"c2s-port", required_argument, NULL, 'c'},
        {"c2s-tls-port", required_argument, NULL, 't'},
        {"s2s-port", required_argument, NULL, 's'},
        {"router-port", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0},
    };
    const char *domain = NULL, *dsn = NULL;
    int opt, tls_port = 0;
    c->c2s_port = 5222;
    c->s2s_port = 5269;
    c->router_port = 5347;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'D':
            domain = optarg;
            break;
        case 'b':
            dsn = optarg;
            break;
        case 'c':
            bad = init_port("--c2s-port", optarg, &c->c2s_port);
            break;
        case 't':
            bad = init_port("--c2s-tls-port", optarg, &tls_port);
            break;
        case 's':
            bad = init_port("--s2s-port", optarg, &c->s2s_port);
            break;
        case 'r':
            bad = init_port("--router-port", optarg, &c->router_port);
            break;
        default:
            return 2;
        }
        if (bad)
            return 2;
    }
    if (optind != argc || domain == NULL) {
        ctl_err("usage: parleyctl -d DIR init --domain D [--db DSN] [--c2s-port N] "
                "[--c2s-tls-port N] [--s2s-port N] [--router-port N]");
        return 2;
    }
    c->c2s_tls_port = tls_port != 0 ? tls_port : c->c2s_port + 1;
    if (c->c2s_tls_port > 65535) {
        ctl_err("--c2s-tls-port: %d is out of range (give it explicitly)", c->c2s_tls_port);
        return 2;
    }

    char *prepped = NULL;
    if (jid_prep_domain(domain, strlen(domain), &prepped, NULL) < 0 || prepped[0] == '[' ||
        strspn(prepped, "abcdefghijklmnopqrstuvwxyz0123456789-.") != strlen(prepped)) {
        ctl_err("--domain: '%s' is not a valid domain name (letters, digits, '-', '.')", domain);
        free(prepped);
        return 1;
    }
    snprintf(c->domain, sizeof(c->domain), "%s", prepped);
    free(prepped);
    c->private_db = dsn == NULL;
    snprintf(c->dsn, sizeof(c->dsn), "%s", dsn != NULL ? dsn : "");

    char path[CTL_PATH_MAX];
    ctl_path(c, path, "etc/parley.xml");
    if (access(path, F_OK) == 0) {
        ctl_err("%s is already initialised (%s exists); remove the directory to start over", c->dir,
                path);
        return 1;
    }
    ctl_path(c, path, "pg/data");
    if (access(path, F_OK) == 0) {
        ctl_err("%s holds a database cluster (%s) but no etc/parley.xml: an earlier init failed "
                "half-way; remove the directory and run init again",
                c->dir, path);
        return 1;
    }

    if (init_dir_check(c) != 0 || (c->as_root && init_parents_reachable(c) != 0))
        return 1;
    if (c->as_root && init_system_users(c) != 0)
        return 1;
    char p[7][CTL_PATH_MAX];
    ctl_path(c, p[0], "etc");
    ctl_path(c, p[1], "etc/secrets");
    ctl_path(c, p[2], "etc/tls");
    ctl_path(c, p[3], "run");
    ctl_path(c, p[4], "log");
    ctl_path(c, p[5], "ctl");
    ctl_path(c, p[6], "run/router");
    if (init_mkdir(c, c->dir, 0755, NULL) != 0 || init_mkdir(c, p[0], 0755, NULL) != 0 ||
        init_mkdir(c, p[1], 0755, NULL) != 0 || init_mkdir(c, p[2], 0755, NULL) != 0 ||
        init_mkdir(c, p[3], 0755, NULL) != 0 || init_mkdir(c, p[4], 0750, NULL) != 0 ||
        init_mkdir(c, p[5], 0755, NULL) != 0 || init_mkdir(c, p[6], 0755, "parley-router") != 0)
        return 1;

    for (size_t i = 0; i < sizeof(init_secrets) / sizeof(init_secrets[0]); i++) {
        if (init_secret_file(c, init_secrets[i].name, init_secrets[i].user, 0640,
                             "parley-router") != 0)
            return 1;
    }

    char crt[CTL_PATH_MAX], key[CTL_PATH_MAX];
    ctl_path(c, crt, "etc/tls/%s.crt", c->domain);
    ctl_path(c, key, "etc/tls/%s.key", c->domain);
    if (tls_selfsigned_write(c->domain, CERT_DAYS, crt, key) < 0) {
        ctl_err("cannot write a self-signed certificate for %s to %s", c->domain, crt);
        return 1;
    }

    if (init_templates_write(c) != 0)
        return 1;

    if (c->private_db) {
        if (ctl_pg_create(c) != 0) {
            ctl_err("init failed; remove %s and run init again", c->dir);
            return 1;
        }
    } else {
        PGconn *conn = ctl_db_connect(c);
        int rc = conn != NULL ? ctl_db_migrate(c, conn, false) : 1;
        if (rc == 0)
            rc = ctl_db_roles_login(c, conn);
        PQfinish(conn);
        if (rc != 0)
            return 1;
    }

    if (init_parley_xml(c) != 0)
        return 1;
    printf("initialised %s for %s (router port %d%s)\n", c->dir, c->domain, c->router_port,
           c->private_db ? ", private PostgreSQL in pg/" : "");
    return 0;
}
