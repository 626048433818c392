/*
 * test_rand.c - random ids: format, uniqueness, range of rand_uniform.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/htab.h"
#include "common/rand.h"

static void test_id_format_and_unique(void **state)
{
    struct htab *h = htab_new(NULL);
    char id[RAND_ID_HEXLEN + 1];
    for (int i = 0; i < 10000; i++) {
        rand_id_hex(id);
        assert_int_equal(strlen(id), RAND_ID_HEXLEN);
        assert_int_equal(strspn(id, "0123456789abcdef"), RAND_ID_HEXLEN);
        assert_int_equal(htab_put_str(h, id, h), 0); /* no repeats */
    }
    htab_free(h);
}

static void test_uniform_range(void **state)
{
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) {
        uint64_t r = rand_uniform(7);
        assert_true(r < 7);
        counts[r]++;
    }
    /* Each bucket expects 10000; 9000 is > 10 sigma away. */
    for (int i = 0; i < 7; i++)
        assert_true(counts[i] > 9000 && counts[i] < 11000);
    assert_true(rand_uniform(1) == 0);
}

static void test_bytes_not_constant(void **state)
{
    unsigned char a[32], b[32];
    rand_bytes(a, sizeof(a));
    rand_bytes(b, sizeof(b));
    assert_memory_not_equal(a, b, sizeof(a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_id_format_and_unique),
        cmocka_unit_test(test_uniform_range),
        cmocka_unit_test(test_bytes_not_constant),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
