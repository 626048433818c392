/*
 * tls.h - OpenSSL contexts with Parley's settings, peer checks, test keys.
 *
 * A daemon builds its SSL_CTX objects at start-up (before the privilege
 * drop, while it can still read its key files) and hands them to
 * common/stream, which creates one SSL per connection over memory BIOs.
 * Every context gets the same modern settings: TLS 1.2 at least, forward
 * secret AEAD cipher suites only, no compression, no renegotiation, and
 * SSL_MODE_RELEASE_BUFFERS so that idle connections hold no record buffers.
 *
 * Server contexts can pick another context per SNI name (a daemon serving
 * several domains) and choose an ALPN protocol (XEP-0368 direct TLS);
 * client contexts verify against the system CA store or a given file.
 *
 * The caller owns every SSL_CTX it gets (tls_ctx_free); an SSL_CTX is
 * reference counted by OpenSSL, so streams using it keep it alive.
 * Single-threaded, like the loop that uses the contexts.
 */
#ifndef PARLEY_TLS_H
#define PARLEY_TLS_H

#include <stddef.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

/* TLS 1.2 suites (TLS 1.3 uses OpenSSL's default AEAD suites). */
#define TLS_CIPHER_LIST                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* Longest ALPN protocol name (RFC 7301 allows 255). */
#define TLS_ALPN_MAX 255

/*
 * Server context. cert_file holds the certificate followed by any
 * intermediates (PEM); chain_file (may be NULL) holds more intermediates;
 * key_file the private key, which must match the certificate. Session
 * tickets are on. Returns 0 and *out, or ERR_CONFIG (logged, with the
 * file named).
 */
int tls_server_ctx_new(const char *cert_file, const char *key_file, const char *chain_file,
                       SSL_CTX **out);

/*
 * Client context. ca_file NULL uses the system CA store. verify nonzero:
 * the handshake fails on an untrusted chain (SSL_VERIFY_PEER). verify 0:
 * the handshake goes on whatever the chain, and tls_peer_verify tells the
 * result afterwards (s2s falls back to dialback on an unverified peer).
 * A certificate and key for client authentication (s2s SASL EXTERNAL) may
 * be given (both or neither). Returns 0 and *out, or ERR_CONFIG.
 */
int tls_client_ctx_new(const char *ca_file, int verify, const char *cert_file, const char *key_file,
                       SSL_CTX **out);

/* NULL is fine. Streams holding the context keep it alive. */
void tls_ctx_free(SSL_CTX *ctx);

/*
 * Server side SNI: on_sni is called during the handshake with the name the
 * client asked for (never NULL, not yet checked beyond being a hostname
 * string). It returns the context to use for that name, or NULL to keep
 * the listener's context. The returned context must live as long as the
 * connections using it (OpenSSL takes a reference). Returns 0.
 */
int tls_ctx_set_sni(SSL_CTX *ctx, SSL_CTX *(*on_sni)(void *arg, const char *name), void *arg);

/*
 * ALPN. On a client context: the protocols offered, in order. On a server
 * context: the protocols accepted, in order of preference; a client that
 * offers none of them gets no ALPN (the handshake goes on). Names are 1 to
 * TLS_ALPN_MAX bytes. Returns 0 or ERR_INVAL. server says which side the
 * context is for.
 */
int tls_ctx_set_alpn(SSL_CTX *ctx, int server, const char *const *protos, size_t n);

/*
 * The negotiated ALPN protocol, copied NUL-terminated into out (size
 * outlen, at least TLS_ALPN_MAX + 1 for any name to fit). Returns 0,
 * ERR_NOTFOUND if none was negotiated, ERR_LIMIT if out is too small.
 */
int tls_alpn_get(const SSL *ssl, char *out, size_t outlen);

/* Does the certificate name domain (a DNS name, RFC 6125 rules: SAN DNS
 * entries, no partial wildcards)? Returns 0 or ERR_AUTH. */
int tls_cert_check_host(X509 *cert, const char *domain);

/*
 * The peer's certificate chain verified against the context's trust store
 * and names domain. Returns 0, ERR_NOTFOUND if the peer sent no
 * certificate, or ERR_AUTH (reason logged at info).
 */
int tls_peer_verify(const SSL *ssl, const char *domain);

/*
 * Write a new self-signed certificate for domain (P-256 key, SAN
 * DNS:domain, CN domain, valid from an hour ago for days days) to
 * cert_file and its private key to key_file (mode 0600). For tests and
 * `parleyctl init`. domain is a hostname: letters, digits, '-', '.'.
 * Returns 0, ERR_INVAL, or ERR_SYS / ERR_TLS (logged).
 */
int tls_selfsigned_write(const char *domain, unsigned days, const char *cert_file,
                         const char *key_file);

/* Log and clear OpenSSL's error queue, each line prefixed by what. */
void tls_log_errors(const char *what);

#endif
