/*
 * migrate.h - apply storage/schema/NNN-name.sql to a database, and report
 * the schema version. For parleyctl only.
 *
 * These calls use synchronous libpq (PQexec): they block. That is fine in a
 * command-line tool and wrong in a daemon; daemons never call them.
 *
 * Schema files are named NNN-name.sql (NNN: three digits, from 001, no
 * gaps needed; name: letters, digits, '-' and '_'), applied in version
 * order, each in its own transaction together with its row in
 * parley_schema(version, name, applied_at). A file that fails rolls back
 * whole and stops the run; versions already recorded are skipped, so a
 * second run is a no-op. A transaction-level advisory lock serialises
 * concurrent runs. The connection must belong to a role that may create
 * the roles and objects (the cluster's superuser on a fresh install).
 */
#ifndef PARLEY_STORAGE_MIGRATE_H
#define PARLEY_STORAGE_MIGRATE_H

#include <stddef.h>

#include <libpq-fe.h>

/*
 * Apply every file in schema_dir newer than the database's version.
 * *applied (may be NULL) gets the number of files applied, also on error
 * (those before the failing one stay applied). Returns 0, ERR_INVAL (bad
 * file name, duplicate version, unreadable directory or file), ERR_DB
 * (the database refused; err holds PostgreSQL's message and the file
 * name). err (may be NULL) gets a one-line message on failure.
 */
int storage_migrate(PGconn *conn, const char *schema_dir, int *applied, char *err, size_t errlen);

/*
 * Versions: *current is the highest version recorded in the database (0
 * when parley_schema does not exist yet), *latest the highest file in
 * schema_dir. Returns 0, ERR_INVAL or ERR_DB as above. Nothing is changed.
 */
int storage_schema_status(PGconn *conn, const char *schema_dir, int *current, int *latest,
                          char *err, size_t errlen);

#endif
