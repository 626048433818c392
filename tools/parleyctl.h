/*
 * parleyctl.h - what the parts of parleyctl share.
 *
 * parleyctl is a command-line tool: every command runs to completion with
 * blocking calls (files, fork/exec, synchronous libpq), which is fine here
 * and nowhere else. The one long-lived part is the supervisor that `start`
 * forks (parleyctl_run.c): it runs a libuv loop and blocks it only for the
 * small writes of its state file.
 *
 * The instance directory DIR (-d) holds everything:
 *   DIR/etc/parley.xml          what init decided: domain, ports, database
 *   DIR/etc/<daemon>.xml        daemon configs, from the etc/ templates:
 *                               router.xml, router-users.xml, sm.xml,
 *                               c2s-1.xml .. c2s-N.xml (each from
 *                               c2s.xml.in: init --c2s N, `c2s add`), s2s.xml
 *   DIR/etc/s2s-routes.xml      s2s static routes (`parleyctl route`)
 *   DIR/etc/secrets/            router secrets per daemon, db-<role> passwords,
 *                               component-<name> secrets, dialback (s2s's)
 *   DIR/etc/tls/<domain>.crt/.key  c2s's certificate (self-signed by init);
 *                               as root the key is root's, group parley-c2s,
 *                               0640: c2s loads it in pre_jail, before it
 *                               drops root, and again on SIGHUP
 *   DIR/etc/tls/s2s/<domain>.crt/.key  s2s's own, its key root's, group
 *                               parley-s2s, 0640 (no daemon shares a key)
 *   DIR/ctl/                    the supervisor's pidfile (parleyctl.pid, which
 *                               it holds locked), edit.lock (table edits),
 *                               state file, reload/
 *                               (which daemons a HUP is for); owned by
 *                               the invoking user (root as root), so no
 *                               daemon's user can plant anything there
 *   DIR/run/<daemon>/           each daemon's own writable directory (its
 *                               pidfile, the router's socket); DIR/run
 *                               itself belongs to the invoking user. As
 *                               root the router's socket is group
 *                               CTL_GROUP, mode 0660 (router.xml): the
 *                               users of sm, c2s and s2s are in that group
 *   DIR/log/                    one log per daemon and parleyctl.log
 *   DIR/pg/                     the private PostgreSQL cluster (no --db):
 *                               data/, run/ (its socket), postgres.log; pg/
 *                               is 0711 so the daemons' users reach run/
 *
 * Files found outside DIR (templates, schema, daemons): ctl_datadir() and
 * ctl_daemon_exe() look in the build tree when parleyctl runs from it, else
 * in the installed locations; PARLEY_DATADIR or -T overrides the data dir.
 */
#ifndef PARLEY_PARLEYCTL_H
#define PARLEY_PARLEYCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <libpq-fe.h>

#define CTL_PATH_MAX 4096

/* Everything a command needs; filled by main and ctl_load. */
struct ctl {
    char dir[CTL_PATH_MAX]; /* absolute instance directory */
    const char *datadir;    /* -T, or NULL: see ctl_datadir */
    bool as_root;           /* running as uid 0: per-daemon users */
    /* From DIR/etc/parley.xml (ctl_load). */
    char domain[1024];
    char dsn[2048]; /* --db DSN; empty: the private cluster */
    bool private_db;
    int c2s_port, c2s_tls_port, s2s_port, s2s_tls_port, router_port;
};

/* One daemon parleyctl starts, in dependency order (parleyctl_run.c). */
struct ctl_daemon {
    const char *name;   /* "router": config DIR/etc/router.xml, log DIR/log/router.log,
                         * run directory DIR/run/router */
    const char *exe;    /* "parley-router" */
    const char *subdir; /* where the build tree has it: "router" */
    const char *user;   /* system user as root: "parley-router" */
    const char *ready;  /* the line it logs once serving ("sm ready"); NULL:
                         * the router, checked by its socket and port */
};
extern const struct ctl_daemon ctl_daemons[];
extern const size_t ctl_daemon_count;

/* c2s processes an instance may run: c2s-1 .. c2s-CTL_C2S_MAX, each with
 * its own config, router name and secret, sharing the ports (SO_REUSEPORT). */
#define CTL_C2S_MAX 16
/* Every entry of ctl_daemons: router, sm, the c2s, s2s. */
#define CTL_DAEMONS_MAX (CTL_C2S_MAX + 3)

