/*
 * sandbox.c - the seccomp allow-lists and the BPF filter built from them
 * (see sandbox.h).
 *
 * A policy is a list of groups; a group is a list of rules, each a system
 * call with a comment saying who needs it. The filter is a straight chain:
 * architecture check, x32 check, then one compare per system call, jumping
 * to "allow" or to a short block that checks an argument; whatever falls
 * off the chain gets the default action. BPF only jumps forward, so the
 * blocks and the three returns sit at the end.
 *
 * Runs once, on the main thread, after the privilege drop (daemon.c).
 */
#include "autoconfig.h"

#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/seccomp.h>

#include "common/err.h"
#include "common/log.h"
#include "common/sandbox.h"

/* The sanitizer runtimes make system calls of their own (see san_rules). */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZERS 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define SANDBOX_SANITIZERS 1
#endif
#endif
#ifndef SANDBOX_SANITIZERS
#define SANDBOX_SANITIZERS 0
#endif

const char *const sandbox_mode_names[] = {"off", "log", "on", NULL};

enum rule_kind {
    R_ALLOW,  /* any arguments */
    R_THREAD, /* clone: only with CLONE_THREAD, i.e. a thread, never a process */
    R_SOCKET, /* socket: AF_UNIX, AF_INET, AF_INET6, AF_NETLINK (NETLINK_ROUTE) only */
    R_OWN,    /* prlimit64: this process's limits only (pid 0) */
    R_IOCTL,  /* ioctl: the requests in ioctl_ok only */
    R_PRCTL,  /* prctl: the options in prctl_ok only */
    R_SELF,   /* tgkill: to this process only (abort() raising SIGABRT) */
    R_ENOSYS, /* fails with ENOSYS, so that the caller falls back */
};

struct rule {
    int nr;
    enum rule_kind kind;
};

struct group {
    const struct rule *rules;
    size_t n;
};

struct sandbox_policy {
    const char *daemon;
    const struct group *groups;
    size_t ngroups;
};

/* clang-format off */
#define A(name)    {SYS_##name, R_ALLOW}
#define GROUP(arr) {arr, sizeof(arr) / sizeof(arr[0])}
/* clang-format on */

/* ioctl requests: libuv sets O_NONBLOCK and FD_CLOEXEC with them; stdio
 * asks whether stderr is a terminal; FIONREAD sizes a pending datagram. */
static const uint32_t ioctl_ok[] = {FIONBIO, FIOCLEX, FIONCLEX, FIONREAD, TCGETS};
/* prctl options: thread names (glibc, OpenSSL) and the dumpable query. */
static const uint32_t prctl_ok[] = {PR_GET_NAME, PR_SET_NAME, PR_GET_DUMPABLE};
/* socket families: the router socket and syslog (AF_UNIX), TCP, and
 * getaddrinfo's AI_ADDRCONFIG query of the interfaces (AF_NETLINK, whose
 * protocol is checked apart: NETLINK_ROUTE only, not sock_diag's view of
 * every socket or the other netlink families). */
static const uint32_t family_ok[] = {AF_UNIX, AF_INET, AF_INET6};

/* Every daemon: one libuv loop, memory, time, logs, the router socket. */
static const struct rule base_rules[] = {
    /* libuv's loop: epoll, its wakeup eventfd and signal pipe */
    A(epoll_create1),
    A(epoll_ctl),
    A(epoll_wait),
    A(epoll_pwait),
    A(eventfd2),
    A(pipe2),
    /* reads and writes on sockets, pipes and files; logging to stderr */
    A(read),
    A(write),
    A(readv),
    A(writev),
    A(close),
    A(fcntl),
    {SYS_ioctl, R_IOCTL},
    /* files opened while serving: HUP reloads re-read the config,
     * certificates and keys; OpenSSL and glibc read their own files
     * (openssl.cnf, /etc/hosts, /etc/passwd for libpq's default user) */
    A(openat),
    A(fstat),
    A(newfstatat),
    A(statx),
    A(lseek),
    A(pread64),
    A(access),
    A(faccessat2),
    A(readlink),
    A(getdents64),
    /* the pidfile at stop: unlinked, or emptied when it cannot be */
    A(unlink),
    A(ftruncate),
    /* memory: malloc, OpenSSL, libuv, expat */
    A(brk),
    A(mmap),
    A(munmap),
    A(mremap),
    A(mprotect),
    A(madvise),
    /* time: libuv's clock and timers (outside the vDSO on some hosts) */
    A(clock_gettime),
    A(clock_getres),
    A(gettimeofday),
    A(clock_nanosleep),
    A(nanosleep),
    /* signals: libuv's signal handles; abort() */
    A(rt_sigaction),
    A(rt_sigprocmask),
    A(rt_sigreturn),
    A(sigaltstack),
    A(restart_syscall),
    A(getpid),
    A(gettid),
    {SYS_tgkill, R_SELF},
    /* locks (glibc, OpenSSL) */
    A(futex),
    A(sched_yield),
    A(sched_getaffinity),
    /* OpenSSL's RAND, Cyrus SASL and rand.c: random bytes */
    A(getrandom),
    /* ids and host facts: libpq, OpenSSL, glibc's sysconf */
    A(getuid),
    A(geteuid),
    A(getgid),
    A(getegid),
    A(uname),
    A(sysinfo),
    A(getrlimit),
    {SYS_prlimit64, R_OWN},
    {SYS_prctl, R_PRCTL},
    /* sockets: the router connection (unix or TCP), syslog's /dev/log
     * (re-opened on HUP), accepted connections */
    {SYS_socket, R_SOCKET},
    A(connect),
    A(shutdown),
    A(sendto),
    A(recvfrom),
    A(sendmsg),
    A(recvmsg),
    A(getsockopt),
    A(setsockopt),
    A(getsockname),
    A(getpeername),
    /* the end */
    A(exit),
    A(exit_group),
};

