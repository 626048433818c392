/*
 * storage_migrate.c - test driver for storage/migrate.c (synchronous
 * libpq, like parleyctl). Used by tests/integration/test_storage_schema.py
 * and pg.py to migrate a throwaway cluster.
 *
 *   storage_migrate DSN migrate DIR   -> "applied N", exit 0; or the error, exit 1
 *   storage_migrate DSN status DIR    -> "current C latest L", exit 0
 */
#include "autoconfig.h"

#include <stdio.h>
#include <string.h>

#include <libpq-fe.h>

#include "storage/migrate.h"

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s DSN migrate|status DIR\n", argv[0]);
        return 2;
    }
    PGconn *conn = PQconnectdb(argv[1]);
    if (PQstatus(conn) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(conn));
        PQfinish(conn);
        return 1;
    }
    char err[1024] = "";
    int rc;
    if (strcmp(argv[2], "migrate") == 0) {
        int applied = -1;
        rc = storage_migrate(conn, argv[3], &applied, err, sizeof(err));
        printf("applied %d\n", applied);
    } else if (strcmp(argv[2], "status") == 0) {
        int cur = -1, latest = -1;
        rc = storage_schema_status(conn, argv[3], &cur, &latest, err, sizeof(err));
        if (rc == 0)
            printf("current %d latest %d\n", cur, latest);
    } else {
        fprintf(stderr, "unknown command %s\n", argv[2]);
        rc = 2;
    }
    if (rc != 0)
        fprintf(stderr, "error %d: %s\n", rc, err);
    PQfinish(conn);
    return rc == 0 ? 0 : 1;
}
