/*
 * router.c - the router as a whole: its state, the listeners, accepting,
 * reloading the component table, stopping.
 *
 * Listeners are bound in pre_jail (as root if started so): a Unix socket
 * (stale socket file removed first, created with the configured mode, its
 * owner set, never through a symlink, to the configured user and to
 * <unix group='…'> (else the user's group), so that the daemons whose
 * users are in that group can connect)
 * and any number of TCP addresses, each optionally with direct TLS (the
 * server context is loaded here, while the key is readable).
 *
 * Accepting on the Unix socket goes through a short-lived uv_pipe_t so that
 * the peer's credentials (SO_PEERCRED) can be read from its fd; the fd is
 * then duplicated into a common/stream (the stream API does not expose its
 * fd). Over max-connections a connection is accepted and closed at once
 * (leaving it in the backlog would stall the listener), logged once per
 * episode.
 *
 * Reload (HUP) reads the component table again; on any error the old one
 * stays. Connections whose component is no longer in the table are closed
 * (not-authorized); those whose entry changed in anything but the secret
 * (flags, uid, domains) are closed with the reset stream error so that they
 * reconnect under the new rules; a changed secret alone keeps the
 * connection (it proved the secret valid when it connected; the new one
 * applies from its next handshake). New names and domains take effect at
 * once. router.xml itself (listeners, limits) is read at start only.
 *
 * The router's loop thread.
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/tls.h"
#include "router/router.h"

struct router_listener {
    struct router_listener *next;
    struct router *r;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } u;
    bool is_unix;
    SSL_CTX *tls;
    char desc[160];
};

/* ---- state ---- */

struct router *router_new(const struct router_config *cfg, struct users *users)
{
    struct router *r = xcalloc(1, sizeof(*r));
    r->cfg = *cfg;
    r->users = users;
    r->routes = route_table_new();
    r->jids = jid_cache_new(ROUTER_JID_CACHE);
    stream_opts_default(&r->sopts);
    r->sopts.read_cap = STREAM_READ_MAX;
    r->sopts.out_max = cfg->queue_max;
    r->sopts.out_high = cfg->queue_max / 2;
    r->sopts.out_low = cfg->queue_max / 8;
    /* The router bounces what does not fit (resource-constraint) rather
     * than stop reading: a component congested towards us while we are
     * congested towards it would otherwise deadlock the link. */
    r->sopts.read_while_congested = 1;
    r->sopts.handshake_ms = cfg->handshake_ms;
    r->sopts.close_ms = 3000;
    r->sopts.limits.max_stanza_bytes = cfg->stanza_size;
    r->sopts.limits.max_text_len = cfg->stanza_size;
    return r;
}

void router_free(struct router *r)
{
    if (r == NULL)
        return;
    /* Memory connections of tests; stream ones are gone with the loop. */
    while (r->conns != NULL)
        conn_free_memory(r->conns);
    users_free(r->users);
    route_table_free(r->routes);
    jid_cache_free(r->jids);
    stats_free(r);
    buf_free(&r->scratch);
    for (size_t i = 0; i < r->ntcp; i++) {
        free(r->tcp[i].address);
        free(r->tcp[i].cert);
        free(r->tcp[i].key);
    }
    free(r->tcp);
    /* Listeners left after a failed start: the loop closed their handles. */
    while (r->listeners != NULL) {
        struct router_listener *l = r->listeners;
        r->listeners = l->next;
        tls_ctx_free(l->tls);
        free(l);
    }
    free(r);
}

void router_set_users(struct router *r, struct users *u)
{
    struct users *old = r->users;
    for (struct conn *c = r->conns; c != NULL; c = c->next) {
        if (c->state != CONN_READY)
            continue;
        const struct users_entry *now = users_find(u, c->name);
        const struct users_entry *was = old ? users_find(old, c->name) : NULL;
        if (now == NULL) {
            log_notice("component %s: removed from the component table: disconnecting", c->name);
            conn_fail(c, XML_SE_NOT_AUTHORIZED, "removed from the component table");
        } else if (was == NULL || !users_same_acl(was, now)) {
            log_notice("component %s: its entry changed: disconnecting it to reconnect", c->name);
            conn_fail(c, XML_SE_RESET, "component settings changed");
        }
    }
    r->users = u;
    users_free(old);
}

void router_reload(struct router *r)
{
    char err[512];
    struct users *u;
    if (users_load(r->cfg.users_file, &u, err, sizeof(err)) != 0) {
        log_err("reload failed, keeping the component table: %s", err);
        return;
    }
    router_set_users(r, u);
    log_notice("component table reloaded: %zu components", users_count(u));
}

/* ---- configuration ---- */

