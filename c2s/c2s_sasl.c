/*
 * c2s_sasl.c - SASL for client streams (RFC 6120 §6).
 *
 * SCRAM-SHA-1 and SCRAM-SHA-256 run in Cyrus SASL's scram plugin. The loop
 * never waits for the database: the client-first message is parsed here
 * (c2s_saslmsg) for the username, the user's stored keys are fetched from
 * storage asynchronously, and only then is the mechanism started. Cyrus
 * reads the keys through an auxprop plugin registered in this process
 * ("parley"), which answers the "*authPassword" property with the RFC 5803
 * form the scram plugin of Cyrus 2.1.28 parses:
 *     SCRAM-SHA-1$<iterations>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>
 * (the plugin looks up "*authPassword" and "*userPassword"; we never give a
 * userPassword, so Cyrus never runs PBKDF2 on the loop). The lookup runs
 * synchronously inside sasl_server_start/step, so it reads the keys of the
 * exchange being stepped (`stepping`), set only around those calls.
 *
 * PLAIN (over TLS only) is verified here against the stored SCRAM-SHA-256
 * keys (else SCRAM-SHA-1): that means PBKDF2 with the stored salt and
 * iteration count, a password hash that costs milliseconds, so it runs in
 * libuv's thread pool (uv_queue_work); the loop goes on, and the client is
 * answered from the after-work callback. At most limits/plain-jobs checks
 * run or wait per process; a slot is taken before the credentials are
 * fetched (so a burst cannot fetch keys and then find the pool full) and
 * given back when the check ends or the exchange is dropped. Beyond that a
 * client gets temporary-auth-failure (RFC 6120 §6.5.12: try again later).
 *
 * Channel binding: SCRAM-SHA-*-PLUS use tls-server-end-point (RFC 5929:
 * a hash of our certificate), which Cyrus 2.1.28 accepts as an opaque
 * sasl_channel_binding_t and which is defined for TLS 1.3 too (tls-unique
 * is not; tls-exporter would need every client to support it). It is
 * given to Cyrus on every SCRAM exchange over TLS, so a client that says
 * "y" (it supports binding but thinks we do not) is refused when -PLUS was
 * offered: the downgrade check of RFC 5802 §6. The binding type is
 * announced with XEP-0440. -PLUS is offered only when the certificate the
 * client got (SNI) has a tls-server-end-point: one signed with Ed25519 or
 * Ed448 has none (no single hash to use), so such a client sees no -PLUS.
 *
 * Failures answer <not-authorized/> after a delay that doubles with each
 * recent failure from the client's address; after auth_attempts failures on
 * one stream the stream is closed. Passwords and keys are wiped after use;
 * none is logged.
 */
#include "autoconfig.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sasl/sasl.h>
#include <sasl/saslplug.h>

#include "c2s/c2s.h"
#include "c2s/c2s_saslmsg.h"
#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/rand.h"
#include "common/scram.h"
#include "storage/storage.h"

struct c2s_sasl {
    char mech[24];
    bool plain;
    bool started; /* the Cyrus exchange is running */
    bool nouser;  /* running against made-up keys */
    bool busy;    /* a storage query or a PLAIN check is in flight */
    bool slot;    /* holds one of the PLAIN slots (c2s->nplain_jobs) */
    enum scram_hash hash;
    sasl_conn_t *conn;
    char *user; /* nodeprepped */
    char *authpw;
    unsigned char *first; /* client-first message, until the keys are here */
    size_t first_len;
    char *password; /* PLAIN, until the check is queued */
    size_t password_len;
    sasl_channel_binding_t cb; /* Cyrus keeps a pointer to this */
    sasl_callback_t cbs[2];    /* this connection's callbacks (Cyrus keeps them) */
    unsigned char cbdata[EVP_MAX_MD_SIZE];
};

struct plain_job {
    uv_work_t req;
    struct c2s_client *cl;
    struct scram_keys keys;
    char *password;
    size_t password_len;
    int result;
    bool nouser;
};

static struct c2s *g_c2s;
static const char *stepping; /* authPassword value of the exchange being stepped */
static char mech_list[128];

/* ---- the auxprop plugin ---- */

