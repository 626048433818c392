/*
 * test_jid.c - JID parse/prep/compare and the JID cache: the RFC 7622 §3.5
 * examples, case folding, trailing dot, IDN label forms, IP literals,
 * length limits, empty parts, prohibited characters, bare/full compare,
 * and the segmented LRU cache (hits, eviction order, flood resistance).
 * jid_check must agree with jid_parse on every input given to either.
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
#include "common/jid.h"
#include "common/mem.h"

/* Parse s and check its prepped parts (NULL for absent). */
static void expect_jid(const char *s, const char *node, const char *domain, const char *resource)
{
    int err = 1;
    struct jid *j = jid_new(s, &err);
    if (j == NULL)
        fail_msg("'%s' refused (%d), expected valid", s, err);
    assert_int_equal(err, 0);
    assert_int_equal(jid_check(s, strlen(s)), 0);
    if (node == NULL)
        assert_null(j->node);
    else
        assert_string_equal(j->node, node);
    assert_string_equal(j->domain, domain);
    if (resource == NULL)
        assert_null(j->resource);
    else
        assert_string_equal(j->resource, resource);
    jid_free(j);
}

static void expect_err(const char *s, int code)
{
    struct jid *j = (struct jid *)1;
    int rc = jid_parse(s, strlen(s), &j);
    if (rc != code)
        fail_msg("'%s': got %d, expected %d", s, rc, code);
    assert_null(j);
    rc = jid_check(s, strlen(s));
    if (rc != code)
        fail_msg("'%s': jid_check got %d, expected %d", s, rc, code);
}

/* Parse s and return its full string in a static buffer. */
static const char *full_of(const char *s)
{
    static char buf[JID_FULL_MAX + 1];
    struct jid *j = jid_new(s, NULL);
    if (j == NULL)
        fail_msg("'%s' refused, expected valid", s);
    snprintf(buf, sizeof(buf), "%s", jid_full_str(j));
    jid_free(j);
    return buf;
}

/* RFC 7622 §3.5, examples 1 to 15: all valid. */
static void test_rfc7622_valid(void **state)
{
    expect_jid("juliet@example.com", "juliet", "example.com", NULL);              /* 1 */
    expect_jid("juliet@example.com/foo", "juliet", "example.com", "foo");         /* 2 */
    expect_jid("juliet@example.com/foo bar", "juliet", "example.com", "foo bar"); /* 3 */
    expect_jid("juliet@example.com/foo@bar", "juliet", "example.com", "foo@bar"); /* 4 */
    expect_jid("foo\\20bar@example.com", "foo\\20bar", "example.com", NULL);      /* 5 */
    expect_jid("fussball@example.com", "fussball", "example.com", NULL);          /* 6 */
    /* 7: valid, but Nodeprep case-folds U+00DF to "ss" where PRECIS keeps
     * it, so here it is the same JID as example 6. */
    expect_jid("fu\xc3\x9f"
               "ball@example.com",
               "fussball", "example.com", NULL);
    expect_jid("\xcf\x80@example.com", "\xcf\x80", "example.com", NULL); /* 8: pi */
    /* 9-11: capital, small and final sigma; all fold to small sigma under
     * Nodeprep (PRECIS keeps final sigma apart). */
    expect_jid("\xce\xa3@example.com/foo", "\xcf\x83", "example.com", "foo");
    expect_jid("\xcf\x83@example.com/foo", "\xcf\x83", "example.com", "foo");
    expect_jid("\xcf\x82@example.com/foo", "\xcf\x83", "example.com", "foo");
    expect_jid("king@example.com/\xe2\x99\x9a", "king", "example.com", "\xe2\x99\x9a"); /* 12 */
    expect_jid("example.com", NULL, "example.com", NULL);                               /* 13 */
    expect_jid("example.com/foobar", NULL, "example.com", "foobar");                    /* 14 */
    expect_jid("a.example.com/b@example.net", NULL, "a.example.com", "b@example.net");  /* 15 */
}

/* RFC 7622 §3.5, the invalid examples stringprep refuses too. */
static void test_rfc7622_invalid(void **state)
{
    expect_err("\"juliet\"@example.com", ERR_INVAL); /* 16: quotation marks in node */
    expect_err("foo bar@example.com", ERR_INVAL);    /* 17: space in node */
    expect_err("@example.com/", ERR_INVAL);          /* 19: empty node and resource */
    expect_err("juliet@", ERR_INVAL);                /* 22: node without domain */
}

