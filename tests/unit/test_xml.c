/*
 * test_xml.c - the xml module: stream parser (every document fed whole, split
 * at every byte boundary and byte by byte must give identical events, trees
 * and raw bytes, also when the parser hibernates between chunks wherever it
 * can), limits, restricted XML, encodings, namespaces, reset/free from
 * callbacks, hibernation, serializer escaping and round trips, helpers,
 * errors.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#if defined(__SANITIZE_ADDRESS__)
#define TEST_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_LSAN 1
#endif
#endif
#ifdef TEST_LSAN
#include <sanitizer/lsan_interface.h>
#endif

#include "common/buf.h"
#include "common/err.h"
#include "common/mem.h"
#include "common/xml.h"

#define HDR                                                                                        \
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "        \
    "to='example.com' version='1.0'>"

/* ---- helpers ---- */

/* An unambiguous dump of a tree, independent of the serializer. */
static void dump(const struct xml_node *n, struct buf *out)
{
    if (n->type == XML_TEXT) {
        buf_printf(out, "T(%zu:", n->text_len);
        buf_append(out, n->text, n->text_len);
        buf_append_byte(out, ')');
        return;
    }
    buf_printf(out, "<{%s}%s:%s", n->ns, n->prefix ? n->prefix : "-", n->name);
    for (const struct xml_attr *a = n->attrs; a; a = a->next) {
        buf_printf(out, " {%s}%s:%s=(%zu:", a->ns ? a->ns : "-", a->prefix ? a->prefix : "-",
                   a->name, a->value_len);
        buf_append(out, a->value, a->value_len);
        buf_append_byte(out, ')');
    }
    buf_append_byte(out, '>');
    for (const struct xml_node *c = n->children; c; c = c->next) {
        assert_ptr_equal(c->parent, n);
        assert_ptr_equal(c->arena, n->arena);
        dump(c, out);
    }
    buf_append(out, "</>", 3);
}

static char *dump_str(const struct xml_node *n)
{
    struct buf b = BUF_INIT;
    dump(n, &b);
    return buf_detach(&b, NULL);
}

static char *ser_str(const struct xml_node *n, const char *scope)
{
    struct buf b = BUF_INIT;
    xml_serialize(n, scope, &b);
    buf_append_byte(&b, '\0');
    return buf_detach(&b, NULL);
}

/* serialize -> parse -> equal tree; serialize again -> same bytes. */
static void check_round_trip(const struct xml_node *n)
{
    char *s1 = ser_str(n, "");
    char err[128];
    struct xml_node *back = xml_parse_document(s1, strlen(s1), NULL, err, sizeof(err));
    if (back == NULL)
        fail_msg("reparse of %s failed: %s", s1, err);
    char *d1 = dump_str(n), *d2 = dump_str(back);
    assert_string_equal(d1, d2);
    char *s2 = ser_str(back, "");
    assert_string_equal(s1, s2);
    free(s1);
    free(s2);
    free(d1);
    free(d2);
    xml_free(back);
}

struct rec {
    struct buf log;
    struct xml_parser *p;
    int elems;
    int reset_at; /* reset from on_element number N (1-based), 0: never */
    int free_at;  /* free from on_element number N */
    int free_on_open, free_on_close, free_on_error, reset_on_open;
    int freed;
    int did_reset;
    enum xml_stream_err err;
    int round_trip;
    int hibernate;    /* try xml_parser_hibernate after every chunk */
    int hibernations; /* how often it did */
};

/* Hibernations of the last events_all_splits run, summed over its splits. */
static int last_hibernations;

static void on_open(void *arg, struct xml_node *hdr)
{
    struct rec *r = arg;
    assert_null(hdr->children);
    buf_append_str(&r->log, "OPEN ");
    dump(hdr, &r->log);
    buf_printf(&r->log, " cns=%s\n", xml_parser_content_ns(r->p));
    xml_free(hdr);
    if (r->free_on_open) {
        xml_parser_free(r->p);
        r->freed = 1;
    } else if (r->reset_on_open) {
        xml_parser_reset(r->p);
    }
}

static void on_elem(void *arg, struct xml_node *st, const char *raw, size_t rawlen)
{
    struct rec *r = arg;
    r->elems++;
    assert_null(st->parent);
    buf_append_str(&r->log, "ELEM ");
    dump(st, &r->log);
    buf_append_str(&r->log, "\nRAW ");
    buf_append(&r->log, raw, rawlen);
    buf_append_byte(&r->log, '\n');
    if (r->round_trip)
        check_round_trip(st);
    xml_free(st);
    if (r->elems == r->free_at) {
        xml_parser_free(r->p);
        r->freed = 1;
    } else if (r->elems == r->reset_at) {
        xml_parser_reset(r->p);
        r->did_reset = 1;
        buf_append_str(&r->log, "RESET\n");
    }
}

static void on_close(void *arg)
{
    struct rec *r = arg;
    buf_append_str(&r->log, "CLOSE\n");
    if (r->free_on_close) {
        xml_parser_free(r->p);
        r->freed = 1;
    }
}

static void on_error(void *arg, enum xml_stream_err cond, const char *text)
{
    struct rec *r = arg;
    assert_int_equal(r->err, XML_SE_NONE); /* at most one error */
    r->err = cond;
    assert_non_null(text);
    buf_printf(&r->log, "ERROR %s: %s\n", xml_stream_err_name(cond), text);
    if (r->free_on_error) {
        xml_parser_free(r->p);
        r->freed = 1;
    }
}

static const struct xml_parser_cbs rec_cbs = {on_open, on_elem, on_close, on_error};

static void rec_init(struct rec *r, const struct xml_limits *lim, int fragment)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->log);
    r->p = fragment ? xml_parser_new_fragment(lim, &rec_cbs, r) : xml_parser_new(lim, &rec_cbs, r);
}

static void rec_done(struct rec *r)
{
    if (!r->freed)
        xml_parser_free(r->p);
    buf_free(&r->log);
}

/* Feed doc in chunks: split == 0 whole; split > 0 at that offset; split < 0
 * in pieces of -split bytes. Stops at the first non-zero return. */
static int feed_split(struct rec *r, const char *doc, size_t len, long split)
{
    size_t off = 0;
    /* A reset discards the rest of the chunk; stop there, as a stream
     * would (it stops reading until TLS is set up). */
    while (off < len && !r->freed && !r->did_reset) {
        size_t n = len - off;
        if (split > 0 && off == 0 && (size_t)split < len)
            n = (size_t)split;
        else if (split < 0 && (size_t)-split < n)
            n = (size_t)-split;
        int rc = xml_parser_feed(r->p, doc + off, n);
        if (rc != 0)
            return rc;
        off += n;
        if (r->hibernate && !r->freed && !r->did_reset) {
            int hr = xml_parser_hibernate(r->p);
            assert_true(hr == 0 || hr == ERR_BADSTATE);
            r->hibernations += hr == 0;
            /* A second call is a no-op that also succeeds. */
            if (hr == 0)
                assert_int_equal(xml_parser_hibernate(r->p), 0);
        }
    }
    return 0;
}

/* The log of feeding doc whole; asserts that every split and byte-by-byte
 * feeding gives exactly the same log (error texts and their line numbers
 * included), with and without hibernating the parser after every chunk
 * where it can. Caller frees. */
static char *events_all_splits(const char *doc, size_t len, const struct xml_limits *lim,
                               int fragment)
{
    struct rec r;
    rec_init(&r, lim, fragment);
    r.round_trip = 1;
    feed_split(&r, doc, len, 0);
    buf_append_byte(&r.log, '\0');
    char *want = buf_detach(&r.log, NULL);
    rec_done(&r);
    last_hibernations = 0;
    for (int hib = 0; hib < 2; hib++) {
        for (long split = -1; split < (long)len; split++) {
            if (split == 0 && !hib)
                continue;
            rec_init(&r, lim, fragment);
            r.hibernate = hib;
            feed_split(&r, doc, len, split);
            buf_append_byte(&r.log, '\0');
            if (strcmp(r.log.data, want) != 0)
                fail_msg("split %ld%s differs:\n%s\nwant:\n%s", split,
                         hib ? " with hibernation" : "", r.log.data, want);
            if (fragment)
                assert_int_equal(r.hibernations, 0);
            last_hibernations += r.hibernations;
            rec_done(&r);
        }
    }
    return want;
}

/* The error (or XML_SE_NONE) of a document, checked to be the same at
 * every split. */