static int auxprop_lookup(void *glob, sasl_server_params_t *sparams, unsigned flags,
                          const char *user, unsigned ulen)
{
    (void)glob;
    (void)user;
    (void)ulen;
    if (stepping == NULL)
        return SASL_NOUSER;
    const struct propval *cur = sparams->utils->prop_get(sparams->propctx);
    for (; cur != NULL && cur->name != NULL; cur++) {
        const char *name = cur->name;
        if (flags & SASL_AUXPROP_AUTHZID) {
            if (name[0] == '*')
                continue;
        } else {
            if (name[0] != '*')
                continue;
            name++;
        }
        if (strcmp(name, "authPassword") != 0)
            continue;
        if (cur->values != NULL) {
            if (!(flags & SASL_AUXPROP_OVERRIDE))
                continue;
            sparams->utils->prop_erase(sparams->propctx, cur->name);
        }
        sparams->utils->prop_set(sparams->propctx, cur->name, stepping, (int)strlen(stepping));
    }
    return SASL_OK;
}

static char auxprop_name[] = "parley";
static sasl_auxprop_plug_t auxprop_plug = {
    .auxprop_lookup = auxprop_lookup,
    .name = auxprop_name,
};

static int auxprop_init(const sasl_utils_t *utils, int max_version, int *out_version,
                        sasl_auxprop_plug_t **plug, const char *plugname)
{
    (void)utils;
    (void)plugname;
    if (max_version < SASL_AUXPROP_PLUG_VERSION)
        return SASL_BADVERS;
    *out_version = SASL_AUXPROP_PLUG_VERSION;
    *plug = &auxprop_plug;
    return SASL_OK;
}

static int on_getopt(void *context, const char *plugin, const char *option, const char **result,
                     unsigned *len)
{
    (void)context;
    (void)plugin;
    if (strcmp(option, "auxprop_plugin") == 0)
        *result = "parley";
    else if (strcmp(option, "mech_list") == 0)
        *result = mech_list;
    else
        return SASL_FAIL;
    if (len != NULL)
        *len = (unsigned)strlen(*result);
    return SASL_OK;
}

static int on_sasl_log(void *context, int level, const char *message)
{
    (void)context;
    if (level <= SASL_LOG_WARN)
        log_info("cyrus sasl: %s", message);
    else
        log_debug("cyrus sasl: %s", message);
    return SASL_OK;
}

/* The Cyrus mechanism of a configured name: "SCRAM-SHA-1-PLUS" gives
 * "SCRAM-SHA-1". */
static void base_mech(const char *mech, char *out, size_t len)
{
    size_t n = strlen(mech);
    if (n > 5 && strcmp(mech + n - 5, "-PLUS") == 0)
        n -= 5;
    snprintf(out, len, "%.*s", (int)n, mech);
}

int c2s_sasl_init(struct c2s *c)
{
    static const sasl_callback_t cbs[] = {
        {SASL_CB_GETOPT, (int (*)(void))(void (*)(void))on_getopt, NULL},
        {SASL_CB_LOG, (int (*)(void))(void (*)(void))on_sasl_log, NULL},
        {SASL_CB_LIST_END, NULL, NULL},
    };
    g_c2s = c;
    mech_list[0] = '\0';
    for (size_t i = 0; i < c->nmechs; i++) {
        char word[40];
        if (strncmp(c->mechs[i], "SCRAM-", 6) != 0)
            continue;
        /* Cyrus lists "X-PLUS" itself for a mechanism "X" that can bind. */
        base_mech(c->mechs[i], word, sizeof(word) - 1);
        strcat(word, " ");
        if (strstr(mech_list, word) == NULL)
            strncat(mech_list, word, sizeof(mech_list) - strlen(mech_list) - 1);
    }
    if (mech_list[0] == '\0')
        return 0; /* PLAIN only: Cyrus is not needed */
    int r = sasl_server_init(cbs, "parley-c2s");
    if (r == SASL_OK)
        r = sasl_auxprop_add_plugin("parley", auxprop_init);
    if (r != SASL_OK) {
        log_err("cyrus sasl: %s", sasl_errstring(r, NULL, NULL));
        return ERR_CONFIG;
    }
    /* Check that every configured SCRAM mechanism is really there. */
    sasl_conn_t *conn = NULL;
    const char *list = NULL;
    r = sasl_server_new("xmpp", "localhost", NULL, NULL, NULL, NULL, 0, &conn);
    if (r == SASL_OK)
        r = sasl_listmech(conn, NULL, "", " ", "", &list, NULL, NULL);
    int rc = 0;
    for (size_t i = 0; r == SASL_OK && i < c->nmechs; i++) {
        if (strncmp(c->mechs[i], "SCRAM-", 6) != 0)
            continue;
        char base[32];
        base_mech(c->mechs[i], base, sizeof(base));
        const char *p = strstr(list, base);
        size_t n = strlen(base);
        if (p == NULL || (p[n] != '\0' && p[n] != ' ')) {
            log_err("cyrus sasl: mechanism %s is not available (libsasl2-modules?)", c->mechs[i]);
            rc = ERR_CONFIG;
        }
    }
    if (r != SASL_OK) {
        log_err("cyrus sasl: %s", sasl_errstring(r, NULL, NULL));
        rc = ERR_CONFIG;
    }
    sasl_dispose(&conn);
    return rc;
}

