/*
 * daemon.c - the shared main() skeleton: flags, config, pidfile, jail,
 * signals, loop (see daemon.h for the order and the config entries).
 *
 * One struct daemon per process, on daemon_main's stack; the hooks reach it
 * through the pointer they are given. Everything here runs on the main
 * thread, before the loop starts or inside its callbacks.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/config.h"
#include "common/daemon.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/sandbox.h"

struct daemon {
    const struct daemon_spec *spec;
    struct config *cfg;
    uv_loop_t loop;
    bool loop_ready;
    bool stopping;
    bool chrooted;
    bool foreground;
    int exit_code;
    uv_signal_t sig_term, sig_int, sig_hup, sig_usr1;
    bool signals_ready;
    /* skeleton config */
    struct daemon_jail jail;
    const char *pidfile;
    int log_level;
    int sandbox;  /* enum sandbox_mode */
    int pidfd;    /* locked pidfile, or -1 */
    int ready_fd; /* write end of the start-up pipe to the first process, or -1 */
};

static const char *const level_names[] = {"err", "warn", "notice", "info", "debug", NULL};

uv_loop_t *daemon_loop(struct daemon *d)
{
    return d->loop_ready ? &d->loop : NULL;
}

struct config *daemon_config(struct daemon *d)
{
    return d->cfg;
}

void *daemon_arg(struct daemon *d)
{
    return d->spec->arg;
}

/* ---- privilege drop ---- */

int daemon_jail_lookup(struct daemon_jail *j, char *err, size_t errlen)
{
    j->have_ids = false;
    if (!j->user) {
        if (j->group || (j->groups && j->groups[strspn(j->groups, " \t\r\n")])) {
            snprintf(err, errlen, "<%s> is set but <user> is not", j->group ? "group" : "groups");
            return ERR_PERM;
        }
        return 0;
    }
    errno = 0;
    struct passwd *pw = getpwnam(j->user);
    if (!pw) {
        if (errno)
            snprintf(err, errlen, "<user>: looking up '%s' failed: %s", j->user, strerror(errno));
        else
            snprintf(err, errlen, "<user>: no such user '%s'", j->user);
        return ERR_NOTFOUND;
    }
    if (pw->pw_uid == 0) {
        snprintf(err, errlen, "<user>: '%s' has uid 0; a daemon must not run as root", j->user);
        return ERR_PERM;
    }
    j->uid = pw->pw_uid;
    j->gid = pw->pw_gid;
    if (j->group) {
        errno = 0;
        struct group *gr = getgrnam(j->group);
        if (!gr) {
            if (errno)
                snprintf(err, errlen, "<group>: looking up '%s' failed: %s", j->group,
                         strerror(errno));
            else
                snprintf(err, errlen, "<group>: no such group '%s'", j->group);
            return ERR_NOTFOUND;
        }
        if (gr->gr_gid == 0) {
            snprintf(err, errlen, "<group>: '%s' has gid 0; a daemon must not run as root",
                     j->group);
            return ERR_PERM;
        }
        j->gid = gr->gr_gid;
    }
    /* Read now: after a chroot the group database may be out of reach.
     * Unprivileged there is no drop, and nothing to keep. */
    j->ngids = 0;
    if (geteuid() == 0) {
        int rc = daemon_jail_lookup_groups(j, err, errlen);
        if (rc)
            return rc;
    }
    j->have_ids = true;
    return 0;
}

/* Is user (primary group pw_gid) a member of gr? */
static bool group_has(const struct group *gr, const char *user, gid_t pw_gid)
{
    if (gr->gr_gid == pw_gid)
        return true;
    for (char **m = gr->gr_mem; m && *m; m++) {
        if (strcmp(*m, user) == 0)
            return true;
    }
    return false;
}

