/*
 * storage_sql.c - the typed API of storage.h: one fixed, prepared statement
 * per call, its parameters, and the meaning of its result.
 *
 * Every statement is a single SQL statement (data-modifying CTEs where a
 * call changes several tables), so that each call is one round trip and
 * one transaction. Values only ever travel as parameters. Times cross the
 * boundary as int64 microseconds since the Unix epoch (TS/US below), which
 * is exact (extract() returns numeric). Orderings that callers see use
 * COLLATE "C", so they do not depend on the database's locale.
 */
#include "autoconfig.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/mem.h"
#include "storage/storage_int.h"

/* int64 µs parameter -> timestamptz, and back. */
#define TS(p)                                                                                      \
    "(to_timestamp(0) + (" p "::bigint / 1000000) * interval '1 second' + (" p                     \
    "::bigint % 1000000) * interval '1 microsecond')"
#define US(col) "(extract(epoch FROM " col ") * 1000000)::bigint"

enum stmt {
    S_USER_EXISTS,
    S_USER_SEEN,
    S_USER_CLAIM,
    S_CREDS_GET,
    S_USER_CREATE,
    S_ROSTER_GET,
    S_ROSTER_SET,
    S_ROSTER_DEL,
    S_OFFLINE_STORE,
    S_OFFLINE_FETCH,
    S_OFFLINE_DELETE_SEQS,
    S_VCARD_GET,
    S_VCARD_SET,
    S_PRIVATE_GET,
    S_PRIVATE_SET,
    S_BLOCK_LIST,
    S_BLOCK_ADD,
    S_BLOCK_DEL,
    S_BLOCK_CLEAR,
    S_LAST_GET,
    S_LAST_SET,
    S_ARCHIVE_ADD,
    S_ARCHIVE_QUERY,
    S_SUBREQ_LIST,
    S_SUBREQ_SET,
    S_SUBREQ_DEL,
    S_COUNT
};

/* What an empty result means for a statement that must return a row. */
struct stmt_def {
    const char *name;
    const char *sql;
    int empty_err;
    const char *empty_msg;
};

