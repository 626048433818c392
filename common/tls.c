/*
 * tls.c - OpenSSL contexts, SNI and ALPN callbacks, peer checks, and
 * self-signed certificates (see tls.h).
 *
 * Per-context state that OpenSSL's callbacks need (the SNI hook, the
 * server's ALPN list) lives in a struct tls_ctx_data attached to the
 * SSL_CTX as ex_data, so it is freed together with the context.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/tls.h"

struct tls_ctx_data {
    SSL_CTX *(*on_sni)(void *arg, const char *name);
    void *sni_arg;
    unsigned char *alpn; /* server: accepted protocols, wire format */
    unsigned alpn_len;
};

static int ctx_data_index = -1;

static void ctx_data_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    struct tls_ctx_data *d = ptr;
    if (d == NULL)
        return;
    free(d->alpn);
    free(d);
}

static struct tls_ctx_data *ctx_data(SSL_CTX *ctx)
{
    if (ctx_data_index < 0) {
        ctx_data_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_data_free);
        if (ctx_data_index < 0)
            fatal("cannot allocate an SSL_CTX ex_data index");
    }
    struct tls_ctx_data *d = SSL_CTX_get_ex_data(ctx, ctx_data_index);
    if (d == NULL) {
        d = xcalloc(1, sizeof(*d));
        if (SSL_CTX_set_ex_data(ctx, ctx_data_index, d) != 1)
            fatal("SSL_CTX_set_ex_data failed");
    }
    return d;
}

void tls_log_errors(const char *what)
{
    unsigned long e;
    char msg[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, msg, sizeof(msg));
        log_info("%s: %s", what, msg);
    }
}

/* The settings every context shares. */
static int ctx_common(SSL_CTX *ctx)
{
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_cipher_list(ctx, TLS_CIPHER_LIST) != 1) {
        tls_log_errors("TLS settings");
        return ERR_CONFIG;
    }
    /* Received plaintext (a SASL PLAIN password) is cleansed once read. */
    SSL_CTX_set_options(ctx,
                        SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CLEANSE_PLAINTEXT);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return 0;
}

static int load_cert_and_key(SSL_CTX *ctx, const char *cert_file, const char *key_file)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1) {
        log_err("cannot load certificate %s", cert_file);
        tls_log_errors(cert_file);
        return ERR_CONFIG;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        log_err("cannot load private key %s", key_file);
        tls_log_errors(key_file);
        return ERR_CONFIG;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        log_err("private key %s does not match certificate %s", key_file, cert_file);
        tls_log_errors(key_file);
        return ERR_CONFIG;
    }
    return 0;
}

/* Add every certificate of a PEM file to the context's chain. */
static int load_chain(SSL_CTX *ctx, const char *chain_file)
{
    FILE *f = fopen(chain_file, "r");
    if (f == NULL) {
        log_err("cannot open certificate chain %s: %s", chain_file, strerror(errno));
        return ERR_CONFIG;
    }
    int n = 0;
    X509 *x;
    while ((x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
            X509_free(x);
            fclose(f);
            tls_log_errors(chain_file);
            return ERR_CONFIG;
        }
        n++;
    }
    fclose(f);
    /* The loop ends on a "no start line" error at the end of the file. */
    ERR_clear_error();
    if (n == 0) {
        log_err("no certificate in chain file %s", chain_file);
        return ERR_CONFIG;
    }
    return 0;
}

int tls_server_ctx_new(const char *cert_file, const char *key_file, const char *chain_file,
                       SSL_CTX **out)
{
    static const unsigned char sid_ctx[] = "parley";
    *out = NULL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        tls_log_errors("SSL_CTX_new");
        return ERR_CONFIG;
    }
    int rc = ctx_common(ctx);
    if (rc == 0)
        rc = load_cert_and_key(ctx, cert_file, key_file);
    if (rc == 0 && chain_file != NULL)
        rc = load_chain(ctx, chain_file);
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Resumption by tickets (on by default) and by the session cache both
     * need a session id context on the server. */
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    *out = ctx;
    return 0;
}

