/*
 * storage.h - Parley's asynchronous PostgreSQL layer: a small pool of libpq
 * connections on a daemon's libuv loop, and a typed API per kind of data so
 * that no daemon module ever writes SQL.
 *
 * Runs on the loop given to storage_new, single-threaded; nothing blocks
 * (libpq's non-blocking connect and send, uv_poll on each socket). A host
 * given by name (in the DSN, or by PGHOST or the PGSERVICE service file
 * when the DSN names none) is resolved once by storage_new (call it at
 * start-up, before the loop runs): libpq would otherwise resolve it inside
 * PQconnectStart, on the loop, at every reconnect. storage_new returns
 * ERR_INVAL for a DSN that does not parse, a host name that does not
 * resolve, several host names, or a service= without host= or hostaddr=.
 *
 * Queries. Every typed call is one prepared statement with parameters (the
 * statements are fixed at compile time, prepared once per connection), run
 * as its own transaction. A call returns 0 when the query was taken: its
 * callback then runs exactly once, later, from the loop (never from inside
 * the call). A call that returns an error (ERR_INVAL: a NULL or oversized
 * argument; ERR_LIMIT: the wait queue is full, or the query's parameters
 * would take the bytes held by waiting and in-flight queries past
 * queue_max_bytes; ERR_CLOSED: storage_free was called) never calls back.
 *
 * Delivery contract. A taken query is sent on a ready connection, or waits
 * in a bounded FIFO queue while none has room (no connection up, or all
 * busy). It fails with ERR_TIMEOUT when it waited longer than
 * query_timeout_ms for a connection, or ran longer than that on the server
 * (statement_timeout is set to the same value); a connection that gives no
 * answer within twice the timeout is dropped (as below, with ERR_TIMEOUT).
 * When
 * a connection breaks (PostgreSQL restarted or went away), every query
 * sent on it and not yet answered fails with ERR_DB ("connection lost"):
 * it may or may not have been committed, and it is never re-sent, so
 * nothing is applied twice. Queries still waiting in the queue are sent
 * once a connection is back. Connections reconnect with exponential
 * back-off (backoff_min_ms doubling up to backoff_max_ms, with jitter).
 *
 * Callback: void cb(void *arg, int err, const struct storage_result *res).
 * err is 0 or a negative code: ERR_NOTFOUND (the owner is not a user: a
 * foreign-key violation; or nothing to delete where documented), ERR_EXISTS
 * (unique violation), ERR_LIMIT (offline quota), ERR_PERM (the role may not
 * do that), ERR_TIMEOUT, ERR_CLOSED, ERR_DB (anything else). res is never
 * NULL: on error storage_result_error() holds a one-line message and there
 * are no rows. res and every pointer obtained from it (texts, bytea) are
 * owned by storage and valid only until the callback returns: copy what
 * you keep. Callbacks may issue new queries and may call storage_free.
 *
 * Rows. Each typed call below lists its result columns (STORAGE_COL_*
 * constants); read them with the storage_result_* getters, which check the
 * row/column range and NULLs. Times are microseconds since the Unix epoch
 * (int64). "get" calls that find nothing succeed with zero rows.
 *
 * Strings are UTF-8 and must not hold NUL; JIDs are prepped bare JIDs
 * (common/jid). Each text argument is limited to STORAGE_PARAM_MAX bytes.
 */
#ifndef PARLEY_STORAGE_H
#define PARLEY_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define STORAGE_PARAM_MAX (16 * 1024 * 1024)

struct storage;
struct storage_result;

typedef void (*storage_cb)(void *arg, int err, const struct storage_result *res);

