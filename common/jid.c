/*
 * jid.c - JID parse/prep/compare with libidn, and the segmented LRU cache
 * of prepped JIDs (see jid.h for the rules and the choices made).
 *
 * ASCII parts (most JIDs) take a fast path that does the same as the
 * stringprep profiles without calling libidn; the unit test and the fuzz
 * target compare the two.
 *
 * Ownership: a struct jid is one allocation (header and its five strings)
 * with a reference count; the cache holds one reference per entry. The prep
 * helpers hand out malloc()ed strings (from libidn or xmalloc), freed with free().
 * Runs on the calling daemon's loop thread only: libidn is not thread-safe.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <idna.h>
#include <stringprep.h>

#include "common/err.h"
#include "common/htab.h"
#include "common/jid.h"
#include "common/mem.h"

/* Unassigned code points are allowed (see jid.h); STD3 keeps a domain
 * name to letters, digits and hyphens, which also keeps '@', '/' and
 * spaces out of it. */
#define JID_IDNA_FLAGS (IDNA_ALLOW_UNASSIGNED | IDNA_USE_STD3_ASCII_RULES)

static void libidn_oom(void)
{
    /* Same policy as xmalloc: running out of memory is not survived. */
    abort();
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF,
 * and no NUL (a C string cannot carry it, so it could hide a suffix). */
static int utf8_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp, min;
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1, cp = c & 0x1F, min = 0x80;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2, cp = c & 0x0F, min = 0x800;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (len - i - 1 < n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* The checks every raw part gets before libidn sees it; copies it into buf
 * (JID_INPUT_MAX + 1 bytes) with a NUL, as libidn wants C strings. */
static int part_precheck(const char *in, size_t len, char *buf)
{
    if (len == 0)
        return ERR_INVAL;
    if (len > JID_INPUT_MAX)
        return ERR_LIMIT;
    if (!utf8_valid((const unsigned char *)in, len))
        return ERR_INVAL;
    memcpy(buf, in, len);
    buf[len] = '\0';
    return 0;
}

/* Checks common to every prepped part: not empty, not over the limit. */
static int part_result(char *p, char **out, size_t *out_len)
{
    size_t n = strlen(p);
    if (n == 0 || n > JID_PART_MAX) {
        free(p);
        return n == 0 ? ERR_INVAL : ERR_LIMIT;
    }
    *out = p;
    if (out_len != NULL)
        *out_len = n;
    return 0;
}

static int is_ascii(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)s[i] >= 0x80)
            return 0;
    }
    return 1;
}

/* What Nodeprep (node) or Resourceprep does to ASCII, without libidn's
 * conversions to UCS-4 and table searches: on ASCII both only refuse the
 * controls (C.2.1), and Nodeprep also folds case and refuses space and
 * " & ' / : < > @. Most JIDs are ASCII; the fuzz target checks this path
 * against libidn. */
static int prep_ascii(const char *in, size_t len, int node, char **out, size_t *out_len)
{
    char *p = xmalloc(len + 1);

    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if ((unsigned char)c < 0x20 || c == 0x7f || (node && strchr("\"&'/:<>@ ", c) != NULL)) {
            free(p);
            return ERR_INVAL;
        }
        if (node && c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        p[i] = c;
    }
    p[len] = '\0';
    return part_result(p, out, out_len);
}

static int prep_profile(const char *in, size_t len, const char *profile, char **out,
                        size_t *out_len)
{
    char buf[JID_INPUT_MAX + 1];
    char *p = NULL;
    int rc;

    *out = NULL;
    if ((rc = part_precheck(in, len, buf)) < 0)
        return rc;
    rc = stringprep_profile(buf, &p, profile, 0);
    if (rc == STRINGPREP_MALLOC_ERROR)
        libidn_oom();
    if (rc != STRINGPREP_OK) {
        free(p);
        return ERR_INVAL;
    }
    return part_result(p, out, out_len);
}

