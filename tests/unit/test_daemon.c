/*
 * test_daemon.c - the daemon skeleton: the privilege drop in forked
 * children, and the whole skeleton through daemon_demo (a real daemon run
 * as a child process): -t, pidfile lock and takeover, TERM, HUP, USR1,
 * a forced stop, daemonizing, and the refusal to stay root.
 *
 * Readiness is awaited by polling for marker files with a bounded loop;
 * nothing asserts on time. When the test runs as root the demo drops to
 * "nobody", so each test's directory is given to that user.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/daemon.h"
#include "common/err.h"

#define POLL_STEPS 2000 /* x 10 ms: a generous bound, not a timing assertion */

struct env {
    char dir[64];
    char conf[160];
    char pidfile[192];
    pid_t pids[8]; /* children started, killed by teardown if a test failed */
    size_t npids;
};

static bool is_root(void)
{
    return geteuid() == 0;
}

static void nap(void)
{
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void path_in(const struct env *e, const char *name, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s/%s", e->dir, name);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The file's contents (NUL-terminated, in a static buffer), or NULL. */
static const char *slurp(const char *path)
{
    static char data[16384];
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t n = fread(data, 1, sizeof(data) - 1, f);
    data[n] = '\0';
    fclose(f);
    return data;
}

static const char *slurp_in(const struct env *e, const char *name)
{
    char path[160];
    path_in(e, name, path, sizeof(path));
    return slurp(path);
}

/* Wait until dir/name exists and contains want (NULL: anything). */
static bool wait_for(const struct env *e, const char *name, const char *want)
{
    for (int i = 0; i < POLL_STEPS; i++) {
        const char *s = slurp_in(e, name);
        if (s && (!want || strstr(s, want)))
            return true;
        nap();
    }
    return false;
}

static bool wait_gone(const char *path)
{
    for (int i = 0; i < POLL_STEPS; i++) {
        if (access(path, F_OK) != 0)
            return true;
        nap();
    }
    return false;
}

/* The exit status of pid; fails the test (after killing it) if it hangs. */
static int wait_exit(pid_t pid)
{
    int status;
    for (int i = 0; i < POLL_STEPS; i++) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            if (WIFEXITED(status))
                return WEXITSTATUS(status);
            return 128 + WTERMSIG(status);
        }
        nap();
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    fail_msg("process %ld did not exit", (long)pid);
    return -1;
}

static void env_setup(struct env *e)
{
    snprintf(e->dir, sizeof(e->dir), "/tmp/parley-daemon-XXXXXX");
    assert_non_null(mkdtemp(e->dir));
    assert_int_equal(chmod(e->dir, 0755), 0);
    if (is_root()) {
        struct passwd *pw = getpwnam("nobody");
        assert_non_null(pw);
        assert_int_equal(chown(e->dir, pw->pw_uid, pw->pw_gid), 0);
    }
    path_in(e, "demo.xml", e->conf, sizeof(e->conf));
    path_in(e, "demo.pid", e->pidfile, sizeof(e->pidfile));
}

static int on_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void env_teardown(struct env *e)
{
    nftw(e->dir, on_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* Each test gets its own directory, removed even when the test fails. */
static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    if (!e)
        return -1;
    env_setup(e);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    for (size_t i = 0; i < e->npids; i++) {
        if (waitpid(e->pids[i], NULL, WNOHANG) == 0) {
            kill(e->pids[i], SIGKILL);
            waitpid(e->pids[i], NULL, 0);
        }
    }
    long daemon_pid = 0; /* a daemonized demo is not our child */
    const char *pid_text = slurp(e->pidfile);
    if (pid_text && sscanf(pid_text, "%ld", &daemon_pid) == 1 && daemon_pid > 0)
        kill((pid_t)daemon_pid, SIGKILL);
    env_teardown(e);
    free(*state);
    return 0;
}

/* A config for the demo; as root it names the user to drop to. */
static void write_conf(const struct env *e, const char *extra)
{
    char text[1024];
    snprintf(text, sizeof(text), "<demo>\n  <dir>%s</dir>\n  <pidfile>%s</pidfile>\n%s%s</demo>\n",
             e->dir, e->pidfile, is_root() ? "  <user>nobody</user>\n" : "", extra);
    write_text(e->conf, text);
}

/* Start the demo with args (NULL-terminated); its output goes to dir/out. */
static pid_t spawn(struct env *e, const char *out, ...)
{
    const char *argv[16] = {DAEMON_DEMO};
    size_t n = 1;
    va_list ap;
    va_start(ap, out);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && n < 15;)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    char path[160];
    path_in(e, out, path, sizeof(path));
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
            _exit(126);
        execv(DAEMON_DEMO, (char *const *)argv);
        _exit(127);
    }
    if (e->npids < sizeof(e->pids) / sizeof(e->pids[0]))
        e->pids[e->npids++] = pid;
    return pid;
}