/*
 * Cyrus seeds each connection's nonce generator from DEV_RANDOM (lib/
 * saslutil.c getranddata), opened once per connection, when its first
 * nonce is made; if the open fails it silently falls back to the pid and
 * the time: SCRAM nonces anyone can guess. DEV_RANDOM is fixed when Cyrus
 * is built (configure --with-devrandom; Cyrus's own default is
 * /dev/random): Debian's libsasl2-2 (2.1.28) uses /dev/urandom, the only
 * device named in its libsasl2.so.2. A Cyrus built for /dev/random needs
 * C2S_SASL_RANDOM changed (a configure check could find it). It cannot be
 * opened ahead of the jail for the connections to come, so after the jail
 * it must be readable, chroot or not; else c2s refuses to start. Only
 * with a SCRAM mechanism configured: PLAIN alone never reaches Cyrus.
 */
#define C2S_SASL_RANDOM "/dev/urandom"

int c2s_sasl_check_random(void)
{
    if (mech_list[0] == '\0')
        return 0; /* PLAIN only: no Cyrus, no nonces */
    unsigned char b[16];
    int fd = open(C2S_SASL_RANDOM, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, b, sizeof(b)) : -1;
    int e = errno;
    if (fd >= 0)
        close(fd);
    mem_wipe(b, sizeof(b));
    if (n == (ssize_t)sizeof(b))
        return 0;
    log_err("cyrus sasl makes its SCRAM nonces from " C2S_SASL_RANDOM ", which cannot be read "
            "here (%s): without it they would be guessable. In a <chroot>, create it there "
            "(mknod -m 444 <chroot>" C2S_SASL_RANDOM " c 1 9)",
            n >= 0 ? "short read" : strerror(e));
    return ERR_CONFIG;
}

void c2s_sasl_done(void)
{
    if (g_c2s != NULL && mech_list[0] != '\0')
        sasl_server_done();
    g_c2s = NULL;
}

/* ---- per client ---- */

static const EVP_MD *end_point_md(SSL *ssl);

static bool offered(const struct c2s_client *cl, const char *mech)
{
    size_t n = strlen(mech);
    bool plus = n > 5 && strcmp(mech + n - 5, "-PLUS") == 0;
    if ((strcmp(mech, "PLAIN") == 0 || plus) && !stream_is_tls(cl->s))
        return false;
    /* -PLUS only where our certificate (the one SNI chose) has a
     * tls-server-end-point: not for Ed25519 or Ed448 ones. */
    if (plus && (!stream_is_secure(cl->s) || end_point_md(stream_ssl(cl->s)) == NULL))
        return false;
    for (size_t i = 0; i < cl->c2s->nmechs; i++)
        if (strcmp(cl->c2s->mechs[i], mech) == 0)
            return true;
    return false;
}

static bool plus_offered(const struct c2s_client *cl);

void c2s_sasl_features(struct c2s_client *cl, struct buf *out)
{
    buf_append_str(out, "<mechanisms xmlns='" C2S_NS_SASL "'>");
    for (size_t i = 0; i < cl->c2s->nmechs; i++)
        if (offered(cl, cl->c2s->mechs[i]))
            buf_printf(out, "<mechanism>%s</mechanism>", cl->c2s->mechs[i]);
    buf_append_str(out, "</mechanisms>");
    if (plus_offered(cl))
        buf_append_str(out, "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
                            "<channel-binding type='tls-server-end-point'/>"
                            "</sasl-channel-binding>");
}

static bool plus_offered(const struct c2s_client *cl)
{
    for (size_t i = 0; i < cl->c2s->nmechs; i++)
        if (strstr(cl->c2s->mechs[i], "-PLUS") != NULL && offered(cl, cl->c2s->mechs[i]))
            return true;
    return false;
}

/* RFC 5929 §4.1: tls-server-end-point hashes our certificate with its
 * signature's hash (SHA-256 for MD5 and SHA-1). A signature algorithm
 * without one single hash (Ed25519, Ed448) leaves it undefined: NULL.
 * X509_get_signature_info, not the signature OID: RSA-PSS has one OID for
 * every hash, the hash is in its parameters. */
