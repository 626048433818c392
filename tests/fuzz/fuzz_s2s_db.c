/*
 * fuzz_s2s_db.c - arbitrary bytes as an inbound server stream: every
 * top-level element goes through s2s_db_parse (the dialback checks) and,
 * for a request, through key computation and comparison; the same bytes
 * are also parsed as a static routes file. Must not crash, hang or leak;
 * refusals are expected.
 */
#include "autoconfig.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/log.h"
#include "common/xml.h"
#include "s2s/s2s.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_open(void *arg, struct xml_node *hdr)
{
    xml_free(hdr);
}

static void on_element(void *arg, struct xml_node *el, const char *raw, size_t rawlen)
{
    static const unsigned char key[32] = {1, 2, 3};
    char from[S2S_DOMAIN_MAX + 1], to[S2S_DOMAIN_MAX + 1];
    struct s2s_db_elem d;
    if (s2s_db_parse(el, &d, from, to) == 0 && d.type == NULL) {
        char want[S2S_DB_KEY_HEXLEN + 1];
        if (s2s_db_key(key, d.from, d.to, d.id ? d.id : "0123", want) == 0)
            (void)s2s_db_key_equal(d.key, d.keylen, want);
    }
    xml_free(el);
}

static void on_close(void *arg)
{
}

static void on_error(void *arg, enum xml_stream_err cond, const char *text)
{
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool started;
    if (!started) {
        log_init("fuzz_s2s_db", 0, LOG_LVL_ERR);
        started = true;
    }
    static const struct xml_parser_cbs cbs = {
        .on_stream_open = on_open,
        .on_element = on_element,
        .on_stream_close = on_close,
        .on_error = on_error,
    };
    struct xml_parser *p = xml_parser_new(NULL, &cbs, NULL);
    xml_parser_feed(p, (const char *)data, size);
    xml_parser_free(p);
    struct htab *routes = NULL;
    if (s2s_routes_parse("fuzz", (const char *)data, size, &routes) == 0)
        htab_free(routes);
    return 0;
}