/* Start the demo in the foreground and wait until post_jail has run. */
static pid_t start(struct env *e, const char *out)
{
    pid_t pid = spawn(e, out, "-f", "-c", e->conf, NULL);
    if (!wait_for(e, "ready", NULL)) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("demo never became ready: %s", slurp_in(e, out));
    }
    return pid;
}

/* ---- daemon_jail_lookup ---- */

static void test_lookup(void **state)
{
    char err[256];
    struct daemon_jail j = {.user = "no-such-user-parley"};
    assert_int_equal(daemon_jail_lookup(&j, err, sizeof(err)), ERR_NOTFOUND);
    assert_string_equal(err, "<user>: no such user 'no-such-user-parley'");

    j = (struct daemon_jail){.user = "nobody", .group = "no-such-group-parley"};
    assert_int_equal(daemon_jail_lookup(&j, err, sizeof(err)), ERR_NOTFOUND);
    assert_string_equal(err, "<group>: no such group 'no-such-group-parley'");

    j = (struct daemon_jail){.user = "root"};
    assert_int_equal(daemon_jail_lookup(&j, err, sizeof(err)), ERR_PERM);
    assert_string_equal(err, "<user>: 'root' has uid 0; a daemon must not run as root");

    j = (struct daemon_jail){.group = "nogroup"};
    assert_int_equal(daemon_jail_lookup(&j, err, sizeof(err)), ERR_PERM);

    j = (struct daemon_jail){0};
    assert_int_equal(daemon_jail_lookup(&j, err, sizeof(err)), 0);
    assert_false(j.have_ids);

    struct passwd *pw = getpwnam("nobody");
    assert_non_null(pw);
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    j = (struct daemon_jail){.user = "nobody"};
    assert_int_equal(daemon_jail_lookup(&j, err, sizeof(err)), 0);
    assert_true(j.have_ids);
    assert_int_equal(j.uid, uid);
    assert_int_equal(j.gid, gid);
}

/* A group with a member other than root that is not the member's primary
 * group, or false: the machine decides whether there is one. */
static bool find_member(char *user, size_t ulen, char *group, size_t glen)
{
    bool found = false;
    setgrent();
    for (struct group *gr; !found && (gr = getgrent()) != NULL;) {
        for (char **m = gr->gr_mem; gr->gr_gid != 0 && m && *m && !found; m++) {
            struct passwd *pw = getpwnam(*m);
            if (pw && pw->pw_uid != 0 && pw->pw_gid != gr->gr_gid && strlen(*m) < ulen &&
                strlen(gr->gr_name) < glen) {
                strcpy(user, *m);
                strcpy(group, gr->gr_name);
                found = true;
            }
        }
    }
    endgrent();
    return found;
}

