/*
 * parleyctl_run.c - `parleyctl -d DIR start|stop|status` and the supervisor.
 *
 * start: starts the private PostgreSQL cluster (if the instance has one),
 * then forks the supervisor (double fork + setsid; pidfile
 * DIR/ctl/parleyctl.pid, held with a write lock for the supervisor's whole
 * life, log DIR/log/parleyctl.log), which spawns every
 * daemon of ctl_daemons the instance has a config for (router, sm, c2s-1
 * .. c2s-N, s2s), each `-f -c DIR/etc/<name>.xml` with its output in
 * DIR/log/<name>.log, one after the other: the next is spawned once the
 * last is ready. Daemons start as root when parleyctl runs as root and
 * drop to their <user> themselves (common/daemon), after loading what
 * only root may read (the TLS key). start returns 0 once every daemon is
 * ready, or 1 with a message (and the supervisor stopped again).
 *
 * Ready means: the router accepts on its Unix socket and its TCP port;
 * every other daemon has logged "<kind> ready" ("sm ready", "c2s ready",
 * "s2s ready": connected to the router and serving) since it was spawned.
 * The supervisor notes where its log ended at each spawn and reads only
 * what came after, on a 50 ms timer while a daemon is not yet ready (small
 * local reads on the loop, like its state file writes); a port alone would
 * not tell that c2s or s2s reached the router, and the sm has no port.
 *
 * The supervisor runs one libuv loop: uv_spawn for the children, a timer
 * per child for restarts, uv_signal for TERM/INT (stop) and HUP (passed on
 * to the daemons the request names, see ctl_reload). A daemon that exits
 * while not stopping is logged as a
 * crash and restarted after a back-off: 1 s, doubling to 60 s, back to 1 s
 * once a run lasted STABLE_MS. On TERM the daemons are stopped in reverse
 * order (TERM, then KILL after STOP_KILL_MS); once the loop has no handles
 * left the supervisor stops PostgreSQL (blocking: nothing else is left to
 * serve) and exits. Its state (pid, start time, restarts of each daemon)
 * is written to DIR/ctl/parleyctl.state after every change, a small local
 * write on the loop, which `status` reads.
 *
 * Who the supervisor is comes from the kernel (the holder of the pidfile's
 * lock), never from a pid written in a file; the router's pid is never
 * read either: a reload is a HUP to the supervisor, which passes it on to
 * the children it spawned: to those named by an empty file
 * DIR/ctl/reload/<name> (which it removes), or to all when there is none
 * or DIR/ctl/reload/all exists (a HUP sent by hand reloads everything).
 * A HUP also starts any daemon configured since the supervisor started
 * (`c2s add` writes c2s-<k>.xml, then asks for a reload of the router),
 * and stops for good a c2s-<k> (k >= 2) whose config is gone (`c2s del`);
 * any other daemon keeps running without its config (a warning).
 * DIR/ctl belongs to the invoking user, so no daemon can ask for a
 * reload. Two `start`s at once are serialised by a flock
 * on DIR/ctl/start.lock, taken before PostgreSQL is touched and held until
 * the supervisor holds its own lock. `stop` without a supervisor (it was
 * killed) stops the daemons its state file lists, each only if the pid is
 * still that daemon's binary run by the daemon's user, and PostgreSQL.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "common/log.h"
#include "common/xml.h"
#include "tools/parleyctl.h"

/* Dependency order: started first to last, stopped last to first. The sm
 * before c2s, so that a client's session has somewhere to go. */
#define C2S(k)                                                                                     \
    {                                                                                              \
        "c2s-" #k, "parley-c2s", "c2s", "parley-c2s", "c2s ready"                                  \
    }
const struct ctl_daemon ctl_daemons[] = {
    {"router", "parley-router", "router", "parley-router", NULL},
    {"sm", "parley-sm", "sm", "parley-sm", "sm ready"},
    C2S(1),
    C2S(2),
    C2S(3),
    C2S(4),
    C2S(5),
    C2S(6),
    C2S(7),
    C2S(8),
    C2S(9),
    C2S(10),
    C2S(11),
    C2S(12),
    C2S(13),
    C2S(14),
    C2S(15),
    C2S(16),
    {"s2s", "parley-s2s", "s2s", "parley-s2s", "s2s ready"},
};
#undef C2S
const size_t ctl_daemon_count = sizeof(ctl_daemons) / sizeof(ctl_daemons[0]);

const struct ctl_daemon *ctl_daemon_find(const char *name)
{
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        if (strcmp(ctl_daemons[i].name, name) == 0)
            return &ctl_daemons[i];
    }
    return NULL;
}

bool ctl_daemon_configured(const struct ctl *c, const struct ctl_daemon *d)
{
    char path[CTL_PATH_MAX];
    ctl_path(c, path, "etc/%s.xml", d->name);
    return access(path, F_OK) == 0;
}