int daemon_jail_lookup_groups(struct daemon_jail *j, char *err, size_t errlen)
{
    j->ngids = 0;
    if (!j->groups)
        return 0;
    errno = 0;
    struct passwd *pw = getpwnam(j->user);
    if (!pw) {
        snprintf(err, errlen, "<user>: no such user '%s'", j->user);
        return ERR_NOTFOUND;
    }
    gid_t pw_gid = pw->pw_gid;
    const char *p = j->groups;
    for (;;) {
        p += strspn(p, " \t\r\n");
        size_t n = strcspn(p, " \t\r\n");
        if (n == 0)
            return 0;
        char name[256];
        if (n >= sizeof(name)) {
            snprintf(err, errlen, "<groups>: a name is longer than %zu bytes", sizeof(name) - 1);
            return ERR_NOTFOUND;
        }
        memcpy(name, p, n);
        name[n] = '\0';
        p += n;
        errno = 0;
        struct group *gr = getgrnam(name);
        if (!gr) {
            if (errno)
                snprintf(err, errlen, "<groups>: looking up '%s' failed: %s", name,
                         strerror(errno));
            else
                snprintf(err, errlen, "<groups>: no such group '%s'", name);
            return ERR_NOTFOUND;
        }
        if (gr->gr_gid == 0) {
            snprintf(err, errlen, "<groups>: '%s' has gid 0; a daemon must not keep it", name);
            return ERR_PERM;
        }
        if (!group_has(gr, j->user, pw_gid)) {
            snprintf(err, errlen, "<groups>: '%s' is not a member of '%s'", j->user, name);
            return ERR_PERM;
        }
        bool dup = false;
        for (int i = 0; i < j->ngids; i++)
            dup = dup || j->gids[i] == gr->gr_gid;
        if (dup)
            continue;
        if (j->ngids == DAEMON_GROUPS_MAX) {
            snprintf(err, errlen, "<groups>: more than %d groups", DAEMON_GROUPS_MAX);
            return ERR_PERM;
        }
        j->gids[j->ngids++] = gr->gr_gid;
    }
}

static int set_limit(int resource, const char *name, rlim_t value)
{
    struct rlimit rl = {value, value};
    if (setrlimit(resource, &rl) != 0) {
        log_err("setrlimit %s %llu: %s", name, (unsigned long long)value, strerror(errno));
        return ERR_SYS;
    }
    return 0;
}

static int set_limits(const struct daemon_jail *j)
{
    /* A core dump would write keys and session secrets to disk. */
    int rc = set_limit(RLIMIT_CORE, "CORE", 0);
    if (rc)
        return rc;
    if (j->max_open_files > 0) {
        struct rlimit rl;
        rlim_t want = (rlim_t)j->max_open_files;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && geteuid() != 0 && rl.rlim_max != RLIM_INFINITY &&
            want > rl.rlim_max) {
            log_warn("<max-open-files> %d is above the hard limit %llu of this user; using that",
                     j->max_open_files, (unsigned long long)rl.rlim_max);
            want = rl.rlim_max;
        }
        if ((rc = set_limit(RLIMIT_NOFILE, "NOFILE", want)) != 0)
            return rc;
    }
    if (j->no_file_writes) {
        /* FSIZE limits regular files only; a stderr redirected to a file
         * would turn every log line into a SIGXFSZ. */
        struct stat st;
        if (fstat(STDERR_FILENO, &st) == 0 && S_ISREG(st.st_mode))
            log_notice("stderr is a file: not setting RLIMIT_FSIZE 0");
        else if ((rc = set_limit(RLIMIT_FSIZE, "FSIZE", 0)) != 0)
            return rc;
    }
    return 0;
}

/* The ids must be final: any way back to root is a fatal bug. */
static void verify_drop(const struct daemon_jail *j)
{
    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    if (getresuid(&ru, &eu, &su) != 0 || getresgid(&rg, &eg, &sg) != 0 || ru != j->uid ||
        eu != j->uid || su != j->uid || rg != j->gid || eg != j->gid || sg != j->gid) {
        log_err("ids after the drop are not uid %u gid %u", (unsigned)j->uid, (unsigned)j->gid);
        abort();
    }
    /* Exactly the <groups> set: a group more is a right the daemon must
     * not have (the kernel may reorder the list). */
    gid_t groups[DAEMON_GROUPS_MAX + 1];
    int n = getgroups(DAEMON_GROUPS_MAX + 1, groups);
    bool same = n == j->ngids;
    for (int i = 0; same && i < n; i++) {
        bool listed = false;
        for (int k = 0; k < j->ngids; k++)
            listed = listed || groups[i] == j->gids[k];
        same = listed && groups[i] != 0;
    }
    if (!same) {
        log_err("supplementary groups after the drop are not the %d of <groups>", j->ngids);
        abort();
    }
    if (setuid(0) != -1 || seteuid(0) != -1 || setgid(0) != -1 || setegid(0) != -1) {
        log_err("root could be regained after dropping privileges");
        abort();
    }
}

