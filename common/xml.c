/*
 * xml.c - stanza trees, tree helpers, the serializer, stream and stanza
 * error names and replies (see xml.h; the parser is in xml_parser.c).
 *
 * Ownership: every node, name and value of a tree lives in the arena of its
 * root; nothing here frees single nodes. The serializer only reads a tree and
 * appends to a caller's struct buf. Runs on whichever loop owns the tree.
 */
#include "autoconfig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/mem.h"
#include "common/xml.h"

/* ---- trees ---- */

static void link_child(struct xml_node *parent, struct xml_node *n)
{
    n->parent = parent;
    n->next = NULL;
    if (parent->last_child)
        parent->last_child->next = n;
    else
        parent->children = n;
    parent->last_child = n;
}

struct xml_node *xml_new(const char *ns, const char *name)
{
    struct arena *a = arena_new(0);
    struct xml_node *n = arena_zalloc(a, sizeof(*n));
    n->type = XML_ELEM;
    n->arena = a;
    n->ns = arena_strdup(a, ns ? ns : "");
    n->name = arena_strdup(a, name);
    return n;
}

void xml_free(struct xml_node *root)
{
    if (root)
        arena_free(root->arena);
}

static struct xml_node *copy_node(struct arena *a, const struct xml_node *src,
                                  struct xml_node *parent)
{
    struct xml_node *n = arena_zalloc(a, sizeof(*n));
    n->type = src->type;
    n->arena = a;
    if (parent)
        link_child(parent, n);
    if (src->type == XML_TEXT) {
        n->text = arena_strndup(a, src->text, src->text_len);
        n->text_len = src->text_len;
        return n;
    }
    /* A child in its parent's namespace shares the parent's string. */
    if (parent && strcmp(parent->ns, src->ns) == 0)
        n->ns = parent->ns;
    else
        n->ns = arena_strdup(a, src->ns);
    n->prefix = src->prefix ? arena_strdup(a, src->prefix) : NULL;
    n->name = arena_strdup(a, src->name);
    struct xml_attr **tail = &n->attrs;
    for (const struct xml_attr *sa = src->attrs; sa; sa = sa->next) {
        struct xml_attr *at = arena_zalloc(a, sizeof(*at));
        at->ns = sa->ns ? arena_strdup(a, sa->ns) : NULL;
        at->prefix = sa->prefix ? arena_strdup(a, sa->prefix) : NULL;
        at->name = arena_strdup(a, sa->name);
        at->value = arena_strndup(a, sa->value, sa->value_len);
        at->value_len = sa->value_len;
        *tail = at;
        tail = &at->next;
    }
    for (const struct xml_node *c = src->children; c; c = c->next)
        copy_node(a, c, n);
    return n;
}

/* What copy_node takes from its arena for src: the same allocations, each
 * rounded as the arena rounds it. parent_ns: the namespace of src's parent,
 * NULL at the top. */
static size_t copy_size(const struct xml_node *src, const char *parent_ns)
{
    size_t n = arena_need(sizeof(struct xml_node));
    if (src->type == XML_TEXT)
        return n + arena_need(src->text_len + 1);
    if (parent_ns == NULL || strcmp(parent_ns, src->ns) != 0)
        n += arena_need(strlen(src->ns) + 1);
    if (src->prefix)
        n += arena_need(strlen(src->prefix) + 1);
    n += arena_need(strlen(src->name) + 1);
    for (const struct xml_attr *sa = src->attrs; sa; sa = sa->next) {
        n += arena_need(sizeof(struct xml_attr));
        if (sa->ns)
            n += arena_need(strlen(sa->ns) + 1);
        if (sa->prefix)
            n += arena_need(strlen(sa->prefix) + 1);
        n += arena_need(strlen(sa->name) + 1) + arena_need(sa->value_len + 1);
    }
    for (const struct xml_node *c = src->children; c; c = c->next)
        n += copy_size(c, src->ns);
    return n;
}