static void test_lookup_groups(void **state)
{
    char err[256];
    struct passwd *pw = getpwnam("nobody");
    assert_non_null(pw);
    gid_t nobody_gid = pw->pw_gid;
    struct group *primary = getgrgid(nobody_gid);
    assert_non_null(primary);
    char primary_name[64];
    snprintf(primary_name, sizeof(primary_name), "%s", primary->gr_name);

    struct daemon_jail j = {.user = "nobody", .groups = "no-such-group-parley"};
    assert_int_equal(daemon_jail_lookup_groups(&j, err, sizeof(err)), ERR_NOTFOUND);
    assert_string_equal(err, "<groups>: no such group 'no-such-group-parley'");

    j = (struct daemon_jail){.user = "nobody", .groups = "root"};
    assert_int_equal(daemon_jail_lookup_groups(&j, err, sizeof(err)), ERR_PERM);
    assert_string_equal(err, "<groups>: 'root' has gid 0; a daemon must not keep it");

    /* nobody is in no group but its own; the group daemon lists nobody. */
    struct group *dg = getgrnam("daemon");
    assert_non_null(dg);
    for (char **m = dg->gr_mem; m && *m; m++)
        assert_string_not_equal(*m, "nobody");
    j = (struct daemon_jail){.user = "nobody", .groups = "daemon"};
    assert_int_equal(daemon_jail_lookup_groups(&j, err, sizeof(err)), ERR_PERM);
    assert_string_equal(err, "<groups>: 'nobody' is not a member of 'daemon'");

    /* The primary group counts as membership; a repeated name once. */
    char list[160];
    snprintf(list, sizeof(list), " %s\t%s ", primary_name, primary_name);
    j = (struct daemon_jail){.user = "nobody", .groups = list};
    assert_int_equal(daemon_jail_lookup_groups(&j, err, sizeof(err)), 0);
    assert_int_equal(j.ngids, 1);
    assert_int_equal(j.gids[0], nobody_gid);

    j = (struct daemon_jail){.user = "nobody", .groups = " "};
    assert_int_equal(daemon_jail_lookup_groups(&j, err, sizeof(err)), 0);
    assert_int_equal(j.ngids, 0);

    /* <groups> without <user> is refused like <group>. */
    j = (struct daemon_jail){.groups = "daemon"};
    assert_int_equal(daemon_jail_lookup(&j, err, sizeof(err)), ERR_PERM);
    assert_string_equal(err, "<groups> is set but <user> is not");

    /* The whole lookup resolves <groups> only when a drop will happen. */
    j = (struct daemon_jail){.user = "nobody", .groups = "daemon"};
    assert_int_equal(daemon_jail_lookup(&j, err, sizeof(err)), is_root() ? ERR_PERM : 0);
    assert_int_equal(j.ngids, 0);

    /* A listed member (gr_mem), where the machine has one. */
    char user[64], group[64];
    if (find_member(user, sizeof(user), group, sizeof(group))) {
        j = (struct daemon_jail){.user = user, .groups = group};
        assert_int_equal(daemon_jail_lookup_groups(&j, err, sizeof(err)), 0);
        assert_int_equal(j.ngids, 1);
        assert_int_equal(j.gids[0], getgrnam(group)->gr_gid);
    } else {
        print_message("no group with a listed member here: that case is not checked\n");
    }
}

/* ---- daemon_jail_enter, each in a child (it changes the process) ---- */

/* Run fn in a child; returns its exit status. */
static int in_child(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(arg));
    return wait_exit(pid);
}

/* Common checks after a successful enter; a distinct code per failure. */
static int check_jailed(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_CORE, &rl) != 0 || rl.rlim_cur != 0 || rl.rlim_max != 0)
        return 10;
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0)
        return 11;
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
        return 12;
    return 0;
}

static int child_unprivileged(void *arg)
{
    if (geteuid() == 0) {
        /* Become an ordinary user first, as in development. */
        struct passwd *pw = getpwnam("nobody");
        if (!pw || setgroups(1, &pw->pw_gid) || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) ||
            setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid))
            return 2;
    }
    uid_t before = getuid();
    struct daemon_jail j = {.user = "daemon", .chroot = "/nonexistent", .max_open_files = 64};
    if (daemon_jail_enter(&j) != 0)
        return 3;
    if (getuid() != before || access("/etc/passwd", F_OK) != 0)
        return 4;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur != 64)
        return 5;
    return check_jailed();
}

static void test_enter_unprivileged(void **state)
{
    assert_int_equal(in_child(child_unprivileged, NULL), 0);
}

static int child_root_no_user(void *arg)
{
    struct daemon_jail j = {0};
    if (daemon_jail_enter(&j) != ERR_PERM)
        return 2;
    return getuid() == 0 ? 0 : 3;
}

