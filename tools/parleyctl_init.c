/*
 * parleyctl_init.c - `parleyctl -d DIR init --domain D ...`: a new instance.
 *
 * In order: check DIR is new; as root, create the system users and the
 * group CTL_GROUP that reaches the router's socket (ctl_group_ensure); the
 * directories (as root, DIR's parents must already let the daemons' users
 * through: init refuses rather than change them), with one run/<daemon>
 * per daemon owned by its user; the router's per-daemon secrets and s2s's
 * dialback secret; a self-signed certificate for D each for c2s and s2s
 * (ctl_tls_write); the daemon configs from the templates (with --c2s N,
 * c2s-2 .. c2s-N too: parleyctl_c2s.c) and an empty s2s-routes.xml; the database (a private
 * cluster, or the schema applied through --db); and last
 * DIR/etc/parley.xml, whose presence marks DIR as initialised. A failure
 * half-way leaves DIR for inspection and tells to remove it: re-running
 * init on an existing DIR is refused rather than guessed at.
 *
 * The templates of sm, c2s and s2s are optional: a data directory without
 * one (a tree where that daemon does not exist yet) gets a note, no config
 * for it, and `start` leaves that daemon out. A template that names a
 * placeholder init does not know is an error, not a config with "@x@" in it.
 *
 * TLS: c2s and s2s each get their own self-signed certificate and key
 * (no daemon shares a key with another: DESIGN.md), c2s's in
 * etc/tls/D.crt and .key, s2s's in etc/tls/s2s/D.crt and .key. As root a
 * key is root's, readable by its daemon's group only (0640: parley-c2s,
 * parley-s2s). Both daemons load their key in their pre_jail hook, as
 * root, before they drop to their users (common/daemon.h); c2s reads it
 * again on SIGHUP (a renewed certificate), as its own user, which is why
 * its group may read it. That gives a daemon's user nothing it does not
 * hold in memory anyway, and no daemon's user can read the other's key.
 */
#include "autoconfig.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
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

/* Templates init fills, from the data directory: the file it writes to
 * DIR/etc, the daemon whose run directory is @runstatedir@, and whether a
 * data directory may lack it (a daemon not built in this tree yet). */
static const struct {
    const char *src;
    const char *dst;
    const char *daemon;
    bool optional;
} init_templates[] = {
    {"router.xml.in", "router.xml", "router", false},
    {"router-users.xml.in", "router-users.xml", "router", false},
    {"sm.xml.in", "sm.xml", "sm", true},
    {"c2s.xml.in", "c2s-1.xml", "c2s-1", true},
    {"s2s.xml.in", "s2s.xml", "s2s", true},
};

/* Placeholders a template may use; init_templates_write fills them in
 * this order. */
enum init_var_id {
    V_DOMAIN,
    V_SYSCONFDIR,
    V_RUNSTATEDIR,
    V_ROUTER_SOCKET,
    V_ROUTER_USER,
    V_C2S_USER,
    V_SM_USER,
    V_S2S_USER,
    V_SM_UID,
    V_C2S_UID,
    V_S2S_UID,
    V_ROUTER_PORT,
    V_C2S_PORT,
    V_C2S_TLS_PORT,
    V_S2S_PORT,
    V_S2S_TLS_PORT,
    V_DB_DSN,
    V_PARLEY_GROUP,
    V_C2S_NAME,
    V_COUNT
};
static const char *const init_var_names[V_COUNT] = {
    "domain",       "sysconfdir",  "runstatedir",  "router_socket", "router_user",
    "c2s_user",     "sm_user",     "s2s_user",     "sm_uid",        "c2s_uid",
    "s2s_uid",      "router_port", "c2s_port",     "c2s_tls_port",  "s2s_port",
    "s2s_tls_port", "db_dsn",      "parley_group", "c2s_name",
};

/* Router secrets: file name under etc/secrets and the daemon that owns it
 * (the router reads them too: group parley-router). */
static const struct {
    const char *name;
    const char *user;
} init_secrets[] = {{"sm", "parley-sm"}, {"c2s-1", "parley-c2s"}, {"s2s", "parley-s2s"}};

/* Each daemon's run directory DIR/run/<name>, owned by its user. */
static const struct {
    const char *name;
    const char *user;
} init_rundirs[] = {{"router", "parley-router"},
                    {"sm", "parley-sm"},
                    {"c2s-1", "parley-c2s"},
                    {"s2s", "parley-s2s"}};

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

