/*
 * xml_parser.c - the incremental XMPP stream parser on top of expat, and
 * xml_parse_document for config files (see xml.h).
 *
 * How it works: expat runs in namespace mode with triplets, so every name
 * arrives as "uri SEP local SEP prefix". Elements below the top level are
 * built into the tree of the current top-level element, which has its own
 * arena; when that element ends the tree and its raw bytes go to
 * on_element. Bytes are handed to expat in slices no longer than the room
 * left under the limit that applies (header bytes before the stream header
 * is complete, else stanza bytes counted from the start of the current
 * top-level element or from the end of the last thing expat finished), so
 * an oversized stanza is refused after max_stanza_bytes, never buffered.
 *
 * Raw bytes: every byte given to expat is also appended to p->raw, which
 * starts at absolute offset raw_base; before each slice, bytes nobody can
 * need any more (before the current element, or before the end of the last
 * completed event) are dropped. Element start/end offsets come from
 * XML_GetCurrentByteIndex/ByteCount inside the handlers.
 *
 * Restricted XML (RFC 6120 §11.1): a DOCTYPE is refused as soon as expat
 * sees it, before any entity declaration can be stored, so entity expansion
 * attacks never start; references to undefined entities are expat errors;
 * comments and processing instructions are refused by their handlers.
 *
 * Callbacks may call xml_parser_reset or xml_parser_free: both only set a
 * flag and stop expat; the work is done when expat has returned to
 * xml_parser_feed. Owned by one loop; never shared between threads.
 *
 * Hibernation (stream mode): between top-level elements the only state
 * that matters for what follows is the stream header's namespace
 * declarations (and the position, for line numbers). While the header is
 * parsed, a synthetic start tag with the same qualified name and the same
 * declarations is kept (wake_hdr). xml_parser_hibernate frees expat and the
 * buffers; the next feed builds a new expat parser, gives it wake_hdr with
 * every callback suppressed and carries on, exactly as fragment mode
 * starts behind its invisible wrapper. Only a clean boundary qualifies:
 * nothing open, and every byte expat was given finished as an event.
 */
#include "autoconfig.h"

#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

#include <expat.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/xml.h"

/* AddressSanitizer is on (gcc defines the first, clang has the feature):
 * region memory is then poisoned and scanned for leaks (see expat_malloc).
 * The release build needs neither header. */
#if defined(__SANITIZE_ADDRESS__)
#define RGN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RGN_ASAN 1
#endif
#endif
#ifdef RGN_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/lsan_interface.h>
#endif

/* Separates URI, local name and prefix in expat's names: U+0001 cannot
 * appear in XML 1.0 content, so it cannot occur inside a namespace URI. */
#define NS_SEP '\x01'

/* Fragment mode: top-level elements are children of this invisible root. */
static const char fragment_wrapper[] = "<fragment>";

/* The longest synthetic stream header kept for hibernation; a stream whose
 * header declares more never hibernates (typical: ~85 bytes). */
#define WAKE_HDR_MAX 1024

enum mode { MODE_STREAM, MODE_FRAGMENT, MODE_DOCUMENT };

/*
 * A coarse lexical state of the input, enough to know whether some bytes
 * can complete a markup token. expat (2.6, and Debian's 2.5 with the
 * CVE-2023-52425 fix) defers re-parsing an incomplete token until enough
 * new data has come, so that a huge token fed in small pieces is not
 * re-scanned quadratically; but that also holds back a complete stanza
 * whose last bytes arrived in a small read. Deferral is therefore switched
 * off exactly for the slices in which a token can end: a '>' outside of
 * quoted attribute values, comments and CDATA sections.
 */
enum lex_state {
    LEX_CONTENT,
    LEX_LT,
    LEX_TAG,
    LEX_SQ,
    LEX_DQ,
    LEX_PI,
    LEX_BANG,
    LEX_COMMENT,
    LEX_CDATA,
    LEX_DECL
};

struct lex {
    enum lex_state st;
    char prev1, prev2; /* the last two bytes scanned */
};

/* Where a stream parser's expat allocates (see expat_malloc). */
struct region {
    char *base; /* REGION_SIZE bytes mapped, or NULL: malloc */
    size_t used;
};

struct xml_parser {
    XML_Parser xp;
    struct region rgn;
    enum mode mode;
    struct xml_limits lim;
    struct xml_parser_cbs cbs;
    void *arg;

    /* Absolute byte offsets in what expat has been given. */
    uint64_t fed;        /* bytes given to expat */
    uint64_t keep_from;  /* end of the last event expat completed */
    uint64_t elem_start; /* '<' of the current top-level element */
    uint64_t raw_base;   /* offset of raw.data[0] */
    struct buf raw;

    unsigned depth;        /* open elements, stream header/wrapper included */
    unsigned base_depth;   /* depth at which top-level elements start */
    unsigned pending_decl; /* xmlns declarations of the start tag being read */
    unsigned sniffed;      /* leading bytes checked for a non-UTF-8 encoding */
    struct lex lex;        /* where the bytes given to expat end, lexically */
    struct xml_node *top;  /* current top-level element, NULL between them */
    struct xml_node *cur;  /* innermost open element of top */
    struct buf text;       /* character data not yet attached */
    char *content_ns;      /* default namespace declared on the stream header */
    struct xml_node *doc;  /* MODE_DOCUMENT: the finished root */
    struct buf hdr_decls;  /* while reading the header: its xmlns declarations as
                              they go into wake_hdr (escaped attribute text) */
    char *wake_hdr;        /* synthetic stream start tag, NULL if too large */
    size_t wake_len;
    unsigned long line_base; /* lines before the current expat parser's input */

    bool header_done; /* MODE_STREAM: the stream header was read */
    bool in_feed;     /* inside xml_parser_feed: defer reset and free */
    bool stopped;     /* expat was told to stop: ignore further events */
    bool closed;      /* the stream ended (</stream:stream>) */
    bool dead;        /* closed or broken: feeding is refused */
    bool want_reset;
    bool want_free;
    bool asleep; /* hibernating: no expat parser, no buffers */
    bool waking; /* feeding wake_hdr: callbacks suppressed */

    enum xml_stream_err err;
    unsigned long err_line;
    char *errmsg; /* ERRMSG_LEN bytes once an error was met (kept small per stream) */
};

#define ERRMSG_LEN 160