static const EVP_MD *end_point_md(SSL *ssl)
{
    X509 *cert = ssl != NULL ? SSL_get_certificate(ssl) : NULL;
    int md_nid = NID_undef;
    if (cert == NULL || !X509_get_signature_info(cert, &md_nid, NULL, NULL, NULL) ||
        md_nid == NID_undef)
        return NULL;
    if (md_nid == NID_md5 || md_nid == NID_sha1)
        md_nid = NID_sha256;
    return EVP_get_digestbynid(md_nid);
}

/* The binding data: the length, 0 if unavailable. */
static unsigned server_end_point(SSL *ssl, unsigned char *out)
{
    const EVP_MD *md = end_point_md(ssl);
    unsigned len = 0;
    if (md == NULL || X509_digest(SSL_get_certificate(ssl), md, out, &len) != 1)
        return 0;
    return len;
}

void c2s_sasl_free(struct c2s_client *cl)
{
    struct c2s_sasl *s = cl->sasl;
    if (s == NULL)
        return;
    if (s->slot)
        cl->c2s->nplain_jobs--;
    if (s->conn != NULL)
        sasl_dispose(&s->conn);
    if (s->authpw != NULL)
        mem_freezero(s->authpw, strlen(s->authpw));
    if (s->first != NULL)
        mem_freezero(s->first, s->first_len);
    if (s->password != NULL)
        mem_freezero(s->password, s->password_len);
    free(s->user);
    free(s);
    cl->sasl = NULL;
}

static void write_sasl(struct c2s_client *cl, const char *name, const unsigned char *data,
                       size_t len)
{
    struct buf b = BUF_INIT;
    buf_printf(&b, "<%s xmlns='" C2S_NS_SASL "'", name);
    if (data != NULL) {
        buf_append_byte(&b, '>');
        c2s_saslmsg_b64_encode(data, len, &b);
        buf_printf(&b, "</%s>", name);
    } else {
        buf_append_str(&b, "/>");
    }
    stream_write(cl->s, b.data, b.len);
    buf_free(&b);
}

static void on_delay_end(uv_timer_t *t)
{
    struct c2s_client *cl = t->data;
    uv_close((uv_handle_t *)t, (uv_close_cb)free);
    cl->delay = NULL;
    if (cl->closed || cl->state == CL_DOWN)
        return;
    stream_write_str(cl->s, "<failure xmlns='" C2S_NS_SASL "'><not-authorized/></failure>");
    if (cl->auth_failures >= (unsigned)cl->c2s->cfg.auth_attempts) {
        char ip[INET6_ADDRSTRLEN] = "?";
        inet_ntop(cl->iplen == 4 ? AF_INET : AF_INET6, cl->ip, ip, sizeof(ip));
        log_info("client %s: %u failed authentications, closing", ip, cl->auth_failures);
        c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "too many failed authentications");
        return;
    }
    cl->state = CL_OPEN;
    stream_resume(cl->s);
}

/* A failed authentication: not-authorized after the address's delay. */
static void fail_auth(struct c2s_client *cl, const char *why)
{
    struct c2s *c = cl->c2s;
    char ip[INET6_ADDRSTRLEN] = "?";
    inet_ntop(cl->iplen == 4 ? AF_INET : AF_INET6, cl->ip, ip, sizeof(ip));
    log_info("client %s: authentication failed: %s", ip, why);
    c2s_sasl_free(cl);
    cl->auth_failures++;
    struct c2s_ip *a = c2s_ip_get(c, cl);
    uint64_t now = uv_now(c->loop);
    if (a->failures > 0 && now - a->fail_stamp > 8 * c->cfg.auth_delay_max_ms)
        a->failures = 0;
    a->failures++;
    a->fail_stamp = now;
    uint64_t delay = c->cfg.auth_delay_ms;
    for (unsigned i = 1; i < a->failures && delay < c->cfg.auth_delay_max_ms; i++)
        delay *= 2;
    if (delay > c->cfg.auth_delay_max_ms)
        delay = c->cfg.auth_delay_max_ms;
    cl->state = CL_AUTHING;
    stream_pause(cl->s); /* nothing more is read until the answer */
    cl->delay = xmalloc(sizeof(*cl->delay));
    uv_timer_init(c->loop, cl->delay);
    cl->delay->data = cl;
    uv_timer_start(cl->delay, on_delay_end, delay, 0);
}

/* A failure that is not the client's fault or not a wrong password, with
 * an optional human-readable text (RFC 6120 §6.4.5). */