#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 60000
#define STABLE_MS      60000 /* a run this long resets the back-off */
#define STOP_KILL_MS   15000 /* TERM, then KILL after this */
#define START_WAIT_MS  30000 /* `start` waits this long for the daemons */
#define STOP_WAIT_MS   60000 /* `stop` waits this long for the supervisor */
#define DAEMONS_MAX    CTL_DAEMONS_MAX
#define READY_POLL_MS  50
#define READY_CHUNK    16384 /* bytes of a log read per look for the ready line */

struct sup_child {
    const struct ctl_daemon *d;
    uv_process_t proc;
    uv_timer_t timer; /* restart back-off, then the KILL timeout when stopping */
    bool enabled;     /* configured in this instance (ctl_daemon_configured) */
    bool removing;    /* its config is gone (`c2s del`): stopping it for good */
    bool spawned;     /* spawned at least once */
    bool running;
    bool ready;     /* passed its readiness check since its last spawn */
    off_t scan_off; /* its log from here on is this run's (ready line search) */
    bool proc_open; /* proc not yet closed */
    int pid;
    time_t started; /* wall clock, for status */
    uint64_t started_ms;
    uint64_t backoff_ms;
    unsigned restarts;
    int log_fd;
};

struct sup {
    struct ctl *c;
    uv_loop_t loop;
    uv_signal_t sig_term, sig_int, sig_hup;
    uv_timer_t ready_timer; /* READY_POLL_MS while a running daemon is not ready */
    struct sup_child kids[DAEMONS_MAX];
    bool stopping;
    size_t stop_next; /* kids[0..stop_next) still to stop */
};

static void sup_spawn(struct sup *s, struct sup_child *k);
static void sup_stop_next(struct sup *s);
static int run_start(struct ctl *c, int startfd);
static bool run_router_ready(const struct ctl *c);
static void on_ready_poll(uv_timer_t *t);
static void on_kill_timeout(uv_timer_t *t);

static void sup_write_state(struct sup *s)
{
    char path[CTL_PATH_MAX], tmp[CTL_PATH_MAX + 8], line[256];
    ctl_path(s->c, path, "ctl/parleyctl.state");
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (f == NULL) {
        log_err("cannot write %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        return;
    }
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        struct sup_child *k = &s->kids[i];
        if (!k->enabled)
            continue;
        snprintf(line, sizeof(line), "%s %d %lld %u %s\n", k->d->name, k->running ? k->pid : 0,
                 (long long)k->started, k->restarts,
                 k->running && k->ready ? "up"
                 : k->running           ? "starting"
                 : s->stopping          ? "stopping"
                 : k->spawned           ? "restarting"
                                        : "waiting");
        fputs(line, f);
    }
    if (fclose(f) != 0 || rename(tmp, path) < 0)
        log_err("cannot write %s: %s", path, strerror(errno));
}

static void on_proc_close(uv_handle_t *h)
{
    struct sup_child *k = h->data;
    k->proc_open = false;
}

static void on_restart(uv_timer_t *t)
{
    struct sup *s = t->loop->data;
    struct sup_child *k = t->data;
    if (!s->stopping)
        sup_spawn(s, k);
}

static void sup_schedule_restart(struct sup *s, struct sup_child *k)
{
    log_warn("restarting %s in %llu s", k->d->exe, (unsigned long long)(k->backoff_ms / 1000));
    uv_timer_start(&k->timer, on_restart, k->backoff_ms, 0);
    k->backoff_ms = k->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : k->backoff_ms * 2;
}

/* A daemon whose config is gone and that does not run: out of the state,
 * as if never started (a later `c2s add` of that name starts it afresh). */
static void sup_disable(struct sup *s, struct sup_child *k)
{
    uv_timer_stop(&k->timer);
    if (k->log_fd >= 0)
        close(k->log_fd);
    k->log_fd = -1;
    k->enabled = k->removing = k->spawned = false;
    k->restarts = 0;
    k->backoff_ms = BACKOFF_MIN_MS;
    sup_write_state(s);
}

static void on_child_exit(uv_process_t *p, int64_t status, int term_signal)
{
    struct sup *s = p->loop->data;
    struct sup_child *k = p->data;
    uint64_t ran = uv_now(p->loop) - k->started_ms;
    k->running = false;
    k->ready = false;
    uv_close((uv_handle_t *)p, on_proc_close);
    if (k->removing && !s->stopping) {
        /* `c2s del` then `c2s add` of the same name within the stop: the
         * config is back, and the new one runs. */
        if (ctl_daemon_configured(s->c, k->d)) {
            log_info("%s (pid %d) stopped; %s is configured again: starting it", k->d->exe, k->pid,
                     k->d->name);
            k->removing = false;
            uv_timer_stop(&k->timer);
            k->restarts = 0;
            k->backoff_ms = BACKOFF_MIN_MS;
            sup_spawn(s, k);
            return;
        }
        log_info("%s (pid %d) stopped: %s is no longer configured", k->d->exe, k->pid, k->d->name);
        sup_disable(s, k);
        return;
    }
    if (s->stopping) {
        log_info("%s (pid %d) stopped (%s %d)", k->d->exe, k->pid,
                 term_signal ? "signal" : "status", term_signal ? term_signal : (int)status);
        uv_timer_stop(&k->timer);
        sup_write_state(s);
        sup_stop_next(s);
        return;
    }
    if (term_signal)
        log_err("%s (pid %d) crashed: killed by signal %d (%s) after %llu ms", k->d->exe, k->pid,
                term_signal, strsignal(term_signal), (unsigned long long)ran);
    else
        log_err("%s (pid %d) crashed: exited with status %d after %llu ms", k->d->exe, k->pid,
                (int)status, (unsigned long long)ran);
    if (ran >= STABLE_MS)
        k->backoff_ms = BACKOFF_MIN_MS;
    k->restarts++;
    sup_write_state(s);
    sup_schedule_restart(s, k);
}

