/*
 * bench_storage.c - queries per second through storage/ (see
 * tests/bench/README-storage.md; run by tests/bench/run-storage-bench.sh,
 * which prepares the users and rosters).
 *
 *   bench_storage --dsn DSN --query roster-get|offline-store
 *                 [--pipeline on|off] [--pool N] [--window N]
 *                 [--seconds S] [--users N]
 *
 * Keeps WINDOW queries outstanding (each callback issues the next), over
 * users bench0@bench .. bench<N-1>@bench in turn, for S seconds after a
 * one-second warm-up, and prints one line with the rate. Any error is
 * counted and reported; the rate counts successes only.
 */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/log.h"
#include "storage/storage.h"

struct bench {
    struct storage *st;
    bool roster;
    unsigned users;
    unsigned next_user;
    uint64_t ok, errors;
    bool counting, stopping;
    unsigned outstanding;
    char stanza[256];
    char last_err[200];
};

static void issue(struct bench *b);

static void on_done(void *arg, int err, const struct storage_result *res)
{
    struct bench *b = arg;
    b->outstanding--;
    if (err != 0) {
        b->errors++;
        snprintf(b->last_err, sizeof(b->last_err), "%s", storage_result_error(res));
    } else if (b->counting) {
        b->ok++;
    }
    if (!b->stopping)
        issue(b);
}

static void issue(struct bench *b)
{
    char owner[64];
    snprintf(owner, sizeof(owner), "bench%u@bench", b->next_user++ % b->users);
    int rc = b->roster ? storage_roster_get(b->st, owner, on_done, b)
                       : storage_offline_store(b->st, owner, 0, b->stanza, on_done, b);
    if (rc != 0) {
        fprintf(stderr, "bench_storage: refused: %d\n", rc);
        exit(1);
    }
    b->outstanding++;
}

static void on_start(uv_timer_t *t)
{
    struct bench *b = t->data;
    b->counting = true;
}

static void on_stop(uv_timer_t *t)
{
    struct bench *b = t->data;
    b->counting = false;
    b->stopping = true;
}

int main(int argc, char **argv)
{
    const char *dsn = NULL, *query = "roster-get";
    bool pipeline = true;
    unsigned pool = 2, window = 256, seconds = 5, users = 1000;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--dsn") == 0)
            dsn = v;
        else if (strcmp(k, "--query") == 0)
            query = v;
        else if (strcmp(k, "--pipeline") == 0)
            pipeline = strcmp(v, "off") != 0;
        else if (strcmp(k, "--pool") == 0)
            pool = (unsigned)atoi(v);
        else if (strcmp(k, "--window") == 0)
            window = (unsigned)atoi(v);
        else if (strcmp(k, "--seconds") == 0)
            seconds = (unsigned)atoi(v);
        else if (strcmp(k, "--users") == 0)
            users = (unsigned)atoi(v);
        else {
            fprintf(stderr, "bench_storage: unknown option %s\n", k);
            return 2;
        }
    }
    if (dsn == NULL || users == 0 || window == 0 || seconds == 0 ||
        (strcmp(query, "roster-get") != 0 && strcmp(query, "offline-store") != 0)) {
        fprintf(stderr, "usage: bench_storage --dsn DSN --query roster-get|offline-store "
                        "[--pipeline on|off] [--pool N] [--window N] [--seconds S] [--users N]\n");
        return 2;
    }
    log_init("bench_storage", 0, LOG_LVL_WARN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct storage_opts o = {.dsn = dsn,
                             .pool_size = pool,
                             .no_pipeline = !pipeline,
                             .queue_max = window + 16,
                             .offline_quota = 1000000};
    struct bench b = {.roster = strcmp(query, "roster-get") == 0, .users = users};
    snprintf(b.stanza, sizeof(b.stanza), "%s",
             "<message from='someone@example.org/res' to='bench@bench' type='chat' "
             "id='abcdef0123456789'><body>A message of about two hundred bytes, "
             "stored for later.</body></message>");
    if (storage_new(&loop, &o, &b.st) != 0)
        return 1;
    for (unsigned i = 0; i < window; i++)
        issue(&b);
    uv_timer_t start, stop;
    uv_timer_init(&loop, &start);
    uv_timer_init(&loop, &stop);
    start.data = stop.data = &b;
    uv_timer_start(&start, on_start, 1000, 0);
    uv_timer_start(&stop, on_stop, 1000 + seconds * 1000ull, 0);
    while (!b.stopping || b.outstanding > 0)
        uv_run(&loop, UV_RUN_ONCE);
    storage_free(b.st);
    uv_close((uv_handle_t *)&start, NULL);
    uv_close((uv_handle_t *)&stop, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    printf("%-13s pipeline=%-3s pool=%u window=%-4u %8.0f queries/s (%" PRIu64 " in %us, %" PRIu64
           " errors%s%s)\n",
           query, pipeline ? "on" : "off", pool, window, (double)b.ok / seconds, b.ok, seconds,
           b.errors, b.errors ? ": " : "", b.last_err);
    return b.errors ? 1 : 0;
}