/* SQL laid out by hand: clang-format would split it at the macros. */
/* clang-format off */
static const struct stmt_def stmts[S_COUNT] = {
    [S_USER_EXISTS] = {.name = "user_exists", .sql =
        "SELECT EXISTS (SELECT 1 FROM users WHERE jid = $1::text)"},
    [S_USER_SEEN] = {.name = "user_seen", .sql =
        "SELECT sm_seen_at IS NOT NULL FROM users WHERE jid = $1::text"},
    /* The mark and the new account's offline stanzas in one statement (one
     * transaction): both or neither. The stanzas are stored in order, all
     * or none, under the offline quotas; the mark is set either way. */
    [S_USER_CLAIM] = {.name = "user_claim", .sql =
        "WITH m AS (UPDATE users SET sm_seen_at = now() WHERE jid = $1::text "
        "AND sm_seen_at IS NULL RETURNING jid), "
        "s AS (SELECT x, o FROM unnest($2::text[]) WITH ORDINALITY AS t (x, o)), "
        "i AS (INSERT INTO offline (owner, stamp, stanza) "
        "SELECT m.jid, now(), s.x FROM m, s "
        "WHERE (SELECT count(*) + (SELECT count(*) FROM s) <= $3::bigint AND "
        "coalesce(sum(octet_length(stanza)), 0) + "
        "(SELECT coalesce(sum(octet_length(x)), 0) FROM s) <= $4::bigint "
        "FROM offline WHERE owner = $1::text) "
        "ORDER BY s.o RETURNING seq) "
        "SELECT (SELECT count(*) FROM i) FROM m"},
    [S_CREDS_GET] = {.name = "creds_get", .sql =
        "SELECT salt, iterations, stored_key, server_key FROM credentials "
        "WHERE jid = $1::text AND mechanism = $2::text"},
    [S_USER_CREATE] = {.name = "user_create", .sql =
        "WITH u AS (INSERT INTO users (jid, domain) VALUES ($1::text, $2::text) RETURNING jid) "
        "INSERT INTO credentials (jid, mechanism, salt, iterations, stored_key, server_key) "
        "SELECT u.jid, c.m, c.s, c.i, c.sk, c.vk FROM u, (VALUES "
        "($3::text, $4::bytea, $5::int, $6::bytea, $7::bytea), "
        "($8::text, $9::bytea, $10::int, $11::bytea, $12::bytea)) AS c (m, s, i, sk, vk) "
        "WHERE c.m IS NOT NULL"},
    [S_ROSTER_GET] = {.name = "roster_get", .sql =
        "SELECT coalesce(v.version, 0), i.jid, i.name, i.subscription, i.ask, i.approved, g.grp "
        "FROM (SELECT $1::text AS owner) o "
        "LEFT JOIN roster_version v ON v.owner = o.owner "
        "LEFT JOIN roster_items i ON i.owner = o.owner "
        "LEFT JOIN roster_groups g ON g.owner = i.owner AND g.jid = i.jid "
        "ORDER BY i.jid COLLATE \"C\", g.grp COLLATE \"C\""},
    /* Groups: delete those not in the new set, add the new ones; the two
     * never touch the same row, so their order inside the statement does
     * not matter. */
    [S_ROSTER_SET] = {.name = "roster_set", .sql =
        "WITH i AS (INSERT INTO roster_items (owner, jid, name, subscription, ask, approved) "
        "VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::boolean) "
        "ON CONFLICT (owner, jid) DO UPDATE SET name = EXCLUDED.name, "
        "subscription = EXCLUDED.subscription, ask = EXCLUDED.ask, approved = EXCLUDED.approved "
        "RETURNING owner, jid), "
        "d AS (DELETE FROM roster_groups WHERE owner = $1::text AND jid = $2::text "
        "AND grp <> ALL ($7::text[])), "
        "g AS (INSERT INTO roster_groups (owner, jid, grp) "
        "SELECT DISTINCT i.owner, i.jid, x FROM i, unnest($7::text[]) AS x "
        "ON CONFLICT DO NOTHING) "
        "INSERT INTO roster_version (owner, version) VALUES ($1::text, 1) "
        "ON CONFLICT (owner) DO UPDATE SET version = roster_version.version + 1 "
        "RETURNING version",
        .empty_err = ERR_DB, .empty_msg = "no version returned"},
    [S_ROSTER_DEL] = {.name = "roster_del", .sql =
        "WITH d AS (DELETE FROM roster_items WHERE owner = $1::text AND jid = $2::text "
        "RETURNING 1) "
        "INSERT INTO roster_version (owner, version) SELECT $1::text, 1 "
        "WHERE EXISTS (SELECT 1 FROM d) "
        "ON CONFLICT (owner) DO UPDATE SET version = roster_version.version + 1 "
        "RETURNING version",
        .empty_err = ERR_NOTFOUND, .empty_msg = "no such roster item"},
    /* The quotas (rows, bytes) are checked inside the statement; concurrent
     * stores for one owner on different connections may each pass them
     * (overshoot bounded by the pool size). octet_length of a stored
     * (possibly compressed) text reads its size without decompressing. */
    [S_OFFLINE_STORE] = {.name = "offline_store", .sql =
        "INSERT INTO offline (owner, stamp, stanza) "
        "SELECT $1::text, CASE WHEN $2::bigint = 0 THEN now() ELSE " TS("$2") " END, $3::text "
        "WHERE (SELECT count(*) < $4::bigint AND "
        "coalesce(sum(octet_length(stanza)), 0) + octet_length($3::text) <= $5::bigint "
        "FROM offline WHERE owner = $1::text) "
        "RETURNING seq",
        .empty_err = ERR_LIMIT, .empty_msg = "offline quota reached"},
    [S_OFFLINE_FETCH] = {.name = "offline_fetch", .sql =
        "SELECT seq, " US("stamp") ", stanza FROM offline WHERE owner = $1::text "
        "ORDER BY seq LIMIT $2::int"},
    [S_OFFLINE_DELETE_SEQS] = {.name = "offline_delete_seqs", .sql =
        "DELETE FROM offline WHERE owner = $1::text AND seq = ANY ($2::bigint[])"},
    [S_VCARD_GET] = {.name = "vcard_get", .sql =
        "SELECT vcard FROM vcards WHERE owner = $1::text"},
    [S_VCARD_SET] = {.name = "vcard_set", .sql =
        "INSERT INTO vcards (owner, vcard) VALUES ($1::text, $2::text) "
        "ON CONFLICT (owner) DO UPDATE SET vcard = EXCLUDED.vcard, updated_at = now()"},
    [S_PRIVATE_GET] = {.name = "private_get", .sql =
        "SELECT xml FROM private_xml WHERE owner = $1::text AND ns = $2::text"},
    [S_PRIVATE_SET] = {.name = "private_set", .sql =
        "INSERT INTO private_xml (owner, ns, xml) VALUES ($1::text, $2::text, $3::text) "
        "ON CONFLICT (owner, ns) DO UPDATE SET xml = EXCLUDED.xml"},
    [S_BLOCK_LIST] = {.name = "block_list", .sql =
        "SELECT jid FROM blocklist WHERE owner = $1::text ORDER BY jid COLLATE \"C\""},
    [S_BLOCK_ADD] = {.name = "block_add", .sql =
        "INSERT INTO blocklist (owner, jid) VALUES ($1::text, $2::text) ON CONFLICT DO NOTHING"},
    [S_BLOCK_DEL] = {.name = "block_del", .sql =
        "DELETE FROM blocklist WHERE owner = $1::text AND jid = $2::text"},
    [S_BLOCK_CLEAR] = {.name = "block_clear", .sql =
        "DELETE FROM blocklist WHERE owner = $1::text"},
    [S_LAST_GET] = {.name = "last_get", .sql =
        "SELECT " US("stamp") ", status FROM last_activity WHERE owner = $1::text"},
    [S_LAST_SET] = {.name = "last_set", .sql =
        "INSERT INTO last_activity (owner, stamp, status) "
        "VALUES ($1::text, " TS("$2") ", $3::text) "
        "ON CONFLICT (owner) DO UPDATE SET stamp = EXCLUDED.stamp, status = EXCLUDED.status"},
    [S_ARCHIVE_ADD] = {.name = "archive_add", .sql =
        "INSERT INTO archive (owner, stanza_id, with_jid, stamp, stanza) "
        "VALUES ($1::text, $2::text, $3::text, " TS("$4") ", $5::text) "
        "ON CONFLICT (owner, stanza_id) DO NOTHING RETURNING id",
        .empty_err = ERR_EXISTS, .empty_msg = "stanza id already archived"},
    [S_ARCHIVE_QUERY] = {.name = "archive_query", .sql =
        "SELECT id, stanza_id, with_jid, " US("stamp") ", stanza FROM archive "
        "WHERE owner = $1::text AND ($2::text IS NULL OR with_jid = $2::text) "
        "AND ($3::bigint IS NULL OR stamp >= " TS("$3") ") "
        "AND ($4::bigint IS NULL OR stamp < " TS("$4") ") "
        "AND id > $5::bigint ORDER BY id LIMIT $6::int"},
    [S_SUBREQ_LIST] = {.name = "subreq_list", .sql =
        "SELECT jid, stanza FROM subscription_requests WHERE owner = $1::text "
        "ORDER BY stamp, jid COLLATE \"C\""},
    [S_SUBREQ_SET] = {.name = "subreq_set", .sql =
        "INSERT INTO subscription_requests (owner, jid, stanza) "
        "VALUES ($1::text, $2::text, $3::text) "
        "ON CONFLICT (owner, jid) DO UPDATE SET stanza = EXCLUDED.stanza"},
    [S_SUBREQ_DEL] = {.name = "subreq_del", .sql =
        "DELETE FROM subscription_requests WHERE owner = $1::text AND jid = $2::text"},
};
/* clang-format on */