/* Example 18 (<juliet@example.com/ foo>, leading space in the resource) was
 * withdrawn by verified erratum 4560: OpaqueString allows it, and so does
 * Resourceprep. We follow the erratum. */
static void test_rfc7622_example18_erratum(void **state)
{
    expect_jid("juliet@example.com/ foo", "juliet", "example.com", " foo");
}

static void test_rfc7622_example20_skipped(void **state)
{
    /* Example 20 <henry\u2163@example.com> (ROMAN NUMERAL FOUR in the node)
     * is invalid under PRECIS IdentifierClass, which disallows compatibility
     * characters; Nodeprep instead maps it by NFKC to "iv" and accepts
     * "henryiv". Stringprep cannot express this refusal. */
    skip();
}

static void test_rfc7622_example21_skipped(void **state)
{
    /* Example 21 <\u265A@example.com> (BLACK CHESS KING as the node) is
     * invalid under PRECIS IdentifierClass (symbols are FreeformClass
     * only); Nodeprep does not prohibit symbols and accepts it. Stringprep
     * cannot express this refusal. */
    skip();
}

static void test_case_folding(void **state)
{
    expect_jid("JULIET@EXAMPLE.COM/Balcony", "juliet", "example.com", "Balcony");
    assert_string_equal(full_of("JuLiEt@Example.Com/BaLcOnY"), "juliet@example.com/BaLcOnY");
    struct jid *a = jid_new("Juliet@Example.com/Balcony", NULL);
    struct jid *b = jid_new("juliet@example.com/Balcony", NULL);
    struct jid *c = jid_new("juliet@example.com/balcony", NULL);
    assert_true(jid_eq_full(a, b));
    assert_false(jid_eq_full(a, c)); /* resources keep their case */
    assert_true(jid_eq_bare(a, c));
    jid_free(a);
    jid_free(b);
    jid_free(c);
}

static void test_trailing_dot(void **state)
{
    struct jid *a = jid_new("example.com", NULL);
    struct jid *b = jid_new("EXAMPLE.com", NULL);
    struct jid *c = jid_new("example.com.", NULL);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_true(jid_eq_full(a, b));
    assert_true(jid_eq_full(a, c));
    assert_string_equal(c->domain, "example.com");
    jid_free(a);
    jid_free(b);
    jid_free(c);
    assert_string_equal(full_of("User@Example.COM./r"), "user@example.com/r");
    expect_err("example.com..", ERR_INVAL);
    expect_err(".", ERR_INVAL);
    expect_err("user@.", ERR_INVAL);
    expect_err(".example.com", ERR_INVAL);
    expect_err("a..example.com", ERR_INVAL);
    expect_err("a.xn--bcher-kva..", ERR_INVAL);
    expect_err("xn--bcher-kva..example", ERR_INVAL);
}

static void test_idn_domain(void **state)
{
    const char *forms[] = {
        "b\xc3\xbc"
        "cher.example",
        "B\xc3\x9c"
        "CHER.example",
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.EXAMPLE.",
        "user@b\xc3\xbc"
        "cher.example/r",
    };
    struct jid *ref = jid_new(forms[0], NULL);
    assert_non_null(ref);
    assert_string_equal(ref->domain, "b\xc3\xbc"
                                     "cher.example");
    for (size_t i = 1; i < sizeof(forms) / sizeof(forms[0]); i++) {
        struct jid *j = jid_new(forms[i], NULL);
        if (j == NULL)
            fail_msg("'%s' refused", forms[i]);
        assert_string_equal(j->domain, ref->domain);
        jid_free(j);
    }
    jid_free(ref);
    /* The IDNA label separators other than '.' split labels too. */
    expect_jid("a@example\xe3\x80\x82"
               "com",
               "a", "example.com", NULL);
    /* An A-label that decodes to "a\u3002b" (IDEOGRAPHIC FULL STOP inside a
     * label) would read as two labels when parsed again: refused. */
    expect_err("xn--ab-r13a.example", ERR_INVAL);
    /* A bogus A-label that decodes to nothing valid stays an ASCII label. */
    expect_jid("xn--ab-yu3n.example", NULL, "xn--ab-yu3n.example", NULL);
    /* A domain name is letters, digits and hyphens (STD3). */
    expect_err("exa mple.com", ERR_INVAL);
    expect_err("a_b.example", ERR_INVAL);
    expect_err("-a.example", ERR_INVAL);
    expect_err("a@b@example.com", ERR_INVAL);
    /* Labels are at most 63 octets. */
    char label[80];
    memset(label, 'a', 64);
    memcpy(label + 64, ".com", 5);
    expect_err(label, ERR_INVAL);
    label[63] = '.';
    memcpy(label + 64, "com", 4);
    expect_jid(label, NULL, label, NULL);
}