static int change_ids(const struct daemon_jail *j)
{
    if (j->chroot) {
        if (chroot(j->chroot) != 0) {
            log_err("chroot %s: %s", j->chroot, strerror(errno));
            return ERR_SYS;
        }
        if (chdir("/") != 0) {
            log_err("chdir / in %s: %s", j->chroot, strerror(errno));
            return ERR_SYS;
        }
    }
    if (setgroups((size_t)j->ngids, j->gids) != 0 || setresgid(j->gid, j->gid, j->gid) != 0 ||
        setresuid(j->uid, j->uid, j->uid) != 0) {
        log_err("dropping to uid %u gid %u: %s", (unsigned)j->uid, (unsigned)j->gid,
                strerror(errno));
        return ERR_SYS;
    }
    verify_drop(j);
    log_info("running as %s (uid %u gid %u, %d supplementary groups)%s%s", j->user,
             (unsigned)j->uid, (unsigned)j->gid, j->ngids, j->chroot ? " chrooted in " : "",
             j->chroot ? j->chroot : "");
    return 0;
}

int daemon_jail_enter(const struct daemon_jail *j)
{
    int rc = set_limits(j);
    if (rc)
        return rc;
    if (geteuid() == 0) {
        if (!j->have_ids) {
            log_err("started as root and no <user> is configured: refusing to run as root");
            return ERR_PERM;
        }
        if ((rc = change_ids(j)) != 0)
            return rc;
    } else {
        log_notice("not started as root: staying uid %u%s%s%s%s", (unsigned)geteuid(),
                   j->user ? ", <user> " : "", j->user ? j->user : "",
                   j->chroot ? ", no chroot to " : "", j->chroot ? j->chroot : "");
    }
    /* Not dumpable: no core, no ptrace by the same uid, /proc/self owned by
     * root. No new privileges: no setuid binary or file capability can
     * undo the drop. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        log_err("prctl: %s", strerror(errno));
        return ERR_SYS;
    }
    /* The seccomp allow-list comes later, after post_jail (enter_sandbox). */
    return 0;
}

/* ---- pidfile ---- */

/* The pid recorded in fd, digits only (for messages), or "" if none. */
static void read_pid(int fd, char *out, size_t outlen)
{
    char raw[32];
    ssize_t n = pread(fd, raw, sizeof(raw) - 1, 0);
    size_t o = 0;
    for (ssize_t i = 0; i < n && raw[i] >= '0' && raw[i] <= '9' && o + 1 < outlen; i++)
        out[o++] = raw[i];
    out[o] = '\0';
}

/*
 * Open and lock the pidfile. flock, not fcntl: the lock belongs to the open
 * file, so it survives the daemonizing forks in the child that keeps the
 * descriptor, and it vanishes with the process, which makes a pidfile left
 * by a dead process free to take over.
 */
static int pidfile_lock(struct daemon *d)
{
    int fd = open(d->pidfile, O_RDWR | O_CREAT | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_err("pidfile %s: %s", d->pidfile, strerror(errno));
        return ERR_SYS;
    }
    char pid[24];
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        read_pid(fd, pid, sizeof(pid));
        close(fd);
        if (e == EWOULDBLOCK) {
            log_err("%s is already running (pid %s, pidfile %s is locked)", d->spec->name,
                    *pid ? pid : "unknown", d->pidfile);
            return ERR_EXISTS;
        }
        log_err("pidfile %s: lock: %s", d->pidfile, strerror(e));
        return ERR_SYS;
    }
    read_pid(fd, pid, sizeof(pid));
    if (*pid)
        log_notice("taking over stale pidfile %s (pid %s is gone)", d->pidfile, pid);
    d->pidfd = fd;
    return 0;
}

static int pidfile_write(struct daemon *d)
{
    char text[32];
    int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    if (ftruncate(d->pidfd, 0) != 0 || pwrite(d->pidfd, text, (size_t)n, 0) != n) {
        log_err("pidfile %s: write: %s", d->pidfile, strerror(errno));
        return ERR_SYS;
    }
    return 0;
}

/*
 * After the drop the directory may not be ours to change (or, chrooted,
 * not even visible): then empty the file, so that it names no process;
 * the lock goes with us anyway. A RuntimeDirectory owned by the daemon's
 * user lets the unlink succeed.
 */