int storage_sql_count(void)
{
    return S_COUNT;
}

const char *storage_sql_name(int stmt)
{
    return stmts[stmt].name;
}

bool storage_sql_secret(int stmt)
{
    /* StoredKey and ServerKey let anyone who reads them impersonate the
     * server to the user (ServerKey) or pass as the user to a server that
     * leaks them (StoredKey with a captured exchange). */
    return stmt == S_CREDS_GET || stmt == S_USER_CREATE;
}

const char *storage_sql_text(int stmt)
{
    return stmts[stmt].sql;
}

int storage_sql_post(int stmt, struct storage_result *res, const char **msg)
{
    const struct stmt_def *d = &stmts[stmt];
    if (d->empty_err != 0 && res->nrows == 0) {
        *msg = d->empty_msg;
        return d->empty_err;
    }
    if (stmt == S_ROSTER_GET && res->nrows > 0) {
        int64_t v = 0;
        storage_result_int64(res, 0, STORAGE_COL_ROSTER_VERSION, &v);
        res->version = v;
        /* The one row of an owner without items only carries the version. */
        if (res->nrows == 1 && PQgetisnull(res->pg, 0, STORAGE_COL_ROSTER_JID))
            res->nrows = 0;
    }
    return 0;
}

/* ---- parameters ---- */

