/*
 * xml.h - stanza trees, the incremental XMPP stream parser, the serializer.
 *
 * Trees: every node of a stanza (elements, attributes, text) lives in one
 * arena owned by the root node; xml_free(root) releases the lot. Names are
 * split into namespace URI, local name and (for output fidelity) prefix.
 * Strings in a tree are NUL-terminated, UTF-8, unescaped.
 *
 * Parser: fed arbitrary byte chunks of an XMPP stream (RFC 6120). It reports
 * the stream header, each complete top-level element (a stanza, or
 * stream-level elements such as <starttls/>) together with the exact bytes
 * it came from, the stream close, and at most one error, mapped to an RFC
 * 6120 stream-error condition. Restricted XML (RFC 6120 §11.1) is enforced:
 * no DOCTYPE, no entity declarations or references other than the five
 * predefined ones, no processing instructions, no comments. Every limit in
 * struct xml_limits is enforced while parsing, before the memory is spent.
 *
 * Serializer: writes a tree as canonical-enough XML for the wire: one
 * escaping rule set, namespace declarations only where the scope needs them.
 *
 * Single-threaded: a parser and the trees it hands out belong to one loop.
 */
#ifndef PARLEY_XML_H
#define PARLEY_XML_H

#include <stddef.h>

#include "common/arena.h"
#include "common/buf.h"

/* Namespaces used across Parley. */
#define XML_NS_STREAM      "http://etherx.jabber.org/streams"
#define XML_NS_CLIENT      "jabber:client"
#define XML_NS_SERVER      "jabber:server"
#define XML_NS_COMPONENT   "jabber:component:accept"
#define XML_NS_XML         "http://www.w3.org/XML/1998/namespace"
#define XML_NS_STREAMS_ERR "urn:ietf:params:xml:ns:xmpp-streams"
#define XML_NS_STANZAS     "urn:ietf:params:xml:ns:xmpp-stanzas"

/* ---- trees ---- */

enum xml_node_type { XML_ELEM, XML_TEXT };

struct xml_attr {
    struct xml_attr *next;
    const char *ns;     /* NULL for unqualified attributes (the usual case) */
    const char *prefix; /* NULL unless ns is set */
    const char *name;   /* local name */
    const char *value;
    size_t value_len;
};

struct xml_node {
    enum xml_node_type type;
    struct xml_node *parent;
    struct xml_node *next; /* next sibling */
    struct arena *arena;   /* the arena the whole tree lives in */
    /* XML_ELEM */
    const char *ns;     /* namespace URI; "" for none */
    const char *prefix; /* NULL when the element used the default namespace */
    const char *name;   /* local name */
    struct xml_attr *attrs;
    struct xml_node *children;
    struct xml_node *last_child;
    /* XML_TEXT */
    const char *text;
    size_t text_len;
};

/* A new root element in a new arena. ns may be NULL (= ""). */
struct xml_node *xml_new(const char *ns, const char *name);
/* Free the whole tree (call on the root only); NULL is fine. */
void xml_free(struct xml_node *root);
/* Deep copy of node (and its subtree) as the root of a new arena. */
struct xml_node *xml_copy(const struct xml_node *node);

/* Append a child element; ns NULL means "same namespace as parent". */
struct xml_node *xml_add_child(struct xml_node *parent, const char *ns, const char *name);
/* Append text (copied). */
struct xml_node *xml_add_text(struct xml_node *parent, const char *text, size_t len);
/* Set (add or replace) an unqualified attribute; the value is copied. */
void xml_set_attr(struct xml_node *elem, const char *name, const char *value);
/* Remove an unqualified attribute if present. */
void xml_del_attr(struct xml_node *elem, const char *name);
/* Value of an unqualified attribute, or NULL. */
const char *xml_get_attr(const struct xml_node *elem, const char *name);
/* Value of a namespaced attribute (e.g. XML_NS_XML, "lang"), or NULL. */
const char *xml_get_attr_ns(const struct xml_node *elem, const char *ns, const char *name);
/* Unlink node from its parent (its memory stays in the arena). */
void xml_detach(struct xml_node *node);

/* First child element with this namespace (NULL: any) and name (NULL: any). */
struct xml_node *xml_child(const struct xml_node *elem, const char *ns, const char *name);
/* Next sibling element after child matching ns/name the same way. */
struct xml_node *xml_next(const struct xml_node *child, const char *ns, const char *name);
/* Concatenated text of the direct text children, in the tree's arena
 * ("" if none). len may be NULL. */
const char *xml_text(struct xml_node *elem, size_t *len);
/* Number of child elements. */
size_t xml_child_count(const struct xml_node *elem);

/* ---- serializer ---- */

