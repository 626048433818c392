/*
 * bench_xml.c - throughput of the XMPP stream parser and the serializer.
 *
 * Builds a ~1 MB client stream of typical stanzas (messages with bodies,
 * presence with caps/show/status, roster iq results; 200 B to 2 KB each)
 * from a fixed pseudo-random seed, then times feeding it to a stream parser
 * in 4 KiB chunks, and serializing the parsed stanzas; for reference also
 * bare expat (namespace mode, empty handlers) on the same chunks, which is
 * the floor the stream parser builds on. Not a test: it only
 * prints figures (see tests/bench/README.md). Usage: bench_xml [rounds]
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <expat.h>

#include "common/buf.h"
#include "common/mem.h"
#include "common/xml.h"

#define TARGET_BYTES (1024 * 1024)
#define CHUNK        4096

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static unsigned rnd(unsigned n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void words(struct buf *b, size_t len)
{
    static const char *const w[] = {
        "wherefore", "art",  "thou", "Romeo", "deny",  "thy",         "father",      "and",
        "refuse",    "name", "or",   "if",    "wilt",  "not",         "be",          "but",
        "sworn",     "my",   "love", "&amp;", "&lt;3", "caf\xc3\xa9", "\xe2\x98\x83"};
    size_t start = b->len;
    while (b->len - start < len) {
        buf_append_str(b, w[rnd(sizeof(w) / sizeof(w[0]))]);
        buf_append_byte(b, rnd(12) ? ' ' : '\n');
    }
}

static void message(struct buf *b, unsigned id)
{
    buf_printf(b,
               "<message to='juliet%u@example.com' from='romeo%u@example.net/orchard' "
               "type='chat' id='msg%u' xml:lang='en'><body>",
               rnd(1000), rnd(1000), id);
    words(b, 60 + rnd(1500));
    buf_append_str(b, "</body>");
    if (rnd(2))
        buf_append_str(b, "<active xmlns='http://jabber.org/protocol/chatstates'/>");
    if (rnd(3) == 0)
        buf_append_str(b, "<request xmlns='urn:xmpp:receipts'/>");
    buf_append_str(b, "</message>");
}

static void presence(struct buf *b, unsigned id)
{
    static const char *const show[] = {"away", "chat", "dnd", "xa"};
    buf_printf(b, "<presence from='user%u@example.com/res%u' id='p%u'><show>%s</show><status>",
               rnd(1000), rnd(10), id, show[rnd(4)]);
    words(b, 10 + rnd(120));
    buf_printf(b,
               "</status><priority>%u</priority><c xmlns='http://jabber.org/protocol/caps' "
               "hash='sha-1' node='https://conversations.im' ver='q07IKJEyjvHSyhy//CH0CxmKi8w='/>"
               "<x xmlns='vcard-temp:x:update'><photo>%08x%08x%08x%08x%08x</photo></x>"
               "</presence>",
               rnd(128), rnd(~0u), rnd(~0u), rnd(~0u), rnd(~0u), rnd(~0u));
}

static void roster(struct buf *b, unsigned id)
{
    static const char *const sub[] = {"both", "to", "from", "none"};
    buf_printf(b,
               "<iq type='result' id='roster%u' to='user%u@example.com/res'><query "
               "xmlns='jabber:iq:roster' ver='v%u'>",
               id, rnd(1000), id);
    unsigned n = 1 + rnd(15);
    for (unsigned i = 0; i < n; i++) {
        buf_printf(b, "<item jid='contact%u@example.org' name='Contact %u' subscription='%s'>",
                   rnd(100000), i, sub[rnd(4)]);
        if (rnd(2))
            buf_printf(b, "<group>Group %u</group>", rnd(10));
        buf_append_str(b, "</item>");
    }
    buf_append_str(b, "</query></iq>");
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct sink {
    size_t count;
    struct xml_node **keep; /* stanzas of the first round, for the serializer */
    size_t nkeep, capkeep;
    int keeping;
};

static void on_open(void *arg, struct xml_node *hdr)
{
    xml_free(hdr);
}

static void on_element(void *arg, struct xml_node *st, const char *raw, size_t rawlen)
{
    struct sink *s = arg;
    s->count++;
    if (!s->keeping) {
        xml_free(st);
        return;
    }
    if (s->nkeep == s->capkeep) {
        s->capkeep = s->capkeep ? 2 * s->capkeep : 1024;
        s->keep = xreallocarray(s->keep, s->capkeep, sizeof(*s->keep));
    }
    s->keep[s->nkeep++] = st;
}