int jid_prep_node(const char *in, size_t len, char **out, size_t *out_len)
{
    *out = NULL;
    if (len > 0 && len <= JID_INPUT_MAX && is_ascii(in, len))
        return prep_ascii(in, len, 1, out, out_len);
    return prep_profile(in, len, "Nodeprep", out, out_len);
}

int jid_prep_resource(const char *in, size_t len, char **out, size_t *out_len)
{
    *out = NULL;
    if (len > 0 && len <= JID_INPUT_MAX && is_ascii(in, len))
        return prep_ascii(in, len, 0, out, out_len);
    return prep_profile(in, len, "Resourceprep", out, out_len);
}

/* "[IPv6]": kept in inet_ntop's canonical text so that one address has one
 * spelling. Zone ids ("%eth0") and IPvFuture are refused by inet_pton. */
static int prep_ipv6_literal(const char *in, size_t len, char **out, size_t *out_len)
{
    char addr[INET6_ADDRSTRLEN + 1], text[INET6_ADDRSTRLEN];
    struct in6_addr a6;
    size_t n;

    if (len < 3 || in[len - 1] != ']' || len - 2 >= sizeof(addr))
        return ERR_INVAL;
    n = len - 2;
    memcpy(addr, in + 1, n);
    addr[n] = '\0';
    if (inet_pton(AF_INET6, addr, &a6) != 1 || inet_ntop(AF_INET6, &a6, text, sizeof(text)) == NULL)
        return ERR_INVAL;
    n = strlen(text);
    *out = xmalloc(n + 3);
    (*out)[0] = '[';
    memcpy(*out + 1, text, n);
    memcpy(*out + 1 + n, "]", 2);
    if (out_len != NULL)
        *out_len = n + 2;
    return 0;
}

/* IDNA2003 also splits labels at these (U+3002, U+FF0E, U+FF61); one
 * decoded from a bogus A-label would read as a separator when the JID is
 * parsed again, so a domain in comparison form must not contain them. */
static int has_idna_dot(const char *s)
{
    return strstr(s, "\xe3\x80\x82") != NULL || strstr(s, "\xef\xbc\x8e") != NULL ||
           strstr(s, "\xef\xbd\xa1") != NULL;
}

/* What the libidn path below does to an ASCII name with no A-label: fold
 * case, drop one final dot, and check the STD3 rules (labels of 1..63
 * letters, digits and hyphens, no hyphen at either end). Returns 1, having
 * done nothing, when a label starts with the ACE prefix "xn--": libidn
 * decodes those. The fuzz target checks this path against libidn. */
static int prep_ascii_domain(const char *in, size_t len, char **out, size_t *out_len)
{
    char *p = xmalloc(len + 1);
    size_t start = 0;
    int rc = 0;

    for (size_t i = 0; i < len; i++)
        p[i] = (in[i] >= 'A' && in[i] <= 'Z') ? (char)(in[i] - 'A' + 'a') : in[i];
    if (p[len - 1] == '.')
        len--;
    p[len] = '\0';
    for (size_t i = 0; i <= len && rc == 0; i++) {
        char c = p[i];
        if (i < len && c != '.') {
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
                rc = ERR_INVAL;
            continue;
        }
        /* p[start..i) is one label */
        if (i == start || i - start > 63 || p[start] == '-' || p[i - 1] == '-')
            rc = ERR_INVAL;
        else if (i - start >= 4 && memcmp(p + start, "xn--", 4) == 0)
            rc = 1;
        start = i + 1;
    }
    if (rc != 0) {
        free(p);
        return rc;
    }
    return part_result(p, out, out_len);
}

