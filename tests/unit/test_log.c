/*
 * test_log.c - levels, level parsing, one line per event (control bytes escaped).
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"

/* Run fn with stderr redirected to a temp file; return what was written. */
static void capture(void (*fn)(void), char *out, size_t outlen)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, outlen - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
}

static void emit_levels(void)
{
    log_init("test", 0, LOG_LVL_WARN);
    log_err("an error %d", 1);
    log_warn("a warning");
    log_info("hidden info");
    log_debug("hidden debug");
}

static void emit_injection(void)
{
    log_init("test", 0, LOG_LVL_INFO);
    log_info("user said: %s", "evil\nfake line\r\x1b[31m");
}

static void test_levels_filter(void **state)
{
    char out[4096];
    capture(emit_levels, out, sizeof(out));
    assert_non_null(strstr(out, "err: emit_levels: an error 1\n"));
    assert_non_null(strstr(out, "warn: emit_levels: a warning\n"));
    assert_null(strstr(out, "hidden"));
}

static void test_one_line_per_event(void **state)
{
    char out[4096];
    capture(emit_injection, out, sizeof(out));
    assert_non_null(strstr(out, "user said: evil\\x0afake line\\x0d\\x1b[31m\n"));
    /* exactly one newline: the end of the event */
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out));
}

static void test_level_parse(void **state)
{
    enum log_level l;
    assert_int_equal(log_level_parse("debug", &l), 0);
    assert_int_equal(l, LOG_LVL_DEBUG);
    assert_int_equal(log_level_parse("warn", &l), 0);
    assert_int_equal(l, LOG_LVL_WARN);
    assert_int_equal(log_level_parse("loud", &l), ERR_INVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels_filter),
        cmocka_unit_test(test_one_line_per_event),
        cmocka_unit_test(test_level_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