static void test_ip_literals(void **state)
{
    expect_jid("[::1]", NULL, "[::1]", NULL);
    expect_jid("user@[2001:db8::1]/r", "user", "[2001:db8::1]", "r");
    /* One spelling per address. */
    expect_jid("[0:0:0:0:0:0:0:1]", NULL, "[::1]", NULL);
    expect_jid("[2001:DB8::1]", NULL, "[2001:db8::1]", NULL);
    expect_jid("[::ffff:192.0.2.1]", NULL, "[::ffff:192.0.2.1]", NULL);
    expect_jid("192.0.2.1", NULL, "192.0.2.1", NULL);
    expect_jid("user@192.0.2.1/r", "user", "192.0.2.1", "r");
    expect_err("[::1", ERR_INVAL);
    expect_err("[]", ERR_INVAL);
    expect_err("[", ERR_INVAL);
    expect_err("[::g]", ERR_INVAL);
    expect_err("[fe80::1%eth0]", ERR_INVAL);
    expect_err("[192.0.2.1]", ERR_INVAL);
    expect_err("[::1].", ERR_INVAL);
    expect_err("[v1.x]", ERR_INVAL);
}

/* A string of n octets of c. */
static char *rep(char c, size_t n)
{
    char *s = xmalloc(n + 1);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* A valid domain name of exactly n octets (labels of up to 50). */
static char *domain_of(size_t n)
{
    char *s = rep('d', n);
    for (size_t i = 50; i + 1 < n; i += 51)
        s[i] = '.';
    return s;
}

static void test_limits(void **state)
{
    char *n1023 = rep('n', 1023), *n1024 = rep('n', 1024);
    char *r1023 = rep('R', 1023), *r1024 = rep('R', 1024);
    char *d1023 = domain_of(1023), *d1024 = domain_of(1024);
    char buf[JID_INPUT_MAX + 16];
    struct jid *j;

    snprintf(buf, sizeof(buf), "%s@example.com", n1023);
    expect_jid(buf, n1023, "example.com", NULL);
    snprintf(buf, sizeof(buf), "%s@example.com", n1024);
    expect_err(buf, ERR_LIMIT);
    snprintf(buf, sizeof(buf), "example.com/%s", r1023);
    expect_jid(buf, NULL, "example.com", r1023);
    snprintf(buf, sizeof(buf), "example.com/%s", r1024);
    expect_err(buf, ERR_LIMIT);
    expect_jid(d1023, NULL, d1023, NULL);
    expect_err(d1024, ERR_LIMIT);
    /* The limit applies after prep: a removed trailing dot does not count. */
    snprintf(buf, sizeof(buf), "%s.", d1023);
    expect_jid(buf, NULL, d1023, NULL);

    /* The longest JID: three full parts. */
    snprintf(buf, sizeof(buf), "%s@%s/%s", n1023, d1023, r1023);
    assert_int_equal(strlen(buf), JID_FULL_MAX);
    assert_int_equal(jid_parse(buf, strlen(buf), &j), 0);
    assert_int_equal(j->full_len, JID_FULL_MAX);
    assert_int_equal(strlen(jid_full_str(j)), 3071);
    assert_int_equal(j->bare_len, 2047);
    jid_free(j);

    /* Over JID_INPUT_MAX, refused before any prep. */
    char *huge = rep('a', JID_INPUT_MAX + 1);
    expect_err(huge, ERR_LIMIT);
    char *out = (char *)1;
    assert_int_equal(jid_prep_resource(huge, strlen(huge), &out, NULL), ERR_LIMIT);
    assert_null(out);
    assert_int_equal(jid_prep_node(n1024, 1024, &out, NULL), ERR_LIMIT);
    assert_int_equal(jid_prep_domain(d1024, 1024, &out, NULL), ERR_LIMIT);
    free(huge);

    free(n1023);
    free(n1024);
    free(r1023);
    free(r1024);
    free(d1023);
    free(d1024);
}

static void test_empty_parts(void **state)
{
    const char *bad[] = {"",
                         "@",
                         "/",
                         "@/",
                         "@example.com",
                         "user@",
                         "user@/",
                         "/r",
                         "example.com/",
                         "user@example.com/",
                         "user@/res",
                         "@/res",
                         "@@x",
                         "\xc2\xad@example.com"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_err(bad[i], ERR_INVAL);
    struct jid *j = (struct jid *)1;
    assert_int_equal(jid_from_parts("", "example.com", NULL, &j), ERR_INVAL);
    assert_null(j);
    assert_int_equal(jid_from_parts(NULL, "example.com", "", &j), ERR_INVAL);
    char *out;
    assert_int_equal(jid_prep_domain("", 0, &out, NULL), ERR_INVAL);
    /* A part that preps to nothing (a soft hyphen is mapped to nothing) is
     * as empty as one that was. */
    assert_int_equal(jid_prep_node("\xc2\xad", 2, &out, NULL), ERR_INVAL);
}

static void test_node_prohibited(void **state)
{
    const char prohibited[] = "\"&'/:<>@ ";
    char node[8], s[64];
    char *out;
    struct jid *j;

    for (size_t i = 0; prohibited[i] != '\0'; i++) {
        snprintf(node, sizeof(node), "a%cb", prohibited[i]);
        out = (char *)1;
        if (jid_prep_node(node, strlen(node), &out, NULL) != ERR_INVAL)
            fail_msg("node '%s' accepted", node);
        assert_null(out);
        if (jid_from_parts(node, "example.com", NULL, &j) != ERR_INVAL)
            fail_msg("node '%s' accepted by jid_from_parts", node);
        /* '/' and '@' split the string before the node is looked at. */
        if (prohibited[i] != '/' && prohibited[i] != '@') {
            snprintf(s, sizeof(s), "%s@example.com", node);
            expect_err(s, ERR_INVAL);
        }
    }
    /* Controls anywhere, NUL, and bad UTF-8 are refused. */
    expect_err("a\tb@example.com", ERR_INVAL);
    expect_err("example.com/a\x01"
               "b",
               ERR_INVAL);
    expect_err("example.com/a\x7f", ERR_INVAL);
    assert_int_equal(jid_parse("a@example.com\0/x", 16, &j), ERR_INVAL);
    expect_err("a\xc3@example.com", ERR_INVAL);
    expect_err("example.com/\xed\xa0\x80", ERR_INVAL); /* a surrogate */
    expect_err("example.com/\xc0\xaf", ERR_INVAL);     /* overlong '/' */
    expect_err("example.com/\xf4\x90\x80\x80", ERR_INVAL);
    /* The node's neighbours are fine in a resource. */
    expect_jid("example.com/\"&'/:<>@ ", NULL, "example.com", "\"&'/:<>@ ");
}

static void test_split_rules(void **state)
{
    expect_jid("a@b.example/c@d/e", "a", "b.example", "c@d/e");
    expect_jid("a.example/b@c.example", NULL, "a.example", "b@c.example");
    expect_jid("a/b", NULL, "a", "b");
    expect_jid("a@b", "a", "b", NULL);
    expect_err("a@b@c.example", ERR_INVAL);
}

static void test_bare_full(void **state)
{
    struct jid *full = jid_new("Romeo@Example.net/Orchard", NULL);
    struct jid *other = jid_new("romeo@example.net/garden", NULL);
    struct jid *bare, *b2, *w;

    assert_non_null(full);
    assert_non_null(other);
    assert_string_equal(jid_full_str(full), "romeo@example.net/Orchard");
    assert_string_equal(jid_bare_str(full), "romeo@example.net");
    assert_false(jid_eq_full(full, other));
    assert_true(jid_eq_bare(full, other));

    bare = jid_bare(full);
    assert_null(bare->resource);
    assert_string_equal(jid_full_str(bare), "romeo@example.net");
    assert_true(jid_eq_bare(bare, full));
    assert_false(jid_eq_full(bare, full));
    b2 = jid_bare(bare);
    assert_ptr_equal(b2, bare); /* already bare: another reference */
    assert_int_equal(bare->refs, 2);
    jid_free(b2);

    assert_int_equal(jid_with_resource(bare, "Orchard", 7, &w), 0);
    assert_true(jid_eq_full(w, full));
    jid_free(w);
    assert_int_equal(jid_with_resource(bare, "a\x01", 2, &w), ERR_INVAL);
    assert_null(w);

    assert_int_equal(jid_from_parts("ROMEO", "EXAMPLE.net.", "Orchard", &w), 0);
    assert_true(jid_eq_full(w, full));
    jid_free(w);
    assert_int_equal(jid_from_parts(NULL, "example.net", NULL, &w), 0);
    assert_string_equal(jid_full_str(w), "example.net");
    assert_string_equal(jid_bare_str(w), "example.net");
    assert_false(jid_eq_bare(w, full));
    jid_free(w);

    struct jid *d = jid_dup(full);
    assert_ptr_equal(d, full);
    jid_free(d);
    jid_free(full);
    jid_free(other);
    jid_free(bare);
    jid_free(NULL);

    int err = 0;
    assert_null(jid_new("user@", &err));
    assert_int_equal(err, ERR_INVAL);
    assert_null(jid_new("user@", NULL));
}

static void test_prep_helpers(void **state)
{
    char *out;
    size_t len;
    assert_int_equal(jid_prep_node("JuLiEt", 6, &out, &len), 0);
    assert_string_equal(out, "juliet");
    assert_int_equal(len, 6);
    free(out);
    assert_int_equal(jid_prep_resource("JuLiEt", 6, &out, &len), 0);
    assert_string_equal(out, "JuLiEt");
    free(out);
    /* Only len bytes are read. */
    assert_int_equal(jid_prep_domain("XN--BCHER-KVA.example/junk", 21, &out, &len), 0);
    assert_string_equal(out, "b\xc3\xbc"
                             "cher.example");
    assert_int_equal(len, 15);
    free(out);
    /* NFKC: a fullwidth 'A' in a resource is an 'A'. */
    assert_int_equal(jid_prep_resource("\xef\xbc\xa1", 3, &out, NULL), 0);
    assert_string_equal(out, "A");
    free(out);
}

typedef int (*prep_fn)(const char *, size_t, char **, size_t *);

/* ASCII parts take a fast path that does not call libidn. Prefixing a SOFT
 * HYPHEN (which every profile maps to nothing) sends the same string
 * through libidn: both must give the same answer. */
static void same_as_libidn(prep_fn prep, const char *x, size_t n)
{
    char slow[16];
    char *a = NULL, *b = NULL;
    size_t al = 0, bl = 0;

    assert_true(n + 3 <= sizeof(slow));
    memcpy(slow, "\xc2\xad", 2);
    memcpy(slow + 2, x, n);
    int ra = prep(x, n, &a, &al);
    int rb = prep(slow, n + 2, &b, &bl);
    if (ra != rb || al != bl || (ra == 0 && memcmp(a, b, al) != 0))
        fail_msg("'%.*s': fast path %d '%s', libidn %d '%s'", (int)n, x, ra, a ? a : "", rb,
                 b ? b : "");
    free(a);
    free(b);
}

static void test_ascii_fast_path(void **state)
{
    prep_fn preps[] = {jid_prep_node, jid_prep_resource, jid_prep_domain};
    const char alpha[] = "aZ0-._ @/\"\t\x7f";
    char x[8];

    for (size_t p = 0; p < 3; p++) {
        /* Every ASCII character alone and in pairs. */
        for (int c = 1; c < 128; c++) {
            x[0] = (char)c;
            if (c != '[')
                same_as_libidn(preps[p], x, 1);
            for (int d = 1; d < 128; d++) {
                x[1] = (char)d;
                if (c != '[')
                    same_as_libidn(preps[p], x, 2);
            }
        }
        /* All strings of up to four from a small alphabet. */
        size_t na = sizeof(alpha) - 1;
        for (size_t i = 0; i < na * na * na * na; i++) {
            size_t k = i;
            for (int m = 0; m < 4; m++, k /= na)
                x[m] = alpha[k % na];
            same_as_libidn(preps[p], x, 3);
            same_as_libidn(preps[p], x, 4);
        }
    }
    const char *domains[] = {"a-b.example", "-ab.example", "ab-.example", "A.B.C.",   "a..b",
                             "..",          "1.2.3.4",     "01.2.3.4",    "1.2.3.4.", "abc."};
    for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++)
        same_as_libidn(jid_prep_domain, domains[i], strlen(domains[i]));
}

/* jid_check(s) == jid_parse(s), and the right code. */
static void check_agrees(const char *s, size_t len)
{
    struct jid *j;
    int rc = jid_parse(s, len, &j);
    jid_free(j);
    int crc = jid_check(s, len);
    if (rc != crc)
        fail_msg("'%.*s' (%zu bytes): jid_check %d, jid_parse %d", (int)len, s, len, crc, rc);
}

static void test_check(void **state)
{
    static char big[JID_INPUT_MAX + 8];
    const char *cases[] = {"juliet@example.com/balcony",
                           "JULIET@Example.COM./Balcony",
                           "example.com",
                           "a@b",
                           "@example.com",
                           "juliet@",
                           "juliet@example.com/",
                           "/r",
                           "a@b@c",
                           "a/b@c",
                           "a@b/c@d/e",
                           "jul iet@example.com",
                           "juliet@exa_mple.com",
                           "juliet@-example.com",
                           "juliet@example-.com",
                           "juliet@example..com",
                           "juliet@.example.com",
                           "juliet@.",
                           "juliet@example.com..",
                           "juliet@xn--bcher-kva.example",
                           "juliet@XN--bcher-kva.example",
                           "juliet@xn--.example",
                           "juliet@bad_.xn--bcher-kva.example",
                           "juliet@xn--bcher-kva.bad_",
                           "juliet@b\xc3\xbc"
                           "cher.example",
                           "j\xc3\xbcliet@example.com",
                           "juliet@example.com/\xe2\x99\x9a",
                           "juliet@example.com/a\x01"
                           "b",
                           "j\x01@example.com",
                           "juliet@example.com/a b",
                           "juliet@[::1]/r",
                           "juliet@[0:0::1]",
                           "juliet@[::1",
                           "juliet@1.2.3.4",
                           "juliet@1.2.3.4.",
                           "juliet@01.2.3.4",
                           "juliet@1.2.3",
                           "juliet@1..2",
                           "\xc3\x28@example.com",
                           "juliet@example.com/\xed\xa0\x80"};
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_agrees(cases[i], strlen(cases[i]));
    check_agrees("a\0b@example.com", 15);
    check_agrees("ab@exa\0mple.com", 15);
    check_agrees("ab@example.com/\0", 16);
    assert_int_equal(jid_check("juliet@example.com/balcony", 26), 0);
    assert_int_equal(jid_check("juliet@exa_mple.com", 19), ERR_INVAL);

    /* The limits: a part of JID_PART_MAX and one more, a label of 63 and
     * 64, the whole input at JID_INPUT_MAX and one more. */
    size_t lens[] = {
        62, 63, 64, JID_PART_MAX - 1, JID_PART_MAX, JID_PART_MAX + 1, JID_PART_MAX + 2};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        size_t n = lens[i];
        memset(big, 'a', n);
        memcpy(big + n, "@example.com/r", 14);
        check_agrees(big, n + 14); /* node */
        memcpy(big, "a@", 2);
        memset(big + 2, 'b', n);
        check_agrees(big, n + 2); /* one label */
        for (size_t k = 2 + 60; k < n + 2; k += 61)
            big[k] = '.';
        check_agrees(big, n + 2); /* labels of 60, the domain n long */
        big[n + 2] = '.';
        check_agrees(big, n + 3); /* and a final dot */
        memcpy(big, "a@b/", 4);
        memset(big + 4, 'c', n);
        check_agrees(big, n + 4); /* resource */
    }
    memset(big, 'a', sizeof(big));
    memcpy(big, "a@b/", 4);
    check_agrees(big, JID_INPUT_MAX);
    check_agrees(big, JID_INPUT_MAX + 1);
    assert_int_equal(jid_check(big, JID_INPUT_MAX + 1), ERR_LIMIT);

    /* All strings of up to five from an alphabet of separators, label
     * characters, case, the ACE prefix and refused characters. */
    const char alpha[] = "aX0n-.@/[: \x01";
    size_t na = sizeof(alpha) - 1;
    char x[5];
    for (size_t len = 1, total = na; len <= 5; len++, total *= na) {
        for (size_t i = 0; i < total; i++) {
            size_t k = i;
            for (size_t m = 0; m < len; m++, k /= na)
                x[m] = alpha[k % na];
            check_agrees(x, len);
        }
    }
}

