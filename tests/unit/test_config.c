/*
 * test_config.c - config files against typed tables: every type, defaults,
 * bounds and their messages (file and element named), required entries,
 * unknown and repeated elements, bad and restricted XML, secrets from
 * files, attributes, structured parts through config_apply.
 */
#include "autoconfig.h"

#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/err.h"
#include "common/log.h"
#include "common/xml.h"

static char dir[64];
static char file[128]; /* dir/router.xml: every test's config file */

struct vals {
    const char *name;
    int port;
    bool tls;
    size_t max_stanza;
    uint64_t timeout;
    const char *key;
    int mode;
    const char *secret;
    const char *host;
    struct xml_node *component;
};

static struct vals v;

static const char *const modes[] = {"open", "closed", "invite", NULL};

/* Every type; bounds on the numbers. */
static const struct config_entry table[] = {
    CONFIG_STRING("name", CONFIG_REQUIRED, NULL, &v.name),
    CONFIG_INT("listen/port", 0, "5222", 1, 65535, &v.port),
    CONFIG_STRING("listen@host", 0, "::", &v.host),
    CONFIG_BOOL("listen/tls", 0, "yes", &v.tls),
    CONFIG_SIZE("limits/max-stanza", 0, "64k", 1024, 16 << 20, &v.max_stanza),
    CONFIG_DURATION("limits/timeout", 0, "30s", 100, 0, &v.timeout),
    CONFIG_PATH("key", 0, "keys/server.pem", &v.key),
    CONFIG_ENUM("mode", 0, "open", modes, &v.mode),
    CONFIG_SECRET("secret", 0, &v.secret),
    CONFIG_NODE("component", 0, &v.component),
    CONFIG_END,
};

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0); /* whatever the umask */
    close(fd);
}

/* Load text as dir/router.xml with root <router>; err gets the first error. */
static int load(const char *text, const struct config_entry *t, struct config **cfg, char *err,
                size_t errlen)
{
    write_file(file, text, 0600);
    memset(&v, 0x5a, sizeof(v)); /* every destination must be written */
    err[0] = '\0';
    return config_load(file, "router", t, cfg, err, errlen);
}

/* Expect failure with exactly "dir/router.xml: " + msg. */
static void expect_error(const char *text, int code, const char *msg)
{
    char err[512], want[512];
    struct config *cfg = (struct config *)&cfg; /* must be reset to NULL */
    assert_int_equal(load(text, table, &cfg, err, sizeof(err)), code);
    assert_null(cfg);
    snprintf(want, sizeof(want), "%s: %s", file, msg);
    assert_string_equal(err, want);
}

static struct config *expect_ok(const char *text)
{
    char err[512];
    struct config *cfg = NULL;
    int rc = load(text, table, &cfg, err, sizeof(err));
    if (rc != 0)
        fail_msg("load failed: %s", err);
    assert_non_null(cfg);
    return cfg;
}

static int setup(void **state)
{
    log_init("test_config", 0, LOG_LVL_ERR);
    snprintf(dir, sizeof(dir), "/tmp/parley-config-XXXXXX");
    if (!mkdtemp(dir))
        return -1;
    snprintf(file, sizeof(file), "%s/router.xml", dir);
    return 0;
}

