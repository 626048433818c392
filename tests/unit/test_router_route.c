/*
 * test_router_route.c - the route table and its consistent hashing ring:
 * bind/unbind/conflict rules, the default route, how evenly keys spread,
 * and that adding or removing one of N instances moves only about 1/N of
 * the keys (and only to or from that instance).
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"
#include "common/err.h"
#include "router/route.h"

#define NKEYS 20000

static int a, b, c, d, e;

static void test_add_del(void **state)
{
    struct route_table *t = route_table_new();
    assert_int_equal(route_add(t, "example.com", "sm", false, &a, 0), 1);
    assert_int_equal(route_count(t), 1);
    /* the same instance again: nothing changes */
    assert_int_equal(route_add(t, "example.com", "sm", false, &a, 0), 0);
    /* another instance of a non-multi owner, or another owner: conflict */
    assert_int_equal(route_add(t, "example.com", "sm", false, &b, 1), ERR_EXISTS);
    assert_int_equal(route_add(t, "example.com", "other", true, &b, 0), ERR_EXISTS);
    struct route *r = route_find(t, "example.com", 11);
    assert_non_null(r);
    assert_int_equal(r->ninst, 1);
    assert_true(route_has(r, &a));
    assert_false(route_has(r, &b));
    assert_ptr_equal(route_pick(r, "x@example.com", 13), &a);
    assert_null(route_find(t, "example.co", 10));
    assert_int_equal(route_del(t, "example.com", &b), ERR_NOTFOUND);
    assert_int_equal(route_del(t, "nothere", &a), ERR_NOTFOUND);
    assert_int_equal(route_del(t, "example.com", &a), 1);
    assert_null(route_find(t, "example.com", 11));
    assert_int_equal(route_count(t), 0);
    route_table_free(t);
    route_table_free(NULL);
}

static void test_multi(void **state)
{
    struct route_table *t = route_table_new();
    assert_int_equal(route_add(t, "sm", "sm", true, &a, 0), 1);
    assert_int_equal(route_add(t, "sm", "sm", true, &b, 1), 0);
    /* a multi route is still only for instances of its owner */
    assert_int_equal(route_add(t, "sm", "sm2", true, &c, 0), ERR_EXISTS);
    struct route *r = route_find(t, "sm", 2);
    assert_int_equal(r->ninst, 2);
    assert_int_equal(r->ring.n, 2 * RING_VNODES);
    /* Each change of the instances while the route stays up is counted (the
     * notify's gen), also a refused join is not. */
    assert_int_equal(r->gen, 1);
    struct buf out = BUF_INIT;
    route_ring_attrs(r, &out);
    buf_append_byte(&out, '\0');
    assert_string_equal(out.data, " gen='1' slots='0 1'");
    assert_int_equal(route_del(t, "sm", &a), 0);
    assert_int_equal(r->ninst, 1);
    assert_int_equal(r->gen, 2);
    out.len = 0;
    route_ring_attrs(r, &out);
    buf_append_byte(&out, '\0');
    assert_string_equal(out.data, " gen='2' slots='1'");
    buf_free(&out);
    assert_int_equal(route_del(t, "sm", &b), 1);
    route_table_free(t);
}

static void test_default(void **state)
{
    struct route_table *t = route_table_new();
    assert_null(route_default(t));
    assert_int_equal(route_add(t, NULL, "s2s", false, &a, 0), 1);
    assert_int_equal(route_add(t, NULL, "s2s-b", false, &b, 0), ERR_EXISTS);
    assert_non_null(route_default(t));
    assert_ptr_equal(route_pick(route_default(t), "k", 1), &a);
    /* the default route is not a name */
    assert_int_equal(route_count(t), 0);
    assert_null(route_find(t, "", 0));
    assert_int_equal(route_del(t, NULL, &a), 1);
    assert_null(route_default(t));
    route_table_free(t);
}

static void *pick_key(const struct route *r, int i)
{
    char key[64];
    int n = snprintf(key, sizeof(key), "user%d@example.com", i);
    return route_pick(r, key, (size_t)n);
}

static int index_of(void *p, void **insts, int n)
{
    for (int i = 0; i < n; i++)
        if (insts[i] == p)
            return i;
    fail_msg("pick returned an unknown instance");
    return -1;
}