struct xml_node *xml_copy(const struct xml_node *node)
{
    /* Copies are what gets kept (a session's last presence, in c2s and
     * sm): size the first chunk to exactly what the copy takes rather than
     * the 1 KiB default, so that a small stanza costs ~300 bytes, not
     * ~1.1 KB, and a larger one one chunk, not two. The margin leaves room
     * for a little added later (an error child on a bounce); trees past
     * 8 KiB grow as usual. */
    size_t first = copy_size(node, NULL) + 128;
    struct arena *a = arena_new(first <= 8 * 1024 ? first : 0);
    return copy_node(a, node, NULL);
}

struct xml_node *xml_add_child(struct xml_node *parent, const char *ns, const char *name)
{
    struct arena *a = parent->arena;
    struct xml_node *n = arena_zalloc(a, sizeof(*n));
    n->type = XML_ELEM;
    n->arena = a;
    n->ns = ns ? arena_strdup(a, ns) : parent->ns;
    n->name = arena_strdup(a, name);
    link_child(parent, n);
    return n;
}

struct xml_node *xml_add_text(struct xml_node *parent, const char *text, size_t len)
{
    struct arena *a = parent->arena;
    struct xml_node *last = parent->last_child;
    if (last && last->type == XML_TEXT) {
        /* Merge with a preceding text node, as the parser would have: keeps
         * trees canonical so that serialize/parse round trips compare equal. */
        char *t = arena_alloc(a, last->text_len + len + 1);
        memcpy(t, last->text, last->text_len);
        if (len)
            memcpy(t + last->text_len, text, len);
        t[last->text_len + len] = '\0';
        last->text = t;
        last->text_len += len;
        return last;
    }
    struct xml_node *n = arena_zalloc(a, sizeof(*n));
    n->type = XML_TEXT;
    n->arena = a;
    n->text = arena_strndup(a, text, len);
    n->text_len = len;
    link_child(parent, n);
    return n;
}

static struct xml_attr *find_attr(const struct xml_node *elem, const char *ns, const char *name)
{
    for (struct xml_attr *at = elem->attrs; at; at = at->next) {
        if (strcmp(at->name, name) != 0)
            continue;
        if (ns == NULL ? at->ns == NULL : (at->ns && strcmp(at->ns, ns) == 0))
            return at;
    }
    return NULL;
}

void xml_set_attr(struct xml_node *elem, const char *name, const char *value)
{
    size_t len = strlen(value);
    struct xml_attr *at = find_attr(elem, NULL, name);
    if (at == NULL) {
        at = arena_zalloc(elem->arena, sizeof(*at));
        at->name = arena_strdup(elem->arena, name);
        struct xml_attr **tail = &elem->attrs;
        while (*tail)
            tail = &(*tail)->next;
        *tail = at;
    }
    at->value = arena_strndup(elem->arena, value, len);
    at->value_len = len;
}

void xml_del_attr(struct xml_node *elem, const char *name)
{
    for (struct xml_attr **pp = &elem->attrs; *pp; pp = &(*pp)->next) {
        if ((*pp)->ns == NULL && strcmp((*pp)->name, name) == 0) {
            *pp = (*pp)->next;
            return;
        }
    }
}

const char *xml_get_attr(const struct xml_node *elem, const char *name)
{
    const struct xml_attr *at = find_attr(elem, NULL, name);
    return at ? at->value : NULL;
}

const char *xml_get_attr_ns(const struct xml_node *elem, const char *ns, const char *name)
{
    const struct xml_attr *at = find_attr(elem, ns, name);
    return at ? at->value : NULL;
}

void xml_detach(struct xml_node *node)
{
    struct xml_node *parent = node->parent;
    if (parent == NULL)
        return;
    struct xml_node *prev = NULL;
    for (struct xml_node *c = parent->children; c; prev = c, c = c->next) {
        if (c != node)
            continue;
        if (prev)
            prev->next = c->next;
        else
            parent->children = c->next;
        if (parent->last_child == c)
            parent->last_child = prev;
        break;
    }
    node->parent = NULL;
    node->next = NULL;
}