struct storage_opts {
    const char *dsn;            /* libpq connection string (required; copied) */
    const char *password;       /* if not NULL: added to dsn as a quoted password=
                                   parameter (copied; the copy is wiped on free) */
    unsigned pool_size;         /* connections (default 2, at most 64) */
    unsigned query_timeout_ms;  /* per query, waiting + running (default 10000) */
    unsigned queue_max;         /* queries waiting for a connection (default 10000) */
    size_t queue_max_bytes;     /* parameter bytes of waiting and in-flight queries
                                   together (default 64 MiB) */
    unsigned pipeline_depth;    /* in flight per connection in pipeline mode (default 128) */
    bool no_pipeline;           /* one query at a time per connection */
    unsigned backoff_min_ms;    /* first reconnect delay (default 100) */
    unsigned backoff_max_ms;    /* cap of the doubling delay (default 5000) */
    unsigned offline_quota;     /* max queued offline messages per user (default 1000) */
    size_t offline_quota_bytes; /* max bytes of queued offline stanzas per user
                                   (default 1 MiB) */
};

struct storage_stats {
    unsigned conns_ready; /* connections up and prepared */
    unsigned waiting;     /* queries in the wait queue */
    unsigned in_flight;   /* queries sent, not answered */
    uint64_t completed;   /* callbacks run with err == 0 */
    uint64_t failed;      /* callbacks run with err != 0 */
    uint64_t reconnects;  /* connections established after a loss */
};

/*
 * Create the pool and start connecting (asynchronously: a bad DSN or an
 * unreachable server shows as queries waiting, then timing out, and one log
 * line per connection loss episode). Returns 0 or ERR_INVAL.
 */
int storage_new(uv_loop_t *loop, const struct storage_opts *opts, struct storage **out);

/*
 * Fail every waiting and in-flight query with ERR_CLOSED (their callbacks
 * run from inside this call, or, when called from inside a storage
 * callback, once that callback returns), close the connections, and free
 * the pool once its handles are closed (the loop must run for that). No
 * callback runs after that. NULL is fine.
 */
void storage_free(struct storage *st);

void storage_get_stats(const struct storage *st, struct storage_stats *out);

/* ---- results ---- */

int storage_result_rows(const struct storage_result *res);
int storage_result_cols(const struct storage_result *res);
/* Rows changed by an INSERT/UPDATE/DELETE (where documented). */
int64_t storage_result_affected(const struct storage_result *res);
/* The error message when err != 0; "" otherwise. Never NULL. */
const char *storage_result_error(const struct storage_result *res);
/* True for SQL NULL and for a row/column out of range. */
bool storage_result_null(const struct storage_result *res, int row, int col);
/* NUL-terminated text, NULL for SQL NULL or out of range. */
const char *storage_result_text(const struct storage_result *res, int row, int col);
/* Bytes of a bytea column (*len set), NULL for SQL NULL or out of range. */
const unsigned char *storage_result_bytea(const struct storage_result *res, int row, int col,
                                          size_t *len);
/* 0, ERR_NOTFOUND (NULL or out of range) or ERR_PARSE (not that type). */
int storage_result_int64(const struct storage_result *res, int row, int col, int64_t *out);
int storage_result_bool(const struct storage_result *res, int row, int col, bool *out);

/* ---- users and credentials (parley_c2s; user_exists also parley_sm) ---- */

/* One row: exists (bool). */
int storage_user_exists(struct storage *st, const char *jid, storage_cb cb, void *arg);
/* parley_sm: the account, and whether an sm has loaded it before (its
 * first-seen mark, storage/schema/003). Zero rows (no account) or one:
 * seen (bool). */
int storage_user_seen(struct storage *st, const char *jid, storage_cb cb, void *arg);
/* parley_sm: claim a new account: set its first-seen mark unless it is
 * set and, in the same transaction, queue stanzas[0..n) (self-contained
 * XML, in order) offline for it, all or none under the offline quotas
 * (over them: the mark alone). One row when this call set the mark: how
 * many stanzas were stored (int64); zero rows when it was set already or
 * the account is gone. Atomic: of two concurrent calls (two sm instances)
 * one claims, the other waits for its row lock and then finds it set. An
 * error (answer lost included) may have committed both or neither, never
 * one without the other. */
int storage_user_claim(struct storage *st, const char *jid, const char *const *stanzas, size_t n,
                       storage_cb cb, void *arg);

enum storage_mech { STORAGE_SCRAM_SHA1, STORAGE_SCRAM_SHA256 };