/* Listeners (bound as root before the jail): accepting. Not sm. */
static const struct rule listen_rules[] = {
    A(accept4), /* libuv's uv_accept, SOCK_NONBLOCK | SOCK_CLOEXEC */
};

/* Threads: libuv's pool (uv_getaddrinfo for a TCP router address,
 * c2s's PLAIN verification). glibc tries clone3 first and falls back to
 * clone, whose flags the filter can check; clone3's are behind a pointer. */
static const struct rule thread_rules[] = {
    {SYS_clone, R_THREAD},
    {SYS_clone3, R_ENOSYS},
    A(set_robust_list),
    A(rseq),
};

/* Outbound network beyond the router: libpq, glibc's resolver behind
 * getaddrinfo, c-ares (its sockets are on the loop). */
static const struct rule net_rules[] = {
    A(poll),     /* libpq waiting on its socket; glibc's resolver */
    A(ppoll),    /* the same through newer glibc paths */
    A(bind),     /* getaddrinfo's netlink query (AI_ADDRCONFIG) */
    A(sendmmsg), /* glibc's resolver: A and AAAA queries at once */
    A(recvmmsg), /* c-ares reading several answers */
};

#if SANDBOX_SANITIZERS
/* ASan/LSan/UBSan only. LeakSanitizer at exit stops the world from a
 * tracer made with clone (no CLONE_THREAD: a process of its own, which a
 * kill of the process would not reach, leaving the daemon waiting for it
 * forever), which reads /proc/self/task and /proc/self/maps and ptraces
 * every thread. Listed first, so that these plain allows win over the
 * argument checks of the base groups. */
static const struct rule san_rules[] = {
    A(clone),            /* LSan's tracer */
    A(ptrace),           /* the tracer attaches to each thread */
    A(wait4),            /* ... and waits for it to stop */
    A(process_vm_readv), /* reading the stopped threads' memory */
    A(prctl),            /* PR_SET_PTRACER, PR_SET_DUMPABLE for the tracer */
    A(getdents),         /* listing /proc/self/task */
    A(open),             /* /proc/self/maps; binaries for symbolizing */
    A(stat),             /* symbolizer: which file is mapped */
    A(lstat),            /* symbolizer */
    A(readlink),         /* /proc/self/exe */
    A(getppid),          /* the tracer checks its parent lives */
    A(kill),             /* the tracer's signals */
    A(tgkill),           /* ... to any thread, not only ours */
    A(pipe),             /* ASan's memory-readable probe in reports */
    A(dup2),             /* report output */
    A(mincore),          /* stack depot, report paths */
    A(msync),            /* memory-readable probe */
};
#define SAN_GROUP GROUP(san_rules),
#else
#define SAN_GROUP
#endif

/* The router only accepts and forwards: no threads, no outbound network. */
static const struct group router_groups[] = {SAN_GROUP GROUP(base_rules), GROUP(listen_rules)};
/* sm serves no listener: the router and PostgreSQL are its only peers. */
static const struct group sm_groups[] = {SAN_GROUP GROUP(base_rules), GROUP(thread_rules),
                                         GROUP(net_rules)};
static const struct group c2s_groups[] = {SAN_GROUP GROUP(base_rules), GROUP(listen_rules),
                                          GROUP(thread_rules), GROUP(net_rules)};