/* ---- the cache ---- */

static int cprep(struct jid_cache *c, const char *s, struct jid **out)
{
    return jid_cache_prep(c, s, strlen(s), out);
}

static struct jid_cache_stats stats_of(struct jid_cache *c)
{
    struct jid_cache_stats st;
    jid_cache_stats(c, &st);
    return st;
}

/* Prep s through the cache and say whether it was a hit. */
static int was_hit(struct jid_cache *c, const char *s)
{
    struct jid *j;
    uint64_t before = stats_of(c).hits;
    if (cprep(c, s, &j) != 0)
        fail_msg("'%s' refused", s);
    jid_free(j);
    return stats_of(c).hits == before + 1;
}

static void test_cache_hit(void **state)
{
    struct jid_cache *c = jid_cache_new(16);
    struct jid *a, *b, *x = (struct jid *)1;
    struct jid_cache_stats st;

    assert_int_equal(cprep(c, "Juliet@Example.com/Balcony", &a), 0);
    assert_int_equal(cprep(c, "Juliet@Example.com/Balcony", &b), 0);
    assert_ptr_equal(a, b); /* the one shared JID */
    assert_string_equal(jid_full_str(a), "juliet@example.com/Balcony");
    assert_int_equal(a->refs, 3); /* two callers and the cache */
    jid_free(b);

    /* Refusals: the same codes as jid_parse, and nothing stored. */
    assert_int_equal(cprep(c, "@example.com", &x), ERR_INVAL);
    assert_null(x);
    assert_int_equal(cprep(c, "@example.com", &x), ERR_INVAL);
    char *huge = rep('a', JID_INPUT_MAX + 1);
    assert_int_equal(cprep(c, huge, &x), ERR_LIMIT);
    free(huge);

    st = stats_of(c);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.invalid, 3);
    assert_int_equal(st.evictions, 0);
    assert_int_equal(st.count, 1);
    assert_int_equal(st.capacity, 16);

    /* A different raw spelling is a different key (same JID). */
    assert_int_equal(cprep(c, "juliet@example.com/Balcony", &b), 0);
    assert_ptr_not_equal(a, b);
    assert_true(jid_eq_full(a, b));
    jid_free(b);
    jid_cache_free(c);
    /* The caller's reference outlives the cache. */
    assert_string_equal(jid_bare_str(a), "juliet@example.com");
    jid_free(a);
    jid_cache_free(NULL);
}

