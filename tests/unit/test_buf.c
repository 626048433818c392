/*
 * test_buf.c - growable and refcounted buffers.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/buf.h"

static void test_append_grows_and_terminates(void **state)
{
    struct buf b = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        buf_append(&b, "abc", 3);
    assert_int_equal(b.len, 3000);
    assert_true(b.cap > b.len);
    assert_int_equal(b.data[b.len], '\0');
    assert_memory_equal(b.data + 2997, "abc", 3);
    buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

static void test_printf_and_consume(void **state)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s=%d;", "x", 42);
    buf_append_str(&b, "tail");
    assert_string_equal(b.data, "x=42;tail");
    buf_consume(&b, 5);
    assert_string_equal(b.data, "tail");
    buf_consume(&b, 100);
    assert_int_equal(b.len, 0);
    buf_append_byte(&b, 'z');
    assert_string_equal(b.data, "z");
    buf_free(&b);
}

static void test_printf_long(void **state)
{
    struct buf b = BUF_INIT;
    char big[5000];
    memset(big, 'q', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    buf_printf(&b, "[%s]", big);
    assert_int_equal(b.len, sizeof(big) + 1);
    assert_int_equal(b.data[0], '[');
    assert_int_equal(b.data[b.len - 1], ']');
    buf_free(&b);
}

static void test_detach(void **state)
{
    struct buf b = BUF_INIT;
    size_t len;
    char *p = buf_detach(&b, &len); /* empty buffer still gives a string */
    assert_int_equal(len, 0);
    assert_string_equal(p, "");
    free(p);
    buf_append_str(&b, "hello");
    p = buf_detach(&b, &len);
    assert_int_equal(len, 5);
    assert_string_equal(p, "hello");
    assert_null(b.data);
    free(p);
}

static void test_rbuf_refcount(void **state)
{
    struct rbuf *r = rbuf_new("stanza", 6);
    assert_int_equal(r->refs, 1);
    struct rbuf *r2 = rbuf_ref(r);
    assert_ptr_equal(r, r2);
    assert_int_equal(r->refs, 2);
    rbuf_unref(r);
    assert_int_equal(r2->refs, 1);
    assert_string_equal(r2->data, "stanza");
    rbuf_unref(r2); /* freed: ASan would flag a leak or a double free */
    rbuf_unref(NULL);

    struct buf b = BUF_INIT;
    buf_append_str(&b, "<x/>");
    struct rbuf *r3 = rbuf_from_buf(&b);
    assert_int_equal(r3->len, 4);
    assert_string_equal(r3->data, "<x/>");
    assert_null(b.data);
    rbuf_unref(r3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_grows_and_terminates),
        cmocka_unit_test(test_printf_and_consume),
        cmocka_unit_test(test_printf_long),
        cmocka_unit_test(test_detach),
        cmocka_unit_test(test_rbuf_refcount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
