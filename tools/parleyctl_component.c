/*
 * parleyctl_component.c - `parleyctl -d DIR component add|del|list`:
 * external components (XEP-0114) in DIR/etc/router-users.xml.
 *
 * The file is read with the xml module (comments skipped) to know which
 * names exist; entries are added as a fixed block before </components>
 * and deleted by finding that same block, so that hand-written entries
 * and comments are left alone (deleting a hand-written entry is refused
 * with a message). Each secret lives in DIR/etc/secrets/component-NAME,
 * readable by the router only. After a change the running router gets
 * SIGHUP (through its supervisor) and reloads the table.
 */
#include "autoconfig.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/jid.h"
#include "common/mem.h"
#include "common/rand.h"
#include "common/xml.h"
#include "tools/parleyctl.h"

#define USERS_MAX (1024 * 1024)

/* Names the router table holds for our own daemons. */
static const char *const comp_reserved[] = {"sm", "s2s"};

static int comp_read(const struct ctl *c, char *path, char **text, struct xml_node **root)
{
    ctl_path(c, path, "etc/router-users.xml");
    return ctl_read_xml(path, USERS_MAX, false, text, root);
}

static struct xml_node *comp_find(struct xml_node *root, const char *name)
{
    for (struct xml_node *n = xml_child(root, NULL, "component"); n != NULL;
         n = xml_next(n, NULL, "component")) {
        const char *v = xml_get_attr(n, "name");
        if (v != NULL && strcmp(v, name) == 0)
            return n;
    }
    return NULL;
}

static void comp_block(const struct ctl *c, const char *name, struct buf *out)
{
    char secret[CTL_PATH_MAX];
    ctl_path(c, secret, "etc/secrets/component-%s", name);
    buf_append_str(out, "  <component name='");
    buf_append_str(out, name);
    buf_append_str(out, "'>\n    <secret file='");
    buf_append_str(out, secret);
    buf_append_str(out, "'/>\n  </component>\n");
}

/* A reload of the router, if it runs: a HUP through its supervisor
 * (ctl_reload). The router's own pidfile is in a directory the router's
 * user writes: never signalled. */
static void comp_reload(const struct ctl *c)
{
    if (ctl_reload(c, "router") > 0)
        ctl_note("router reloads its component table (HUP through the supervisor)");
}

static int comp_add(const struct ctl *c, const char *name, const char *given)
{
    char path[CTL_PATH_MAX], spath[CTL_PATH_MAX], *text;
    struct xml_node *root;
    if (comp_read(c, path, &text, &root) != 0)
        return 1;
    int rc = 1;
    char *end = strstr(text, "</components>");
    if (comp_find(root, name) != NULL) {
        ctl_err("component %s exists already", name);
    } else if (end == NULL) {
        ctl_err("%s: no </components>", path);
    } else {
        char secret[2 * RAND_ID_HEXLEN + 2];
        if (given != NULL) {
            snprintf(secret, sizeof(secret), "%s", given);
        } else {
            rand_id_hex(secret);
            rand_id_hex(secret + RAND_ID_HEXLEN);
        }
        uid_t uid = 0;
        gid_t gid = 0;
        struct buf b;
        buf_init(&b);
        ctl_path(c, spath, "etc/secrets/component-%s", name);
        rc = ctl_user_ids(c, "parley-router", &uid, &gid);
        if (rc == 0) {
            size_t n = strlen(secret);
            secret[n] = '\n';
            rc = ctl_write_file(c, spath, secret, n + 1, 0600, uid, gid);
            secret[n] = '\0';
        }
        if (rc == 0) {
            buf_append(&b, text, (size_t)(end - text));
            comp_block(c, name, &b);
            buf_append_str(&b, end);
            rc = ctl_write_file(c, path, b.data, b.len, 0644, 0, 0);
        }
        buf_free(&b);
        if (rc == 0) {
            ctl_note("component %s added%s", name,
                     given == NULL ? "; its secret (printed once):" : "");
            if (given == NULL)
                printf("%s\n", secret);
            fflush(stdout);
            comp_reload(c);
        }
        mem_wipe(secret, sizeof(secret));
    }
    xml_free(root);
    free(text);
    return rc;
}