static void sup_spawn(struct sup *s, struct sup_child *k)
{
    char exe[CTL_PATH_MAX], conf[CTL_PATH_MAX];
    if (k->proc_open) {
        /* The last process's handle is still closing: try again shortly. */
        uv_timer_start(&k->timer, on_restart, 10, 0);
        return;
    }
    ctl_daemon_exe(k->d, exe);
    ctl_path(s->c, conf, "etc/%s.xml", k->d->name);
    char fg[] = "-f", dash_c[] = "-c";
    char *args[] = {exe, fg, dash_c, conf, NULL};
    uv_stdio_container_t stdio[3] = {
        {.flags = UV_IGNORE},
        {.flags = UV_INHERIT_FD, .data.fd = k->log_fd},
        {.flags = UV_INHERIT_FD, .data.fd = k->log_fd},
    };
    uv_process_options_t o = {
        .exit_cb = on_child_exit,
        .file = exe,
        .args = args,
        .stdio_count = 3,
        .stdio = stdio,
    };
    k->proc.data = k;
    k->spawned = true;
    k->ready = false;
    /* What the log holds from here on is this run's: the ready line is
     * looked for there only (the file is opened O_APPEND by us alone). */
    k->scan_off = lseek(k->log_fd, 0, SEEK_END);
    if (k->scan_off < 0)
        k->scan_off = 0;
    int rc = uv_spawn(&s->loop, &k->proc, &o);
    if (rc < 0) {
        log_err("cannot start %s: %s", exe, uv_strerror(rc));
        /* uv_spawn leaves an initialised handle behind that must be closed. */
        k->proc_open = true;
        uv_close((uv_handle_t *)&k->proc, on_proc_close);
        k->restarts++;
        sup_write_state(s);
        sup_schedule_restart(s, k);
        return;
    }
    k->proc_open = true;
    k->running = true;
    k->pid = k->proc.pid;
    k->started = time(NULL);
    k->started_ms = uv_now(&s->loop);
    log_info("started %s (pid %d)", k->d->exe, k->pid);
    sup_write_state(s);
    if (!uv_is_active((uv_handle_t *)&s->ready_timer))
        uv_timer_start(&s->ready_timer, on_ready_poll, READY_POLL_MS, READY_POLL_MS);
}

/* Has k's log got its ready line since k->scan_off? Moves scan_off past
 * what was searched (keeping a marker's length, which may straddle). */
static bool sup_log_ready(struct sup *s, struct sup_child *k)
{
    char path[CTL_PATH_MAX], buf[READY_CHUNK + 1];
    ctl_path(s->c, path, "log/%s.log", k->d->name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return false;
    size_t mlen = strlen(k->d->ready);
    bool found = false;
    for (;;) {
        ssize_t n = pread(fd, buf, READY_CHUNK, k->scan_off);
        if (n <= 0)
            break;
        buf[n] = '\0';
        /* Log lines hold no NUL; a stray one only ends the search early. */
        if (strstr(buf, k->d->ready) != NULL) {
            found = true;
            break;
        }
        if ((size_t)n < mlen)
            break;
        k->scan_off += n - (ssize_t)(mlen - 1);
        if ((size_t)n < READY_CHUNK)
            break;
    }
    close(fd);
    return found;
}

/* The first enabled daemon not yet spawned, in order, or NULL. */
static struct sup_child *sup_next_unspawned(struct sup *s)
{
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        if (s->kids[i].enabled && !s->kids[i].spawned)
            return &s->kids[i];
    }
    return NULL;
}

static void on_ready_poll(uv_timer_t *t)
{
    struct sup *s = t->loop->data;
    bool waiting = false, changed = false, all_ready = true;
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        struct sup_child *k = &s->kids[i];
        if (!k->enabled)
            continue;
        if (k->running && !k->ready) {
            k->ready = k->d->ready != NULL ? sup_log_ready(s, k) : run_router_ready(s->c);
            if (k->ready) {
                log_info("%s (pid %d) is ready", k->d->exe, k->pid);
                changed = true;
            } else {
                waiting = true;
            }
        }
        if (k->spawned)
            all_ready = all_ready && k->running && k->ready;
    }
    if (changed)
        sup_write_state(s);
    /* Start-up goes on once everything spawned so far is ready. */
    struct sup_child *next = sup_next_unspawned(s);
    if (!s->stopping && next != NULL && all_ready) {
        sup_spawn(s, next);
        return;
    }
    if (!waiting || s->stopping)
        uv_timer_stop(&s->ready_timer);
}