static int matches(const struct xml_node *n, const char *ns, const char *name)
{
    return n->type == XML_ELEM && (ns == NULL || strcmp(n->ns, ns) == 0) &&
           (name == NULL || strcmp(n->name, name) == 0);
}

struct xml_node *xml_child(const struct xml_node *elem, const char *ns, const char *name)
{
    for (struct xml_node *c = elem->children; c; c = c->next)
        if (matches(c, ns, name))
            return c;
    return NULL;
}

struct xml_node *xml_next(const struct xml_node *child, const char *ns, const char *name)
{
    for (struct xml_node *c = child->next; c; c = c->next)
        if (matches(c, ns, name))
            return c;
    return NULL;
}

const char *xml_text(struct xml_node *elem, size_t *len)
{
    size_t total = 0, count = 0;
    const struct xml_node *only = NULL;
    for (const struct xml_node *c = elem->children; c; c = c->next) {
        if (c->type == XML_TEXT) {
            total += c->text_len;
            count++;
            only = c;
        }
    }
    if (len)
        *len = total;
    if (count == 0)
        return "";
    if (count == 1)
        return only->text;
    char *t = arena_alloc(elem->arena, total + 1);
    size_t off = 0;
    for (const struct xml_node *c = elem->children; c; c = c->next) {
        if (c->type == XML_TEXT) {
            memcpy(t + off, c->text, c->text_len);
            off += c->text_len;
        }
    }
    t[off] = '\0';
    return t;
}

size_t xml_child_count(const struct xml_node *elem)
{
    size_t n = 0;
    for (const struct xml_node *c = elem->children; c; c = c->next)
        if (c->type == XML_ELEM)
            n++;
    return n;
}

/* ---- escaping ---- */

/*
 * What each byte becomes: 0 = copied as is, ESC_BAD = written as U+FFFD (C0
 * controls XML 1.0 cannot carry; only trees built by code can hold them, the
 * parser never produces them), else the index of a reference. '>' is always
 * escaped so that "]]>" cannot appear; CR always, since a literal CR would be
 * read back as LF (XML 1.0 §2.11); in attributes also quotes, tab and LF,
 * which attribute-value normalisation would otherwise turn into spaces.
 */
enum {
    ESC_COPY = 0,
    ESC_BAD,
    ESC_AMP,
    ESC_LT,
    ESC_GT,
    ESC_QUOT,
    ESC_APOS,
    ESC_TAB,
    ESC_LF,
    ESC_CR
};

static const char *const esc_ref[] = {
    [ESC_AMP] = "&amp;",   [ESC_LT] = "&lt;",  [ESC_GT] = "&gt;",  [ESC_QUOT] = "&quot;",
    [ESC_APOS] = "&apos;", [ESC_TAB] = "&#9;", [ESC_LF] = "&#10;", [ESC_CR] = "&#13;",
};

#define ESC_C0_BAD                                                                                 \
    [0x00] = ESC_BAD, [0x01] = ESC_BAD, [0x02] = ESC_BAD, [0x03] = ESC_BAD, [0x04] = ESC_BAD,      \
    [0x05] = ESC_BAD, [0x06] = ESC_BAD, [0x07] = ESC_BAD, [0x08] = ESC_BAD, [0x0b] = ESC_BAD,      \
    [0x0c] = ESC_BAD, [0x0e] = ESC_BAD, [0x0f] = ESC_BAD, [0x10] = ESC_BAD, [0x11] = ESC_BAD,      \
    [0x12] = ESC_BAD, [0x13] = ESC_BAD, [0x14] = ESC_BAD, [0x15] = ESC_BAD, [0x16] = ESC_BAD,      \
    [0x17] = ESC_BAD, [0x18] = ESC_BAD, [0x19] = ESC_BAD, [0x1a] = ESC_BAD, [0x1b] = ESC_BAD,      \
    [0x1c] = ESC_BAD, [0x1d] = ESC_BAD, [0x1e] = ESC_BAD, [0x1f] = ESC_BAD

