/*
 * test_storage_queue.c - limits of storage's wait queue: the byte budget
 * (queue_max_bytes) over the parameters of waiting and in-flight queries.
 * No server is needed: the DSN points at a socket directory that does not
 * exist, so every query waits until it times out or storage_free fails it.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "common/err.h"
#include "common/log.h"
#include "storage/storage.h"

struct tally {
    int timeouts;
    int closed;
    int other;
};

static void on_done(void *arg, int err, const struct storage_result *res)
{
    struct tally *t = arg;
    (void)res;
    if (err == ERR_TIMEOUT)
        t->timeouts++;
    else if (err == ERR_CLOSED)
        t->closed++;
    else
        t->other++;
}

static void test_byte_budget(void **state)
{
    (void)state;
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct storage_opts o;
    memset(&o, 0, sizeof(o));
    o.dsn = "host=/nonexistent/dir port=1 dbname=parley";
    o.pool_size = 1;
    o.query_timeout_ms = 20;
    o.backoff_min_ms = 1000; /* no reconnect noise while the test runs */
    o.queue_max_bytes = 4096;
    struct storage *st = NULL;
    assert_int_equal(storage_new(&loop, &o, &st), 0);

    static char vcard[1501];
    memset(vcard, 'v', sizeof(vcard) - 1);
    struct tally t = {0};
    /* Two fit in 4096 bytes, a third does not, although the queue has
     * room for thousands by count. */
    assert_int_equal(storage_vcard_set(st, "a@example.com", vcard, on_done, &t), 0);
    assert_int_equal(storage_vcard_set(st, "a@example.com", vcard, on_done, &t), 0);
    assert_int_equal(storage_vcard_set(st, "a@example.com", vcard, on_done, &t), ERR_LIMIT);
    /* A small query still fits. */
    assert_int_equal(storage_vcard_get(st, "a@example.com", on_done, &t), 0);

    /* The budget comes back when the queries finish (here: time out). */
    while (t.timeouts < 3)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(t.other, 0);
    assert_int_equal(storage_vcard_set(st, "a@example.com", vcard, on_done, &t), 0);
    assert_int_equal(storage_vcard_set(st, "a@example.com", vcard, on_done, &t), 0);

    /* One query larger than the whole budget never fits. */
    static char big[5000];
    memset(big, 'b', sizeof(big) - 1);
    assert_int_equal(storage_vcard_set(st, "a@example.com", big, on_done, &t), ERR_LIMIT);

    storage_free(st);
    assert_int_equal(t.closed, 2);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    log_init("test_storage_queue", 0, LOG_LVL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_byte_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
