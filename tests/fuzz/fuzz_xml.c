/*
 * fuzz_xml.c - libFuzzer target for the XMPP stream parser and serializer.
 *
 * Input: byte 0 picks the mode (stream, fragment, document; and, in its
 * next bit, whether the chunked run hibernates the parser after every
 * chunk where it can) and bytes 1..4 the chunk sizes used in turn; the rest
 * is the stream. Properties checked (abort() on violation):
 *  - feeding in those chunks (hibernating or not) gives exactly the events
 *    of feeding it whole,
 *    and both fail or neither, except that an error in the last bytes may
 *    not be detected yet (expat defers re-parsing an incomplete token until
 *    more data or a '>'). When both fail, the conditions may differ if the
 *    input has several faults: which one expat meets first can depend on
 *    where its data tokens were cut;
 *  - every element's raw bytes start with '<', end with '>' and respect
 *    max_stanza_bytes;
 *  - serialize -> parse -> serialize is a fixed point, and the reparsed tree
 *    equals the original (names, namespaces, prefixes, attributes, text).
 */
#include "autoconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct xml_limits lim;

static int same(const char *a, const char *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    return strcmp(a, b) == 0;
}

static int tree_equal(const struct xml_node *a, const struct xml_node *b)
{
    if (a->type != b->type)
        return 0;
    if (a->type == XML_TEXT)
        return a->text_len == b->text_len && memcmp(a->text, b->text, a->text_len) == 0;
    if (!same(a->ns, b->ns) || !same(a->name, b->name) || !same(a->prefix, b->prefix))
        return 0;
    const struct xml_attr *x = a->attrs, *y = b->attrs;
    for (; x && y; x = x->next, y = y->next) {
        if (!same(x->ns, y->ns) || !same(x->prefix, y->prefix) || !same(x->name, y->name) ||
            x->value_len != y->value_len || memcmp(x->value, y->value, x->value_len) != 0)
            return 0;
    }
    if (x || y)
        return 0;
    const struct xml_node *c = a->children, *d = b->children;
    for (; c && d; c = c->next, d = d->next)
        if (!tree_equal(c, d))
            return 0;
    return c == NULL && d == NULL;
}

static void check_round_trip(const struct xml_node *n)
{
    /* Serializing can add declarations and escapes: reparse without the
     * size limits, with the same depth/name/text limits. */
    struct xml_limits big = lim;
    big.max_stanza_bytes = (size_t)1 << 40;
    big.max_attrs = 4 * lim.max_attrs + 2;
    struct buf s1 = BUF_INIT, s2 = BUF_INIT;
    xml_serialize(n, "", &s1);
    char err[160];
    struct xml_node *back = xml_parse_document(s1.data, s1.len, &big, err, sizeof(err));
    if (back == NULL || !tree_equal(n, back))
        abort();
    xml_serialize(back, "", &s2);
    if (s1.len != s2.len || memcmp(s1.data, s2.data, s1.len) != 0)
        abort();
    xml_free(back);
    buf_free(&s1);
    buf_free(&s2);
}

struct run {
    struct buf log;
    struct xml_parser *p;
    int check;
    /* Log length before the error line, or SIZE_MAX: kept here rather than
     * found by reading the log back, where input text (a namespace, a
     * character reference to a newline) can look like an error line. */
    size_t err_at;
};

static void log_tree(struct buf *log, const struct xml_node *n)
{
    xml_serialize(n, "", log);
    buf_append_byte(log, '\n');
}

static void on_open(void *arg, struct xml_node *hdr)
{
    struct run *r = arg;
    buf_append_str(&r->log, "open ");
    log_tree(&r->log, hdr);
    buf_append_str(&r->log, xml_parser_content_ns(r->p));
    buf_append_byte(&r->log, '\n');
    xml_free(hdr);
}

static void on_element(void *arg, struct xml_node *st, const char *raw, size_t rawlen)
{
    struct run *r = arg;
    if (rawlen < 2 || rawlen > lim.max_stanza_bytes || raw[0] != '<' || raw[rawlen - 1] != '>')
        abort();
    buf_append_str(&r->log, "elem ");
    log_tree(&r->log, st);
    buf_append(&r->log, raw, rawlen);
    buf_append_byte(&r->log, '\n');
    if (r->check)
        check_round_trip(st);
    xml_free(st);
}

static void on_close(void *arg)
{
    struct run *r = arg;
    buf_append_str(&r->log, "close\n");
}

static void on_error(void *arg, enum xml_stream_err cond, const char *text)
{
    struct run *r = arg;
    r->err_at = r->log.len;
    buf_printf(&r->log, "error %d\n", (int)cond);
}

static const struct xml_parser_cbs cbs = {on_open, on_element, on_close, on_error};

/* Feed data in chunks of the given sizes (0: whole) and return the log. */
static void run(struct run *r, int fragment, const uint8_t *sizes, int hibernate, const char *data,
                size_t len)
{
    buf_init(&r->log);
    r->err_at = SIZE_MAX;
    r->p = fragment ? xml_parser_new_fragment(&lim, &cbs, r) : xml_parser_new(&lim, &cbs, r);
    size_t off = 0;
    for (unsigned i = 0; off < len; i++) {
        size_t n = sizes ? (size_t)sizes[i % 4] + 1 : len;
        if (n > len - off)
            n = len - off;
        if (xml_parser_feed(r->p, data + off, n) != 0)
            break;
        off += n;
        /* Refused (and harmless) unless at a clean boundary. */
        if (hibernate)
            xml_parser_hibernate(r->p);
    }
    xml_parser_free(r->p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    xml_limits_default(&lim);
    /* Small limits so that the fuzzer reaches them. */
    lim.max_stanza_bytes = 4096;
    lim.max_depth = 16;
    lim.max_attrs = 16;
    lim.max_name_len = 64;
    lim.max_text_len = 1024;
    lim.max_header_bytes = 1024;
    int mode = data[0] % 3;
    const uint8_t *sizes = data + 1;
    const char *doc = (const char *)data + 5;
    size_t len = size - 5;

    if (mode == 2) {
        char err[160];
        struct xml_node *root = xml_parse_document(doc, len, &lim, err, sizeof(err));
        if (root) {
            check_round_trip(root);
            xml_free(root);
        }
        return 0;
    }
    struct run whole, chunked;
    whole.check = 1;
    run(&whole, mode, NULL, 0, doc, len);
    chunked.check = 0;
    run(&chunked, mode, sizes, (data[0] / 3) & 1, doc, len);
    size_t a = whole.err_at != SIZE_MAX ? whole.err_at : whole.log.len;
    size_t b = chunked.err_at != SIZE_MAX ? chunked.err_at : chunked.log.len;
    if (a != b || (a && memcmp(whole.log.data, chunked.log.data, a) != 0))
        abort();
    buf_free(&whole.log);
    buf_free(&chunked.log);
    return 0;
}
