/*
 * storage_check.c - test driver for storage/ against a real PostgreSQL,
 * run by tests/integration/test_storage*.py (built under ASan there).
 *
 *   storage_check roundtrip SM_DSN C2S_DSN
 *       every typed call: write, read back, compare (bytea, NULLs,
 *       unicode, groups, ordering, quota, archive queries), and the role
 *       separation (parley_sm may not read credentials, parley_c2s may not
 *       read rosters). Prints "ok N checks".
 *   storage_check stream SM_DSN OWNER N INTERVAL_MS
 *       N numbered offline_store calls, one every INTERVAL_MS ("issued
 *       I", plus " down" when no connection was up at the time); one line per callback: "ack I SEQ"
 * or "err I CODE MESSAGE". Ends with "reconnects N" and "done" once every callback has run.
 *   storage_check offline DSN
 *       no server: queries wait, time out with ERR_TIMEOUT; a full queue
 *       refuses with ERR_LIMIT; storage_free fails the rest with ERR_CLOSED,
 *       also when called from inside a callback.
 *   storage_check timeout DSN OWNER
 *       the test holds a lock on OWNER's vcard row (whose vcard is "<v/>"):
 *       vcard_set fails with ERR_TIMEOUT (the server's statement_timeout)
 *       and the connection stays usable; prints "timed out", then waits for
 *       a line on stdin (the lock is released) and writes again.
 *   storage_check frozen DSN OWNER
 *       one connection; after "ready" the test stops its backend and sends
 *       a line: the next query fails with ERR_TIMEOUT once twice the
 *       timeout has passed without an answer, and the one after goes
 *       through a new connection.
 *
 * Each check failure prints "FAIL <line>: ..." and exits 1. The loop is
 * driven with UV_RUN_ONCE until each awaited callback has run; the
 * callback copies what it needs, since results live only during it.
 */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "storage/storage.h"

