/*
 * daemon_demo.c - the smallest daemon on the skeleton, run by test_daemon.
 *
 * Its config file (root <demo>) has one entry of its own, <dir>: where it
 * leaves marker files that the test polls for:
 *   ready    written by post_jail: "pid uid\n" (after the privilege drop)
 *   reloads  one "reload" line per SIGHUP;  stats: one "stats" line per SIGUSR1
 *   stopped  written by on_stop; drained: written when the last handle closes
 * A repeating timer stands for the daemon's listeners: on_stop closes it,
 * and a "drain" timer stands for a connection finishing after the stop
 * (one hour long if the file <dir>/slow-drain exists, to test a forced stop).
 * Single-threaded, one loop.
 */
#include "autoconfig.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include <uv.h>

#include "common/config.h"
#include "common/daemon.h"

static const char *dir;
static uv_timer_t work, drain;

static const struct config_entry table[] = {
    CONFIG_PATH("dir", CONFIG_REQUIRED, NULL, &dir),
    CONFIG_END,
};

/* Replace (mode "w") or append to dir/name. A replaced file appears whole,
 * through a rename, so that the test never reads it half-written. */
static void put(const char *name, const char *mode, const char *text)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
    bool replace = mode[0] == 'w';
    FILE *f = fopen(replace ? tmp : path, mode);
    if (!f)
        return;
    fputs(text, f);
    if (fclose(f) == 0 && replace)
        rename(tmp, path);
}

static void on_tick(uv_timer_t *t)
{
}

static void on_drain_closed(uv_handle_t *h)
{
    put("drained", "w", "drained\n");
}

static void on_drained(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, on_drain_closed);
}

static int post_jail(struct daemon *d)
{
    uv_timer_init(daemon_loop(d), &work);
    uv_timer_start(&work, on_tick, 3600 * 1000, 3600 * 1000);
    char text[64];
    snprintf(text, sizeof(text), "%ld %ld\n", (long)getpid(), (long)getuid());
    put("ready", "w", text);
    return 0;
}

static void on_stop(struct daemon *d)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/slow-drain", dir);
    uv_close((uv_handle_t *)&work, NULL);
    uv_timer_init(daemon_loop(d), &drain);
    uv_timer_start(&drain, on_drained, access(path, F_OK) == 0 ? 3600 * 1000 : 1, 0);
    put("stopped", "w", "stopped\n");
}

static void on_reload(struct daemon *d)
{
    put("reloads", "a", "reload\n");
}

static void on_stats(struct daemon *d)
{
    put("stats", "a", "stats\n");
}

int main(int argc, char **argv)
{
    static const struct daemon_spec spec = {
        .name = "daemon_demo",
        .root = "demo",
        .config_file = "/nonexistent/demo.xml",
        .table = table,
        .post_jail = post_jail,
        .on_stop = on_stop,
        .on_reload = on_reload,
        .on_stats = on_stats,
    };
    return daemon_main(argc, argv, &spec);
}