static enum xml_stream_err error_of(const char *doc, size_t len, const struct xml_limits *lim,
                                    int fragment)
{
    char *log = events_all_splits(doc, len, lim, fragment);
    free(log);
    struct rec r;
    rec_init(&r, lim, fragment);
    int rc = feed_split(&r, doc, len, 0);
    enum xml_stream_err e = r.err;
    assert_int_equal(rc, e == XML_SE_NONE ? 0 : ERR_PARSE);
    if (e != XML_SE_NONE)
        assert_int_equal(xml_parser_feed(r.p, "<a/>", 4), ERR_CLOSED);
    rec_done(&r);
    return e;
}

static enum xml_stream_err stream_error_of(const char *body)
{
    struct buf b = BUF_INIT;
    buf_append_str(&b, HDR);
    buf_append_str(&b, body);
    enum xml_stream_err e = error_of(b.data, b.len, NULL, 0);
    buf_free(&b);
    return e;
}

/* ---- the stream parser ---- */

static const char *const stanzas[] = {
    "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    "</stream:features>",
    "<message to='juliet@example.com/balcony' from='romeo@example.net/orchard' type='chat' "
    "id=\"m1\" xml:lang='en'><body>Wherefore art thou, &lt;Romeo&gt; &amp; &#x263A; \xe2\x98\x83"
    "<![CDATA[<raw & cdata>]]>!</body><thread>t1</thread></message>",
    "<presence><show>away</show><status>gone\r\nfishing\t&#13;</status><c "
    "xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://psi-im.org' "
    "ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/></presence>",
    "<iq type='result' id='r1'><query xmlns='jabber:iq:roster' ver='v1'><item "
    "jid='nurse@example.com' name='Nurse &apos;N&quot;' subscription='both'><group>Friends</group>"
    "</item><item jid='tybalt@example.com' subscription='none' ask='subscribe'/></query></iq>",
    "<x:foo xmlns:x='urn:x' xmlns:y='urn:y' x:a='1' y:b='2' c='3'><x:bar/><baz xmlns='urn:z'>"
    "<x:deep xmlns:x='urn:other'/></baz><y:q xmlns=''>no ns</y:q></x:foo>",
    "<r:route xmlns:r='urn:parley:router' to='c2s-1'><message from='a@b'><body>x</body></message>"
    "</r:route>",
    "<empty/>",
};

static void test_stream_events_every_split(void **state)
{
    struct buf doc = BUF_INIT;
    buf_append_str(&doc, "<?xml version='1.0' encoding='utf-8'?>\n" HDR "\n  ");
    for (size_t i = 0; i < sizeof(stanzas) / sizeof(stanzas[0]); i++) {
        buf_append_str(&doc, stanzas[i]);
        buf_append_str(&doc, i % 2 ? " \n\t\r\n" : "");
    }
    buf_append_str(&doc, " </stream:stream>");
    char *log = events_all_splits(doc.data, doc.len, NULL, 0);
    /* Byte by byte alone hibernates after every stanza and whitespace. */
    assert_true(last_hibernations > 20);

    /* The raw bytes of each element are exactly its slice of the input. */
    const char *at = log;
    for (size_t i = 0; i < sizeof(stanzas) / sizeof(stanzas[0]); i++) {
        at = strstr(at, "\nRAW ");
        assert_non_null(at);
        at += 5;
        size_t n = strlen(stanzas[i]);
        assert_memory_equal(at, stanzas[i], n);
        assert_int_equal(at[n], '\n');
    }
    assert_non_null(strstr(log, "OPEN <{http://etherx.jabber.org/streams}stream:stream "
                                "{-}-:to=(11:example.com) {-}-:version=(3:1.0)></> "
                                "cns=jabber:client\n"));
    /* Entities, character references, CDATA and newline normalisation. */
    assert_non_null(strstr(log, "T(51:Wherefore art thou, <Romeo> & \xe2\x98\xba \xe2\x98\x83"
                                "<raw & cdata>!)"));
    assert_non_null(strstr(log, "T(14:gone\nfishing\t\r)"));
    assert_non_null(strstr(log, "{http://www.w3.org/XML/1998/namespace}xml:lang=(2:en)"));
    assert_non_null(strstr(log, "{-}-:name=(9:Nurse 'N\")"));
    /* Prefixes are kept, inner rebinding and xmlns='' resolve correctly. */
    assert_non_null(strstr(log, "<{urn:x}x:foo {urn:x}x:a=(1:1) {urn:y}y:b=(1:2) {-}-:c=(1:3)>"
                                "<{urn:x}x:bar></><{urn:z}-:baz><{urn:other}x:deep></></>"
                                "<{urn:y}y:q>T(5:no ns)</></>"));
    assert_non_null(strstr(log, "<{jabber:client}-:empty></>"));
    size_t n = strlen(log);
    assert_true(n > 6 && strcmp(log + n - 6, "CLOSE\n") == 0);
    free(log);
    buf_free(&doc);
}

/* Each element is delivered by the very feed that gives its last byte, even
 * byte by byte (expat's reparse deferral must not hold it back). */
static void test_no_delivery_delay(void **state)
{
    struct buf doc = BUF_INIT;
    buf_append_str(&doc, HDR);
    size_t ends[sizeof(stanzas) / sizeof(stanzas[0])];
    for (size_t i = 0; i < sizeof(stanzas) / sizeof(stanzas[0]); i++) {
        buf_append_str(&doc, stanzas[i]);
        ends[i] = doc.len;
    }
    struct rec r;
    rec_init(&r, NULL, 0);
    size_t next = 0;
    for (size_t off = 0; off < doc.len; off++) {
        assert_int_equal(xml_parser_feed(r.p, doc.data + off, 1), 0);
        if (next < sizeof(ends) / sizeof(ends[0]) && off + 1 == ends[next])
            next++;
        assert_int_equal(r.elems, next);
        if (off + 1 == strlen(HDR))
            assert_true(r.log.len > 0 && strncmp(r.log.data, "OPEN ", 5) == 0);
    }
    assert_int_equal(xml_parser_feed(r.p, "</stream:stream>", 16), 0);
    assert_non_null(strstr(r.log.data, "CLOSE\n"));
    rec_done(&r);
    buf_free(&doc);
}

static void test_fragment_mode(void **state)
{
    const char doc[] = "<a xmlns='urn:a'><b>1</b></a>\n <c x='y'/><d>t</d>";
    char *log = events_all_splits(doc, strlen(doc), NULL, 1);
    assert_string_equal(log, "ELEM <{urn:a}-:a><{urn:a}-:b>T(1:1)</></>\nRAW <a "
                             "xmlns='urn:a'><b>1</b></a>\nELEM <{}-:c {-}-:x=(1:y)></>\nRAW "
                             "<c x='y'/>\nELEM <{}-:d>T(1:t)</>\nRAW <d>t</d>\n");
    free(log);
    assert_int_equal(error_of("<a/>text", 8, NULL, 1), XML_SE_BAD_FORMAT);
}

static void test_close_then_closed(void **state)
{
    struct rec r;
    rec_init(&r, NULL, 0);
    const char doc[] = HDR "<a/></stream:stream>trailing junk <<<";
    assert_int_equal(xml_parser_feed(r.p, doc, strlen(doc)), 0);
    assert_non_null(strstr(r.log.data, "CLOSE\n"));
    assert_int_equal(r.err, XML_SE_NONE);
    assert_int_equal(xml_parser_feed(r.p, "<a/>", 4), ERR_CLOSED);
    rec_done(&r);

    /* A self-closed header opens and closes at once. */
    rec_init(&r, NULL, 0);
    const char empty[] = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>";
    assert_int_equal(xml_parser_feed(r.p, empty, strlen(empty)), 0);
    assert_non_null(strstr(r.log.data, "cns=\nCLOSE\n"));
    rec_done(&r);
}

static void test_stream_header_errors(void **state)
{
    const char wrong_ns[] = "<stream:stream xmlns:stream='http://example.com/streams'>";
    assert_int_equal(error_of(wrong_ns, strlen(wrong_ns), NULL, 0), XML_SE_INVALID_NAMESPACE);
    const char no_ns[] = "<stream>";
    assert_int_equal(error_of(no_ns, strlen(no_ns), NULL, 0), XML_SE_INVALID_NAMESPACE);
    const char wrong_name[] = "<stream:foo xmlns:stream='http://etherx.jabber.org/streams'>";
    assert_int_equal(error_of(wrong_name, strlen(wrong_name), NULL, 0), XML_SE_BAD_FORMAT);
    const char unbound[] = "<stream:stream xmlns='jabber:client'>";
    assert_int_equal(error_of(unbound, strlen(unbound), NULL, 0), XML_SE_BAD_NAMESPACE_PREFIX);
    const char garbage[] = "hello<a/>";
    assert_int_equal(error_of(garbage, strlen(garbage), NULL, 0), XML_SE_NOT_WELL_FORMED);
}