static void p_add(struct storage_params *p, const char *v, size_t len, int fmt)
{
    if (p->err != 0)
        return;
    if (p->n >= STORAGE_MAXP || len > STORAGE_PARAM_MAX) {
        p->err = ERR_INVAL;
        return;
    }
    p->v[p->n] = v;
    p->len[p->n] = (int)len;
    p->fmt[p->n] = fmt;
    p->n++;
}

/* Text; NULL is SQL NULL. */
static void p_text(struct storage_params *p, const char *s)
{
    p_add(p, s, s ? strlen(s) : 0, 0);
}

/* Text that must be given. */
static void p_req(struct storage_params *p, const char *s)
{
    if (s == NULL && p->err == 0)
        p->err = ERR_INVAL;
    p_text(p, s);
}

static void p_int(struct storage_params *p, int64_t v)
{
    if (p->n >= STORAGE_MAXP) {
        p->err = ERR_INVAL;
        return;
    }
    char *b = p->num[p->n];
    snprintf(b, sizeof(p->num[0]), "%" PRId64, v);
    p_text(p, b);
}

static void p_bool(struct storage_params *p, bool v)
{
    p_text(p, v ? "t" : "f");
}

/* bytea, sent in binary format: the bytes as they are. */
static void p_bytes(struct storage_params *p, const unsigned char *b, size_t len)
{
    if (b == NULL && p->err == 0)
        p->err = ERR_INVAL;
    p_add(p, (const char *)b, len, 1);
}

static int one_owner(struct storage *st, int stmt, const char *owner, storage_cb cb, void *arg)
{
    struct storage_params p = {0};
    p_req(&p, owner);
    return storage_submit(st, stmt, &p, cb, arg);
}

static int owner_and(struct storage *st, int stmt, const char *owner, const char *x, storage_cb cb,
                     void *arg)
{
    struct storage_params p = {0};
    p_req(&p, owner);
    p_req(&p, x);
    return storage_submit(st, stmt, &p, cb, arg);
}

static const char *mech_name(enum storage_mech m)
{
    switch (m) {
    case STORAGE_SCRAM_SHA1:
        return "SCRAM-SHA-1";
    case STORAGE_SCRAM_SHA256:
        return "SCRAM-SHA-256";
    }
    return NULL;
}

/* ---- users and credentials ---- */

static char *group_array(const char *const *groups, size_t n);

int storage_user_exists(struct storage *st, const char *jid, storage_cb cb, void *arg)
{
    return one_owner(st, S_USER_EXISTS, jid, cb, arg);
}