static void pidfile_remove(struct daemon *d)
{
    if (d->pidfd < 0)
        return;
    /* Chrooted, the path names some other file or none: never unlink it. */
    bool removed = !d->chrooted && (unlink(d->pidfile) == 0 || errno == ENOENT);
    if (!removed) {
        if (!d->chrooted)
            log_info("cannot remove pidfile %s (%s): emptying it", d->pidfile, strerror(errno));
        if (ftruncate(d->pidfd, 0) != 0)
            log_warn("pidfile %s: truncate: %s", d->pidfile, strerror(errno));
    }
    close(d->pidfd);
    d->pidfd = -1;
}

/* ---- daemonizing ---- */

/*
 * Fork, setsid, fork. Returns true in the first process, which waits for
 * the daemon to report that start-up finished and sets *code; false in the
 * daemon, which continues with syslog and stdio on /dev/null.
 */
static bool daemonize(struct daemon *d, int *code)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        fatal("pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        fatal("fork: %s", strerror(errno));
    if (pid > 0) {
        close(p[1]);
        waitpid(pid, NULL, 0);
        char c = 0;
        ssize_t n;
        do
            n = read(p[0], &c, 1);
        while (n < 0 && errno == EINTR);
        close(p[0]);
        *code = n == 1 ? 0 : 1;
        if (*code)
            fprintf(stderr, "%s: start-up failed; see the system log\n", d->spec->name);
        return true;
    }
    close(p[0]);
    if (setsid() < 0)
        fatal("setsid: %s", strerror(errno));
    pid = fork();
    if (pid < 0)
        fatal("fork: %s", strerror(errno));
    if (pid > 0)
        _exit(0); /* the session leader goes; the daemon can never regain a tty */
    if (chdir("/") != 0)
        fatal("chdir /: %s", strerror(errno));
    log_init(d->spec->name, 1, (enum log_level)d->log_level);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0 || dup2(null, STDIN_FILENO) < 0 || dup2(null, STDOUT_FILENO) < 0 ||
        dup2(null, STDERR_FILENO) < 0)
        fatal("/dev/null: %s", strerror(errno));
    if (null > STDERR_FILENO)
        close(null);
    d->ready_fd = p[1];
    return false;
}

static void report_ready(struct daemon *d)
{
    if (d->ready_fd < 0)
        return;
    if (write(d->ready_fd, "", 1) != 1)
        log_warn("start-up pipe: %s", strerror(errno));
    close(d->ready_fd);
    d->ready_fd = -1;
}

/* ---- signals and stopping ---- */

static void begin_stop(struct daemon *d)
{
    d->stopping = true;
    log_notice("stopping");
    /* HUP and USR1 go; TERM and INT stay to catch a second one, but no
     * longer keep the loop alive. */
    uv_close((uv_handle_t *)&d->sig_hup, NULL);
    uv_close((uv_handle_t *)&d->sig_usr1, NULL);
    uv_unref((uv_handle_t *)&d->sig_term);
    uv_unref((uv_handle_t *)&d->sig_int);
    if (d->spec->on_stop)
        d->spec->on_stop(d);
}

void daemon_stop(struct daemon *d, int code)
{
    d->exit_code = code;
    if (!d->stopping && d->signals_ready)
        begin_stop(d);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct daemon *d = h->data;
    switch (signum) {
    case SIGTERM:
    case SIGINT:
        if (d->stopping) {
            log_warn("second %s: stopping now", signum == SIGTERM ? "SIGTERM" : "SIGINT");
            d->exit_code = 1;
            uv_stop(&d->loop);
            return;
        }
        log_info("%s received", signum == SIGTERM ? "SIGTERM" : "SIGINT");
        begin_stop(d);
        break;
    case SIGHUP:
        /* In a chroot /dev/log is out of reach: keep the syslog socket
         * opened before the jail rather than lose it. */
        if (!d->chrooted)
            log_reopen();
        log_info("SIGHUP: logs reopened");
        if (d->spec->on_reload)
            d->spec->on_reload(d);
        break;
    case SIGUSR1:
        if (d->spec->on_stats)
            d->spec->on_stats(d);
        break;
    default:
        break;
    }
}

