/*
 * test_storage_result.c - the typed result getters of storage/ on results
 * built in memory (PQmakeEmptyPGresult, no server): row and column bounds,
 * NULLs, int64/bool parsing, bytea decoding, errors. The round trips
 * against a real PostgreSQL are in tests/integration/test_storage.py.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "common/err.h"
#include "storage/storage.h"
#include "storage/storage_int.h"

#define INT8OID 20
#define TEXTOID 25
#define BOOLOID 16

/* Columns: n (int8), t (text), b (bytea), f (bool). Row 1 is all NULL. */
static PGresult *make_result(void)
{
    PGresult *r = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    assert_non_null(r);
    PGresAttDesc attrs[4] = {
        {.name = (char *)"n", .typid = INT8OID, .typlen = 8, .atttypmod = -1},
        {.name = (char *)"t", .typid = TEXTOID, .typlen = -1, .atttypmod = -1},
        {.name = (char *)"b", .typid = STORAGE_BYTEAOID, .typlen = -1, .atttypmod = -1},
        {.name = (char *)"f", .typid = BOOLOID, .typlen = 1, .atttypmod = -1},
    };
    assert_true(PQsetResultAttrs(r, 4, attrs));
    const char *row0[4] = {"-9223372036854775808", "h\xc3\xa9", "\\x00ff5c", "t"};
    for (int c = 0; c < 4; c++)
        assert_true(PQsetvalue(r, 0, c, (char *)row0[c], (int)strlen(row0[c])));
    for (int c = 0; c < 4; c++)
        assert_true(PQsetvalue(r, 1, c, NULL, -1));
    assert_true(PQsetvalue(r, 2, 0, (char *)"12x", 3));
    assert_true(PQsetvalue(r, 2, 3, (char *)"yes", 3));
    for (int c = 1; c < 3; c++)
        assert_true(PQsetvalue(r, 2, c, (char *)"", 0));
    return r;
}

static void test_getters(void **state)
{
    PGresult *pg = make_result();
    struct storage_result res = {.pg = pg, .nrows = PQntuples(pg)};
    assert_int_equal(storage_result_rows(&res), 3);
    assert_int_equal(storage_result_cols(&res), 4);

    int64_t v = 0;
    assert_int_equal(storage_result_int64(&res, 0, 0, &v), 0);
    assert_true(v == INT64_MIN);
    assert_string_equal(storage_result_text(&res, 0, 1), "h\xc3\xa9");
    size_t n = 99;
    const unsigned char *b = storage_result_bytea(&res, 0, 2, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(b, "\x00\xff\x5c", 3);
    bool f = false;
    assert_int_equal(storage_result_bool(&res, 0, 3, &f), 0);
    assert_true(f);
    /* bytea getter on a text column: no. */
    assert_null(storage_result_bytea(&res, 0, 1, &n));
    assert_int_equal(n, 0);

    for (int c = 0; c < 4; c++)
        assert_true(storage_result_null(&res, 1, c));
    assert_null(storage_result_text(&res, 1, 1));
    assert_null(storage_result_bytea(&res, 1, 2, &n));
    assert_int_equal(storage_result_int64(&res, 1, 0, &v), ERR_NOTFOUND);
    assert_int_equal(storage_result_bool(&res, 1, 3, &f), ERR_NOTFOUND);

    assert_int_equal(storage_result_int64(&res, 2, 0, &v), ERR_PARSE);
    assert_int_equal(storage_result_bool(&res, 2, 3, &f), ERR_PARSE);
    assert_string_equal(storage_result_text(&res, 2, 1), "");
    assert_false(storage_result_null(&res, 2, 1));

    /* Out of range is NULL, never a crash. */
    assert_true(storage_result_null(&res, 3, 0));
    assert_true(storage_result_null(&res, -1, 0));
    assert_true(storage_result_null(&res, 0, 4));
    assert_null(storage_result_text(&res, 0, -1));
    assert_int_equal(storage_result_int64(&res, 5, 0, &v), ERR_NOTFOUND);

    /* Rows hidden by the post-processing (nrows below PQntuples) are out
     * of range too. */
    res.nrows = 1;
    assert_true(storage_result_null(&res, 2, 1));
    storage_result_release(&res);
    PQclear(pg);
}

static void test_error_result(void **state)
{
    struct storage_result res = {.errmsg = "vcard_get: connection lost"};
    assert_int_equal(storage_result_rows(&res), 0);
    assert_int_equal(storage_result_cols(&res), 0);
    assert_string_equal(storage_result_error(&res), "vcard_get: connection lost");
    assert_true(storage_result_null(&res, 0, 0));
    struct storage_result ok = {0};
    assert_string_equal(storage_result_error(&ok), "");
    assert_int_equal(storage_result_rows(NULL), 0);
    assert_string_equal(storage_result_error(NULL), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_getters),
        cmocka_unit_test(test_error_result),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
