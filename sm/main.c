/*
 * main.c - parley-sm: the session manager (see sm/sm.h for the parts).
 *
 * Only the config table and the daemon hooks live here; common/daemon runs
 * them (flags, config, pidfile, privilege drop, signals, loop).
 */
#include "autoconfig.h"

#include <stddef.h>

#include "common/config.h"
#include "common/daemon.h"
#include "sm/sm.h"

static struct sm_config cfg;
static struct sm *sm;

static const struct config_entry table[] = {
    CONFIG_STRING("router@name", 0, "sm", &cfg.router_name),
    CONFIG_STRING("router@connect", CONFIG_REQUIRED, NULL, &cfg.router_connect),
    CONFIG_SECRET("router/secret", CONFIG_REQUIRED, &cfg.router_secret),
    CONFIG_NODE("domain", CONFIG_REQUIRED, &cfg.domains),
    CONFIG_STRING("db/dsn", CONFIG_REQUIRED, NULL, &cfg.db_dsn),
    CONFIG_SECRET("db/password", 0, &cfg.db_password),
    CONFIG_INT("db/pool", 0, "2", 1, 64, &cfg.db_pool),
    CONFIG_NODE("modules", 0, &cfg.modules),
    CONFIG_STRING("c2s-prefix", 0, "c2s", &cfg.c2s_prefix),
    CONFIG_BOOL("multi-instance", 0, "no", &cfg.multi),
    CONFIG_INT("limits/sessions", 0, "10", 1, SM_MAX_SESSIONS, &cfg.max_sessions),
    CONFIG_INT("limits/roster-items", 0, "1000", 1, 100000, &cfg.roster_max),
    CONFIG_INT("limits/offline", 0, "1000", 1, 100000, &cfg.offline_quota),
    CONFIG_INT("limits/offline-bytes", 0, "1048576", 1024, 1073741824, &cfg.offline_quota_bytes),
    CONFIG_SIZE("limits/router-stanza-size", 0, "256k", 8 * 1024, 64 * 1024 * 1024,
                &cfg.router_stanza_size),
    CONFIG_INT("limits/user-queue", 0, "1000", 1, 1000000, &cfg.queue_max),
    CONFIG_INT("cache/users", 0, "10000", 0, 10000000, &cfg.user_cache),
    CONFIG_INT("cache/missing", 0, "10000", 0, 10000000, &cfg.miss_cache),
    CONFIG_INT("cache/missing-ttl", 0, "30", 1, 3600, &cfg.miss_ttl),
    CONFIG_INT("limits/loads", 0, "256", 1, 100000, &cfg.max_loads),
    CONFIG_INT("limits/round-timeout", 0, "60", 1, 3600, &cfg.round_timeout),
    CONFIG_INT("limits/user-held", 0, "1000", 1, 1000000, &cfg.user_held),
    CONFIG_INT("limits/held", 0, "100000", 1, 10000000, &cfg.held_max),
    CONFIG_STRING("version/name", 0, "Parley", &cfg.version_name),
    CONFIG_BOOL("version/os", 0, "no", &cfg.version_os),
    CONFIG_STRING("welcome/subject", 0, NULL, &cfg.welcome_subject),
    CONFIG_STRING("welcome/body", 0, NULL, &cfg.welcome_body),
    CONFIG_END,
};

static int on_config(struct daemon *d)
{
    sm = sm_new(&cfg);
    return sm_configure(sm, daemon_config(d));
}

static int post_jail(struct daemon *d)
{
    return sm_start(sm, daemon_loop(d));
}

static void on_stop(struct daemon *d)
{
    sm_stop(sm);
}

static void on_stats(struct daemon *d)
{
    sm_log_stats(sm);
}

int main(int argc, char **argv)
{
    static const struct daemon_spec spec = {
        .name = "parley-sm",
        .root = "sm",
        .config_file = SYSCONFDIR "/parley/sm.xml",
        .table = table,
        .no_file_writes = true,
        .on_config = on_config,
        .post_jail = post_jail,
        .on_stop = on_stop,
        .on_stats = on_stats,
    };
    int code = daemon_main(argc, argv, &spec);
    sm_free(sm);
    return code;
}