static const unsigned char esc_text[256] = {
    ESC_C0_BAD, ['&'] = ESC_AMP, ['<'] = ESC_LT, ['>'] = ESC_GT, ['\r'] = ESC_CR,
};

static const unsigned char esc_attr[256] = {
    ESC_C0_BAD,        ['&'] = ESC_AMP,  ['<'] = ESC_LT,  ['>'] = ESC_GT,  ['"'] = ESC_QUOT,
    ['\''] = ESC_APOS, ['\t'] = ESC_TAB, ['\n'] = ESC_LF, ['\r'] = ESC_CR,
};

static void escape(const char *s, size_t len, struct buf *out, const unsigned char *table)
{
    size_t run = 0;
    buf_reserve(out, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char k = table[(unsigned char)s[i]];
        if (k == ESC_COPY)
            continue;
        buf_append(out, s + run, i - run);
        if (k == ESC_BAD)
            buf_append(out, "\xef\xbf\xbd", 3);
        else
            buf_append_str(out, esc_ref[k]);
        run = i + 1;
    }
    buf_append(out, s + run, len - run);
}

void xml_escape_text(const char *s, size_t len, struct buf *out)
{
    escape(s, len, out, esc_text);
}

void xml_escape_attr(const char *s, size_t len, struct buf *out)
{
    escape(s, len, out, esc_attr);
}

/* ---- serializer ---- */

/* A prefix declaration in force where the output currently is. Generated
 * prefixes (for namespaced attributes that came without one) live in gen. */
struct ns_bind {
    const char *prefix;
    const char *uri;
    char gen[16];
};

struct ser {
    struct buf *out;
    struct ns_bind *binds;
    size_t n, cap;
    unsigned next_gen;
};

static const char *bind_prefix(const struct ns_bind *b)
{
    return b->prefix ? b->prefix : b->gen;
}

/* The URI prefix is bound to in scope, or NULL; *at gets its index. */
static const char *lookup(const struct ser *s, const char *prefix, size_t *at)
{
    for (size_t i = s->n; i-- > 0;) {
        if (strcmp(bind_prefix(&s->binds[i]), prefix) == 0) {
            if (at)
                *at = i;
            return s->binds[i].uri;
        }
    }
    return NULL;
}

static struct ns_bind *push_bind(struct ser *s, const char *prefix, const char *uri)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->binds = xreallocarray(s->binds, s->cap, sizeof(*s->binds));
    }
    struct ns_bind *b = &s->binds[s->n++];
    b->prefix = prefix;
    b->uri = uri;
    b->gen[0] = '\0';
    return b;
}

static void write_decl(struct ser *s, const char *prefix, const char *uri)
{
    buf_append_str(s->out, prefix ? " xmlns:" : " xmlns");
    if (prefix)
        buf_append_str(s->out, prefix);
    buf_append(s->out, "='", 2);
    xml_escape_attr(uri, strlen(uri), s->out);
    buf_append_byte(s->out, '\'');
}

/* Whether an element can be written with its recorded prefix. */
static int elem_prefix_ok(const struct xml_node *n)
{
    if (n->prefix == NULL || n->prefix[0] == '\0' || n->ns[0] == '\0')
        return 0;
    if (strcmp(n->prefix, "xmlns") == 0)
        return 0;
    if (strcmp(n->prefix, "xml") == 0)
        return strcmp(n->ns, XML_NS_XML) == 0;
    return strcmp(n->ns, XML_NS_XML) != 0;
}

/*
 * The prefix to write a namespaced attribute with, declaring it on this
 * element (bindings from index mark on) when the scope does not have it.
 */
