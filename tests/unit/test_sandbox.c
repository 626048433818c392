/*
 * test_sandbox.c - the seccomp allow-lists, each test in a forked child:
 * the child sets NO_NEW_PRIVS, loads a daemon's filter and makes calls;
 * the parent reads how it ended. Allowed calls work; a call off the list
 * (execve, personality, chroot, ptrace), a fork, a socket of another family (or
 * a netlink protocol other than NETLINK_ROUTE), another process's limits and a
 * call through another ABI (i386 int 0x80, x32) kill the child with
 * SIGSYS; in "log" mode the same call goes through. A thread still starts
 * under the c2s list (clone3 falls back to clone with CLONE_THREAD).
 *
 * Children leave with _exit, never through the test framework or a
 * sanitizer's exit hooks, which are not what is being tested here.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/sandbox.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

/* Exit codes of a child that was not killed. */
enum { OK = 0, NO_FILTER = 10, CALL_FAILED = 11, WRONG_RESULT = 12 };

static void enter(const char *daemon, enum sandbox_mode mode)
{
    const struct sandbox_policy *p = sandbox_policy_find(daemon);
    if (!p || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || sandbox_install(p, mode) != 0)
        _exit(NO_FILTER);
}

/* Run fn(arg) in a child under daemon's filter; the raw wait status. */
static int in_child(const char *daemon, enum sandbox_mode mode, int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        enter(daemon, mode);
        _exit(fn(arg));
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void assert_exited(int status, int code)
{
    if (WIFSIGNALED(status))
        fail_msg("child killed by signal %d, expected exit %d", WTERMSIG(status), code);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), code);
}

static void assert_sigsys(int status)
{
    if (WIFEXITED(status))
        fail_msg("child exited %d, expected SIGSYS", WEXITSTATUS(status));
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGSYS);
}

/* ---- what the children do ---- */

/* A loop's worth of allowed calls: pipe, write, read, a socket pair. */
static int do_allowed(void *arg)
{
    int p[2];
    char c = 0;
    if (pipe2(p, O_CLOEXEC) != 0 || write(p[1], "x", 1) != 1 || read(p[0], &c, 1) != 1)
        return CALL_FAILED;
    if (c != 'x' || getpid() <= 0)
        return WRONG_RESULT;
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return CALL_FAILED;
    close(s);
    void *m = malloc(1 << 20); /* mmap */
    if (!m)
        return CALL_FAILED;
    free(m);
    return OK;
}

static int do_execve(void *arg)
{
    char *argv[] = {(char *)"/bin/true", NULL};
    char *envp[] = {NULL};
    syscall(SYS_execve, argv[0], argv, envp);
    return CALL_FAILED; /* /bin/true missing: the call came back */
}

static int do_ptrace(void *arg)
{
    syscall(SYS_ptrace, 0L /* PTRACE_TRACEME */, 0L, 0L, 0L);
    return OK;
}

/* personality(0xffffffff) only reads the persona: harmless when let through. */
static int do_personality(void *arg)
{
    long rc = syscall(SYS_personality, 0xffffffffUL);
    return rc < 0 ? CALL_FAILED : OK;
}

/* A path that does not exist: harmless if the call went through. */
static int do_chroot(void *arg)
{
    syscall(SYS_chroot, "/nonexistent-parley-sandbox");
    return OK;
}

/* A new process, not a thread: the raw clone, as fork() makes it. */
static int do_fork(void *arg)
{
    long pid = syscall(SYS_clone, (unsigned long)SIGCHLD, 0L, 0L, 0L, 0L);
    if (pid == 0)
        _exit(OK);
    return pid < 0 ? CALL_FAILED : OK;
}

static int do_packet_socket(void *arg)
{
    syscall(SYS_socket, 17 /* AF_PACKET */, SOCK_RAW, 0);
    return OK;
}

/* getaddrinfo's interface query: a NETLINK_ROUTE socket, allowed. */
static int do_netlink_route(void *arg)
{
    int s = (int)syscall(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0 /* ROUTE */);
    if (s < 0)
        return CALL_FAILED;
    close(s);
    return OK;
}

/* sock_diag lists every socket of the namespace: not ours to open. */
static int do_netlink_diag(void *arg)
{
    syscall(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 4 /* NETLINK_SOCK_DIAG */);
    return OK;
}

/* Our own limits (pid 0, what glibc's getrlimit passes): allowed. */
static int do_prlimit_self(void *arg)
{
    struct rlimit rl;
    return syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) == 0 ? OK : CALL_FAILED;
}

/* Another process's limits (our parent: the test), read only. */
static int do_prlimit_other(void *arg)
{
    struct rlimit rl;
    syscall(SYS_prlimit64, (long)getppid(), RLIMIT_NOFILE, NULL, &rl);
    return OK;
}