static int start_signal(struct daemon *d, uv_signal_t *h, int signum)
{
    int rc = uv_signal_init(&d->loop, h);
    if (rc == 0) {
        h->data = d;
        rc = uv_signal_start(h, on_signal, signum);
    }
    if (rc != 0) {
        log_err("signal %d: %s", signum, uv_strerror(rc));
        return ERR_SYS;
    }
    return 0;
}

/* The signals the daemon handles. From the start of run() until their
 * handlers are in place they stay blocked: the listeners are open from
 * pre_jail on, so a supervisor (or a test) may already send HUP or TERM,
 * whose default action would kill the process mid start-up. Blocked, they
 * wait and reach the handlers when start_signals unblocks them. */
static void handled_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGUSR1);
}

static int start_signals(struct daemon *d)
{
    if (start_signal(d, &d->sig_term, SIGTERM) || start_signal(d, &d->sig_int, SIGINT) ||
        start_signal(d, &d->sig_hup, SIGHUP) || start_signal(d, &d->sig_usr1, SIGUSR1))
        return ERR_SYS;
    d->signals_ready = true;
    sigset_t set;
    handled_signals(&set);
    if ((errno = pthread_sigmask(SIG_UNBLOCK, &set, NULL)) != 0) {
        log_err("pthread_sigmask: %s", strerror(errno));
        return ERR_SYS;
    }
    return 0;
}

static void on_walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Close whatever handles remain (after a forced stop or a failed start)
 * and let their close callbacks run, so that the loop can be closed. */
static void close_loop(struct daemon *d)
{
    if (!d->loop_ready)
        return;
    uv_walk(&d->loop, on_walk_close, NULL);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(&d->loop);
    if (rc != 0)
        log_warn("loop close: %s", uv_strerror(rc));
    d->loop_ready = false;
}

/* ---- main ---- */

static void usage(FILE *out, const struct daemon_spec *spec)
{
    fprintf(out,
            "usage: %s [-c FILE] [-f] [-D] [-t] [-h]\n"
            "  -c FILE  configuration file (default %s)\n"
            "  -f       stay in the foreground and log to stderr\n"
            "  -D       log at debug level\n"
            "  -t       check the configuration and exit (0: valid, 1: not)\n"
            "  -h       this help\n",
            spec->name, spec->config_file);
}

/* The skeleton's entries followed by the daemon's, in one table. */
static struct config_entry *full_table(struct daemon *d)
{
    const struct config_entry skel[] = {
        CONFIG_STRING("user", 0, NULL, &d->jail.user),
        CONFIG_STRING("group", 0, NULL, &d->jail.group),
        CONFIG_STRING("groups", 0, NULL, &d->jail.groups),
        CONFIG_PATH("chroot", 0, NULL, &d->jail.chroot),
        CONFIG_PATH("pidfile", 0, d->spec->pidfile, &d->pidfile),
        CONFIG_ENUM("log/level", 0, "info", level_names, &d->log_level),
        CONFIG_INT("max-open-files", 0, "0", 0, 1 << 20, &d->jail.max_open_files),
        CONFIG_ENUM("sandbox", 0, SANDBOX_DEFAULT, sandbox_mode_names, &d->sandbox),
    };
    size_t nskel = sizeof(skel) / sizeof(skel[0]), nown = 0;
    while (d->spec->table && d->spec->table[nown].path)
        nown++;
    struct config_entry *t = xcalloc(nskel + nown + 1, sizeof(*t));
    memcpy(t, skel, sizeof(skel));
    if (nown)
        memcpy(t + nskel, d->spec->table, nown * sizeof(*t));
    return t;
}

/* Config, on_config hook, user lookup: everything -t checks. */
static int load_config(struct daemon *d, const char *file)
{
    char err[512];
    struct config_entry *table = full_table(d);
    int rc = config_load(file, d->spec->root, table, &d->cfg, err, sizeof(err));
    free(table);
    if (rc)
        return rc;
    if (d->spec->on_config && (rc = d->spec->on_config(d)) != 0)
        return rc;
    d->jail.no_file_writes = d->spec->no_file_writes;
    if ((rc = daemon_jail_lookup(&d->jail, err, sizeof(err))) != 0) {
        log_err("%s: %s", file, err);
        return rc;
    }
    return 0;
}

/*
 * The seccomp allow-list (sandbox.h), the last step of the jail: after
 * post_jail, so that everything opened at start-up is open, and before
 * uv_run serves anything. Threads started by then get it too (TSYNC).
 */