static void test_enter_root_without_user(void **state)
{
    if (!is_root()) {
        print_message("skipped: needs root\n");
        skip();
    }
    assert_int_equal(in_child(child_root_no_user, NULL), 0);
}

static int child_root_drop(void *chroot_dir)
{
    char err[256];
    struct daemon_jail j = {.user = "nobody", .chroot = chroot_dir};
    if (daemon_jail_lookup(&j, err, sizeof(err)) != 0)
        return 2;
    if (daemon_jail_enter(&j) != 0)
        return 3;
    uid_t ru, eu, su;
    if (getresuid(&ru, &eu, &su) != 0 || ru != j.uid || eu != j.uid || su != j.uid)
        return 4;
    /* No <groups>: no supplementary group at all, not even the user's. */
    gid_t groups[4];
    if (getgroups(4, groups) != 0 || getgid() != j.gid)
        return 5;
    if (setuid(0) == 0 || seteuid(0) == 0 || setgid(0) == 0)
        return 6;
    if (chroot_dir) {
        char cwd[64];
        if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, "/") != 0)
            return 7;
        if (access("/inside", F_OK) != 0 || access("/etc/passwd", F_OK) == 0)
            return 8;
    }
    return check_jailed();
}

static void test_enter_root(void **state)
{
    if (!is_root()) {
        print_message("skipped: needs root\n");
        skip();
    }
    assert_int_equal(in_child(child_root_drop, NULL), 0);
}

/* Only <groups> survives the drop: the user's own group, listed, does. */
static int child_root_groups(void *arg)
{
    char err[256];
    struct daemon_jail j = {.user = "nobody", .groups = arg};
    if (daemon_jail_lookup(&j, err, sizeof(err)) != 0 || j.ngids != 1)
        return 2;
    if (daemon_jail_enter(&j) != 0)
        return 3;
    gid_t groups[4];
    if (getgroups(4, groups) != 1 || groups[0] != j.gids[0])
        return 4;
    return check_jailed();
}

static void test_enter_root_groups(void **state)
{
    if (!is_root()) {
        print_message("skipped: needs root\n");
        skip();
    }
    struct passwd *pw = getpwnam("nobody");
    assert_non_null(pw);
    struct group *gr = getgrgid(pw->pw_gid);
    assert_non_null(gr);
    char name[64];
    snprintf(name, sizeof(name), "%s", gr->gr_name);
    /* The parent keeps root's groups (0 among them): they must not leak. */
    assert_int_equal(in_child(child_root_groups, name), 0);
}

static void test_enter_root_chroot(void **state)
{
    if (!is_root()) {
        print_message("skipped: needs root\n");
        skip();
    }
    struct env *e = *state;
    char inside[160];
    path_in(e, "inside", inside, sizeof(inside));
    write_text(inside, "x");
    assert_int_equal(in_child(child_root_drop, e->dir), 0);
}

/* ---- the demo daemon ---- */

static void test_check_good(void **state)
{
    struct env *e = *state;
    write_conf(e, "  <log><level>debug</level></log>\n  <max-open-files>256</max-open-files>\n");
    assert_int_equal(wait_exit(spawn(e, "out", "-t", "-c", e->conf, NULL)), 0);
    const char *out = slurp_in(e, "out");
    assert_non_null(strstr(out, "demo.xml: configuration OK"));
    assert_int_equal(access(e->pidfile, F_OK), -1); /* -t starts nothing */
}

static void test_check_bad(void **state)
{
    struct env *e = *state;
    write_text(e->conf, "<demo><max-open-files>lots</max-open-files><log><level>loud</level>"
                        "</log><usr>nobody</usr></demo>");
    assert_int_equal(wait_exit(spawn(e, "out", "-t", "-c", e->conf, NULL)), 1);
    const char *out = slurp_in(e, "out");
    assert_non_null(strstr(out, "demo.xml: <usr>: unknown element (known here: <user>,"));
    assert_non_null(strstr(out, "demo.xml: <max-open-files>: 'lots' is not an integer"));
    assert_non_null(strstr(out, "demo.xml: <log><level>: 'loud' is not one of: err, warn, "
                                "notice, info, debug"));
    assert_non_null(strstr(out, "demo.xml: <dir>: required but missing"));
    assert_null(strstr(out, "configuration OK"));

    write_conf(e, "  <group>no-such-group-parley</group>\n");
    assert_int_equal(wait_exit(spawn(e, "out", "-t", "-c", e->conf, NULL)), 1);
    assert_non_null(strstr(slurp_in(e, "out"), "<group>"));

    char missing[160];
    path_in(e, "missing.xml", missing, sizeof(missing));
    assert_int_equal(wait_exit(spawn(e, "out", "-t", "-c", missing, NULL)), 1);
    assert_non_null(strstr(slurp_in(e, "out"), "missing.xml: cannot open: No such file"));
}