int tls_client_ctx_new(const char *ca_file, int verify, const char *cert_file, const char *key_file,
                       SSL_CTX **out)
{
    *out = NULL;
    if ((cert_file == NULL) != (key_file == NULL))
        return ERR_INVAL;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        tls_log_errors("SSL_CTX_new");
        return ERR_CONFIG;
    }
    int rc = ctx_common(ctx);
    if (rc == 0) {
        int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                         : SSL_CTX_set_default_verify_paths(ctx);
        if (ok != 1) {
            log_err("cannot load CA certificates from %s", ca_file ? ca_file : "system store");
            tls_log_errors("CA store");
            rc = ERR_CONFIG;
        }
    }
    if (rc == 0 && cert_file != NULL)
        rc = load_cert_and_key(ctx, cert_file, key_file);
    if (rc != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    SSL_CTX_set_verify(ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    *out = ctx;
    return 0;
}

void tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
    struct tls_ctx_data *d = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    if (name == NULL || d->on_sni == NULL)
        return SSL_TLSEXT_ERR_OK;
    SSL_CTX *ctx = d->on_sni(d->sni_arg, name);
    if (ctx != NULL && ctx != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, ctx) == NULL) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

int tls_ctx_set_sni(SSL_CTX *ctx, SSL_CTX *(*on_sni)(void *arg, const char *name), void *arg)
{
    struct tls_ctx_data *d = ctx_data(ctx);
    d->on_sni = on_sni;
    d->sni_arg = arg;
    SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
    SSL_CTX_set_tlsext_servername_arg(ctx, d);
    return 0;
}

static int on_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    struct tls_ctx_data *d = arg;
    unsigned char *sel;
    if (d->alpn == NULL || SSL_select_next_proto(&sel, outlen, d->alpn, d->alpn_len, in, inlen) !=
                               OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

int tls_ctx_set_alpn(SSL_CTX *ctx, int server, const char *const *protos, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(protos[i]);
        if (l == 0 || l > TLS_ALPN_MAX)
            return ERR_INVAL;
        total += 1 + l;
    }
    if (n == 0 || total > 65535)
        return ERR_INVAL;
    unsigned char *wire = xmalloc(total);
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(protos[i]);
        wire[off++] = (unsigned char)l;
        memcpy(wire + off, protos[i], l);
        off += l;
    }
    if (!server) {
        /* SSL_CTX_set_alpn_protos returns 0 on success. */
        int rc = SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)total);
        free(wire);
        return rc == 0 ? 0 : ERR_INVAL;
    }
    struct tls_ctx_data *d = ctx_data(ctx);
    free(d->alpn);
    d->alpn = wire;
    d->alpn_len = (unsigned)total;
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn_select, d);
    return 0;
}

int tls_alpn_get(const SSL *ssl, char *out, size_t outlen)
{
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &p, &len);
    if (p == NULL || len == 0)
        return ERR_NOTFOUND;
    if (len >= outlen)
        return ERR_LIMIT;
    memcpy(out, p, len);
    out[len] = '\0';
    return 0;
}

int tls_cert_check_host(X509 *cert, const char *domain)
{
    if (cert == NULL || domain == NULL || *domain == '\0')
        return ERR_AUTH;
    int r =
        X509_check_host(cert, domain, strlen(domain), X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS, NULL);
    return r == 1 ? 0 : ERR_AUTH;
}

int tls_peer_verify(const SSL *ssl, const char *domain)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    X509 *cert = SSL_get1_peer_certificate(ssl);
#else
    X509 *cert = SSL_get_peer_certificate(ssl);
#endif
    if (cert == NULL)
        return ERR_NOTFOUND;
    int rc = 0;
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK) {
        log_info("peer certificate for %s not trusted: %s", domain,
                 X509_verify_cert_error_string(vr));
        rc = ERR_AUTH;
    } else if (tls_cert_check_host(cert, domain) != 0) {
        log_info("peer certificate does not name %s", domain);
        rc = ERR_AUTH;
    }
    X509_free(cert);
    return rc;
}