int jid_prep_domain(const char *in, size_t len, char **out, size_t *out_len)
{
    char buf[JID_INPUT_MAX + 1];
    struct in_addr a4;
    char *ascii = NULL, *uni = NULL;
    size_t n;
    int rc;

    *out = NULL;
    if ((rc = part_precheck(in, len, buf)) < 0)
        return rc;
    if (buf[0] == '[')
        return prep_ipv6_literal(buf, len, out, out_len);
    if (inet_pton(AF_INET, buf, &a4) == 1)
        return part_result(xstrdup(buf), out, out_len);

    if (is_ascii(buf, len) && (rc = prep_ascii_domain(buf, len, out, out_len)) <= 0)
        return rc;

    /* ToASCII preps the non-ASCII labels and checks every label against
     * STD3 and the 63-octet limit, turning the IDNA dots into '.'. */
    rc = idna_to_ascii_8z(buf, &ascii, JID_IDNA_FLAGS);
    if (rc == IDNA_MALLOC_ERROR)
        libidn_oom();
    if (rc != IDNA_SUCCESS) {
        free(ascii);
        return ERR_INVAL;
    }
    /* RFC 7622 §3.2: one final dot is not part of the domain. */
    n = strlen(ascii);
    if (n > 0 && ascii[n - 1] == '.')
        ascii[--n] = '\0';
    if (n == 0 || ascii[0] == '.' || strstr(ascii, "..") != NULL) {
        free(ascii);
        return ERR_INVAL;
    }
    /* ToASCII leaves all-ASCII labels as they were: fold their case here
     * (what Nameprep would do to them). */
    for (size_t i = 0; i < n; i++) {
        if (ascii[i] >= 'A' && ascii[i] <= 'Z')
            ascii[i] = (char)(ascii[i] - 'A' + 'a');
    }
    rc = idna_to_unicode_8z8z(ascii, &uni, JID_IDNA_FLAGS);
    free(ascii);
    if (rc == IDNA_MALLOC_ERROR)
        libidn_oom();
    if (rc != IDNA_SUCCESS || has_idna_dot(uni)) {
        free(uni);
        return ERR_INVAL;
    }
    return part_result(uni, out, out_len);
}

/* One allocation: header, then node, domain, resource, full, bare, each
 * with its NUL. The parts are already prepped. */
static struct jid *jid_make(const char *node, size_t nlen, const char *domain, size_t dlen,
                            const char *res, size_t rlen)
{
    size_t bare_len = (node ? nlen + 1 : 0) + dlen;
    size_t full_len = bare_len + (res ? rlen + 1 : 0);
    size_t size =
        sizeof(struct jid) + (nlen + 1) + (dlen + 1) + (rlen + 1) + (full_len + 1) + (bare_len + 1);
    struct jid *j = xmalloc(size);
    char *p = j->data;

    j->refs = 1;
    j->node_len = node ? nlen : 0;
    j->domain_len = dlen;
    j->resource_len = res ? rlen : 0;
    j->full_len = full_len;
    j->bare_len = bare_len;

    j->node = NULL;
    if (node != NULL) {
        memcpy(p, node, nlen + 1);
        j->node = p;
        p += nlen + 1;
    }
    memcpy(p, domain, dlen + 1);
    j->domain = p;
    p += dlen + 1;
    j->resource = NULL;
    if (res != NULL) {
        memcpy(p, res, rlen + 1);
        j->resource = p;
        p += rlen + 1;
    }

    char *full = p;
    if (node != NULL) {
        memcpy(p, node, nlen);
        p += nlen;
        *p++ = '@';
    }
    memcpy(p, domain, dlen);
    p += dlen;
    if (res != NULL) {
        *p++ = '/';
        memcpy(p, res, rlen);
        p += rlen;
    }
    *p++ = '\0';
    j->full = full;
    memcpy(p, full, bare_len);
    p[bare_len] = '\0';
    j->bare = p;
    return j;
}

/* Prep the raw parts (node, res may be NULL) and build the JID. */
static int jid_build(const char *node, size_t nlen, const char *domain, size_t dlen,
                     const char *res, size_t rlen, struct jid **out)
{
    char *pn = NULL, *pd = NULL, *pr = NULL;
    size_t pnl = 0, pdl = 0, prl = 0;
    int rc;

    *out = NULL;
    if (node != NULL && (rc = jid_prep_node(node, nlen, &pn, &pnl)) < 0)
        goto done;
    if ((rc = jid_prep_domain(domain, dlen, &pd, &pdl)) < 0)
        goto done;
    if (res != NULL && (rc = jid_prep_resource(res, rlen, &pr, &prl)) < 0)
        goto done;
    *out = jid_make(pn, pnl, pd, pdl, pr, prl);
done:
    free(pn);
    free(pd);
    free(pr);
    return rc;
}

