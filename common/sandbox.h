/*
 * sandbox.h - a seccomp allow-list per daemon (Linux, x86_64).
 *
 * The last step of the jail (see daemon.h): once the loop is set up and
 * before it serves, the daemon skeleton loads a seccomp BPF filter that
 * checks the architecture (x86_64 only; x32 and i386 calls are refused),
 * then the system call number against the daemon's allow-list, with a few
 * calls whose arguments are checked too (clone makes threads only, socket
 * takes local, IPv4, IPv6 and NETLINK_ROUTE only, ioctl and prctl a few
 * requests, tgkill signals this process only, prlimit64 this process's
 * limits only). Anything else is the default
 * action: kill the whole process (SIGSYS) in mode "on", or let it through
 * and have the kernel log it (the audit log: dmesg / journal, "type=1326")
 * in mode "log", for operators bringing up a new platform.
 *
 * The filter applies to every thread of the process (TSYNC) and to every
 * thread started later. It cannot be removed. Sanitizer builds (ASan, LSan,
 * UBSan) allow what the sanitizer runtimes need at exit and for reports.
 *
 * Config: <sandbox>on|log|off</sandbox> in every daemon; the default is on
 * where there are allow-lists (x86_64) and off elsewhere, where on or log
 * refuse to start.
 */
#ifndef PARLEY_SANDBOX_H
#define PARLEY_SANDBOX_H

#include <stddef.h>

enum sandbox_mode { SANDBOX_OFF = 0, SANDBOX_LOG, SANDBOX_ON };

/* The default mode's name: "on" where allow-lists exist. */
#if defined(__x86_64__)
#define SANDBOX_DEFAULT "on"
#else
#define SANDBOX_DEFAULT "off"
#endif

/* "off", "log", "on", NULL: the names of the modes, for CONFIG_ENUM. */
extern const char *const sandbox_mode_names[];

struct sandbox_policy;

/* The allow-list of a daemon by the root element of its config ("router",
 * "sm", "c2s", "s2s"); NULL for any other name. */
const struct sandbox_policy *sandbox_policy_find(const char *daemon);

/* How many system calls the policy allows (for the log and the tests). */
size_t sandbox_policy_size(const struct sandbox_policy *p);

/*
 * Load the filter for p into this process, all threads (mode OFF: do
 * nothing). Needs PR_SET_NO_NEW_PRIVS set before (or CAP_SYS_ADMIN).
 * 0, ERR_INVAL for a bad mode, ERR_SYS if the kernel refused (logged), or
 * ERR_BADSTATE on an architecture without an allow-list.
 */
int sandbox_install(const struct sandbox_policy *p, enum sandbox_mode mode);

#endif
