/*
 * test_s2s_db.c - dialback keys (XEP-0185: HMAC-SHA256, unambiguous
 * fields, known-answer), the checks on dialback elements from the network,
 * and the static routes file parser.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "common/xml.h"
#include "s2s/s2s.h"

static struct xml_node *parse(const char *s)
{
    char err[128];
    struct xml_node *n = xml_parse_document(s, strlen(s), NULL, err, sizeof(err));
    assert_non_null(n);
    return n;
}

static void test_key(void **state)
{
    unsigned char k[32], k2[32];
    char a[S2S_DB_KEY_HEXLEN + 1], b[S2S_DB_KEY_HEXLEN + 1];
    s2s_db_secret("s3cr3t", 6, k);
    s2s_db_secret("other", 5, k2);
    assert_int_equal(s2s_db_key(k, "b.test", "a.test", "id1", a), 0);
    assert_int_equal(strlen(a), S2S_DB_KEY_HEXLEN);
    assert_int_equal(s2s_db_key(k, "b.test", "a.test", "id1", b), 0);
    assert_string_equal(a, b);
    assert_true(s2s_db_key_equal(a, strlen(a), b));
    /* every field and the secret change the key */
    assert_int_equal(s2s_db_key(k, "a.test", "b.test", "id1", b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(s2s_db_key(k, "b.test", "a.test", "id2", b), 0);
    assert_string_not_equal(a, b);
    assert_int_equal(s2s_db_key(k2, "b.test", "a.test", "id1", b), 0);
    assert_string_not_equal(a, b);
    assert_false(s2s_db_key_equal(a, strlen(a) - 1, a));
    /* a space would make "x y" + "z" the same input as "x" + "y z" */
    assert_int_equal(s2s_db_key(k, "b.test a", "test", "id1", b), ERR_INVAL);
    assert_int_equal(s2s_db_key(k, "b.test", "", "id1", b), ERR_INVAL);
}

/* Known answer: HMAC-SHA256(SHA-256("secret"), "b.test a.test D60000229F"),
 * computed independently with openssl dgst. */
static void test_key_known_answer(void **state)
{
    unsigned char k[32];
    char a[S2S_DB_KEY_HEXLEN + 1];
    s2s_db_secret("secret", 6, k);
    assert_int_equal(s2s_db_key(k, "b.test", "a.test", "D60000229F", a), 0);
    assert_string_equal(a, "f21da6554f933725919b51d394c78ab9229c4608a7523df8a9c6f3b56cfaa636");
}

static void test_parse(void **state)
{
    char f[S2S_DOMAIN_MAX + 1], t[S2S_DOMAIN_MAX + 1];
    struct s2s_db_elem d;
    struct xml_node *n =
        parse("<result xmlns='jabber:server:dialback' from='A.Test.' to='b.test'>abc</result>");
    assert_int_equal(s2s_db_parse(n, &d, f, t), 0);
    assert_false(d.is_verify);
    assert_string_equal(d.from, "a.test");
    assert_string_equal(d.to, "b.test");
    assert_null(d.type);
    assert_int_equal(d.keylen, 3);
    xml_free(n);
    n = parse("<verify xmlns='jabber:server:dialback' from='a.test' to='b.test' id='x1' "
              "type='valid'/>");
    assert_int_equal(s2s_db_parse(n, &d, f, t), 0);
    assert_true(d.is_verify);
    assert_string_equal(d.id, "x1");
    assert_string_equal(d.type, "valid");
    xml_free(n);
    static const char *const bad[] = {
        "<result xmlns='jabber:server:dialback' from='u@a.test' to='b.test'>k</result>",
        "<result xmlns='jabber:server:dialback' from='a.test/r' to='b.test'>k</result>",
        "<result xmlns='jabber:server:dialback' to='b.test'>k</result>",
        "<result xmlns='jabber:server:dialback' from='a.test' to='b.test'></result>",
        "<result xmlns='jabber:server:dialback' from='a.test' to='b.test'>a b</result>",
        "<result xmlns='jabber:server:dialback' from='a.test' to='b.test' type='maybe'/>",
        "<verify xmlns='jabber:server:dialback' from='a.test' to='b.test'>k</verify>",
        "<verify xmlns='jabber:server:dialback' from='a.test' to='b.test' id='a b'>k</verify>",
        "<result xmlns='jabber:server' from='a.test' to='b.test'>k</result>",
        "<other xmlns='jabber:server:dialback' from='a.test' to='b.test'>k</other>",
        "<result xmlns='jabber:server:dialback' from='a.test' to='b.test'>k<x/></result>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        n = parse(bad[i]);
        if (s2s_db_parse(n, &d, f, t) != ERR_INVAL)
            fail_msg("accepted: %s", bad[i]);
        xml_free(n);
    }
}

static void test_routes(void **state)
{
    struct htab *t;
    const char *ok =
        "<routes><route domain='B.test' host='127.0.0.1' port='5299'/>"
        "<route domain='c.test' host='[::1]' port='5270' tls='direct' "
        "pin='sha256:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'/>"
        "</routes>";
    assert_int_equal(s2s_routes_parse("t", ok, strlen(ok), &t), 0);
    assert_int_equal(htab_count(t), 2);
    struct s2s_route *r = htab_get_str(t, "b.test");
    assert_non_null(r);
    assert_string_equal(r->host, "127.0.0.1");
    assert_int_equal(r->port, 5299);
    assert_false(r->has_pin);
    r = htab_get_str(t, "c.test");
    assert_non_null(r);
    assert_true(r->direct_tls);
    assert_true(r->has_pin);
    assert_int_equal(r->pin[1], 0x11);
    htab_free(t);
    static const char *const bad[] = {
        "<routes><route domain='b.test' host='h' port='0'/></routes>",
        "<routes><route domain='b.test' host='h' port='x'/></routes>",
        "<routes><route host='h' port='5269'/></routes>",
        "<routes><route domain='b.test' port='5269'/></routes>",
        "<routes><route domain='b.test' host='h' pin='md5:00'/></routes>",
        "<routes><route domain='b.test' host='h' bogus='1'/></routes>",
        "<routes><route domain='b.test' host='h'/><route domain='B.TEST' host='i'/></routes>",
        "<routes><road domain='b.test' host='h'/></routes>",
        "<paths/>",
        "<routes>",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (s2s_routes_parse("t", bad[i], strlen(bad[i]), &t) == 0)
            fail_msg("accepted: %s", bad[i]);
    }
}

int main(void)
{
    log_init("test_s2s_db", 0, LOG_LVL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key),
        cmocka_unit_test(test_key_known_answer),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