/* The parts of a JID string, not yet checked: a NULL node or res means no
 * '@' or '/' (an empty part has a pointer and length 0). */
struct jid_split {
    const char *node, *domain, *res;
    size_t nlen, dlen, rlen;
};

/* RFC 7622 §3.1: the first '/' starts the resource; before it, the first
 * '@' ends the node. The parts are then checked one by one, an empty one
 * (separator present, nothing after/before it) included. */
static void jid_split(const char *s, size_t len, struct jid_split *p)
{
    const char *end = s + len, *slash, *at;

    memset(p, 0, sizeof(*p));
    p->domain = s;
    slash = memchr(s, '/', len);
    if (slash != NULL) {
        p->res = slash + 1;
        p->rlen = (size_t)(end - p->res);
        end = slash;
    }
    at = memchr(s, '@', (size_t)(end - s));
    if (at != NULL) {
        p->node = s;
        p->nlen = (size_t)(at - s);
        p->domain = at + 1;
    }
    p->dlen = (size_t)(end - p->domain);
}

int jid_parse(const char *s, size_t len, struct jid **out)
{
    struct jid_split p;

    *out = NULL;
    if (len > JID_INPUT_MAX)
        return ERR_LIMIT;
    jid_split(s, len, &p);
    return jid_build(p.node, p.nlen, p.domain, p.dlen, p.res, p.rlen, out);
}

/* jid_prep_node / jid_prep_resource's result on an ASCII part of len
 * (1..JID_INPUT_MAX) bytes, without building the prepped string: the same
 * checks as prep_ascii, in the same order. */
static int check_ascii(const char *in, size_t len, int node)
{
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if ((unsigned char)c < 0x20 || c == 0x7f || (node && strchr("\"&'/:<>@ ", c) != NULL))
            return ERR_INVAL;
    }
    return len > JID_PART_MAX ? ERR_LIMIT : 0;
}

/* jid_prep_domain's result on an ASCII name, as prep_ascii_domain decides
 * it, without the folded copy; 1 when libidn has to decide (an A-label) or
 * an IPv6 literal. A dotted quad that inet_pton takes is also a name that
 * passes here, so its verdict is the same. */
static int check_ascii_domain(const char *in, size_t len)
{
    size_t start = 0;

    if (in[0] == '[')
        return 1;
    if (in[len - 1] == '.')
        len--;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? in[i] : '.';
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (i < len && c != '.') {
            if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
                return ERR_INVAL;
            continue;
        }
        /* in[start..i) is one label */
        if (i == start || i - start > 63 || in[start] == '-' || in[i - 1] == '-')
            return ERR_INVAL;
        if (i - start >= 4 && (in[start] | 0x20) == 'x' && (in[start + 1] | 0x20) == 'n' &&
            in[start + 2] == '-' && in[start + 3] == '-')
            return 1;
        start = i + 1;
    }
    return len > JID_PART_MAX ? ERR_LIMIT : 0;
}

int jid_check(const char *s, size_t len)
{
    struct jid_split p;
    struct jid *j;
    int rc;

    if (len > JID_INPUT_MAX)
        return ERR_LIMIT;
    /* Split as jid_parse does; every part checked in its order. */
    jid_split(s, len, &p);
    const char *node = p.node, *domain = p.domain, *res = p.res;
    size_t nlen = p.nlen, dlen = p.dlen, rlen = p.rlen;
    if (node != NULL) {
        if (nlen == 0)
            return ERR_INVAL;
        if (!is_ascii(node, nlen))
            goto slow;
        if ((rc = check_ascii(node, nlen, 1)) < 0)
            return rc;
    }
    if (dlen == 0)
        return ERR_INVAL;
    if (!is_ascii(domain, dlen))
        goto slow;
    if ((rc = check_ascii_domain(domain, dlen)) < 0)
        return rc;
    if (rc == 1)
        goto slow;
    if (res != NULL) {
        if (rlen == 0)
            return ERR_INVAL;
        if (!is_ascii(res, rlen))
            goto slow;
        return check_ascii(res, rlen, 0);
    }
    return 0;
slow:
    rc = jid_parse(s, len, &j);
    jid_free(j);
    return rc;
}