static void test_flags(void **state)
{
    struct env *e = *state;
    assert_int_equal(wait_exit(spawn(e, "out", "-h", NULL)), 0);
    assert_non_null(strstr(slurp_in(e, "out"), "usage: daemon_demo"));
    assert_int_equal(wait_exit(spawn(e, "out", "-x", NULL)), 2);
    assert_non_null(strstr(slurp_in(e, "out"), "unknown flag or missing argument: -x"));
    assert_int_equal(wait_exit(spawn(e, "out", "-c", NULL)), 2);
    assert_int_equal(wait_exit(spawn(e, "out", "-f", "extra", NULL)), 2);
}

static void test_run_and_term(void **state)
{
    struct env *e = *state;
    write_conf(e, "");
    pid_t pid = start(e, "out");

    char want[32];
    snprintf(want, sizeof(want), "%ld\n", (long)pid);
    assert_string_equal(slurp(e->pidfile), want);
    long rpid = -1, ruid = -1;
    assert_int_equal(sscanf(slurp_in(e, "ready"), "%ld %ld", &rpid, &ruid), 2);
    assert_int_equal(rpid, pid);
    if (is_root())
        assert_int_equal(ruid, getpwnam("nobody")->pw_uid);
    else
        assert_int_equal(ruid, getuid());

    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid), 0);
    assert_int_equal(access(e->pidfile, F_OK), -1);
    assert_non_null(slurp_in(e, "stopped"));
    assert_non_null(slurp_in(e, "drained")); /* the loop waited for the last handle */
    assert_non_null(strstr(slurp_in(e, "out"), "stopped"));
}

static void test_second_instance(void **state)
{
    struct env *e = *state;
    write_conf(e, "");
    pid_t first = start(e, "out1");

    pid_t second = spawn(e, "out2", "-f", "-c", e->conf, NULL);
    assert_int_equal(wait_exit(second), 1);
    char want[320];
    snprintf(want, sizeof(want), "daemon_demo is already running (pid %ld, pidfile %s is locked)",
             (long)first, e->pidfile);
    assert_non_null(strstr(slurp_in(e, "out2"), want));

    /* The first is untouched: still running, still named in the pidfile. */
    assert_int_equal(kill(first, 0), 0);
    snprintf(want, sizeof(want), "%ld\n", (long)first);
    assert_string_equal(slurp(e->pidfile), want);
    assert_int_equal(kill(first, SIGTERM), 0);
    assert_int_equal(wait_exit(first), 0);
}

static void test_stale_pidfile(void **state)
{
    struct env *e = *state;
    write_conf(e, "");
    write_text(e->pidfile, "999999\n"); /* no process holds its lock */
    pid_t pid = start(e, "out");
    char want[32];
    snprintf(want, sizeof(want), "%ld\n", (long)pid);
    assert_string_equal(slurp(e->pidfile), want);
    assert_non_null(strstr(slurp_in(e, "out"), "taking over stale pidfile"));
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid), 0);
}

/* After the drop the pidfile's directory (root's) is not writable: the
 * daemon empties the file instead, so that it names no process. */
static void test_pidfile_not_removable(void **state)
{
    if (!is_root()) {
        print_message("skipped: needs root\n");
        skip();
    }
    struct env *e = *state;
    char sub[96];
    path_in(e, "run", sub, sizeof(sub));
    assert_int_equal(mkdir(sub, 0755), 0); /* owned by root */
    snprintf(e->pidfile, sizeof(e->pidfile), "%s/demo.pid", sub);
    write_conf(e, "");
    pid_t pid = start(e, "out");
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid), 0);
    const char *left = slurp(e->pidfile);
    assert_non_null(left);
    assert_string_equal(left, "");
    assert_non_null(strstr(slurp_in(e, "out"), "emptying it"));
}