struct storage_cred {
    enum storage_mech mech;
    const unsigned char *salt;
    size_t salt_len;
    int iterations;
    const unsigned char *stored_key;
    size_t stored_key_len;
    const unsigned char *server_key;
    size_t server_key_len;
};

enum {
    STORAGE_COL_CRED_SALT,
    STORAGE_COL_CRED_ITERATIONS,
    STORAGE_COL_CRED_STORED_KEY,
    STORAGE_COL_CRED_SERVER_KEY
};
/* Zero rows (no such user or mechanism) or one: salt, iterations (int),
 * stored_key, server_key (bytea). */
int storage_creds_get(struct storage *st, const char *jid, enum storage_mech mech, storage_cb cb,
                      void *arg);

/* Create the user (domain: the part after '@') with one or two credentials
 * (distinct mechanisms), atomically. ERR_EXISTS if the user exists. */
int storage_user_create(struct storage *st, const char *jid, const struct storage_cred *creds,
                        size_t ncreds, storage_cb cb, void *arg);

/* ---- roster (XEP-0237 versioned) ---- */

enum storage_sub { STORAGE_SUB_NONE, STORAGE_SUB_TO, STORAGE_SUB_FROM, STORAGE_SUB_BOTH };

enum {
    STORAGE_COL_ROSTER_VERSION,
    STORAGE_COL_ROSTER_JID,
    STORAGE_COL_ROSTER_NAME,
    STORAGE_COL_ROSTER_SUB,
    STORAGE_COL_ROSTER_ASK,
    STORAGE_COL_ROSTER_APPROVED,
    STORAGE_COL_ROSTER_GROUP
};
/*
 * The whole roster: one row per (item, group), ordered by jid then group;
 * an item without groups has one row with group NULL. Columns: version
 * (int64, the same on every row), jid, name (NULL: none), subscription
 * ("none"|"to"|"from"|"both"), ask (NULL or "subscribe"), approved (bool),
 * group. An empty roster has zero rows; its version is in
 * storage_roster_version().
 */
int storage_roster_get(struct storage *st, const char *owner, storage_cb cb, void *arg);
/* The roster version of a storage_roster_get result (0: never changed). */
int64_t storage_roster_version(const struct storage_result *res);

struct storage_roster_item {
    const char *jid;
    const char *name; /* NULL: none */
    enum storage_sub sub;
    bool ask;      /* a subscription request is pending */
    bool approved; /* pre-approved */
    const char *const *groups;
    size_t ngroups;
};

/* Insert or replace one item and its groups, bump the version. One row:
 * the new version (int64). */
int storage_roster_set_item(struct storage *st, const char *owner,
                            const struct storage_roster_item *item, storage_cb cb, void *arg);
/* Delete one item, bump the version. One row: the new version;
 * ERR_NOTFOUND (version untouched) when there was no such item. */
int storage_roster_del_item(struct storage *st, const char *owner, const char *jid, storage_cb cb,
                            void *arg);

/* ---- offline messages ---- */

/* Queue a stanza (stamp_us 0: now). One row: seq (int64). ERR_LIMIT when
 * the owner already has offline_quota messages queued, or when the stanza
 * would take the owner's queued bytes past offline_quota_bytes. */
int storage_offline_store(struct storage *st, const char *owner, int64_t stamp_us,
                          const char *stanza, storage_cb cb, void *arg);
/* The same without the quotas: a message accepted once (stored, or taken
 * for a session) that must not be lost when it is put back, e.g. one a
 * congested c2s returned. The quotas bound what senders can queue; this
 * only returns what they already had accepted. */
int storage_offline_restore(struct storage *st, const char *owner, int64_t stamp_us,
                            const char *stanza, storage_cb cb, void *arg);
enum { STORAGE_COL_OFFLINE_SEQ, STORAGE_COL_OFFLINE_STAMP, STORAGE_COL_OFFLINE_STANZA };
/* Up to limit (1..10000) oldest messages: seq, stamp (µs), stanza; by seq. */
int storage_offline_fetch(struct storage *st, const char *owner, int limit, storage_cb cb,
                          void *arg);
