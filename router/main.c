/*
 * main.c - parley-router: the XEP-0114 hub every daemon and external
 * component connects to (see router.h for the parts).
 *
 * Only the config table and the daemon hooks live here; common/daemon runs
 * them (flags, config, pidfile, privilege drop, signals, loop).
 */
#include "autoconfig.h"

#include <stddef.h>

#include "common/config.h"
#include "common/daemon.h"
#include "router/router.h"

static struct router_config cfg;
static struct router *router;

static const struct config_entry table[] = {
    CONFIG_PATH("users", CONFIG_REQUIRED, NULL, &cfg.users_file),
    CONFIG_PATH("listen/unix@path", 0, NULL, &cfg.unix_path),
    CONFIG_STRING("listen/unix@mode", 0, "0660", &cfg.unix_mode),
    CONFIG_STRING("listen/unix@group", 0, NULL, &cfg.unix_group),
    CONFIG_NODE("listen/tcp", 0, &cfg.tcp),
    CONFIG_SIZE("limits/stanza-size", 0, "256k", 1024, 64 * 1024 * 1024, &cfg.stanza_size),
    CONFIG_SIZE("limits/queue-max", 0, "1M", 4096, 1024LL * 1024 * 1024, &cfg.queue_max),
    CONFIG_DURATION("limits/handshake-timeout", 0, "10s", 100, 3600 * 1000, &cfg.handshake_ms),
    CONFIG_INT("limits/max-connections", 0, "1024", 1, 1000000, &cfg.max_conns),
    CONFIG_END,
};

static int on_config(struct daemon *d)
{
    router = router_new(&cfg, NULL);
    return router_configure(router, daemon_config(d));
}

static int pre_jail(struct daemon *d)
{
    return router_listen(router, daemon_loop(d), daemon_config(d));
}

static void on_stop(struct daemon *d)
{
    router_stop(router);
}

static void on_reload(struct daemon *d)
{
    router_reload(router);
}

static void on_stats(struct daemon *d)
{
    stats_log(router);
}

int main(int argc, char **argv)
{
    static const struct daemon_spec spec = {
        .name = "parley-router",
        .root = "router",
        .config_file = SYSCONFDIR "/parley/router.xml",
        .table = table,
        .no_file_writes = true,
        .on_config = on_config,
        .pre_jail = pre_jail,
        .on_stop = on_stop,
        .on_reload = on_reload,
        .on_stats = on_stats,
    };
    int code = daemon_main(argc, argv, &spec);
    router_free(router);
    return code;
}