static void on_kill_timeout(uv_timer_t *t)
{
    struct sup_child *k = t->data;
    if (k->running) {
        log_warn("%s (pid %d) did not stop within %d s: KILL", k->d->exe, k->pid,
                 STOP_KILL_MS / 1000);
        uv_process_kill(&k->proc, SIGKILL);
    }
}

static void sup_close_all(struct sup *s)
{
    uv_close((uv_handle_t *)&s->sig_term, NULL);
    uv_close((uv_handle_t *)&s->sig_int, NULL);
    uv_close((uv_handle_t *)&s->sig_hup, NULL);
    uv_close((uv_handle_t *)&s->ready_timer, NULL);
    for (size_t i = 0; i < ctl_daemon_count; i++)
        uv_close((uv_handle_t *)&s->kids[i].timer, NULL);
}

/* Stop the last daemon still running; when none is left, end the loop. */
static void sup_stop_next(struct sup *s)
{
    while (s->stop_next > 0) {
        struct sup_child *k = &s->kids[--s->stop_next];
        uv_timer_stop(&k->timer);
        if (!k->running)
            continue;
        log_info("stopping %s (pid %d)", k->d->exe, k->pid);
        uv_process_kill(&k->proc, SIGTERM);
        uv_timer_start(&k->timer, on_kill_timeout, STOP_KILL_MS, 0);
        /* Back here from on_child_exit once it has exited: it is then
         * not running and the loop moves on to the one before it. */
        s->stop_next++;
        return;
    }
    sup_close_all(s);
}

/* Take a reload request (DIR/ctl/reload/<name>) away: was it there? */
static bool sup_reload_asked(struct sup *s, const char *name)
{
    char path[CTL_PATH_MAX];
    ctl_path(s->c, path, "ctl/reload/%s", name);
    return unlink(path) == 0;
}

/* A daemon configured since the supervisor started (`c2s add`): its log,
 * then a spawn once those before it are ready (on_ready_poll). */
static void sup_enable(struct sup *s, struct sup_child *k)
{
    char path[CTL_PATH_MAX];
    ctl_path(s->c, path, "log/%s.log", k->d->name);
    k->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (k->log_fd < 0) {
        log_err("cannot open %s: %s", path, strerror(errno));
        return;
    }
    k->enabled = true;
    log_info("%s is configured now: starting it", k->d->name);
    sup_write_state(s);
    if (!uv_is_active((uv_handle_t *)&s->ready_timer))
        uv_timer_start(&s->ready_timer, on_ready_poll, READY_POLL_MS, READY_POLL_MS);
}

/* A daemon whose config was removed while it runs (`c2s del`): TERM, KILL
 * after STOP_KILL_MS, no restart (on_child_exit); not running: dropped. */
static void sup_remove(struct sup *s, struct sup_child *k)
{
    if (!k->running) {
        log_info("%s is no longer configured", k->d->name);
        sup_disable(s, k);
        return;
    }
    log_info("%s is no longer configured: stopping %s (pid %d)", k->d->name, k->d->exe, k->pid);
    k->removing = true;
    uv_process_kill(&k->proc, SIGTERM);
    uv_timer_start(&k->timer, on_kill_timeout, STOP_KILL_MS, 0);
}

/* Only c2s-2 .. c2s-N come and go (`c2s del`): the router, sm, s2s and
 * c2s-1 are the instance, and a config of theirs gone missing (a hand
 * edit half-way) must not stop them. */
static bool sup_removable(const struct ctl_daemon *d)
{
    return strncmp(d->name, "c2s-", 4) == 0 && atoi(d->name + 4) >= 2;
}

/* HUP: to the daemons named in DIR/ctl/reload/, or to all (see the top);
 * a daemon configured meanwhile is started instead, a c2s-<k> (k >= 2)
 * whose config is gone is stopped for good. */
static void sup_reload(struct sup *s)
{
    bool want[DAEMONS_MAX], any = false;
    bool all = sup_reload_asked(s, "all");
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        want[i] = sup_reload_asked(s, ctl_daemons[i].name);
        any = any || want[i];
    }
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        struct sup_child *k = &s->kids[i];
        if ((all || !any || want[i]) && k->running) {
            log_info("reloading %s (pid %d): HUP", k->d->exe, k->pid);
            uv_process_kill(&k->proc, SIGHUP);
        }
        if (!k->enabled && !s->stopping && ctl_daemon_configured(s->c, k->d))
            sup_enable(s, k);
        else if (k->enabled && !k->removing && !s->stopping && !ctl_daemon_configured(s->c, k->d)) {
            if (sup_removable(k->d))
                sup_remove(s, k);
            else
                log_warn("etc/%s.xml is missing: %s keeps running (only c2s-2 and up are "
                         "removed)",
                         k->d->name, k->d->name);
        }
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct sup *s = h->loop->data;
    if (signum == SIGHUP) {
        sup_reload(s);
        return;
    }
    if (s->stopping)
        return;
    log_info("stopping (signal %d)", signum);
    s->stopping = true;
    uv_timer_stop(&s->ready_timer);
    s->stop_next = ctl_daemon_count;
    sup_write_state(s);
    for (size_t i = 0; i < ctl_daemon_count; i++)
        uv_timer_stop(&s->kids[i].timer);
    sup_stop_next(s);
}