/* Delete exactly the owner's messages whose seq is one of seqs (1..10000 of
 * them): what a fetch returned, and nothing stored meanwhile with a lower
 * seq (a bigserial is taken before commit, so a row may appear below seqs
 * already seen). storage_result_affected says how many. */
int storage_offline_delete_seqs(struct storage *st, const char *owner, const int64_t *seqs,
                                size_t n, storage_cb cb, void *arg);

/* ---- vcard-temp, private XML (XEP-0049) ---- */

/* Zero rows or one: vcard (text). */
int storage_vcard_get(struct storage *st, const char *owner, storage_cb cb, void *arg);
int storage_vcard_set(struct storage *st, const char *owner, const char *vcard, storage_cb cb,
                      void *arg);
/* Zero rows or one: xml (text). */
int storage_private_get(struct storage *st, const char *owner, const char *ns, storage_cb cb,
                        void *arg);
int storage_private_set(struct storage *st, const char *owner, const char *ns, const char *xml,
                        storage_cb cb, void *arg);

/* ---- blocklist (XEP-0191) ---- */

/* Rows: jid, ordered. */
int storage_block_list(struct storage *st, const char *owner, storage_cb cb, void *arg);
/* Adding a blocked JID again is fine; affected says 1 or 0. */
int storage_block_add(struct storage *st, const char *owner, const char *jid, storage_cb cb,
                      void *arg);
/* affected: 1 or 0. */
int storage_block_del(struct storage *st, const char *owner, const char *jid, storage_cb cb,
                      void *arg);
int storage_block_clear(struct storage *st, const char *owner, storage_cb cb, void *arg);

/* ---- inbound subscription requests (RFC 6121 §3.1.3) ---- */

enum { STORAGE_COL_SUBREQ_JID, STORAGE_COL_SUBREQ_STANZA };
/* Rows: jid, stanza (the request as received); oldest first. */
int storage_subreq_list(struct storage *st, const char *owner, storage_cb cb, void *arg);
/* Record (or replace) the pending request from jid. */
int storage_subreq_set(struct storage *st, const char *owner, const char *jid, const char *stanza,
                       storage_cb cb, void *arg);
/* Forget it; affected says 1 or 0. */
int storage_subreq_del(struct storage *st, const char *owner, const char *jid, storage_cb cb,
                       void *arg);

/* ---- last activity (XEP-0012) ---- */

enum { STORAGE_COL_LAST_STAMP, STORAGE_COL_LAST_STATUS };
/* Zero rows or one: stamp (µs), status (NULL: none). */
int storage_last_get(struct storage *st, const char *owner, storage_cb cb, void *arg);
int storage_last_set(struct storage *st, const char *owner, int64_t stamp_us, const char *status,
                     storage_cb cb, void *arg);

/* ---- message archive (for XEP-0313) ---- */

/* One row: id (int64). ERR_EXISTS when (owner, stanza_id) is archived. */
int storage_archive_add(struct storage *st, const char *owner, const char *stanza_id,
                        const char *with, int64_t stamp_us, const char *stanza, storage_cb cb,
                        void *arg);

struct storage_archive_query {
    const char *with; /* NULL: any peer */
    int64_t start_us; /* stamp >= start (INT64_MIN: unbounded) */
    int64_t end_us;   /* stamp < end (INT64_MAX: unbounded) */
    int64_t after_id; /* id > after_id (0: from the first) */
    int limit;        /* 1..1000 */
};
enum {
    STORAGE_COL_ARCH_ID,
    STORAGE_COL_ARCH_STANZA_ID,
    STORAGE_COL_ARCH_WITH,
    STORAGE_COL_ARCH_STAMP,
    STORAGE_COL_ARCH_STANZA
};
/* Rows: id, stanza_id, with, stamp (µs), stanza; ordered by id. */
int storage_archive_query(struct storage *st, const char *owner,
                          const struct storage_archive_query *q, storage_cb cb, void *arg);

#endif
