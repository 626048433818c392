/*
 * main.c - parley-s2s: federation, the router's default route (see
 * s2s/s2s.h for the parts).
 *
 * Only the config table and the daemon hooks live here; common/daemon runs
 * them (flags, config, pidfile, privilege drop, signals, loop).
 */
#include "autoconfig.h"

#include <stddef.h>

#include "common/config.h"
#include "common/daemon.h"
#include "s2s/s2s.h"

static struct s2s_config cfg;
static struct s2s *s2s;

static const struct config_entry table[] = {
    CONFIG_STRING("router@name", 0, "s2s", &cfg.router_name),
    CONFIG_STRING("router@connect", CONFIG_REQUIRED, NULL, &cfg.router_connect),
    CONFIG_SECRET("router/secret", CONFIG_REQUIRED, &cfg.router_secret),
    CONFIG_SECRET("dialback-secret", 0, &cfg.dialback_secret),
    CONFIG_PATH("routes@file", 0, NULL, &cfg.routes_file),
    CONFIG_NODE("domain", 0, &cfg.domains),
    CONFIG_BOOL("learn-domains", 0, "true", &cfg.learn),
    CONFIG_BOOL("bidi", 0, "true", &cfg.bidi),
    CONFIG_NODE("listen", 0, &cfg.listen),
    CONFIG_PATH("tls/ca@file", 0, NULL, &cfg.ca_file),
    CONFIG_NODE("tls/cert", 0, &cfg.certs),
    CONFIG_NODE("policy", 0, &cfg.policies),
    CONFIG_SIZE("limits/stanza-size", 0, "256k", 4096, 64 * 1024 * 1024, &cfg.stanza_size),
    CONFIG_SIZE("limits/router-stanza-size", 0, "256k", 8 * 1024, 64 * 1024 * 1024,
                &cfg.router_stanza_size),
    CONFIG_INT("limits/queue", 0, "1000", 1, 1000000, &cfg.queue_max),
    CONFIG_SIZE("limits/queue-bytes", 0, "1M", 4096, 1024LL * 1024 * 1024, &cfg.queue_max_bytes),
    CONFIG_INT("limits/rate", 0, "500", 1, 1000000, &cfg.rate),
    CONFIG_INT("limits/burst", 0, "1000", 1, 1000000, &cfg.burst),
    CONFIG_INT("limits/connections-per-ip", 0, "16", 1, 100000, &cfg.conns_per_ip),
    CONFIG_INT("limits/max-connections", 0, "1024", 1, 1000000, &cfg.max_conns),
    CONFIG_INT("limits/pending-dialback", 0, "16", 1, 10000, &cfg.pending_dialback),
    CONFIG_INT("limits/verify-connections", 0, "256", 1, 100000, &cfg.verify_max),
    CONFIG_INT("limits/verify-per-ip", 0, "32", 1, 100000, &cfg.verify_per_ip),
    CONFIG_INT("limits/dialback-invalid", 0, "3", 1, 10000, &cfg.db_invalid_max),
    CONFIG_DURATION("limits/connect-timeout", 0, "10s", 100, 600 * 1000, &cfg.connect_ms),
    CONFIG_DURATION("limits/tls-timeout", 0, "10s", 100, 600 * 1000, &cfg.tls_ms),
    CONFIG_DURATION("limits/link-timeout", 0, "30s", 100, 3600 * 1000, &cfg.link_ms),
    CONFIG_DURATION("limits/idle-timeout", 0, "10m", 100, 24 * 3600 * 1000LL, &cfg.idle_ms),
    CONFIG_STRING("dns@servers", 0, NULL, &cfg.dns_servers),
    CONFIG_DURATION("limits/dns-timeout", 0, "5s", 100, 600 * 1000, &cfg.dns_ms),
    CONFIG_END,
};

static int on_config(struct daemon *d)
{
    s2s = s2s_new(&cfg);
    return s2s_configure(s2s, daemon_config(d));
}

static int pre_jail(struct daemon *d)
{
    return s2s_listen(s2s, daemon_loop(d));
}

static int post_jail(struct daemon *d)
{
    return s2s_start(s2s);
}

static void on_stop(struct daemon *d)
{
    s2s_stop(s2s);
}

static void on_reload(struct daemon *d)
{
    s2s_reload(s2s);
}

static void on_stats(struct daemon *d)
{
    s2s_log_stats(s2s);
}

int main(int argc, char **argv)
{
    static const struct daemon_spec spec = {
        .name = "parley-s2s",
        .root = "s2s",
        .config_file = SYSCONFDIR "/parley/s2s.xml",
        .table = table,
        .no_file_writes = true,
        .on_config = on_config,
        .pre_jail = pre_jail,
        .post_jail = post_jail,
        .on_stop = on_stop,
        .on_reload = on_reload,
        .on_stats = on_stats,
    };
    int code = daemon_main(argc, argv, &spec);
    s2s_free(s2s);
    return code;
}