static void on_error(void *arg, enum xml_stream_err cond, const char *text)
{
    fprintf(stderr, "bench_xml: parse error %s: %s\n", xml_stream_err_name(cond), text);
    exit(1);
}

static void parse_once(const struct buf *doc, struct sink *s)
{
    static const struct xml_parser_cbs cbs = {on_open, on_element, NULL, on_error};
    struct xml_parser *p = xml_parser_new(NULL, &cbs, s);
    for (size_t off = 0; off < doc->len; off += CHUNK) {
        size_t n = doc->len - off < CHUNK ? doc->len - off : CHUNK;
        if (xml_parser_feed(p, doc->data + off, n) != 0) {
            fprintf(stderr, "bench_xml: feed failed\n");
            exit(1);
        }
    }
    xml_parser_free(p);
}

static void XMLCALL on_bare_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
}

static void XMLCALL on_bare_end(void *ud, const XML_Char *name)
{
}

static void XMLCALL on_bare_text(void *ud, const XML_Char *s, int len)
{
}

static void bare_expat_once(const struct buf *doc)
{
    XML_Parser xp = XML_ParserCreateNS("UTF-8", '\x01');
    XML_SetReturnNSTriplet(xp, XML_TRUE);
    XML_SetElementHandler(xp, on_bare_start, on_bare_end);
    XML_SetCharacterDataHandler(xp, on_bare_text);
    for (size_t off = 0; off < doc->len; off += CHUNK) {
        size_t n = doc->len - off < CHUNK ? doc->len - off : CHUNK;
        if (XML_Parse(xp, doc->data + off, (int)n, XML_FALSE) != XML_STATUS_OK) {
            fprintf(stderr, "bench_xml: expat failed\n");
            exit(1);
        }
    }
    XML_ParserFree(xp);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    if (rounds < 1)
        rounds = 1;

    struct buf doc = BUF_INIT;
    buf_append_str(&doc, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                         "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' "
                         "version='1.0'>");
    unsigned n = 0;
    while (doc.len < TARGET_BYTES) {
        unsigned k = rnd(10);
        if (k < 5)
            message(&doc, n);
        else if (k < 8)
            presence(&doc, n);
        else
            roster(&doc, n);
        n++;
        if (rnd(4) == 0)
            buf_append_byte(&doc, '\n');
    }

    struct sink s = {0};
    s.keeping = 1;
    parse_once(&doc, &s);
    if (s.count != n) {
        fprintf(stderr, "bench_xml: %zu stanzas parsed, %u generated\n", s.count, n);
        return 1;
    }
    s.keeping = 0;

    double t0 = now();
    for (int r = 0; r < rounds; r++)
        parse_once(&doc, &s);
    double parse_s = now() - t0;

    t0 = now();
    for (int r = 0; r < rounds; r++)
        bare_expat_once(&doc);
    double bare_s = now() - t0;

    struct buf out = BUF_INIT;
    size_t out_bytes = 0;
    t0 = now();
    for (int r = 0; r < rounds; r++) {
        for (size_t i = 0; i < s.nkeep; i++) {
            buf_reset(&out);
            xml_serialize(s.keep[i], XML_NS_CLIENT, &out);
            out_bytes += out.len;
        }
    }
    double ser_s = now() - t0;

    double mb = (double)doc.len * rounds / 1e6;
    printf("stream: %zu bytes, %u stanzas (avg %zu B), %d rounds, %d-byte chunks\n", doc.len, n,
           doc.len / n, rounds, CHUNK);
    printf("parse:     %8.1f MB/s  %10.0f stanzas/s\n", mb / parse_s, (double)n * rounds / parse_s);
    printf("bare expat:%8.1f MB/s  (reference)\n", mb / bare_s);
    printf("serialize: %8.1f MB/s  %10.0f stanzas/s\n", (double)out_bytes / 1e6 / ser_s,
           (double)n * rounds / ser_s);

    for (size_t i = 0; i < s.nkeep; i++)
        xml_free(s.keep[i]);
    free(s.keep);
    buf_free(&out);
    buf_free(&doc);
    return 0;
}