int router_configure(struct router *r, struct config *cfg)
{
    int rc = 0;
    /* A stanza is queued whole: under a smaller queue one of the largest
     * could never be delivered, only returned. */
    if (r->cfg.queue_max < r->cfg.stanza_size) {
        log_err("<limits><queue-max> (%zu) is below <limits><stanza-size> (%zu): a stanza of "
                "that size could never be queued",
                r->cfg.queue_max, r->cfg.stanza_size);
        rc = ERR_CONFIG;
    }
    for (struct xml_node *t = r->cfg.tcp; t != NULL; t = xml_next(t, NULL, "tcp")) {
        const char *address = NULL, *cert = NULL, *key = NULL;
        int port = 0;
        const struct config_entry table[] = {
            CONFIG_STRING("@address", 0, "127.0.0.1", &address),
            CONFIG_INT("@port", CONFIG_REQUIRED, NULL, 1, 65535, &port),
            CONFIG_PATH("tls@cert", 0, NULL, &cert),
            CONFIG_PATH("tls@key", 0, NULL, &key),
            CONFIG_END,
        };
        if (config_apply(cfg, t, table) != 0) {
            rc = ERR_CONFIG;
            continue;
        }
        if (xml_child(t, NULL, "tls") != NULL && (cert == NULL || key == NULL)) {
            log_err("%s: <listen><tcp port='%d'><tls>: give both cert and key", config_file(cfg),
                    port);
            rc = ERR_CONFIG;
            continue;
        }
        struct sockaddr_storage ss;
        if (uv_ip4_addr(address, port, (struct sockaddr_in *)&ss) != 0 &&
            uv_ip6_addr(address, port, (struct sockaddr_in6 *)&ss) != 0) {
            log_err("%s: <listen><tcp>: '%s' is not an IPv4 or IPv6 address", config_file(cfg),
                    address);
            rc = ERR_CONFIG;
            continue;
        }
        r->tcp = xreallocarray(r->tcp, r->ntcp + 1, sizeof(*r->tcp));
        struct router_tcp *rt = &r->tcp[r->ntcp++];
        rt->address = xstrdup(address);
        rt->port = port;
        rt->cert = cert ? xstrdup(cert) : NULL;
        rt->key = key ? xstrdup(key) : NULL;
    }
    if (r->cfg.unix_path != NULL) {
        char *end;
        unsigned long mode = strtoul(r->cfg.unix_mode, &end, 8);
        if (*end != '\0' || r->cfg.unix_mode[0] == '\0' || mode > 0777) {
            log_err("%s: <listen><unix mode='%s'>: not an octal mode", config_file(cfg),
                    r->cfg.unix_mode);
            rc = ERR_CONFIG;
        }
    }
    if (rc == 0 && r->ntcp == 0 && r->cfg.unix_path == NULL) {
        log_err("%s: <listen>: no <unix> and no <tcp>: nothing to listen on", config_file(cfg));
        rc = ERR_CONFIG;
    }
    if (rc != 0)
        return rc;
    char err[512];
    return users_load(r->cfg.users_file, &r->users, err, sizeof(err));
}

/* ---- accepting ---- */

size_t router_max_pending(const struct router *r)
{
    size_t half = (size_t)r->cfg.max_conns / 2;
    return half > 0 ? half : 1;
}

static void on_handle_freed(uv_handle_t *h)
{
    free(h);
}

/* Over a budget: take the connection off the backlog and drop it. */
static void refuse_conn(struct router_listener *l, const char *why)
{
    struct router *r = l->r;
    uv_handle_t *h;
    if (l->is_unix) {
        uv_pipe_t *p = xmalloc(sizeof(*p));
        uv_pipe_init(l->u.stream.loop, p, 0);
        h = (uv_handle_t *)p;
    } else {
        uv_tcp_t *t = xmalloc(sizeof(*t));
        uv_tcp_init(l->u.stream.loop, t);
        h = (uv_handle_t *)t;
    }
    uv_accept(&l->u.stream, (uv_stream_t *)h);
    uv_close(h, on_handle_freed);
    if (!r->refusing_logged) {
        r->refusing_logged = true;
        log_warn("%s: %s: refusing connections", l->desc, why);
    }
}

