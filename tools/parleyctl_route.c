/*
 * parleyctl_route.c - `parleyctl -d DIR route add|del|list`: the static
 * routes of parley-s2s in DIR/etc/s2s-routes.xml.
 *
 *   route add DOMAIN HOST:PORT [--pin sha256:HEX] [--tls direct|starttls]
 *   route del DOMAIN
 *   route list
 *
 * The file is parleyctl's (init writes it empty): <routes> with one
 * <route domain='D' host='H' port='P' [pin='sha256:HEX'] [tls='direct']/>
 * per domain (s2s/s2s_routes.c reads it: pin is the SHA-256 of the peer's
 * certificate in DER, tls='direct' connects with TLS from the first byte).
 * A change reads it, checks and edits the list, and writes the whole file
 * anew under a temporary name renamed over the old one (ctl_write_file),
 * so that s2s, reading it on HUP, sees the old table or the new one,
 * never half of one; comments other than the header are not kept. Two
 * changes at once are serialised by a flock on DIR/ctl/route.lock. Then
 * the running s2s gets a HUP through the supervisor (ctl_reload).
 *
 * DOMAIN is prepped (common/jid) and must be a DNS name other than the
 * server's own; HOST is a DNS name, an IPv4 address, or an IPv6 address in
 * brackets ([::1]:5269); the file keeps IPv6 without brackets. A domain
 * has one route: adding a second is refused (del it first).
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/jid.h"
#include "common/mem.h"
#include "common/xml.h"
#include "tools/parleyctl.h"

#define ROUTES_FILE_MAX (1024 * 1024)
#define ROUTES_MAX      4096
#define HOST_MAX        253

struct route {
    char domain[1024];
    char host[HOST_MAX + 1];
    int port;
    char pin[7 + 64 + 1]; /* "sha256:" + 64 hex digits, or empty */
    char tls[16];         /* "direct", "starttls" or empty (STARTTLS) */
};

/* What is written before <routes>: what the file is and who writes it. */
static const char route_header[] =
    "<?xml version='1.0'?>\n"
    "<!-- s2s-routes.xml - static routes of parley-s2s: for these domains s2s\n"
    "     connects to host:port instead of looking up SRV records; with\n"
    "     pin='sha256:HEX' only to a peer whose certificate (DER) has that\n"
    "     SHA-256, which then counts as valid for the domain; tls='direct':\n"
    "     TLS from the first byte instead of STARTTLS. Written by `parleyctl\n"
    "     route add|del` (which rewrites this file whole: comments are not\n"
    "     kept), read by s2s at start and on HUP. -->\n";

static int route_write(const struct ctl *c, const struct route *r, size_t n)
{
    char path[CTL_PATH_MAX], port[16];
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, route_header);
    buf_append_str(&b, "<routes>\n");
    for (size_t i = 0; i < n; i++) {
        buf_append_str(&b, "  <route domain='");
        xml_escape_attr(r[i].domain, strlen(r[i].domain), &b);
        buf_append_str(&b, "' host='");
        xml_escape_attr(r[i].host, strlen(r[i].host), &b);
        snprintf(port, sizeof(port), "%d", r[i].port);
        buf_append_str(&b, "' port='");
        buf_append_str(&b, port);
        if (r[i].pin[0] != '\0') {
            buf_append_str(&b, "' pin='");
            buf_append_str(&b, r[i].pin);
        }
        if (r[i].tls[0] != '\0') {
            buf_append_str(&b, "' tls='");
            buf_append_str(&b, r[i].tls);
        }
        buf_append_str(&b, "'/>\n");
    }
    buf_append_str(&b, "</routes>\n");
    ctl_path(c, path, "etc/s2s-routes.xml");
    /* Host names and pins, nothing secret: readable by s2s's user. */
    int rc = ctl_write_file(c, path, b.data, b.len, 0644, 0, 0);
    buf_free(&b);
    return rc;
}

int ctl_routes_init(const struct ctl *c)
{
    return route_write(c, NULL, 0);
}