static int enter_sandbox(struct daemon *d)
{
    if (d->sandbox == SANDBOX_OFF) {
        log_notice("sandbox off: no seccomp filter");
        return 0;
    }
    const struct sandbox_policy *p = sandbox_policy_find(d->spec->root);
    if (!p) {
        log_warn("no seccomp allow-list for <%s>: running without one", d->spec->root);
        return 0;
    }
    int rc = sandbox_install(p, (enum sandbox_mode)d->sandbox);
    if (rc)
        return rc;
    log_info("sandbox %s: seccomp allow-list of %zu system calls; any other %s",
             sandbox_mode_names[d->sandbox], sandbox_policy_size(p),
             d->sandbox == SANDBOX_ON ? "kills the process (SIGSYS)"
                                      : "is allowed and logged by the kernel");
    return 0;
}

/* From the loop's creation to its end; returns the exit code. */
static int run(struct daemon *d)
{
    /* libuv 1.45+ may batch epoll changes and file operations through an
     * io_uring, which the seccomp allow-lists leave out (a kernel interface
     * with its own history of escapes): ask for the epoll path. Older
     * libuv ignores the variable. Single-threaded here, before any loop. */
    setenv("UV_USE_IO_URING", "0", 1);
    sigset_t set;
    handled_signals(&set);
    if ((errno = pthread_sigmask(SIG_BLOCK, &set, NULL)) != 0) {
        log_err("pthread_sigmask: %s", strerror(errno));
        return 1;
    }
    int rc = uv_loop_init(&d->loop);
    if (rc != 0) {
        log_err("loop init: %s", uv_strerror(rc));
        return 1;
    }
    d->loop_ready = true;
    if (d->spec->pre_jail && (rc = d->spec->pre_jail(d)) != 0) {
        log_err("pre_jail: %s", err_str(rc));
        return 1;
    }
    d->chrooted = d->jail.chroot && geteuid() == 0;
    if (daemon_jail_enter(&d->jail) != 0 || start_signals(d) != 0)
        return 1;
    if (d->spec->post_jail && (rc = d->spec->post_jail(d)) != 0) {
        log_err("post_jail: %s", err_str(rc));
        return 1;
    }
    if (enter_sandbox(d) != 0)
        return 1;
    log_notice("started");
    report_ready(d);
    uv_run(&d->loop, UV_RUN_DEFAULT);
    log_notice("stopped");
    return d->exit_code;
}

int daemon_main(int argc, char **argv, const struct daemon_spec *spec)
{
    struct daemon d = {.spec = spec, .pidfd = -1, .ready_fd = -1};
    const char *file = spec->config_file;
    bool debug = false, check = false;
    int opt;

    /* A peer closing its socket must be an error code, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    umask(027);
    opterr = 0;
    while ((opt = getopt(argc, argv, "c:fDth")) != -1) {
        switch (opt) {
        case 'c':
            file = optarg;
            break;
        case 'f':
            d.foreground = true;
            break;
        case 'D':
            debug = true;
            break;
        case 't':
            check = true;
            break;
        case 'h':
            usage(stdout, spec);
            return 0;
        default:
            fprintf(stderr, "%s: unknown flag or missing argument: -%c\n", spec->name, optopt);
            usage(stderr, spec);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument: %s\n", spec->name, argv[optind]);
        usage(stderr, spec);
        return 2;
    }

    log_init(spec->name, 0, debug ? LOG_LVL_DEBUG : LOG_LVL_INFO);
    int code = 1;
    if (load_config(&d, file) != 0)
        goto out;
    if (check) {
        log_notice("%s: configuration OK", file);
        code = 0;
        goto out;
    }
    log_set_level(debug ? LOG_LVL_DEBUG : (enum log_level)d.log_level);
    if (d.pidfile && pidfile_lock(&d) != 0)
        goto out;
    if (!d.foreground && daemonize(&d, &code)) {
        /* The first process: the daemon owns the pidfile now. */
        if (d.pidfd >= 0)
            close(d.pidfd);
        d.pidfd = -1;
        goto out;
    }
    if (d.pidfd >= 0 && pidfile_write(&d) != 0)
        goto out_daemon;
    code = run(&d);
out_daemon:
    close_loop(&d);
    pidfile_remove(&d);
    if (d.ready_fd >= 0)
        close(d.ready_fd);
out:
    config_free(d.cfg);
    log_close();
    return code;
}