/* getpid through the i386 ABI (number 20 there). */
static int do_int80(void *arg)
{
    long ret = 20;
    __asm__ volatile("int $0x80" : "+a"(ret) : : "memory");
    return OK;
}

/* getpid through the x32 ABI. */
static int do_x32(void *arg)
{
    syscall(0x40000000L | SYS_getpid);
    return OK;
}

static void *thread_main(void *arg)
{
    *(int *)arg = 42;
    return NULL;
}

static int do_thread(void *arg)
{
    pthread_t t;
    int v = 0;
    if (pthread_create(&t, NULL, thread_main, &v) != 0 || pthread_join(t, NULL) != 0)
        return CALL_FAILED;
    return v == 42 ? OK : WRONG_RESULT;
}

/* ---- tests ---- */

static void test_policies(void **state)
{
    const char *names[] = {"router", "sm", "c2s", "s2s"};
    for (size_t i = 0; i < 4; i++) {
        const struct sandbox_policy *p = sandbox_policy_find(names[i]);
        assert_non_null(p);
        assert_true(sandbox_policy_size(p) > 40);
    }
    assert_null(sandbox_policy_find("demo"));
    assert_null(sandbox_policy_find(NULL));
    /* The router has no threads and no outbound network: the smallest list. */
    assert_true(sandbox_policy_size(sandbox_policy_find("router")) <
                sandbox_policy_size(sandbox_policy_find("c2s")));
    assert_int_equal(sandbox_install(sandbox_policy_find("sm"), SANDBOX_OFF), 0);
    assert_int_equal(sandbox_install(sandbox_policy_find("sm"), (enum sandbox_mode)7), ERR_INVAL);
}

static void test_allowed_calls_work(void **state)
{
    const char *names[] = {"router", "sm", "c2s", "s2s"};
    for (size_t i = 0; i < 4; i++)
        assert_exited(in_child(names[i], SANDBOX_ON, do_allowed, NULL), OK);
}

static void test_forbidden_calls_kill(void **state)
{
    int (*calls[])(void *) = {do_execve, do_personality, do_chroot, do_ptrace};
    /* Sanitizer builds allow ptrace: LeakSanitizer stops threads with it. */
    size_t ncalls = sizeof(calls) / sizeof(calls[0]) - (SANITIZED ? 1 : 0);
    const char *names[] = {"router", "sm", "c2s", "s2s"};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < ncalls; j++)
            assert_sigsys(in_child(names[i], SANDBOX_ON, calls[j], NULL));
}

static void test_other_abis_kill(void **state)
{
    assert_sigsys(in_child("c2s", SANDBOX_ON, do_int80, NULL));
    assert_sigsys(in_child("c2s", SANDBOX_ON, do_x32, NULL));
}

static void test_socket_family_checked(void **state)
{
    assert_sigsys(in_child("s2s", SANDBOX_ON, do_packet_socket, NULL));
    assert_exited(in_child("s2s", SANDBOX_ON, do_netlink_route, NULL), OK);
    assert_sigsys(in_child("s2s", SANDBOX_ON, do_netlink_diag, NULL));
}

static void test_prlimit_own_only(void **state)
{
    assert_exited(in_child("sm", SANDBOX_ON, do_prlimit_self, NULL), OK);
    assert_sigsys(in_child("sm", SANDBOX_ON, do_prlimit_other, NULL));
}

static void test_threads_not_processes(void **state)
{
    assert_exited(in_child("c2s", SANDBOX_ON, do_thread, NULL), OK);
    /* Sanitizer builds allow any clone: LeakSanitizer's tracer is one. */
    int fork_status = in_child("c2s", SANDBOX_ON, do_fork, NULL);
    if (SANITIZED)
        assert_exited(fork_status, OK);
    else
        assert_sigsys(fork_status);
    /* The router has no thread pool at all. */
    assert_sigsys(in_child("router", SANDBOX_ON, do_thread, NULL));
}

static void test_log_mode_lets_through(void **state)
{
    assert_exited(in_child("router", SANDBOX_LOG, do_personality, NULL), OK);
    assert_exited(in_child("router", SANDBOX_LOG, do_allowed, NULL), OK);
}

static void test_off_installs_nothing(void **state)
{
    assert_exited(in_child("router", SANDBOX_OFF, do_personality, NULL), OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policies),
        cmocka_unit_test(test_allowed_calls_work),
        cmocka_unit_test(test_forbidden_calls_kill),
        cmocka_unit_test(test_other_abis_kill),
        cmocka_unit_test(test_socket_family_checked),
        cmocka_unit_test(test_prlimit_own_only),
        cmocka_unit_test(test_threads_not_processes),
        cmocka_unit_test(test_log_mode_lets_through),
        cmocka_unit_test(test_off_installs_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