static void fail_now_text(struct c2s_client *cl, const char *cond, const char *text)
{
    c2s_sasl_free(cl);
    cl->state = CL_OPEN;
    struct buf b = BUF_INIT;
    buf_printf(&b, "<failure xmlns='" C2S_NS_SASL "'><%s/>", cond);
    if (text != NULL)
        buf_printf(&b, "<text xml:lang='en'>%s</text>", text);
    buf_append_str(&b, "</failure>");
    stream_write(cl->s, b.data, b.len);
    buf_free(&b);
}

static void fail_now(struct c2s_client *cl, const char *cond)
{
    fail_now_text(cl, cond, NULL);
}

static void succeed(struct c2s_client *cl, const unsigned char *data, size_t len)
{
    struct c2s_sasl *s = cl->sasl;
    char ip[INET6_ADDRSTRLEN] = "?";
    inet_ntop(cl->iplen == 4 ? AF_INET : AF_INET6, cl->ip, ip, sizeof(ip));
    log_info("client %s: authenticated as %s@%s (%s)", ip, s->user, cl->domain->name, s->mech);
    write_sasl(cl, "success", data, data != NULL ? len : 0);
    char *user = xstrdup(s->user);
    c2s_sasl_free(cl);
    c2s_client_authed(cl, user);
    free(user);
}

/* name (up to any '@'), nodeprepped, is the user whose keys were fetched:
 * Cyrus reports the client's name as sent ("Alice"), we fetched "alice". */
static bool same_user(const struct c2s_sasl *s, const char *name, size_t len)
{
    const char *at = memchr(name, '@', len);
    char *node = NULL;
    if (jid_prep_node(name, at != NULL ? (size_t)(at - name) : len, &node, NULL) != 0)
        return false;
    bool ok = strcmp(node, s->user) == 0;
    free(node);
    return ok;
}

static bool authzid_ok(struct c2s_client *cl, const char *authzid, size_t len);

/*
 * Cyrus's proxy check, replacing its default (authzid byte-equal to the
 * authentication name, which refuses "alice@domain" for "alice"): the
 * authzid must be empty, the name itself, or the bare JID of the user, as
 * begin() already checked it.
 */
static int on_proxy_policy(sasl_conn_t *conn, void *context, const char *requested_user,
                           unsigned rlen, const char *auth_identity, unsigned alen,
                           const char *def_realm, unsigned urlen, struct propctx *propctx)
{
    struct c2s_client *cl = context;
    (void)def_realm;
    (void)urlen;
    (void)propctx;
    bool ok = cl->sasl != NULL && same_user(cl->sasl, auth_identity, alen) &&
              (rlen == 0 || (rlen == alen && memcmp(requested_user, auth_identity, alen) == 0) ||
               authzid_ok(cl, requested_user, rlen));
    if (ok)
        return SASL_OK;
    sasl_seterror(conn, SASL_NOLOG, "authorization identity refused");
    return SASL_BADAUTH;
}

/* The result of one Cyrus step. */
static void cyrus_result(struct c2s_client *cl, int r, const char *out, unsigned outlen)
{
    struct c2s_sasl *s = cl->sasl;
    if (r == SASL_CONTINUE) {
        write_sasl(cl, "challenge", (const unsigned char *)out, outlen);
        return;
    }
    if (r == SASL_OK) {
        /* The identity Cyrus authenticated must be the one we fetched. */
        const void *name = NULL;
        if (sasl_getprop(s->conn, SASL_USERNAME, &name) != SASL_OK || name == NULL ||
            !same_user(s, name, strlen(name))) {
            fail_auth(cl, "username mismatch");
            return;
        }
        succeed(cl, outlen > 0 ? (const unsigned char *)out : NULL, outlen);
        return;
    }
    fail_auth(cl, s->nouser ? "no such user" : sasl_errstring(r, NULL, NULL));
}

static void plain_work(uv_work_t *req)
{
    struct plain_job *j = req->data;
    j->result = scram_keys_verify(&j->keys, j->password, j->password_len);
}

static void plain_after(uv_work_t *req, int status)
{
    struct plain_job *j = req->data;
    struct c2s_client *cl = j->cl;
    int result = status == 0 && !j->nouser ? j->result : ERR_AUTH;
    bool nouser = j->nouser;
    mem_freezero(j->password, j->password_len);
    mem_wipe(&j->keys, sizeof(j->keys));
    free(j);
    cl->c2s->nplain_jobs--;
    if (!c2s_client_unhold(cl) || cl->state == CL_DOWN || cl->sasl == NULL)
        return;
    cl->sasl->busy = false;
    if (result == 0)
        succeed(cl, NULL, 0);
    else
        fail_auth(cl, nouser ? "no such user" : "wrong password");
}