static void test_hup_and_usr1(void **state)
{
    struct env *e = *state;
    write_conf(e, "");
    pid_t pid = start(e, "out");
    assert_int_equal(kill(pid, SIGHUP), 0);
    assert_true(wait_for(e, "reloads", "reload\n"));
    assert_int_equal(kill(pid, SIGHUP), 0);
    assert_true(wait_for(e, "reloads", "reload\nreload\n"));
    assert_int_equal(kill(pid, SIGUSR1), 0);
    assert_true(wait_for(e, "stats", "stats\n"));
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid), 0);
    assert_non_null(strstr(slurp_in(e, "out"), "SIGHUP: logs reopened"));
}

static void test_second_term_forces(void **state)
{
    struct env *e = *state;
    write_conf(e, "");
    char slow[160];
    path_in(e, "slow-drain", slow, sizeof(slow));
    write_text(slow, "");
    pid_t pid = start(e, "out");
    assert_int_equal(kill(pid, SIGINT), 0);
    assert_true(wait_for(e, "stopped", NULL));
    /* Still draining (an hour-long timer); a second signal ends it. */
    assert_int_equal(kill(pid, 0), 0);
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_exit(pid), 1);
    assert_null(slurp_in(e, "drained"));
    assert_int_equal(access(e->pidfile, F_OK), -1);
    assert_non_null(strstr(slurp_in(e, "out"), "second SIGTERM: stopping now"));
}

static void test_daemonize(void **state)
{
    struct env *e = *state;
    write_conf(e, "");
    pid_t first = spawn(e, "out", "-c", e->conf, NULL);
    /* The first process exits 0 only once the daemon is ready. */
    assert_int_equal(wait_exit(first), 0);
    assert_non_null(slurp_in(e, "ready"));
    long dpid = 0;
    assert_int_equal(sscanf(slurp(e->pidfile), "%ld", &dpid), 1);
    assert_true(dpid > 0 && dpid != first);
    assert_int_equal(kill((pid_t)dpid, SIGTERM), 0);
    assert_true(wait_gone(e->pidfile));
    assert_true(wait_for(e, "drained", NULL));
}

static void test_daemonize_failure(void **state)
{
    struct env *e = *state;
    write_conf(e, "");
    pid_t first = start(e, "out1");
    /* A second, daemonizing instance fails before the fork, on stderr. */
    assert_int_equal(wait_exit(spawn(e, "out2", "-c", e->conf, NULL)), 1);
    assert_non_null(strstr(slurp_in(e, "out2"), "is already running"));
    assert_int_equal(kill(first, SIGTERM), 0);
    assert_int_equal(wait_exit(first), 0);
}

static void test_root_without_user(void **state)
{
    if (!is_root()) {
        print_message("skipped: needs root\n");
        skip();
    }
    struct env *e = *state;
    char text[512];
    snprintf(text, sizeof(text), "<demo><dir>%s</dir><pidfile>%s</pidfile></demo>", e->dir,
             e->pidfile);
    write_text(e->conf, text);
    assert_int_equal(wait_exit(spawn(e, "out", "-f", "-c", e->conf, NULL)), 1);
    assert_non_null(strstr(slurp_in(e, "out"),
                           "started as root and no <user> is configured: refusing to run as root"));
    assert_null(slurp_in(e, "ready"));
    assert_int_equal(access(e->pidfile, F_OK), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_lookup_groups),
        cmocka_unit_test(test_enter_unprivileged),
        cmocka_unit_test(test_enter_root_without_user),
        cmocka_unit_test(test_enter_root),
        cmocka_unit_test(test_enter_root_groups),
        cmocka_unit_test_setup_teardown(test_enter_root_chroot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_bad, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_and_term, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_instance, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_pidfile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pidfile_not_removable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hup_and_usr1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_term_forces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daemonize, setup, teardown),
        cmocka_unit_test_setup_teardown(test_daemonize_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_root_without_user, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
