/*
 * users.h - the router's component table (etc/router-users.xml).
 *
 * One entry per <component>: its name (the route it owns; prepped as a
 * domain), its secret (inline or from a file, never defaulted), whether it
 * is internal (may use urn:parley:router), whether several instances may be
 * up at once (multi), whether it may take the default route, the Unix uid
 * that must be at the other end of the socket (SO_PEERCRED), and the
 * domains it may bind (internal) or owns from its handshake on (external).
 *
 * A table is built whole from one file and is immutable afterwards; a
 * reload (HUP) builds a new one and swaps it in. Connections copy what they
 * need from their entry at handshake time and never hold a pointer into a
 * table. Secrets are wiped when the table is freed.
 *
 * Start-up and reload only (reads files); runs on the router's loop thread.
 */
#ifndef PARLEY_ROUTER_USERS_H
#define PARLEY_ROUTER_USERS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct users_entry {
    char *name;   /* prepped domain form */
    char *secret; /* wiped on free */
    size_t secret_len;
    bool internal;
    bool multi;
    bool default_route;
    bool has_uid;
    uid_t uid;
    char **domains; /* prepped, no duplicates */
    size_t ndomains;
};

struct users;

/* Read and check the file (root <components>). Returns 0 and *out, or
 * ERR_IO / ERR_LIMIT / ERR_PARSE / ERR_CONFIG with every problem logged and
 * the first in err. */
int users_load(const char *file, struct users **out, char *err, size_t errlen);
/* The same from bytes in memory (name is used in messages and for relative
 * secret file paths). */
int users_parse(const char *name, const char *data, size_t len, struct users **out, char *err,
                size_t errlen);
void users_free(struct users *u);

size_t users_count(const struct users *u);
/* The entry for a prepped name, or NULL. */
const struct users_entry *users_find(const struct users *u, const char *name);
/* i-th entry, in file order. */
const struct users_entry *users_at(const struct users *u, size_t i);
/* Is the prepped domain one of the entry's <domain>s? */
bool users_has_domain(const struct users_entry *e, const char *domain);
/* Same name, flags, uid and domains (the secret is not compared). */
bool users_same_acl(const struct users_entry *a, const struct users_entry *b);

#endif
