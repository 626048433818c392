/*
 * migrate.c - schema migrations for parleyctl (see migrate.h).
 *
 * Synchronous libpq on purpose: parleyctl is a command-line tool, so
 * blocking is fine here; daemons never link these calls into a loop.
 * Everything sent to the server besides the schema files themselves (which
 * are trusted files from the installation) is a fixed statement with
 * parameters.
 */
#include "autoconfig.h"

#include "storage/migrate.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/err.h"
#include "common/mem.h"

/* Schema files are small; a larger one is a mistake, not a schema. */
#define MIGRATE_FILE_MAX (1024 * 1024)
/* Key of the advisory lock that serialises concurrent runs ("parley"). */
#define MIGRATE_LOCK_KEY "7070617260"

struct migration {
    int version;
    char *name; /* file name without ".sql" */
    char *path;
};

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    /* One line: PostgreSQL's messages end with a newline and may hold more. */
    for (char *p = err; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = (p[1] == '\0') ? '\0' : ' ';
}

/* "NNN-name.sql" -> version, or -1. */
static int parse_name(const char *f)
{
    size_t n = strlen(f);
    if (n < 9 || strcmp(f + n - 4, ".sql") != 0)
        return -1;
    for (int i = 0; i < 3; i++)
        if (f[i] < '0' || f[i] > '9')
            return -1;
    if (f[3] != '-')
        return -1;
    for (size_t i = 4; i < n - 4; i++) {
        char c = f[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return -1;
    }
    int v = (f[0] - '0') * 100 + (f[1] - '0') * 10 + (f[2] - '0');
    return v > 0 ? v : -1;
}

static int cmp_migration(const void *a, const void *b)
{
    const struct migration *x = a, *y = b;
    return (x->version > y->version) - (x->version < y->version);
}

static void free_list(struct migration *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(m[i].name);
        free(m[i].path);
    }
    free(m);
}

/* The schema files of dir, sorted by version. Other files are ignored
 * unless they end in .sql, which must then be well named. */