static void test_cache_lru_order(void **state)
{
    /* Capacity 3: protected segment 2, so up to 3 entries in probation. */
    struct jid_cache *c = jid_cache_new(3);
    struct jid *held;

    assert_int_equal(cprep(c, "a@x.example", &held), 0);
    assert_false(was_hit(c, "b@x.example"));
    assert_false(was_hit(c, "c@x.example"));
    assert_int_equal(stats_of(c).count, 3);
    /* Full: d evicts the least recently used, a. */
    assert_false(was_hit(c, "d@x.example"));
    assert_int_equal(stats_of(c).evictions, 1);
    assert_int_equal(stats_of(c).count, 3);
    /* The evicted JID stays valid for its holder. */
    assert_string_equal(jid_full_str(held), "a@x.example");
    jid_free(held);
    /* b, c, d are in (b the oldest); a hit on b protects it. */
    assert_true(was_hit(c, "b@x.example"));
    /* a again: a miss, evicting c (the oldest in probation; b is protected). */
    assert_false(was_hit(c, "a@x.example"));
    assert_true(was_hit(c, "b@x.example"));
    assert_true(was_hit(c, "d@x.example"));  /* d protected too */
    assert_true(was_hit(c, "a@x.example"));  /* a protected, b goes back */
    assert_false(was_hit(c, "c@x.example")); /* evicts b: LRU of probation */
    assert_true(was_hit(c, "a@x.example"));
    assert_true(was_hit(c, "d@x.example"));
    assert_false(was_hit(c, "b@x.example"));
    assert_int_equal(stats_of(c).evictions, 4);
    assert_int_equal(stats_of(c).count, 3);
    jid_cache_free(c);
}

