/*
 * test_mem.c - allocators, duplication helpers and secret wiping; error texts.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/mem.h"

static void test_dup_helpers(void **state)
{
    char *s = xstrdup("parley");
    assert_string_equal(s, "parley");
    free(s);
    s = xstrndup("parley", 3);
    assert_string_equal(s, "par");
    free(s);
    s = xstrndup("ab", 10); /* n past the end stops at the NUL */
    assert_string_equal(s, "ab");
    free(s);
    unsigned char raw[4] = {0, 1, 2, 0};
    unsigned char *d = xmemdup(raw, sizeof(raw));
    assert_memory_equal(d, raw, sizeof(raw));
    free(d);
}

static void test_zero_sizes_are_valid(void **state)
{
    void *p = xmalloc(0);
    assert_non_null(p);
    p = xrealloc(p, 0);
    assert_non_null(p);
    free(p);
    int *a = xcalloc(0, sizeof(int));
    assert_non_null(a);
    a = xreallocarray(a, 100, sizeof(int));
    a[99] = 7;
    assert_int_equal(a[99], 7);
    free(a);
}

static void test_wipe(void **state)
{
    char secret[16];
    memcpy(secret, "hunter2hunter2!!", 16);
    mem_wipe(secret, sizeof(secret));
    for (size_t i = 0; i < sizeof(secret); i++)
        assert_int_equal(secret[i], 0);
    mem_freezero(xstrdup("password"), 9);
    mem_freezero(NULL, 10);
    mem_wipe(NULL, 10);
}

static void test_err_texts(void **state)
{
    /* Every code has its own text; unknown codes get a generic one. */
    const char *seen[32];
    int n = 0;
    for (int c = 0; c >= ERR_DB; c--) {
        const char *t = err_str(c);
        assert_non_null(t);
        assert_string_not_equal(t, "unknown error");
        for (int i = 0; i < n; i++)
            assert_string_not_equal(seen[i], t);
        seen[n++] = t;
    }
    assert_string_equal(err_str(ERR_DB - 1), "unknown error");
    assert_string_equal(err_str(5), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dup_helpers),
        cmocka_unit_test(test_zero_sizes_are_valid),
        cmocka_unit_test(test_wipe),
        cmocka_unit_test(test_err_texts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
