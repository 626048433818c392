/*
 * storage_int.h - what storage.c (the engine) and storage_sql.c (the typed
 * statements) share. Not for users of storage/: they see storage.h.
 */
#ifndef PARLEY_STORAGE_INT_H
#define PARLEY_STORAGE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <libpq-fe.h>

#include "storage/storage.h"

#define STORAGE_MAXP     12
#define STORAGE_BYTEAOID 17 /* pg_type.oid of bytea */

/* Parameters of one statement being built (see storage_sql.c). Values
 * point into the caller's memory or into num[]; storage_submit copies. */
struct storage_params {
    int n;
    int err; /* first error while building: the call fails with it */
    const char *v[STORAGE_MAXP];
    int len[STORAGE_MAXP];
    int fmt[STORAGE_MAXP]; /* 0 text, 1 binary */
    char num[STORAGE_MAXP][24];
};

struct query {
    struct query *next;
    int stmt;
    int n;
    const char *v[STORAGE_MAXP];
    int len[STORAGE_MAXP];
    int fmt[STORAGE_MAXP];
    char *data;      /* one block holding the parameter copies */
    size_t size;     /* what it counts against queue_max_bytes */
    size_t data_len; /* bytes in data */
    uint64_t deadline;
    storage_cb cb;
    void *arg;
};

struct bytea_buf;

struct storage_result {
    PGresult *pg; /* NULL on error */
    int nrows;
    int64_t affected;
    int64_t version;
    const char *errmsg;
    struct bytea_buf *decoded; /* storage_result_bytea copies, freed after the callback */
    bool secret;               /* wipe the decoded copies (storage_sql_secret) */
};

/* Free what the getters allocated (bytea copies); the PGresult stays. */
void storage_result_release(struct storage_result *res);

/* Queue statement stmt with p; see storage.h for the contract. */
int storage_submit(struct storage *st, int stmt, const struct storage_params *p, storage_cb cb,
                   void *arg);
unsigned storage_offline_quota(const struct storage *st);
size_t storage_offline_quota_bytes(const struct storage *st);

int storage_sql_count(void);
const char *storage_sql_name(int stmt);
const char *storage_sql_text(int stmt);
/* True for statements whose parameters or results hold credentials: their
 * copies are wiped before they are freed. */
bool storage_sql_secret(int stmt);
/* Statement-specific checks and shaping of a successful result: returns 0
 * or an error (with *msg set) for results that mean a refusal. */
int storage_sql_post(int stmt, struct storage_result *res, const char **msg);

#endif