static void test_cache_flood(void **state)
{
    /* JIDs in use survive a flood of JIDs seen once each. */
    struct jid_cache *c = jid_cache_new(10);
    char s[64];

    for (int i = 0; i < 8; i++) {
        snprintf(s, sizeof(s), "hot%d@example.com", i);
        assert_false(was_hit(c, s));
        assert_true(was_hit(c, s));
    }
    for (int i = 0; i < 1000; i++) {
        snprintf(s, sizeof(s), "cold%d@example.com/r", i);
        assert_false(was_hit(c, s));
    }
    for (int i = 0; i < 8; i++) {
        snprintf(s, sizeof(s), "hot%d@example.com", i);
        assert_true(was_hit(c, s));
    }
    /* The newest cold ones are still in probation, older ones gone. */
    assert_true(was_hit(c, "cold999@example.com/r"));
    assert_false(was_hit(c, "cold0@example.com/r"));
    assert_int_equal(stats_of(c).count, 10);
    jid_cache_free(c);
}

/* Long distinct JIDs cannot make the cache's memory grow past its byte
 * budget, and inputs over JID_CACHE_KEY_MAX are not cached at all. */
static void test_cache_bytes_bounded(void **state)
{
    struct jid_cache *c = jid_cache_new(65536);
    struct jid_cache_stats st = stats_of(c);
    assert_int_equal(st.max_bytes, (size_t)65536 * JID_CACHE_ENTRY_BYTES);
    jid_cache_set_max_bytes(c, 64 * 1024);
    char s[JID_INPUT_MAX];
    struct jid *j;
    /* Just under the key limit: cached, but within the budget. */
    for (int i = 0; i < 2000; i++) {
        int n = snprintf(s, sizeof(s), "%d", i);
        memset(s + n, 'n', 100 - n);
        memcpy(s + 100, "@example.com/", 13);
        memset(s + 113, 'r', JID_CACHE_KEY_MAX - 113);
        assert_int_equal(jid_cache_prep(c, s, JID_CACHE_KEY_MAX, &j), 0);
        jid_free(j);
        st = stats_of(c);
        assert_true(st.bytes <= 64 * 1024);
    }
    st = stats_of(c);
    assert_true(st.count > 10);
    assert_true(st.count < 2000);
    assert_true(st.evictions > 0);
    /* Over the key limit: prepped, never kept. */
    size_t before = st.count;
    for (int i = 0; i < 100; i++) {
        int n = snprintf(s, sizeof(s), "%d", i);
        memset(s + n, 'n', 1000 - n);
        memcpy(s + 1000, "@example.com/", 13);
        memset(s + 1013, 'r', 1000);
        assert_int_equal(jid_cache_prep(c, s, 2013, &j), 0);
        assert_int_equal(j->full_len, 2013);
        jid_free(j);
    }
    st = stats_of(c);
    assert_int_equal(st.count, before);
    assert_int_equal(st.misses, 2100);
    /* Lowering the budget evicts at once; everything gone, bytes to 0. */
    jid_cache_set_max_bytes(c, 1000);
    st = stats_of(c);
    assert_true(st.bytes <= 1000);
    jid_cache_set_max_bytes(c, 0);
    st = stats_of(c);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.count, 0);
    assert_int_equal(cprep(c, "a@example.com", &j), 0);
    jid_free(j);
    assert_int_equal(stats_of(c).count, 0);
    jid_cache_free(c);
}