/* Where each daemon's certificate and key live: DIR/etc/<dir>/D.crt and
 * .key; and the user whose group may read the key. c2s's keep the name
 * instances had before s2s got its own. */
static const struct {
    const char *daemon;
    const char *dir;
    const char *user;
} init_tls[] = {
    {"c2s", "tls", "parley-c2s"},
    {"s2s", "tls/s2s", "parley-s2s"},
};

/* The certificate and key paths of daemon's init_tls entry; the user
 * whose group may read the key, or NULL for a daemon not there. */
static const char *init_tls_user(const struct ctl *c, const char *daemon, char *crt, char *key)
{
    for (size_t i = 0; i < sizeof(init_tls) / sizeof(init_tls[0]); i++) {
        if (strcmp(init_tls[i].daemon, daemon) != 0)
            continue;
        ctl_path(c, crt, "etc/%s/%s.crt", init_tls[i].dir, c->domain);
        ctl_path(c, key, "etc/%s/%s.key", init_tls[i].dir, c->domain);
        return init_tls[i].user;
    }
    return NULL;
}

int ctl_tls_paths(const struct ctl *c, const char *daemon, char *crt, char *key)
{
    return init_tls_user(c, daemon, crt, key) != NULL ? 0 : 1;
}

int ctl_tls_own(const struct ctl *c, const char *daemon)
{
    char crt[CTL_PATH_MAX], key[CTL_PATH_MAX];
    const char *user = init_tls_user(c, daemon, crt, key);
    uid_t uid;
    gid_t gid = getgid();
    if (user == NULL || (c->as_root && ctl_user_ids(c, user, &uid, &gid) != 0))
        return 1;
    /* The key: root's and the daemon's group (see the top of the file);
     * the certificate is public. The group is set before the mode, so the
     * key is never readable by more than root and that group. */
    if (chown(key, getuid(), gid) < 0 || chmod(key, 0640) < 0 || chmod(crt, 0644) < 0) {
        ctl_err("cannot set the owner and modes of %s and %s: %s", crt, key, strerror(errno));
        return 1;
    }
    return 0;
}

int ctl_tls_write(const struct ctl *c, const char *daemon)
{
    char crt[CTL_PATH_MAX], key[CTL_PATH_MAX], dir[CTL_PATH_MAX];
    if (init_tls_user(c, daemon, crt, key) == NULL)
        return 1;
    snprintf(dir, sizeof(dir), "%s", key);
    *strrchr(dir, '/') = '\0';
    if (init_mkdir(c, dir, 0755, NULL) != 0)
        return 1;
    /* tls_selfsigned_write makes the key 0600: ctl_tls_own widens it to
     * the daemon's group only after the group is set. */
    if (tls_selfsigned_write(c->domain, CERT_DAYS, crt, key) < 0) {
        ctl_err("cannot write a self-signed certificate for %s to %s", c->domain, crt);
        return 1;
    }
    return ctl_tls_own(c, daemon);
}