static int keys_from(const struct storage_result *res, enum scram_hash hash, struct scram_keys *k)
{
    memset(k, 0, sizeof(*k));
    k->hash = hash;
    k->key_len = scram_hash_len(hash);
    size_t len;
    int64_t iter = 0;
    const unsigned char *p = storage_result_bytea(res, 0, STORAGE_COL_CRED_SALT, &len);
    if (p == NULL || len == 0 || len > SCRAM_SALT_MAX)
        return ERR_INVAL;
    memcpy(k->salt, p, len);
    k->salt_len = len;
    if (storage_result_int64(res, 0, STORAGE_COL_CRED_ITERATIONS, &iter) != 0 ||
        iter < SCRAM_ITER_MIN || iter > SCRAM_ITER_MAX)
        return ERR_INVAL;
    k->iterations = (unsigned)iter;
    p = storage_result_bytea(res, 0, STORAGE_COL_CRED_STORED_KEY, &len);
    if (p == NULL || len != k->key_len)
        return ERR_INVAL;
    memcpy(k->stored_key, p, len);
    p = storage_result_bytea(res, 0, STORAGE_COL_CRED_SERVER_KEY, &len);
    if (p == NULL || len != k->key_len)
        return ERR_INVAL;
    memcpy(k->server_key, p, len);
    return 0;
}

/* Keys for a user that does not exist: the salt is derived from the name
 * under a per-process key, so repeated attempts see the same salt, as for
 * a real account; the keys are random and match no password. */
static void mock_keys(const char *user, enum scram_hash hash, struct scram_keys *k)
{
    static unsigned char key[32];
    static bool have_key;
    if (!have_key) {
        rand_bytes(key, sizeof(key));
        have_key = true;
    }
    unsigned char mac[SCRAM_KEY_MAX];
    memset(k, 0, sizeof(*k));
    k->hash = hash;
    k->key_len = scram_hash_len(hash);
    scram_hmac(SCRAM_SHA256, key, sizeof(key), user, strlen(user), mac);
    memcpy(k->salt, mac, SCRAM_SALT_LEN);
    k->salt_len = SCRAM_SALT_LEN;
    k->iterations = SCRAM_ITER_DEFAULT;
    rand_bytes(k->stored_key, k->key_len);
    rand_bytes(k->server_key, k->key_len);
}

static void on_creds(void *arg, int err, const struct storage_result *res)
{
    struct c2s_client *cl = arg;
    if (!c2s_client_unhold(cl) || cl->state == CL_DOWN || cl->sasl == NULL)
        return;
    struct c2s_sasl *s = cl->sasl;
    s->busy = false;
    if (err != 0) {
        log_warn("credentials of %s@%s: %s", s->user, cl->domain->name, err_str(err));
        fail_now(cl, "temporary-auth-failure");
        return;
    }
    /* An unknown user is run against made-up keys, so that the exchange
     * looks like a wrong password (RFC 5802 §5.1): no oracle for which
     * accounts exist, in SCRAM's messages or in PLAIN's timing. */
    struct scram_keys k;
    s->nouser = storage_result_rows(res) != 1;
    if (s->nouser) {
        mock_keys(s->user, s->hash, &k);
    } else if (keys_from(res, s->hash, &k) != 0) {
        mem_wipe(&k, sizeof(k));
        fail_now(cl, "temporary-auth-failure");
        return;
    }
    if (s->plain) {
        struct plain_job *j = xcalloc(1, sizeof(*j));
        j->keys = k;
        mem_wipe(&k, sizeof(k));
        j->nouser = s->nouser;
        j->req.data = j;
        j->cl = cl;
        j->password = s->password;
        j->password_len = s->password_len;
        s->password = NULL;
        s->busy = true;
        s->slot = false; /* the job holds the slot now */
        cl->holds++;
        uv_queue_work(cl->c2s->loop, &j->req, plain_work, plain_after);
        return;
    }
    struct buf b = BUF_INIT;
    char base[32];
    base_mech(s->mech, base, sizeof(base));
    buf_printf(&b, "%s$%u:", base, k.iterations);
    c2s_saslmsg_b64_encode(k.salt, k.salt_len, &b);
    buf_append_byte(&b, '$');
    c2s_saslmsg_b64_encode(k.stored_key, k.key_len, &b);
    buf_append_byte(&b, ':');
    c2s_saslmsg_b64_encode(k.server_key, k.key_len, &b);
    buf_append_byte(&b, '\0');
    mem_wipe(&k, sizeof(k));
    s->authpw = b.data;

    s->cbs[0] =
        (sasl_callback_t){SASL_CB_PROXY_POLICY, (int (*)(void))(void (*)(void))on_proxy_policy, cl};
    s->cbs[1] = (sasl_callback_t){SASL_CB_LIST_END, NULL, NULL};
    int r = sasl_server_new("xmpp", cl->domain->name, NULL, NULL, NULL, s->cbs, SASL_SUCCESS_DATA,
                            &s->conn);
    if (r != SASL_OK) {
        log_warn("cyrus sasl: %s", sasl_errstring(r, NULL, NULL));
        fail_now(cl, "temporary-auth-failure");
        return;
    }
    sasl_security_properties_t sp = {.maxbufsize = 0, .max_ssf = 0};
    sasl_setprop(s->conn, SASL_SEC_PROPS, &sp);
    /* Only where -PLUS was offered: otherwise a "y" client is right. */
    unsigned cblen = plus_offered(cl) ? server_end_point(stream_ssl(cl->s), s->cbdata) : 0;
    if (cblen > 0) {
        s->cb.name = "tls-server-end-point";
        s->cb.critical = strstr(s->mech, "-PLUS") != NULL;
        s->cb.len = cblen;
        s->cb.data = s->cbdata;
        sasl_setprop(s->conn, SASL_CHANNEL_BINDING, &s->cb);
    }
    const char *out = NULL;
    unsigned outlen = 0;
    stepping = s->authpw;
    r = sasl_server_start(s->conn, s->mech, (const char *)s->first, (unsigned)s->first_len, &out,
                          &outlen);
    stepping = NULL;
    mem_freezero(s->first, s->first_len);
    s->first = NULL;
    s->started = true;
    cyrus_result(cl, r, out, outlen);
}

