/*
 * test_router_users.c - the router's component table: valid entries, and
 * every rule that makes a table invalid (missing secret, unknown attributes
 * and elements, flags an external component cannot have, bad uids and
 * domains, duplicates); secrets from files; what a reload compares.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "router/users.h"
#include "tests/unit/tmpdir.h"

static int parse(const char *text, struct users **out)
{
    char err[512] = "";
    return users_parse("/etc/parley/router-users.xml", text, strlen(text), out, err, sizeof(err));
}

static void test_valid(void **state)
{
    struct users *u;
    assert_int_equal(parse("<components>"
                           " <component name='sm' internal='true' multi='true' uid='1001'>"
                           "  <secret> s3cret </secret>"
                           "  <domain>Example.COM</domain><domain>other.example</domain>"
                           " </component>"
                           " <component name='S2S' internal='yes' default-route='true'>"
                           "  <secret>x</secret></component>"
                           " <component name='muc.example.com'><secret>m</secret></component>"
                           "</components>",
                           &u),
                     0);
    assert_int_equal(users_count(u), 3);
    const struct users_entry *e = users_find(u, "sm");
    assert_non_null(e);
    assert_true(e->internal);
    assert_true(e->multi);
    assert_false(e->default_route);
    assert_true(e->has_uid);
    assert_int_equal(e->uid, 1001);
    assert_string_equal(e->secret, "s3cret");
    assert_int_equal(e->secret_len, 6);
    assert_int_equal(e->ndomains, 2);
    assert_true(users_has_domain(e, "example.com"));
    assert_true(users_has_domain(e, "other.example"));
    assert_false(users_has_domain(e, "sm"));
    /* names are prepped like domains */
    e = users_find(u, "s2s");
    assert_non_null(e);
    assert_true(e->default_route);
    assert_false(e->has_uid);
    e = users_find(u, "muc.example.com");
    assert_non_null(e);
    assert_false(e->internal);
    assert_ptr_equal(users_at(u, 2), e);
    assert_null(users_at(u, 3));
    assert_null(users_find(u, "nobody"));
    users_free(u);
    users_free(NULL);
}

static void test_empty_table(void **state)
{
    struct users *u;
    assert_int_equal(parse("<components/>", &u), 0);
    assert_int_equal(users_count(u), 0);
    users_free(u);
}

static void expect_invalid(const char *text)
{
    struct users *u = (struct users *)&u;
    char err[512] = "";
    int rc = users_parse("/etc/parley/router-users.xml", text, strlen(text), &u, err, sizeof(err));
    if (rc == 0)
        fail_msg("accepted: %s", text);
    assert_non_null(strstr(err, "router-users.xml"));
    assert_null(u);
}