/* ---- self-signed certificates ---- */

static int hostname_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 253 || s[0] == '.' || s[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

static EVP_PKEY *gen_p256(void)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_id(EVP_PKEY_EC, NULL);
    if (kctx == NULL || EVP_PKEY_keygen_init(kctx) != 1 ||
        EVP_PKEY_CTX_set_ec_paramgen_curve_nid(kctx, NID_X9_62_prime256v1) != 1 ||
        EVP_PKEY_keygen(kctx, &pkey) != 1) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
    EVP_PKEY_CTX_free(kctx);
    return pkey;
}

static int add_san_dns(X509 *x, const char *domain)
{
    int ok = 0;
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *gen = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    if (gens == NULL || gen == NULL || ia5 == NULL ||
        ASN1_STRING_set(ia5, domain, (int)strlen(domain)) != 1)
        goto out;
    GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);
    ia5 = NULL;
    if (sk_GENERAL_NAME_push(gens, gen) == 0)
        goto out;
    gen = NULL;
    ok = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_REPLACE) == 1;
out:
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(gen);
    GENERAL_NAMES_free(gens);
    return ok;
}

static X509 *make_cert(EVP_PKEY *pkey, const char *domain, unsigned days)
{
    X509 *x = X509_new();
    BIGNUM *serial = BN_new();
    X509_NAME *name = NULL;
    if (x == NULL || serial == NULL)
        goto fail;
    /* A positive 127-bit random serial (RFC 5280 allows up to 20 octets). */
    if (X509_set_version(x, 2) != 1 ||
        BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1 ||
        BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(x)) == NULL)
        goto fail;
    if (X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), (long)days * 86400L) == NULL)
        goto fail;
    name = X509_NAME_new();
    if (name == NULL ||
        X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_ASC,
                                   (const unsigned char *)domain, -1, -1, 0) != 1 ||
        X509_set_subject_name(x, name) != 1 || X509_set_issuer_name(x, name) != 1)
        goto fail;
    if (X509_set_pubkey(x, pkey) != 1 || !add_san_dns(x, domain))
        goto fail;
    if (X509_sign(x, pkey, EVP_sha256()) == 0)
        goto fail;
    X509_NAME_free(name);
    BN_free(serial);
    return x;
fail:
    X509_NAME_free(name);
    BN_free(serial);
    X509_free(x);
    return NULL;
}

/* fopen for writing with a given mode for a new file, enforced on an old one. */
static FILE *open_write(const char *path, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return NULL;
    if (fchmod(fd, mode) != 0) {
        close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "w");
    if (f == NULL)
        close(fd);
    return f;
}

int tls_selfsigned_write(const char *domain, unsigned days, const char *cert_file,
                         const char *key_file)
{
    if (domain == NULL || !hostname_ok(domain) || days == 0 || days > 36500)
        return ERR_INVAL;
    int rc = ERR_TLS;
    X509 *x = NULL;
    FILE *f;
    EVP_PKEY *pkey = gen_p256();
    if (pkey == NULL || (x = make_cert(pkey, domain, days)) == NULL) {
        tls_log_errors("self-signed certificate");
        goto out;
    }
    if ((f = open_write(key_file, 0600)) == NULL) {
        log_err("cannot write %s: %s", key_file, strerror(errno));
        rc = ERR_SYS;
        goto out;
    }
    int ok = PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1;
    if (fclose(f) != 0 || !ok) {
        log_err("cannot write %s", key_file);
        tls_log_errors(key_file);
        rc = ERR_SYS;
        goto out;
    }
    if ((f = open_write(cert_file, 0644)) == NULL) {
        log_err("cannot write %s: %s", cert_file, strerror(errno));
        rc = ERR_SYS;
        goto out;
    }
    ok = PEM_write_X509(f, x) == 1;
    if (fclose(f) != 0 || !ok) {
        log_err("cannot write %s", cert_file);
        rc = ERR_SYS;
        goto out;
    }
    rc = 0;
out:
    X509_free(x);
    EVP_PKEY_free(pkey);
    return rc;
}