static int list_dir(const char *dir, struct migration **out, size_t *nout, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        seterr(err, errlen, "cannot open schema directory %s: %s", dir, strerror(errno));
        return ERR_INVAL;
    }
    struct migration *m = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".sql") != 0)
            continue;
        int v = parse_name(e->d_name);
        if (v < 0) {
            seterr(err, errlen, "%s/%s: schema files are named NNN-name.sql", dir, e->d_name);
            rc = ERR_INVAL;
            break;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            m = xreallocarray(m, cap, sizeof(*m));
        }
        m[n].version = v;
        m[n].name = xstrndup(e->d_name, len - 4);
        size_t plen = strlen(dir) + 1 + len + 1;
        m[n].path = xmalloc(plen);
        snprintf(m[n].path, plen, "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (rc == 0 && n > 0) {
        qsort(m, n, sizeof(*m), cmp_migration);
        for (size_t i = 1; i < n; i++)
            if (m[i].version == m[i - 1].version) {
                seterr(err, errlen, "%s: two schema files for version %03d", dir, m[i].version);
                rc = ERR_INVAL;
                break;
            }
    }
    if (rc != 0) {
        free_list(m, n);
        return rc;
    }
    *out = m;
    *nout = n;
    return 0;
}

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        seterr(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = xmalloc(MIGRATE_FILE_MAX + 1);
    size_t n = fread(buf, 1, MIGRATE_FILE_MAX + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > MIGRATE_FILE_MAX || memchr(buf, '\0', n) != NULL) {
        seterr(err, errlen, "%s: unreadable, too large or binary", path);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Run a fixed statement; 0 or ERR_DB with the server's message. */
static int exec_ok(PGconn *conn, const char *sql, int nparams, const char *const *params,
                   PGresult **keep, const char *what, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        seterr(err, errlen, "%s: %s", what, PQerrorMessage(conn));
        PQclear(r);
        return ERR_DB;
    }
    if (keep != NULL)
        *keep = r;
    else
        PQclear(r);
    return 0;
}

static void rollback(PGconn *conn)
{
    PQclear(PQexec(conn, "ROLLBACK"));
}

/* Highest recorded version, 0 without the table. Inside or outside a
 * transaction. */
static int db_version(PGconn *conn, int *version, bool *exists, char *err, size_t errlen)
{
    PGresult *r = NULL;
    int rc = exec_ok(conn, "SELECT to_regclass('parley_schema') IS NOT NULL", 0, NULL, &r,
                     "reading the schema version", err, errlen);
    if (rc != 0)
        return rc;
    *exists = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    *version = 0;
    if (!*exists)
        return 0;
    rc = exec_ok(conn, "SELECT coalesce(max(version), 0) FROM parley_schema", 0, NULL, &r,
                 "reading the schema version", err, errlen);
    if (rc != 0)
        return rc;
    *version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

static int apply_one(PGconn *conn, const struct migration *m, int *done, char *err, size_t errlen)
{
    char *sql = read_file(m->path, err, errlen);
    if (sql == NULL)
        return ERR_INVAL;
    int rc = exec_ok(conn, "BEGIN", 0, NULL, NULL, "BEGIN", err, errlen);
    if (rc != 0) {
        free(sql);
        return rc;
    }
    /* Serialise with other runs, then look again: one may have won. */
    rc = exec_ok(conn, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL,
                 "taking the migration lock", err, errlen);
    int current = 0;
    bool exists = false;
    if (rc == 0)
        rc = db_version(conn, &current, &exists, err, errlen);
    /* Checked first rather than IF NOT EXISTS, whose NOTICE would reach
     * parleyctl's stderr. */
    if (rc == 0 && !exists)
        rc = exec_ok(conn,
                     "CREATE TABLE parley_schema (version int PRIMARY KEY, "
                     "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                     0, NULL, NULL, "creating parley_schema", err, errlen);
    if (rc == 0 && current >= m->version) {
        free(sql);
        rollback(conn);
        *done = 0;
        return 0;
    }
    if (rc == 0) {
        /* The file is trusted installation data; it may hold several
         * statements, hence the simple-query protocol. */
        PGresult *r = PQexec(conn, sql);
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            seterr(err, errlen, "%s.sql: %s", m->name, PQerrorMessage(conn));
            rc = ERR_DB;
        }
        PQclear(r);
    }
    free(sql);
    if (rc == 0) {
        char vbuf[16];
        snprintf(vbuf, sizeof(vbuf), "%d", m->version);
        const char *p[2] = {vbuf, m->name};
        rc = exec_ok(conn, "INSERT INTO parley_schema (version, name) VALUES ($1::int, $2)", 2, p,
                     NULL, "recording the version", err, errlen);
    }
    if (rc == 0)
        rc = exec_ok(conn, "COMMIT", 0, NULL, NULL, "COMMIT", err, errlen);
    if (rc != 0) {
        rollback(conn);
        return rc;
    }
    *done = 1;
    return 0;
}

int storage_migrate(PGconn *conn, const char *schema_dir, int *applied, char *err, size_t errlen)
{
    if (applied != NULL)
        *applied = 0;
    if (conn == NULL || schema_dir == NULL || PQstatus(conn) != CONNECTION_OK) {
        seterr(err, errlen, "no database connection");
        return ERR_INVAL;
    }
    struct migration *m = NULL;
    size_t n = 0;
    int rc = list_dir(schema_dir, &m, &n, err, errlen);
    if (rc != 0)
        return rc;
    int current = 0;
    bool exists;
    rc = db_version(conn, &current, &exists, err, errlen);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (m[i].version <= current)
            continue;
        int done = 0;
        rc = apply_one(conn, &m[i], &done, err, errlen);
        if (rc == 0 && done && applied != NULL)
            (*applied)++;
    }
    free_list(m, n);
    return rc;
}

int storage_schema_status(PGconn *conn, const char *schema_dir, int *current, int *latest,
                          char *err, size_t errlen)
{
    if (conn == NULL || schema_dir == NULL || PQstatus(conn) != CONNECTION_OK) {
        seterr(err, errlen, "no database connection");
        return ERR_INVAL;
    }
    struct migration *m = NULL;
    size_t n = 0;
    int rc = list_dir(schema_dir, &m, &n, err, errlen);
    if (rc != 0)
        return rc;
    *latest = n > 0 ? m[n - 1].version : 0;
    free_list(m, n);
    bool exists;
    return db_version(conn, current, &exists, err, errlen);
}