int ctl_secret_write(const struct ctl *c, const char *name, const char *owner, mode_t mode,
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

/* Replace every "@name@" of vars in text. Inside comments anything else is
 * kept (e.g. "@placeholders@"); outside them an unknown "@name@" (lower
 * case letters and '_') is an error: the daemon would get it verbatim. */
static int init_fill(const char *tmpl, const char *text, char vars[][CTL_PATH_MAX], struct buf *out)
{
    const char *p = text;
    bool in_comment = false;
    while (*p != '\0') {
        if (!in_comment && strncmp(p, "<!--", 4) == 0) {
            in_comment = true;
            buf_append(out, p, 4);
            p += 4;
            continue;
        }
        if (in_comment && strncmp(p, "-->", 3) == 0) {
            in_comment = false;
            buf_append(out, p, 3);
            p += 3;
            continue;
        }
        if (*p != '@') {
            buf_append_byte(out, *p++);
            continue;
        }
        size_t n = strspn(p + 1, "abcdefghijklmnopqrstuvwxyz0123456789_");
        bool done = false;
        for (size_t i = 0; p[n + 1] == '@' && n > 0 && i < V_COUNT; i++) {
            if (strlen(init_var_names[i]) == n && memcmp(init_var_names[i], p + 1, n) == 0) {
                buf_append_str(out, vars[i]);
                p += n + 2;
                done = true;
                break;
            }
        }
        if (done)
            continue;
        if (!in_comment && n > 0 && p[n + 1] == '@') {
            ctl_err("template %s uses @%.*s@, which init does not fill", tmpl, (int)n, p + 1);
            return 1;
        }
        buf_append_byte(out, '@');
        p++;
    }
    return 0;
}

/* The DSN the daemons' configs get (@db_dsn@): libpq parameters without
 * user and password, which each daemon adds with its own role. The
 * private cluster's socket directory, or --db less its credentials. Each
 * value is quoted as libpq reads it, then escaped for XML text. */
static int init_db_dsn(const struct ctl *c, char *out)
{
    struct buf dsn, xml;
    buf_init(&dsn);
    buf_init(&xml);
    if (c->private_db) {
        char run[CTL_PATH_MAX];
        ctl_path(c, run, "pg/run");
        buf_append_str(&dsn, "host=");
        buf_append_str(&dsn, run);
        buf_append_str(&dsn, " port=5432 dbname=" CTL_DB_NAME);
    } else {
        char *err = NULL;
        PQconninfoOption *opts = PQconninfoParse(c->dsn, &err);
        if (opts == NULL) {
            ctl_err("--db: %s", err != NULL ? err : "cannot parse the DSN");
            PQfreemem(err);
            return 1;
        }
        for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
            if (o->val == NULL || strcmp(o->keyword, "user") == 0 ||
                strcmp(o->keyword, "password") == 0 || strcmp(o->keyword, "passfile") == 0)
                continue;
            if (dsn.len > 0)
                buf_append_byte(&dsn, ' ');
            buf_append_str(&dsn, o->keyword);
            buf_append_str(&dsn, "='");
            for (const char *v = o->val; *v != '\0'; v++) {
                if (*v == '\'' || *v == '\\')
                    buf_append_byte(&dsn, '\\');
                buf_append_byte(&dsn, *v);
            }
            buf_append_byte(&dsn, '\'');
        }
        PQconninfoFree(opts);
    }
    xml_escape_text(dsn.data != NULL ? dsn.data : "", dsn.len, &xml);
    int rc = 0;
    if (xml.len + 1 > CTL_PATH_MAX) {
        ctl_err("--db: the DSN is too long");
        rc = 1;
    } else {
        memcpy(out, xml.data != NULL ? xml.data : "", xml.len);
        out[xml.len] = '\0';
    }
    buf_free(&dsn);
    buf_free(&xml);
    return rc;
}

/* Fold the packaging paths into the instance's layout: the templates name
 * @runstatedir@/parley/... and @sysconfdir@/parley/..., an instance keeps
 * both inside DIR (run/<daemon>, etc), so "/parley" after either goes. */
static void init_fold(const char *text, struct buf *out)
{
    const char *p = text;
    for (const char *m; (m = strstr(p, "/parley/")) != NULL; p = m + 7) {
        bool packaged = (m - p >= 13 && memcmp(m - 13, "@runstatedir@", 13) == 0) ||
                        (m - p >= 12 && memcmp(m - 12, "@sysconfdir@", 12) == 0);
        buf_append(out, p, (size_t)(m - p));
        if (!packaged)
            buf_append(out, "/parley", 7);
    }
    buf_append(out, p, strlen(p) + 1);
}

/* The values of every placeholder but @runstatedir@ (per daemon). */
static char init_vars[V_COUNT][CTL_PATH_MAX];