/* System users init creates as root (the daemons', and parley-db). */
#define CTL_DB_USER "parley-db"
/* The group whose members reach the router's Unix socket (router.xml's
 * <unix group>): the users of router, sm, c2s and s2s, as root. */
#define CTL_GROUP "parley"

/* The database roles (storage/schema/001-initial.sql). */
#define CTL_ROLE_ADMIN "parley_admin"
#define CTL_ROLE_C2S   "parley_c2s"
#define CTL_ROLE_SM    "parley_sm"
#define CTL_DB_NAME    "parley"

/* Messages to stderr prefixed "parleyctl: "; errors return 1 from commands. */
void ctl_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ctl_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* DIR/<rel> into out (CTL_PATH_MAX). */
void ctl_path(const struct ctl *c, char *out, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Directory holding the templates and schema/ (see the header). */
const char *ctl_datadir(const struct ctl *c);
/* The schema directory (storage/schema in the build tree). */
void ctl_schema_dir(const struct ctl *c, char *out);
/* Path of a daemon's executable. */
void ctl_daemon_exe(const struct ctl_daemon *d, char *out);
/* The daemon named name, or NULL. */
const struct ctl_daemon *ctl_daemon_find(const char *name);
/* Does the instance run d? Its config DIR/etc/<name>.xml exists (init
 * writes a daemon's config only when the daemon's template is there). */
bool ctl_daemon_configured(const struct ctl *c, const struct ctl_daemon *d);
/* Ask the running supervisor to HUP daemon name (NULL: every daemon).
 * 1 if it was asked, 0 if no supervisor runs, -1 on error (printed). A
 * configured daemon the supervisor does not run yet (`c2s add`) is
 * started instead. */
int ctl_reload(const struct ctl *c, const char *name);
/* The same for n names with one HUP. */
int ctl_reload_names(const struct ctl *c, const char *const *names, size_t n);

/* Read DIR/etc/parley.xml into c. 0, or 1 with a message (not initialised). */
int ctl_load(struct ctl *c);

/* uid/gid of a system user (as root) or of the caller (otherwise). */
int ctl_user_ids(const struct ctl *c, const char *user, uid_t *uid, gid_t *gid);
/* Read a whole small file (secret) into out, without a trailing newline.
 * 0 or -1 (errno). */
int ctl_read_file(const char *path, char *out, size_t outlen);
struct xml_node;
/* Read the XML file path (at most max bytes) into *text (xmalloc'ed) and
 * parse it into *root; the caller frees both. 0, or 1 (printed, nothing to
 * free). With missing_ok a missing file is 0 with *text and *root NULL. */
int ctl_read_xml(const char *path, size_t max, bool missing_ok, char **text,
                 struct xml_node **root);
/* Write data to path with mode, owned by uid:gid when root. 0 or 1 (message). */
int ctl_write_file(const struct ctl *c, const char *path, const char *data, size_t len, mode_t mode,
                   uid_t uid, gid_t gid);
/* Run argv (argv[0] a full path) and wait; as root under user when user
 * is not NULL. stdout/stderr go to out_fd when >= 0. The exit status
 * (0..255), or -1 if it could not run or was killed. */
int ctl_exec(const struct ctl *c, const char *const *argv, const char *user, int out_fd);
/* Pid from a pidfile if that process is alive, else 0: for display and
 * liveness only, never to send a signal (another user may write it). */
pid_t ctl_pidfile_alive(const char *path);
/* mkdir path (if missing), then its mode and (as root) owner, refusing
 * an existing symlink or non-directory. 0 or 1 (message). */
int ctl_mkdir(const struct ctl *c, const char *path, mode_t mode, uid_t uid, gid_t gid);
/* As root: the group CTL_GROUP exists (groupadd) and the users of router,
 * sm, c2s and s2s are in it (usermod -a -G): the router gives its socket
 * to that group, mode 0660, and sm, c2s and s2s keep it (their configs'
 * <groups>) when they drop root (common/daemon). An existing group with
 * other members (listed or by primary group) is refused: they could
 * connect to the socket. 0 or 1 (message); nothing to do when not root. */
int ctl_group_ensure(const struct ctl *c);
/* Serialise edits of the shared tables (router-users.xml, the c2s
 * configs, s2s-routes.xml): an exclusive flock on DIR/ctl/edit.lock,
 * waited for, held until ctl_edit_unlock (or exit). The fd, or -1
 * (message). */
int ctl_edit_lock(const struct ctl *c);
void ctl_edit_unlock(int fd);
/* DIR/ctl/parleyctl.pid opened with flags (O_RDWR, | O_CREAT). */
int ctl_sup_lock_fd(const struct ctl *c, int flags);
/* The running supervisor's pid (the holder of its pidfile's lock), or 0. */
pid_t ctl_sup_pid(const struct ctl *c);

/* Commands: argc/argv start after the command word(s). Return the exit code. */
int ctl_cmd_init(struct ctl *c, int argc, char **argv);
int ctl_cmd_start(struct ctl *c, int argc, char **argv);
int ctl_cmd_stop(struct ctl *c, int argc, char **argv);
int ctl_cmd_status(struct ctl *c, int argc, char **argv);
int ctl_cmd_user(struct ctl *c, int argc, char **argv);
int ctl_cmd_component(struct ctl *c, int argc, char **argv);
int ctl_cmd_db(struct ctl *c, int argc, char **argv);
int ctl_cmd_route(struct ctl *c, int argc, char **argv);
/* An empty DIR/etc/s2s-routes.xml (init). 0 or 1 (message). */
int ctl_routes_init(const struct ctl *c);
int ctl_cmd_reload(struct ctl *c, int argc, char **argv);
int ctl_cmd_c2s(struct ctl *c, int argc, char **argv);
/* An instance made by an older parleyctl brought up to date (parleyctl_upgrade.c). */
int ctl_cmd_upgrade(struct ctl *c, int argc, char **argv);

/* Templates and secrets (parleyctl_init.c). */
/* A fresh random router secret DIR/etc/secrets/<name>, owned by owner
 * (as root), group of group_of when not NULL, with mode. 0 or 1. */
int ctl_secret_write(const struct ctl *c, const char *name, const char *owner, mode_t mode,
                     const char *group_of);
/* A new self-signed certificate for the domain and its key for daemon
 * ("c2s": etc/tls/D.crt, .key; "s2s": etc/tls/s2s/D.crt, .key), the key
 * mode 0640, root's and (as root) the group of the daemon's user. 0 or 1. */
int ctl_tls_write(const struct ctl *c, const char *daemon);
/* The paths of daemon's certificate and key (CTL_PATH_MAX each). 0 or 1. */
int ctl_tls_paths(const struct ctl *c, const char *daemon, char *crt, char *key);
/* Give daemon's existing certificate and key the owners and modes
 * ctl_tls_write gives them. 0 or 1 (message). */
int ctl_tls_own(const struct ctl *c, const char *daemon);
/* DIR/etc/c2s-<k>.xml from c2s.xml.in, @c2s_name@ being c2s-<k> (its
 * router name, secret file and pidfile). 0 or 1. */
int ctl_c2s_config_write(const struct ctl *c, int k);
/* Everything c2s-<k> needs (k >= 2; init writes c2s-1's): its router
 * secret, run directory, config and its entry in router-users.xml. 0 or 1. */
int ctl_c2s_instance_add(const struct ctl *c, int k);

/* Database (parleyctl_db.c). */
/* A connection as the admin role (the private cluster) or with the DSN.
 * NULL with a message printed when unreachable. */
PGconn *ctl_db_connect(const struct ctl *c);
/* The private cluster: running? start (pg_ctl -w), stop. 0 or 1 (message). */
bool ctl_pg_running(const struct ctl *c);
int ctl_pg_start(const struct ctl *c);
int ctl_pg_stop(const struct ctl *c);
/* A command that needs the database while the instance is stopped starts
 * the private cluster for its own time: 1 (started; *lockfd holds
 * DIR/ctl/start.lock, which keeps `start` out), 0 (nothing to do: running,
 * a supervisor runs, or no private cluster), -1 (printed). ctl_pg_return
 * stops what ctl_pg_borrow started. */
int ctl_pg_borrow(const struct ctl *c, int *lockfd);
void ctl_pg_return(const struct ctl *c, int lockfd);
/* Create and migrate the private cluster (init). */
int ctl_pg_create(struct ctl *c);
/* Apply the schema with the admin connection (init, db migrate). */
int ctl_db_migrate(const struct ctl *c, PGconn *conn, bool quiet);
/* Give the daemons' roles LOGIN and fresh passwords, written to
 * DIR/etc/secrets/db-<role> owned by the daemon's user. */
int ctl_db_roles_login(const struct ctl *c, PGconn *conn);
/* A command's failure on conn, printed with the server's message. */
void ctl_db_error(PGconn *conn, const PGresult *res, const char *what);

#endif