static const char *attr_prefix(struct ser *s, const struct xml_attr *at, size_t mark,
                               const char *elem_prefix)
{
    if (strcmp(at->ns, XML_NS_XML) == 0)
        return "xml";
    const char *p = at->prefix;
    if (p && p[0] && strcmp(p, "xml") != 0 && strcmp(p, "xmlns") != 0) {
        size_t idx = 0;
        const char *uri = lookup(s, p, &idx);
        if (uri && strcmp(uri, at->ns) == 0)
            return p;
        /* Rebinding p here is fine unless this element itself uses p. */
        int used_here = (uri && idx >= mark) || (elem_prefix && strcmp(elem_prefix, p) == 0);
        if (!used_here) {
            push_bind(s, p, at->ns);
            write_decl(s, p, at->ns);
            return p;
        }
    }
    /* Reuse a prefix generated earlier on this element for the same URI. */
    for (size_t i = mark; i < s->n; i++)
        if (s->binds[i].prefix == NULL && strcmp(s->binds[i].uri, at->ns) == 0)
            return s->binds[i].gen;
    char gen[16];
    do
        snprintf(gen, sizeof(gen), "ns%u", s->next_gen++);
    while (lookup(s, gen, NULL) || (elem_prefix && strcmp(elem_prefix, gen) == 0));
    struct ns_bind *b = push_bind(s, NULL, at->ns);
    memcpy(b->gen, gen, sizeof(gen));
    write_decl(s, b->gen, at->ns);
    return b->gen;
}

static void write_qname(struct buf *out, const char *prefix, const char *name)
{
    if (prefix) {
        buf_append_str(out, prefix);
        buf_append_byte(out, ':');
    }
    buf_append_str(out, name);
}

static void ser_elem(struct ser *s, const struct xml_node *n, const char *default_ns)
{
    struct buf *out = s->out;
    const char *prefix = elem_prefix_ok(n) ? n->prefix : NULL;
    size_t mark = s->n;

    buf_append_byte(out, '<');
    write_qname(out, prefix, n->name);
    if (prefix) {
        const char *uri = strcmp(prefix, "xml") == 0 ? XML_NS_XML : lookup(s, prefix, NULL);
        if (uri == NULL || strcmp(uri, n->ns) != 0) {
            push_bind(s, prefix, n->ns);
            write_decl(s, prefix, n->ns);
        }
    } else if (strcmp(n->ns, default_ns) != 0) {
        write_decl(s, NULL, n->ns);
        default_ns = n->ns;
    }
    /* Declarations first, so that generated prefixes are known below. */
    size_t nattrs = 0;
    for (const struct xml_attr *at = n->attrs; at; at = at->next)
        nattrs++;
    const char *stack_prefixes[16];
    const char **aprefix =
        nattrs <= 16 ? stack_prefixes : xreallocarray(NULL, nattrs, sizeof(char *));
    size_t i = 0;
    for (const struct xml_attr *at = n->attrs; at; at = at->next, i++)
        aprefix[i] = at->ns ? attr_prefix(s, at, mark, prefix) : NULL;
    i = 0;
    for (const struct xml_attr *at = n->attrs; at; at = at->next, i++) {
        buf_append_byte(out, ' ');
        write_qname(out, aprefix[i], at->name);
        buf_append(out, "='", 2);
        xml_escape_attr(at->value, at->value_len, out);
        buf_append_byte(out, '\'');
    }
    if (aprefix != stack_prefixes)
        free(aprefix);

    if (n->children == NULL) {
        buf_append(out, "/>", 2);
    } else {
        buf_append_byte(out, '>');
        for (const struct xml_node *c = n->children; c; c = c->next) {
            if (c->type == XML_TEXT)
                xml_escape_text(c->text, c->text_len, out);
            else
                ser_elem(s, c, default_ns);
        }
        buf_append(out, "</", 2);
        write_qname(out, prefix, n->name);
        buf_append_byte(out, '>');
    }
    s->n = mark;
}

/* Room reserved before serialising an element (see xml_serialize). */
#define SER_FIRST 1000