static const struct group s2s_groups[] = {SAN_GROUP GROUP(base_rules), GROUP(listen_rules),
                                          GROUP(thread_rules), GROUP(net_rules)};

/* clang-format off */
#define POLICY(name, g) {name, g, sizeof(g) / sizeof(g[0])}
/* clang-format on */
static const struct sandbox_policy policies[] = {
    POLICY("router", router_groups),
    POLICY("sm", sm_groups),
    POLICY("c2s", c2s_groups),
    POLICY("s2s", s2s_groups),
};

const struct sandbox_policy *sandbox_policy_find(const char *daemon)
{
    for (size_t i = 0; i < sizeof(policies) / sizeof(policies[0]); i++)
        if (daemon && strcmp(policies[i].daemon, daemon) == 0)
            return &policies[i];
    return NULL;
}

/* ---- the filter ---- */

#define MAX_NR   512 /* x86_64 numbers are below; x32 ones are refused first */
#define MAX_INS  1024
#define MAX_LABS (MAX_NR + 3)

/* Jump targets: a block per checked rule, then the three returns. */
enum { LAB_DEFAULT = MAX_NR, LAB_ALLOW, LAB_ENOSYS };

struct prog {
    struct sock_filter ins[MAX_INS];
    int jt[MAX_INS], jf[MAX_INS]; /* label, or -1: the offset in ins stands */
    int at[MAX_LABS];             /* position of each label */
    size_t n;
    bool overflow;
};

static void emit(struct prog *p, uint16_t code, uint32_t k, int jt, int jf)
{
    if (p->n == MAX_INS) {
        p->overflow = true;
        return;
    }
    p->ins[p->n] = (struct sock_filter)BPF_STMT(code, k);
    p->jt[p->n] = jt;
    p->jf[p->n] = jf;
    p->n++;
}

static void emit_load(struct prog *p, uint32_t offset)
{
    emit(p, BPF_LD | BPF_W | BPF_ABS, offset, -1, -1);
}

static void emit_ret(struct prog *p, uint32_t action)
{
    emit(p, BPF_RET | BPF_K, action, -1, -1);
}

/* The low 32 bits of argument i (little-endian). */
static uint32_t arg_lo(int i)
{
    return (uint32_t)(offsetof(struct seccomp_data, args) + (size_t)i * sizeof(uint64_t));
}

/* Allow if argument i is one of vals[], else the default. */
static void emit_one_of(struct prog *p, int arg, const uint32_t *vals, size_t n)
{
    emit_load(p, arg_lo(arg));
    for (size_t i = 0; i < n; i++)
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, vals[i], LAB_ALLOW, -1);
    emit(p, BPF_JMP | BPF_JA, 0, LAB_DEFAULT, -1);
}

static void emit_block(struct prog *p, enum rule_kind kind)
{
    switch (kind) {
    case R_THREAD:
        emit_load(p, arg_lo(0));
        emit(p, BPF_JMP | BPF_JSET | BPF_K, CLONE_THREAD, LAB_ALLOW, LAB_DEFAULT);
        break;
    case R_SOCKET:
        emit_load(p, arg_lo(0));
        for (size_t i = 0; i < sizeof(family_ok) / sizeof(family_ok[0]); i++)
            emit(p, BPF_JMP | BPF_JEQ | BPF_K, family_ok[i], LAB_ALLOW, -1);
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, AF_NETLINK, -1, LAB_DEFAULT);
        emit_load(p, arg_lo(2));
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, NETLINK_ROUTE, LAB_ALLOW, LAB_DEFAULT);
        break;
    case R_OWN: {
        /* glibc's getrlimit/setrlimit pass pid 0; another pid of the same
         * user (another daemon) is not ours to limit. */
        static const uint32_t zero = 0;
        emit_one_of(p, 0, &zero, 1);
        break;
    }
    case R_IOCTL:
        emit_one_of(p, 1, ioctl_ok, sizeof(ioctl_ok) / sizeof(ioctl_ok[0]));
        break;
    case R_PRCTL:
        emit_one_of(p, 0, prctl_ok, sizeof(prctl_ok) / sizeof(prctl_ok[0]));
        break;
    case R_SELF: {
        uint32_t self = (uint32_t)getpid();
        emit_one_of(p, 0, &self, 1);
        break;
    }
    default:
        break;
    }
}