/* The supervisor process: returns its exit code. ready_fd gets "ok\n" once
 * every daemon was spawned, or an error text. */
static int sup_main(struct ctl *c, int ready_fd)
{
    char path[CTL_PATH_MAX];
    struct sup s;
    memset(&s, 0, sizeof(s));
    s.c = c;

    ctl_path(c, path, "ctl/parleyctl.pid");
    int pidfd = ctl_sup_lock_fd(c, O_RDWR | O_CREAT);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    if (pidfd < 0 || fcntl(pidfd, F_SETLK, &fl) < 0) {
        dprintf(ready_fd, "cannot lock %s: %s\n", path, strerror(errno));
        return 1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(pidfd, 0) < 0 || write(pidfd, pid, (size_t)n) != n) {
        dprintf(ready_fd, "cannot write %s: %s\n", path, strerror(errno));
        return 1;
    }

    ctl_path(c, path, "log/parleyctl.log");
    int logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
    int devnull = open("/dev/null", O_RDWR);
    if (logfd < 0 || devnull < 0) {
        dprintf(ready_fd, "cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    dup2(devnull, STDIN_FILENO);
    dup2(logfd, STDOUT_FILENO);
    dup2(logfd, STDERR_FILENO);
    close(devnull);
    close(logfd);
    log_init("parleyctl", 0, LOG_LVL_INFO);
    log_info("supervisor started (pid %d) for %s", (int)getpid(), c->dir);

    uv_loop_init(&s.loop);
    s.loop.data = &s;
    uv_signal_init(&s.loop, &s.sig_term);
    uv_signal_init(&s.loop, &s.sig_int);
    uv_signal_init(&s.loop, &s.sig_hup);
    uv_signal_start(&s.sig_term, on_signal, SIGTERM);
    uv_signal_start(&s.sig_int, on_signal, SIGINT);
    uv_signal_start(&s.sig_hup, on_signal, SIGHUP);
    uv_timer_init(&s.loop, &s.ready_timer);
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        struct sup_child *k = &s.kids[i];
        k->d = &ctl_daemons[i];
        k->enabled = ctl_daemon_configured(c, k->d);
        k->backoff_ms = BACKOFF_MIN_MS;
        k->log_fd = -1;
        uv_timer_init(&s.loop, &k->timer);
        k->timer.data = k;
        if (!k->enabled)
            continue;
        ctl_path(c, path, "log/%s.log", k->d->name);
        k->log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0640);
        if (k->log_fd < 0) {
            log_err("cannot open %s: %s", path, strerror(errno));
            dprintf(ready_fd, "cannot open %s: %s\n", path, strerror(errno));
            return 1;
        }
    }
    /* The first now, each next one once those before it are ready. */
    struct sup_child *first = sup_next_unspawned(&s);
    if (first != NULL)
        sup_spawn(&s, first);
    sup_write_state(&s);
    if (write(ready_fd, "ok\n", 3) != 3)
        log_warn("start did not wait for us");
    close(ready_fd);

    uv_run(&s.loop, UV_RUN_DEFAULT);
    uv_loop_close(&s.loop);
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        if (s.kids[i].log_fd >= 0)
            close(s.kids[i].log_fd);
    }
    int rc = 0;
    if (ctl_pg_stop(c) != 0) {
        log_err("PostgreSQL did not stop cleanly");
        rc = 1;
    }
    ctl_path(c, path, "ctl/parleyctl.state");
    unlink(path);
    ctl_path(c, path, "ctl/parleyctl.pid");
    unlink(path);
    log_info("supervisor stopped");
    close(pidfd);
    return rc;
}

