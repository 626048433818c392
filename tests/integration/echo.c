/*
 * echo.c - parley-echo, a test component on common/component for the
 * integration tests (tests/integration):
 *
 *   parley-echo --router unix:PATH|tcp:HOST:PORT --name NAME --secret-file FILE
 *               [--internal] [--bind DOMAIN]... [--backoff-max MS]
 *
 * It keeps a connection to the router (reconnecting with back-off; the
 * maximum is 1 s by default so that tests restarting the router do not
 * wait long) and logs "ready" on stderr after each handshake (and binds).
 * It answers:
 *  - a message with a body: a message back to the sender (to/from
 *    swapped, same type and id) whose body is "echo: " + the body;
 *  - an iq get with <ping xmlns='urn:xmpp:ping'/>: an empty result;
 *  - any other iq get/set: a service-unavailable error;
 *  - nothing else (presence, iq results, messages without a body, and
 *    never anything of type error).
 * A stanza inside <r:route> (internal components) is answered inside an
 * r:route back to the route's from. Replies made while the router is away
 * queue in the component.
 *
 * A test tool, not a daemon: one plain libuv loop in main, no privilege
 * drop. SIGTERM or SIGINT stops the component gracefully and exits 0.
 */
#include "autoconfig.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/component.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/xml.h"

#define NS_PING     "urn:xmpp:ping"
#define MAX_BINDS   16
#define SECRET_MAX  1024
#define ECHO_PREFIX "echo: "

struct echo {
    uv_loop_t *loop;
    struct component *c;
    uv_signal_t sigterm;
    uv_signal_t sigint;
};

/* The answer to one stanza, or NULL when it gets none. */
static struct xml_node *answer(struct xml_node *st)
{
    const char *type = xml_get_attr(st, "type");
    const char *from = xml_get_attr(st, "from");
    const char *to = xml_get_attr(st, "to");
    const char *id = xml_get_attr(st, "id");
    if ((type != NULL && strcmp(type, "error") == 0) || from == NULL)
        return NULL;
    if (strcmp(st->name, "message") == 0) {
        struct xml_node *body = xml_child(st, NULL, "body");
        if (body == NULL)
            return NULL;
        size_t len;
        const char *text = xml_text(body, &len);
        struct xml_node *r = xml_new(XML_NS_COMPONENT, "message");
        xml_set_attr(r, "to", from);
        if (to != NULL)
            xml_set_attr(r, "from", to);
        if (type != NULL)
            xml_set_attr(r, "type", type);
        if (id != NULL)
            xml_set_attr(r, "id", id);
        struct xml_node *rb = xml_add_child(r, NULL, "body");
        xml_add_text(rb, ECHO_PREFIX, strlen(ECHO_PREFIX));
        xml_add_text(rb, text, len);
        return r;
    }
    if (strcmp(st->name, "iq") != 0 || type == NULL ||
        (strcmp(type, "get") != 0 && strcmp(type, "set") != 0))
        return NULL;
    if (strcmp(type, "get") == 0 && xml_child(st, NS_PING, "ping") != NULL) {
        struct xml_node *r = xml_new(XML_NS_COMPONENT, "iq");
        xml_set_attr(r, "type", "result");
        xml_set_attr(r, "to", from);
        if (to != NULL)
            xml_set_attr(r, "from", to);
        if (id != NULL)
            xml_set_attr(r, "id", id);
        return r;
    }
    struct xml_node *r = xml_copy(st);
    if (xml_make_error(r, XML_STE_SERVICE_UNAVAILABLE, NULL, NULL) != 0) {
        xml_free(r);
        return NULL;
    }
    return r;
}

static void on_ready(struct component *c, void *arg)
{
    log_notice("ready");
}

static void on_down(struct component *c, void *arg)
{
    log_notice("router connection lost");
}

static void on_stanza(struct component *c, void *arg, struct xml_node *st, const char *raw,
                      size_t rawlen)
{
    if (strcmp(st->ns, COMPONENT_NS_ROUTER) == 0) {
        const char *route_from = xml_get_attr(st, "from");
        struct xml_node *inner = xml_child(st, NULL, NULL);
        if (strcmp(st->name, "route") == 0 && route_from != NULL && inner != NULL) {
            struct xml_node *r = answer(inner);
            if (r != NULL)
                component_route(c, route_from, r);
            xml_free(r);
        }
        xml_free(st);
        return;
    }
    struct xml_node *r = answer(st);
    if (r != NULL)
        component_send(c, r);
    xml_free(r);
    xml_free(st);
}

