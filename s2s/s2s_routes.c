/*
 * s2s_routes.c - the static routes file (named by <routes file='...'/> in
 * s2s.xml, written by `parleyctl route add/del`):
 *
 *   <routes>
 *     <route domain='b.example' host='10.0.0.2' port='5269' [pin='sha256:HEX']
 *            [tls='direct']/>
 *   </routes>
 *
 * A route sends links to that domain to host:port, bypassing DNS. pin is
 * the SHA-256 of the peer's certificate (DER): with a pin, the certificate
 * must match it and then counts as valid for the domain whatever its chain.
 * tls='direct' connects with TLS from the first byte (XEP-0368) instead of
 * STARTTLS. Read at start and on SIGHUP (a broken file keeps the old table).
 * Start-up / reload code: reads a file, on the loop thread.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "s2s/s2s.h"

#define ROUTES_MAX_BYTES (1024 * 1024)

void s2s_routes_free_route(void *p)
{
    struct s2s_route *r = p;
    if (r == NULL)
        return;
    free(r->domain);
    free(r->host);
    free(r);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int parse_pin(const char *s, unsigned char pin[32])
{
    if (strncmp(s, "sha256:", 7) != 0 || strlen(s + 7) != 64)
        return ERR_INVAL;
    s += 7;
    for (size_t i = 0; i < 32; i++) {
        int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
        if (h < 0 || l < 0)
            return ERR_INVAL;
        pin[i] = (unsigned char)(h << 4 | l);
    }
    return 0;
}

static int parse_route(const char *name, struct xml_node *el, struct s2s_route **out)
{
    char dom[S2S_DOMAIN_MAX + 1];
    const char *domain = xml_get_attr(el, "domain");
    const char *host = xml_get_attr(el, "host");
    const char *port = xml_get_attr(el, "port");
    const char *pin = xml_get_attr(el, "pin");
    const char *tls = xml_get_attr(el, "tls");
    for (struct xml_attr *a = el->attrs; a; a = a->next) {
        if (a->ns != NULL ||
            (strcmp(a->name, "domain") && strcmp(a->name, "host") && strcmp(a->name, "port") &&
             strcmp(a->name, "pin") && strcmp(a->name, "tls"))) {
            log_err("%s: <route>: unknown attribute %s", name, a->name);
            return ERR_CONFIG;
        }
    }
    if (domain == NULL || s2s_db_domain_prep(domain, dom) != 0) {
        log_err("%s: <route>: missing or invalid domain", name);
        return ERR_CONFIG;
    }
    if (host == NULL || *host == '\0' || strlen(host) > 255) {
        log_err("%s: <route domain='%s'>: missing or invalid host", name, dom);
        return ERR_CONFIG;
    }
    char *end;
    errno = 0;
    long p = port ? strtol(port, &end, 10) : 5269;
    if (port != NULL && (errno || *end || end == port || p < 1 || p > 65535)) {
        log_err("%s: <route domain='%s'>: invalid port", name, dom);
        return ERR_CONFIG;
    }
    struct s2s_route *r = xcalloc(1, sizeof(*r));
    if (pin != NULL) {
        if (parse_pin(pin, r->pin) != 0) {
            log_err("%s: <route domain='%s'>: pin must be sha256:<64 hex digits>", name, dom);
            free(r);
            return ERR_CONFIG;
        }
        r->has_pin = true;
    }
    if (tls != NULL) {
        if (strcmp(tls, "direct") != 0 && strcmp(tls, "starttls") != 0) {
            log_err("%s: <route domain='%s'>: tls is direct or starttls", name, dom);
            free(r);
            return ERR_CONFIG;
        }
        r->direct_tls = strcmp(tls, "direct") == 0;
    }
    r->domain = xstrdup(dom);
    r->host = xstrdup(host);
    r->port = (int)p;
    *out = r;
    return 0;
}

int s2s_routes_parse(const char *name, const char *data, size_t len, struct htab **out)
{
    char err[256];
    *out = NULL;
    struct xml_node *root = xml_parse_document(data, len, NULL, err, sizeof(err));
    if (root == NULL) {
        log_err("%s: %s", name, err);
        return ERR_PARSE;
    }
    if (strcmp(root->name, "routes") != 0 || root->ns[0] != '\0') {
        log_err("%s: the root element must be <routes>", name);
        xml_free(root);
        return ERR_CONFIG;
    }
    struct htab *t = htab_new(s2s_routes_free_route);
    int rc = 0;
    for (struct xml_node *c = root->children; c && rc == 0; c = c->next) {
        if (c->type != XML_ELEM)
            continue;
        if (strcmp(c->name, "route") != 0) {
            log_err("%s: unknown element <%s>", name, c->name);
            rc = ERR_CONFIG;
            break;
        }
        struct s2s_route *r;
        rc = parse_route(name, c, &r);
        if (rc == 0 && htab_put_str(t, r->domain, r) != 0) {
            log_err("%s: two routes for %s", name, r->domain);
            s2s_routes_free_route(r);
            rc = ERR_CONFIG;
        }
    }
    xml_free(root);
    if (rc != 0) {
        htab_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int s2s_routes_load(const char *file, struct htab **out)
{
    *out = NULL;
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        if (errno == ENOENT) {
            /* parleyctl writes the file with the first route. */
            *out = htab_new(s2s_routes_free_route);
            return 0;
        }
        log_err("cannot open %s: %m", file);
        return ERR_IO;
    }
    char *data = xmalloc(ROUTES_MAX_BYTES + 1);
    size_t n = fread(data, 1, ROUTES_MAX_BYTES + 1, f);
    int ioerr = ferror(f);
    fclose(f);
    int rc;
    if (ioerr) {
        log_err("cannot read %s", file);
        rc = ERR_IO;
    } else if (n > ROUTES_MAX_BYTES) {
        log_err("%s: larger than %d bytes", file, ROUTES_MAX_BYTES);
        rc = ERR_LIMIT;
    } else {
        rc = s2s_routes_parse(file, data, n, out);
    }
    free(data);
    return rc;
}