struct jid *jid_new(const char *s, int *err)
{
    struct jid *j;
    int rc = jid_parse(s, strlen(s), &j);
    if (err != NULL)
        *err = rc;
    return j;
}

int jid_from_parts(const char *node, const char *domain, const char *resource, struct jid **out)
{
    return jid_build(node, node ? strlen(node) : 0, domain, strlen(domain), resource,
                     resource ? strlen(resource) : 0, out);
}

struct jid *jid_dup(struct jid *j)
{
    j->refs++;
    return j;
}

void jid_free(struct jid *j)
{
    if (j != NULL && --j->refs == 0)
        free(j);
}

struct jid *jid_bare(struct jid *j)
{
    if (j->resource == NULL)
        return jid_dup(j);
    return jid_make(j->node, j->node_len, j->domain, j->domain_len, NULL, 0);
}

int jid_with_resource(const struct jid *j, const char *resource, size_t len, struct jid **out)
{
    char *r;
    size_t rlen;
    int rc;

    *out = NULL;
    if ((rc = jid_prep_resource(resource, len, &r, &rlen)) < 0)
        return rc;
    *out = jid_make(j->node, j->node_len, j->domain, j->domain_len, r, rlen);
    free(r);
    return 0;
}

const char *jid_full_str(const struct jid *j)
{
    return j->full;
}

const char *jid_bare_str(const struct jid *j)
{
    return j->bare;
}

/* The full string determines the parts (no prepped node or domain holds
 * '@' or '/'), so comparing strings compares parts. */
int jid_eq_full(const struct jid *a, const struct jid *b)
{
    return a == b || (a->full_len == b->full_len && memcmp(a->full, b->full, a->full_len) == 0);
}

int jid_eq_bare(const struct jid *a, const struct jid *b)
{
    return a == b || (a->bare_len == b->bare_len && memcmp(a->bare, b->bare, a->bare_len) == 0);
}

/* ---- the cache ---- */

struct jid_cache_entry {
    struct jid_cache_entry *prev, *next; /* prev is towards the MRU end */
    struct jid *jid;
    int protected;
    size_t klen;
    size_t cost; /* bytes charged to the cache for this entry */
    char key[];
};

struct jid_cache_list {
    struct jid_cache_entry *head, *tail; /* most / least recently used */
    size_t count;
};

struct jid_cache {
    struct htab *map; /* raw string -> entry (the entries are ours) */
    struct jid_cache_list probation, protected;
    size_t capacity, protected_cap;
    struct jid_cache_stats stats; /* bytes and max_bytes are kept here */
};

/* What the hash table spends per entry besides the key copy (its node and
 * bucket share, an estimate that errs high). */
#define JID_CACHE_HTAB_OVERHEAD 64

static void list_unlink(struct jid_cache_list *l, struct jid_cache_entry *e)
{
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        l->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        l->tail = e->prev;
    e->prev = e->next = NULL;
    l->count--;
}

static void list_push_head(struct jid_cache_list *l, struct jid_cache_entry *e)
{
    e->prev = NULL;
    e->next = l->head;
    if (l->head != NULL)
        l->head->prev = e;
    else
        l->tail = e;
    l->head = e;
    l->count++;
}

static void entry_free(struct jid_cache_entry *e)
{
    jid_free(e->jid);
    free(e);
}

struct jid_cache *jid_cache_new(size_t capacity)
{
    struct jid_cache *c = xcalloc(1, sizeof(*c));
    c->map = htab_new(NULL);
    c->capacity = capacity;
    c->protected_cap = capacity / 5 * 4 + (capacity % 5) * 4 / 5;
    c->stats.capacity = capacity;
    c->stats.max_bytes = capacity * JID_CACHE_ENTRY_BYTES;
    return c;
}