static void test_stanza_level_errors(void **state)
{
    assert_int_equal(stream_error_of("<message/>hello<message/>"), XML_SE_BAD_FORMAT);
    assert_int_equal(stream_error_of("<message><body></message>"), XML_SE_NOT_WELL_FORMED);
    assert_int_equal(stream_error_of("<message a='1' a='2'/>"), XML_SE_NOT_WELL_FORMED);
    assert_int_equal(stream_error_of("<p:message/>"), XML_SE_BAD_NAMESPACE_PREFIX);
    assert_int_equal(stream_error_of("<message p:a='1'/>"), XML_SE_BAD_NAMESPACE_PREFIX);
    assert_int_equal(stream_error_of("<message>&#0;</message>"), XML_SE_NOT_WELL_FORMED);
    assert_int_equal(stream_error_of("<message>\x01</message>"), XML_SE_NOT_WELL_FORMED);
    assert_int_equal(stream_error_of("<?xml version='1.0'?>"), XML_SE_NOT_WELL_FORMED);
    assert_int_equal(stream_error_of("</stream:stream><a/>"), XML_SE_NONE);
    assert_int_equal(stream_error_of(" \n\t\r\n <a/>  "), XML_SE_NONE);
}

/* ---- restricted XML ---- */

static void test_restricted_xml(void **state)
{
    const char *const docs[] = {
        "<!DOCTYPE stream>" HDR,
        "<?xml version='1.0'?><!DOCTYPE s [<!ENTITY e 'x'>]>" HDR "<a>&e;</a>",
        "<!DOCTYPE s [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>" HDR "<a>&e;</a>",
        "<!DOCTYPE s SYSTEM 'http://example.com/x.dtd'>" HDR,
        HDR "<a>&e;</a>",
        HDR "<a x='&e;'/>",
        HDR "<a>&amp;&unknown;</a>",
        HDR "<?php system('x'); ?>",
        HDR "<a><?pi data?></a>",
        HDR "<!-- comment -->",
        HDR "<a><!-- comment --></a>",
        "<!-- before -->" HDR,
        "<?pi?>" HDR,
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        enum xml_stream_err e = error_of(docs[i], strlen(docs[i]), NULL, 0);
        if (e != XML_SE_RESTRICTED_XML)
            fail_msg("%s: got %s", docs[i], xml_stream_err_name(e));
    }
    /* The five predefined entities and character references are fine. */
    assert_int_equal(stream_error_of("<a x='&lt;&gt;&amp;&apos;&quot;&#65;&#x42;'>&lt;&gt;&amp;"
                                     "&apos;&quot;&#65;&#x42;</a>"),
                     XML_SE_NONE);
}

static void test_billion_laughs(void **state)
{
    struct buf doc = BUF_INIT;
    buf_append_str(&doc, "<?xml version='1.0'?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
    buf_append_str(&doc,
                   " <!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n");
    for (int i = 2; i <= 9; i++) {
        buf_printf(&doc, " <!ENTITY lol%d \"", i);
        for (int j = 0; j < 10; j++)
            buf_printf(&doc, "&lol%d;", i - 1);
        buf_append_str(&doc, "\">\n");
    }
    buf_append_str(&doc, "]>\n" HDR "<message><body>&lol9;</body></message>");
    for (int frag = 0; frag < 2; frag++) {
        struct rec r;
        rec_init(&r, NULL, frag);
        assert_int_equal(xml_parser_feed(r.p, doc.data, doc.len), ERR_PARSE);
        /* Refused before any entity could be declared, let alone expanded:
         * no element was produced. Fragments cannot hold a DOCTYPE at all. */
        assert_int_equal(r.err, frag ? XML_SE_NOT_WELL_FORMED : XML_SE_RESTRICTED_XML);
        assert_int_equal(r.elems, 0);
        rec_done(&r);
    }
    char err[128];
    assert_null(xml_parse_document(doc.data, doc.len, NULL, err, sizeof(err)));
    assert_string_equal(err, "line 2: DOCTYPE is not allowed");
    buf_free(&doc);
}

/* ---- encodings ---- */

static void test_encodings(void **state)
{
    const char latin1[] = "<?xml version='1.0' encoding='ISO-8859-1'?>" HDR;
    assert_int_equal(error_of(latin1, strlen(latin1), NULL, 0), XML_SE_UNSUPPORTED_ENCODING);
    const char utf16[] = "\xfe\xff\x00<\x00s";
    assert_int_equal(error_of(utf16, 6, NULL, 0), XML_SE_UNSUPPORTED_ENCODING);
    const char utf16le[] = "<\x00s\x00";
    assert_int_equal(error_of(utf16le, 4, NULL, 0), XML_SE_UNSUPPORTED_ENCODING);
    const char bom8[] = "\xef\xbb\xbf" HDR "<a/>";
    assert_int_equal(error_of(bom8, strlen(bom8), NULL, 0), XML_SE_NONE);

    const char *const bad_utf8[] = {
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, 3 bytes */
        "\xf0\x80\x80\xaf", /* overlong, 4 bytes */
        "\xed\xa0\x80",     /* UTF-16 surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xf5\x80\x80\x80", /* invalid lead byte */
        "\x80",             /* stray continuation */
        "\xe2\x82",         /* truncated (followed by '<') */
        "\xef\xbf\xbe",     /* U+FFFE, not an XML character */
    };
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
        char body[64];
        snprintf(body, sizeof(body), "<body>a%sb</body>", bad_utf8[i]);
        assert_int_equal(stream_error_of(body), XML_SE_NOT_WELL_FORMED);
        snprintf(body, sizeof(body), "<body x='%s'/>", bad_utf8[i]);
        assert_int_equal(stream_error_of(body), XML_SE_NOT_WELL_FORMED);
    }
    assert_int_equal(stream_error_of("<body>\xf0\x9f\x98\x80 \xc3\xa9</body>"), XML_SE_NONE);
}

/* ---- limits ---- */

static void small_limits(struct xml_limits *lim)
{
    xml_limits_default(lim);
    lim->max_stanza_bytes = 100;
    lim->max_depth = 3;
    lim->max_attrs = 2;
    lim->max_name_len = 8;
    lim->max_text_len = 10;
    lim->max_header_bytes = 150;
}

static enum xml_stream_err frag_error(const char *doc, const struct xml_limits *lim)
{
    return error_of(doc, strlen(doc), lim, 1);
}

static void test_limit_stanza_bytes(void **state)
{
    struct xml_limits lim;
    small_limits(&lim);
    lim.max_text_len = 1000;
    char doc[256];
    /* "<a>" + text + "</a>" = exactly 100 bytes, then 101. */
    snprintf(doc, sizeof(doc), "<a>%093d</a> <b/>", 0);
    assert_int_equal(frag_error(doc, &lim), XML_SE_NONE);
    snprintf(doc, sizeof(doc), "<a>%094d</a> <b/>", 0);
    assert_int_equal(frag_error(doc, &lim), XML_SE_POLICY_VIOLATION);
    /* An incomplete start tag counts too. */
    snprintf(doc, sizeof(doc), "<a x='%0110d'", 0);
    assert_int_equal(frag_error(doc, &lim), XML_SE_POLICY_VIOLATION);
    /* Many stanzas of 100 bytes in one chunk are fine. */
    struct buf many = BUF_INIT;
    for (int i = 0; i < 50; i++) {
        snprintf(doc, sizeof(doc), "<a>%093d</a>\n", i);
        buf_append_str(&many, doc);
    }
    struct rec r;
    rec_init(&r, &lim, 1);
    assert_int_equal(xml_parser_feed(r.p, many.data, many.len), 0);
    assert_int_equal(r.elems, 50);
    rec_done(&r);
    buf_free(&many);
}

static void test_limit_huge_stanza_refused_early(void **state)
{
    /* A 10 MB stanza with the default limits is refused after about
     * max_stanza_bytes have been fed, not buffered to the end. */
    struct xml_limits lim;
    xml_limits_default(&lim);
    struct rec r;
    rec_init(&r, &lim, 0);
    assert_int_equal(xml_parser_feed(r.p, HDR, strlen(HDR)), 0);
    assert_int_equal(xml_parser_feed(r.p, "<message><body>", 15), 0);
    char chunk[4096];
    memset(chunk, 'x', sizeof(chunk));
    size_t fed = 15;
    int rc = 0;
    while (fed < 10 * 1024 * 1024 && (rc = xml_parser_feed(r.p, chunk, sizeof(chunk))) == 0)
        fed += sizeof(chunk);
    assert_int_equal(rc, ERR_PARSE);
    assert_int_equal(r.err, XML_SE_POLICY_VIOLATION);
    assert_true(fed <= lim.max_stanza_bytes);
    assert_true(fed + sizeof(chunk) > lim.max_stanza_bytes);
    rec_done(&r);

    /* Also when it is all in one chunk. */
    size_t big = 10 * 1024 * 1024;
    char *huge = xmalloc(big);
    memset(huge, 'y', big);
    memcpy(huge, "<a>", 3);
    rec_init(&r, &lim, 1);
    assert_int_equal(xml_parser_feed(r.p, huge, big), ERR_PARSE);
    assert_int_equal(r.err, XML_SE_POLICY_VIOLATION);
    rec_done(&r);
    free(huge);
}