static int comp_del(const struct ctl *c, const char *name)
{
    char path[CTL_PATH_MAX], spath[CTL_PATH_MAX], *text;
    struct xml_node *root;
    if (comp_read(c, path, &text, &root) != 0)
        return 1;
    int rc = 1;
    struct buf block;
    buf_init(&block);
    comp_block(c, name, &block);
    buf_append_byte(&block, '\0');
    char *at = strstr(text, block.data);
    if (comp_find(root, name) == NULL) {
        ctl_err("no component %s", name);
    } else if (at == NULL) {
        ctl_err("component %s was not added by parleyctl; edit %s by hand", name, path);
    } else {
        struct buf b;
        buf_init(&b);
        buf_append(&b, text, (size_t)(at - text));
        buf_append_str(&b, at + block.len - 1);
        rc = ctl_write_file(c, path, b.data, b.len, 0644, 0, 0);
        buf_free(&b);
        if (rc == 0) {
            ctl_path(c, spath, "etc/secrets/component-%s", name);
            unlink(spath);
            ctl_note("component %s deleted", name);
            comp_reload(c);
        }
    }
    buf_free(&block);
    xml_free(root);
    free(text);
    return rc;
}

static int comp_list(const struct ctl *c)
{
    char path[CTL_PATH_MAX], *text;
    struct xml_node *root;
    if (comp_read(c, path, &text, &root) != 0)
        return 1;
    for (struct xml_node *n = xml_child(root, NULL, "component"); n != NULL;
         n = xml_next(n, NULL, "component")) {
        const char *name = xml_get_attr(n, "name");
        const char *internal = xml_get_attr(n, "internal");
        if (name != NULL && (internal == NULL || strcmp(internal, "true") != 0))
            printf("%s\n", name);
    }
    xml_free(root);
    free(text);
    return 0;
}

int ctl_cmd_component(struct ctl *c, int argc, char **argv)
{
    static const struct option opts[] = {{"secret", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    const char *secret = NULL;
    int opt;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (opt != 's')
            return 2;
        secret = optarg;
    }
    const char *sub = optind < argc ? argv[optind] : "";
    int rest = argc - optind - 1;
    bool add = strcmp(sub, "add") == 0, del = strcmp(sub, "del") == 0;
    bool list = strcmp(sub, "list") == 0;
    if ((!((add || del) && rest == 1) && !(list && rest == 0)) || (secret != NULL && !add)) {
        ctl_err("usage: parleyctl -d DIR component add NAME [--secret S] | component del NAME "
                "| component list");
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    if (list)
        return comp_list(c);

    const char *arg = argv[optind + 1];
    char *name = NULL;
    if (jid_prep_domain(arg, strlen(arg), &name, NULL) < 0 || name[0] == '[' ||
        strpbrk(name, "'\"<>&") != NULL) {
        ctl_err("'%s' is not a valid component name (a domain name)", arg);
        free(name);
        return 1;
    }
    int rc = 1;
    bool reserved = strcmp(name, c->domain) == 0 || strncmp(name, "c2s-", 4) == 0;
    for (size_t i = 0; i < sizeof(comp_reserved) / sizeof(comp_reserved[0]); i++)
        reserved = reserved || strcmp(name, comp_reserved[i]) == 0;
    if (reserved)
        ctl_err("'%s' is reserved for the server's own daemons", name);
    else if (secret != NULL &&
             (secret[0] == '\0' || strlen(secret) > 1024 || strpbrk(secret, "\n\r") != NULL))
        ctl_err("--secret: 1 to 1024 characters, one line");
    else {
        int lock = ctl_edit_lock(c);
        if (lock >= 0)
            rc = add ? comp_add(c, name, secret) : comp_del(c, name);
        ctl_edit_unlock(lock);
    }
    free(name);
    return rc;
}