/* Is the router accepting? Its TCP port and its Unix socket. */
static bool run_router_ready(const struct ctl *c)
{
    char sock[CTL_PATH_MAX];
    ctl_path(c, sock, "run/router/router.sock");
    if (access(sock, F_OK) != 0)
        return false;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->router_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* start waits for d's ready line, which is logged at info level: a config
 * whose <log><level> hides it would only time out. 0, or 1 (message). */
static int run_check_log_level(const struct ctl *c, const struct ctl_daemon *d)
{
    char path[CTL_PATH_MAX], err[256];
    static char text[256 * 1024];
    if (d->ready == NULL)
        return 0;
    ctl_path(c, path, "etc/%s.xml", d->name);
    if (ctl_read_file(path, text, sizeof(text)) < 0) {
        ctl_err("cannot read %s: %s", path, strerror(errno));
        return 1;
    }
    struct xml_node *root = xml_parse_document(text, strlen(text), NULL, err, sizeof(err));
    if (root == NULL) {
        ctl_err("%s: %s", path, err);
        return 1;
    }
    struct xml_node *log = xml_child(root, NULL, "log");
    struct xml_node *lvl = log != NULL ? xml_child(log, NULL, "level") : NULL;
    const char *v = lvl != NULL ? xml_text(lvl, NULL) : NULL;
    int rc = 0;
    if (v != NULL && strcmp(v, "info") != 0 && strcmp(v, "debug") != 0) {
        ctl_err("%s: <log><level>%s</level> hides the line \"%s\" that start waits for: "
                "use info or debug",
                path, v, d->ready);
        rc = 1;
    }
    xml_free(root);
    return rc;
}

/* One line of the state file for daemon name. */
struct run_state {
    int pid;
    long long started;
    unsigned restarts;
    char what[16];
};

static int run_read_state(const struct ctl *c, const char *name, struct run_state *st)
{
    char path[CTL_PATH_MAX], text[4096];
    ctl_path(c, path, "ctl/parleyctl.state");
    if (ctl_read_file(path, text, sizeof(text)) < 0)
        return -1;
    for (char *line = strtok(text, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char n[64];
        if (sscanf(line, "%63s %d %lld %u %15s", n, &st->pid, &st->started, &st->restarts,
                   st->what) == 5 &&
            strcmp(n, name) == 0)
            return 0;
    }
    return -1;
}

static void run_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* Wait (bounded) until pid is gone. */
static bool run_wait_gone(pid_t pid, long ms)
{
    for (long t = 0; t < ms; t += 50) {
        if (kill(pid, 0) < 0 && errno == ESRCH)
            return true;
        run_sleep_ms(50);
    }
    return false;
}

/* Is pid still the daemon d, as the supervisor started it: its binary, run
 * by the daemon's user? A pid from the state file may have been reused. */
static bool run_is_daemon(const struct ctl *c, const struct ctl_daemon *d, pid_t pid)
{
    char path[64], exe[CTL_PATH_MAX], want[CTL_PATH_MAX], real[PATH_MAX], text[4096];
    uid_t uid;
    gid_t gid;
    if (ctl_user_ids(c, d->user, &uid, &gid) != 0)
        return false;
    ctl_daemon_exe(d, want);
    if (realpath(want, real) == NULL)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
    ssize_t n = readlink(path, exe, sizeof(exe) - 1);
    if (n < 0 && errno == EACCES && !c->as_root) {
        /* A daemon that made itself undumpable hides its exe from its own
         * user; that user's process names its program in cmdline, which
         * only that same user could fake: no privilege is at stake. */
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
        if (ctl_read_file(path, exe, sizeof(exe)) < 0 || realpath(exe, want) == NULL)
            return false;
        snprintf(exe, sizeof(exe), "%s", want);
        n = (ssize_t)strlen(exe);
    }
    if (n <= 0)
        return false;
    exe[n] = '\0';
    if (strcmp(exe, real) != 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (ctl_read_file(path, text, sizeof(text)) < 0)
        return false;
    const char *u = strstr(text, "\nUid:");
    unsigned ruid, euid;
    return u != NULL && sscanf(u + 5, "%u %u", &ruid, &euid) == 2 && ruid == uid && euid == uid;
}

/* The supervisor is gone: stop the daemons its state lists. The number
 * stopped, or -1 if one could not be stopped. */
static int run_stop_orphans(const struct ctl *c)
{
    int rc = 0, stopped = 0;
    for (size_t i = ctl_daemon_count; i-- > 0;) {
        const struct ctl_daemon *d = &ctl_daemons[i];
        struct run_state rs;
        if (run_read_state(c, d->name, &rs) != 0 || rs.pid <= 1 || !run_is_daemon(c, d, rs.pid))
            continue;
        ctl_note("the supervisor is gone; stopping %s (pid %d)", d->exe, rs.pid);
        if (kill(rs.pid, SIGTERM) == 0 && !run_wait_gone(rs.pid, STOP_KILL_MS)) {
            ctl_note("%s (pid %d) did not stop within %d s: KILL", d->exe, rs.pid,
                     STOP_KILL_MS / 1000);
            kill(rs.pid, SIGKILL);
        }
        if (!run_wait_gone(rs.pid, 5000)) {
            ctl_err("cannot stop %s (pid %d)", d->exe, rs.pid);
            rc = -1;
        } else {
            stopped++;
        }
    }
    char path[CTL_PATH_MAX];
    if (rc == 0) {
        ctl_path(c, path, "ctl/parleyctl.state");
        unlink(path);
    }
    return rc < 0 ? rc : stopped;
}

int ctl_cmd_stop(struct ctl *c, int argc, char **argv)
{
    if (argc != 1) {
        ctl_err("usage: parleyctl -d DIR stop");
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    pid_t pid = ctl_sup_pid(c);
    if (pid == 0) {
        /* A supervisor that was killed leaves its daemons and PostgreSQL. */
        int n = run_stop_orphans(c);
        int rc = n < 0;
        if (ctl_pg_stop(c) != 0)
            rc = 1;
        if (rc == 0 && n > 0)
            printf("stopped (the supervisor was gone)\n");
        else if (rc == 0)
            ctl_note("not running");
        return rc;
    }
    if (kill(pid, SIGTERM) < 0) {
        ctl_err("cannot signal the supervisor (pid %d): %s", (int)pid, strerror(errno));
        return 1;
    }
    if (!run_wait_gone(pid, STOP_WAIT_MS)) {
        ctl_err("the supervisor (pid %d) did not stop within %d s; see %s/log/parleyctl.log",
                (int)pid, STOP_WAIT_MS / 1000, c->dir);
        return 1;
    }
    printf("stopped\n");
    return 0;
}

int ctl_cmd_start(struct ctl *c, int argc, char **argv)
{
    char path[CTL_PATH_MAX];
    if (argc != 1) {
        ctl_err("usage: parleyctl -d DIR start");
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    /* One start at a time, from before PostgreSQL is touched until the
     * supervisor holds its own lock (then the next start sees it). */
    ctl_path(c, path, "ctl/start.lock");
    int startfd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (startfd < 0) {
        ctl_err("cannot open %s: %s", path, strerror(errno));
        return 1;
    }
    if (flock(startfd, LOCK_EX | LOCK_NB) < 0) {
        ctl_err("another `parleyctl -d %s start` is running (or a user or db command that "
                "runs the stopped instance's database meanwhile)",
                c->dir);
        close(startfd);
        return 1;
    }
    int rc = run_start(c, startfd);
    close(startfd);
    return rc;
}

static int run_start(struct ctl *c, int startfd)
{
    pid_t old = ctl_sup_pid(c);
    if (old != 0) {
        ctl_err("already running (supervisor pid %d); `parleyctl -d %s status` shows it", (int)old,
                c->dir);
        return 1;
    }
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        const struct ctl_daemon *d = &ctl_daemons[i];
        char exe[CTL_PATH_MAX], rundir[CTL_PATH_MAX];
        uid_t uid = 0;
        gid_t gid = 0;
        if (!ctl_daemon_configured(c, d))
            continue;
        ctl_daemon_exe(d, exe);
        if (access(exe, X_OK) != 0) {
            ctl_err("cannot run %s: %s", exe, strerror(errno));
            return 1;
        }
        if (run_check_log_level(c, d) != 0)
            return 1;
        /* Its own writable directory (an instance made before this daemon
         * existed has none yet). */
        ctl_path(c, rundir, "run/%s", d->name);
        if (access(rundir, F_OK) != 0 && (ctl_user_ids(c, d->user, &uid, &gid) != 0 ||
                                          ctl_mkdir(c, rundir, 0755, uid, gid) != 0))
            return 1;
    }
    /* The daemons reach the router's socket through the group CTL_GROUP
     * (ensured again: an instance made before the group has none). */
    if (ctl_group_ensure(c) != 0)
        return 1;
    /* Only a cluster this call started is this call's to stop on failure. */
    bool pg_ours = c->private_db && !ctl_pg_running(c);
    if (ctl_pg_start(c) != 0)
        return 1;

    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        ctl_err("pipe: %s", strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t child = fork();
    if (child < 0) {
        ctl_err("fork: %s", strerror(errno));
        return 1;
    }
    if (child == 0) {
        close(p[0]);
        /* The flock belongs to this start, not to the supervisor's life. */
        close(startfd);
        setsid();
        pid_t sup = fork();
        if (sup != 0)
            _exit(sup < 0 ? 1 : 0);
        umask(022);
        exit(sup_main(c, p[1]));
    }
    close(p[1]);
    int st;
    waitpid(child, &st, 0);
    char msg[512];
    size_t len = 0;
    ssize_t n;
    while (len + 1 < sizeof(msg) && (n = read(p[0], msg + len, sizeof(msg) - 1 - len)) > 0)
        len += (size_t)n;
    close(p[0]);
    msg[len] = '\0';
    if (strcmp(msg, "ok\n") != 0) {
        ctl_err("the supervisor did not start: %s", len > 0 ? msg : "(no reason given)");
        if (pg_ours)
            ctl_pg_stop(c);
        return 1;
    }

    /* Wait for the supervisor to find each daemon ready, in order; a
     * restart during the wait is a failed start. */
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        const struct ctl_daemon *d = &ctl_daemons[i];
        struct run_state rs;
        bool up = false;
        if (!ctl_daemon_configured(c, d))
            continue;
        for (long t = 0; t < START_WAIT_MS && !up; t += 50) {
            if (run_read_state(c, d->name, &rs) == 0 && rs.restarts > 0)
                break;
            up = run_read_state(c, d->name, &rs) == 0 && strcmp(rs.what, "up") == 0;
            if (!up)
                run_sleep_ms(50);
        }
        if (!up) {
            ctl_err("%s did not come up; see %s/log/%s.log and %s/log/parleyctl.log", d->exe,
                    c->dir, d->name, c->dir);
            const char *stop_argv[] = {"stop"};
            ctl_cmd_stop(c, 1, (char **)stop_argv);
            return 1;
        }
        /* The name too where one program runs several times (c2s-<k>). */
        if (run_read_state(c, d->name, &rs) == 0)
            printf("%s: up (pid %d%s%s)\n", d->exe, rs.pid, strcmp(d->name, d->subdir) ? ", " : "",
                   strcmp(d->name, d->subdir) ? d->name : "");
    }
    printf("started (supervisor log: %s/log/parleyctl.log)\n", c->dir);
    return 0;
}

int ctl_cmd_status(struct ctl *c, int argc, char **argv)
{
    char path[CTL_PATH_MAX];
    if (argc != 1) {
        ctl_err("usage: parleyctl -d DIR status");
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    int rc = 0;
    pid_t sup = ctl_sup_pid(c);
    if (sup != 0)
        printf("supervisor: running (pid %d)\n", (int)sup);
    else {
        printf("supervisor: stopped\n");
        rc = 1;
    }
    time_t now = time(NULL);
    for (size_t i = 0; i < ctl_daemon_count; i++) {
        const struct ctl_daemon *d = &ctl_daemons[i];
        struct run_state rs;
        if (!ctl_daemon_configured(c, d))
            continue;
        if (sup == 0 || run_read_state(c, d->name, &rs) != 0) {
            printf("%s: stopped\n", d->name);
            rc = 1;
        } else if (rs.pid > 0 && (kill(rs.pid, 0) == 0 || errno == EPERM)) {
            /* "up" once ready, "starting" before */
            printf("%s: %s (pid %d, uptime %llds, restarts %u)\n", d->name, rs.what, rs.pid,
                   (long long)now - rs.started, rs.restarts);
            if (strcmp(rs.what, "up") != 0)
                rc = 1;
        } else {
            printf("%s: down (%s, restarts %u)\n", d->name, rs.what, rs.restarts);
            rc = 1;
        }
    }
    if (c->private_db) {
        ctl_path(c, path, "pg/data/postmaster.pid");
        pid_t pg = ctl_pidfile_alive(path);
        if (pg != 0)
            printf("postgresql: running (pid %d, socket in %s/pg/run)\n", (int)pg, c->dir);
        else {
            printf("postgresql: stopped\n");
            rc = 1;
        }
    } else {
        printf("postgresql: external (DSN in etc/parley.xml)\n");
    }
    return rc;
}

int ctl_reload_names(const struct ctl *c, const char *const *names, size_t n)
{
    char path[CTL_PATH_MAX];
    pid_t pid = ctl_sup_pid(c);
    if (pid == 0)
        return 0;
    /* The request names the daemons; DIR/ctl is the invoking user's. */
    ctl_path(c, path, "ctl/reload");
    if (ctl_mkdir(c, path, 0755, getuid(), getgid()) != 0)
        return -1;
    /* The requests this call made (not one already waiting): taken back
     * if no HUP goes out, so that a later HUP is not aimed by them. */
    bool made[CTL_DAEMONS_MAX + 1] = {false};
    int rc = 1;
    for (size_t i = 0; i < n && i < CTL_DAEMONS_MAX + 1 && rc > 0; i++) {
        ctl_path(c, path, "ctl/reload/%s", names[i]);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0 && errno == EEXIST)
            continue;
        if (fd < 0) {
            ctl_err("cannot write %s: %s", path, strerror(errno));
            rc = -1;
            break;
        }
        made[i] = true;
        close(fd);
    }
    if (rc > 0 && kill(pid, SIGHUP) < 0) {
        ctl_err("cannot signal the supervisor (pid %d): %s", (int)pid, strerror(errno));
        rc = -1;
    }
    for (size_t i = 0; rc < 0 && i < n && i < CTL_DAEMONS_MAX + 1; i++) {
        ctl_path(c, path, "ctl/reload/%s", names[i]);
        if (made[i])
            unlink(path);
    }
    return rc;
}

int ctl_reload(const struct ctl *c, const char *name)
{
    const char *names[] = {name != NULL ? name : "all"};
    return ctl_reload_names(c, names, 1);
}

int ctl_cmd_reload(struct ctl *c, int argc, char **argv)
{
    if (argc > 2) {
        ctl_err("usage: parleyctl -d DIR reload [DAEMON]");
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    const struct ctl_daemon *d = NULL;
    if (argc == 2) {
        d = ctl_daemon_find(argv[1]);
        if (d == NULL || !ctl_daemon_configured(c, d)) {
            ctl_err("no daemon %s in this instance (`parleyctl -d %s status` lists them)", argv[1],
                    c->dir);
            return 1;
        }
    }
    int rc = ctl_reload(c, d != NULL ? d->name : NULL);
    if (rc == 0) {
        ctl_err("not running");
        return 1;
    }
    if (rc < 0)
        return 1;
    printf("reload: HUP to %s through the supervisor\n", d != NULL ? d->exe : "every daemon");
    return 0;
}