static int on_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int teardown(void **state)
{
    return nftw(dir, on_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_every_type(void **state)
{
    char secret_path[160];
    snprintf(secret_path, sizeof(secret_path), "%s/secret.txt", dir);
    write_file(secret_path, "s3cr3t\n", 0600);
    struct config *cfg = expect_ok("<?xml version='1.0'?>\n"
                                   "<!-- a comment -->\n"
                                   "<router>\n"
                                   "  <name> example.com </name>\n"
                                   "  <listen host='127.0.0.1'><port>5269</port><tls>off</tls>"
                                   "</listen>\n"
                                   "  <limits><max-stanza>2M</max-stanza>"
                                   "<timeout>1500ms</timeout></limits>\n"
                                   "  <key>/etc/parley/key.pem</key>\n"
                                   "  <mode>invite</mode>\n"
                                   "  <secret file='secret.txt'/>\n"
                                   "  <component name='a'/><component name='b'/>\n"
                                   "</router>\n");
    assert_string_equal(v.name, "example.com");
    assert_int_equal(v.port, 5269);
    assert_string_equal(v.host, "127.0.0.1");
    assert_false(v.tls);
    assert_int_equal(v.max_stanza, 2 << 20);
    assert_int_equal(v.timeout, 1500);
    assert_string_equal(v.key, "/etc/parley/key.pem");
    assert_int_equal(v.mode, 2);
    assert_string_equal(v.secret, "s3cr3t");
    assert_non_null(v.component);
    assert_string_equal(xml_get_attr(v.component, "name"), "a");
    assert_ptr_equal(config_root(cfg), v.component->parent);
    assert_string_equal(config_file(cfg), file);
    assert_null(config_error(cfg));
    config_free(cfg);
}

static void test_defaults(void **state)
{
    struct config *cfg = expect_ok("<router><name>x</name></router>");
    assert_int_equal(v.port, 5222);
    assert_string_equal(v.host, "::");
    assert_true(v.tls);
    assert_int_equal(v.max_stanza, 64 * 1024);
    assert_int_equal(v.timeout, 30000);
    char want[192];
    snprintf(want, sizeof(want), "%s/keys/server.pem", dir); /* relative to the file */
    assert_string_equal(v.key, want);
    assert_int_equal(v.mode, 0);
    assert_null(v.secret);
    assert_null(v.component);
    config_free(cfg);
    config_free(NULL);
}

static void test_units(void **state)
{
    static const struct {
        const char *size, *dur;
        size_t bytes;
        uint64_t ms;
    } cases[] = {
        {"1024", "100ms", 1024, 100}, {"1k", "1s", 1024, 1000},
        {"3K", "2m", 3072, 120000},   {"1M", "1h", 1 << 20, 3600000},
        {"16m", "0h", 16 << 20, 0},   {"16384", "3600s", 16384, 3600000},
    };
    static const struct config_entry t[] = {
        CONFIG_STRING("name", 0, NULL, &v.name),
        CONFIG_SIZE("size", 0, NULL, 0, 0, &v.max_stanza),
        CONFIG_DURATION("dur", 0, NULL, 0, 0, &v.timeout),
        CONFIG_BOOL("b", 0, NULL, &v.tls),
        CONFIG_END,
    };
    static const char *const truths[] = {"yes", "true", "on", "1"};
    static const char *const lies[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[256], err[256];
        snprintf(text, sizeof(text), "<router><size>%s</size><dur>%s</dur><b>%s</b></router>",
                 cases[i].size, cases[i].dur, i % 2 ? truths[i / 2 % 4] : lies[i / 2 % 4]);
        struct config *cfg;
        assert_int_equal(load(text, t, &cfg, err, sizeof(err)), 0);
        assert_int_equal(v.max_stanza, cases[i].bytes);
        assert_int_equal(v.timeout, cases[i].ms);
        assert_int_equal(v.tls, i % 2 == 1);
        assert_null(v.name);
        config_free(cfg);
    }
    char text[256], err[256];
    struct config *cfg;
    snprintf(text, sizeof(text), "<router><size>1G</size><b>GG</b></router>");
    assert_int_equal(load(text, t, &cfg, err, sizeof(err)), ERR_CONFIG);
    snprintf(text, sizeof(text), "%s: <b>: 'GG' is not a boolean (yes/no, true/false, on/off, 1/0)",
             file);
    assert_string_equal(err, text);
}

static void test_bounds(void **state)
{
    expect_error("<router><name>x</name><listen><port>70000</port></listen></router>", ERR_CONFIG,
                 "<listen><port>: 70000 is out of range 1..65535");
    expect_error("<router><name>x</name><listen><port>0</port></listen></router>", ERR_CONFIG,
                 "<listen><port>: 0 is out of range 1..65535");
    expect_error("<router><name>x</name><listen><port>99999999999999999999</port></listen>"
                 "</router>",
                 ERR_CONFIG, "<listen><port>: 99999999999999999999 is out of range 1..65535");
    expect_error("<router><name>x</name><limits><max-stanza>32M</max-stanza></limits></router>",
                 ERR_CONFIG, "<limits><max-stanza>: 32M is out of range 1k..16M");
    expect_error("<router><name>x</name><limits><max-stanza>99999999999G</max-stanza></limits>"
                 "</router>",
                 ERR_CONFIG, "<limits><max-stanza>: 99999999999G is too large");
    expect_error("<router><name>x</name><limits><timeout>50ms</timeout></limits></router>",
                 ERR_CONFIG, "<limits><timeout>: 50ms is less than 100ms");
}

static void test_bad_values(void **state)
{
    expect_error("<router><name>x</name><listen><port>52x</port></listen></router>", ERR_CONFIG,
                 "<listen><port>: '52x' is not an integer");
    expect_error("<router><name>x</name><listen><port></port></listen></router>", ERR_CONFIG,
                 "<listen><port>: '' is not an integer");
    expect_error("<router><name>x</name><listen><tls>maybe</tls></listen></router>", ERR_CONFIG,
                 "<listen><tls>: 'maybe' is not a boolean (yes/no, true/false, on/off, 1/0)");
    expect_error("<router><name>x</name><limits><max-stanza>2T</max-stanza></limits></router>",
                 ERR_CONFIG,
                 "<limits><max-stanza>: '2T' is not a size (a number with an optional k, M or G "
                 "suffix)");
    expect_error("<router><name>x</name><limits><timeout>30</timeout></limits></router>",
                 ERR_CONFIG,
                 "<limits><timeout>: '30' is not a duration (a number and a unit: ms, s, m or h)");
    expect_error("<router><name>x</name><key> </key></router>", ERR_CONFIG, "<key>: empty path");
    expect_error("<router><name>x</name><listen><port><n>1</n></port></listen></router>",
                 ERR_CONFIG, "<listen><port>: expected a value, found element <n>");
    /* A long bad value is cut short in the message. */
    char text[512], msg[256];
    char longv[101];
    memset(longv, 'a', 100);
    longv[100] = '\0';
    snprintf(text, sizeof(text), "<router><name>x</name><mode>%s</mode></router>", longv);
    snprintf(msg, sizeof(msg), "<mode>: '%.64s...' is not one of: open, closed, invite", longv);
    expect_error(text, ERR_CONFIG, msg);
}

static void test_enum(void **state)
{
    for (int i = 0; modes[i]; i++) {
        char text[128];
        snprintf(text, sizeof(text), "<router><name>x</name><mode>%s</mode></router>", modes[i]);
        struct config *cfg = expect_ok(text);
        assert_int_equal(v.mode, i);
        config_free(cfg);
    }
    expect_error("<router><name>x</name><mode>Open</mode></router>", ERR_CONFIG,
                 "<mode>: 'Open' is not one of: open, closed, invite");
}

static void test_required(void **state)
{
    expect_error("<router/>", ERR_CONFIG, "<name>: required but missing");
    static const struct config_entry t[] = {
        CONFIG_INT("listen@port", CONFIG_REQUIRED, NULL, 1, 65535, &v.port),
        CONFIG_STRING("a/b/c", CONFIG_REQUIRED, NULL, &v.name),
        CONFIG_NODE("component", CONFIG_REQUIRED, &v.component),
        CONFIG_END,
    };
    char err[256], want[256];
    struct config *cfg;
    assert_int_equal(
        load("<router><listen/><a><b/></a><component/></router>", t, &cfg, err, sizeof(err)),
        ERR_CONFIG);
    snprintf(want, sizeof(want), "%s: <listen>@port: required but missing", file);
    assert_string_equal(err, want);
    assert_int_equal(load("<router><listen port='1'/><a><b/></a><component/></router>", t, &cfg,
                          err, sizeof(err)),
                     ERR_CONFIG);
    snprintf(want, sizeof(want), "%s: <a><b><c>: required but missing", file);
    assert_string_equal(err, want);
    assert_int_equal(
        load("<router><listen port='1'/><a><b><c/></b></a></router>", t, &cfg, err, sizeof(err)),
        ERR_CONFIG);
    snprintf(want, sizeof(want), "%s: <component>: required but missing", file);
    assert_string_equal(err, want);
    assert_int_equal(load("<router><listen port=' 7 '/><a><b><c/></b></a><component/></router>", t,
                          &cfg, err, sizeof(err)),
                     0);
    assert_int_equal(v.port, 7);
    assert_string_equal(v.name, "");
    config_free(cfg);
}

static void test_unknown_and_repeated(void **state)
{
    expect_error("<router><name>x</name><lisen><port>1</port></lisen></router>", ERR_CONFIG,
                 "<lisen>: unknown element (known here: <name>, <listen>, <limits>, <key>, "
                 "<mode>, <secret>, <component>)");
    expect_error("<router><name>x</name><listen><prot>1</prot></listen></router>", ERR_CONFIG,
                 "<listen><prot>: unknown element (known here: <port>, <tls>)");
    expect_error("<router><name>x</name><listen hots='x'/></router>", ERR_CONFIG,
                 "<listen>@hots: unknown attribute");
    expect_error("<router><name>x</name><name>y</name></router>", ERR_CONFIG,
                 "<name[2]>: given more than once");
    expect_error("<router><name>x</name><listen/><listen/></router>", ERR_CONFIG,
                 "<listen[2]>: given more than once");
    expect_error("<router><name>x</name><listen>5222</listen></router>", ERR_CONFIG,
                 "<listen>: unexpected text (values go in child elements)");
    expect_error("<router debug='1'><name>x</name></router>", ERR_CONFIG,
                 "<router>@debug: unknown attribute");
    expect_error("<foo/>", ERR_CONFIG, "root element is <foo>, expected <router>");
    /* Several errors: all are counted, the first is reported. */
    char err[512];
    struct config *cfg;
    assert_int_equal(load("<router><a/><b/><c/></router>", table, &cfg, err, sizeof(err)),
                     ERR_CONFIG);
    assert_non_null(strstr(err, "<a>: unknown element"));
    /* Repeated CONFIG_NODE elements are the daemon's business. */
    cfg = expect_ok("<router><name>x</name><component/><component/><component>"
                    "<anything/></component></router>");
    config_free(cfg);
}

static void test_bad_xml(void **state)
{
    char err[512], want[256];
    struct config *cfg = (struct config *)&cfg;
    assert_int_equal(
        load("<router>\n  <name>x</name>\n  <listen>\n</router>\n", table, &cfg, err, sizeof(err)),
        ERR_PARSE);
    assert_null(cfg);
    snprintf(want, sizeof(want), "%s: line 4: ", file);
    assert_memory_equal(err, want, strlen(want));

    assert_int_equal(load("", table, &cfg, err, sizeof(err)), ERR_PARSE);
    snprintf(want, sizeof(want), "%s: line ", file);
    assert_memory_equal(err, want, strlen(want));
}

static void test_restricted_xml(void **state)
{
    char err[512], want[256];
    struct config *cfg;
    assert_int_equal(load("<!DOCTYPE router [<!ENTITY a 'x'>]>\n<router><name>&a;</name>"
                          "</router>",
                          table, &cfg, err, sizeof(err)),
                     ERR_PARSE);
    snprintf(want, sizeof(want), "%s: line 1: ", file);
    assert_memory_equal(err, want, strlen(want));

    assert_int_equal(load("<?xml version='1.0'?>\n"
                          "<!DOCTYPE lolz [<!ENTITY lol 'lol'>"
                          "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
                          "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
                          "<router><name>&lol3;</name></router>",
                          table, &cfg, err, sizeof(err)),
                     ERR_PARSE);
    assert_null(cfg);
    assert_int_equal(load("<router><?pi x?><name>x</name></router>", table, &cfg, err, sizeof(err)),
                     ERR_PARSE);
}

static void test_file_errors(void **state)
{
    char err[512], want[256], path[160];
    struct config *cfg = (struct config *)&cfg;
    snprintf(path, sizeof(path), "%s/none.xml", dir);
    assert_int_equal(config_load(path, "router", table, &cfg, err, sizeof(err)), ERR_IO);
    assert_null(cfg);
    snprintf(want, sizeof(want), "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, want);

    assert_int_equal(config_load(dir, "router", table, &cfg, err, sizeof(err)), ERR_IO);
    snprintf(want, sizeof(want), "%s: not a regular file", dir);
    assert_string_equal(err, want);

    /* One byte over the limit, made of valid XML so only the size can fail. */
    size_t n = CONFIG_MAX_BYTES + 1;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, ' ', n);
    memcpy(big, "<router><name>x</name></router>", 31);
    big[n] = '\0';
    write_file(file, big, 0600);
    assert_int_equal(config_load(file, "router", table, &cfg, err, sizeof(err)), ERR_LIMIT);
    snprintf(want, sizeof(want), "%s: larger than %d bytes", file, CONFIG_MAX_BYTES);
    assert_string_equal(err, want);
    big[n - 1] = '\0'; /* exactly at the limit: fine */
    write_file(file, big, 0600);
    assert_int_equal(config_load(file, "router", table, &cfg, err, sizeof(err)), 0);
    config_free(cfg);
    free(big);
}

static void test_secrets(void **state)
{
    char path[160], text[512], msg[256];
    snprintf(path, sizeof(path), "%s/s.txt", dir);

    write_file(path, "hunter2\r\n", 0640);
    snprintf(text, sizeof(text), "<router><name>x</name><secret file='%s'/></router>", path);
    struct config *cfg = expect_ok(text);
    assert_string_equal(v.secret, "hunter2");
    config_free(cfg);

    cfg = expect_ok("<router><name>x</name><secret>\n  inline-one\n</secret></router>");
    assert_string_equal(v.secret, "inline-one");
    config_free(cfg);

    write_file(path, "hunter2\n", 0644);
    snprintf(msg, sizeof(msg), "<secret>: secret file %s is readable by everyone (chmod o-r)",
             path);
    expect_error(text, ERR_CONFIG, msg);

    write_file(path, "\n", 0600);
    snprintf(msg, sizeof(msg), "<secret>: secret file %s is empty", path);
    expect_error(text, ERR_CONFIG, msg);

    snprintf(msg, sizeof(msg),
             "<secret>: secret file %s/nope.txt: cannot open: No such file or directory", dir);
    expect_error("<router><name>x</name><secret file='nope.txt'/></router>", ERR_CONFIG, msg);
}

static void test_secret_errors_hide_value(void **state)
{
    char err[512];
    struct config *cfg;
    assert_int_equal(load("<router><name>x</name><secret file='x'>hunter2</secret></router>", table,
                          &cfg, err, sizeof(err)),
                     ERR_CONFIG);
    assert_non_null(strstr(err, "<secret>: give the secret inline or in a file, not both"));
    assert_null(strstr(err, "hunter2"));
    assert_int_equal(
        load("<router><name>x</name><secret>  </secret></router>", table, &cfg, err, sizeof(err)),
        ERR_CONFIG);
    assert_non_null(strstr(err, "<secret>: empty secret"));
    /* Too large: the file limit, with no part of the value quoted. */
    char path[160], text[256];
    snprintf(path, sizeof(path), "%s/big.txt", dir);
    char *big = malloc(CONFIG_SECRET_MAX + 2);
    assert_non_null(big);
    memset(big, 'q', CONFIG_SECRET_MAX + 1);
    big[CONFIG_SECRET_MAX + 1] = '\0';
    write_file(path, big, 0600);
    free(big);
    snprintf(text, sizeof(text), "<router><name>x</name><secret file='big.txt'/></router>");
    assert_int_equal(load(text, table, &cfg, err, sizeof(err)), ERR_CONFIG);
    assert_non_null(strstr(err, "larger than 4096 bytes"));
    assert_null(strstr(err, "qqqq"));
}

/* A list of components read through config_apply, as a router would. */
static void test_apply_structured(void **state)
{
    struct config *cfg = expect_ok("<router><name>x</name>"
                                   "<component name='muc' internal='yes'><secret>a</secret>"
                                   "</component>"
                                   "<component><secret>b</secret></component>"
                                   "<component name='c'><secert>c</secert></component>"
                                   "</router>");
    const char *name, *secret;
    bool internal;
    const struct config_entry t[] = {
        CONFIG_STRING("@name", CONFIG_REQUIRED, NULL, &name),
        CONFIG_BOOL("@internal", 0, "no", &internal),
        CONFIG_SECRET("secret", CONFIG_REQUIRED, &secret),
        CONFIG_END,
    };
    struct xml_node *c = v.component;
    assert_int_equal(config_apply(cfg, c, t), 0);
    assert_string_equal(name, "muc");
    assert_true(internal);
    assert_string_equal(secret, "a");

    c = xml_next(c, NULL, "component");
    assert_int_equal(config_apply(cfg, c, t), ERR_CONFIG);
    char want[256];
    snprintf(want, sizeof(want), "%s: <component[2]>@name: required but missing", file);
    assert_string_equal(config_error(cfg), want);

    c = xml_next(c, NULL, "component");
    assert_int_equal(config_apply(cfg, c, t), ERR_CONFIG);
    assert_string_equal(config_error(cfg), want); /* the first error stays */
    config_free(cfg);
}

static void test_bad_default(void **state)
{
    static const struct config_entry t[] = {
        CONFIG_DURATION("t", 0, "5", 0, 0, &v.timeout),
        CONFIG_END,
    };
    char err[256], want[256];
    struct config *cfg;
    assert_int_equal(load("<router/>", t, &cfg, err, sizeof(err)), ERR_CONFIG);
    snprintf(want, sizeof(want),
             "%s: <t>: built-in default: '5' is not a duration (a number and a unit: ms, s, m "
             "or h)",
             file);
    assert_string_equal(err, want);
}

static void test_parse_in_memory(void **state)
{
    static const char text[] = "<router><name>mem</name><key>k.pem</key></router>";
    char err[256];
    struct config *cfg;
    assert_int_equal(config_parse("/etc/parley/router.xml", text, sizeof(text) - 1, "router", table,
                                  &cfg, err, sizeof(err)),
                     0);
    assert_string_equal(v.name, "mem");
    assert_string_equal(v.key, "/etc/parley/k.pem");
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_enum),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_unknown_and_repeated),
        cmocka_unit_test(test_bad_xml),
        cmocka_unit_test(test_restricted_xml),
        cmocka_unit_test(test_file_errors),
        cmocka_unit_test(test_secrets),
        cmocka_unit_test(test_secret_errors_hide_value),
        cmocka_unit_test(test_apply_structured),
        cmocka_unit_test(test_bad_default),
        cmocka_unit_test(test_parse_in_memory),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
