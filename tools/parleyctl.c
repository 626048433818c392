/*
 * parleyctl.c - Parley's admin tool: flags, command dispatch, and the
 * helpers every command uses (paths, files, users, running programs).
 *
 *   parleyctl [-d DIR] [-T DATADIR] COMMAND ...
 *
 * DIR is the instance directory (default $PARLEY_DIR, else the compiled-in
 * $(localstatedir)/lib/parley); see parleyctl.h for its layout. DATADIR
 * holds the config templates (*.xml.in) and schema/: -T, else
 * $PARLEY_DATADIR, else the source tree when this binary runs from its
 * build tree, else $(pkgdatadir).
 *
 * Every command prints errors as "parleyctl: ..." on stderr and exits 1 on
 * any error (2 for bad usage). Secrets are printed only by `component add`
 * when it generated one.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/xml.h"
#include "tools/parleyctl.h"

/* Errors and notes look alike on stderr; the two names say which is meant. */
__attribute__((format(printf, 1, 0))) static void say(const char *fmt, va_list ap)
{
    fputs("parleyctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void ctl_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
}

void ctl_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
}

void ctl_path(const struct ctl *c, char *out, const char *fmt, ...)
{
    char rel[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    /* DIR is at most 1024 bytes and rel under 2048: this fits. */
    size_t dl = strlen(c->dir), rl = strlen(rel);
    memcpy(out, c->dir, dl);
    out[dl] = '/';
    memcpy(out + dl + 1, rel, rl + 1);
}

/* Does this binary run from the build tree it was built in? */
static bool ctl_in_build_tree(void)
{
    static int known = -1;
    if (known < 0) {
        char self[PATH_MAX], want[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        known = 0;
        if (n > 0 && realpath(CTL_BUILDDIR "/tools/parleyctl", want) != NULL) {
            self[n] = '\0';
            known = strcmp(self, want) == 0;
        }
    }
    return known == 1;
}

const char *ctl_datadir(const struct ctl *c)
{
    if (c->datadir != NULL)
        return c->datadir;
    const char *env = getenv("PARLEY_DATADIR");
    if (env != NULL && env[0] != '\0')
        return env;
    return ctl_in_build_tree() ? CTL_SRCDIR "/etc" : CTL_PKGDATADIR;
}

void ctl_schema_dir(const struct ctl *c, char *out)
{
    if (c->datadir == NULL && getenv("PARLEY_DATADIR") == NULL && ctl_in_build_tree())
        snprintf(out, CTL_PATH_MAX, "%s/storage/schema", CTL_SRCDIR);
    else
        snprintf(out, CTL_PATH_MAX, "%s/schema", ctl_datadir(c));
}

void ctl_daemon_exe(const struct ctl_daemon *d, char *out)
{
    if (ctl_in_build_tree())
        snprintf(out, CTL_PATH_MAX, "%s/%s/%s", CTL_BUILDDIR, d->subdir, d->exe);
    else
        snprintf(out, CTL_PATH_MAX, "%s/%s", CTL_SBINDIR, d->exe);
}

int ctl_load(struct ctl *c)
{
    char path[CTL_PATH_MAX], err[512];
    const char *domain = NULL, *dsn = NULL;
    bool private_db = false;
    int c2s = 0, c2s_tls = 0, s2s = 0, s2s_tls = 0, router = 0;
    const struct config_entry table[] = {
        CONFIG_STRING("domain", CONFIG_REQUIRED, NULL, &domain),
        CONFIG_BOOL("db@private", 0, "false", &private_db),
        CONFIG_STRING("db/dsn", 0, NULL, &dsn),
        CONFIG_INT("ports@c2s", CONFIG_REQUIRED, NULL, 1, 65535, &c2s),
        CONFIG_INT("ports@c2s-tls", CONFIG_REQUIRED, NULL, 1, 65535, &c2s_tls),
        CONFIG_INT("ports@s2s", CONFIG_REQUIRED, NULL, 1, 65535, &s2s),
        /* Absent from instances made before s2s: 0, then s2s + 1 below. */
        CONFIG_INT("ports@s2s-tls", 0, "0", 0, 65535, &s2s_tls),
        CONFIG_INT("ports@router", CONFIG_REQUIRED, NULL, 1, 65535, &router),
        CONFIG_END,
    };
    struct config *cfg = NULL;
    ctl_path(c, path, "etc/parley.xml");
    if (access(path, F_OK) != 0) {
        ctl_err("%s is not initialised (no %s): run `parleyctl -d %s init --domain DOMAIN`", c->dir,
                path, c->dir);
        return 1;
    }
    if (config_load(path, "parley", table, &cfg, err, sizeof(err)) < 0) {
        ctl_err("%s", err);
        return 1;
    }
    snprintf(c->domain, sizeof(c->domain), "%s", domain);
    snprintf(c->dsn, sizeof(c->dsn), "%s", dsn != NULL ? dsn : "");
    c->private_db = private_db;
    c->c2s_port = c2s;
    c->c2s_tls_port = c2s_tls;
    c->s2s_port = s2s;
    c->s2s_tls_port = s2s_tls != 0 ? s2s_tls : s2s + 1;
    c->router_port = router;
    config_free(cfg);
    if (!c->private_db && c->dsn[0] == '\0') {
        ctl_err("%s: <db> needs private='true' or a <dsn>", path);
        return 1;
    }
    return 0;
}

int ctl_user_ids(const struct ctl *c, const char *user, uid_t *uid, gid_t *gid)
{
    if (!c->as_root) {
        *uid = getuid();
        *gid = getgid();
        return 0;
    }
    struct passwd *pw = getpwnam(user);
    if (pw == NULL) {
        ctl_err("no system user %s (`parleyctl init` creates it)", user);
        return 1;
    }
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

int ctl_read_file(const char *path, char *out, size_t outlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = 0;
    ssize_t n;
    while (len + 1 < outlen && (n = read(fd, out + len, outlen - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r'))
        len--;
    out[len] = '\0';
    return 0;
}

int ctl_read_xml(const char *path, size_t max, bool missing_ok, char **text, struct xml_node **root)
{
    char err[256];
    *root = NULL;
    *text = xmalloc(max);
    if (ctl_read_file(path, *text, max) < 0) {
        int e = errno;
        free(*text);
        *text = NULL;
        if (missing_ok && e == ENOENT)
            return 0;
        ctl_err("cannot read %s: %s", path, strerror(e));
        return 1;
    }
    *root = xml_parse_document(*text, strlen(*text), NULL, err, sizeof(err));
    if (*root == NULL) {
        ctl_err("%s: %s", path, err);
        free(*text);
        *text = NULL;
        return 1;
    }
    return 0;
}

int ctl_write_file(const struct ctl *c, const char *path, const char *data, size_t len, mode_t mode,
                   uid_t uid, gid_t gid)
{
    /* Written under a temporary name and renamed, so that a reader (the
     * router on HUP) sees the old or the new file, never half of one. The
     * fixed name is safe: writers of a file hold ctl_edit_lock (or are
     * init, alone on a new DIR). */
    char tmp[CTL_PATH_MAX + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    /* A fresh file, never one planted there (a link to another file). */
    if (unlink(tmp) < 0 && errno != ENOENT) {
        ctl_err("cannot remove %s: %s", tmp, strerror(errno));
        return 1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        ctl_err("cannot write %s: %s", tmp, strerror(errno));
        return 1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ctl_err("cannot write %s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return 1;
        }
        off += (size_t)n;
    }
    if (fchmod(fd, mode) < 0 || (c->as_root && fchown(fd, uid, gid) < 0) || fsync(fd) < 0 ||
        close(fd) < 0) {
        ctl_err("cannot finish %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return 1;
    }
    if (rename(tmp, path) < 0) {
        ctl_err("cannot rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

int ctl_exec(const struct ctl *c, const char *const *argv, const char *user, int out_fd)
{
    uid_t uid = 0;
    gid_t gid = 0;
    if (c->as_root && user != NULL && ctl_user_ids(c, user, &uid, &gid) != 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        ctl_err("fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (out_fd >= 0) {
            dup2(out_fd, STDOUT_FILENO);
            dup2(out_fd, STDERR_FILENO);
        }
        if (c->as_root && user != NULL &&
            (initgroups(user, gid) < 0 || setresgid(gid, gid, gid) < 0 ||
             setresuid(uid, uid, uid) < 0)) {
            fprintf(stderr, "parleyctl: cannot become %s: %s\n", user, strerror(errno));
            _exit(127);
        }
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "parleyctl: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

pid_t ctl_pidfile_alive(const char *path)
{
    char buf[32];
    if (ctl_read_file(path, buf, sizeof(buf)) < 0)
        return 0;
    char *end;
    long pid = strtol(buf, &end, 10);
    if (end == buf || pid <= 1 || pid > INT_MAX)
        return 0;
    if (kill((pid_t)pid, 0) < 0 && errno != EPERM)
        return 0;
    return (pid_t)pid;
}

int ctl_mkdir(const struct ctl *c, const char *path, mode_t mode, uid_t uid, gid_t gid)
{
    if (mkdir(path, mode) < 0 && errno != EEXIST) {
        ctl_err("mkdir %s: %s", path, strerror(errno));
        return 1;
    }
    /* An existing entry may have been planted: never follow a symlink, and
     * set mode and owner on the directory opened, not on a name. */
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        ctl_err("%s: %s", path,
                errno == ELOOP || errno == ENOTDIR ? "exists and is not a directory (a symlink?)"
                                                   : strerror(errno));
        return 1;
    }
    if (fchmod(fd, mode) < 0 || (c->as_root && fchown(fd, uid, gid) < 0)) {
        ctl_err("cannot set the mode or owner of %s: %s", path, strerror(errno));
        close(fd);
        return 1;
    }
    close(fd);
    return 0;
}

/* Is user in group gid (primary or listed)? */
static bool ctl_in_group(const char *user, gid_t gid)
{
    gid_t groups[256];
    int n = sizeof(groups) / sizeof(groups[0]);
    struct passwd *pw = getpwnam(user);
    if (pw == NULL || getgrouplist(user, pw->pw_gid, groups, &n) < 0)
        return false;
    for (int i = 0; i < n; i++) {
        if (groups[i] == gid)
            return true;
    }
    return false;
}

/* Does the existing group CTL_GROUP hold anyone but users[] (listed, or
 * as primary group)? Each of them could connect to the router's socket:
 * say so (true) rather than take the group over. */
static bool ctl_group_foreign(const char *const *users, size_t n)
{
    struct group *gr = getgrnam(CTL_GROUP);
    if (gr == NULL)
        return false;
    gid_t gid = gr->gr_gid;
    char who[512] = "";
    size_t len = 0;
    for (char **m = gr->gr_mem; m != NULL && *m != NULL; m++) {
        bool ours = false;
        for (size_t i = 0; i < n; i++)
            ours = ours || strcmp(*m, users[i]) == 0;
        if (!ours && len < sizeof(who))
            len += (size_t)snprintf(who + len, sizeof(who) - len, "%s%s", len ? ", " : "", *m);
    }
    setpwent();
    for (struct passwd *pw; (pw = getpwent()) != NULL;) {
        bool ours = false;
        for (size_t i = 0; i < n; i++)
            ours = ours || strcmp(pw->pw_name, users[i]) == 0;
        if (pw->pw_gid == gid && !ours && len < sizeof(who))
            len += (size_t)snprintf(who + len, sizeof(who) - len, "%s%s (primary group)",
                                    len ? ", " : "", pw->pw_name);
    }
    endpwent();
    if (len == 0)
        return false;
    ctl_err("the group %s exists and has members besides parley's daemons: %s. Members can "
            "connect to the router's socket, so it must hold only parley-router, "
            "parley-sm, parley-c2s and parley-s2s: take the others out (`gpasswd -d USER %s`, "
            "or change a user's primary group with `usermod -g`), or, if the group belongs to "
            "something else, remove or rename it (`groupmod -n NEWNAME %s`), then run again",
            CTL_GROUP, who, CTL_GROUP, CTL_GROUP);
    return true;
}

int ctl_group_ensure(const struct ctl *c)
{
    static const char *const users[] = {"parley-router", "parley-sm", "parley-c2s", "parley-s2s"};
    if (!c->as_root)
        return 0;
    if (getgrnam(CTL_GROUP) != NULL && ctl_group_foreign(users, sizeof(users) / sizeof(users[0])))
        return 1;
    if (getgrnam(CTL_GROUP) == NULL) {
        const char *argv[] = {"/usr/sbin/groupadd", "--system", CTL_GROUP, NULL};
        if (ctl_exec(c, argv, NULL, -1) != 0) {
            ctl_err("groupadd %s failed", CTL_GROUP);
            return 1;
        }
        ctl_note("created system group %s", CTL_GROUP);
    }
    struct group *gr = getgrnam(CTL_GROUP);
    if (gr == NULL) {
        ctl_err("no group %s after groupadd", CTL_GROUP);
        return 1;
    }
    gid_t gid = gr->gr_gid;
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++) {
        if (ctl_in_group(users[i], gid))
            continue;
        const char *argv[] = {"/usr/sbin/usermod", "-a", "-G", CTL_GROUP, users[i], NULL};
        if (ctl_exec(c, argv, NULL, -1) != 0) {
            ctl_err("usermod -a -G %s %s failed", CTL_GROUP, users[i]);
            return 1;
        }
        ctl_note("added %s to the group %s", users[i], CTL_GROUP);
    }
    return 0;
}

int ctl_edit_lock(const struct ctl *c)
{
    char path[CTL_PATH_MAX];
    ctl_path(c, path, "ctl/edit.lock");
    int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0) {
        ctl_err("cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    int rc;
    while ((rc = flock(fd, LOCK_EX)) < 0 && errno == EINTR)
        ;
    if (rc < 0) {
        ctl_err("cannot lock %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

void ctl_edit_unlock(int fd)
{
    if (fd >= 0)
        close(fd);
}

int ctl_sup_lock_fd(const struct ctl *c, int flags)
{
    char path[CTL_PATH_MAX];
    ctl_path(c, path, "ctl/parleyctl.pid");
    return open(path, flags | O_NOFOLLOW | O_CLOEXEC, 0644);
}

pid_t ctl_sup_pid(const struct ctl *c)
{
    /* The supervisor holds a write lock on its pidfile for its whole life:
     * the kernel names the holder, so no pid is taken from a file. */
    int fd = ctl_sup_lock_fd(c, O_RDONLY);
    if (fd < 0)
        return 0;
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    pid_t pid = 0;
    if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
        pid = fl.l_pid;
    close(fd);
    return pid;
}

static void usage(FILE *f)
{
    fputs("usage: parleyctl [-d DIR] [-T DATADIR] COMMAND ...\n"
          "  init --domain D [--db DSN] [--c2s-port N] [--c2s-tls-port N] [--s2s-port N]\n"
          "       [--s2s-tls-port N] [--router-port N] [--c2s N]\n"
          "  start | stop | status | reload [DAEMON]\n"
          "  c2s add | c2s del [c2s-K] | c2s list   (c2s processes c2s-1..c2s-N sharing\n"
          "       the client ports)\n"
          "  user add JID [PASSWORD] | user passwd JID [PASSWORD] | user del JID\n"
          "  user list [DOMAIN]\n"
          "  component add NAME [--secret S] | component del NAME | component list\n"
          "  db migrate | db status\n"
          "  route add DOMAIN HOST:PORT [--pin sha256:HEX] [--tls direct|starttls]\n"
          "  route del DOMAIN | route list\n"
          "  upgrade   (an instance made by an older parleyctl: stopped, brought up to date)\n"
          "DIR: the instance directory (default $PARLEY_DIR, else " CTL_DEFAULT_DIR ").\n"
          "A password omitted from the command line is read from stdin.\n",
          f);
}

int main(int argc, char **argv)
{
    struct ctl c;
    const char *dir = getenv("PARLEY_DIR");
    int opt;
    memset(&c, 0, sizeof(c));
    log_init("parleyctl", 0, LOG_LVL_WARN);
    while ((opt = getopt(argc, argv, "+d:T:h")) != -1) {
        switch (opt) {
        case 'd':
            dir = optarg;
            break;
        case 'T':
            c.datadir = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    if (dir == NULL || dir[0] == '\0')
        dir = CTL_DEFAULT_DIR;
    /* An absolute DIR: it ends up in config files and the supervisor
     * changes its working directory. */
    if (dir[0] == '/') {
        if (snprintf(c.dir, sizeof(c.dir), "%s", dir) >= 1024) {
            ctl_err("DIR is longer than 1024 bytes");
            return 2;
        }
    } else {
        char cwd[PATH_MAX];
        if (getcwd(cwd, sizeof(cwd)) == NULL) {
            ctl_err("getcwd: %s", strerror(errno));
            return 1;
        }
        if (snprintf(c.dir, sizeof(c.dir), "%s/%s", cwd, dir) >= 1024) {
            ctl_err("DIR is longer than 1024 bytes");
            return 2;
        }
    }
    size_t dl = strlen(c.dir);
    while (dl > 1 && c.dir[dl - 1] == '/')
        c.dir[--dl] = '\0';
    if (strpbrk(c.dir, "'\"<>&\n") != NULL || dl > 1024) {
        ctl_err("DIR must not contain quotes, <, >, & or newlines, nor be longer than 1024");
        return 2;
    }
    c.as_root = geteuid() == 0;

    const char *cmd = argv[optind];
    int cargc = argc - optind;
    char **cargv = argv + optind;
    static const struct {
        const char *name;
        int (*run)(struct ctl *c, int argc, char **argv);
    } cmds[] = {
        {"init", ctl_cmd_init},     {"start", ctl_cmd_start},     {"stop", ctl_cmd_stop},
        {"status", ctl_cmd_status}, {"user", ctl_cmd_user},       {"component", ctl_cmd_component},
        {"db", ctl_cmd_db},         {"route", ctl_cmd_route},     {"reload", ctl_cmd_reload},
        {"c2s", ctl_cmd_c2s},       {"upgrade", ctl_cmd_upgrade},
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (strcmp(cmd, cmds[i].name) == 0)
            return cmds[i].run(&c, cargc, cargv);
    }
    ctl_err("unknown command '%s'", cmd);
    usage(stderr);
    return 2;
}