int storage_user_seen(struct storage *st, const char *jid, storage_cb cb, void *arg)
{
    return one_owner(st, S_USER_SEEN, jid, cb, arg);
}

int storage_user_claim(struct storage *st, const char *jid, const char *const *stanzas, size_t n,
                       storage_cb cb, void *arg)
{
    if (st == NULL || (n > 0 && stanzas == NULL))
        return ERR_INVAL;
    char *arr = group_array(stanzas, n);
    if (arr == NULL)
        return ERR_INVAL;
    struct storage_params p = {0};
    p_req(&p, jid);
    p_req(&p, arr);
    p_int(&p, storage_offline_quota(st));
    p_int(&p, (int64_t)storage_offline_quota_bytes(st));
    int rc = storage_submit(st, S_USER_CLAIM, &p, cb, arg);
    free(arr);
    return rc;
}

int storage_creds_get(struct storage *st, const char *jid, enum storage_mech mech, storage_cb cb,
                      void *arg)
{
    return owner_and(st, S_CREDS_GET, jid, mech_name(mech), cb, arg);
}

int storage_user_create(struct storage *st, const char *jid, const struct storage_cred *creds,
                        size_t ncreds, storage_cb cb, void *arg)
{
    if (jid == NULL || ncreds > 2 || (ncreds > 0 && creds == NULL))
        return ERR_INVAL;
    const char *at = strchr(jid, '@');
    if (at == NULL || at == jid || at[1] == '\0')
        return ERR_INVAL;
    if (ncreds == 2 && creds[0].mech == creds[1].mech)
        return ERR_INVAL;
    struct storage_params p = {0};
    p_text(&p, jid);
    p_text(&p, at + 1);
    for (size_t i = 0; i < 2; i++) {
        if (i < ncreds) {
            const struct storage_cred *c = &creds[i];
            if (mech_name(c->mech) == NULL || c->iterations <= 0)
                return ERR_INVAL;
            p_text(&p, mech_name(c->mech));
            p_bytes(&p, c->salt, c->salt_len);
            p_int(&p, c->iterations);
            p_bytes(&p, c->stored_key, c->stored_key_len);
            p_bytes(&p, c->server_key, c->server_key_len);
        } else {
            for (int k = 0; k < 5; k++)
                p_text(&p, NULL);
        }
    }
    return storage_submit(st, S_USER_CREATE, &p, cb, arg);
}

/* ---- roster ---- */

int storage_roster_get(struct storage *st, const char *owner, storage_cb cb, void *arg)
{
    return one_owner(st, S_ROSTER_GET, owner, cb, arg);
}

static const char *sub_name(enum storage_sub s)
{
    switch (s) {
    case STORAGE_SUB_NONE:
        return "none";
    case STORAGE_SUB_TO:
        return "to";
    case STORAGE_SUB_FROM:
        return "from";
    case STORAGE_SUB_BOTH:
        return "both";
    }
    return NULL;
}

/* A PostgreSQL array literal {"a","b"} of the groups, each element quoted
 * with '"' and '\' escaped: a parameter value, never SQL. */
static char *group_array(const char *const *groups, size_t n)
{
    size_t len = 3;
    for (size_t i = 0; i < n; i++) {
        if (groups[i] == NULL)
            return NULL;
        len += 3;
        for (const char *s = groups[i]; *s; s++)
            len += (*s == '"' || *s == '\\') ? 2 : 1;
        if (len > STORAGE_PARAM_MAX)
            return NULL;
    }
    char *out = xmalloc(len);
    char *w = out;
    *w++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *w++ = ',';
        *w++ = '"';
        for (const char *s = groups[i]; *s; s++) {
            if (*s == '"' || *s == '\\')
                *w++ = '\\';
            *w++ = *s;
        }
        *w++ = '"';
    }
    *w++ = '}';
    *w = '\0';
    return out;
}