static void accept_unix(struct router_listener *l)
{
    struct router *r = l->r;
    uv_pipe_t *p = xmalloc(sizeof(*p));
    uv_pipe_init(l->u.stream.loop, p, 0);
    int fd = -1;
    uv_os_fd_t ufd;
    if (uv_accept(&l->u.stream, (uv_stream_t *)p) == 0 && uv_fileno((uv_handle_t *)p, &ufd) == 0)
        fd = fcntl(ufd, F_DUPFD_CLOEXEC, 0);
    bool has_cred = false;
    uid_t uid = 0;
    if (fd >= 0) {
        struct ucred cred;
        socklen_t len = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof(cred)) {
            has_cred = true;
            uid = cred.uid;
        }
    }
    uv_close((uv_handle_t *)p, on_handle_freed);
    if (fd < 0) {
        log_info("%s: accept failed", l->desc);
        return;
    }
    struct stream *s;
    if (stream_adopt_fd(l->u.stream.loop, fd, 1, &r->sopts, NULL, NULL, &s) != 0)
        return;
    conn_new_stream(r, s, true, has_cred, uid);
}

static void accept_tcp(struct router_listener *l)
{
    struct router *r = l->r;
    struct stream *s;
    if (stream_accept(&l->u.stream, &r->sopts, NULL, NULL, &s) != 0)
        return;
    if (l->tls != NULL && stream_starttls(s, l->tls, STREAM_TLS_SERVER, NULL) != 0) {
        log_info("%s: cannot start TLS", l->desc);
        stream_abort(s);
        return;
    }
    conn_new_stream(r, s, false, false, 0);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct router_listener *l = server->data;
    struct router *r = l->r;
    if (status < 0) {
        log_warn("%s: %s", l->desc, uv_strerror(status));
        return;
    }
    /* Each listener kind has its own budget, and connections still before
     * their handshake a smaller one, so unauthenticated peers on TCP can
     * neither lock out the daemons on the Unix socket nor take every slot
     * from authenticated components. */
    if (r->nconns_by[l->is_unix] >= (size_t)r->cfg.max_conns) {
        refuse_conn(l, "max-connections reached");
        return;
    }
    if (r->npending_by[l->is_unix] >= router_max_pending(r)) {
        refuse_conn(l, "too many connections before their handshake");
        return;
    }
    if (r->refusing_logged) {
        r->refusing_logged = false;
        log_notice("%s: accepting connections again", l->desc);
    }
    if (l->is_unix)
        accept_unix(l);
    else
        accept_tcp(l);
}

/* ---- listening ---- */

static struct router_listener *listener_new(struct router *r)
{
    struct router_listener *l = xcalloc(1, sizeof(*l));
    l->r = r;
    l->next = r->listeners;
    r->listeners = l;
    return l;
}

/* The ids the configured <user>/<group> run as (for the socket's owner). */
static bool socket_owner(struct config *cfg, uid_t *uid, gid_t *gid)
{
    struct xml_node *root = config_root(cfg);
    struct xml_node *u = xml_child(root, NULL, "user"), *g = xml_child(root, NULL, "group");
    if (u == NULL)
        return false;
    const struct passwd *pw = getpwnam(xml_text(u, NULL));
    if (pw == NULL)
        return false;
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    if (g != NULL) {
        const struct group *gr = getgrnam(xml_text(g, NULL));
        if (gr == NULL)
            return false;
        *gid = gr->gr_gid;
    }
    return true;
}

/*
 * Give the socket just bound at path to uid:gid (-1: unchanged). The
 * directory may be writable by the router's user, who could swap the name
 * for a symlink meanwhile: lchown never follows one (a swapped-in symlink
 * is what changes owner, harmlessly), and the name must still be the
 * socket bound (same inode, a socket) afterwards, else start-up fails.
 * (Hard links to others' files are refused by fs.protected_hardlinks.)
 * 0, ERR_SYS (errno set) or ERR_PERM (the name is not our socket).
 */
static int listen_unix_chown(const char *path, uid_t uid, gid_t gid)
{
    struct stat before, after;
    if (lstat(path, &before) != 0)
        return ERR_SYS;
    if (!S_ISSOCK(before.st_mode))
        return ERR_PERM;
    if (lchown(path, uid, gid) != 0)
        return ERR_SYS;
    if (lstat(path, &after) != 0)
        return ERR_SYS;
    if (!S_ISSOCK(after.st_mode) || after.st_ino != before.st_ino || after.st_dev != before.st_dev)
        return ERR_PERM;
    return 0;
}