/* See enum lex_state: expat without reparse deferral needs nothing. */
static void set_reparse_deferral(struct xml_parser *p, bool on)
{
#ifdef HAVE_XML_SETREPARSEDEFERRALENABLED
    XML_SetReparseDeferralEnabled(p->xp, on ? XML_TRUE : XML_FALSE);
#else
    (void)p;
    (void)on;
#endif
}

/* ---- errors ---- */

/* The buffer for the error message (streams rarely need one). */
static char *errbuf(struct xml_parser *p)
{
    if (p->errmsg == NULL)
        p->errmsg = xmalloc(ERRMSG_LEN);
    return p->errmsg;
}

/* The line in the whole stream (expat counts from its own start). */
static unsigned long cur_line(const struct xml_parser *p)
{
    return p->line_base + (unsigned long)XML_GetCurrentLineNumber(p->xp);
}

static void stop(struct xml_parser *p)
{
    p->stopped = true;
    XML_StopParser(p->xp, XML_FALSE);
}

static void fail(struct xml_parser *p, enum xml_stream_err cond, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first error and stop expat; reported once expat returns. */
static void fail(struct xml_parser *p, enum xml_stream_err cond, const char *fmt, ...)
{
    if (p->stopped)
        return;
    p->err = cond;
    p->err_line = cur_line(p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf(p), ERRMSG_LEN, fmt, ap);
    va_end(ap);
    stop(p);
}

static enum xml_stream_err map_expat_error(enum XML_Error code)
{
    switch (code) {
    case XML_ERROR_NO_MEMORY:
        return XML_SE_RESOURCE_CONSTRAINT;
    case XML_ERROR_UNDEFINED_ENTITY:
    case XML_ERROR_PARAM_ENTITY_REF:
    case XML_ERROR_RECURSIVE_ENTITY_REF:
    case XML_ERROR_ASYNC_ENTITY:
    case XML_ERROR_BINARY_ENTITY_REF:
    case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
    case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
    case XML_ERROR_NOT_STANDALONE:
    case XML_ERROR_ENTITY_DECLARED_IN_PE:
    case XML_ERROR_FEATURE_REQUIRES_XML_DTD:
    case XML_ERROR_CANT_CHANGE_FEATURE_ONCE_PARSING:
        return XML_SE_RESTRICTED_XML;
    case XML_ERROR_UNKNOWN_ENCODING:
    case XML_ERROR_INCORRECT_ENCODING:
        return XML_SE_UNSUPPORTED_ENCODING;
    case XML_ERROR_UNBOUND_PREFIX:
    case XML_ERROR_UNDECLARING_PREFIX:
    case XML_ERROR_RESERVED_PREFIX_XML:
    case XML_ERROR_RESERVED_PREFIX_XMLNS:
    case XML_ERROR_RESERVED_NAMESPACE_URI:
        return XML_SE_BAD_NAMESPACE_PREFIX;
    default:
        return XML_SE_NOT_WELL_FORMED;
    }
}

/* ---- building trees ---- */

struct qname {
    const char *ns;
    size_t ns_len;
    const char *local;
    size_t local_len;
    const char *prefix; /* NULL if none */
    size_t prefix_len;
};

static void split_name(const char *s, struct qname *q)
{
    const char *a = strchr(s, NS_SEP);
    if (a == NULL) {
        *q = (struct qname){"", 0, s, strlen(s), NULL, 0};
        return;
    }
    q->ns = s;
    q->ns_len = (size_t)(a - s);
    q->local = a + 1;
    const char *b = strchr(q->local, NS_SEP);
    if (b == NULL) {
        q->local_len = strlen(q->local);
        q->prefix = NULL;
        q->prefix_len = 0;
    } else {
        q->local_len = (size_t)(b - q->local);
        q->prefix = b + 1;
        q->prefix_len = strlen(q->prefix);
    }
}

static bool name_ok(struct xml_parser *p, const struct qname *q)
{
    if (q->local_len > p->lim.max_name_len || q->prefix_len > p->lim.max_name_len) {
        fail(p, XML_SE_POLICY_VIOLATION, "name longer than %zu bytes", p->lim.max_name_len);
        return false;
    }
    return true;
}

/* ns (NUL-terminated) is the len bytes at uri (not terminated there). */
static bool same_ns(const char *ns, const char *uri, size_t len)
{
    return strncmp(ns, uri, len) == 0 && ns[len] == '\0';
}

/* A copy of a namespace URI, shared with the parent when equal (the usual
 * case), so deep trees in one namespace store it once. */
static const char *intern_ns(struct arena *a, const struct xml_node *parent, const struct qname *q)
{
    if (parent && same_ns(parent->ns, q->ns, q->ns_len))
        return parent->ns;
    return arena_strndup(a, q->ns, q->ns_len);
}

static void link_child(struct xml_node *parent, struct xml_node *n)
{
    n->parent = parent;
    if (parent->last_child)
        parent->last_child->next = n;
    else
        parent->children = n;
    parent->last_child = n;
}

/* Attributes of an element whose split names and value lengths the check
 * in build_elem keeps for building (more are split again: rare). */
#define ATTRS_KEPT 16

/* The first chunk of a top-level element's arena. A stanza's tree takes
 * about three times its bytes (a 400-byte message: ~1.3 KB of nodes and
 * strings), so with the arena's 1 KiB default most took a second chunk:
 * two mallocs above the thread cache's sizes per stanza. This is one 4 KiB
 * malloc, held only while the stanza is handled (kept stanzas are copies,
 * sized to fit); the stream header keeps the default. */
#define STANZA_ARENA_FIRST (4096 - 128)

/* A new element for name/atts under parent, or (parent NULL) as the root of
 * a new arena whose first chunk is first bytes (0: the default). NULL after
 * fail() if a limit is exceeded. */
static struct xml_node *build_elem(struct xml_parser *p, struct xml_node *parent,
                                   const XML_Char *name, const XML_Char **atts, size_t first)
{
    struct qname q;
    split_name(name, &q);
    if (!name_ok(p, &q))
        return NULL;
    unsigned nattrs = p->pending_decl;
    for (const XML_Char **a = atts; *a; a += 2)
        nattrs++;
    p->pending_decl = 0;
    if (nattrs > p->lim.max_attrs) {
        fail(p, XML_SE_POLICY_VIOLATION, "more than %u attributes", p->lim.max_attrs);
        return NULL;
    }
    /* Check every attribute before allocating anything; the first few
     * split names and value lengths are kept for the build below. */
    struct qname kept_q[ATTRS_KEPT];
    size_t kept_len[ATTRS_KEPT];
    unsigned i = 0;
    for (const XML_Char **a = atts; *a; a += 2, i++) {
        struct qname aq;
        split_name(a[0], &aq);
        if (!name_ok(p, &aq))
            return NULL;
        size_t vlen = strlen(a[1]);
        if (vlen > p->lim.max_text_len) {
            fail(p, XML_SE_POLICY_VIOLATION, "attribute value longer than %zu bytes",
                 p->lim.max_text_len);
            return NULL;
        }
        if (i < ATTRS_KEPT) {
            kept_q[i] = aq;
            kept_len[i] = vlen;
        }
    }

    struct arena *ar = parent ? parent->arena : arena_new(first);
    struct xml_node *n = arena_zalloc(ar, sizeof(*n));
    n->type = XML_ELEM;
    n->arena = ar;
    n->ns = intern_ns(ar, parent, &q);
    n->name = arena_strndup(ar, q.local, q.local_len);
    n->prefix = q.prefix ? arena_strndup(ar, q.prefix, q.prefix_len) : NULL;
    struct xml_attr **tail = &n->attrs;
    i = 0;
    for (const XML_Char **a = atts; *a; a += 2, i++) {
        struct qname aq;
        size_t vlen;
        if (i < ATTRS_KEPT) {
            aq = kept_q[i];
            vlen = kept_len[i];
        } else {
            split_name(a[0], &aq);
            vlen = strlen(a[1]);
        }
        struct xml_attr *at = arena_zalloc(ar, sizeof(*at));
        if (aq.ns_len) {
            at->ns = same_ns(n->ns, aq.ns, aq.ns_len) ? n->ns : arena_strndup(ar, aq.ns, aq.ns_len);
            at->prefix = aq.prefix ? arena_strndup(ar, aq.prefix, aq.prefix_len) : NULL;
        }
        at->name = arena_strndup(ar, aq.local, aq.local_len);
        at->value_len = vlen;
        at->value = arena_strndup(ar, a[1], vlen);
        *tail = at;
        tail = &at->next;
    }
    if (parent)
        link_child(parent, n);
    return n;
}

/* Attach pending character data to the open element. */
static void flush_text(struct xml_parser *p)
{
    if (p->text.len == 0)
        return;
    if (p->cur) {
        struct arena *a = p->cur->arena;
        struct xml_node *t = arena_zalloc(a, sizeof(*t));
        t->type = XML_TEXT;
        t->arena = a;
        t->text = arena_strndup(a, p->text.data, p->text.len);
        t->text_len = p->text.len;
        link_child(p->cur, t);
    }
    buf_reset(&p->text);
}

static uint64_t event_start(struct xml_parser *p)
{
    return (uint64_t)XML_GetCurrentByteIndex(p->xp);
}

static uint64_t event_end(struct xml_parser *p)
{
    return (uint64_t)XML_GetCurrentByteIndex(p->xp) + (uint64_t)XML_GetCurrentByteCount(p->xp);
}

/* ---- expat handlers ---- */

/* Remember the header's start tag for hibernation: same qualified name,
 * same namespace declarations, no other attributes. */
static void keep_wake_hdr(struct xml_parser *p, const struct qname *q)
{
    size_t plen = q->prefix ? q->prefix_len + 1 : 0;
    size_t n = 1 + plen + 6 + p->hdr_decls.len + 1;
    if (n <= WAKE_HDR_MAX) {
        struct buf b = BUF_INIT;
        buf_reserve(&b, n);
        buf_append_byte(&b, '<');
        if (q->prefix) {
            buf_append(&b, q->prefix, q->prefix_len);
            buf_append_byte(&b, ':');
        }
        buf_append(&b, "stream", 6);
        buf_append(&b, p->hdr_decls.data, p->hdr_decls.len);
        buf_append_byte(&b, '>');
        p->wake_hdr = buf_detach(&b, &p->wake_len);
    }
    buf_free(&p->hdr_decls);
}

static void stream_header(struct xml_parser *p, const XML_Char *name, const XML_Char **atts)
{
    struct qname q;
    split_name(name, &q);
    if (q.ns_len != strlen(XML_NS_STREAM) || memcmp(q.ns, XML_NS_STREAM, q.ns_len) != 0) {
        fail(p, XML_SE_INVALID_NAMESPACE, "stream header not in the stream namespace");
        return;
    }
    if (q.local_len != 6 || memcmp(q.local, "stream", 6) != 0) {
        fail(p, XML_SE_BAD_FORMAT, "first element is not a stream header");
        return;
    }
    struct xml_node *hdr = build_elem(p, NULL, name, atts, 0);
    if (hdr == NULL)
        return;
    keep_wake_hdr(p, &q);
    p->header_done = true;
    p->keep_from = event_end(p);
    p->depth++;
    if (p->cbs.on_stream_open)
        p->cbs.on_stream_open(p->arg, hdr);
    else
        xml_free(hdr);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct xml_parser *p = ud;
    if (p->stopped)
        return;
    if (p->depth < p->base_depth) {
        /* The stream header, or in fragment mode the wrapper we fed, or
         * the synthetic header of a parser waking from hibernation. */
        if (p->mode == MODE_STREAM && !p->waking)
            stream_header(p, name, atts);
        else
            p->depth++;
        return;
    }
    flush_text(p);
    unsigned level = p->depth - p->base_depth + 1;
    if (level > p->lim.max_depth) {
        fail(p, XML_SE_POLICY_VIOLATION, "elements nested deeper than %u", p->lim.max_depth);
        return;
    }
    struct xml_node *n = build_elem(p, p->cur, name, atts, STANZA_ARENA_FIRST);
    if (n == NULL)
        return;
    if (p->cur == NULL) {
        p->top = n;
        p->elem_start = event_start(p);
    }
    p->cur = n;
    p->depth++;
    /* Each tiny element costs a node and its strings: 256 KiB of <a/>
     * would be ~7 MB of tree without this cap. (The tree is freed with
     * p->top like any unfinished stanza.) */
    if (arena_used(n->arena) > p->lim.max_tree_bytes)
        fail(p, XML_SE_POLICY_VIOLATION, "stanza tree larger than %zu bytes",
             p->lim.max_tree_bytes);
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    struct xml_parser *p = ud;
    if (p->stopped)
        return;
    flush_text(p);
    p->depth--;
    if (p->depth < p->base_depth) {
        /* </stream:stream> (the wrapper of fragment mode is never closed). */
        p->closed = true;
        p->dead = true;
        stop(p);
        if (p->cbs.on_stream_close)
            p->cbs.on_stream_close(p->arg);
        return;
    }
    if (p->cur != p->top) {
        p->cur = p->cur->parent;
        return;
    }
    struct xml_node *n = p->top;
    uint64_t end = event_end(p);
    p->top = p->cur = NULL;
    p->keep_from = end;
    if (p->mode == MODE_DOCUMENT) {
        p->doc = n;
        return;
    }
    const char *raw = p->raw.data + (p->elem_start - p->raw_base);
    size_t rawlen = (size_t)(end - p->elem_start);
    if (p->cbs.on_element)
        p->cbs.on_element(p->arg, n, raw, rawlen);
    else
        xml_free(n);
}

static void XMLCALL on_chars(void *ud, const XML_Char *s, int len)
{
    struct xml_parser *p = ud;
    if (p->stopped)
        return;
    if (p->cur == NULL) {
        /* Between top-level elements only whitespace (keepalives) may
         * appear. Text there is well-formed XML but not XMPP, hence
         * bad-format rather than not-well-formed. */
        for (int i = 0; i < len; i++) {
            if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
                fail(p, XML_SE_BAD_FORMAT, "text outside of any stanza");
                return;
            }
        }
        p->keep_from = event_end(p);
        return;
    }
    /* Counted across callbacks: expat delivers one run in many pieces. */
    if ((size_t)len > p->lim.max_text_len - p->text.len) {
        fail(p, XML_SE_POLICY_VIOLATION, "text longer than %zu bytes", p->lim.max_text_len);
        return;
    }
    buf_append(&p->text, s, (size_t)len);
}

