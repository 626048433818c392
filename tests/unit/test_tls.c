/*
 * test_tls.c - contexts, self-signed certificates, host checks, SNI and
 * ALPN, with handshakes between two SSL objects over memory BIOs (no
 * sockets: the stream tests do those).
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/log.h"
#include "common/tls.h"
#include "tests/unit/tmpdir.h"

static struct tmpdir *tmp;
static const char *a_cert, *a_key, *b_cert, *b_key;

static int setup(void **state)
{
    log_init("test_tls", 0, LOG_LVL_WARN);
    tmp = tmpdir_new();
    a_cert = tmpdir_path(tmp, "a.crt");
    a_key = tmpdir_path(tmp, "a.key");
    b_cert = tmpdir_path(tmp, "b.crt");
    b_key = tmpdir_path(tmp, "b.key");
    if (tls_selfsigned_write("a.example", 2, a_cert, a_key) != 0 ||
        tls_selfsigned_write("b.example", 2, b_cert, b_key) != 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    tmpdir_free(tmp);
    return 0;
}

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static void test_selfsigned(void **state)
{
    struct stat st;
    assert_int_equal(stat(a_key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    X509 *x = read_cert(a_cert);
    assert_int_equal(tls_cert_check_host(x, "a.example"), 0);
    assert_int_equal(tls_cert_check_host(x, "A.EXAMPLE"), 0);
    assert_int_equal(tls_cert_check_host(x, "b.example"), ERR_AUTH);
    assert_int_equal(tls_cert_check_host(x, "x.a.example"), ERR_AUTH);
    assert_int_equal(tls_cert_check_host(x, "example"), ERR_AUTH);
    assert_int_equal(tls_cert_check_host(x, ""), ERR_AUTH);
    assert_int_equal(tls_cert_check_host(NULL, "a.example"), ERR_AUTH);
    X509_free(x);

    const char *c = tmpdir_path(tmp, "bad.crt"), *k = tmpdir_path(tmp, "bad.key");
    assert_int_equal(tls_selfsigned_write("", 1, c, k), ERR_INVAL);
    assert_int_equal(tls_selfsigned_write("a.example,DNS:evil.example", 1, c, k), ERR_INVAL);
    assert_int_equal(tls_selfsigned_write("-x.example", 1, c, k), ERR_INVAL);
    assert_int_equal(tls_selfsigned_write("a.example", 0, c, k), ERR_INVAL);
    assert_int_equal(tls_selfsigned_write("a.example", 1, "/nonexistent/dir/c", k), ERR_SYS);
}

static void test_server_ctx(void **state)
{
    SSL_CTX *ctx;
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &ctx), 0);
    assert_non_null(ctx);
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    assert_true(SSL_CTX_get_mode(ctx) & SSL_MODE_RELEASE_BUFFERS);
    assert_true(SSL_CTX_get_options(ctx) & SSL_OP_NO_COMPRESSION);
    assert_false(SSL_CTX_get_options(ctx) & SSL_OP_NO_TICKET);
    tls_ctx_free(ctx);

    /* An extra chain file is accepted. */
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, b_cert, &ctx), 0);
    tls_ctx_free(ctx);

    /* Key of another certificate, missing files, a chain without certificates. */
    assert_int_equal(tls_server_ctx_new(a_cert, b_key, NULL, &ctx), ERR_CONFIG);
    assert_null(ctx);
    assert_int_equal(tls_server_ctx_new("/nonexistent.crt", a_key, NULL, &ctx), ERR_CONFIG);
    assert_int_equal(tls_server_ctx_new(a_cert, "/nonexistent.key", NULL, &ctx), ERR_CONFIG);
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, a_key, &ctx), ERR_CONFIG);
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, "/nonexistent.pem", &ctx), ERR_CONFIG);
    tls_ctx_free(NULL);
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_client_ctx(void **state)
{
    SSL_CTX *ctx;
    assert_int_equal(tls_client_ctx_new(NULL, 1, NULL, NULL, &ctx), 0);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
    tls_ctx_free(ctx);
    assert_int_equal(tls_client_ctx_new(a_cert, 0, b_cert, b_key, &ctx), 0);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
    tls_ctx_free(ctx);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, b_cert, NULL, &ctx), ERR_INVAL);
    assert_int_equal(tls_client_ctx_new("/nonexistent.pem", 1, NULL, NULL, &ctx), ERR_CONFIG);
    assert_null(ctx);
}

