/*
 * test_c2s_saslmsg.c - c2s's SASL message parsers: strict base64 (RFC 4648
 * test vectors, padding and alphabet errors), the SCRAM client-first
 * message (RFC 5802 §7 and its example), and PLAIN (RFC 4616).
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "c2s/c2s_saslmsg.h"
#include "common/err.h"

static int dec(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    int rc = c2s_saslmsg_b64_decode(in, strlen(in), (unsigned char *)out, cap, &n);
    if (rc == 0)
        out[n] = '\0';
    return rc;
}

static void test_b64(void **state)
{
    (void)state;
    static const char *vec[][2] = {{"", "="},
                                   {"f", "Zg=="},
                                   {"fo", "Zm8="},
                                   {"foo", "Zm9v"},
                                   {"foob", "Zm9vYg=="},
                                   {"fooba", "Zm9vYmE="},
                                   {"foobar", "Zm9vYmFy"}};
    char out[64];
    for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
        assert_int_equal(dec(vec[i][1], out, sizeof(out) - 1), 0);
        assert_string_equal(out, vec[i][0]);
        struct buf b = BUF_INIT;
        c2s_saslmsg_b64_encode((const unsigned char *)vec[i][0], strlen(vec[i][0]), &b);
        buf_append_byte(&b, '\0');
        assert_string_equal(b.data, vec[i][1]);
        buf_free(&b);
    }
    assert_int_equal(dec("Zg=", out, 60), ERR_PARSE);      /* length */
    assert_int_equal(dec("Zh==", out, 60), ERR_PARSE);     /* non-zero pad bits */
    assert_int_equal(dec("Z===", out, 60), ERR_PARSE);     /* too much padding */
    assert_int_equal(dec("Zg==Zg==", out, 60), ERR_PARSE); /* data after padding */
    assert_int_equal(dec("Zm 9", out, 60), ERR_PARSE);     /* whitespace */
    assert_int_equal(dec("Zm9vYmFy", out, 3), ERR_LIMIT);
}

static void test_scram_first(void **state)
{
    (void)state;
    struct c2s_scram_first f;
    const char *m = "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL";
    assert_int_equal(c2s_saslmsg_scram_first((const unsigned char *)m, strlen(m), &f), 0);
    assert_int_equal(f.cbflag, 'n');
    assert_null(f.authzid);
    assert_string_equal(f.user, "user");
    c2s_saslmsg_scram_first_free(&f);

    m = "p=tls-exporter,a=a=3Db=2Cc,n=u=2Cv,r=abc";
    assert_int_equal(c2s_saslmsg_scram_first((const unsigned char *)m, strlen(m), &f), 0);
    assert_int_equal(f.cbflag, 'p');
    assert_string_equal(f.cbname, "tls-exporter");
    assert_string_equal(f.authzid, "a=b,c");
    assert_string_equal(f.user, "u,v");
    c2s_saslmsg_scram_first_free(&f);

    static const char *bad[] = {"",
                                "x,,n=u,r=a",
                                "n,,n=,r=a",
                                "n,,n=u",
                                "n,,n=u=2X,r=a",
                                "n,,m=x,n=u,r=a",
                                "n,b=1,n=u,r=a",
                                "n,,n=u,s=a",
                                "p=a b,,n=u,r=a"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(c2s_saslmsg_scram_first((const unsigned char *)bad[i], strlen(bad[i]), &f),
                         ERR_PARSE);
        c2s_saslmsg_scram_first_free(&f);
    }
}

static void test_plain(void **state)
{
    (void)state;
    struct c2s_plain p;
    const unsigned char m[] = "\0alice\0secret";
    assert_int_equal(c2s_saslmsg_plain(m, sizeof(m) - 1, &p), 0);
    assert_int_equal(p.authzid_len, 0);
    assert_int_equal(p.authcid_len, 5);
    assert_memory_equal(p.authcid, "alice", 5);
    assert_int_equal(p.passwd_len, 6);
    assert_memory_equal(p.passwd, "secret", 6);
    const unsigned char z[] = "a@b\0alice\0pw";
    assert_int_equal(c2s_saslmsg_plain(z, sizeof(z) - 1, &p), 0);
    assert_int_equal(p.authzid_len, 3);
    assert_int_equal(c2s_saslmsg_plain((const unsigned char *)"\0\0pw", 4, &p), ERR_PARSE);
    assert_int_equal(c2s_saslmsg_plain((const unsigned char *)"\0a\0", 3, &p), ERR_PARSE);
    assert_int_equal(c2s_saslmsg_plain((const unsigned char *)"\0a\0p\0q", 6, &p), ERR_PARSE);
    assert_int_equal(c2s_saslmsg_plain((const unsigned char *)"alice", 5, &p), ERR_PARSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64),
        cmocka_unit_test(test_scram_first),
        cmocka_unit_test(test_plain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