static void test_invalid(void **state)
{
    /* no default secret anywhere */
    expect_invalid("<components><component name='sm'/></components>");
    expect_invalid("<components><component name='sm'><secret></secret></component></components>");
    expect_invalid("<components><component><secret>x</secret></component></components>");
    /* unknown attributes and elements are errors, not warnings */
    expect_invalid("<components><component name='sm' internl='true'><secret>x</secret>"
                   "</component></components>");
    expect_invalid("<components><component name='sm'><secret>x</secret><domian>a</domian>"
                   "</component></components>");
    expect_invalid("<components><compnent name='sm'><secret>x</secret></compnent></components>");
    expect_invalid("<components><component name='sm'><secret>x</secret>"
                   "<domain kind='x'>a.example</domain></component></components>");
    /* two secrets */
    expect_invalid("<components><component name='sm'><secret>x</secret><secret>y</secret>"
                   "</component></components>");
    /* flags for internal components only */
    expect_invalid("<components><component name='m' multi='true'><secret>x</secret>"
                   "</component></components>");
    expect_invalid("<components><component name='m' default-route='true'><secret>x</secret>"
                   "</component></components>");
    expect_invalid("<components><component name='m' uid='5'><secret>x</secret>"
                   "</component></components>");
    /* uids */
    expect_invalid("<components><component name='m' internal='true' uid='root'>"
                   "<secret>x</secret></component></components>");
    expect_invalid("<components><component name='m' internal='true' uid='-1'>"
                   "<secret>x</secret></component></components>");
    expect_invalid("<components><component name='m' internal='true' uid='99999999999'>"
                   "<secret>x</secret></component></components>");
    expect_invalid("<components><component name='m' internal='maybe'>"
                   "<secret>x</secret></component></components>");
    /* names and domains */
    expect_invalid("<components><component name='a b'><secret>x</secret></component>"
                   "</components>");
    expect_invalid("<components><component name='sm'><secret>x</secret></component>"
                   "<component name='SM'><secret>y</secret></component></components>");
    expect_invalid("<components><component name='sm' internal='true'><secret>x</secret>"
                   "<domain>bad domain</domain></component></components>");
    expect_invalid("<components><component name='sm' internal='true'><secret>x</secret>"
                   "<domain>a.example</domain><domain>A.example</domain></component>"
                   "</components>");
    expect_invalid("<components><component name='sm' internal='true'><secret>x</secret>"
                   "<domain>sm</domain></component></components>");
    expect_invalid("<components><component name='sm' internal='true'><secret>x</secret>"
                   "<domain></domain></component></components>");
    /* wrong root, not XML */
    expect_invalid("<users><component name='sm'><secret>x</secret></component></users>");
    expect_invalid("<components><component name='sm'>");
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static void test_load_and_secret_file(void **state)
{
    struct tmpdir *t = tmpdir_new();
    const char *secret = tmpdir_path(t, "sm.secret");
    const char *file = tmpdir_path(t, "router-users.xml");
    write_file(secret, "from-a-file\n", 0600);
    write_file(file,
               "<components><component name='sm' internal='true'>"
               "<secret file='sm.secret'/></component></components>",
               0640);
    char err[512];
    struct users *u;
    assert_int_equal(users_load(file, &u, err, sizeof(err)), 0);
    assert_string_equal(users_find(u, "sm")->secret, "from-a-file");
    users_free(u);
    /* a secret everyone can read is refused */
    chmod(secret, 0644);
    assert_int_equal(users_load(file, &u, err, sizeof(err)), ERR_CONFIG);
    assert_null(u);
    assert_non_null(strstr(err, "readable by everyone"));
    assert_non_null(strstr(err, "router-users.xml"));
    assert_int_not_equal(users_load(tmpdir_path(t, "missing.xml"), &u, err, sizeof(err)), 0);
    tmpdir_free(t);
}

static void test_same_acl(void **state)
{
    struct users *a, *b, *c;
    assert_int_equal(parse("<components><component name='sm' internal='true'>"
                           "<secret>one</secret><domain>a.example</domain>"
                           "<domain>b.example</domain></component></components>",
                           &a),
                     0);
    /* the secret and the order of domains do not count */
    assert_int_equal(parse("<components><component name='sm' internal='true'>"
                           "<secret>two</secret><domain>b.example</domain>"
                           "<domain>a.example</domain></component></components>",
                           &b),
                     0);
    assert_int_equal(parse("<components><component name='sm' internal='true'>"
                           "<secret>one</secret><domain>a.example</domain></component>"
                           "</components>",
                           &c),
                     0);
    assert_true(users_same_acl(users_find(a, "sm"), users_find(b, "sm")));
    assert_false(users_same_acl(users_find(a, "sm"), users_find(c, "sm")));
    users_free(a);
    users_free(b);
    users_free(c);
}

int main(void)
{
    log_init("test_router_users", 0, LOG_LVL_ERR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),    cmocka_unit_test(test_empty_table),
        cmocka_unit_test(test_invalid),  cmocka_unit_test(test_load_and_secret_file),
        cmocka_unit_test(test_same_acl),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
