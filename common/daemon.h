/*
 * daemon.h - the one main() skeleton every Parley daemon runs on.
 *
 * A daemon's main.c holds only a struct daemon_spec (its config table and
 * hooks) and calls daemon_main(). The skeleton does, in this order:
 *
 *   flags (-c FILE, -f, -D, -t, -h) -> config (the daemon's table plus the
 *   skeleton's own entries below) -> on_config -> user/group lookup ->
 *   [-t: report and exit 0/1] -> log level -> locked pidfile -> daemonize
 *   unless -f -> pid written -> loop init -> pre_jail (as root: listeners,
 *   keys, SASL) -> privilege drop (daemon_jail_enter) -> signal handlers ->
 *   post_jail -> uv_run -> close every remaining handle -> pidfile removed.
 *
 * The loop is created before pre_jail, not after the drop: listeners bound
 * as root in pre_jail are libuv handles and need it. Nothing in it runs
 * before uv_run, so no callback ever runs with privileges.
 *
 * Skeleton entries in every daemon's config file (under its root element):
 *   <user>        unprivileged user to run as; required when started as root
 *   <group>       group to run as (default: the user's primary group)
 *   <groups>      supplementary groups kept after the drop, names separated
 *                 by spaces (default: none). Each must exist, have a gid
 *                 other than 0 and list <user> as a member (or be its
 *                 primary group); looked up only when started as root.
 *                 Every other group of <user> is dropped.
 *   <chroot>      empty directory to chroot into after pre_jail (optional)
 *   <pidfile>     path of the locked pidfile (default: spec->pidfile; none if NULL)
 *   <log><level>  err|warn|notice|info|debug (default info; -D forces debug)
 *   <max-open-files>  RLIMIT_NOFILE to set (default: leave as inherited)
 *
 * -f (foreground) logs to stderr and never forks: that is how systemd units
 * and parleyctl run daemons, and how tests do. Without -f the process forks
 * twice with setsid in between, logs to syslog, and the first process exits
 * 0 only once post_jail has succeeded (1 if start-up failed), so a shell
 * script or a Type=forking unit sees start-up errors. Errors before the
 * fork (config, pidfile lock) always go to stderr.
 *
 * Signals (uv_signal_t on the loop): TERM or INT -> on_stop, which closes
 * listeners and lets connections finish; the loop ends when no handle is
 * left; a second TERM/INT forces the exit (code 1). HUP -> logs reopened,
 * then on_reload. USR1 -> on_stats. SIGPIPE is ignored.
 *
 * Exit codes: 0 after a clean stop, 1 for start-up or forced failures, 2
 * for bad command-line flags.
 */
#ifndef PARLEY_DAEMON_H
#define PARLEY_DAEMON_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <uv.h>

#include "common/config.h"

struct daemon;

struct daemon_spec {
    const char *name;                 /* "parley-router": log ident and usage */
    const char *root;                 /* root element of the config file: "router" */
    const char *config_file;          /* used without -c */
    const char *pidfile;              /* default <pidfile>; NULL: none unless configured */
    const struct config_entry *table; /* the daemon's own entries; NULL: none */
    bool no_file_writes;              /* set RLIMIT_FSIZE 0 in the jail */
    void *arg;                        /* handed back by daemon_arg() */

    /* Read the structured parts of the config (config_apply on CONFIG_NODE
     * entries). Runs for -t too, before any hook below; no loop yet. */
    int (*on_config)(struct daemon *d);
    /* Still privileged: bind listeners, load keys, init SASL. */
    int (*pre_jail)(struct daemon *d);
    /* Unprivileged, signals installed: start timers, connect to the router. */
    int (*post_jail)(struct daemon *d);
    /* First TERM/INT or daemon_stop(): close listeners, end connections
     * gracefully. The loop ends when their handles are closed. */
    void (*on_stop)(struct daemon *d);
    /* HUP, after the logs were reopened. */
    void (*on_reload)(struct daemon *d);
    /* USR1: log counters. */
    void (*on_stats)(struct daemon *d);
};

/* Run the daemon; returns the process exit code (main returns it). */
int daemon_main(int argc, char **argv, const struct daemon_spec *spec);

/* The loop (NULL while only the config is loaded: on_config). */
uv_loop_t *daemon_loop(struct daemon *d);
struct config *daemon_config(struct daemon *d);
void *daemon_arg(struct daemon *d);
/* Begin an orderly stop, as TERM does, with this exit code (from post_jail
 * on; earlier, a hook fails start-up by returning an error instead). */
void daemon_stop(struct daemon *d, int code);

/* Most names a <groups> list may hold. */
#define DAEMON_GROUPS_MAX 16

/*
 * The privilege drop on its own, so that it can be tested. Fill user,
 * group, groups, chroot and the limits, call daemon_jail_lookup() while the
 * user database is reachable (before any chroot), then daemon_jail_enter().
 */
struct daemon_jail {
    const char *user;   /* NULL: none configured */
    const char *group;  /* NULL: the user's primary group */
    const char *groups; /* <groups>: space-separated names; NULL or "": none */
    const char *chroot; /* NULL: no chroot */
    int max_open_files; /* RLIMIT_NOFILE; 0 leaves it */
    bool no_file_writes;
    /* set by daemon_jail_lookup */
    bool have_ids;
    uid_t uid;
    gid_t gid;
    /* The gids of <groups> (distinct): the only supplementary groups the
     * drop keeps, so that membership in a shared group (e.g. parley, which
     * reaches the router's socket) holds and no other group does. */
    gid_t gids[DAEMON_GROUPS_MAX];
    int ngids;
};

/* Resolve user and group and, when running as root (a drop will happen),
 * <groups>. ERR_NOTFOUND for an unknown name, ERR_PERM for uid 0, a group
 * without a user, gid 0, a listed group <user> is not a member of, or
 * more than DAEMON_GROUPS_MAX names; the reason is written to err. */
int daemon_jail_lookup(struct daemon_jail *j, char *err, size_t errlen);
/* The <groups> part of daemon_jail_lookup alone, whoever runs it (the
 * lookup calls it as root only): fills gids/ngids. j->user must be set. */
int daemon_jail_lookup_groups(struct daemon_jail *j, char *err, size_t errlen);

/*
 * In order: rlimits (CORE 0, NOFILE, FSIZE 0 if no_file_writes), then when
 * running as root: chroot + chdir("/"), setgroups (<groups> only) +
 * setresgid + setresuid,
 * and a check that root cannot be regained (abort() if it can); then
 * PR_SET_DUMPABLE 0 and PR_SET_NO_NEW_PRIVS. Started as root without a
 * user: ERR_PERM. Started as another user (development, tests): the chroot
 * and id change are skipped and the log says so once.
 */
int daemon_jail_enter(const struct daemon_jail *j);

#endif