/* ---- handshakes over memory BIOs ---- */

struct pair {
    SSL *c, *s;
};

static SSL *new_ssl(SSL_CTX *ctx, int server)
{
    SSL *ssl = SSL_new(ctx);
    assert_non_null(ssl);
    BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(r, -1);
    SSL_set_bio(ssl, r, w);
    if (server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    return ssl;
}

static void move(SSL *from, SSL *to)
{
    char buf[4096];
    int n;
    while ((n = BIO_read(SSL_get_wbio(from), buf, sizeof(buf))) > 0)
        assert_int_equal(BIO_write(SSL_get_rbio(to), buf, n), n);
}

/* Run both handshakes to the end; 0 when both completed. */
static int handshake(struct pair *p)
{
    int cdone = 0, sdone = 0;
    for (int round = 0; round < 20 && !(cdone && sdone); round++) {
        if (!cdone) {
            int r = SSL_do_handshake(p->c);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(p->c, r) != SSL_ERROR_WANT_READ)
                return -1;
        }
        move(p->c, p->s);
        if (!sdone) {
            int r = SSL_do_handshake(p->s);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(p->s, r) != SSL_ERROR_WANT_READ)
                return -1;
        }
        move(p->s, p->c);
    }
    return cdone && sdone ? 0 : -1;
}

static void pair_init(struct pair *p, SSL_CTX *cctx, SSL_CTX *sctx, const char *sni)
{
    p->c = new_ssl(cctx, 0);
    p->s = new_ssl(sctx, 1);
    if (sni)
        assert_int_equal(SSL_set_tlsext_host_name(p->c, sni), 1);
}

static void pair_free(struct pair *p)
{
    SSL_free(p->c);
    SSL_free(p->s);
    ERR_clear_error();
}

static SSL_CTX *sni_b_ctx;
static int sni_calls;

static SSL_CTX *on_sni(void *arg, const char *name)
{
    assert_ptr_equal(arg, &sni_calls);
    sni_calls++;
    return strcmp(name, "b.example") == 0 ? sni_b_ctx : NULL;
}

static void test_handshake_verify(void **state)
{
    SSL_CTX *sctx, *cctx, *cctx_wrong, *cctx_noverify;
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &sctx), 0);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, NULL, NULL, &cctx), 0);
    assert_int_equal(tls_client_ctx_new(b_cert, 1, NULL, NULL, &cctx_wrong), 0);
    assert_int_equal(tls_client_ctx_new(b_cert, 0, NULL, NULL, &cctx_noverify), 0);
    struct pair p;

    pair_init(&p, cctx, sctx, "a.example");
    assert_int_equal(handshake(&p), 0);
    assert_true(SSL_version(p.c) >= TLS1_2_VERSION);
    assert_int_equal(tls_peer_verify(p.c, "a.example"), 0);
    assert_int_equal(tls_peer_verify(p.c, "b.example"), ERR_AUTH);
    /* The server asked for no client certificate. */
    assert_int_equal(tls_peer_verify(p.s, "a.example"), ERR_NOTFOUND);
    pair_free(&p);

    /* Verification on, untrusted chain: the handshake fails. */
    pair_init(&p, cctx_wrong, sctx, "a.example");
    assert_int_equal(handshake(&p), -1);
    pair_free(&p);

    /* Verification off: the handshake completes, the check says no. */
    pair_init(&p, cctx_noverify, sctx, "a.example");
    assert_int_equal(handshake(&p), 0);
    assert_int_equal(tls_peer_verify(p.c, "a.example"), ERR_AUTH);
    pair_free(&p);

    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
    tls_ctx_free(cctx_wrong);
    tls_ctx_free(cctx_noverify);
}