static void test_distribution(void **state)
{
    struct route_table *t = route_table_new();
    void *insts[] = {&a, &b, &c, &d};
    for (unsigned i = 0; i < 4; i++)
        route_add(t, "sm", "sm", true, insts[i], i);
    struct route *r = route_find(t, "sm", 2);
    int count[4] = {0};
    for (int k = 0; k < NKEYS; k++)
        count[index_of(pick_key(r, k), insts, 4)]++;
    /* Each instance gets a quarter, give or take what 160 points each allow. */
    for (int i = 0; i < 4; i++) {
        assert_true(count[i] > NKEYS * 18 / 100);
        assert_true(count[i] < NKEYS * 32 / 100);
    }
    route_table_free(t);
}

static void test_stability(void **state)
{
    struct route_table *t = route_table_new();
    void *insts[] = {&a, &b, &c, &d, &e};
    for (unsigned i = 0; i < 4; i++)
        route_add(t, "sm", "sm", true, insts[i], i);
    struct route *r = route_find(t, "sm", 2);
    static void *before[NKEYS];
    for (int k = 0; k < NKEYS; k++)
        before[k] = pick_key(r, k);

    /* A fifth instance takes about a fifth, and only from the others. */
    route_add(t, "sm", "sm", true, &e, 4);
    int moved = 0;
    for (int k = 0; k < NKEYS; k++) {
        void *now = pick_key(r, k);
        if (now != before[k]) {
            assert_ptr_equal(now, &e);
            moved++;
        }
    }
    assert_true(moved > NKEYS * 12 / 100);
    assert_true(moved < NKEYS * 28 / 100);

    /* It leaves: everything is back where it was. */
    route_del(t, "sm", &e);
    for (int k = 0; k < NKEYS; k++)
        assert_ptr_equal(pick_key(r, k), before[k]);

    /* Instance b (slot 1) leaves: only its keys move. */
    route_del(t, "sm", &b);
    moved = 0;
    for (int k = 0; k < NKEYS; k++) {
        void *now = pick_key(r, k);
        if (before[k] == &b) {
            assert_ptr_not_equal(now, &b);
            moved++;
        } else {
            assert_ptr_equal(now, before[k]);
        }
    }
    assert_true(moved > NKEYS * 15 / 100);
    assert_true(moved < NKEYS * 35 / 100);

    /* A new connection that takes slot 1 gets exactly b's keys back. */
    route_add(t, "sm", "sm", true, &e, 1);
    for (int k = 0; k < NKEYS; k++)
        assert_ptr_equal(pick_key(r, k), before[k] == &b ? (void *)&e : before[k]);
    route_table_free(t);
}

static void test_same_order_same_ring(void **state)
{
    /* The ring depends on slots, not on the order instances joined in. */
    struct route_table *t1 = route_table_new(), *t2 = route_table_new();
    route_add(t1, "sm", "sm", true, &a, 0);
    route_add(t1, "sm", "sm", true, &b, 1);
    route_add(t1, "sm", "sm", true, &c, 2);
    route_add(t2, "sm", "sm", true, &c, 2);
    route_add(t2, "sm", "sm", true, &a, 0);
    route_add(t2, "sm", "sm", true, &b, 1);
    struct route *r1 = route_find(t1, "sm", 2), *r2 = route_find(t2, "sm", 2);
    for (int k = 0; k < 2000; k++)
        assert_ptr_equal(pick_key(r1, k), pick_key(r2, k));
    assert_int_equal(ring_hash("abc", 3), ring_hash("abc", 3));
    assert_int_not_equal(ring_hash("abc", 3), ring_hash("abd", 3));
    route_table_free(t1);
    route_table_free(t2);
}

static int seen;

static void on_route(void *arg, struct route *r)
{
    seen++;
    assert_ptr_equal(arg, &seen);
}

static void test_foreach(void **state)
{
    struct route_table *t = route_table_new();
    route_add(t, "a.example", "x", false, &a, 0);
    route_add(t, "b.example", "x", false, &a, 0);
    route_add(t, NULL, "x", false, &a, 0);
    seen = 0;
    route_foreach(t, on_route, &seen);
    assert_int_equal(seen, 2);
    route_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_del),   cmocka_unit_test(test_multi),
        cmocka_unit_test(test_default),   cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_stability), cmocka_unit_test(test_same_order_same_ring),
        cmocka_unit_test(test_foreach),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
