/*
 * users.c - the component table: router-users.xml read through common/config.
 *
 * The file's root holds <component> elements only; each is checked with
 * config_apply against its own table (unknown attributes and children are
 * errors), then the rules config cannot express are checked here: a valid,
 * unique name, a numeric uid, flags that only make sense for internal
 * components, valid and unique domains. Everything the router keeps is
 * copied out of the config tree, which is freed (secrets wiped) before
 * returning.
 *
 * Start-up and reload only (blocking file reads); the router's loop thread.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/err.h"
#include "common/htab.h"
#include "common/jid.h"
#include "common/log.h"
#include "common/mem.h"
#include "router/users.h"

struct users {
    struct users_entry *v;
    size_t n;
    struct htab *by_name; /* name -> entry in v */
};

static void entry_clear(struct users_entry *e)
{
    free(e->name);
    mem_freezero(e->secret, e->secret_len);
    for (size_t i = 0; i < e->ndomains; i++)
        free(e->domains[i]);
    free(e->domains);
    memset(e, 0, sizeof(*e));
}

void users_free(struct users *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < u->n; i++)
        entry_clear(&u->v[i]);
    free(u->v);
    htab_free(u->by_name);
    free(u);
}

/* A uid as written in the file: decimal digits only, below (uid_t)-1. */
static int parse_uid(const char *s, uid_t *out)
{
    if (s[0] == '\0' || strspn(s, "0123456789") != strlen(s) || strlen(s) > 10)
        return ERR_INVAL;
    unsigned long long v = strtoull(s, NULL, 10);
    if (v >= (uid_t)-1)
        return ERR_INVAL;
    *out = (uid_t)v;
    return 0;
}

/* The <domain> children of one component, prepped and checked. */
static int read_domains(const char *file, struct users_entry *e, struct xml_node *first)
{
    int rc = 0;
    for (struct xml_node *d = first; d != NULL; d = xml_next(d, NULL, "domain")) {
        if (d->attrs != NULL || xml_child(d, NULL, NULL) != NULL) {
            log_err("%s: <component name='%s'><domain>: no attributes or child elements allowed",
                    file, e->name);
            rc = ERR_CONFIG;
            continue;
        }
        size_t len;
        const char *text = xml_text(d, &len);
        while (len > 0 && strchr(" \t\r\n", text[0]) != NULL)
            text++, len--;
        while (len > 0 && strchr(" \t\r\n", text[len - 1]) != NULL)
            len--;
        char *dom;
        if (len == 0 || jid_prep_domain(text, len, &dom, NULL) != 0) {
            log_err("%s: <component name='%s'><domain>: '%.*s' is not a valid domain", file,
                    e->name, (int)(len > 64 ? 64 : len), text);
            rc = ERR_CONFIG;
            continue;
        }
        if (users_has_domain(e, dom) || strcmp(dom, e->name) == 0) {
            log_err("%s: <component name='%s'><domain>: %s given twice", file, e->name, dom);
            free(dom);
            rc = ERR_CONFIG;
            continue;
        }
        e->domains = xreallocarray(e->domains, e->ndomains + 1, sizeof(*e->domains));
        e->domains[e->ndomains++] = dom;
    }
    return rc;
}

/* One <component>: config_apply, then the rules of the router. */
static int read_component(struct config *cfg, struct xml_node *elem, struct users_entry *e)
{
    const char *file = config_file(cfg);
    const char *name = NULL, *uid = NULL, *secret = NULL;
    bool internal = false, multi = false, def = false;
    struct xml_node *dom = NULL;
    const struct config_entry table[] = {
        CONFIG_STRING("@name", CONFIG_REQUIRED, NULL, &name),
        CONFIG_BOOL("@internal", 0, "false", &internal),
        CONFIG_BOOL("@multi", 0, "false", &multi),
        CONFIG_BOOL("@default-route", 0, "false", &def),
        CONFIG_STRING("@uid", 0, NULL, &uid),
        CONFIG_SECRET("secret", CONFIG_REQUIRED, &secret),
        CONFIG_NODE("domain", 0, &dom),
        CONFIG_END,
    };
    if (config_apply(cfg, elem, table) != 0)
        return ERR_CONFIG;
    if (jid_prep_domain(name, strlen(name), &e->name, NULL) != 0) {
        log_err("%s: <component name='%.64s'>: the name is not a valid domain", file, name);
        return ERR_CONFIG;
    }
    e->secret_len = strlen(secret);
    e->secret = xmemdup(secret, e->secret_len + 1);
    e->internal = internal;
    e->multi = multi;
    e->default_route = def;
    int rc = 0;
    if (uid != NULL) {
        if (parse_uid(uid, &e->uid) != 0) {
            log_err("%s: <component name='%s'>: uid='%.32s' is not a numeric uid", file, e->name,
                    uid);
            rc = ERR_CONFIG;
        }
        e->has_uid = true;
    }
    if (!internal && (multi || def || uid != NULL)) {
        log_err("%s: <component name='%s'>: multi, default-route and uid need internal='true'",
                file, e->name);
        rc = ERR_CONFIG;
    }
    if (dom != NULL && read_domains(file, e, dom) != 0)
        rc = ERR_CONFIG;
    return rc;
}