static void test_cache_zero_capacity(void **state)
{
    struct jid_cache *c = jid_cache_new(0);
    struct jid *a, *b;
    assert_int_equal(cprep(c, "a@example.com", &a), 0);
    assert_int_equal(cprep(c, "a@example.com", &b), 0);
    assert_ptr_not_equal(a, b);
    assert_true(jid_eq_full(a, b));
    assert_int_equal(a->refs, 1);
    assert_int_equal(stats_of(c).misses, 2);
    assert_int_equal(stats_of(c).count, 0);
    jid_free(a);
    jid_free(b);
    jid_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7622_valid),
        cmocka_unit_test(test_rfc7622_invalid),
        cmocka_unit_test(test_rfc7622_example18_erratum),
        cmocka_unit_test(test_rfc7622_example20_skipped),
        cmocka_unit_test(test_rfc7622_example21_skipped),
        cmocka_unit_test(test_case_folding),
        cmocka_unit_test(test_trailing_dot),
        cmocka_unit_test(test_idn_domain),
        cmocka_unit_test(test_ip_literals),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_empty_parts),
        cmocka_unit_test(test_node_prohibited),
        cmocka_unit_test(test_split_rules),
        cmocka_unit_test(test_bare_full),
        cmocka_unit_test(test_prep_helpers),
        cmocka_unit_test(test_ascii_fast_path),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_cache_hit),
        cmocka_unit_test(test_cache_lru_order),
        cmocka_unit_test(test_cache_flood),
        cmocka_unit_test(test_cache_bytes_bounded),
        cmocka_unit_test(test_cache_zero_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
