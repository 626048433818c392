/*
 * parleyctl_c2s.c - `parleyctl -d DIR c2s add|del|list`: several c2s
 * processes.
 *
 * Operators scale client connections by running c2s-1, c2s-2, ... side by
 * side: each its own process, config (DIR/etc/c2s-<k>.xml, from the same
 * template c2s.xml.in), router name and secret (DIR/etc/secrets/c2s-<k>),
 * run directory and router-users.xml entry (internal, the uid of
 * parley-c2s), all listening on the same ports (SO_REUSEPORT: the kernel
 * spreads new connections over them). `init --c2s N` makes c2s-1..c2s-N;
 * `c2s add` makes the lowest free c2s-<k> (k >= 2) and, when the instance
 * runs, has the
 * supervisor reload the router's table and start it (one HUP, see
 * ctl_reload); `c2s del` takes the last (or a named) one out again and
 * has the supervisor stop it. start/stop/status/reload handle every c2s-<k> that has a
 * config (ctl_daemons lists c2s-1..c2s-CTL_C2S_MAX).
 *
 * The router-users.xml entry is added as a fixed block before
 * </components>, as `component add` does, leaving the rest of the file
 * (comments, hand edits) alone. Blocking file I/O: a command, not a loop.
 */
#include "autoconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/mem.h"
#include "common/xml.h"
#include "tools/parleyctl.h"

#define USERS_MAX (1024 * 1024)

/* The router-users.xml entry of c2s instance name, as added and deleted. */
static int c2s_block(const struct ctl *c, const char *name, struct buf *out)
{
    char secret[CTL_PATH_MAX], uidtext[32];
    uid_t uid;
    gid_t gid;
    if (ctl_user_ids(c, "parley-c2s", &uid, &gid) != 0)
        return 1;
    ctl_path(c, secret, "etc/secrets/%s", name);
    snprintf(uidtext, sizeof(uidtext), "%u", (unsigned)uid);
    buf_append_str(out, "  <component name='");
    buf_append_str(out, name);
    buf_append_str(out, "' internal='true' uid='");
    buf_append_str(out, uidtext);
    buf_append_str(out, "'>\n    <secret file='");
    buf_append_str(out, secret);
    buf_append_str(out, "'/>\n  </component>\n");
    return 0;
}

/* Add c2s-<k>'s entry to DIR/etc/router-users.xml (add), or take the
 * block c2s_block writes out of it (!add). An entry exactly as this would
 * add it is kept (left by an older failed add): *added says whether the
 * file was changed. 0 or 1 (message). */
static int c2s_router_entry(const struct ctl *c, const char *name, bool add, bool *added)
{
    *added = false;
    char path[CTL_PATH_MAX], *text;
    struct xml_node *root;
    ctl_path(c, path, "etc/router-users.xml");
    if (ctl_read_xml(path, USERS_MAX, false, &text, &root) != 0)
        return 1;
    int rc = 1;
    bool taken = false;
    for (struct xml_node *n = xml_child(root, NULL, "component"); n != NULL;
         n = xml_next(n, NULL, "component")) {
        const char *v = xml_get_attr(n, "name");
        taken = taken || (v != NULL && strcmp(v, name) == 0);
    }
    struct buf block, b;
    buf_init(&block);
    buf_init(&b);
    char *end = strstr(text, "</components>"), *at = NULL;
    int brc = c2s_block(c, name, &block);
    buf_append_byte(&block, '\0');
    if (!add)
        at = strstr(text, block.data);
    if (brc != 0) {
        /* printed */
    } else if (add && taken && strstr(text, block.data) != NULL) {
        rc = 0;
    } else if (add && taken) {
        ctl_err("%s already has a component %s", path, name);
    } else if (add && end == NULL) {
        ctl_err("%s: no </components>", path);
    } else if (!add && at == NULL) {
        ctl_err("%s: no entry for %s as `c2s add` writes it (edited by hand?): left alone", path,
                name);
    } else if (add) {
        buf_append(&b, text, (size_t)(end - text));
        buf_append_str(&b, block.data);
        buf_append_str(&b, end);
        rc = ctl_write_file(c, path, b.data, b.len, 0644, 0, 0);
        *added = rc == 0;
    } else {
        buf_append(&b, text, (size_t)(at - text));
        buf_append_str(&b, at + strlen(block.data));
        rc = ctl_write_file(c, path, b.data, b.len, 0644, 0, 0);
    }
    buf_free(&block);
    buf_free(&b);
    xml_free(root);
    free(text);
    return rc;
}