void xml_serialize(const struct xml_node *node, const char *scope_ns, struct buf *out)
{
    if (node->type == XML_TEXT) {
        xml_escape_text(node->text, node->text_len, out);
        return;
    }
    /* Most stanzas fit in SER_FIRST bytes: one allocation up front instead
     * of the buffer doubling from 64 bytes four or five times per stanza
     * (each a realloc, and a copy when it moves). */
    buf_reserve(out, SER_FIRST);
    /* The bindings array is only allocated when prefixes are in play. */
    struct ser s = {out, NULL, 0, 0, 0};
    ser_elem(&s, node, scope_ns ? scope_ns : "");
    free(s.binds);
}

/* ---- stream and stanza errors ---- */

static const char *const stream_err_names[] = {
    [XML_SE_BAD_FORMAT] = "bad-format",
    [XML_SE_BAD_NAMESPACE_PREFIX] = "bad-namespace-prefix",
    [XML_SE_CONFLICT] = "conflict",
    [XML_SE_CONNECTION_TIMEOUT] = "connection-timeout",
    [XML_SE_HOST_GONE] = "host-gone",
    [XML_SE_HOST_UNKNOWN] = "host-unknown",
    [XML_SE_IMPROPER_ADDRESSING] = "improper-addressing",
    [XML_SE_INTERNAL_SERVER_ERROR] = "internal-server-error",
    [XML_SE_INVALID_FROM] = "invalid-from",
    [XML_SE_INVALID_NAMESPACE] = "invalid-namespace",
    [XML_SE_INVALID_XML] = "invalid-xml",
    [XML_SE_NOT_AUTHORIZED] = "not-authorized",
    [XML_SE_NOT_WELL_FORMED] = "not-well-formed",
    [XML_SE_POLICY_VIOLATION] = "policy-violation",
    [XML_SE_REMOTE_CONNECTION_FAILED] = "remote-connection-failed",
    [XML_SE_RESET] = "reset",
    [XML_SE_RESOURCE_CONSTRAINT] = "resource-constraint",
    [XML_SE_RESTRICTED_XML] = "restricted-xml",
    [XML_SE_SEE_OTHER_HOST] = "see-other-host",
    [XML_SE_SYSTEM_SHUTDOWN] = "system-shutdown",
    [XML_SE_UNDEFINED_CONDITION] = "undefined-condition",
    [XML_SE_UNSUPPORTED_ENCODING] = "unsupported-encoding",
    [XML_SE_UNSUPPORTED_FEATURE] = "unsupported-feature",
    [XML_SE_UNSUPPORTED_STANZA_TYPE] = "unsupported-stanza-type",
    [XML_SE_UNSUPPORTED_VERSION] = "unsupported-version",
};

const char *xml_stream_err_name(enum xml_stream_err cond)
{
    if ((unsigned)cond >= sizeof(stream_err_names) / sizeof(stream_err_names[0]))
        return NULL;
    return stream_err_names[cond];
}

void xml_stream_error(enum xml_stream_err cond, const char *text, struct buf *out)
{
    const char *name = xml_stream_err_name(cond);
    if (name == NULL)
        name = "undefined-condition";
    buf_printf(out, "<stream:error><%s xmlns='" XML_NS_STREAMS_ERR "'/>", name);
    if (text) {
        buf_append_str(out, "<text xmlns='" XML_NS_STREAMS_ERR "'>");
        xml_escape_text(text, strlen(text), out);
        buf_append_str(out, "</text>");
    }
    buf_append_str(out, "</stream:error>");
}

/* Names and the error type RFC 6120 §8.3.3 says each condition SHOULD carry.
 * Where the RFC allows two (feature-not-implemented: cancel or modify;
 * policy-violation: modify or wait; unexpected-request: wait or modify) the
 * first is used; undefined-condition allows any type and gets cancel. */