static void test_limit_depth(void **state)
{
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_depth = 3;
    assert_int_equal(frag_error("<a><b><c/></b></a>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a><b><c><d/></c></b></a>", &lim), XML_SE_POLICY_VIOLATION);
    /* In a stream, the stream element does not count. */
    char doc[512];
    snprintf(doc, sizeof(doc), "%s<a><b><c/></b></a>", HDR);
    assert_int_equal(error_of(doc, strlen(doc), &lim, 0), XML_SE_NONE);
    snprintf(doc, sizeof(doc), "%s<a><b><c><d/></c></b></a>", HDR);
    assert_int_equal(error_of(doc, strlen(doc), &lim, 0), XML_SE_POLICY_VIOLATION);
}

static void test_limit_attrs(void **state)
{
    struct xml_limits lim;
    small_limits(&lim);
    assert_int_equal(frag_error("<a x='1' y='2'/>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a x='1' xmlns:p='u'/>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a x='1' y='2' z='3'/>", &lim), XML_SE_POLICY_VIOLATION);
    /* Namespace declarations count as attributes. */
    assert_int_equal(frag_error("<a x='1' y='2' xmlns='u'/>", &lim), XML_SE_POLICY_VIOLATION);
    assert_int_equal(frag_error("<a xmlns:p='u' xmlns:q='v' xmlns:r='w'/>", &lim),
                     XML_SE_POLICY_VIOLATION);
    assert_int_equal(frag_error("<a><b x='1' y='2' z='3'/></a>", &lim), XML_SE_POLICY_VIOLATION);
}

/* Every attribute keeps its name, namespace and value, also past the ones
 * whose split names the parser keeps from its check (16), and an attribute
 * in its element's namespace shares the element's copy of the URI. */
static void test_many_attrs(void **state)
{
    struct buf doc = BUF_INIT, want = BUF_INIT;
    buf_append_str(&doc, "<p:e xmlns:p='urn:p' xmlns:q='urn:q'");
    buf_append_str(&want, "<{urn:p}p:e");
    for (int i = 0; i < 40; i++) {
        const char *pfx = i % 3 == 0 ? "p" : i % 3 == 1 ? "q" : NULL;
        char val[32];
        int vlen = snprintf(val, sizeof(val), "v%d%s", i, i % 2 ? "&amp;x" : "");
        buf_printf(&doc, " %s%sa%d='%s'", pfx ? pfx : "", pfx ? ":" : "", i, val);
        vlen -= i % 2 ? 4 : 0; /* &amp; is one byte */
        buf_printf(&want, " {%s}%s:a%d=(%d:v%d%s)", pfx ? (*pfx == 'p' ? "urn:p" : "urn:q") : "-",
                   pfx ? pfx : "-", i, vlen, i, i % 2 ? "&x" : "");
    }
    buf_append_str(&doc, "/>");
    buf_append_str(&want, "></>");
    buf_append_byte(&want, '\0');
    char err[128];
    struct xml_node *n = xml_parse_document(doc.data, doc.len, NULL, err, sizeof(err));
    if (n == NULL)
        fail_msg("parse failed: %s", err);
    char *d = dump_str(n);
    assert_string_equal(d, want.data);
    for (const struct xml_attr *a = n->attrs; a; a = a->next)
        if (a->ns != NULL && strcmp(a->ns, n->ns) == 0)
            assert_ptr_equal(a->ns, n->ns);
    free(d);
    xml_free(n);
    buf_free(&doc);
    buf_free(&want);
}

static void test_limit_names(void **state)
{
    struct xml_limits lim;
    small_limits(&lim);
    assert_int_equal(frag_error("<abcdefgh/>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<abcdefghi/>", &lim), XML_SE_POLICY_VIOLATION);
    assert_int_equal(frag_error("<a abcdefgh='1'/>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a abcdefghi='1'/>", &lim), XML_SE_POLICY_VIOLATION);
    assert_int_equal(frag_error("<abcdefgh:a xmlns:abcdefgh='u'/>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<abcdefghi:a xmlns:abcdefghi='u'/>", &lim),
                     XML_SE_POLICY_VIOLATION);
    assert_int_equal(frag_error("<a xmlns='12345678'/>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a xmlns='123456789'/>", &lim), XML_SE_POLICY_VIOLATION);
}

static void test_limit_text(void **state)
{
    struct xml_limits lim;
    small_limits(&lim);
    assert_int_equal(frag_error("<a>0123456789</a>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a>0123456789a</a>", &lim), XML_SE_POLICY_VIOLATION);
    /* One run delivered by expat in many pieces is counted as a whole. */
    assert_int_equal(frag_error("<a>01&amp;3\n5<![CDATA[67]]>&#56;9</a>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a>01&amp;3\n5<![CDATA[67]]>&#56;9x</a>", &lim),
                     XML_SE_POLICY_VIOLATION);
    /* Separate runs are separate. */
    assert_int_equal(frag_error("<a>0123456789<b/>0123456789</a>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a x='0123456789'/>", &lim), XML_SE_NONE);
    assert_int_equal(frag_error("<a x='0123456789a'/>", &lim), XML_SE_POLICY_VIOLATION);
}

static void test_limit_header(void **state)
{
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_header_bytes = strlen(HDR);
    assert_int_equal(error_of(HDR "<a/>", strlen(HDR) + 4, &lim, 0), XML_SE_NONE);
    lim.max_header_bytes = strlen(HDR) - 1;
    assert_int_equal(error_of(HDR "<a/>", strlen(HDR) + 4, &lim, 0), XML_SE_POLICY_VIOLATION);
}

/* Feed doc in one chunk as a fragment; the error condition (NONE if fine).
 * (error_of tries every split, which is quadratic for big documents.) */
static enum xml_stream_err error_one_chunk(const struct buf *doc, const struct xml_limits *lim)
{
    struct rec r;
    rec_init(&r, lim, 1);
    int rc = xml_parser_feed(r.p, doc->data, doc->len);
    enum xml_stream_err e = r.err;
    assert_int_equal(rc, e == XML_SE_NONE ? 0 : ERR_PARSE);
    rec_done(&r);
    return e;
}

static void test_limit_tree_bytes(void **state)
{
    /* 256 KiB of <a/> is within the byte limit but would cost megabytes
     * of nodes: the tree cap refuses it after about max_tree_bytes. */
    struct xml_limits lim;
    xml_limits_default(&lim);
    struct buf doc = BUF_INIT;
    buf_append_str(&doc, "<x>");
    while (doc.len < lim.max_stanza_bytes - 8)
        buf_append_str(&doc, "<a/>");
    buf_append_str(&doc, "</x>");
    assert_int_equal(error_one_chunk(&doc, &lim), XML_SE_POLICY_VIOLATION);
    /* The same bytes with a generous tree cap parse. */
    lim.max_tree_bytes = 64 * 1024 * 1024;
    assert_int_equal(error_one_chunk(&doc, &lim), XML_SE_NONE);
    /* A typical large stanza (one big text) stays far under the default. */
    xml_limits_default(&lim);
    buf_reset(&doc);
    buf_append_str(&doc, "<message><body>");
    while (doc.len < lim.max_stanza_bytes - 32)
        buf_append_str(&doc, "text text ");
    buf_append_str(&doc, "</body></message>");
    assert_int_equal(error_one_chunk(&doc, &lim), XML_SE_NONE);
    buf_free(&doc);
}

/* ---- reset and free from callbacks ---- */