static void test_sni(void **state)
{
    SSL_CTX *sctx, *cctx_a, *cctx_b;
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &sctx), 0);
    assert_int_equal(tls_server_ctx_new(b_cert, b_key, NULL, &sni_b_ctx), 0);
    assert_int_equal(tls_ctx_set_sni(sctx, on_sni, &sni_calls), 0);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, NULL, NULL, &cctx_a), 0);
    assert_int_equal(tls_client_ctx_new(b_cert, 1, NULL, NULL, &cctx_b), 0);
    struct pair p;

    sni_calls = 0;
    pair_init(&p, cctx_b, sctx, "b.example");
    assert_int_equal(handshake(&p), 0);
    assert_int_equal(sni_calls, 1);
    assert_int_equal(tls_peer_verify(p.c, "b.example"), 0);
    assert_string_equal(SSL_get_servername(p.s, TLSEXT_NAMETYPE_host_name), "b.example");
    pair_free(&p);

    /* Another name keeps the listener's context. */
    pair_init(&p, cctx_a, sctx, "a.example");
    assert_int_equal(handshake(&p), 0);
    assert_int_equal(sni_calls, 2);
    assert_int_equal(tls_peer_verify(p.c, "a.example"), 0);
    pair_free(&p);

    /* No SNI at all: the default context, the callback is not asked. */
    pair_init(&p, cctx_a, sctx, NULL);
    assert_int_equal(handshake(&p), 0);
    assert_int_equal(sni_calls, 2);
    pair_free(&p);

    tls_ctx_free(sctx);
    tls_ctx_free(sni_b_ctx);
    tls_ctx_free(cctx_a);
    tls_ctx_free(cctx_b);
}

static void test_alpn(void **state)
{
    static const char *const server_protos[] = {"xmpp-client", "xmpp-server"};
    static const char *const client_protos[] = {"h2", "xmpp-server"};
    static const char *const other_protos[] = {"h2"};
    static const char *const bad_empty[] = {""};
    SSL_CTX *sctx, *cctx, *cctx_other, *cctx_none;
    char name[TLS_ALPN_MAX + 1];
    assert_int_equal(tls_server_ctx_new(a_cert, a_key, NULL, &sctx), 0);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, NULL, NULL, &cctx), 0);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, NULL, NULL, &cctx_other), 0);
    assert_int_equal(tls_client_ctx_new(a_cert, 1, NULL, NULL, &cctx_none), 0);
    assert_int_equal(tls_ctx_set_alpn(sctx, 1, server_protos, 2), 0);
    assert_int_equal(tls_ctx_set_alpn(cctx, 0, client_protos, 2), 0);
    assert_int_equal(tls_ctx_set_alpn(cctx_other, 0, other_protos, 1), 0);
    assert_int_equal(tls_ctx_set_alpn(cctx, 0, bad_empty, 1), ERR_INVAL);
    assert_int_equal(tls_ctx_set_alpn(cctx, 0, client_protos, 0), ERR_INVAL);
    struct pair p;

    pair_init(&p, cctx, sctx, "a.example");
    assert_int_equal(handshake(&p), 0);
    assert_int_equal(tls_alpn_get(p.c, name, sizeof(name)), 0);
    assert_string_equal(name, "xmpp-server");
    assert_int_equal(tls_alpn_get(p.s, name, sizeof(name)), 0);
    assert_string_equal(name, "xmpp-server");
    assert_int_equal(tls_alpn_get(p.s, name, 5), ERR_LIMIT);
    pair_free(&p);

    /* No common protocol: no ALPN, but the handshake goes on. */
    pair_init(&p, cctx_other, sctx, "a.example");
    assert_int_equal(handshake(&p), 0);
    assert_int_equal(tls_alpn_get(p.c, name, sizeof(name)), ERR_NOTFOUND);
    pair_free(&p);

    pair_init(&p, cctx_none, sctx, "a.example");
    assert_int_equal(handshake(&p), 0);
    assert_int_equal(tls_alpn_get(p.s, name, sizeof(name)), ERR_NOTFOUND);
    pair_free(&p);

    tls_ctx_free(sctx);
    tls_ctx_free(cctx);
    tls_ctx_free(cctx_other);
    tls_ctx_free(cctx_none);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_selfsigned), cmocka_unit_test(test_server_ctx),
        cmocka_unit_test(test_client_ctx), cmocka_unit_test(test_handshake_verify),
        cmocka_unit_test(test_sni),        cmocka_unit_test(test_alpn),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