void jid_cache_free(struct jid_cache *c)
{
    struct jid_cache_entry *e, *next;

    if (c == NULL)
        return;
    for (e = c->probation.head; e != NULL; e = next) {
        next = e->next;
        entry_free(e);
    }
    for (e = c->protected.head; e != NULL; e = next) {
        next = e->next;
        entry_free(e);
    }
    htab_free(c->map);
    free(c);
}

/* A hit: probation entries earn a place in the protected segment, whose
 * least recently used entry goes back to probation if that overflows it. */
static void cache_touch(struct jid_cache *c, struct jid_cache_entry *e)
{
    if (e->protected) {
        /* Already the most recent (a JID looked up again for the same
         * stanza): unlinking would touch two other entries for nothing. */
        if (c->protected.head == e)
            return;
        list_unlink(&c->protected, e);
        list_push_head(&c->protected, e);
        return;
    }
    list_unlink(&c->probation, e);
    if (c->protected_cap == 0) {
        list_push_head(&c->probation, e);
        return;
    }
    e->protected = 1;
    list_push_head(&c->protected, e);
    if (c->protected.count > c->protected_cap) {
        struct jid_cache_entry *t = c->protected.tail;
        list_unlink(&c->protected, t);
        t->protected = 0;
        list_push_head(&c->probation, t);
    }
}

static void cache_evict(struct jid_cache *c)
{
    /* Probation is never empty when the cache is full, because the
     * protected segment is smaller than the capacity; the fallback keeps
     * this correct should that change. */
    struct jid_cache_list *l = c->probation.tail != NULL ? &c->probation : &c->protected;
    struct jid_cache_entry *e = l->tail;

    list_unlink(l, e);
    htab_del(c->map, e->key, e->klen);
    c->stats.bytes -= e->cost;
    entry_free(e);
    c->stats.evictions++;
}

void jid_cache_set_max_bytes(struct jid_cache *c, size_t max_bytes)
{
    c->stats.max_bytes = max_bytes;
    while (c->stats.bytes > max_bytes)
        cache_evict(c);
}

static size_t entry_cost(const struct jid *j, size_t klen)
{
    return sizeof(struct jid_cache_entry) + 2 * klen + JID_CACHE_HTAB_OVERHEAD +
           sizeof(struct jid) + j->node_len + j->domain_len + j->resource_len + j->full_len +
           j->bare_len + 5;
}

int jid_cache_prep(struct jid_cache *c, const char *s, size_t len, struct jid **out)
{
    struct jid_cache_entry *e;
    struct jid *j;
    int rc;

    *out = NULL;
    if (len > JID_INPUT_MAX) {
        c->stats.invalid++;
        return ERR_LIMIT;
    }
    e = htab_get(c->map, s, len);
    if (e != NULL) {
        c->stats.hits++;
        cache_touch(c, e);
        *out = jid_dup(e->jid);
        return 0;
    }
    if ((rc = jid_parse(s, len, &j)) < 0) {
        c->stats.invalid++;
        return rc;
    }
    c->stats.misses++;
    *out = j;
    size_t cost = entry_cost(j, len);
    if (c->capacity == 0 || len > JID_CACHE_KEY_MAX || cost > c->stats.max_bytes)
        return 0;
    if (c->probation.count + c->protected.count >= c->capacity)
        cache_evict(c);
    while (c->stats.bytes > c->stats.max_bytes - cost)
        cache_evict(c);
    e = xmalloc(sizeof(*e) + len);
    e->jid = jid_dup(j);
    e->protected = 0;
    e->klen = len;
    e->cost = cost;
    c->stats.bytes += cost;
    memcpy(e->key, s, len);
    list_push_head(&c->probation, e);
    htab_put(c->map, s, len, e);
    return 0;
}

void jid_cache_stats(const struct jid_cache *c, struct jid_cache_stats *out)
{
    *out = c->stats;
    out->count = c->probation.count + c->protected.count;
}
