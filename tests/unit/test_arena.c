/*
 * test_arena.c - arena allocation: alignment, growth, big blocks, accounting.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/arena.h"

static void test_alignment_and_strings(void **state)
{
    struct arena *a = arena_new(0);
    for (int i = 1; i < 200; i++) {
        void *p = arena_alloc(a, (size_t)i);
        assert_true(((uintptr_t)p % alignof(max_align_t)) == 0);
        memset(p, 0xab, (size_t)i); /* ASan flags any overlap/overflow */
    }
    char *s = arena_strndup(a, "hello world", 5);
    assert_string_equal(s, "hello");
    assert_string_equal(arena_strdup(a, "x"), "x");
    char *z = arena_zalloc(a, 64);
    for (int i = 0; i < 64; i++)
        assert_int_equal(z[i], 0);
    arena_free(a);
    arena_free(NULL);
}

static void test_accounting(void **state)
{
    struct arena *a = arena_new(64);
    assert_int_equal(arena_used(a), 0);
    arena_alloc(a, 10);
    arena_alloc(a, 20);
    assert_int_equal(arena_used(a), 30);
    arena_memdup(a, "abc", 3);
    assert_int_equal(arena_used(a), 33);
    arena_free(a);
}

static void test_big_and_many(void **state)
{
    struct arena *a = arena_new(128);
    char *small = arena_strdup(a, "small");
    char *big = arena_alloc(a, 1 << 20); /* a dedicated chunk */
    memset(big, 'b', 1 << 20);
    char *small2 = arena_strdup(a, "after");
    for (int i = 0; i < 10000; i++)
        memset(arena_alloc(a, 100), i & 0xff, 100);
    assert_string_equal(small, "small");
    assert_string_equal(small2, "after");
    assert_int_equal(big[(1 << 20) - 1], 'b');
    assert_true(arena_used(a) >= (1 << 20) + 10000 * 100);
    arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_and_strings),
        cmocka_unit_test(test_accounting),
        cmocka_unit_test(test_big_and_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