/* Fetch the user's keys; the exchange goes on in on_creds. */
static void fetch(struct c2s_client *cl, enum scram_hash hash)
{
    struct c2s_sasl *s = cl->sasl;
    char *jid = xmalloc(strlen(s->user) + strlen(cl->domain->name) + 2);
    sprintf(jid, "%s@%s", s->user, cl->domain->name);
    s->hash = hash;
    int rc = storage_creds_get(cl->c2s->st, jid,
                               hash == SCRAM_SHA1 ? STORAGE_SCRAM_SHA1 : STORAGE_SCRAM_SHA256,
                               on_creds, cl);
    free(jid);
    if (rc != 0) {
        fail_now(cl, "temporary-auth-failure");
        return;
    }
    s->busy = true;
    cl->holds++;
}

/* authzid, if given, must be the bare JID being authenticated. */
static bool authzid_ok(struct c2s_client *cl, const char *authzid, size_t len)
{
    if (len == 0)
        return true;
    struct jid *j = NULL;
    if (jid_parse(authzid, len, &j) != 0)
        return false;
    bool ok = j->resource == NULL && j->node != NULL && strcmp(j->node, cl->sasl->user) == 0 &&
              strcmp(j->domain, cl->domain->name) == 0;
    jid_free(j);
    return ok;
}

static void begin(struct c2s_client *cl, const unsigned char *msg, size_t len)
{
    struct c2s_sasl *s = cl->sasl;
    char *node = NULL;
    if (s->plain) {
        struct c2s_plain p;
        if (c2s_saslmsg_plain(msg, len, &p) != 0 || p.passwd_len > SCRAM_PASSWORD_MAX) {
            fail_now(cl, "malformed-request");
            return;
        }
        if (jid_prep_node((const char *)p.authcid, p.authcid_len, &node, NULL) != 0) {
            fail_auth(cl, "bad username");
            return;
        }
        s->user = node;
        if (!authzid_ok(cl, (const char *)p.authzid, p.authzid_len)) {
            fail_now(cl, "invalid-authzid");
            return;
        }
        if (cl->c2s->nplain_jobs >= (size_t)cl->c2s->cfg.plain_jobs) {
            log_debug("PLAIN: %zu checks under way (limits/plain-jobs): temporary-auth-failure",
                      cl->c2s->nplain_jobs);
            fail_now_text(cl, "temporary-auth-failure", "too many logins at once: try again");
            return;
        }
        cl->c2s->nplain_jobs++;
        s->slot = true;
        s->password = xmemdup(p.passwd, p.passwd_len);
        s->password_len = p.passwd_len;
        fetch(cl, SCRAM_SHA256);
        return;
    }
    struct c2s_scram_first f;
    if (c2s_saslmsg_scram_first(msg, len, &f) != 0) {
        c2s_saslmsg_scram_first_free(&f);
        fail_now(cl, "malformed-request");
        return;
    }
    int rc = jid_prep_node(f.user, strlen(f.user), &node, NULL);
    if (rc != 0) {
        c2s_saslmsg_scram_first_free(&f);
        fail_auth(cl, "bad username");
        return;
    }
    s->user = node;
    bool az = f.authzid == NULL || authzid_ok(cl, f.authzid, strlen(f.authzid));
    c2s_saslmsg_scram_first_free(&f);
    if (!az) {
        fail_now(cl, "invalid-authzid");
        return;
    }
    s->first = xmemdup(msg, len);
    s->first_len = len;
    fetch(cl, s->hash);
}