static int users_from_config(struct config *cfg, struct users **out)
{
    struct users *u = xcalloc(1, sizeof(*u));
    u->by_name = htab_new(NULL);
    struct xml_node *root = config_root(cfg);
    int rc = 0;
    size_t n = 0;
    for (struct xml_node *c = xml_child(root, NULL, "component"); c != NULL;
         c = xml_next(c, NULL, "component"))
        n++;
    u->v = xcalloc(n ? n : 1, sizeof(*u->v));
    for (struct xml_node *c = xml_child(root, NULL, "component"); c != NULL;
         c = xml_next(c, NULL, "component")) {
        struct users_entry *e = &u->v[u->n];
        if (read_component(cfg, c, e) != 0) {
            entry_clear(e);
            rc = ERR_CONFIG;
            continue;
        }
        if (htab_put_str(u->by_name, e->name, e) != 0) {
            log_err("%s: <component name='%s'> given twice", config_file(cfg), e->name);
            entry_clear(e);
            rc = ERR_CONFIG;
            continue;
        }
        u->n++;
    }
    if (rc == 0 && u->n == 0)
        log_warn("%s: no components: nothing can connect", config_file(cfg));
    if (rc != 0) {
        users_free(u);
        return rc;
    }
    *out = u;
    return 0;
}

/* After the file's root was read (its table admits only <component>):
 * build the table, free the config (wiping secrets). */
static int finish(struct config *cfg, struct users **out, char *err, size_t errlen)
{
    int rc = users_from_config(cfg, out);
    if (rc != 0) {
        /* config_apply's messages name the file; ours went to the log. */
        if (config_error(cfg) != NULL)
            snprintf(err, errlen, "%s", config_error(cfg));
        else
            snprintf(err, errlen, "%s: invalid component table (see the log)", config_file(cfg));
    }
    config_free(cfg);
    return rc;
}

static int load(const char *name, const char *data, size_t len, struct users **out, char *err,
                size_t errlen)
{
    struct xml_node *first = NULL;
    const struct config_entry table[] = {CONFIG_NODE("component", 0, &first), CONFIG_END};
    struct config *cfg = NULL;
    *out = NULL;
    int rc = data != NULL ? config_parse(name, data, len, "components", table, &cfg, err, errlen)
                          : config_load(name, "components", table, &cfg, err, errlen);
    return rc != 0 ? rc : finish(cfg, out, err, errlen);
}

int users_load(const char *file, struct users **out, char *err, size_t errlen)
{
    return load(file, NULL, 0, out, err, errlen);
}

int users_parse(const char *name, const char *data, size_t len, struct users **out, char *err,
                size_t errlen)
{
    return load(name, data, len, out, err, errlen);
}

size_t users_count(const struct users *u)
{
    return u->n;
}

const struct users_entry *users_find(const struct users *u, const char *name)
{
    return htab_get_str(u->by_name, name);
}

const struct users_entry *users_at(const struct users *u, size_t i)
{
    return i < u->n ? &u->v[i] : NULL;
}

bool users_has_domain(const struct users_entry *e, const char *domain)
{
    for (size_t i = 0; i < e->ndomains; i++)
        if (strcmp(e->domains[i], domain) == 0)
            return true;
    return false;
}

bool users_same_acl(const struct users_entry *a, const struct users_entry *b)
{
    if (strcmp(a->name, b->name) != 0 || a->internal != b->internal || a->multi != b->multi ||
        a->default_route != b->default_route || a->has_uid != b->has_uid ||
        (a->has_uid && a->uid != b->uid) || a->ndomains != b->ndomains)
        return false;
    for (size_t i = 0; i < a->ndomains; i++)
        if (!users_has_domain(b, a->domains[i]))
            return false;
    return true;
}