static int init_vars_fill(const struct ctl *c)
{
    static const struct {
        enum init_var_id user, uid;
        const char *name;
    } daemon_users[] = {
        {V_ROUTER_USER, V_COUNT, "parley-router"},
        {V_SM_USER, V_SM_UID, "parley-sm"},
        {V_C2S_USER, V_C2S_UID, "parley-c2s"},
        {V_S2S_USER, V_S2S_UID, "parley-s2s"},
    };
    char(*vars)[CTL_PATH_MAX] = init_vars;
    struct passwd *me = getpwuid(getuid());
    if (!c->as_root && me == NULL) {
        ctl_err("who am I? uid %u has no passwd entry", (unsigned)getuid());
        return 1;
    }
    /* As root each daemon runs as its own user; otherwise all run as the
     * caller, whose name then goes in <user> (the skeleton skips the drop). */
    for (size_t i = 0; i < sizeof(daemon_users) / sizeof(daemon_users[0]); i++) {
        uid_t uid;
        gid_t gid;
        if (ctl_user_ids(c, daemon_users[i].name, &uid, &gid) != 0)
            return 1;
        snprintf(vars[daemon_users[i].user], CTL_PATH_MAX, "%s",
                 c->as_root ? daemon_users[i].name : me->pw_name);
        if (daemon_users[i].uid != V_COUNT)
            snprintf(vars[daemon_users[i].uid], CTL_PATH_MAX, "%u", (unsigned)uid);
    }
    /* The router socket's group: CTL_GROUP as root (ctl_group_ensure),
     * else the caller's own group, which every daemon runs with. */
    struct group *gr = c->as_root ? getgrnam(CTL_GROUP) : getgrgid(getgid());
    if (gr == NULL) {
        ctl_err("no group %s", c->as_root ? CTL_GROUP : "for my gid");
        return 1;
    }
    snprintf(vars[V_PARLEY_GROUP], CTL_PATH_MAX, "%s", gr->gr_name);
    snprintf(vars[V_DOMAIN], CTL_PATH_MAX, "%s", c->domain);
    ctl_path(c, vars[V_SYSCONFDIR], "etc");
    ctl_path(c, vars[V_ROUTER_SOCKET], "run/router/router.sock");
    snprintf(vars[V_ROUTER_PORT], CTL_PATH_MAX, "%d", c->router_port);
    snprintf(vars[V_C2S_PORT], CTL_PATH_MAX, "%d", c->c2s_port);
    snprintf(vars[V_C2S_TLS_PORT], CTL_PATH_MAX, "%d", c->c2s_tls_port);
    snprintf(vars[V_S2S_PORT], CTL_PATH_MAX, "%d", c->s2s_port);
    snprintf(vars[V_S2S_TLS_PORT], CTL_PATH_MAX, "%d", c->s2s_tls_port);
    return init_db_dsn(c, vars[V_DB_DSN]);
}

/* Fill the template srcname into DIR/etc/<dstname>, for daemon (its run
 * directory is @runstatedir@); c2s_k >= 1: the c2s instance c2s-<k>
 * (@c2s_name@, its router name, secret and pidfile; c2s-1 in the other
 * templates). 0, 1 (message), or -1 when an optional template is missing
 * (a note). */
static int init_template_one(const struct ctl *c, const char *srcname, const char *dstname,
                             const char *daemon, bool optional, int c2s_k)
{
    char src[CTL_PATH_MAX], dst[CTL_PATH_MAX];
    static char text[256 * 1024];
    snprintf(src, sizeof(src), "%s/%s", ctl_datadir(c), srcname);
    if (ctl_read_file(src, text, sizeof(text)) < 0) {
        if (errno == ENOENT && optional) {
            ctl_note("no template %s: %s is not set up (no etc/%s)", src, daemon, dstname);
            return -1;
        }
        ctl_err("cannot read the template %s: %s (set PARLEY_DATADIR or -T to the directory "
                "holding the *.xml.in templates)",
                src, strerror(errno));
        return 1;
    }
    /* The daemon's own run directory: its pidfile, the router's socket. */
    ctl_path(c, init_vars[V_RUNSTATEDIR], "run/%s", daemon);
    snprintf(init_vars[V_C2S_NAME], CTL_PATH_MAX, "c2s-%d", c2s_k > 1 ? c2s_k : 1);
    struct buf pre, out;
    buf_init(&pre);
    buf_init(&out);
    init_fold(text, &pre);
    int rc = init_fill(src, pre.data, init_vars, &out);
    buf_append_byte(&out, '\0');
    char want[64];
    snprintf(want, sizeof(want), "name='c2s-%d'", c2s_k);
    if (rc == 0 && c2s_k > 1 && strstr(out.data, want) == NULL) {
        ctl_err("template %s has no <router name='@c2s_name@'> to make %s of", src,
                init_vars[V_C2S_NAME]);
        rc = 1;
    }
    ctl_path(c, dst, "etc/%s", dstname);
    if (rc == 0)
        rc = ctl_write_file(c, dst, out.data, strlen(out.data), 0644, 0, 0);
    buf_free(&pre);
    buf_free(&out);
    return rc;
}

static int init_templates_write(const struct ctl *c)
{
    if (init_vars_fill(c) != 0)
        return 1;
    for (size_t t = 0; t < sizeof(init_templates) / sizeof(init_templates[0]); t++) {
        if (init_template_one(c, init_templates[t].src, init_templates[t].dst,
                              init_templates[t].daemon, init_templates[t].optional, 1) > 0)
            return 1;
    }
    return 0;
}