static void test_reset_in_callback(void **state)
{
    /* After <proceed/> the peer starts a new stream (TLS in real life);
     * bytes after the reset point in the same chunk are discarded. */
    const char doc[] = HDR "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
                           "<ignored/>";
    struct rec r;
    rec_init(&r, NULL, 0);
    r.reset_at = 1;
    assert_int_equal(xml_parser_feed(r.p, doc, strlen(doc)), 0);
    assert_int_equal(r.elems, 1);
    assert_null(strstr(r.log.data, "ignored"));
    assert_non_null(strstr(r.log.data, "RESET\n"));
    /* A new stream, with an XML declaration again, parses normally. */
    const char again[] = "<?xml version='1.0'?>" HDR "<message/>";
    assert_int_equal(xml_parser_feed(r.p, again, strlen(again)), 0);
    assert_int_equal(r.elems, 2);
    const char *second = strstr(r.log.data, "RESET\n");
    assert_non_null(strstr(second, "OPEN "));
    assert_non_null(strstr(second, "RAW <message/>\n"));
    rec_done(&r);

    /* Same at every split of the first chunk. */
    for (size_t split = 1; split < strlen(doc); split++) {
        rec_init(&r, NULL, 0);
        r.reset_at = 1;
        feed_split(&r, doc, strlen(doc), (long)split);
        assert_int_equal(r.elems, 1);
        assert_int_equal(xml_parser_feed(r.p, again, strlen(again)), 0);
        assert_int_equal(r.elems, 2);
        assert_int_equal(r.err, XML_SE_NONE);
        rec_done(&r);
    }

    /* Reset from on_stream_open, and from outside any callback. */
    rec_init(&r, NULL, 0);
    r.reset_on_open = 1;
    assert_int_equal(xml_parser_feed(r.p, HDR "<x/>", strlen(HDR) + 4), 0);
    assert_int_equal(r.elems, 0);
    r.reset_on_open = 0;
    assert_int_equal(xml_parser_feed(r.p, HDR "<partial", strlen(HDR) + 8), 0);
    xml_parser_reset(r.p);
    assert_int_equal(xml_parser_feed(r.p, HDR "<x/>", strlen(HDR) + 4), 0);
    assert_int_equal(r.elems, 1);
    rec_done(&r);
}

static void test_free_in_callback(void **state)
{
    const char doc[] = HDR "<a/><b/><c/></stream:stream>";
    struct rec r;
    rec_init(&r, NULL, 0);
    r.free_at = 2;
    assert_int_equal(xml_parser_feed(r.p, doc, strlen(doc)), 0);
    assert_int_equal(r.elems, 2);
    rec_done(&r);

    rec_init(&r, NULL, 0);
    r.free_on_open = 1;
    assert_int_equal(xml_parser_feed(r.p, doc, strlen(doc)), 0);
    assert_int_equal(r.elems, 0);
    rec_done(&r);

    rec_init(&r, NULL, 0);
    r.free_on_close = 1;
    assert_int_equal(xml_parser_feed(r.p, doc, strlen(doc)), 0);
    assert_int_equal(r.elems, 3);
    rec_done(&r);

    rec_init(&r, NULL, 0);
    r.free_on_error = 1;
    assert_int_equal(xml_parser_feed(r.p, HDR "<a><b></a>", strlen(HDR) + 10), ERR_PARSE);
    assert_int_equal(r.err, XML_SE_NOT_WELL_FORMED);
    rec_done(&r);

    /* Free with a half-built stanza pending, and of NULL. */
    rec_init(&r, NULL, 0);
    assert_int_equal(xml_parser_feed(r.p, HDR "<a><b>text", strlen(HDR) + 10), 0);
    rec_done(&r);
    xml_parser_free(NULL);
}

/* ---- hibernation ---- */

static int hibernate_in_cb_rc;

static void on_elem_hibernate(void *arg, struct xml_node *st, const char *raw, size_t rawlen)
{
    struct rec *r = arg;
    hibernate_in_cb_rc = xml_parser_hibernate(r->p);
    on_elem(arg, st, raw, rawlen);
}

static void test_hibernate_when(void **state)
{
    struct rec r;
    rec_init(&r, NULL, 0);
    /* Not before the header is complete. */
    assert_int_equal(xml_parser_hibernate(r.p), ERR_BADSTATE);
    assert_int_equal(xml_parser_feed(r.p, HDR, strlen(HDR) - 1), 0);
    assert_int_equal(xml_parser_hibernate(r.p), ERR_BADSTATE);
    assert_int_equal(xml_parser_feed(r.p, ">", 1), 0);
    assert_int_equal(xml_parser_hibernate(r.p), 0);
    /* The header's namespace is still known while asleep. */
    assert_string_equal(xml_parser_content_ns(r.p), "jabber:client");
    /* Feeding nothing does not wake it (nor fail). */
    assert_int_equal(xml_parser_feed(r.p, "", 0), 0);
    /* Not inside an element, nor in a start tag, nor in text. */
    const char *const partial[] = {"<message",      "<message to='a",          "<message>",
                                   "<message>text", "<message><body>x</body>", "<"};
    for (size_t i = 0; i < sizeof(partial) / sizeof(partial[0]); i++) {
        assert_int_equal(xml_parser_feed(r.p, partial[i], strlen(partial[i])), 0);
        assert_int_equal(xml_parser_hibernate(r.p), ERR_BADSTATE);
        xml_parser_reset(r.p);
        assert_int_equal(xml_parser_feed(r.p, HDR, strlen(HDR)), 0);
    }
    /* Between stanzas and after whitespace keepalives it may. */
    assert_int_equal(xml_parser_feed(r.p, "<a/>", 4), 0);
    assert_int_equal(xml_parser_hibernate(r.p), 0);
    assert_int_equal(xml_parser_feed(r.p, " \n ", 3), 0);
    assert_int_equal(xml_parser_hibernate(r.p), 0);
    /* Not from a callback. */
    struct xml_parser_cbs cbs = rec_cbs;
    cbs.on_element = on_elem_hibernate;
    struct rec r2;
    memset(&r2, 0, sizeof(r2));
    buf_init(&r2.log);
    r2.p = xml_parser_new(NULL, &cbs, &r2);
    assert_int_equal(xml_parser_feed(r2.p, HDR "<a/>", strlen(HDR) + 4), 0);
    assert_int_equal(hibernate_in_cb_rc, ERR_BADSTATE);
    rec_done(&r2);
    /* Not once the stream is closed or broken. */
    assert_int_equal(xml_parser_feed(r.p, "</stream:stream>", 16), 0);
    assert_int_equal(xml_parser_hibernate(r.p), ERR_BADSTATE);
    xml_parser_reset(r.p);
    assert_int_equal(xml_parser_feed(r.p, HDR "<a></b>", strlen(HDR) + 7), ERR_PARSE);
    assert_int_equal(xml_parser_hibernate(r.p), ERR_BADSTATE);
    rec_done(&r);
    /* Fragment parsers have no header to rebuild. */
    rec_init(&r, NULL, 1);
    assert_int_equal(xml_parser_feed(r.p, "<a/>", 4), 0);
    assert_int_equal(xml_parser_hibernate(r.p), ERR_BADSTATE);
    rec_done(&r);
    /* A header declaring more than 1 KiB of namespaces is kept awake. */
    struct buf big = BUF_INIT;
    buf_append_str(&big, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'");
    for (int i = 0; i < 8; i++)
        buf_printf(&big, " xmlns:n%d='urn:%0200d'", i, i);
    buf_append_str(&big, "><n7:a/>");
    rec_init(&r, NULL, 0);
    assert_int_equal(xml_parser_feed(r.p, big.data, big.len), 0);
    assert_int_equal(xml_parser_hibernate(r.p), ERR_BADSTATE);
    assert_int_equal(r.elems, 1);
    rec_done(&r);
    buf_free(&big);
}

/* Another stream prefix, prefixes declared on the header, URIs that need
 * escaping, a default namespace of "": all as before after a wake-up. */
static void test_hibernate_namespaces(void **state)
{
    const char doc[] =
        "<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:server' "
        "xmlns:db='jabber:server:dialback' xmlns:q='urn:a&amp;b&apos;c&quot;d&lt;e&#9;f'>\n"
        "<db:result from='a' to='b'>key</db:result>\n<q:x q:y='1'/><message><body/></message>"
        "<s:features/><z xmlns=''/></s:stream>";
    char *log = events_all_splits(doc, strlen(doc), NULL, 0);
    assert_true(last_hibernations > 0);
    assert_non_null(strstr(log, "<{jabber:server:dialback}db:result"));
    assert_non_null(strstr(log, "<{urn:a&b'c\"d<e\tf}q:x {urn:a&b'c\"d<e\tf}q:y=(1:1)>"));
    assert_non_null(strstr(log, "<{jabber:server}-:message><{jabber:server}-:body></></>"));
    assert_non_null(strstr(log, "<{http://etherx.jabber.org/streams}s:features></>"));
    assert_non_null(strstr(log, "<{}-:z></>"));
    assert_true(strlen(log) > 6 && strcmp(log + strlen(log) - 6, "CLOSE\n") == 0);
    free(log);

    /* The same by hand: hibernate after the header, wake with a stanza. */
    struct rec r;
    rec_init(&r, NULL, 0);
    const char *hdr_end = strchr(doc, '\n') + 1;
    assert_int_equal(xml_parser_feed(r.p, doc, (size_t)(hdr_end - doc)), 0);
    assert_int_equal(xml_parser_hibernate(r.p), 0);
    assert_string_equal(xml_parser_content_ns(r.p), "jabber:server");
    assert_int_equal(xml_parser_feed(r.p, "<q:x/></s:stream>", 17), 0);
    assert_non_null(strstr(r.log.data, "ELEM <{urn:a&b'c\"d<e\tf}q:x></>\nRAW <q:x/>\nCLOSE\n"));
    rec_done(&r);
}

/* Limits and restricted XML hold in the rebuilt parser, with the same
 * errors (and line numbers) as without hibernation. */
static void test_hibernate_limits(void **state)
{
    struct xml_limits lim;
    small_limits(&lim);
    lim.max_name_len = 40; /* room for the namespace URIs */
    const char *const bodies[] = {
        "<a><b><c><d/></c></b></a>",                    /* depth */
        "<a>01234567890</a>",                           /* text */
        "<a x='1' y='2' z='3'/>",                       /* attributes */
        "<abcdefghijabcdefghijabcdefghijabcdefghijX/>", /* name */
        "<a>\n\n<b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/>"
        "<b/><b/><b/><b/><b/><b/></a>", /* stanza bytes */
        "<!-- c -->",                   /* restricted XML */
        "<a>\n<?pi x?></a>",
        "<a>&e;</a>",
        "<!DOCTYPE x>",
        "text",
        "<p:a/>",
    };
    const char *const want[] = {
        "policy-violation: elements nested deeper than 3 (line 3)",
        "policy-violation: text longer than 10 bytes (line 3)",
        "policy-violation: more than 2 attributes (line 3)",
        "policy-violation: name longer than 40 bytes (line 3)",
        "policy-violation: element larger than 100 bytes (line 5)",
        "restricted-xml: comments are not allowed (line 3)",
        "restricted-xml: processing instructions are not allowed (line 4)",
        "restricted-xml: undefined entity (line 3)",
        "not-well-formed: not well-formed (invalid token) (line 3)",
        "bad-format: text outside of any stanza (line 3)",
        "bad-format-prefix",
    };
    const char hdr[] = "<stream:stream xmlns='jabber:client' "
                       "xmlns:stream='http://etherx.jabber.org/streams'>\n<ok/>\n";
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        for (int hib = 0; hib < 2; hib++) {
            struct rec r;
            rec_init(&r, &lim, 0);
            assert_int_equal(xml_parser_feed(r.p, hdr, strlen(hdr)), 0);
            if (hib)
                assert_int_equal(xml_parser_hibernate(r.p), 0);
            assert_int_equal(xml_parser_feed(r.p, bodies[i], strlen(bodies[i])), ERR_PARSE);
            const char *e = strstr(r.log.data, "ERROR ");
            assert_non_null(e);
            if (strcmp(want[i], "bad-format-prefix") == 0)
                assert_non_null(strstr(e, "bad-namespace-prefix"));
            else if (strncmp(e + 6, want[i], strlen(want[i])) != 0)
                fail_msg("%s (hibernated %d): got %s", bodies[i], hib, e);
            rec_done(&r);
        }
    }
}