/*
 * Append the XML of node to out. scope_ns is the default namespace already
 * in force where the output goes (e.g. "jabber:client" for a stanza written
 * inside a client stream); an element whose ns equals it gets no xmlns.
 * Text and attribute values are escaped (&amp; &lt; &gt; &quot; &apos; and
 * control whitespace in attributes as character references; CR also in
 * text), so that the output parses back to the same tree. Prefixed names
 * keep their prefix and get xmlns:p where the scope lacks it. C0 controls
 * that XML cannot carry (only trees built by code can hold them) are written
 * as U+FFFD.
 */
void xml_serialize(const struct xml_node *node, const char *scope_ns, struct buf *out);

/* Escape text for element content / attribute values, appending to out. */
void xml_escape_text(const char *s, size_t len, struct buf *out);
void xml_escape_attr(const char *s, size_t len, struct buf *out);

/* ---- stream and stanza errors ---- */

/* RFC 6120 §4.9.3 stream error conditions. */
enum xml_stream_err {
    XML_SE_NONE = 0,
    XML_SE_BAD_FORMAT,
    XML_SE_BAD_NAMESPACE_PREFIX,
    XML_SE_CONFLICT,
    XML_SE_CONNECTION_TIMEOUT,
    XML_SE_HOST_GONE,
    XML_SE_HOST_UNKNOWN,
    XML_SE_IMPROPER_ADDRESSING,
    XML_SE_INTERNAL_SERVER_ERROR,
    XML_SE_INVALID_FROM,
    XML_SE_INVALID_NAMESPACE,
    XML_SE_INVALID_XML,
    XML_SE_NOT_AUTHORIZED,
    XML_SE_NOT_WELL_FORMED,
    XML_SE_POLICY_VIOLATION,
    XML_SE_REMOTE_CONNECTION_FAILED,
    XML_SE_RESET,
    XML_SE_RESOURCE_CONSTRAINT,
    XML_SE_RESTRICTED_XML,
    XML_SE_SEE_OTHER_HOST,
    XML_SE_SYSTEM_SHUTDOWN,
    XML_SE_UNDEFINED_CONDITION,
    XML_SE_UNSUPPORTED_ENCODING,
    XML_SE_UNSUPPORTED_FEATURE,
    XML_SE_UNSUPPORTED_STANZA_TYPE,
    XML_SE_UNSUPPORTED_VERSION,
};

/* Element name of a condition, e.g. "not-well-formed"; NULL for NONE. */
const char *xml_stream_err_name(enum xml_stream_err cond);
/* <stream:error><cond xmlns=…/>[<text>]</stream:error> as bytes for a stream
 * whose stream prefix is "stream". text may be NULL. */
void xml_stream_error(enum xml_stream_err cond, const char *text, struct buf *out);

/* RFC 6120 §8.3.3 stanza error conditions. */
enum xml_stanza_err {
    XML_STE_BAD_REQUEST,
    XML_STE_CONFLICT,
    XML_STE_FEATURE_NOT_IMPLEMENTED,
    XML_STE_FORBIDDEN,
    XML_STE_GONE,
    XML_STE_INTERNAL_SERVER_ERROR,
    XML_STE_ITEM_NOT_FOUND,
    XML_STE_JID_MALFORMED,
    XML_STE_NOT_ACCEPTABLE,
    XML_STE_NOT_ALLOWED,
    XML_STE_NOT_AUTHORIZED,
    XML_STE_POLICY_VIOLATION,
    XML_STE_RECIPIENT_UNAVAILABLE,
    XML_STE_REDIRECT,
    XML_STE_REGISTRATION_REQUIRED,
    XML_STE_REMOTE_SERVER_NOT_FOUND,
    XML_STE_REMOTE_SERVER_TIMEOUT,
    XML_STE_RESOURCE_CONSTRAINT,
    XML_STE_SERVICE_UNAVAILABLE,
    XML_STE_SUBSCRIPTION_REQUIRED,
    XML_STE_UNDEFINED_CONDITION,
    XML_STE_UNEXPECTED_REQUEST,
};

/* Condition element name, e.g. "service-unavailable". */
const char *xml_stanza_err_name(enum xml_stanza_err cond);
/* The RFC's usual type for a condition: "cancel", "modify", "auth", "wait". */
const char *xml_stanza_err_type(enum xml_stanza_err cond);

/*
 * Turn a stanza into its error reply, in place: swap to and from, set
 * type='error', append <error type=…><cond xmlns=stanzas/>[<text/>]</error>.
 * type NULL uses xml_stanza_err_type(cond). text may be NULL.
 * Returns ERR_INVAL if the stanza is itself of type error (never answer an
 * error with an error) or is not message/presence/iq.
 */
int xml_make_error(struct xml_node *stanza, enum xml_stanza_err cond, const char *type,
                   const char *text);

/* ---- the stream parser ---- */