static const struct {
    const char *name;
    const char *type;
} stanza_errs[] = {
    [XML_STE_BAD_REQUEST] = {"bad-request", "modify"},
    [XML_STE_CONFLICT] = {"conflict", "cancel"},
    [XML_STE_FEATURE_NOT_IMPLEMENTED] = {"feature-not-implemented", "cancel"},
    [XML_STE_FORBIDDEN] = {"forbidden", "auth"},
    [XML_STE_GONE] = {"gone", "cancel"},
    [XML_STE_INTERNAL_SERVER_ERROR] = {"internal-server-error", "cancel"},
    [XML_STE_ITEM_NOT_FOUND] = {"item-not-found", "cancel"},
    [XML_STE_JID_MALFORMED] = {"jid-malformed", "modify"},
    [XML_STE_NOT_ACCEPTABLE] = {"not-acceptable", "modify"},
    [XML_STE_NOT_ALLOWED] = {"not-allowed", "cancel"},
    [XML_STE_NOT_AUTHORIZED] = {"not-authorized", "auth"},
    [XML_STE_POLICY_VIOLATION] = {"policy-violation", "modify"},
    [XML_STE_RECIPIENT_UNAVAILABLE] = {"recipient-unavailable", "wait"},
    [XML_STE_REDIRECT] = {"redirect", "modify"},
    [XML_STE_REGISTRATION_REQUIRED] = {"registration-required", "auth"},
    [XML_STE_REMOTE_SERVER_NOT_FOUND] = {"remote-server-not-found", "cancel"},
    [XML_STE_REMOTE_SERVER_TIMEOUT] = {"remote-server-timeout", "wait"},
    [XML_STE_RESOURCE_CONSTRAINT] = {"resource-constraint", "wait"},
    [XML_STE_SERVICE_UNAVAILABLE] = {"service-unavailable", "cancel"},
    [XML_STE_SUBSCRIPTION_REQUIRED] = {"subscription-required", "auth"},
    [XML_STE_UNDEFINED_CONDITION] = {"undefined-condition", "cancel"},
    [XML_STE_UNEXPECTED_REQUEST] = {"unexpected-request", "wait"},
};

#define NSTANZA_ERRS (sizeof(stanza_errs) / sizeof(stanza_errs[0]))

const char *xml_stanza_err_name(enum xml_stanza_err cond)
{
    if ((unsigned)cond >= NSTANZA_ERRS)
        return stanza_errs[XML_STE_UNDEFINED_CONDITION].name;
    return stanza_errs[cond].name;
}

const char *xml_stanza_err_type(enum xml_stanza_err cond)
{
    if ((unsigned)cond >= NSTANZA_ERRS)
        return stanza_errs[XML_STE_UNDEFINED_CONDITION].type;
    return stanza_errs[cond].type;
}

int xml_make_error(struct xml_node *stanza, enum xml_stanza_err cond, const char *type,
                   const char *text)
{
    if (stanza->type != XML_ELEM || (unsigned)cond >= NSTANZA_ERRS)
        return ERR_INVAL;
    if (strcmp(stanza->name, "message") != 0 && strcmp(stanza->name, "presence") != 0 &&
        strcmp(stanza->name, "iq") != 0)
        return ERR_INVAL;
    const char *cur = xml_get_attr(stanza, "type");
    if (cur && strcmp(cur, "error") == 0)
        return ERR_INVAL;

    /* The old values stay valid in the arena while the attributes change. */
    const char *to = xml_get_attr(stanza, "to");
    const char *from = xml_get_attr(stanza, "from");
    if (from)
        xml_set_attr(stanza, "to", from);
    else
        xml_del_attr(stanza, "to");
    if (to)
        xml_set_attr(stanza, "from", to);
    else
        xml_del_attr(stanza, "from");
    xml_set_attr(stanza, "type", "error");

    struct xml_node *err = xml_add_child(stanza, NULL, "error");
    xml_set_attr(err, "type", type ? type : xml_stanza_err_type(cond));
    xml_add_child(err, XML_NS_STANZAS, xml_stanza_err_name(cond));
    if (text) {
        struct xml_node *t = xml_add_child(err, XML_NS_STANZAS, "text");
        xml_add_text(t, text, strlen(text));
    }
    return 0;
}