static struct xml_parser *nested_p;
static int nested_rc;

static void on_elem_nested(void *arg, struct xml_node *st, const char *raw, size_t rawlen)
{
    nested_rc = xml_parser_feed(nested_p, "<x/>", 4);
    xml_free(st);
}

static void test_feed_from_callback_refused(void **state)
{
    struct xml_parser_cbs cbs = {NULL, on_elem_nested, NULL, NULL};
    nested_p = xml_parser_new_fragment(NULL, &cbs, NULL);
    assert_int_equal(xml_parser_feed(nested_p, "<a/>", 4), 0);
    assert_int_equal(nested_rc, ERR_BADSTATE);
    xml_parser_free(nested_p);
}

/* ---- serializer ---- */

/* expat allocates from a region per stream parser (xml_parser.c). Stanzas
 * that outgrow the region (expat's buffer, its pools and the attribute
 * arrays then move to malloc), and parsers freed, reset or fed from the
 * callback of another parser (whose region must be restored), parse as
 * with malloc alone. In sanitizer builds AddressSanitizer checks every
 * access to region memory too: xml_parser.c poisons all of a region but
 * the blocks handed out. */
struct regions {
    struct xml_parser *p, *other;
    int elems;
    size_t body_len;
    int body_ok;
};

static void regions_elem(void *arg, struct xml_node *st, const char *raw, size_t rawlen)
{
    (void)raw;
    (void)rawlen;
    struct regions *g = arg;
    g->elems++;
    struct xml_node *body = xml_child(st, NULL, "body");
    size_t len = 0;
    const char *t = body ? xml_text(body, &len) : "";
    const char *big = xml_get_attr(st, "big");
    g->body_len = len;
    g->body_ok = big != NULL && strlen(big) == len;
    for (size_t i = 0; i < len && g->body_ok; i++)
        g->body_ok &= t[i] == (char)('a' + i % 26) && big[i] == t[i];
    xml_free(st);
    if (g->other != NULL) {
        /* Another parser's expat allocates, is reset and freed in here. */
        const char more[] = "<message><body>in a callback</body></message>";
        assert_int_equal(xml_parser_feed(g->other, more, strlen(more)), 0);
        xml_parser_reset(g->other);
        const char hdr[] = "<stream:stream xmlns='jabber:client' "
                           "xmlns:stream='http://etherx.jabber.org/streams'>";
        assert_int_equal(xml_parser_feed(g->other, hdr, strlen(hdr)), 0);
        xml_parser_free(g->other);
        g->other = NULL;
    }
}

static void test_parser_regions(void **state)
{
    (void)state;
    static const struct xml_parser_cbs cbs = {NULL, regions_elem, NULL, NULL};
    const char hdr[] = "<stream:stream xmlns='jabber:client' "
                       "xmlns:stream='http://etherx.jabber.org/streams'>";
    struct regions g = {0};
    g.p = xml_parser_new(NULL, &cbs, &g);
    assert_int_equal(xml_parser_feed(g.p, hdr, strlen(hdr)), 0);
    /* Sizes around and far beyond the region (16 KiB), fed in pieces so
     * that expat's buffer grows step by step; hibernating in between. */
    const size_t sizes[] = {10, 4000, 15000, 17000, 70000, 100};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        struct buf b = BUF_INIT;
        buf_append_str(&b, "<message");
        for (int a = 0; a < 30; a++)
            buf_printf(&b, " xmlns:n%d='urn:x:%d' n%d:a%d='v'", a, a, a, a);
        /* The start tag is one token: expat's buffer holds all of it. */
        buf_append_str(&b, " big='");
        for (size_t i = 0; i < sizes[k]; i++)
            buf_append_byte(&b, (char)('a' + i % 26));
        buf_append_str(&b, "'><body>");
        for (size_t i = 0; i < sizes[k]; i++)
            buf_append_byte(&b, (char)('a' + i % 26));
        buf_append_str(&b, "</body></message>");
        if (k == 2) {
            g.other = xml_parser_new(NULL, NULL, NULL);
            assert_int_equal(xml_parser_feed(g.other, hdr, strlen(hdr)), 0);
        }
        for (size_t off = 0; off < b.len; off += 1000) {
            size_t n = b.len - off < 1000 ? b.len - off : 1000;
            assert_int_equal(xml_parser_feed(g.p, b.data + off, n), 0);
        }
        buf_free(&b);
        assert_int_equal(g.elems, (int)k + 1);
        assert_int_equal(g.body_len, sizes[k]);
        assert_true(g.body_ok);
        assert_null(g.other);
        assert_int_equal(xml_parser_hibernate(g.p), 0);
    }
    xml_parser_reset(g.p);
    assert_int_equal(xml_parser_feed(g.p, hdr, strlen(hdr)), 0);
    xml_parser_free(g.p);
}

/* LeakSanitizer does not scan anonymous mappings of its own accord: a
 * stanza start tag of 12 KB in expat's input buffer puts that buffer in
 * malloc (it outgrows the region), and only expat's parser struct, which
 * is in the region, points to it. The region is a root region, so a leak
 * check while the parser lives finds nothing. */
static void test_parser_regions_leak_check(void **state)
{
    (void)state;
#ifdef TEST_LSAN
    const char hdr[] = "<stream:stream xmlns='jabber:client' "
                       "xmlns:stream='http://etherx.jabber.org/streams'>";
    struct xml_parser *p = xml_parser_new(NULL, NULL, NULL);
    assert_int_equal(xml_parser_feed(p, hdr, strlen(hdr)), 0);
    struct buf b = BUF_INIT;
    buf_append_str(&b, "<message big='");
    for (size_t i = 0; i < 12000; i++)
        buf_append_byte(&b, 'x');
    for (size_t off = 0; off < b.len; off += 1000) {
        size_t n = b.len - off < 1000 ? b.len - off : 1000;
        assert_int_equal(xml_parser_feed(p, b.data + off, n), 0);
    }
    buf_free(&b);
    assert_int_equal(__lsan_do_recoverable_leak_check(), 0);
    xml_parser_free(p);
#else
    skip();
#endif
}