static void step(struct c2s_client *cl, const unsigned char *msg, size_t len)
{
    struct c2s_sasl *s = cl->sasl;
    const char *out = NULL;
    unsigned outlen = 0;
    stepping = s->authpw;
    int r = sasl_server_step(s->conn, (const char *)msg, (unsigned)len, &out, &outlen);
    stepping = NULL;
    cyrus_result(cl, r, out, outlen);
}

/* One SASL element; text and tlen: the response text if it was read (a copy
 * in el's arena when it came in pieces). */
static void element(struct c2s_client *cl, struct xml_node *el, const char **text, size_t *tlen)
{
    if (cl->state != CL_OPEN && cl->state != CL_AUTHING) {
        c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "SASL out of order");
        return;
    }
    /* A client waits for our answer (challenge, success, failure) before
     * it sends more; a job in flight still refers to this exchange. */
    if (cl->delay != NULL || (cl->sasl != NULL && cl->sasl->busy)) {
        c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "SASL element before the server's answer");
        return;
    }
    if (strcmp(el->name, "abort") == 0) {
        c2s_sasl_free(cl);
        cl->state = CL_OPEN;
        stream_write_str(cl->s, "<failure xmlns='" C2S_NS_SASL "'><aborted/></failure>");
        return;
    }
    bool is_auth = strcmp(el->name, "auth") == 0;
    if (!is_auth && strcmp(el->name, "response") != 0) {
        c2s_client_fail(cl, XML_SE_UNSUPPORTED_STANZA_TYPE, NULL);
        return;
    }
    if (!is_auth && cl->sasl == NULL) {
        c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "SASL response out of order");
        return;
    }
    if (is_auth) {
        const char *mech = xml_get_attr(el, "mechanism");
        c2s_sasl_free(cl);
        if (mech == NULL || !offered(cl, mech)) {
            stream_write_str(cl->s,
                             "<failure xmlns='" C2S_NS_SASL "'><invalid-mechanism/></failure>");
            return;
        }
        cl->sasl = xcalloc(1, sizeof(*cl->sasl));
        snprintf(cl->sasl->mech, sizeof(cl->sasl->mech), "%s", mech);
        cl->sasl->plain = strcmp(mech, "PLAIN") == 0;
        char base[32];
        base_mech(mech, base, sizeof(base));
        scram_mech_parse(base, &cl->sasl->hash);
        cl->state = CL_AUTHING;
    }
    *text = xml_text(el, tlen);
    unsigned char *msg = xmalloc(C2S_SASLMSG_MAX);
    size_t len = 0;
    int rc = c2s_saslmsg_b64_decode(*text, *tlen, msg, C2S_SASLMSG_MAX, &len);
    if (rc != 0) {
        /* A bad last quantum leaves the decoded part of it in msg. */
        mem_freezero(msg, C2S_SASLMSG_MAX);
        fail_now(cl, rc == ERR_LIMIT ? "malformed-request" : "incorrect-encoding");
        return;
    }
    if (is_auth && *tlen == 0) {
        /* No initial response: ask for it with an empty challenge. */
        free(msg);
        write_sasl(cl, "challenge", NULL, 0);
        return;
    }
    if (cl->sasl->user == NULL)
        begin(cl, msg, len);
    else if (cl->sasl->started)
        step(cl, msg, len);
    else
        c2s_client_fail(cl, XML_SE_POLICY_VIOLATION, "SASL response before the challenge");
    mem_freezero(msg, C2S_SASLMSG_MAX);
}

void c2s_sasl_element(struct c2s_client *cl, struct xml_node *el)
{
    const char *text = NULL;
    size_t tlen = 0;
    element(cl, el, &text, &tlen);
    /* The response (PLAIN: the password in base64) must not stay in the
     * arena after the caller frees el: wipe the text, whatever became of
     * the element, and the copy xml_text made of text in pieces. */
    if (tlen > 0)
        mem_wipe((char *)text, tlen);
    for (struct xml_node *c = el->children; c != NULL; c = c->next)
        if (c->type == XML_TEXT)
            mem_wipe((char *)c->text, c->text_len);
}