/* Each system call once: the first rule that names it wins. */
static size_t collect(const struct sandbox_policy *pol, const struct rule **out)
{
    bool seen[MAX_NR] = {false};
    size_t n = 0;
    for (size_t g = 0; g < pol->ngroups; g++)
        for (size_t i = 0; i < pol->groups[g].n; i++) {
            const struct rule *r = &pol->groups[g].rules[i];
            if (r->nr < 0 || r->nr >= MAX_NR || seen[r->nr])
                continue;
            seen[r->nr] = true;
            out[n++] = r;
        }
    return n;
}

size_t sandbox_policy_size(const struct sandbox_policy *pol)
{
    const struct rule *rules[MAX_NR];
    size_t n = collect(pol, rules), allowed = 0;
    for (size_t i = 0; i < n; i++)
        allowed += rules[i]->kind != R_ENOSYS;
    return allowed;
}

/* Turn labels into forward offsets; false if one does not fit in 8 bits
 * (the allow-list would need trampolines). */
static bool resolve(struct prog *p)
{
    for (size_t i = 0; i < p->n; i++) {
        struct sock_filter *f = &p->ins[i];
        int labs[2] = {p->jt[i], p->jf[i]};
        for (int j = 0; j < 2; j++) {
            if (labs[j] < 0)
                continue;
            long off = (long)p->at[labs[j]] - (long)i - 1;
            if (off < 0)
                return false;
            if (BPF_OP(f->code) == BPF_JA)
                f->k = (uint32_t)off;
            else if (off > 255)
                return false;
            else if (j == 0)
                f->jt = (uint8_t)off;
            else
                f->jf = (uint8_t)off;
        }
    }
    return true;
}

static bool build(struct prog *p, const struct sandbox_policy *pol, uint32_t deflt)
{
    static const struct rule *rules[MAX_NR];
    size_t n = collect(pol, rules);

    memset(p->at, -1, sizeof(p->at));
    /* Another architecture's numbers mean other calls: refuse them all. */
    emit_load(p, offsetof(struct seccomp_data, arch));
    emit(p, BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, -1, LAB_DEFAULT);
    emit_load(p, offsetof(struct seccomp_data, nr));
    /* The x32 ABI shares the arch value; its numbers carry this bit. */
    emit(p, BPF_JMP | BPF_JSET | BPF_K, __X32_SYSCALL_BIT, LAB_DEFAULT, -1);
    for (size_t i = 0; i < n; i++) {
        int to = rules[i]->kind == R_ALLOW    ? LAB_ALLOW
                 : rules[i]->kind == R_ENOSYS ? LAB_ENOSYS
                                              : rules[i]->nr;
        emit(p, BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)rules[i]->nr, to, -1);
    }
    emit(p, BPF_JMP | BPF_JA, 0, LAB_DEFAULT, -1);
    for (size_t i = 0; i < n; i++) {
        if (rules[i]->kind == R_ALLOW || rules[i]->kind == R_ENOSYS)
            continue;
        p->at[rules[i]->nr] = (int)p->n;
        emit_block(p, rules[i]->kind);
    }
    p->at[LAB_DEFAULT] = (int)p->n;
    emit_ret(p, deflt);
    p->at[LAB_ALLOW] = (int)p->n;
    emit_ret(p, SECCOMP_RET_ALLOW);
    p->at[LAB_ENOSYS] = (int)p->n;
    emit_ret(p, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA));
    return !p->overflow && resolve(p);
}

int sandbox_install(const struct sandbox_policy *pol, enum sandbox_mode mode)
{
    if (mode == SANDBOX_OFF)
        return 0;
    if (mode != SANDBOX_LOG && mode != SANDBOX_ON)
        return ERR_INVAL;
#if !defined(__x86_64__)
    log_err("no seccomp allow-list for this architecture (x86_64 only): set <sandbox>off");
    return ERR_BADSTATE;
#else
    static struct prog p;
    memset(&p, 0, sizeof(p));
    if (!build(&p, pol, mode == SANDBOX_ON ? SECCOMP_RET_KILL_PROCESS : SECCOMP_RET_LOG)) {
        log_err("the allow-list for %s does not fit in one BPF chain", pol->daemon);
        return ERR_INVAL;
    }
    struct sock_fprog prog = {.len = (unsigned short)p.n, .filter = p.ins};
    /* TSYNC: threads that exist already (libuv's pool, started by a
     * getaddrinfo in post_jail) get the same filter, or the call fails. */
    long rc = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (rc != 0) {
        if (rc > 0)
            log_err("seccomp: thread %ld could not take the filter", rc);
        else
            log_err("seccomp: %s", strerror(errno));
        return ERR_SYS;
    }
    return 0;
#endif
}