int storage_roster_set_item(struct storage *st, const char *owner,
                            const struct storage_roster_item *item, storage_cb cb, void *arg)
{
    if (item == NULL || sub_name(item->sub) == NULL || (item->ngroups > 0 && !item->groups))
        return ERR_INVAL;
    char *arr = group_array(item->groups, item->ngroups);
    if (arr == NULL)
        return ERR_INVAL;
    struct storage_params p = {0};
    p_req(&p, owner);
    p_req(&p, item->jid);
    p_text(&p, item->name);
    p_text(&p, sub_name(item->sub));
    p_text(&p, item->ask ? "subscribe" : NULL);
    p_bool(&p, item->approved);
    p_text(&p, arr);
    int rc = storage_submit(st, S_ROSTER_SET, &p, cb, arg);
    free(arr);
    return rc;
}

int storage_roster_del_item(struct storage *st, const char *owner, const char *jid, storage_cb cb,
                            void *arg)
{
    return owner_and(st, S_ROSTER_DEL, owner, jid, cb, arg);
}

/* ---- offline ---- */

/* The one store statement, with the quotas it enforces. */
static int offline_store(struct storage *st, const char *owner, int64_t stamp_us,
                         const char *stanza, int64_t quota, int64_t quota_bytes, storage_cb cb,
                         void *arg)
{
    if (st == NULL)
        return ERR_INVAL;
    struct storage_params p = {0};
    p_req(&p, owner);
    p_int(&p, stamp_us);
    p_req(&p, stanza);
    p_int(&p, quota);
    p_int(&p, quota_bytes);
    return storage_submit(st, S_OFFLINE_STORE, &p, cb, arg);
}

int storage_offline_store(struct storage *st, const char *owner, int64_t stamp_us,
                          const char *stanza, storage_cb cb, void *arg)
{
    if (st == NULL)
        return ERR_INVAL;
    return offline_store(st, owner, stamp_us, stanza, storage_offline_quota(st),
                         (int64_t)storage_offline_quota_bytes(st), cb, arg);
}

int storage_offline_restore(struct storage *st, const char *owner, int64_t stamp_us,
                            const char *stanza, storage_cb cb, void *arg)
{
    /* The store statement with quotas no owner can reach. */
    return offline_store(st, owner, stamp_us, stanza, INT64_MAX, INT64_MAX, cb, arg);
}

int storage_offline_fetch(struct storage *st, const char *owner, int limit, storage_cb cb,
                          void *arg)
{
    if (limit < 1 || limit > 10000)
        return ERR_INVAL;
    struct storage_params p = {0};
    p_req(&p, owner);
    p_int(&p, limit);
    return storage_submit(st, S_OFFLINE_FETCH, &p, cb, arg);
}

int storage_offline_delete_seqs(struct storage *st, const char *owner, const int64_t *seqs,
                                size_t n, storage_cb cb, void *arg)
{
    if (seqs == NULL || n < 1 || n > 10000)
        return ERR_INVAL;
    /* An array literal {1,2,3}: a parameter value, never SQL. */
    struct buf b = BUF_INIT;
    buf_append_byte(&b, '{');
    for (size_t i = 0; i < n; i++)
        buf_printf(&b, "%s%" PRId64, i ? "," : "", seqs[i]);
    buf_append_byte(&b, '}');
    struct storage_params p = {0};
    p_req(&p, owner);
    p_text(&p, b.data);
    int rc = storage_submit(st, S_OFFLINE_DELETE_SEQS, &p, cb, arg);
    buf_free(&b);
    return rc;
}

/* ---- vcard, private ---- */

int storage_vcard_get(struct storage *st, const char *owner, storage_cb cb, void *arg)
{
    return one_owner(st, S_VCARD_GET, owner, cb, arg);
}

int storage_vcard_set(struct storage *st, const char *owner, const char *vcard, storage_cb cb,
                      void *arg)
{
    return owner_and(st, S_VCARD_SET, owner, vcard, cb, arg);
}

