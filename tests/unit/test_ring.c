/*
 * test_ring.c - the consistent-hashing ring (common/ring.h): the slot a key
 * goes to depends only on the owner and the set of slots (not their order:
 * the router and an sm instance list them differently), one instance or
 * none takes every key, and a change of one instance moves only keys to or
 * from that instance (what lets an sm keep the cached users it still owns).
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/jid.h"
#include "common/ring.h"

#define NKEYS 5000

static unsigned slot_of(const struct ring *r, const unsigned *slots, int k)
{
    char key[64];
    int n = snprintf(key, sizeof(key), "user%d@example.com", k);
    return slots[ring_pick(r, key, (size_t)n)];
}

static void test_order_does_not_matter(void **state)
{
    (void)state;
    static const unsigned s1[] = {0, 2, 5}, s2[] = {5, 0, 2};
    struct ring r1 = {0}, r2 = {0};
    ring_build(&r1, "sm", s1, 3);
    ring_build(&r2, "sm", s2, 3);
    assert_int_equal(r1.n, 3 * RING_VNODES);
    int per[6] = {0};
    for (int k = 0; k < NKEYS; k++) {
        unsigned a = slot_of(&r1, s1, k);
        assert_int_equal(a, slot_of(&r2, s2, k));
        per[a]++;
    }
    /* every instance gets a fair share */
    assert_true(per[0] > NKEYS / 6 && per[2] > NKEYS / 6 && per[5] > NKEYS / 6);
    /* another owner name is another ring */
    struct ring r3 = {0};
    ring_build(&r3, "sm2", s1, 3);
    int differ = 0;
    for (int k = 0; k < NKEYS; k++)
        differ += slot_of(&r1, s1, k) != slot_of(&r3, s1, k);
    assert_true(differ > 0);
    ring_clear(&r1);
    ring_clear(&r2);
    ring_clear(&r3);
    assert_null(r1.points);
    assert_int_equal(r1.n, 0);
}

static void test_one_or_none(void **state)
{
    (void)state;
    static const unsigned one[] = {3};
    struct ring r = {0};
    ring_build(&r, "sm", one, 1);
    assert_int_equal(r.n, 0);
    assert_int_equal(ring_pick(&r, "x@y", 3), 0);
    ring_build(&r, "sm", NULL, 0);
    assert_int_equal(ring_pick(&r, "x@y", 3), 0);
    ring_clear(&r);
}

static void test_one_change_moves_only_its_keys(void **state)
{
    (void)state;
    static const unsigned three[] = {0, 1, 2}, four[] = {0, 1, 2, 3};
    struct ring r3 = {0}, r4 = {0};
    ring_build(&r3, "sm", three, 3);
    ring_build(&r4, "sm", four, 4);
    int moved = 0;
    for (int k = 0; k < NKEYS; k++) {
        unsigned before = slot_of(&r3, three, k), after = slot_of(&r4, four, k);
        if (before != after) {
            assert_int_equal(after, 3); /* only to the instance that joined */
            moved++;
        }
    }
    assert_true(moved > NKEYS / 8 && moved < NKEYS / 2);
    assert_int_equal(ring_hash("abc", 3), ring_hash("abc", 3));
    assert_int_not_equal(ring_hash("abc", 3), ring_hash("abd", 3));
    ring_clear(&r3);
    ring_clear(&r4);
}

/* An owner name as long as a domain may be (1023 bytes): its points still
 * differ by slot, so users spread over both instances. */
static void test_long_owner_name_spreads(void **state)
{
    (void)state;
    char owner[JID_PART_MAX + 1];
    memset(owner, 'a', JID_PART_MAX);
    owner[JID_PART_MAX] = '\0';
    unsigned slots[] = {0, 1};
    struct ring r = {0};
    ring_build(&r, owner, slots, 2);
    unsigned count[2] = {0, 0};
    for (int i = 0; i < 1000; i++)
        count[slot_of(&r, slots, i)]++;
    assert_true(count[0] > 200 && count[1] > 200);
    ring_clear(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_does_not_matter),
        cmocka_unit_test(test_one_or_none),
        cmocka_unit_test(test_one_change_moves_only_its_keys),
        cmocka_unit_test(test_long_owner_name_spreads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
