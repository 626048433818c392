/*
 * test_c2s_ipkey.c - c2s's per-address accounting keys: IPv4 whole,
 * IPv4-mapped IPv6 as IPv4, IPv6 cut to the configured prefix (addresses in
 * one /64 share a key, other /64s do not), odd prefixes and bad lengths.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "c2s/c2s_ipkey.h"

static size_t key6(const char *text, unsigned prefix, unsigned char out[C2S_IPKEY_MAX])
{
    unsigned char a[16];
    assert_int_equal(inet_pton(AF_INET6, text, a), 1);
    return c2s_ipkey_make(a, 16, prefix, out);
}

static void test_ipv4(void **state)
{
    (void)state;
    unsigned char a[4] = {192, 0, 2, 7}, k[C2S_IPKEY_MAX], m[C2S_IPKEY_MAX];
    assert_int_equal(c2s_ipkey_make(a, 4, 64, k), 4);
    assert_memory_equal(k, a, 4);
    assert_int_equal(key6("::ffff:192.0.2.7", 64, m), 4);
    assert_memory_equal(m, a, 4);
}

static void test_ipv6_prefix(void **state)
{
    (void)state;
    unsigned char a[C2S_IPKEY_MAX], b[C2S_IPKEY_MAX], c[C2S_IPKEY_MAX];
    assert_int_equal(key6("2001:db8:1:2:aaaa::1", 64, a), 16);
    assert_int_equal(key6("2001:db8:1:2:ffff:1:2:3", 64, b), 16);
    assert_int_equal(key6("2001:db8:1:3::1", 64, c), 16);
    assert_memory_equal(a, b, 16);
    assert_memory_not_equal(a, c, 16);
    /* /56 puts both /64s in one key; /128 keeps full addresses. */
    key6("2001:db8:1:2:aaaa::1", 56, a);
    key6("2001:db8:1:3::1", 56, c);
    assert_memory_equal(a, c, 16);
    key6("2001:db8:1:2:aaaa::1", 128, a);
    key6("2001:db8:1:2:ffff:1:2:3", 128, b);
    assert_memory_not_equal(a, b, 16);
    /* A prefix that is not a multiple of 8 keeps only its bits. */
    key6("2001:db8:1:ff::", 57, a);
    key6("2001:db8:1:80::", 57, b);
    assert_memory_equal(a, b, 16);
    key6("2001:db8:1:7f::", 57, c);
    assert_memory_not_equal(a, c, 16);
}

static void test_bad_length(void **state)
{
    (void)state;
    unsigned char a[8] = {0}, k[C2S_IPKEY_MAX];
    assert_int_equal(c2s_ipkey_make(a, 8, 64, k), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ipv4),
        cmocka_unit_test(test_ipv6_prefix),
        cmocka_unit_test(test_bad_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
