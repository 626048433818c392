/*
 * main.c - parley-c2s: client connections (see c2s/c2s.h for the parts).
 *
 * Only the config table and the daemon hooks live here; common/daemon runs
 * them (flags, config, pidfile, privilege drop, signals, loop).
 */
#include "autoconfig.h"

#include <stddef.h>

#include "c2s/c2s.h"
#include "common/config.h"
#include "common/daemon.h"

static struct c2s *c2s;
static struct c2s_config *cfg;

#define DUR(p, d, dst) CONFIG_DURATION(p, 0, d, 0, 24LL * 3600 * 1000, dst)

static int on_config(struct daemon *d)
{
    return c2s_configure(c2s, daemon_config(d));
}

static int pre_jail(struct daemon *d)
{
    /* Listeners, certificates and Cyrus SASL's plugins, while privileged. */
    return c2s_listen(c2s, daemon_loop(d), daemon_config(d));
}

static int post_jail(struct daemon *d)
{
    (void)d;
    return c2s_start(c2s);
}

static void on_stop(struct daemon *d)
{
    (void)d;
    c2s_stop(c2s);
}

static void on_reload(struct daemon *d)
{
    c2s_reload(c2s, daemon_config(d));
}

static void on_stats(struct daemon *d)
{
    (void)d;
    c2s_stats(c2s);
}

int main(int argc, char **argv)
{
    c2s = c2s_new();
    cfg = &c2s->cfg;
    const struct config_entry table[] = {
        CONFIG_STRING("router@name", CONFIG_REQUIRED, NULL, &cfg->router_name),
        CONFIG_STRING("router@connect", CONFIG_REQUIRED, NULL, &cfg->router_connect),
        CONFIG_SECRET("router/secret", CONFIG_REQUIRED, &cfg->router_secret),
        CONFIG_STRING("sm", 0, "sm", &cfg->sm_name),
        CONFIG_STRING("db/dsn", CONFIG_REQUIRED, NULL, &cfg->db_dsn),
        CONFIG_SECRET("db/password", 0, &cfg->db_password),
        CONFIG_NODE("listen/tcp", 0, &cfg->listen_tcp),
        CONFIG_NODE("tls/cert", 0, &cfg->tls_cert),
        CONFIG_BOOL("tls/required", 0, "yes", &cfg->tls_required),
        CONFIG_NODE("domain", 0, &cfg->domain),
        CONFIG_STRING("sasl/mechanisms", 0, "SCRAM-SHA-256 SCRAM-SHA-1 PLAIN", &cfg->mechanisms),
        CONFIG_SIZE("limits/stanza-size", 0, "256k", 4096, 16 * 1024 * 1024, &cfg->stanza_size),
        CONFIG_SIZE("limits/router-stanza-size", 0, "256k", 8 * 1024, 64 * 1024 * 1024,
                    &cfg->router_stanza_size),
        CONFIG_SIZE("limits/presence-keep", 0, "8k", 256, 16 * 1024 * 1024, &cfg->presence_keep),
        CONFIG_SIZE("limits/preauth-stanza-size", 0, "8k", 1024, 1024 * 1024,
                    &cfg->preauth_stanza_size),
        CONFIG_SIZE("limits/preauth-bytes", 0, "64k", 4096, 16 * 1024 * 1024, &cfg->preauth_bytes),
        CONFIG_INT("limits/max-connections", 0, "10000", 1, 10000000, &cfg->max_conns),
        CONFIG_INT("limits/max-unauthenticated", 0, "1000", 1, 10000000, &cfg->max_preauth),
        CONFIG_INT("limits/connections-per-ip", 0, "50", 1, 10000000, &cfg->conns_per_ip),
        CONFIG_INT("limits/ipv6-prefix", 0, "64", 1, 128, &cfg->ipv6_prefix),
        CONFIG_INT("limits/ip-table-size", 0, "100000", 1, 10000000, &cfg->ip_table_size),
        CONFIG_INT("limits/connect-rate", 0, "10", 1, 1000000, &cfg->connect_rate),
        CONFIG_SIZE("limits/rate", 0, "64k", 0, 1024LL * 1024 * 1024, &cfg->rate_bytes),
        CONFIG_INT("limits/plain-jobs", 0, "64", 1, 100000, &cfg->plain_jobs),
        CONFIG_INT("limits/auth-attempts", 0, "3", 1, 100, &cfg->auth_attempts),
        DUR("limits/auth-delay", "250ms", &cfg->auth_delay_ms),
        DUR("limits/auth-delay-max", "8s", &cfg->auth_delay_max_ms),
        DUR("limits/handshake-timeout", "30s", &cfg->handshake_ms),
        DUR("limits/ping-after", "5m", &cfg->ping_ms),
        DUR("limits/ping-timeout", "60s", &cfg->ping_timeout_ms),
        DUR("limits/idle-timeout", "0s", &cfg->idle_ms),
        CONFIG_END,
    };
    const struct daemon_spec spec = {
        .name = "parley-c2s",
        .root = "c2s",
        .config_file = SYSCONFDIR "/parley/c2s.xml",
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
    c2s_free(c2s);
    return code;
}