int ctl_c2s_instance_add(const struct ctl *c, int k)
{
    char name[32], path[CTL_PATH_MAX];
    uid_t uid = 0;
    gid_t gid = 0;
    snprintf(name, sizeof(name), "c2s-%d", k);
    ctl_path(c, path, "etc/%s.xml", name);
    if (access(path, F_OK) == 0) {
        ctl_err("%s exists already", path);
        return 1;
    }
    /* The config last: its presence is what makes c2s-<k> part of the
     * instance (ctl_daemon_configured). A failure before it takes back the
     * secret and the router-users.xml entry, so that the next add of this
     * name starts clean; the run directory may stay (it is reused). */
    ctl_path(c, path, "run/%s", name);
    bool secret = false, entry = false;
    int rc = ctl_secret_write(c, name, "parley-c2s", 0640, "parley-router");
    secret = rc == 0;
    if (rc == 0 && c->as_root)
        rc = ctl_user_ids(c, "parley-c2s", &uid, &gid);
    if (rc == 0)
        rc = ctl_mkdir(c, path, 0755, uid, gid);
    if (rc == 0)
        rc = c2s_router_entry(c, name, true, &entry);
    if (rc == 0)
        rc = ctl_c2s_config_write(c, k);
    if (rc == 0)
        return 0;
    bool ignored;
    if (entry && c2s_router_entry(c, name, false, &ignored) != 0)
        ctl_err("%s: remove the entry for %s from router-users.xml by hand", name, name);
    ctl_path(c, path, "etc/secrets/%s", name);
    if (secret && unlink(path) < 0 && errno != ENOENT)
        ctl_err("cannot remove %s: %s", path, strerror(errno));
    return 1;
}

static bool c2s_configured(const struct ctl *c, int k)
{
    char path[CTL_PATH_MAX];
    ctl_path(c, path, "etc/c2s-%d.xml", k);
    return access(path, F_OK) == 0;
}

static int c2s_add(struct ctl *c)
{
    int k = 2;
    while (k <= CTL_C2S_MAX && c2s_configured(c, k))
        k++;
    if (k > CTL_C2S_MAX) {
        ctl_err("this instance has c2s-1 .. c2s-%d already, the most parleyctl runs", CTL_C2S_MAX);
        return 1;
    }
    /* As init does: parley-c2s must reach the router's socket. */
    if (ctl_group_ensure(c) != 0 || ctl_c2s_instance_add(c, k) != 0)
        return 1;
    char name[32];
    snprintf(name, sizeof(name), "c2s-%d", k);
    /* One HUP: the router reloads its table (the new name), and the
     * supervisor starts the daemon it now finds configured. */
    const char *const names[] = {"router", name};
    int rc = ctl_reload_names(c, names, 2);
    if (rc < 0)
        return 1;
    printf("%s added (%s/etc/%s.xml)%s\n", name, c->dir, name,
           rc > 0 ? "; starting it" : "; `parleyctl start` runs it");
    return 0;
}

/* Take c2s-<k> (name, or the highest; never c2s-1, the template's) out:
 * its router-users.xml entry, config and secret; a running supervisor
 * stops it for good and the router forgets the name (one HUP). Its run
 * directory and log stay. */
static int c2s_del(struct ctl *c, const char *name)
{
    char path[CTL_PATH_MAX], buf[32];
    int k = 0;
    if (name != NULL) {
        char *end = NULL;
        long v = strncmp(name, "c2s-", 4) == 0 ? strtol(name + 4, &end, 10) : 0;
        if (v < 2 || v > CTL_C2S_MAX || *end != '\0' || !c2s_configured(c, (int)v)) {
            ctl_err("%s: not a c2s process `c2s add` made here (c2s-2 .. c2s-%d; c2s-1 stays)",
                    name, CTL_C2S_MAX);
            return 1;
        }
        k = (int)v;
    } else {
        for (int i = CTL_C2S_MAX; i >= 2 && k == 0; i--)
            k = c2s_configured(c, i) ? i : 0;
        if (k == 0) {
            ctl_err("no c2s process but c2s-1, which stays");
            return 1;
        }
    }
    snprintf(buf, sizeof(buf), "c2s-%d", k);
    bool ignored;
    if (c2s_router_entry(c, buf, false, &ignored) != 0)
        return 1;
    ctl_path(c, path, "etc/%s.xml", buf);
    if (unlink(path) < 0) {
        ctl_err("cannot remove %s: %s", path, strerror(errno));
        return 1;
    }
    ctl_path(c, path, "etc/secrets/%s", buf);
    if (unlink(path) < 0 && errno != ENOENT)
        ctl_note("cannot remove %s: %s", path, strerror(errno));
    /* The router alone: the supervisor stops c2s-<k> on this HUP anyway
     * (its config is gone), a HUP to it first would only race the TERM. */
    const char *const names[] = {"router"};
    int rc = ctl_reload_names(c, names, 1);
    if (rc < 0)
        return 1;
    printf("%s removed%s\n", buf, rc > 0 ? "; stopping it" : "");
    return 0;
}

static int c2s_list(struct ctl *c)
{
    for (int k = 1; k <= CTL_C2S_MAX; k++) {
        if (c2s_configured(c, k))
            printf("c2s-%d %s/etc/c2s-%d.xml\n", k, c->dir, k);
    }
    return 0;
}

int ctl_cmd_c2s(struct ctl *c, int argc, char **argv)
{
    bool del = argc >= 2 && strcmp(argv[1], "del") == 0;
    if (del ? argc > 3
            : argc != 2 || (strcmp(argv[1], "add") != 0 && strcmp(argv[1], "list") != 0)) {
        ctl_err("usage: parleyctl -d DIR c2s add | c2s del [c2s-K] | c2s list");
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    if (strcmp(argv[1], "list") == 0)
        return c2s_list(c);
    int lock = ctl_edit_lock(c);
    if (lock < 0)
        return 1;
    int rc = del ? c2s_del(c, argc == 3 ? argv[2] : NULL) : c2s_add(c);
    ctl_edit_unlock(lock);
    return rc;
}