static void XMLCALL on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
    struct xml_parser *p = ud;
    if (p->stopped)
        return;
    size_t plen = prefix ? strlen(prefix) : 0, ulen = uri ? strlen(uri) : 0;
    if (plen > p->lim.max_name_len || ulen > p->lim.max_name_len) {
        fail(p, XML_SE_POLICY_VIOLATION, "namespace declaration longer than %zu bytes",
             p->lim.max_name_len);
        return;
    }
    if (p->waking)
        return;
    p->pending_decl++;
    if (p->mode == MODE_STREAM && !p->header_done) {
        if (prefix == NULL) {
            free(p->content_ns);
            p->content_ns = xstrdup(uri ? uri : "");
        }
        /* Past WAKE_HDR_MAX it is never used: stop growing. */
        if (p->hdr_decls.len <= WAKE_HDR_MAX) {
            buf_append_str(&p->hdr_decls, prefix ? " xmlns:" : " xmlns");
            if (prefix)
                buf_append(&p->hdr_decls, prefix, plen);
            buf_append(&p->hdr_decls, "='", 2);
            xml_escape_attr(uri ? uri : "", ulen, &p->hdr_decls);
            buf_append_byte(&p->hdr_decls, '\'');
        }
    }
}

static void XMLCALL on_xml_decl(void *ud, const XML_Char *version, const XML_Char *encoding,
                                int standalone)
{
    struct xml_parser *p = ud;
    if (encoding && strcasecmp(encoding, "UTF-8") != 0)
        fail(p, XML_SE_UNSUPPORTED_ENCODING, "encoding %.40s is not UTF-8", encoding);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
    fail(ud, XML_SE_RESTRICTED_XML, "DOCTYPE is not allowed");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_param,
                                   const XML_Char *value, int value_len, const XML_Char *base,
                                   const XML_Char *sysid, const XML_Char *pubid,
                                   const XML_Char *notation)
{
    fail(ud, XML_SE_RESTRICTED_XML, "entity declarations are not allowed");
}