static uv_loop_t loop;
static int nchecks;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        nchecks++;                                                                                 \
        if (!(cond)) {                                                                             \
            printf("FAIL %d: %s: ", __LINE__, #cond);                                              \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A copy of one result. Cells are text; bytea columns (bytea_mask) hold
 * the decoded bytes with their length. */
struct snap {
    bool done;
    int err;
    char msg[512];
    int rows, cols;
    char **cell;
    size_t *len;
    int64_t version, affected;
    unsigned bytea_mask;
};

static void snap_clear(struct snap *s)
{
    for (int i = 0; s->cell && i < s->rows * s->cols; i++)
        free(s->cell[i]);
    free(s->cell);
    free(s->len);
    unsigned mask = s->bytea_mask;
    memset(s, 0, sizeof(*s));
    s->bytea_mask = mask;
}

static void on_snap(void *arg, int err, const struct storage_result *res)
{
    struct snap *s = arg;
    s->done = true;
    s->err = err;
    snprintf(s->msg, sizeof(s->msg), "%s", storage_result_error(res));
    s->rows = storage_result_rows(res);
    s->cols = storage_result_cols(res);
    s->version = storage_roster_version(res);
    s->affected = storage_result_affected(res);
    s->cell = xcalloc((size_t)(s->rows * s->cols) + 1, sizeof(char *));
    s->len = xcalloc((size_t)(s->rows * s->cols) + 1, sizeof(size_t));
    for (int r = 0; r < s->rows; r++)
        for (int c = 0; c < s->cols; c++) {
            int i = r * s->cols + c;
            if (storage_result_null(res, r, c))
                continue;
            if (s->bytea_mask & (1u << c)) {
                size_t n;
                const unsigned char *b = storage_result_bytea(res, r, c, &n);
                s->cell[i] = xmemdup(b, n + 1);
                s->len[i] = n;
            } else {
                s->cell[i] = xstrdup(storage_result_text(res, r, c));
                s->len[i] = strlen(s->cell[i]);
            }
        }
}

static const char *cell(const struct snap *s, int r, int c)
{
    if (r < 0 || r >= s->rows || c < 0 || c >= s->cols)
        return NULL;
    return s->cell[r * s->cols + c];
}

static int64_t cell_int(const struct snap *s, int r, int c)
{
    const char *t = cell(s, r, c);
    return t ? strtoll(t, NULL, 10) : INT64_MIN;
}

static bool eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

/* Issue (the expression, which must return 0) and run until the callback. */
#define RUN(s, call)                                                                               \
    do {                                                                                           \
        snap_clear(s);                                                                             \
        int rc_ = (call);                                                                          \
        CHECK(rc_ == 0, "%s returned %d", #call, rc_);                                             \
        while (!(s)->done)                                                                         \
            uv_run(&loop, UV_RUN_ONCE);                                                            \
    } while (0)

#define RUN_OK(s, call)                                                                            \
    do {                                                                                           \
        RUN(s, call);                                                                              \
        CHECK((s)->err == 0, "%s: err %d %s", #call, (s)->err, (s)->msg);                          \
    } while (0)

static struct storage *open_storage(const char *dsn, unsigned quota)
{
    struct storage_opts o = {.dsn = dsn, .offline_quota = quota, .query_timeout_ms = 10000};
    struct storage *st = NULL;
    CHECK(storage_new(&loop, &o, &st) == 0, "storage_new");
    return st;
}

static void close_storage(struct storage *st)
{
    storage_free(st);
    uv_run(&loop, UV_RUN_DEFAULT);
}

static const unsigned char salt1[] = {0x00, 0x01, 0xff, 0x5c, 0x78, 0x00, 0x27, 0x22};
static const unsigned char key1[20] = {0x00, 0xde, 0xad, 0xbe, 0xef, 0x5c, 0x00, 0x7f};
static const unsigned char key2[20] = {0xff, 0xfe, 0x00, 0x01};
static const unsigned char salt2[16] = {0x5c, 0x5c, 0x00, 0x00, 0x78};
static const unsigned char key3[32] = {0x01, 0x00, 0x02, 0x00, 0x5c, 0x78, 0x30};
static const unsigned char key4[32] = {0x7f, 0x80, 0x81, 0x00};

static void check_users(struct storage *sm, struct storage *c2s)
{
    struct snap s = {0};
    RUN_OK(&s, storage_user_exists(c2s, "alice@example.org", on_snap, &s));
    CHECK(s.rows == 1 && eq(cell(&s, 0, 0), "f"), "alice does not exist yet");

    struct storage_cred creds[2] = {
        {STORAGE_SCRAM_SHA1, salt1, sizeof(salt1), 4096, key1, sizeof(key1), key2, sizeof(key2)},
        {STORAGE_SCRAM_SHA256, salt2, sizeof(salt2), 10000, key3, sizeof(key3), key4, sizeof(key4)},
    };
    RUN_OK(&s, storage_user_create(c2s, "alice@example.org", creds, 2, on_snap, &s));
    CHECK(s.affected == 2, "two credentials inserted, got %" PRId64, s.affected);
    RUN(&s, storage_user_create(c2s, "alice@example.org", creds, 1, on_snap, &s));
    CHECK(s.err == ERR_EXISTS, "second create: %d %s", s.err, s.msg);
    CHECK(storage_user_create(c2s, "no-domain", creds, 1, on_snap, &s) == ERR_INVAL, "bad jid");
    RUN_OK(&s, storage_user_create(c2s, "bob@example.org", &creds[1], 1, on_snap, &s));
    RUN_OK(&s, storage_user_create(c2s, "carol@example.org", NULL, 0, on_snap, &s));
    RUN_OK(&s, storage_user_exists(c2s, "alice@example.org", on_snap, &s));
    CHECK(eq(cell(&s, 0, 0), "t"), "alice exists");

    s.bytea_mask = 1u << STORAGE_COL_CRED_SALT | 1u << STORAGE_COL_CRED_STORED_KEY |
                   1u << STORAGE_COL_CRED_SERVER_KEY;
    for (int i = 0; i < 2; i++) {
        RUN_OK(&s, storage_creds_get(c2s, "alice@example.org", creds[i].mech, on_snap, &s));
        CHECK(s.rows == 1, "one credential row");
        CHECK(s.len[STORAGE_COL_CRED_SALT] == creds[i].salt_len &&
                  memcmp(cell(&s, 0, STORAGE_COL_CRED_SALT), creds[i].salt, creds[i].salt_len) == 0,
              "salt %d round-trips", i);
        CHECK(cell_int(&s, 0, STORAGE_COL_CRED_ITERATIONS) == creds[i].iterations, "iterations");
        CHECK(s.len[STORAGE_COL_CRED_STORED_KEY] == creds[i].stored_key_len &&
                  memcmp(cell(&s, 0, STORAGE_COL_CRED_STORED_KEY), creds[i].stored_key,
                         creds[i].stored_key_len) == 0,
              "stored key %d", i);
        CHECK(s.len[STORAGE_COL_CRED_SERVER_KEY] == creds[i].server_key_len &&
                  memcmp(cell(&s, 0, STORAGE_COL_CRED_SERVER_KEY), creds[i].server_key,
                         creds[i].server_key_len) == 0,
              "server key %d", i);
    }
    RUN_OK(&s, storage_creds_get(c2s, "bob@example.org", STORAGE_SCRAM_SHA1, on_snap, &s));
    CHECK(s.rows == 0, "bob has no SHA-1 credential");
    RUN_OK(&s, storage_creds_get(c2s, "nobody@example.org", STORAGE_SCRAM_SHA256, on_snap, &s));
    CHECK(s.rows == 0, "no such user");
    s.bytea_mask = 0;

    /* Roles: each daemon's role only reaches its own tables. */
    RUN(&s, storage_roster_get(c2s, "alice@example.org", on_snap, &s));
    CHECK(s.err == ERR_PERM, "c2s may not read rosters: %d %s", s.err, s.msg);
    CHECK(strstr(s.msg, "permission denied") != NULL, "message says why: %s", s.msg);
    RUN(&s, storage_creds_get(sm, "alice@example.org", STORAGE_SCRAM_SHA1, on_snap, &s));
    CHECK(s.err == ERR_PERM, "sm may not read credentials: %d %s", s.err, s.msg);
    RUN(&s, storage_user_create(sm, "mallory@example.org", NULL, 0, on_snap, &s));
    CHECK(s.err == ERR_PERM, "sm may not create users: %d %s", s.err, s.msg);
    RUN_OK(&s, storage_user_exists(sm, "alice@example.org", on_snap, &s));
    CHECK(eq(cell(&s, 0, 0), "t"), "sm may read users");

    /* The sm's first-seen mark: set once, by one caller (the claim). */
    RUN_OK(&s, storage_user_seen(sm, "alice@example.org", on_snap, &s));
    CHECK(s.rows == 1 && eq(cell(&s, 0, 0), "f"), "a new account is not seen");
    RUN_OK(&s, storage_user_seen(sm, "nobody@example.org", on_snap, &s));
    CHECK(s.rows == 0, "no row for a missing account");
    RUN_OK(&s, storage_user_claim(sm, "alice@example.org", NULL, 0, on_snap, &s));
    CHECK(s.rows == 1 && eq(cell(&s, 0, 0), "0"), "the first claim sets it");
    RUN_OK(&s, storage_user_claim(sm, "alice@example.org", NULL, 0, on_snap, &s));
    CHECK(s.rows == 0, "the second finds it set");
    RUN_OK(&s, storage_user_seen(sm, "alice@example.org", on_snap, &s));
    CHECK(s.rows == 1 && eq(cell(&s, 0, 0), "t"), "seen now");
    RUN_OK(&s, storage_user_claim(sm, "nobody@example.org", NULL, 0, on_snap, &s));
    CHECK(s.rows == 0, "no mark for a missing account");
    RUN(&s, storage_user_claim(c2s, "bob@example.org", NULL, 0, on_snap, &s));
    CHECK(s.err == ERR_PERM, "c2s may not mark: %d %s", s.err, s.msg);

    /* The claim stores the new account's stanzas with the mark, in order,
     * once: a second claim stores nothing. */
    const char *two[] = {"<message xmlns='jabber:client'><body>1 \"a\\</body></message>",
                         "<message xmlns='jabber:client'><body>2</body></message>"};
    RUN_OK(&s, storage_user_create(c2s, "newbie@example.org", NULL, 0, on_snap, &s));
    RUN_OK(&s, storage_user_claim(sm, "newbie@example.org", two, 2, on_snap, &s));
    CHECK(s.rows == 1 && eq(cell(&s, 0, 0), "2"), "claimed, both stored: %d", s.rows);
    RUN_OK(&s, storage_user_claim(sm, "newbie@example.org", two, 2, on_snap, &s));
    CHECK(s.rows == 0, "claimed once");
    RUN_OK(&s, storage_offline_fetch(sm, "newbie@example.org", 10, on_snap, &s));
    CHECK(s.rows == 2 && eq(cell(&s, 0, 2), two[0]) && eq(cell(&s, 1, 2), two[1]),
          "the stanzas, in order, as given: %d", s.rows);
    snap_clear(&s);
}

static void check_roster(struct storage *sm)
{
    const char *a = "alice@example.org";
    struct snap s = {0};
    RUN_OK(&s, storage_roster_get(sm, a, on_snap, &s));
    CHECK(s.rows == 0 && s.version == 0, "empty roster, version 0 (rows %d)", s.rows);

    const char *g1[] = {"ünïcödé ☃", "Friends", "Work \"quoted\" \\ back,{x}", "Friends"};
    struct storage_roster_item bob = {.jid = "bob@example.org",
                                      .name = "Bob ☃",
                                      .sub = STORAGE_SUB_BOTH,
                                      .groups = g1,
                                      .ngroups = 4};
    RUN_OK(&s, storage_roster_set_item(sm, a, &bob, on_snap, &s));
    CHECK(s.rows == 1 && cell_int(&s, 0, 0) == 1, "version 1");
    struct storage_roster_item carol = {
        .jid = "carol@example.net", .sub = STORAGE_SUB_NONE, .ask = true, .approved = true};
    RUN_OK(&s, storage_roster_set_item(sm, a, &carol, on_snap, &s));
    CHECK(cell_int(&s, 0, 0) == 2, "version 2");

    RUN_OK(&s, storage_roster_get(sm, a, on_snap, &s));
    CHECK(s.rows == 4 && s.version == 2, "3 group rows for bob, 1 for carol: %d v%" PRId64, s.rows,
          s.version);
    const char *want_groups[] = {"Friends", "Work \"quoted\" \\ back,{x}", "ünïcödé ☃"};
    for (int r = 0; r < 3; r++) {
        CHECK(eq(cell(&s, r, STORAGE_COL_ROSTER_JID), "bob@example.org"), "row %d bob", r);
        CHECK(eq(cell(&s, r, STORAGE_COL_ROSTER_NAME), "Bob ☃"), "name");
        CHECK(eq(cell(&s, r, STORAGE_COL_ROSTER_SUB), "both"), "subscription");
        CHECK(cell(&s, r, STORAGE_COL_ROSTER_ASK) == NULL, "no ask");
        CHECK(eq(cell(&s, r, STORAGE_COL_ROSTER_APPROVED), "f"), "not approved");
        CHECK(eq(cell(&s, r, STORAGE_COL_ROSTER_GROUP), want_groups[r]), "group %d: %s", r,
              cell(&s, r, STORAGE_COL_ROSTER_GROUP));
        CHECK(cell_int(&s, r, STORAGE_COL_ROSTER_VERSION) == 2, "version column");
    }
    CHECK(eq(cell(&s, 3, STORAGE_COL_ROSTER_JID), "carol@example.net"), "carol");
    CHECK(cell(&s, 3, STORAGE_COL_ROSTER_NAME) == NULL, "carol has no name");
    CHECK(eq(cell(&s, 3, STORAGE_COL_ROSTER_ASK), "subscribe"), "ask");
    CHECK(eq(cell(&s, 3, STORAGE_COL_ROSTER_APPROVED), "t"), "approved");
    CHECK(cell(&s, 3, STORAGE_COL_ROSTER_GROUP) == NULL, "no group");

    const char *g2[] = {"New", "Work \"quoted\" \\ back,{x}"};
    bob.groups = g2;
    bob.ngroups = 2;
    bob.name = NULL;
    bob.sub = STORAGE_SUB_TO;
    RUN_OK(&s, storage_roster_set_item(sm, a, &bob, on_snap, &s));
    CHECK(cell_int(&s, 0, 0) == 3, "version 3");
    RUN_OK(&s, storage_roster_del_item(sm, a, "carol@example.net", on_snap, &s));
    CHECK(cell_int(&s, 0, 0) == 4, "version 4");
    RUN(&s, storage_roster_del_item(sm, a, "carol@example.net", on_snap, &s));
    CHECK(s.err == ERR_NOTFOUND, "deleting a missing item: %d", s.err);
    RUN_OK(&s, storage_roster_get(sm, a, on_snap, &s));
    CHECK(s.rows == 2 && s.version == 4, "bob's two groups, version 4: %d", s.rows);
    CHECK(eq(cell(&s, 0, STORAGE_COL_ROSTER_GROUP), "New") &&
              eq(cell(&s, 1, STORAGE_COL_ROSTER_GROUP), g2[1]),
          "groups replaced");
    CHECK(cell(&s, 0, STORAGE_COL_ROSTER_NAME) == NULL, "name cleared");
    CHECK(eq(cell(&s, 0, STORAGE_COL_ROSTER_SUB), "to"), "subscription updated");

    RUN(&s, storage_roster_set_item(sm, "nobody@example.org", &bob, on_snap, &s));
    CHECK(s.err == ERR_NOTFOUND, "owner must be a user: %d %s", s.err, s.msg);
    RUN_OK(&s, storage_roster_get(sm, "bob@example.org", on_snap, &s));
    CHECK(s.rows == 0 && s.version == 0, "rosters are per owner");
    snap_clear(&s);
}

/* Quota 3 (see main). */
static void check_offline(struct storage *sm)
{
    const char *a = "alice@example.org";
    struct snap s = {0};
    const char *stanzas[] = {("<message from='bob@example.org' to='alice@example.org'><body>"
                              "h\xc3\xa9llo ☃ &amp; 'q'</body></message>"),
                             "<message><body>two</body></message>", "<message>three</message>"};
    int64_t stamps[] = {1700000000123456, 0, -1000001};
    int64_t seqs[3];
    for (int i = 0; i < 3; i++) {
        RUN_OK(&s, storage_offline_store(sm, a, stamps[i], stanzas[i], on_snap, &s));
        seqs[i] = cell_int(&s, 0, 0);
        CHECK(i == 0 || seqs[i] > seqs[i - 1], "seq increases");
    }
    RUN(&s, storage_offline_store(sm, a, 0, "<message>four</message>", on_snap, &s));
    CHECK(s.err == ERR_LIMIT, "quota: %d %s", s.err, s.msg);
    RUN(&s, storage_offline_store(sm, "nobody@example.org", 0, "<m/>", on_snap, &s));
    CHECK(s.err == ERR_NOTFOUND, "unknown owner: %d %s", s.err, s.msg);

    RUN_OK(&s, storage_offline_fetch(sm, a, 10, on_snap, &s));
    CHECK(s.rows == 3, "three queued");
    for (int i = 0; i < 3; i++) {
        CHECK(cell_int(&s, i, STORAGE_COL_OFFLINE_SEQ) == seqs[i], "order by seq");
        CHECK(eq(cell(&s, i, STORAGE_COL_OFFLINE_STANZA), stanzas[i]), "stanza %d", i);
        if (stamps[i] != 0)
            CHECK(cell_int(&s, i, STORAGE_COL_OFFLINE_STAMP) == stamps[i], "stamp %d: %s", i,
                  cell(&s, i, STORAGE_COL_OFFLINE_STAMP));
        else
            CHECK(cell_int(&s, i, STORAGE_COL_OFFLINE_STAMP) > 1700000000000000, "now");
    }
    RUN_OK(&s, storage_offline_fetch(sm, a, 2, on_snap, &s));
    CHECK(s.rows == 2, "limit");
    RUN_OK(&s, storage_offline_delete_seqs(sm, a, seqs, 2, on_snap, &s));
    CHECK(s.affected == 2, "deleted the two seqs: %" PRId64, s.affected);
    RUN_OK(&s, storage_offline_fetch(sm, a, 10, on_snap, &s));
    CHECK(s.rows == 1 && cell_int(&s, 0, 0) == seqs[2], "the third is left");
    RUN_OK(&s, storage_offline_store(sm, a, 0, "<message>four</message>", on_snap, &s));
    RUN_OK(&s, storage_offline_store(sm, a, 0, "<message>five</message>", on_snap, &s));
    RUN(&s, storage_offline_store(sm, a, 0, "<message>six</message>", on_snap, &s));
    CHECK(s.err == ERR_LIMIT, "quota again: %d %s", s.err, s.msg);
    RUN_OK(&s, storage_offline_restore(sm, a, 0, "<message>six</message>", on_snap, &s));
    RUN_OK(&s, storage_offline_fetch(sm, a, 10, on_snap, &s));
    CHECK(s.rows == 4 && eq(cell(&s, 3, STORAGE_COL_OFFLINE_STANZA), "<message>six</message>"),
          "a restore goes in past the quota: %d rows", s.rows);
    RUN(&s, storage_offline_restore(sm, "nobody@example.org", 0, "<m/>", on_snap, &s));
    CHECK(s.err == ERR_NOTFOUND, "restore, unknown owner: %d %s", s.err, s.msg);
    RUN_OK(&s, storage_offline_fetch(sm, "bob@example.org", 10, on_snap, &s));
    CHECK(s.rows == 0, "per owner");
    CHECK(storage_offline_fetch(sm, a, 0, on_snap, &s) == ERR_INVAL, "limit bounds");
    snap_clear(&s);
}

static void check_misc(struct storage *sm)
{
    const char *a = "alice@example.org";
    struct snap s = {0};
    /* vcard */
    RUN_OK(&s, storage_vcard_get(sm, a, on_snap, &s));
    CHECK(s.rows == 0, "no vcard");
    const char *v1 = "<vCard xmlns='vcard-temp'><FN>Älice ☃</FN></vCard>";
    RUN_OK(&s, storage_vcard_set(sm, a, v1, on_snap, &s));
    RUN_OK(&s, storage_vcard_get(sm, a, on_snap, &s));
    CHECK(s.rows == 1 && eq(cell(&s, 0, 0), v1), "vcard");
    RUN_OK(&s, storage_vcard_set(sm, a, "<vCard xmlns='vcard-temp'/>", on_snap, &s));
    RUN_OK(&s, storage_vcard_get(sm, a, on_snap, &s));
    CHECK(eq(cell(&s, 0, 0), "<vCard xmlns='vcard-temp'/>"), "vcard replaced");
    CHECK(storage_vcard_get(sm, NULL, on_snap, &s) == ERR_INVAL, "NULL owner");

    /* private XML */
    RUN_OK(&s, storage_private_get(sm, a, "storage:bookmarks", on_snap, &s));
    CHECK(s.rows == 0, "nothing stored");
    RUN_OK(&s, storage_private_set(sm, a, "storage:bookmarks",
                                   "<storage xmlns='storage:bookmarks'/>", on_snap, &s));
    RUN_OK(&s, storage_private_set(sm, a, "x:y", "<y xmlns='x:y'>ü</y>", on_snap, &s));
    RUN_OK(&s, storage_private_get(sm, a, "storage:bookmarks", on_snap, &s));
    CHECK(eq(cell(&s, 0, 0), "<storage xmlns='storage:bookmarks'/>"), "by namespace");
    RUN_OK(&s, storage_private_set(sm, a, "x:y", "<y xmlns='x:y'/>", on_snap, &s));
    RUN_OK(&s, storage_private_get(sm, a, "x:y", on_snap, &s));
    CHECK(eq(cell(&s, 0, 0), "<y xmlns='x:y'/>"), "replaced");

    /* blocklist */
    RUN_OK(&s, storage_block_list(sm, a, on_snap, &s));
    CHECK(s.rows == 0, "empty blocklist");
    RUN_OK(&s, storage_block_add(sm, a, "z@example.org", on_snap, &s));
    CHECK(s.affected == 1, "added");
    RUN_OK(&s, storage_block_add(sm, a, "example.com", on_snap, &s));
    RUN_OK(&s, storage_block_add(sm, a, "z@example.org", on_snap, &s));
    CHECK(s.affected == 0, "already there");
    RUN_OK(&s, storage_block_list(sm, a, on_snap, &s));
    CHECK(s.rows == 2 && eq(cell(&s, 0, 0), "example.com") && eq(cell(&s, 1, 0), "z@example.org"),
          "ordered list");
    RUN_OK(&s, storage_block_del(sm, a, "z@example.org", on_snap, &s));
    CHECK(s.affected == 1, "deleted");
    RUN_OK(&s, storage_block_del(sm, a, "z@example.org", on_snap, &s));
    CHECK(s.affected == 0, "not there");
    RUN_OK(&s, storage_block_add(sm, a, "y@example.org", on_snap, &s));
    RUN_OK(&s, storage_block_clear(sm, a, on_snap, &s));
    CHECK(s.affected == 2, "cleared two");
    RUN_OK(&s, storage_block_list(sm, a, on_snap, &s));
    CHECK(s.rows == 0, "empty again");

    /* last activity */
    RUN_OK(&s, storage_last_get(sm, a, on_snap, &s));
    CHECK(s.rows == 0, "no last activity");
    RUN_OK(&s, storage_last_set(sm, a, 1600000000000001, "Gone ☃", on_snap, &s));
    RUN_OK(&s, storage_last_get(sm, a, on_snap, &s));
    CHECK(cell_int(&s, 0, STORAGE_COL_LAST_STAMP) == 1600000000000001, "stamp");
    CHECK(eq(cell(&s, 0, STORAGE_COL_LAST_STATUS), "Gone ☃"), "status");
    RUN_OK(&s, storage_last_set(sm, a, 1600000000500000, NULL, on_snap, &s));
    RUN_OK(&s, storage_last_get(sm, a, on_snap, &s));
    CHECK(cell_int(&s, 0, 0) == 1600000000500000 && cell(&s, 0, 1) == NULL, "NULL status");
    snap_clear(&s);
}

static void check_archive(struct storage *sm)
{
    const char *a = "alice@example.org";
    struct snap s = {0};
    struct {
        const char *id, *with;
        int64_t t;
    } e[] = {{"m1", "bob@example.org", 1000000000},
             {"m2", "carol@example.net", 1500000000},
             {"m3", "bob@example.org", 2000000000},
             {"m4", "carol@example.net", 2500000000},
             {"m5", "bob@example.org", 3000000000}};
    int64_t ids[5];
    char stanza[100];
    for (int i = 0; i < 5; i++) {
        snprintf(stanza, sizeof(stanza), "<message id='%s'><body>%d ☃</body></message>", e[i].id,
                 i);
        RUN_OK(&s, storage_archive_add(sm, a, e[i].id, e[i].with, e[i].t, stanza, on_snap, &s));
        ids[i] = cell_int(&s, 0, 0);
    }
    RUN(&s, storage_archive_add(sm, a, "m3", "x@example.org", 1, "<m/>", on_snap, &s));
    CHECK(s.err == ERR_EXISTS, "duplicate stanza id: %d", s.err);
    RUN_OK(&s, storage_archive_add(sm, "bob@example.org", "m3", "alice@example.org", 1, "<m/>",
                                   on_snap, &s));

    struct storage_archive_query q = {NULL, INT64_MIN, INT64_MAX, 0, 10};
    RUN_OK(&s, storage_archive_query(sm, a, &q, on_snap, &s));
    CHECK(s.rows == 5, "all five: %d", s.rows);
    for (int i = 0; i < 5; i++) {
        snprintf(stanza, sizeof(stanza), "<message id='%s'><body>%d ☃</body></message>", e[i].id,
                 i);
        CHECK(cell_int(&s, i, STORAGE_COL_ARCH_ID) == ids[i], "by id");
        CHECK(eq(cell(&s, i, STORAGE_COL_ARCH_STANZA_ID), e[i].id), "stanza id");
        CHECK(eq(cell(&s, i, STORAGE_COL_ARCH_WITH), e[i].with), "with");
        CHECK(cell_int(&s, i, STORAGE_COL_ARCH_STAMP) == e[i].t, "stamp");
        CHECK(eq(cell(&s, i, STORAGE_COL_ARCH_STANZA), stanza), "stanza");
    }
    q.with = "bob@example.org";
    RUN_OK(&s, storage_archive_query(sm, a, &q, on_snap, &s));
    CHECK(s.rows == 3 && cell_int(&s, 2, 0) == ids[4], "with bob");
    q.with = NULL;
    q.start_us = 1500000000;
    q.end_us = 2500000000;
    RUN_OK(&s, storage_archive_query(sm, a, &q, on_snap, &s));
    CHECK(s.rows == 2 && cell_int(&s, 0, 0) == ids[1] && cell_int(&s, 1, 0) == ids[2],
          "start inclusive, end exclusive: %d", s.rows);
    q.start_us = INT64_MIN;
    q.end_us = INT64_MAX;
    q.after_id = ids[1];
    q.limit = 2;
    RUN_OK(&s, storage_archive_query(sm, a, &q, on_snap, &s));
    CHECK(s.rows == 2 && cell_int(&s, 0, 0) == ids[2] && cell_int(&s, 1, 0) == ids[3],
          "paging after an id");
    q.with = "bob@example.org";
    q.after_id = 0;
    q.start_us = 2000000000;
    q.limit = 10;
    RUN_OK(&s, storage_archive_query(sm, a, &q, on_snap, &s));
    CHECK(s.rows == 2 && cell_int(&s, 0, 0) == ids[2], "with and start");
    q.limit = 1001;
    CHECK(storage_archive_query(sm, a, &q, on_snap, &s) == ERR_INVAL, "limit bound");
    snap_clear(&s);
}

/* Two sm instances (two storages, two connections each) mark the same new
 * accounts at once: for each account exactly one of them sets the mark. */
static void check_mark_race(struct storage *sm, const char *sm_dsn, struct storage *c2s)
{
    enum { N = 20 };
    struct storage *sm2 = open_storage(sm_dsn, 3);
    struct snap s = {0}, a[N], b[N];
    char jid[N][64];
    for (int i = 0; i < N; i++) {
        snprintf(jid[i], sizeof(jid[i]), "race%d@example.org", i);
        RUN_OK(&s, storage_user_create(c2s, jid[i], NULL, 0, on_snap, &s));
    }
    memset(a, 0, sizeof(a));
    memset(b, 0, sizeof(b));
    for (int i = 0; i < N; i++) {
        CHECK(storage_user_claim(sm, jid[i], NULL, 0, on_snap, &a[i]) == 0, "mark %d", i);
        CHECK(storage_user_claim(sm2, jid[i], NULL, 0, on_snap, &b[i]) == 0, "mark %d again", i);
    }
    for (int i = 0; i < N; i++)
        while (!a[i].done || !b[i].done)
            uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < N; i++) {
        CHECK(a[i].err == 0 && b[i].err == 0, "marks of %d: %s %s", i, a[i].msg, b[i].msg);
        CHECK(a[i].rows + b[i].rows == 1, "account %d marked by exactly one: %d + %d", i, a[i].rows,
              b[i].rows);
        snap_clear(&a[i]);
        snap_clear(&b[i]);
    }
    snap_clear(&s);
    storage_free(sm2); /* its handles close in the final close_storage */
}

static int roundtrip(const char *sm_dsn, const char *c2s_dsn)
{
    struct storage *sm = open_storage(sm_dsn, 3);
    struct storage *c2s = open_storage(c2s_dsn, 0);
    check_users(sm, c2s);
    check_mark_race(sm, sm_dsn, c2s);
    check_roster(sm);
    check_offline(sm);
    check_misc(sm);
    check_archive(sm);
    struct storage_stats stats;
    storage_get_stats(sm, &stats);
    CHECK(stats.completed > 50 && stats.waiting == 0 && stats.in_flight == 0, "stats");
    storage_free(sm);
    close_storage(c2s);
    printf("ok %d checks\n", nchecks);
    return 0;
}

/* ---- stream: numbered stores across a server restart ---- */

struct stream_item {
    int i;
    int *left;
};

static void on_stream(void *arg, int err, const struct storage_result *res)
{
    struct stream_item *it = arg;
    if (err == 0)
        printf("ack %d %s\n", it->i, storage_result_text(res, 0, 0));
    else
        printf("err %d %d %s\n", it->i, err, storage_result_error(res));
    fflush(stdout);
    (*it->left)--;
    free(it);
}

struct streamer {
    struct storage *st;
    const char *owner;
    int next, n, left;
};

static void on_tick(uv_timer_t *t)
{
    struct streamer *s = t->data;
    char stanza[64];
    snprintf(stanza, sizeof(stanza), "<message id='n%d'/>", s->next);
    struct stream_item *it = xmalloc(sizeof(*it));
    it->i = s->next;
    it->left = &s->left;
    int rc = storage_offline_store(s->st, s->owner, 0, stanza, on_stream, it);
    struct storage_stats stats;
    storage_get_stats(s->st, &stats);
    if (rc == 0) {
        printf("issued %d%s\n", s->next, stats.conns_ready == 0 ? " down" : "");
    } else {
        printf("refused %d %d\n", s->next, rc);
        fflush(stdout);
        s->left--;
        free(it);
    }
    if (++s->next == s->n)
        uv_timer_stop(t);
}

static int stream(const char *dsn, const char *owner, int n, int interval)
{
    struct storage_opts o = {.dsn = dsn,
                             .offline_quota = 1000000,
                             .query_timeout_ms = 20000,
                             .backoff_min_ms = 50,
                             .backoff_max_ms = 400};
    struct storage *st = NULL;
    CHECK(storage_new(&loop, &o, &st) == 0, "storage_new");
    struct streamer s = {st, owner, 0, n, n};
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &s;
    uv_timer_start(&t, on_tick, 0, (uint64_t)interval);
    while (s.left > 0)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    struct storage_stats stats;
    storage_get_stats(st, &stats);
    printf("reconnects %" PRIu64 "\n", stats.reconnects);
    close_storage(st);
    printf("done\n");
    return 0;
}

/* ---- offline: no server at all ---- */

struct free_in_cb {
    struct storage *st;
    int calls;
    int errs[2];
};

static void on_free_in_cb(void *arg, int err, const struct storage_result *res)
{
    struct free_in_cb *f = arg;
    if (f->calls < 2)
        f->errs[f->calls] = err;
    f->calls++;
    storage_free(f->st);
}

static int offline(const char *dsn)
{
    struct storage_opts o = {.dsn = dsn,
                             .query_timeout_ms = 200,
                             .queue_max = 2,
                             .backoff_min_ms = 20,
                             .backoff_max_ms = 50};
    struct storage *st = NULL;
    CHECK(storage_new(&loop, &o, &st) == 0, "storage_new");
    struct snap a = {0}, b = {0}, c = {0};
    CHECK(storage_vcard_get(st, "a@example.org", on_snap, &a) == 0, "queued");
    CHECK(storage_vcard_get(st, "b@example.org", on_snap, &b) == 0, "queued");
    CHECK(storage_vcard_get(st, "c@example.org", on_snap, &c) == ERR_LIMIT, "queue full");
    CHECK(!a.done && !b.done, "never called back from inside the call");
    while (!a.done || !b.done)
        uv_run(&loop, UV_RUN_ONCE);
    CHECK(a.err == ERR_TIMEOUT && b.err == ERR_TIMEOUT, "timed out: %d %d", a.err, b.err);
    CHECK(strstr(a.msg, "no database connection") != NULL, "message: %s", a.msg);
    snap_clear(&a);
    snap_clear(&b);
    CHECK(storage_vcard_get(st, "a@example.org", on_snap, &a) == 0, "queued again");
    storage_free(st);
    CHECK(a.done && a.err == ERR_CLOSED, "closed: %d", a.err);
    uv_run(&loop, UV_RUN_DEFAULT);
    snap_clear(&a);

    /* storage_free from inside a callback: the rest fail with ERR_CLOSED
     * once that callback has returned. */
    CHECK(storage_new(&loop, &o, &st) == 0, "storage_new");
    struct free_in_cb f = {.st = st};
    CHECK(storage_vcard_get(st, "a@example.org", on_free_in_cb, &f) == 0, "queued");
    CHECK(storage_vcard_get(st, "b@example.org", on_free_in_cb, &f) == 0, "queued");
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK(f.calls == 2 && f.errs[0] == ERR_TIMEOUT && f.errs[1] == ERR_CLOSED, "calls %d: %d %d",
          f.calls, f.errs[0], f.errs[1]);
    printf("ok %d checks\n", nchecks);
    return 0;
}

/* ---- timeout: a query blocked on the server past the timeout ---- */

static int timeout(const char *dsn, const char *owner)
{
    struct storage_opts o = {.dsn = dsn, .query_timeout_ms = 500, .pool_size = 1};
    struct storage *st = NULL;
    CHECK(storage_new(&loop, &o, &st) == 0, "storage_new");
    struct snap s = {0};
    /* The test holds a lock on the owner's vcard row: the server cancels
     * the update. */
    RUN(&s, storage_vcard_set(st, owner, "<vCard xmlns='vcard-temp'/>", on_snap, &s));
    CHECK(s.err == ERR_TIMEOUT, "server-side timeout: %d %s", s.err, s.msg);
    CHECK(strstr(s.msg, "statement timeout") != NULL, "message: %s", s.msg);
    RUN_OK(&s, storage_vcard_get(st, owner, on_snap, &s));
    CHECK(eq(cell(&s, 0, 0), "<v/>"), "unchanged");
    printf("timed out\n");
    char line[16];
    CHECK(fgets(line, sizeof(line), stdin) != NULL, "the test releases the lock");
    RUN_OK(&s, storage_vcard_set(st, owner, "<vCard xmlns='vcard-temp'/>", on_snap, &s));
    RUN_OK(&s, storage_vcard_get(st, owner, on_snap, &s));
    CHECK(eq(cell(&s, 0, 0), "<vCard xmlns='vcard-temp'/>"), "updated");
    struct storage_stats stats;
    storage_get_stats(st, &stats);
    CHECK(stats.reconnects == 0, "the connection survived the timeout");
    snap_clear(&s);
    close_storage(st);
    printf("ok %d checks\n", nchecks);
    return 0;
}

/* ---- frozen: a backend that stops answering ---- */

static int frozen(const char *dsn, const char *owner)
{
    struct storage_opts o = {.dsn = dsn,
                             .query_timeout_ms = 300,
                             .pool_size = 1,
                             .backoff_min_ms = 20,
                             .backoff_max_ms = 50};
    struct storage *st = NULL;
    CHECK(storage_new(&loop, &o, &st) == 0, "storage_new");
    struct snap s = {0};
    RUN_OK(&s, storage_vcard_get(st, owner, on_snap, &s));
    printf("ready\n");
    char line[16];
    /* The test stops this connection's backend (SIGSTOP), then says go. */
    CHECK(fgets(line, sizeof(line), stdin) != NULL, "go");
    RUN(&s, storage_vcard_get(st, owner, on_snap, &s));
    CHECK(s.err == ERR_TIMEOUT, "client-side timeout: %d %s", s.err, s.msg);
    CHECK(strstr(s.msg, "no answer from the database") != NULL, "message: %s", s.msg);
    /* A new connection (a new backend) answers. */
    RUN_OK(&s, storage_vcard_get(st, owner, on_snap, &s));
    struct storage_stats stats;
    storage_get_stats(st, &stats);
    CHECK(stats.reconnects == 1, "reconnected once: %" PRIu64, stats.reconnects);
    snap_clear(&s);
    close_storage(st);
    printf("ok %d checks\n", nchecks);
    return 0;
}

/* ---- connect: one query through a pool whose connects take detours ---- */

/* The connect timeout (query_timeout_ms) is far longer than the test waits
 * for this driver: a connection that stalls while libpq switches sockets
 * fails the test by its wait, not by a timeout here. */
static int connect_only(const char *dsn)
{
    struct storage_opts o = {.dsn = dsn, .query_timeout_ms = 600000, .pool_size = 2};
    struct storage *st = NULL;
    CHECK(storage_new(&loop, &o, &st) == 0, "storage_new");
    struct snap s = {0};
    RUN_OK(&s, storage_user_exists(st, "nobody@example.org", on_snap, &s));
    RUN_OK(&s, storage_user_exists(st, "nobody@example.org", on_snap, &s));
    struct storage_stats stats;
    storage_get_stats(st, &stats);
    CHECK(stats.reconnects == 0, "no reconnect: %" PRIu64, stats.reconnects);
    snap_clear(&s);
    close_storage(st);
    printf("ok %d checks\n", nchecks);
    return 0;
}

int main(int argc, char **argv)
{
    log_init("storage_check", 0, LOG_LVL_NOTICE);
    setvbuf(stdout, NULL, _IOLBF, 0);
    uv_loop_init(&loop);
    int rc = 2;
    if (argc == 4 && strcmp(argv[1], "roundtrip") == 0)
        rc = roundtrip(argv[2], argv[3]);
    else if (argc == 6 && strcmp(argv[1], "stream") == 0)
        rc = stream(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]));
    else if (argc == 3 && strcmp(argv[1], "connect") == 0)
        rc = connect_only(argv[2]);
    else if (argc == 3 && strcmp(argv[1], "offline") == 0)
        rc = offline(argv[2]);
    else if (argc == 4 && strcmp(argv[1], "frozen") == 0)
        rc = frozen(argv[2], argv[3]);
    else if (argc == 4 && strcmp(argv[1], "timeout") == 0)
        rc = timeout(argv[2], argv[3]);
    else
        fprintf(stderr, "usage: see the header of storage_check.c\n");
    if (uv_loop_close(&loop) != 0) {
        printf("FAIL: handles left on the loop\n");
        rc = 1;
    }
    return rc;
}