struct xml_limits {
    size_t max_stanza_bytes; /* raw bytes of one top-level element (default 256 KiB) */
    unsigned max_depth;      /* element nesting below the stream element (default 32) */
    unsigned max_attrs;      /* attributes per element, xmlns included (default 64) */
    size_t max_name_len;     /* element/attribute/prefix names, namespace URIs (default 256) */
    size_t max_text_len;     /* one text run or attribute value (default 256 KiB) */
    size_t max_header_bytes; /* bytes before the stream header ends (default 8 KiB) */
    size_t max_tree_bytes;   /* arena memory of one top-level element's tree: caps the
                                node overhead of many tiny elements (default 1 MiB;
                                keep it at about 4 x max_stanza_bytes) */
};

void xml_limits_default(struct xml_limits *lim);

struct xml_parser_cbs {
    /*
     * The stream header <stream:stream …> was read. hdr is a root element
     * (no children) that the callee owns and must xml_free. For parsers
     * created with xml_parser_new_fragment this is never called.
     */
    void (*on_stream_open)(void *arg, struct xml_node *hdr);
    /*
     * A complete top-level element. The callee owns stanza (xml_free).
     * raw/rawlen are the exact bytes it was parsed from, valid only during
     * the call.
     */
    void (*on_element)(void *arg, struct xml_node *stanza, const char *raw, size_t rawlen);
    /* </stream:stream> was read. */
    void (*on_stream_close)(void *arg);
    /* The stream is broken; no more callbacks follow. text is for logs. */
    void (*on_error)(void *arg, enum xml_stream_err cond, const char *text);
};

struct xml_parser;

/*
 * A parser for an XMPP stream: the first element must be the stream header
 * ({http://etherx.jabber.org/streams}stream, else invalid-namespace or
 * bad-format). Whitespace between top-level elements is skipped; other text
 * there is bad-format. Size limits are policy-violation. lim NULL: defaults.
 */
struct xml_parser *xml_parser_new(const struct xml_limits *lim, const struct xml_parser_cbs *cbs,
                                  void *arg);
/* A parser for a sequence of top-level elements with no stream header
 * (config files, tests): every root element is reported by on_element.
 * No XML declaration is accepted; whitespace between elements is skipped. */
struct xml_parser *xml_parser_new_fragment(const struct xml_limits *lim,
                                           const struct xml_parser_cbs *cbs, void *arg);
/* NULL is fine. Safe to call from inside a callback (freed on return). */
void xml_parser_free(struct xml_parser *p);
/*
 * Feed the next bytes. Callbacks run from inside this call. Returns 0, or
 * ERR_PARSE after on_error (then the parser is dead: further calls return
 * ERR_CLOSED), or ERR_CLOSED after the stream closed (the call that reports
 * on_stream_close returns 0; bytes after the close are ignored), or
 * ERR_BADSTATE if called from one of its own callbacks. A callback may call
 * xml_parser_reset or xml_parser_free; feeding stops there.
 */
int xml_parser_feed(struct xml_parser *p, const char *data, size_t len);
/*
 * Start over, expecting a new stream header (after STARTTLS or SASL
 * success, RFC 6120 §5.4.3.3, §6.4.6). Bytes after the reset point within
 * the chunk being fed are discarded, as the RFC requires of the old stream.
 */
void xml_parser_reset(struct xml_parser *p);

/*
 * The default namespace declared on the stream header being parsed (the
 * content namespace, e.g. "jabber:client"); "" if none was declared or no
 * header was read yet. Valid until the next reset or free.
 */
const char *xml_parser_content_ns(const struct xml_parser *p);

/*
 * Idle streams: free expat and the parser's buffers (about 13 KB per
 * stream) until more bytes come; the next xml_parser_feed builds a new
 * expat parser behind a synthetic copy of the stream header's namespace
 * declarations, so parsing goes on exactly as before (same trees, limits,
 * errors, line numbers). Only at a clean boundary: a stream parser whose
 * header was read, no element open, every byte given to it parsed.
 * Costs a parser creation on the next feed: call it after some quiet time,
 * not after every read. Returns 0 (also when already hibernating), or
 * ERR_BADSTATE when not at such a boundary (or from a callback, or for a
 * fragment parser, or a stream header declaring over 1 KiB of namespaces).
 */
int xml_parser_hibernate(struct xml_parser *p);

/* Parse one complete document (a config file): the root, or NULL with a
 * message in err ("line N: …"). The restricted-XML rules and the limits
 * (lim NULL: defaults; the root element counts as one top-level element)
 * apply as for streams, except that comments are allowed and skipped, so
 * that config files can be commented. An XML declaration may open the
 * document; only UTF-8 is accepted. */
struct xml_node *xml_parse_document(const char *data, size_t len, const struct xml_limits *lim,
                                    char *err, size_t errlen);

#endif