static void XMLCALL on_skipped_entity(void *ud, const XML_Char *name, int is_param)
{
    fail(ud, XML_SE_RESTRICTED_XML, "entity references are not allowed");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
    fail(ud, XML_SE_RESTRICTED_XML, "processing instructions are not allowed");
}

static void XMLCALL on_comment(void *ud, const XML_Char *data)
{
    struct xml_parser *p = ud;
    /* Config files may be commented; streams may not (RFC 6120 §11.1). */
    if (p->mode != MODE_DOCUMENT)
        fail(p, XML_SE_RESTRICTED_XML, "comments are not allowed");
}

/* ---- life cycle ---- */

/*
 * expat's memory. A stream parser lives as long as its connection, but its
 * expat parser only until the stream hibernates: ~50 blocks, ~12 KB in all,
 * allocated one by one while the client logs in and freed together seconds
 * later. From the common heap they would sit between the blocks of other
 * connections that logged in meanwhile (TLS state that lives as long as
 * they do), and leave holes there that the heap cannot give back when they
 * are freed. So each stream parser has a region of its own, one private
 * mapping of REGION_SIZE bytes (only touched pages take memory) that expat
 * allocates from by bumping a pointer: it rarely frees a block before
 * XML_ParserFree, and the last block can shrink or grow in place when
 * expat reallocs it (its string pools, tag and attribute arrays). expat's
 * input buffer is not among them: XML_GetBuffer grows it by malloc, copy
 * and free, so a growing buffer leaves its old block as a hole (wiped)
 * until the parser is freed, or gives the room back when it was the last
 * block. Given back on hibernation and free (unmapped, or kept for the
 * next parser: RGN_CACHE), reused on reset; whatever does not fit (large
 * stanzas) comes from malloc as before.
 *
 * expat's suite has no user pointer: the region of the parser whose expat
 * runs is set in cur_rgn around every call that can allocate or free
 * (region_enter/region_leave), and restored after it, so a callback that
 * frees or feeds another parser leaves it as it was.
 *
 * The current region, the cache and the count of mappings are per thread,
 * so a stream parser must be created, fed, hibernated and freed on one
 * thread (its loop's), as xml.h requires of every parser: a region mapped
 * on one thread and given back on another would corrupt both counts.
 *
 * Every block is wiped when freed, also a malloc'd one that realloc moves:
 * expat's input buffer holds raw bytes of the stream (a SASL response, a
 * config file).
 *
 * Sanitizers: a region is a plain mapping, which AddressSanitizer does not
 * watch and LeakSanitizer does not scan. In sanitizer builds (RGN_ASAN) the
 * whole region is poisoned except the blocks handed out, exactly
 * [ptr, ptr+n) of each (headers, red zones between blocks and freed blocks
 * stay poisoned), and every mapped region is a LeakSanitizer root region,
 * so a malloc'd block that only expat's parser struct in a region points
 * to is not reported as leaked. The release build has none of this.
 */
