/*
 * test_storage_dsn.c - storage_new's handling of the DSN: a host name is
 * resolved at start-up (so that no reconnect resolves on the loop), and
 * DSNs it cannot pin are refused. No server is needed: nothing here waits
 * for a connection.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "common/err.h"
#include "common/log.h"
#include "storage/storage.h"

static int try_dsn(const char *dsn)
{
    uv_loop_t loop;
    assert_int_equal(uv_loop_init(&loop), 0);
    struct storage_opts o;
    memset(&o, 0, sizeof(o));
    o.dsn = dsn;
    o.pool_size = 1;
    struct storage *st = NULL;
    int rc = storage_new(&loop, &o, &st);
    if (rc == 0) {
        storage_free(st);
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    assert_int_equal(uv_loop_close(&loop), 0);
    return rc;
}

static void test_socket_dir_and_ip(void **state)
{
    assert_int_equal(try_dsn("host=/nonexistent/dir dbname=parley user=parley_sm"), 0);
    assert_int_equal(try_dsn("host=127.0.0.1 port=1 dbname=parley"), 0);
    assert_int_equal(try_dsn("postgresql://[::1]:1/parley"), 0);
}

static const char *logged_dsn;

static void new_with_log(void)
{
    assert_int_equal(try_dsn(logged_dsn), 0);
}

/* Run storage_new on dsn with info logging; the log goes to out. */
static void log_of_new(const char *dsn, char *out, size_t size)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    log_init("test_storage_dsn", 0, LOG_LVL_INFO);
    logged_dsn = dsn;
    new_with_log();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, size - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    log_init("test_storage_dsn", 0, LOG_LVL_WARN);
}

static void test_env_host_resolved_at_start(void **state)
{
    /* libpq would take the host from PGHOST inside PQconnectStart, on the
     * loop; storage_new must see it and resolve it first. */
    char out[4096];
    assert_int_equal(setenv("PGHOST", "localhost", 1), 0);
    log_of_new("port=1 dbname=parley", out, sizeof(out));
    assert_non_null(strstr(out, "database host localhost is "));
    /* A socket directory from the environment needs nothing. */
    assert_int_equal(setenv("PGHOST", "/nonexistent/dir", 1), 0);
    log_of_new("port=1 dbname=parley", out, sizeof(out));
    assert_null(strstr(out, "database host"));
    /* Several names from the environment cannot be pinned either. */
    assert_int_equal(setenv("PGHOST", "a.example,b.example", 1), 0);
    assert_int_equal(try_dsn("dbname=parley"), ERR_INVAL);
    assert_int_equal(unsetenv("PGHOST"), 0);
    /* A service named in the DSN is read only by PQconnectStart. */
    assert_int_equal(try_dsn("service=parley dbname=parley"), ERR_INVAL);
    assert_int_equal(try_dsn("service=parley host=/nonexistent/dir"), 0);
}

static void test_host_name_resolved_at_start(void **state)
{
    /* localhost resolves from /etc/hosts, without a DNS server. */
    char out[4096];
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    dup2(fileno(tmp), STDERR_FILENO);
    log_init("test_storage_dsn", 0, LOG_LVL_INFO);
    logged_dsn = "host=localhost port=1 dbname=parley";
    new_with_log();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, sizeof(out) - 1, tmp);
    out[n] = '\0';
    fclose(tmp);
    log_init("test_storage_dsn", 0, LOG_LVL_WARN);
    assert_non_null(strstr(out, "database host localhost is "));
}

static void test_refused(void **state)
{
    assert_int_equal(try_dsn("host=a.example,b.example dbname=parley"), ERR_INVAL);
    assert_int_equal(try_dsn("this is = not a dsn'"), ERR_INVAL);
    assert_int_equal(try_dsn("nosuchkeyword=1"), ERR_INVAL);
}

int main(void)
{
    log_init("test_storage_dsn", 0, LOG_LVL_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_socket_dir_and_ip),
        cmocka_unit_test(test_host_name_resolved_at_start),
        cmocka_unit_test(test_env_host_resolved_at_start),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