static int listen_unix(struct router *r, uv_loop_t *loop, struct config *cfg)
{
    const char *path = r->cfg.unix_path;
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_err("%s exists and is not a socket", path);
            return ERR_CONFIG;
        }
        /* The pidfile lock says no other router runs: the socket is stale. */
        unlink(path);
    }
    struct router_listener *l = listener_new(r);
    l->is_unix = true;
    snprintf(l->desc, sizeof(l->desc), "unix:%s", path);
    uv_pipe_init(loop, &l->u.pipe, 0);
    l->u.handle.data = l;
    /* Created with its final mode: the umask is the only way to give a
     * socket file a mode at bind time, and nothing else runs meanwhile
     * (pre_jail, no thread yet). No chmod by name afterwards. */
    mode_t mode = (mode_t)strtoul(r->cfg.unix_mode, NULL, 8);
    mode_t old_mask = umask(~mode & 0777);
    int rc = uv_pipe_bind(&l->u.pipe, path);
    umask(old_mask);
    if (rc == 0) {
        uid_t uid;
        gid_t gid;
        if (geteuid() != 0 || !socket_owner(cfg, &uid, &gid)) {
            uid = (uid_t)-1;
            gid = (gid_t)-1;
        }
        bool fatal = r->cfg.unix_group != NULL;
        if (fatal) {
            /* Who may connect is this group: failing to set it is fatal,
             * as a socket left to another group would lock the daemons out
             * or let others in. Unprivileged, the owner may still give it
             * to a group the router's user is in. */
            const struct group *gr = getgrnam(r->cfg.unix_group);
            if (gr == NULL) {
                log_err("%s: <listen><unix group='%s'>: no such group", config_file(cfg),
                        r->cfg.unix_group);
                return ERR_CONFIG;
            }
            gid = gr->gr_gid;
        }
        int crc = uid != (uid_t)-1 || gid != (gid_t)-1 ? listen_unix_chown(path, uid, gid) : 0;
        if (crc == ERR_PERM) {
            log_err("%s was replaced while its owner was set: not the socket bound", path);
            return ERR_SYS;
        } else if (crc != 0 && fatal) {
            log_err("chown %s to group %s: %s (the router's user must be in that group "
                    "when it is not started as root)",
                    path, r->cfg.unix_group, strerror(errno));
            return ERR_SYS;
        } else if (crc != 0) {
            log_warn("chown %s: %s", path, strerror(errno));
        }
        rc = uv_listen(&l->u.stream, 128, on_connection);
    }
    if (rc != 0) {
        log_err("%s: %s", l->desc, uv_strerror(rc));
        return ERR_SYS;
    }
    log_info("listening on %s (mode %s%s%s)", l->desc, r->cfg.unix_mode,
             r->cfg.unix_group != NULL ? ", group " : "",
             r->cfg.unix_group != NULL ? r->cfg.unix_group : "");
    return 0;
}

static int listen_tcp(struct router *r, uv_loop_t *loop, const struct router_tcp *t)
{
    struct router_listener *l = listener_new(r);
    bool v6 = strchr(t->address, ':') != NULL;
    snprintf(l->desc, sizeof(l->desc), "tcp:%s%s%s:%d%s", v6 ? "[" : "", t->address, v6 ? "]" : "",
             t->port, t->cert ? " (TLS)" : "");
    uv_tcp_init(loop, &l->u.tcp);
    l->u.handle.data = l;
    if (t->cert != NULL && tls_server_ctx_new(t->cert, t->key, NULL, &l->tls) != 0)
        return ERR_CONFIG;
    struct sockaddr_storage ss;
    if (v6)
        uv_ip6_addr(t->address, t->port, (struct sockaddr_in6 *)&ss);
    else
        uv_ip4_addr(t->address, t->port, (struct sockaddr_in *)&ss);
    int rc = uv_tcp_bind(&l->u.tcp, (const struct sockaddr *)&ss, v6 ? UV_TCP_IPV6ONLY : 0);
    if (rc == 0)
        rc = uv_listen(&l->u.stream, 128, on_connection);
    if (rc != 0) {
        log_err("%s: %s", l->desc, uv_strerror(rc));
        return ERR_SYS;
    }
    log_info("listening on %s", l->desc);
    return 0;
}

int router_listen(struct router *r, uv_loop_t *loop, struct config *cfg)
{
    r->loop = loop;
    int rc = 0;
    if (r->cfg.unix_path != NULL)
        rc = listen_unix(r, loop, cfg);
    for (size_t i = 0; rc == 0 && i < r->ntcp; i++)
        rc = listen_tcp(r, loop, &r->tcp[i]);
    return rc;
}

/* ---- stopping ---- */

static void on_listener_closed(uv_handle_t *h)
{
    struct router_listener *l = h->data;
    tls_ctx_free(l->tls);
    free(l);
}

void router_stop(struct router *r)
{
    r->stopping = true;
    while (r->listeners != NULL) {
        struct router_listener *l = r->listeners;
        r->listeners = l->next;
        uv_close(&l->u.handle, on_listener_closed);
    }
    /* Unprivileged by now, the socket file may be out of reach; a stale
     * one is removed at the next start. */
    if (r->cfg.unix_path != NULL)
        unlink(r->cfg.unix_path);
    for (struct conn *c = r->conns; c != NULL; c = c->next)
        conn_fail(c, XML_SE_SYSTEM_SHUTDOWN, NULL);
}