#ifdef RGN_ASAN
/* Bytes left poisoned after each block, so that an overrun into the next
 * block's header is caught (sanitizer builds only). */
#define RGN_REDZONE 16
#else
#define RGN_REDZONE 0
#endif

#define REGION_SIZE (16 * 1024)

/* At most this many regions mapped at once (per thread: one loop each);
 * past it expat allocates from malloc. Each region is a mapping, and the
 * kernel allows a process ~65,000 (vm.max_map_count) for everything. */
#define REGIONS_MAX 16384

/* A region block's header: its size as expat asked for it. 16 bytes and
 * 16-aligned on every platform, so that blocks are aligned as malloc's
 * are (used stays a multiple of 16). */
struct rgn_hdr {
    _Alignas(16) size_t size;
};
_Static_assert(sizeof(struct rgn_hdr) == 16, "region block header must be 16 bytes");

/* Regions given back and kept for the next parser: mapping, unmapping and
 * faulting in fresh pages cost ~15 us a region, more than the parse of a
 * login, while parsers come and go at the login rate. At most RGN_CACHE
 * (1 MiB once touched) stay mapped for nobody. */
#define RGN_CACHE 64

static _Thread_local struct region *cur_rgn;
static _Thread_local unsigned regions_mapped; /* cached ones included */
static _Thread_local char *rgn_cache[RGN_CACHE];
static _Thread_local unsigned rgn_cached;

/* ASan poisoning of region memory; nothing in release builds. */
static void rgn_poison(const void *p, size_t n)
{
#ifdef RGN_ASAN
    ASAN_POISON_MEMORY_REGION(p, n);
#else
    (void)p;
    (void)n;
#endif
}

static void rgn_unpoison(const void *p, size_t n)
{
#ifdef RGN_ASAN
    ASAN_UNPOISON_MEMORY_REGION(p, n);
#else
    (void)p;
    (void)n;
#endif
}

