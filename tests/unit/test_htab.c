/*
 * test_htab.c - hash table: insert, replace, delete, growth, iteration, SipHash.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/htab.h"
#include "common/mem.h"

static void test_put_get_del(void **state)
{
    struct htab *h = htab_new(NULL);
    int a = 1, b = 2;
    assert_int_equal(htab_put_str(h, "alice@example.com", &a), 0);
    assert_int_equal(htab_put_str(h, "bob@example.com", &b), 0);
    assert_int_equal(htab_put_str(h, "alice@example.com", &b), ERR_EXISTS);
    assert_ptr_equal(htab_get_str(h, "alice@example.com"), &a);
    assert_ptr_equal(htab_get_str(h, "bob@example.com"), &b);
    assert_null(htab_get_str(h, "carol@example.com"));
    assert_int_equal(htab_count(h), 2);
    assert_ptr_equal(htab_del_str(h, "alice@example.com"), &a);
    assert_null(htab_get_str(h, "alice@example.com"));
    assert_null(htab_del_str(h, "alice@example.com"));
    assert_int_equal(htab_count(h), 1);
    htab_free(h);
    htab_free(NULL);
}

static void test_binary_keys(void **state)
{
    struct htab *h = htab_new(NULL);
    int v1 = 1, v2 = 2, v3 = 3;
    assert_int_equal(htab_put(h, "a\0b", 3, &v1), 0);
    assert_int_equal(htab_put(h, "a\0c", 3, &v2), 0);
    assert_int_equal(htab_put(h, "", 0, &v3), 0);
    assert_ptr_equal(htab_get(h, "a\0b", 3), &v1);
    assert_ptr_equal(htab_get(h, "a\0c", 3), &v2);
    assert_ptr_equal(htab_get(h, "", 0), &v3);
    assert_null(htab_get(h, "a", 1));
    htab_free(h);
}

static void test_grow_and_iterate(void **state)
{
    struct htab *h = htab_new(free);
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "user%d@example.com", i);
        int *v = xmalloc(sizeof(int));
        *v = i;
        assert_int_equal(htab_put_str(h, key, v), 0);
    }
    assert_int_equal(htab_count(h), 5000);
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "user%d@example.com", i);
        int *v = htab_get_str(h, key);
        assert_non_null(v);
        assert_int_equal(*v, i);
    }
    /* Iterate: every item seen once; delete the odd ones while iterating. */
    char *seen = xcalloc(5000, 1);
    struct htab_iter it;
    size_t n = 0;
    for (htab_iter_init(&it, h); htab_iter_next(&it);) {
        int v = *(int *)it.val;
        assert_false(seen[v]);
        seen[v] = 1;
        n++;
        if (v % 2)
            free(htab_iter_del(&it));
    }
    assert_int_equal(n, 5000);
    assert_int_equal(htab_count(h), 2500);
    assert_null(htab_get_str(h, "user1@example.com"));
    assert_non_null(htab_get_str(h, "user2@example.com"));
    free(seen);
    htab_free(h); /* frees the remaining values */
}

static void test_set_replaces_and_frees(void **state)
{
    struct htab *h = htab_new(free);
    htab_set(h, "k", 1, xstrdup("one"));
    htab_set(h, "k", 1, xstrdup("two")); /* "one" freed by the table */
    assert_string_equal(htab_get(h, "k", 1), "two");
    assert_int_equal(htab_count(h), 1);
    htab_free(h);
}

/* Reference vector from the SipHash paper (key 00..0f, message 00..0e). */
static void test_siphash_vector(void **state)
{
    unsigned char key[16], msg[15];
    for (int i = 0; i < 16; i++)
        key[i] = (unsigned char)i;
    for (int i = 0; i < 15; i++)
        msg[i] = (unsigned char)i;
    assert_true(htab_siphash(key, msg, 15) == 0xa129ca6149be45e5ULL);
    assert_true(htab_siphash(key, msg, 0) == 0x726fdb47dd0e0e31ULL);
}

/* A table that never held an entry has no bucket array of its own: every
 * operation on it must work, and the first insert gives it one. */
static void test_empty_tables(void **state)
{
    struct htab *a = htab_new(free), *b = htab_new(NULL);
    struct htab_iter it;
    assert_null(htab_get_str(a, "x"));
    assert_null(htab_del_str(a, "x"));
    htab_iter_init(&it, a);
    assert_int_equal(htab_iter_next(&it), 0);
    assert_null(htab_iter_del(&it));
    /* b stays empty while a fills and empties: they share nothing. */
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof(k), "k%d", i);
        int *v = xmalloc(sizeof(*v));
        *v = i;
        assert_int_equal(htab_put_str(a, k, v), 0);
        assert_null(htab_get_str(b, k));
    }
    assert_int_equal(htab_count(a), 40);
    assert_int_equal(htab_count(b), 0);
    htab_iter_init(&it, b);
    assert_int_equal(htab_iter_next(&it), 0);
    int n = 0;
    htab_iter_init(&it, a);
    while (htab_iter_next(&it)) {
        free(htab_iter_del(&it));
        n++;
    }
    assert_int_equal(n, 40);
    assert_int_equal(htab_count(a), 0);
    int *v = xmalloc(sizeof(*v));
    assert_int_equal(htab_put_str(a, "again", v), 0);
    assert_ptr_equal(htab_get_str(a, "again"), v);
    htab_free(a);
    htab_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del),      cmocka_unit_test(test_binary_keys),
        cmocka_unit_test(test_grow_and_iterate), cmocka_unit_test(test_set_replaces_and_frees),
        cmocka_unit_test(test_siphash_vector),   cmocka_unit_test(test_empty_tables),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