int ctl_c2s_config_write(const struct ctl *c, int k)
{
    char name[32], dst[48];
    snprintf(name, sizeof(name), "c2s-%d", k);
    snprintf(dst, sizeof(dst), "%s.xml", name);
    if (init_vars_fill(c) != 0)
        return 1;
    return init_template_one(c, "c2s.xml.in", dst, name, false, k) != 0;
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
             "  <ports c2s='%d' c2s-tls='%d' s2s='%d' s2s-tls='%d' router='%d'/>\n",
             c->domain, c->c2s_port, c->c2s_tls_port, c->s2s_port, c->s2s_tls_port, c->router_port);
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
        {"s2s-tls-port", required_argument, NULL, 'S'},
        {"router-port", required_argument, NULL, 'r'},
        {"c2s", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    const char *domain = NULL, *dsn = NULL;
    int opt, tls_port = 0, s2s_tls_port = 0, nc2s = 1;
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
        case 'S':
            bad = init_port("--s2s-tls-port", optarg, &s2s_tls_port);
            break;
        case 'r':
            bad = init_port("--router-port", optarg, &c->router_port);
            break;
        case 'n': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*optarg == '\0' || *end != '\0' || v < 1 || v > CTL_C2S_MAX) {
                ctl_err("--c2s: '%s' is not a number of c2s processes (1..%d)", optarg,
                        CTL_C2S_MAX);
                bad = 1;
            }
            nc2s = (int)v;
            break;
        }
        default:
            return 2;
        }
        if (bad)
            return 2;
    }
    if (optind != argc || domain == NULL) {
        ctl_err("usage: parleyctl -d DIR init --domain D [--db DSN] [--c2s-port N] "
                "[--c2s-tls-port N] [--s2s-port N] [--s2s-tls-port N] [--router-port N] "
                "[--c2s N]");
        return 2;
    }
    /* Direct TLS next to STARTTLS unless given: 5223 and 5270 by default. */
    c->c2s_tls_port = tls_port != 0 ? tls_port : c->c2s_port + 1;
    c->s2s_tls_port = s2s_tls_port != 0 ? s2s_tls_port : c->s2s_port + 1;
    if (c->c2s_tls_port > 65535 || c->s2s_tls_port > 65535) {
        ctl_err("--%s-tls-port: %d is out of range (give it explicitly)",
                c->c2s_tls_port > 65535 ? "c2s" : "s2s",
                c->c2s_tls_port > 65535 ? c->c2s_tls_port : c->s2s_tls_port);
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
    snprintf(path, sizeof(path), "%s/c2s.xml.in", ctl_datadir(c));
    if (nc2s > 1 && access(path, R_OK) != 0) {
        ctl_err("--c2s %d: no c2s template %s to make c2s-2 .. c2s-%d from", nc2s, path, nc2s);
        return 1;
    }
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
    if (c->as_root && (init_system_users(c) != 0 || ctl_group_ensure(c) != 0))
        return 1;
    static const char *const dirs[] = {"", "etc", "etc/secrets", "etc/tls", "run", "log", "ctl"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char p[CTL_PATH_MAX];
        ctl_path(c, p, "%s", dirs[i]);
        if (init_mkdir(c, p, strcmp(dirs[i], "log") == 0 ? 0750 : 0755, NULL) != 0)
            return 1;
    }
    for (size_t i = 0; i < sizeof(init_rundirs) / sizeof(init_rundirs[0]); i++) {
        ctl_path(c, path, "run/%s", init_rundirs[i].name);
        if (init_mkdir(c, path, 0755, init_rundirs[i].user) != 0)
            return 1;
    }
    for (size_t i = 0; i < sizeof(init_secrets) / sizeof(init_secrets[0]); i++) {
        if (ctl_secret_write(c, init_secrets[i].name, init_secrets[i].user, 0640,
                             "parley-router") != 0)
            return 1;
    }
    /* The dialback key secret (XEP-0185) lives only in s2s. */
    if (ctl_secret_write(c, "dialback", "parley-s2s", 0600, NULL) != 0)
        return 1;

    if (ctl_tls_write(c, "c2s") != 0 || ctl_tls_write(c, "s2s") != 0)
        return 1;

    if (init_templates_write(c) != 0 || ctl_routes_init(c) != 0)
        return 1;
    /* c2s-2 .. c2s-N beside the c2s-1 of the templates. */
    for (int k = 2; k <= nc2s; k++) {
        if (ctl_c2s_instance_add(c, k) != 0)
            return 1;
    }

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
    printf("initialised %s for %s (ports: c2s %d, c2s direct TLS %d, s2s %d, s2s direct TLS "
           "%d, router %d%s)\n",
           c->dir, c->domain, c->c2s_port, c->c2s_tls_port, c->s2s_port, c->s2s_tls_port,
           c->router_port, c->private_db ? "; private PostgreSQL in pg/" : "");
    return 0;
}