static size_t rgn_round(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

/* Bytes after a block's start (its header excluded) up to the next one. */
static size_t rgn_span(size_t n)
{
    return rgn_round(n) + RGN_REDZONE;
}

static bool in_region(const struct region *r, const void *ptr)
{
    const char *c = ptr;
    return r != NULL && r->base != NULL && c >= r->base && c < r->base + REGION_SIZE;
}

/* A region block's size and its update; the header stays poisoned but
 * for the access itself. */
static size_t rgn_get_size(void *ptr)
{
    struct rgn_hdr *h = (struct rgn_hdr *)ptr - 1;
    rgn_unpoison(h, sizeof(*h));
    size_t n = h->size;
    rgn_poison(h, sizeof(*h));
    return n;
}

static void rgn_set_size(void *ptr, size_t n)
{
    struct rgn_hdr *h = (struct rgn_hdr *)ptr - 1;
    rgn_unpoison(h, sizeof(*h));
    h->size = n;
    rgn_poison(h, sizeof(*h));
}

/* Whether ptr is the last block of r (then it can shrink or grow). */
static bool rgn_is_last(const struct region *r, const char *ptr, size_t size)
{
    return ptr + rgn_span(size) == r->base + r->used;
}

static void *expat_malloc(size_t n)
{
    struct region *r = cur_rgn;
    /* malloc(0) takes a byte: a 0-byte block at the very end would start
     * at base + REGION_SIZE, which in_region would take for malloc's. */
    if (n == 0)
        n = 1;
    if (r != NULL && r->base != NULL && n <= REGION_SIZE &&
        sizeof(struct rgn_hdr) + rgn_span(n) <= REGION_SIZE - r->used) {
        char *ptr = r->base + r->used + sizeof(struct rgn_hdr); /* used: a multiple of 16 */
        r->used += sizeof(struct rgn_hdr) + rgn_span(n);
        rgn_set_size(ptr, n);
        rgn_unpoison(ptr, n);
        return ptr;
    }
    return malloc(n);
}

static void expat_free(void *ptr)
{
    if (ptr == NULL)
        return;
    struct region *r = cur_rgn;
    if (in_region(r, ptr)) {
        size_t size = rgn_get_size(ptr);
        /* Never wipe past the region, whatever the header says. */
        size_t room = (size_t)(r->base + REGION_SIZE - (char *)ptr);
        mem_wipe(ptr, size < room ? size : room);
        rgn_poison(ptr, size < room ? size : room);
        if (rgn_is_last(r, ptr, size))
            r->used = (size_t)((char *)ptr - r->base) - sizeof(struct rgn_hdr);
        return;
    }
    mem_wipe(ptr, malloc_usable_size(ptr));
    free(ptr);
}

static void *expat_realloc(void *ptr, size_t n)
{
    struct region *r = cur_rgn;
    if (ptr == NULL)
        return expat_malloc(n);
    if (n == 0)
        n = 1; /* as expat_malloc */
    size_t old;
    if (in_region(r, ptr)) {
        old = rgn_get_size(ptr);
        if (rgn_is_last(r, ptr, old) && n <= REGION_SIZE &&
            rgn_span(n) <= REGION_SIZE - (size_t)((char *)ptr - r->base)) {
            if (n < old) {
                mem_wipe((char *)ptr + n, old - n);
                rgn_poison((char *)ptr + n, old - n);
            } else {
                rgn_unpoison(ptr, n);
            }
            r->used = (size_t)((char *)ptr - r->base) + rgn_span(n);
            rgn_set_size(ptr, n);
            return ptr;
        }
    } else {
        /* Not realloc: it would free the old copy unwiped when it moves. */
        old = malloc_usable_size(ptr);
    }
    void *q = expat_malloc(n);
    if (q == NULL)
        return NULL;
    memcpy(q, ptr, old < n ? old : n);
    expat_free(ptr);
    return q;
}

static const XML_Memory_Handling_Suite expat_mem = {expat_malloc, expat_realloc, expat_free};

static struct region *region_enter(struct xml_parser *p)
{
    struct region *saved = cur_rgn;
    cur_rgn = &p->rgn;
    return saved;
}

static void region_leave(struct region *saved)
{
    cur_rgn = saved;
}

/* Map p's region (stream and fragment parsers: documents are parsed and
 * freed at once, where a mapping would only cost two system calls). If the
 * mapping fails, expat simply allocates from malloc. */
static void region_map(struct xml_parser *p)
{
    if (p->rgn.base != NULL || p->mode == MODE_DOCUMENT)
        return;
    p->rgn.used = 0;
    if (rgn_cached > 0) {
        p->rgn.base = rgn_cache[--rgn_cached];
        rgn_poison(p->rgn.base, REGION_SIZE); /* nothing handed out yet */
        return;
    }
    if (regions_mapped >= REGIONS_MAX)
        return;
    void *m = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return;
    p->rgn.base = m;
    regions_mapped++;
    rgn_poison(m, REGION_SIZE);
#ifdef RGN_ASAN
    __lsan_register_root_region(m, REGION_SIZE);
#endif
}

/* Unmap a region nobody uses. munmap can fail (ENOMEM when the kernel
 * would have to split a mapping merged with a neighbour at
 * vm.max_map_count): the region then stays mapped, lost but still counted
 * against REGIONS_MAX (it still holds a mapping), and the first failure is
 * logged. */
static void region_unmap(char *base)
{
    static _Thread_local bool logged;
#ifdef RGN_ASAN
    __lsan_unregister_root_region(base, REGION_SIZE);
#endif
    rgn_unpoison(base, REGION_SIZE); /* the addresses may be mapped again */
    if (munmap(base, REGION_SIZE) == 0) {
        regions_mapped--;
    } else if (!logged) {
        logged = true;
        log_warn("munmap of an expat region failed (%s): it stays mapped", strerror(errno));
    }
}

/* Free p's expat parser; with unmap, its region too. Every block was wiped
 * as expat freed it, so a region kept for the next parser starts empty. */
static void free_expat(struct xml_parser *p, bool unmap)
{
    struct region *saved = region_enter(p);
    XML_ParserFree(p->xp);
    region_leave(saved);
    p->xp = NULL;
    p->rgn.used = 0;
    if (unmap && p->rgn.base != NULL) {
        if (rgn_cached < RGN_CACHE)
            rgn_cache[rgn_cached++] = p->rgn.base;
        else
            region_unmap(p->rgn.base);
        p->rgn.base = NULL;
    }
}

/* XML_Parse with p's region set. */
static enum XML_Status run_expat(struct xml_parser *p, const char *data, size_t n, bool final)
{
    struct region *saved = region_enter(p);
    enum XML_Status st = XML_Parse(p->xp, data, (int)n, final ? XML_TRUE : XML_FALSE);
    region_leave(saved);
    return st;
}

/* A new expat parser with every setting and handler: the one place they
 * are made, for new streams, resets and wake-ups alike. */
static void create_expat(struct xml_parser *p)
{
    /* Forcing UTF-8 makes expat ignore any other declared encoding, which
     * on_xml_decl then refuses; leading bytes are checked in feed.
     * Namespace mode with NS_SEP, as XML_ParserCreateNS would. */
    static const XML_Char sep[] = {NS_SEP, '\0'};
    region_map(p);
    struct region *saved = region_enter(p);
    p->xp = XML_ParserCreate_MM("UTF-8", &expat_mem, sep);
    region_leave(saved);
    if (p->xp == NULL)
        abort();
    XML_SetReturnNSTriplet(p->xp, XML_TRUE);
    XML_SetParamEntityParsing(p->xp, XML_PARAM_ENTITY_PARSING_NEVER);
    XML_SetUserData(p->xp, p);
    XML_SetElementHandler(p->xp, on_start, on_end);
    XML_SetCharacterDataHandler(p->xp, on_chars);
    XML_SetStartNamespaceDeclHandler(p->xp, on_ns_decl);
    XML_SetXmlDeclHandler(p->xp, on_xml_decl);
    XML_SetStartDoctypeDeclHandler(p->xp, on_doctype);
    XML_SetEntityDeclHandler(p->xp, on_entity_decl);
    XML_SetSkippedEntityHandler(p->xp, on_skipped_entity);
    XML_SetProcessingInstructionHandler(p->xp, on_pi);
    XML_SetCommentHandler(p->xp, on_comment);
}

static void start_expat(struct xml_parser *p)
{
    create_expat(p);
    p->fed = p->keep_from = p->elem_start = p->raw_base = 0;
    p->line_base = 0;
    p->asleep = false;
    p->depth = 0;
    p->pending_decl = 0;
    p->sniffed = 0;
    p->lex = (struct lex){LEX_CONTENT, 0, 0};
    p->header_done = p->stopped = p->closed = p->dead = false;
    p->err = XML_SE_NONE;
    if (p->errmsg != NULL)
        p->errmsg[0] = '\0';
    if (p->mode == MODE_FRAGMENT) {
        size_t n = sizeof(fragment_wrapper) - 1;
        set_reparse_deferral(p, false);
        if (run_expat(p, fragment_wrapper, n, false) != XML_STATUS_OK)
            abort();
        p->fed = p->keep_from = p->raw_base = n;
        p->sniffed = 2;
    }
}

/* Forget the bytes of the old stream without leaving them in memory: it
 * may have carried credentials (SASL PLAIN, config files). */
static void wipe_buffers(struct xml_parser *p)
{
    mem_wipe(p->raw.data, p->raw.cap);
    mem_wipe(p->text.data, p->text.cap);
    buf_free(&p->raw);
    buf_free(&p->text);
}

/* Drop everything that belongs to the old stream and start a new one. */
static void restart(struct xml_parser *p)
{
    free_expat(p, false);
    xml_free(p->top);
    xml_free(p->doc);
    p->top = p->cur = p->doc = NULL;
    wipe_buffers(p);
    free(p->content_ns);
    p->content_ns = NULL;
    buf_free(&p->hdr_decls);
    free(p->wake_hdr);
    p->wake_hdr = NULL;
    p->want_reset = false;
    start_expat(p);
}

void xml_limits_default(struct xml_limits *lim)
{
    lim->max_stanza_bytes = 256 * 1024;
    lim->max_depth = 32;
    lim->max_attrs = 64;
    lim->max_name_len = 256;
    lim->max_text_len = 256 * 1024;
    lim->max_header_bytes = 8 * 1024;
    lim->max_tree_bytes = 1024 * 1024;
}

static struct xml_parser *parser_new(enum mode mode, const struct xml_limits *lim,
                                     const struct xml_parser_cbs *cbs, void *arg)
{
    struct xml_parser *p = xcalloc(1, sizeof(*p));
    p->mode = mode;
    if (lim)
        p->lim = *lim;
    else
        xml_limits_default(&p->lim);
    if (cbs)
        p->cbs = *cbs;
    p->arg = arg;
    p->base_depth = mode == MODE_DOCUMENT ? 0 : 1;
    buf_init(&p->raw);
    buf_init(&p->text);
    start_expat(p);
    return p;
}

struct xml_parser *xml_parser_new(const struct xml_limits *lim, const struct xml_parser_cbs *cbs,
                                  void *arg)
{
    return parser_new(MODE_STREAM, lim, cbs, arg);
}

struct xml_parser *xml_parser_new_fragment(const struct xml_limits *lim,
                                           const struct xml_parser_cbs *cbs, void *arg)
{
    return parser_new(MODE_FRAGMENT, lim, cbs, arg);
}

static void destroy(struct xml_parser *p)
{
    if (p->xp != NULL)
        free_expat(p, true);
    xml_free(p->top);
    xml_free(p->doc);
    wipe_buffers(p);
    free(p->content_ns);
    buf_free(&p->hdr_decls);
    free(p->wake_hdr);
    free(p->errmsg);
    free(p);
}

void xml_parser_free(struct xml_parser *p)
{
    if (p == NULL)
        return;
    if (p->in_feed) {
        p->want_free = true;
        stop(p);
        return;
    }
    destroy(p);
}

void xml_parser_reset(struct xml_parser *p)
{
    if (p->in_feed) {
        p->want_reset = true;
        stop(p);
        return;
    }
    restart(p);
}

const char *xml_parser_content_ns(const struct xml_parser *p)
{
    return p->content_ns ? p->content_ns : "";
}

int xml_parser_hibernate(struct xml_parser *p)
{
    if (p->asleep)
        return 0;
    /* Everything expat was given must have ended as an event: even
     * whitespace it holds back (a trailing CR) counts towards the size
     * limit of the next element, so dropping it would change outcomes. */
    if (p->in_feed || p->mode != MODE_STREAM || p->dead || !p->header_done || p->top != NULL ||
        p->wake_hdr == NULL || p->keep_from != p->fed)
        return ERR_BADSTATE;
    /* Outside of a parse call expat's position is the end of what it
     * consumed, here the end of the input. The synthetic header the next
     * parser starts with is line 1 of that parser, and the stream goes on
     * on the same line. */
    p->line_base = cur_line(p) - 1;
    free_expat(p, true);
    /* The last stanzas may have been a failed SASL exchange. */
    wipe_buffers(p);
    p->asleep = true;
    return 0;
}

/* A new expat parser, placed behind the synthetic stream header: depth 1,
 * nothing pending, offsets counted from the end of the header. */
static void wake(struct xml_parser *p)
{
    create_expat(p);
    p->depth = 0;
    p->waking = true;
    set_reparse_deferral(p, false);
    /* Our own bytes, made of names and URIs expat accepted before. */
    if (run_expat(p, p->wake_hdr, p->wake_len, false) != XML_STATUS_OK || p->depth != p->base_depth)
        abort();
    p->waking = false;
    p->fed = p->keep_from = p->elem_start = p->raw_base = p->wake_len;
    p->pending_decl = 0;
    p->lex = (struct lex){LEX_CONTENT, 0, 0};
    p->asleep = false;
}

/* ---- feeding ---- */

/* Bytes that may still be given to expat before a size limit is exceeded:
 * header bytes until the header is complete, then the bytes of one
 * top-level element (counted from its '<', or from the end of the last
 * event while its start tag is still incomplete). */
static size_t room(const struct xml_parser *p)
{
    uint64_t start, max;
    if (p->mode == MODE_STREAM && !p->header_done) {
        start = 0;
        max = p->lim.max_header_bytes;
    } else {
        start = p->top ? p->elem_start : p->keep_from;
        max = p->lim.max_stanza_bytes;
    }
    if (p->fed >= start + max)
        return 0;
    uint64_t r = start + max - p->fed;
    return r > INT32_MAX ? INT32_MAX : (size_t)r;
}

/* Keep only the bytes from which a raw slice can still be cut. */
static void trim_raw(struct xml_parser *p)
{
    uint64_t need = p->top ? p->elem_start : p->keep_from;
    if (need <= p->raw_base)
        return;
    size_t drop = (size_t)(need - p->raw_base);
    if (drop >= p->raw.len)
        buf_reset(&p->raw);
    else
        buf_consume(&p->raw, drop);
    p->raw_base += drop;
}

/* The byte before data[i] (from an earlier slice if i is 0 or 1). */
static char lex_before(const struct lex *lx, const char *data, size_t i, size_t back)
{
    if (i >= back)
        return data[i - back];
    return back - i == 1 ? lx->prev1 : lx->prev2;
}

/* Advance the lexical state over data; true if a token may end in it.
 * Text and quoted values are skipped with memchr: this runs over every
 * byte of every stream. */
static bool lex_scan(struct lex *lx, const char *data, size_t len)
{
    bool may_end = false;
    size_t i = 0;
    while (i < len) {
        const char *hit;
        char c = data[i];
        switch (lx->st) {
        case LEX_CONTENT:
            hit = memchr(data + i, '<', len - i);
            if (hit == NULL) {
                i = len;
                continue;
            }
            i = (size_t)(hit - data);
            lx->st = LEX_LT;
            break;
        case LEX_LT:
            if (c == '?')
                lx->st = LEX_PI;
            else if (c == '!')
                lx->st = LEX_BANG;
            else if (c == '>') {
                lx->st = LEX_CONTENT;
                may_end = true;
            } else
                lx->st = c == '\'' ? LEX_SQ : c == '"' ? LEX_DQ : LEX_TAG;
            break;
        case LEX_TAG:
            /* Names, '=' and spaces: only a quote or '>' matters, so
             * those are skipped here rather than one switch each. */
            while (c != '>' && c != '\'' && c != '"') {
                if (++i == len)
                    break;
                c = data[i];
            }
            if (i == len)
                continue;
            if (c == '>') {
                lx->st = LEX_CONTENT;
                may_end = true;
            } else {
                lx->st = c == '\'' ? LEX_SQ : LEX_DQ;
            }
            break;
        case LEX_SQ:
        case LEX_DQ:
            hit = memchr(data + i, lx->st == LEX_SQ ? '\'' : '"', len - i);
            if (hit == NULL) {
                i = len;
                continue;
            }
            i = (size_t)(hit - data);
            lx->st = LEX_TAG;
            break;
        case LEX_BANG:
            lx->st = c == '-' ? LEX_COMMENT : c == '[' ? LEX_CDATA : LEX_DECL;
            if (c == '>') {
                lx->st = LEX_CONTENT;
                may_end = true;
            }
            break;
        case LEX_PI:
        case LEX_COMMENT:
        case LEX_CDATA:
        case LEX_DECL:
            hit = memchr(data + i, '>', len - i);
            if (hit == NULL) {
                i = len;
                continue;
            }
            i = (size_t)(hit - data);
            /* "?>", "-->", "]]>"; DOCTYPE and the like are refused and can
             * only be in the (small) header, so any '>' ends them. */
            char b1 = lex_before(lx, data, i, 1), b2 = lex_before(lx, data, i, 2);
            if (lx->st == LEX_DECL || (lx->st == LEX_PI && b1 == '?') ||
                (lx->st == LEX_COMMENT && b1 == '-' && b2 == '-') ||
                (lx->st == LEX_CDATA && b1 == ']' && b2 == ']')) {
                lx->st = LEX_CONTENT;
                may_end = true;
            }
            break;
        }
        i++;
    }
    if (len >= 2) {
        lx->prev2 = data[len - 2];
        lx->prev1 = data[len - 1];
    } else if (len == 1) {
        lx->prev2 = lx->prev1;
        lx->prev1 = data[0];
    }
    return may_end;
}

/* Leading bytes of a UTF-16/32 document (BOM or NUL bytes), which expat
 * would otherwise switch encodings on even when told UTF-8. Checked one byte
 * at a time as they go to expat, so the outcome does not depend on chunking. */
static bool sniff_byte(struct xml_parser *p, unsigned char c)
{
    bool bad = c == 0x00 || (p->sniffed == 0 && (c == 0xfe || c == 0xff));
    p->sniffed++;
    if (bad) {
        p->err = XML_SE_UNSUPPORTED_ENCODING;
        p->err_line = 1;
        snprintf(errbuf(p), ERRMSG_LEN, "stream is not UTF-8");
    }
    return !bad;
}

static void report_error(struct xml_parser *p)
{
    p->dead = true;
    if (p->err == XML_SE_NONE) {
        enum XML_Error code = XML_GetErrorCode(p->xp);
        p->err = map_expat_error(code);
        p->err_line = cur_line(p);
        snprintf(errbuf(p), ERRMSG_LEN, "%s", XML_ErrorString(code));
    }
    if (p->mode != MODE_DOCUMENT && p->cbs.on_error) {
        char text[200];
        snprintf(text, sizeof(text), "%s (line %lu)", p->errmsg, p->err_line);
        p->cbs.on_error(p->arg, p->err, text);
    }
}

/* Run expat over one slice. 1: go on; 0: stop (closed, reset or freed in a
 * callback); ERR_PARSE: the stream is broken (reported). */
static int parse_slice(struct xml_parser *p, const char *data, size_t n, bool may_end, bool last)
{
    set_reparse_deferral(p, !may_end);
    enum XML_Status st = run_expat(p, data, n, last);
    if (p->want_free || p->want_reset || p->closed)
        return 0;
    if (st == XML_STATUS_ERROR || p->err != XML_SE_NONE) {
        report_error(p);
        return ERR_PARSE;
    }
    return 1;
}

/* Give data to expat slice by slice; final marks the end of a document. */
static int feed(struct xml_parser *p, const char *data, size_t len, bool final)
{
    size_t off = 0;
    for (;;) {
        size_t n = len - off;
        if (n) {
            size_t r = room(p);
            if (r == 0) {
                /* Before judging the size, make expat parse what it may be
                 * holding back (an empty parse with deferral off does), so
                 * that the outcome does not depend on how input was split. */
                int rc = parse_slice(p, "", 0, true, false);
                if (rc <= 0)
                    return rc;
                r = room(p);
            }
            if (r == 0) {
                bool hdr = p->mode == MODE_STREAM && !p->header_done;
                p->err = XML_SE_POLICY_VIOLATION;
                p->err_line = cur_line(p);
                snprintf(errbuf(p), ERRMSG_LEN, "%s larger than %zu bytes",
                         hdr ? "stream header" : "element",
                         hdr ? p->lim.max_header_bytes : p->lim.max_stanza_bytes);
                report_error(p);
                return ERR_PARSE;
            }
            if (n > r)
                n = r;
            if (p->sniffed < 2) {
                n = 1;
                if (!sniff_byte(p, (unsigned char)data[off])) {
                    report_error(p);
                    return ERR_PARSE;
                }
            }
            trim_raw(p);
            buf_append(&p->raw, data + off, n);
        }
        bool last = final && off + n == len;
        p->fed += n;
        int rc = parse_slice(p, data + off, n, lex_scan(&p->lex, data + off, n), last);
        off += n;
        if (rc <= 0)
            return rc;
        if (off == len && (!final || last))
            return 0;
    }
}

int xml_parser_feed(struct xml_parser *p, const char *data, size_t len)
{
    if (p->in_feed)
        return ERR_BADSTATE;
    if (p->dead)
        return ERR_CLOSED;
    if (p->asleep) {
        if (len == 0)
            return 0;
        wake(p);
    }
    p->in_feed = true;
    int rc = feed(p, data, len, false);
    p->in_feed = false;
    if (p->want_free) {
        destroy(p);
        return rc;
    }
    if (p->want_reset) {
        restart(p);
        return 0;
    }
    return rc;
}

struct xml_node *xml_parse_document(const char *data, size_t len, const struct xml_limits *lim,
                                    char *err, size_t errlen)
{
    struct xml_parser *p = parser_new(MODE_DOCUMENT, lim, NULL, NULL);
    struct xml_node *root = NULL;
    if (feed(p, data, len, true) == 0) {
        root = p->doc;
        p->doc = NULL;
    }
    if (root == NULL && (p->errmsg == NULL || p->errmsg[0] == '\0'))
        snprintf(errbuf(p), ERRMSG_LEN, "no root element");
    if (root == NULL && err && errlen)
        snprintf(err, errlen, "line %lu: %s", p->err_line, p->errmsg);
    destroy(p);
    return root;
}