static void on_bind_result(struct component *c, void *arg, const char *domain, int err)
{
    if (err != 0)
        log_warn("bind %s failed: %s", domain, err_str(err));
}

static void on_bounce(struct component *c, void *arg, struct xml_node *st, const char *route_to,
                      enum component_bounce why)
{
    /* Our own replies: an echo is not worth an error to anyone. */
    log_info("reply <%s/> to %s not delivered (%d)", st->name,
             xml_get_attr(st, "to") ? xml_get_attr(st, "to") : "?", (int)why);
    xml_free(st);
}

static void on_signal_closed(uv_handle_t *h)
{
}

static void on_close(struct component *c, void *arg)
{
    struct echo *e = arg;
    component_free(c);
    e->c = NULL;
    uv_close((uv_handle_t *)&e->sigterm, on_signal_closed);
    uv_close((uv_handle_t *)&e->sigint, on_signal_closed);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct echo *e = h->data;
    log_notice("signal %d: stopping", signum);
    component_stop(e->c);
}

static const struct component_cbs cbs = {
    .on_ready = on_ready,
    .on_down = on_down,
    .on_stanza = on_stanza,
    .on_bind_result = on_bind_result,
    .on_bounce = on_bounce,
    .on_close = on_close,
};

static void usage(void)
{
    fprintf(stderr, "usage: parley-echo --router unix:PATH|tcp:HOST:PORT --name NAME "
                    "--secret-file FILE [--internal] [--bind DOMAIN]... [--backoff-max MS]\n");
    exit(2);
}

/* The secret is the file's first line, without trailing whitespace. */
static char *read_secret(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        fatal("cannot open %s: %m", path);
    char *s = xcalloc(1, SECRET_MAX + 1);
    size_t n = fread(s, 1, SECRET_MAX, f);
    fclose(f);
    s[n] = '\0';
    s[strcspn(s, "\r\n")] = '\0';
    n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    if (n == 0)
        fatal("%s: empty secret", path);
    return s;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"router", required_argument, NULL, 'r'},
        {"name", required_argument, NULL, 'n'},
        {"secret-file", required_argument, NULL, 's'},
        {"internal", no_argument, NULL, 'i'},
        {"bind", required_argument, NULL, 'b'},
        {"backoff-max", required_argument, NULL, 'm'},
        {NULL, 0, NULL, 0},
    };
    struct component_opts o;
    struct component_bind binds[MAX_BINDS];
    const char *secret_file = NULL;
    component_opts_default(&o);
    o.backoff_max_ms = 1000;
    int ch;
    while ((ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (ch) {
        case 'r':
            o.router = optarg;
            break;
        case 'n':
            o.name = optarg;
            break;
        case 's':
            secret_file = optarg;
            break;
        case 'i':
            o.internal = 1;
            break;
        case 'b':
            if (o.nbinds == MAX_BINDS)
                usage();
            binds[o.nbinds].domain = optarg;
            binds[o.nbinds].is_default = 0;
            o.nbinds++;
            break;
        case 'm':
            o.backoff_max_ms = strtoull(optarg, NULL, 10);
            break;
        default:
            usage();
        }
    }
    if (optind != argc || o.router == NULL || o.name == NULL || secret_file == NULL)
        usage();
    o.binds = binds;
    if (o.backoff_max_ms < o.backoff_min_ms)
        o.backoff_max_ms = o.backoff_min_ms;

    log_init("parley-echo", 0, LOG_LVL_INFO);
    signal(SIGPIPE, SIG_IGN);
    char *secret = read_secret(secret_file);
    o.secret = secret;

    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0)
        fatal("uv_loop_init failed");
    struct echo e;
    memset(&e, 0, sizeof(e));
    e.loop = &loop;
    int rc = component_new(&loop, &o, &cbs, &e, &e.c);
    mem_freezero(secret, SECRET_MAX + 1);
    if (rc != 0)
        fatal("bad options for the component");
    uv_signal_init(&loop, &e.sigterm);
    uv_signal_init(&loop, &e.sigint);
    e.sigterm.data = &e;
    e.sigint.data = &e;
    uv_signal_start(&e.sigterm, on_signal, SIGTERM);
    uv_signal_start(&e.sigint, on_signal, SIGINT);
    component_start(e.c);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
        log_warn("loop closed with handles open");
    log_close();
    return 0;
}