/* DOMAIN prepped into out (sizeof route.domain); 0 or 1 (printed). */
static int route_domain(const struct ctl *c, const char *arg, char *out)
{
    char *d = NULL;
    if (jid_prep_domain(arg, strlen(arg), &d, NULL) < 0 || d[0] == '[' ||
        strspn(d, "abcdefghijklmnopqrstuvwxyz0123456789-.") != strlen(d) ||
        strlen(d) >= sizeof(((struct route *)0)->domain)) {
        /* An IDN is prepped to its U-label form; the file wants A-labels
         * (the DNS's), which the user can give. */
        ctl_err("'%s' is not a valid domain name (letters, digits, '-', '.'; an IDN as "
                "xn--...)",
                arg);
        free(d);
        return 1;
    }
    int rc = 0;
    if (strcmp(d, c->domain) == 0) {
        ctl_err("'%s' is this server's own domain", d);
        rc = 1;
    } else {
        snprintf(out, sizeof(((struct route *)0)->domain), "%s", d);
    }
    free(d);
    return rc;
}

/* A DNS host name: labels of letters, digits and '-' (not at either end),
 * 1..63 bytes each, 253 in all. Lower-cased in place. */
static bool route_hostname_ok(char *h)
{
    size_t len = strlen(h), label = 0;
    if (len == 0 || len > HOST_MAX || h[0] == '.' || h[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        h[i] = (char)tolower((unsigned char)h[i]);
        if (h[i] == '.') {
            if (label == 0 || h[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!isalnum((unsigned char)h[i]) && h[i] != '-')
            return false;
        if (h[i] == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return h[len - 1] != '-';
}

/* HOST:PORT ([V6]:PORT) into r->host (no brackets) and r->port. */
static int route_hostport(const char *arg, struct route *r)
{
    char host[HOST_MAX + 3];
    const char *colon;
    bool v6 = arg[0] == '[';
    if (v6) {
        const char *close = strchr(arg, ']');
        colon = close != NULL ? close + 1 : NULL;
        if (colon == NULL || *colon != ':' || (size_t)(close - arg - 1) >= sizeof(host))
            goto bad;
        memcpy(host, arg + 1, (size_t)(close - arg - 1));
        host[close - arg - 1] = '\0';
    } else {
        colon = strchr(arg, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL ||
            (size_t)(colon - arg) >= sizeof(host))
            goto bad;
        memcpy(host, arg, (size_t)(colon - arg));
        host[colon - arg] = '\0';
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || !isdigit((unsigned char)colon[1]) || *end != '\0' || errno != 0 ||
        port < 1 || port > 65535)
        goto bad;
    unsigned char addr[16];
    if (v6 ? inet_pton(AF_INET6, host, addr) != 1
           : inet_pton(AF_INET, host, addr) != 1 && !route_hostname_ok(host))
        goto bad;
    snprintf(r->host, sizeof(r->host), "%s", host);
    r->port = (int)port;
    return 0;
bad:
    ctl_err("'%s' is not HOST:PORT (a host name or IPv4 address, or an IPv6 address in "
            "brackets as [::1]:5269; port 1..65535)",
            arg);
    return 1;
}

static int route_pin(const char *arg, char *out)
{
    if (strncmp(arg, "sha256:", 7) != 0 || strlen(arg + 7) != 64 ||
        strspn(arg + 7, "0123456789abcdefABCDEF") != 64) {
        ctl_err("--pin: '%s' is not sha256: and 64 hex digits", arg);
        return 1;
    }
    memcpy(out, "sha256:", 7);
    for (size_t i = 0; i < 64; i++)
        out[7 + i] = (char)tolower((unsigned char)arg[7 + i]);
    out[71] = '\0';
    return 0;
}

/* Are all of e's attributes ones this file knows? What is not understood
 * here is not rewritten: it would be lost. */
static bool route_attrs_known(const struct xml_node *e)
{
    static const char *const known[] = {"domain", "host", "port", "pin", "tls"};
    for (const struct xml_attr *a = e->attrs; a != NULL; a = a->next) {
        bool ok = false;
        for (size_t i = 0; i < sizeof(known) / sizeof(known[0]) && !ok; i++)
            ok = a->ns == NULL && strcmp(a->name, known[i]) == 0;
        if (!ok)
            return false;
    }
    return true;
}

/* Read the table into *out (xmalloc'ed, *n entries). 0 or 1 (printed). */
static int route_read(const struct ctl *c, struct route **out, size_t *n)
{
    char path[CTL_PATH_MAX], *text;
    struct xml_node *root;
    ctl_path(c, path, "etc/s2s-routes.xml");
    *out = NULL;
    *n = 0;
    if (ctl_read_xml(path, ROUTES_FILE_MAX, true, &text, &root) != 0)
        return 1;
    if (root == NULL) /* an instance made before s2s: an empty table */
        return 0;
    int rc = 0;
    size_t count = 0;
    for (struct xml_node *e = xml_child(root, NULL, "route"); e != NULL;
         e = xml_next(e, NULL, "route"))
        count++;
    if (count > ROUTES_MAX) {
        ctl_err("%s: more than %d routes", path, ROUTES_MAX);
        rc = 1;
    }
    struct route *r = xcalloc(count + 1, sizeof(*r));
    for (struct xml_node *e = xml_child(root, NULL, "route"); rc == 0 && e != NULL;
         e = xml_next(e, NULL, "route")) {
        const char *d = xml_get_attr(e, "domain"), *h = xml_get_attr(e, "host");
        const char *p = xml_get_attr(e, "port"), *pin = xml_get_attr(e, "pin");
        const char *tls = xml_get_attr(e, "tls");
        struct route *x = &r[*n];
        if (d == NULL || h == NULL || p == NULL || !route_attrs_known(e) ||
            strlen(d) >= sizeof(x->domain) || strlen(h) >= sizeof(x->host) ||
            (pin != NULL && strlen(pin) >= sizeof(x->pin)) ||
            (tls != NULL && strcmp(tls, "direct") != 0 && strcmp(tls, "starttls") != 0)) {
            ctl_err("%s: a <route> without domain, host or port, or with an attribute that is "
                    "unknown or too long; fix it by hand",
                    path);
            rc = 1;
            break;
        }
        snprintf(x->domain, sizeof(x->domain), "%s", d);
        snprintf(x->host, sizeof(x->host), "%s", h);
        x->port = atoi(p);
        snprintf(x->pin, sizeof(x->pin), "%s", pin != NULL ? pin : "");
        snprintf(x->tls, sizeof(x->tls), "%s", tls != NULL ? tls : "");
        (*n)++;
    }
    xml_free(root);
    free(text);
    if (rc != 0) {
        free(r);
        *n = 0;
        return 1;
    }
    *out = r;
    return 0;
}

static ssize_t route_find(const struct route *r, size_t n, const char *domain)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(r[i].domain, domain) == 0)
            return (ssize_t)i;
    }
    return -1;
}

/* HOST:PORT as given: an IPv6 address in brackets. */
static void route_hostport_str(const struct route *r, char *out, size_t outlen)
{
    bool v6 = strchr(r->host, ':') != NULL;
    snprintf(out, outlen, "%s%s%s:%d", v6 ? "[" : "", r->host, v6 ? "]" : "", r->port);
}

static void route_print(const struct route *r)
{
    char hp[HOST_MAX + 16];
    route_hostport_str(r, hp, sizeof(hp));
    printf("%s %s%s%s%s%s\n", r->domain, hp, r->pin[0] != '\0' ? " pin=" : "", r->pin,
           r->tls[0] != '\0' ? " tls=" : "", r->tls);
}

/* After a change: the running s2s rereads the table. */
static void route_reload(const struct ctl *c)
{
    const struct ctl_daemon *d = ctl_daemon_find("s2s");
    if (d == NULL || !ctl_daemon_configured(c, d))
        return;
    int rc = ctl_reload(c, "s2s");
    if (rc > 0)
        ctl_note("s2s reloads its routes (HUP through the supervisor)");
    else if (rc == 0)
        ctl_note("not running: s2s reads the routes when it starts");
}

static int route_change(const struct ctl *c, bool add, const struct route *want)
{
    char path[CTL_PATH_MAX];
    ctl_path(c, path, "ctl/route.lock");
    int lockfd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (lockfd < 0 || flock(lockfd, LOCK_EX) < 0) {
        ctl_err("cannot lock %s: %s", path, strerror(errno));
        if (lockfd >= 0)
            close(lockfd);
        return 1;
    }
    struct route *r;
    size_t n;
    int rc = route_read(c, &r, &n);
    if (rc == 0) {
        ssize_t at = route_find(r, n, want->domain);
        if (add && at >= 0) {
            char hp[HOST_MAX + 16];
            route_hostport_str(&r[at], hp, sizeof(hp));
            ctl_err("%s has a route already (to %s); `route del %s` first", want->domain, hp,
                    want->domain);
            rc = 1;
        } else if (!add && at < 0) {
            ctl_err("no route for %s", want->domain);
            rc = 1;
        } else if (add) {
            r = xrealloc(r, (n + 1) * sizeof(*r));
            r[n++] = *want;
        } else {
            memmove(&r[at], &r[at + 1], (n - (size_t)at - 1) * sizeof(*r));
            n--;
        }
    }
    if (rc == 0)
        rc = route_write(c, r, n);
    free(r);
    close(lockfd);
    if (rc == 0) {
        if (add) {
            printf("route added: ");
            route_print(want);
        } else {
            printf("route deleted: %s\n", want->domain);
        }
        fflush(stdout);
        route_reload(c);
    }
    return rc;
}

int ctl_cmd_route(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {{"pin", required_argument, NULL, 'p'},
                                         {"tls", required_argument, NULL, 't'},
                                         {NULL, 0, NULL, 0}};
    const char *pin = NULL, *tls = NULL;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt == 'p')
            pin = optarg;
        else if (opt == 't')
            tls = optarg;
        else
            return 2;
    }
    const char *sub = optind < argc ? argv[optind] : "";
    int rest = argc - optind - 1;
    bool add = strcmp(sub, "add") == 0, del = strcmp(sub, "del") == 0;
    bool list = strcmp(sub, "list") == 0;
    if (!((add && rest == 2) || (del && rest == 1) || (list && rest == 0)) ||
        ((pin != NULL || tls != NULL) && !add)) {
        ctl_err("usage: parleyctl -d DIR route add DOMAIN HOST:PORT [--pin sha256:HEX] "
                "[--tls direct|starttls] | route del DOMAIN | route list");
        return 2;
    }
    if (tls != NULL && strcmp(tls, "direct") != 0 && strcmp(tls, "starttls") != 0) {
        ctl_err("--tls: direct or starttls, not '%s'", tls);
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    if (list) {
        struct route *r;
        size_t n;
        if (route_read(c, &r, &n) != 0)
            return 1;
        for (size_t i = 0; i < n; i++)
            route_print(&r[i]);
        free(r);
        return 0;
    }
    struct route want;
    memset(&want, 0, sizeof(want));
    /* STARTTLS is s2s's default: only direct is written. */
    if (tls != NULL && strcmp(tls, "direct") == 0)
        snprintf(want.tls, sizeof(want.tls), "direct");
    if (route_domain(c, argv[optind + 1], want.domain) != 0 ||
        (add && route_hostport(argv[optind + 2], &want) != 0) ||
        (pin != NULL && route_pin(pin, want.pin) != 0))
        return 1;
    int lock = ctl_edit_lock(c);
    if (lock < 0)
        return 1;
    int rc = route_change(c, add, &want);
    ctl_edit_unlock(lock);
    return rc;
}