static void test_escaping(void **state)
{
    struct buf b = BUF_INIT;
    const char s[] = "a<b>&c\"'\r\n\t]]>\x01z";
    xml_escape_text(s, sizeof(s) - 1, &b);
    buf_append_byte(&b, '\0');
    assert_string_equal(b.data, "a&lt;b&gt;&amp;c\"'&#13;\n\t]]&gt;\xef\xbf\xbdz");
    buf_reset(&b);
    xml_escape_attr(s, sizeof(s) - 1, &b);
    buf_append_byte(&b, '\0');
    assert_string_equal(b.data, "a&lt;b&gt;&amp;c&quot;&apos;&#13;&#10;&#9;]]&gt;\xef\xbf\xbdz");
    buf_free(&b);

    struct xml_node *m = xml_new(XML_NS_CLIENT, "message");
    xml_set_attr(m, "to", "a'b\"c\td");
    struct xml_node *body = xml_add_child(m, NULL, "body");
    xml_add_text(body, "x < y && \r\n", 11);
    char *out = ser_str(m, XML_NS_CLIENT);
    assert_string_equal(out, "<message to='a&apos;b&quot;c&#9;d'><body>x &lt; y &amp;&amp; "
                             "&#13;\n</body></message>");
    free(out);
    check_round_trip(m);
    xml_free(m);
}

struct golden {
    const char *in;
    const char *scope;
    const char *out;
};

static void test_serializer_golden(void **state)
{
    static const struct golden g[] = {
        /* Default namespace only where it differs from the scope. */
        {"<message xmlns='jabber:client'><body>hi</body></message>", "jabber:client",
         "<message><body>hi</body></message>"},
        {"<message xmlns='jabber:client'><body>hi</body></message>", "",
         "<message xmlns='jabber:client'><body>hi</body></message>"},
        {"<message xmlns='jabber:client'><body>hi</body></message>", "jabber:server",
         "<message xmlns='jabber:client'><body>hi</body></message>"},
        /* Nested default namespaces, and undeclaring one. */
        {"<iq xmlns='jabber:client'><query xmlns='jabber:iq:roster'><item/></query>"
         "<x xmlns=''/></iq>",
         "jabber:client", "<iq><query xmlns='jabber:iq:roster'><item/></query><x xmlns=''/></iq>"},
        /* Prefixes kept, declared once where needed, redeclared when rebound. */
        {"<x:a xmlns:x='urn:x' xmlns:y='urn:y' y:at='1'><x:b><y:c/></x:b>"
         "<x:d xmlns:x='urn:other'/></x:a>",
         "",
         "<x:a xmlns:x='urn:x' xmlns:y='urn:y' y:at='1'><x:b><y:c/></x:b>"
         "<x:d xmlns:x='urn:other'/></x:a>"},
        /* xml:lang needs no declaration. */
        {"<body xml:lang='en'>x</body>", "", "<body xml:lang='en'>x</body>"},
        /* Empty elements, attribute quoting, text escaping. */
        {"<a b=\"it's\" c='&lt;&amp;&#10;'>&gt;&#13;</a>", "",
         "<a b='it&apos;s' c='&lt;&amp;&#10;'>&gt;&#13;</a>"},
        {"<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind "
         "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
         "jabber:client",
         "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind "
         "xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"},
    };
    for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++) {
        char err[128];
        struct xml_node *n = xml_parse_document(g[i].in, strlen(g[i].in), NULL, err, sizeof(err));
        if (n == NULL)
            fail_msg("%s: %s", g[i].in, err);
        char *out = ser_str(n, g[i].scope);
        assert_string_equal(out, g[i].out);
        free(out);
        check_round_trip(n);
        xml_free(n);
    }
}

static void test_serializer_code_built(void **state)
{
    /* A tree built by code: default namespaces, a namespaced attribute
     * without a prefix gets a generated one. */
    struct xml_node *iq = xml_new(XML_NS_CLIENT, "iq");
    xml_set_attr(iq, "type", "get");
    struct xml_node *q = xml_add_child(iq, "jabber:iq:version", "query");
    xml_add_child(q, NULL, "name");
    struct xml_attr *at = arena_zalloc(iq->arena, sizeof(*at));
    at->ns = "urn:attr";
    at->name = "k";
    at->value = "v";
    at->value_len = 1;
    q->attrs = at;
    char *out = ser_str(iq, XML_NS_CLIENT);
    assert_string_equal(out, "<iq type='get'><query xmlns='jabber:iq:version' xmlns:ns0='urn:attr' "
                             "ns0:k='v'><name/></query></iq>");
    free(out);
    xml_free(iq);
}

/* ---- helpers and trees ---- */

static void test_tree_helpers(void **state)
{
    const char doc[] = "<iq xmlns='jabber:client' type='get' id='1'><query "
                       "xmlns='jabber:iq:roster'><item jid='a@b'/>x<item jid='c@d'/>y"
                       "<other/></query>text1<![CDATA[text2]]></iq>";
    char err[128];
    struct xml_node *iq = xml_parse_document(doc, strlen(doc), NULL, err, sizeof(err));
    assert_non_null(iq);
    assert_string_equal(xml_get_attr(iq, "type"), "get");
    assert_null(xml_get_attr(iq, "to"));
    struct xml_node *q = xml_child(iq, "jabber:iq:roster", "query");
    assert_non_null(q);
    assert_null(xml_child(iq, "jabber:client", "query"));
    assert_ptr_equal(xml_child(iq, NULL, NULL), q);
    struct xml_node *it = xml_child(q, NULL, "item");
    assert_string_equal(xml_get_attr(it, "jid"), "a@b");
    it = xml_next(it, NULL, "item");
    assert_string_equal(xml_get_attr(it, "jid"), "c@d");
    assert_null(xml_next(it, NULL, "item"));
    assert_non_null(xml_next(it, "jabber:iq:roster", "other"));
    assert_int_equal(xml_child_count(q), 3);
    size_t len;
    assert_string_equal(xml_text(q, &len), "xy");
    assert_int_equal(len, 2);
    assert_string_equal(xml_text(iq, NULL), "text1text2");
    assert_string_equal(xml_text(it, &len), "");
    assert_int_equal(len, 0);

    /* Copy: equal and independent. */
    struct xml_node *c = xml_copy(q);
    assert_null(c->parent);
    assert_ptr_not_equal(c->arena, iq->arena);
    char *d1 = dump_str(q), *d2 = dump_str(c);
    assert_string_equal(d1, d2);
    free(d1);
    free(d2);

    /* Attributes: set, replace, delete, order kept. */
    xml_set_attr(iq, "to", "x@y");
    xml_set_attr(iq, "type", "set");
    xml_del_attr(iq, "id");
    xml_del_attr(iq, "nonexistent");
    char *out = ser_str(iq, XML_NS_CLIENT);
    assert_non_null(strstr(out, "<iq type='set' to='x@y'>"));
    free(out);

    /* Detach the query; the rest serializes without it. */
    xml_detach(q);
    assert_null(xml_child(iq, NULL, "query"));
    assert_int_equal(xml_child_count(iq), 0);
    struct xml_node *last = xml_add_child(iq, NULL, "last");
    assert_ptr_equal(iq->last_child, last);
    out = ser_str(iq, XML_NS_CLIENT);
    assert_string_equal(out, "<iq type='set' to='x@y'>text1text2<last/></iq>");
    free(out);
    xml_free(iq);
    d1 = dump_str(c);
    assert_non_null(strstr(d1, "{-}-:jid=(3:c@d)"));
    free(d1);
    xml_free(c);
    xml_free(NULL);

    /* xml_get_attr_ns. */
    const char doc2[] = "<a xmlns:p='urn:p' p:x='1' x='2' xml:lang='fr'/>";
    struct xml_node *a = xml_parse_document(doc2, strlen(doc2), NULL, err, sizeof(err));
    assert_string_equal(xml_get_attr_ns(a, "urn:p", "x"), "1");
    assert_string_equal(xml_get_attr(a, "x"), "2");
    assert_string_equal(xml_get_attr_ns(a, XML_NS_XML, "lang"), "fr");
    assert_null(xml_get_attr_ns(a, "urn:q", "x"));
    xml_free(a);
}

/* ---- errors ---- */