int storage_private_get(struct storage *st, const char *owner, const char *ns, storage_cb cb,
                        void *arg)
{
    return owner_and(st, S_PRIVATE_GET, owner, ns, cb, arg);
}

int storage_private_set(struct storage *st, const char *owner, const char *ns, const char *xml,
                        storage_cb cb, void *arg)
{
    struct storage_params p = {0};
    p_req(&p, owner);
    p_req(&p, ns);
    p_req(&p, xml);
    return storage_submit(st, S_PRIVATE_SET, &p, cb, arg);
}

/* ---- blocklist ---- */

int storage_block_list(struct storage *st, const char *owner, storage_cb cb, void *arg)
{
    return one_owner(st, S_BLOCK_LIST, owner, cb, arg);
}

int storage_block_add(struct storage *st, const char *owner, const char *jid, storage_cb cb,
                      void *arg)
{
    return owner_and(st, S_BLOCK_ADD, owner, jid, cb, arg);
}

int storage_block_del(struct storage *st, const char *owner, const char *jid, storage_cb cb,
                      void *arg)
{
    return owner_and(st, S_BLOCK_DEL, owner, jid, cb, arg);
}

int storage_block_clear(struct storage *st, const char *owner, storage_cb cb, void *arg)
{
    return one_owner(st, S_BLOCK_CLEAR, owner, cb, arg);
}

/* ---- inbound subscription requests ---- */

int storage_subreq_list(struct storage *st, const char *owner, storage_cb cb, void *arg)
{
    return one_owner(st, S_SUBREQ_LIST, owner, cb, arg);
}

int storage_subreq_set(struct storage *st, const char *owner, const char *jid, const char *stanza,
                       storage_cb cb, void *arg)
{
    if (st == NULL)
        return ERR_INVAL;
    struct storage_params p = {0};
    p_req(&p, owner);
    p_req(&p, jid);
    p_req(&p, stanza);
    return storage_submit(st, S_SUBREQ_SET, &p, cb, arg);
}

int storage_subreq_del(struct storage *st, const char *owner, const char *jid, storage_cb cb,
                       void *arg)
{
    return owner_and(st, S_SUBREQ_DEL, owner, jid, cb, arg);
}

/* ---- last activity ---- */

int storage_last_get(struct storage *st, const char *owner, storage_cb cb, void *arg)
{
    return one_owner(st, S_LAST_GET, owner, cb, arg);
}

int storage_last_set(struct storage *st, const char *owner, int64_t stamp_us, const char *status,
                     storage_cb cb, void *arg)
{
    struct storage_params p = {0};
    p_req(&p, owner);
    p_int(&p, stamp_us);
    p_text(&p, status);
    return storage_submit(st, S_LAST_SET, &p, cb, arg);
}

/* ---- archive ---- */

int storage_archive_add(struct storage *st, const char *owner, const char *stanza_id,
                        const char *with, int64_t stamp_us, const char *stanza, storage_cb cb,
                        void *arg)
{
    struct storage_params p = {0};
    p_req(&p, owner);
    p_req(&p, stanza_id);
    p_req(&p, with);
    p_int(&p, stamp_us);
    p_req(&p, stanza);
    return storage_submit(st, S_ARCHIVE_ADD, &p, cb, arg);
}

int storage_archive_query(struct storage *st, const char *owner,
                          const struct storage_archive_query *q, storage_cb cb, void *arg)
{
    if (q == NULL || q->limit < 1 || q->limit > 1000 || q->after_id < 0)
        return ERR_INVAL;
    struct storage_params p = {0};
    p_req(&p, owner);
    p_text(&p, q->with);
    if (q->start_us == INT64_MIN)
        p_text(&p, NULL);
    else
        p_int(&p, q->start_us);
    if (q->end_us == INT64_MAX)
        p_text(&p, NULL);
    else
        p_int(&p, q->end_us);
    p_int(&p, q->after_id);
    p_int(&p, q->limit);
    return storage_submit(st, S_ARCHIVE_QUERY, &p, cb, arg);
}