static void test_error_reply(void **state)
{
    const char doc[] = "<message xmlns='jabber:client' to='juliet@example.com' "
                       "from='romeo@example.net/orchard' id='m1' type='chat'><body>hi</body>"
                       "</message>";
    char err[128];
    struct xml_node *m = xml_parse_document(doc, strlen(doc), NULL, err, sizeof(err));
    assert_int_equal(xml_make_error(m, XML_STE_SERVICE_UNAVAILABLE, NULL, "No <such> user"), 0);
    char *out = ser_str(m, XML_NS_CLIENT);
    assert_string_equal(out, "<message to='romeo@example.net/orchard' from='juliet@example.com' "
                             "id='m1' type='error'><body>hi</body><error type='cancel'>"
                             "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                             "<text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>No &lt;such&gt; "
                             "user</text></error></message>");
    free(out);
    /* Never answer an error with an error. */
    assert_int_equal(xml_make_error(m, XML_STE_BAD_REQUEST, NULL, NULL), ERR_INVAL);
    xml_free(m);

    /* No from: the reply has no to; explicit type. */
    struct xml_node *iq = xml_new(XML_NS_CLIENT, "iq");
    xml_set_attr(iq, "to", "example.com");
    xml_set_attr(iq, "id", "q1");
    assert_int_equal(xml_make_error(iq, XML_STE_FEATURE_NOT_IMPLEMENTED, "modify", NULL), 0);
    out = ser_str(iq, XML_NS_CLIENT);
    assert_string_equal(out, "<iq id='q1' from='example.com' type='error'><error type='modify'>"
                             "<feature-not-implemented "
                             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
    free(out);
    xml_free(iq);

    struct xml_node *other = xml_new(XML_NS_CLIENT, "handshake");
    assert_int_equal(xml_make_error(other, XML_STE_BAD_REQUEST, NULL, NULL), ERR_INVAL);
    xml_free(other);
}

static void test_error_names(void **state)
{
    assert_null(xml_stream_err_name(XML_SE_NONE));
    assert_string_equal(xml_stream_err_name(XML_SE_NOT_WELL_FORMED), "not-well-formed");
    assert_string_equal(xml_stream_err_name(XML_SE_UNSUPPORTED_VERSION), "unsupported-version");
    assert_string_equal(xml_stream_err_name(XML_SE_BAD_NAMESPACE_PREFIX), "bad-namespace-prefix");
    for (int c = XML_SE_BAD_FORMAT; c <= XML_SE_UNSUPPORTED_VERSION; c++)
        assert_non_null(xml_stream_err_name((enum xml_stream_err)c));

    /* RFC 6120 §8.3.3: each condition's "associated error type SHOULD be". */
    static const struct {
        enum xml_stanza_err c;
        const char *name, *type;
    } t[] = {
        {XML_STE_BAD_REQUEST, "bad-request", "modify"},
        {XML_STE_CONFLICT, "conflict", "cancel"},
        {XML_STE_FEATURE_NOT_IMPLEMENTED, "feature-not-implemented", "cancel"},
        {XML_STE_FORBIDDEN, "forbidden", "auth"},
        {XML_STE_GONE, "gone", "cancel"},
        {XML_STE_INTERNAL_SERVER_ERROR, "internal-server-error", "cancel"},
        {XML_STE_ITEM_NOT_FOUND, "item-not-found", "cancel"},
        {XML_STE_JID_MALFORMED, "jid-malformed", "modify"},
        {XML_STE_NOT_ACCEPTABLE, "not-acceptable", "modify"},
        {XML_STE_NOT_ALLOWED, "not-allowed", "cancel"},
        {XML_STE_NOT_AUTHORIZED, "not-authorized", "auth"},
        {XML_STE_POLICY_VIOLATION, "policy-violation", "modify"},
        {XML_STE_RECIPIENT_UNAVAILABLE, "recipient-unavailable", "wait"},
        {XML_STE_REDIRECT, "redirect", "modify"},
        {XML_STE_REGISTRATION_REQUIRED, "registration-required", "auth"},
        {XML_STE_REMOTE_SERVER_NOT_FOUND, "remote-server-not-found", "cancel"},
        {XML_STE_REMOTE_SERVER_TIMEOUT, "remote-server-timeout", "wait"},
        {XML_STE_RESOURCE_CONSTRAINT, "resource-constraint", "wait"},
        {XML_STE_SERVICE_UNAVAILABLE, "service-unavailable", "cancel"},
        {XML_STE_SUBSCRIPTION_REQUIRED, "subscription-required", "auth"},
        {XML_STE_UNDEFINED_CONDITION, "undefined-condition", "cancel"},
        {XML_STE_UNEXPECTED_REQUEST, "unexpected-request", "wait"},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_string_equal(xml_stanza_err_name(t[i].c), t[i].name);
        assert_string_equal(xml_stanza_err_type(t[i].c), t[i].type);
    }

    struct buf b = BUF_INIT;
    xml_stream_error(XML_SE_POLICY_VIOLATION, "too <big>", &b);
    buf_append_byte(&b, '\0');
    assert_string_equal(b.data, "<stream:error><policy-violation "
                                "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text "
                                "xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too &lt;big&gt;"
                                "</text></stream:error>");
    buf_reset(&b);
    xml_stream_error(XML_SE_HOST_UNKNOWN, NULL, &b);
    buf_append_byte(&b, '\0');
    assert_string_equal(b.data, "<stream:error><host-unknown "
                                "xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>");
    buf_free(&b);
}

/* ---- documents ---- */

static void test_parse_document(void **state)
{
    const char doc[] = "<?xml version='1.0' encoding='UTF-8'?>\n<!-- config -->\n<router>\n"
                       "  <!-- a comment -->\n  <listen port='5347'/>\n</router>\n<!-- end -->\n";
    char err[128];
    struct xml_node *r = xml_parse_document(doc, strlen(doc), NULL, err, sizeof(err));
    assert_non_null(r);
    assert_string_equal(r->name, "router");
    assert_string_equal(xml_get_attr(xml_child(r, NULL, "listen"), "port"), "5347");
    xml_free(r);

    static const struct {
        const char *doc, *err;
    } bad[] = {
        {"<a>\n<b>\n</a>", "line 3: mismatched tag"},
        {"", "line 1: no element found"},
        {"<a/><b/>", "line 1: junk after document element"},
        {"<a>\n<?pi x?></a>", "line 2: processing instructions are not allowed"},
        {"<a>&ent;</a>", "line 1: undefined entity"},
        {"<?xml version='1.0' encoding='latin1'?><a/>", "line 1: encoding latin1 is not UTF-8"},
        {"<a><b><c><d/></c></b></a>", "line 1: elements nested deeper than 3"},
    };
    struct xml_limits lim;
    xml_limits_default(&lim);
    lim.max_depth = 3;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(xml_parse_document(bad[i].doc, strlen(bad[i].doc), &lim, err, sizeof(err)));
        assert_string_equal(err, bad[i].err);
    }
    lim.max_stanza_bytes = 10;
    assert_null(xml_parse_document("<abc>123456</abc>", 17, &lim, err, sizeof(err)));
    assert_string_equal(err, "line 1: element larger than 10 bytes");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_events_every_split),
        cmocka_unit_test(test_no_delivery_delay),
        cmocka_unit_test(test_fragment_mode),
        cmocka_unit_test(test_close_then_closed),
        cmocka_unit_test(test_stream_header_errors),
        cmocka_unit_test(test_stanza_level_errors),
        cmocka_unit_test(test_restricted_xml),
        cmocka_unit_test(test_billion_laughs),
        cmocka_unit_test(test_encodings),
        cmocka_unit_test(test_limit_stanza_bytes),
        cmocka_unit_test(test_limit_huge_stanza_refused_early),
        cmocka_unit_test(test_limit_depth),
        cmocka_unit_test(test_limit_attrs),
        cmocka_unit_test(test_many_attrs),
        cmocka_unit_test(test_limit_names),
        cmocka_unit_test(test_limit_text),
        cmocka_unit_test(test_limit_header),
        cmocka_unit_test(test_limit_tree_bytes),
        cmocka_unit_test(test_reset_in_callback),
        cmocka_unit_test(test_free_in_callback),
        cmocka_unit_test(test_feed_from_callback_refused),
        cmocka_unit_test(test_hibernate_when),
        cmocka_unit_test(test_hibernate_namespaces),
        cmocka_unit_test(test_hibernate_limits),
        cmocka_unit_test(test_parser_regions),
        cmocka_unit_test(test_parser_regions_leak_check),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_serializer_golden),
        cmocka_unit_test(test_serializer_code_built),
        cmocka_unit_test(test_tree_helpers),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_parse_document),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
