/*
 * parleyctl_upgrade.c - `parleyctl -d DIR upgrade`: bring an instance made
 * by an older parleyctl up to what init makes now, in place, keeping
 * everything else (secrets, database, the operator's edits).
 *
 * A command of its own, not init again: init refuses an existing DIR
 * (it cannot tell an old instance from a half-made one, and would make
 * new secrets). Each step changes only what the instance lacks, so a
 * second run finds nothing to do ("up to date"):
 * - The router's socket (session 3 moved from an ACL to a group): as root
 *   the group CTL_GROUP with the daemons' users (ctl_group_ensure);
 *   router.xml's <unix> gets group='G', and sm.xml, every c2s-K.xml and
 *   s2s.xml get <groups>G</groups> after their <user> (G: CTL_GROUP as
 *   root, else the caller's group, as init fills @parley_group@); the
 *   default POSIX ACL that older inits put on run/router goes, since left
 *   there it would let the daemons' users reach the socket whatever the
 *   configs say.
 * - c2s's key gets its group and mode (root:parley-c2s 0640, was root's
 *   0600), so c2s can read it again on SIGHUP.
 * - s2s's own key: an s2s.xml whose <cert> names c2s's files is pointed at
 *   s2s's (etc/tls/s2s/D.crt, .key). Those files are used as they are if
 *   the operator put them there; else, when c2s's certificate is
 *   self-signed (init's), s2s gets a new self-signed pair. A certificate
 *   from a CA is not replaced by a self-signed one (peers requiring a
 *   valid one would refuse the links): a note says where to put s2s's own.
 * The configs are edited as text, outside comments only, so that comments
 * and edits stay; each file is written whole and renamed into place. The
 * instance must be stopped (the daemons read these files at start), and
 * `start` is kept out meanwhile (DIR/ctl/start.lock).
 */
#include "autoconfig.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/buf.h"
#include "common/xml.h"
#include "tools/parleyctl.h"

/* Largest config file upgrade reads. */
#define UPG_FILE_MAX (256 * 1024)

/* The first needle in text outside <!-- --> comments, or NULL. */
static const char *upg_find(const char *text, const char *needle)
{
    size_t n = strlen(needle);
    for (const char *p = text; *p != '\0'; p++) {
        if (strncmp(p, "<!--", 4) == 0) {
            const char *end = strstr(p + 4, "-->");
            if (end == NULL)
                return NULL;
            p = end + 2;
            continue;
        }
        if (strncmp(p, needle, n) == 0)
            return p;
    }
    return NULL;
}

/* Write a config as init writes it (0644, the invoking user's), with the
 * final newline ctl_read_xml took off. 0 or 1 (message). */
static int upg_write(const struct ctl *c, const char *path, struct buf *text)
{
    buf_append_byte(text, '\n');
    return ctl_write_file(c, path, text->data, text->len, 0644, 0, 0);
}

/* Write text to path with cut bytes at at replaced by insert. */
static int upg_splice(const struct ctl *c, const char *path, const char *text, const char *at,
                      size_t cut, const char *insert)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, text, (size_t)(at - text));
    buf_append_str(&b, insert);
    buf_append_str(&b, at + cut);
    int rc = upg_write(c, path, &b);
    buf_free(&b);
    return rc;
}

/* DIR/etc/<name>.xml: <groups>group</groups> after <user>, if it has no
 * <groups>. A missing file (no such daemon) is fine. 0, 1 (message). */
static int upg_groups(const struct ctl *c, const char *name, const char *group, int *changes)
{
    char path[CTL_PATH_MAX], *text;
    struct xml_node *root;
    ctl_path(c, path, "etc/%s.xml", name);
    if (ctl_read_xml(path, UPG_FILE_MAX, true, &text, &root) != 0)
        return 1;
    if (text == NULL)
        return 0;
    int rc = 0;
    const char *at = upg_find(text, "</user>");
    if (xml_child(root, NULL, "groups") != NULL) {
        /* up to date */
    } else if (at == NULL) {
        ctl_err("%s has no <user> to put <groups>%s</groups> after: add it by hand", path, group);
        rc = 1;
    } else {
        char insert[320];
        snprintf(insert, sizeof(insert), "</user>\n  <groups>%s</groups>", group);
        rc = upg_splice(c, path, text, at, strlen("</user>"), insert);
        if (rc == 0) {
            ctl_note("%s: added <groups>%s</groups>", path, group);
            (*changes)++;
        }
    }
    xml_free(root);
    free(text);
    return rc;
}

/* router.xml: group='group' on <listen><unix> if it has none. */
static int upg_router_group(const struct ctl *c, const char *group, int *changes)
{
    char path[CTL_PATH_MAX], *text;
    struct xml_node *root;
    ctl_path(c, path, "etc/router.xml");
    if (ctl_read_xml(path, UPG_FILE_MAX, false, &text, &root) != 0)
        return 1;
    struct xml_node *listen = xml_child(root, NULL, "listen");
    struct xml_node *unix_el = listen != NULL ? xml_child(listen, NULL, "unix") : NULL;
    int rc = 0;
    if (unix_el != NULL && xml_get_attr(unix_el, "group") == NULL) {
        const char *at = upg_find(text, "<unix ");
        const char *end = at != NULL ? strchr(at, '>') : NULL;
        if (end == NULL) {
            ctl_err("%s: cannot find the <unix> element to give group='%s'", path, group);
            rc = 1;
        } else {
            if (end > at && end[-1] == '/')
                end--;
            char insert[320];
            snprintf(insert, sizeof(insert), " group='%s'", group);
            rc = upg_splice(c, path, text, end, 0, insert);
            if (rc == 0) {
                ctl_note("%s: the router's socket goes to the group %s", path, group);
                (*changes)++;
            }
        }
    }
    xml_free(root);
    free(text);
    return rc;
}

/* The default ACL older inits gave run/router (the daemons' users by uid). */
static int upg_router_acl(const struct ctl *c, int *changes)
{
    char path[CTL_PATH_MAX];
    ctl_path(c, path, "run/router");
    /* Asked first: removing an ACL that is not there succeeds on some
     * filesystems (tmpfs), which would count as a change each time. */
    if (getxattr(path, "system.posix_acl_default", NULL, 0) < 0) {
        if (errno == ENODATA || errno == ENOTSUP || errno == ENOENT)
            return 0;
        ctl_err("cannot read the ACL of %s: %s", path, strerror(errno));
        return 1;
    }
    if (removexattr(path, "system.posix_acl_default") == 0) {
        ctl_note("%s: removed its default ACL (the group reaches the socket now)", path);
        (*changes)++;
        return 0;
    }
    ctl_err("cannot remove the default ACL of %s: %s", path, strerror(errno));
    return 1;
}

/* c2s's key: its group and mode, if it is where init puts it. */
static int upg_c2s_key(const struct ctl *c, int *changes)
{
    char crt[CTL_PATH_MAX], key[CTL_PATH_MAX];
    uid_t uid = 0;
    gid_t gid = 0;
    struct stat st;
    if (ctl_tls_paths(c, "c2s", crt, key) != 0 || stat(key, &st) < 0)
        return 0;
    if (c->as_root && ctl_user_ids(c, "parley-c2s", &uid, &gid) != 0)
        return 1;
    if ((st.st_mode & 07777) == 0640 && (!c->as_root || (st.st_uid == 0 && st.st_gid == gid)))
        return 0;
    if (ctl_tls_own(c, "c2s") != 0)
        return 1;
    ctl_note("%s: now root's, readable by parley-c2s's group (0640), for c2s's reload", key);
    (*changes)++;
    return 0;
}

/* Is the PEM certificate at path self-signed? -1 if it cannot be read. */
static int upg_selfsigned(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (x == NULL)
        return -1;
    int self = X509_check_issued(x, x) == X509_V_OK;
    X509_free(x);
    return self;
}

/* text with the attribute value old (quoted either way, outside comments)
 * replaced by new, into out (its len without a NUL; data NUL-terminated).
 * 0, or -1 if it is not there. */
static int upg_replace_value(const char *text, const char *old, const char *new, struct buf *out)
{
    char q[CTL_PATH_MAX + 2];
    for (const char *quote = "'\""; *quote != '\0'; quote++) {
        snprintf(q, sizeof(q), "%c%s%c", *quote, old, *quote);
        const char *at = upg_find(text, q);
        if (at == NULL)
            continue;
        buf_append(out, text, (size_t)(at + 1 - text));
        buf_append_str(out, new);
        buf_append_str(out, at + 1 + strlen(old));
        buf_append_byte(out, '\0');
        out->len--;
        return 0;
    }
    return -1;
}

/* s2s.xml: a <cert> naming c2s's certificate and key gets s2s's own. */
static int upg_s2s_key(const struct ctl *c, int *changes)
{
    char path[CTL_PATH_MAX], *text;
    char crt[CTL_PATH_MAX], key[CTL_PATH_MAX], s2s_crt[CTL_PATH_MAX], s2s_key[CTL_PATH_MAX];
    struct xml_node *root;
    if (ctl_tls_paths(c, "c2s", crt, key) != 0 || ctl_tls_paths(c, "s2s", s2s_crt, s2s_key) != 0)
        return 1;
    ctl_path(c, path, "etc/s2s.xml");
    if (ctl_read_xml(path, UPG_FILE_MAX, true, &text, &root) != 0)
        return 1;
    if (text == NULL)
        return 0;
    struct buf with_both, with_key;
    buf_init(&with_both);
    buf_init(&with_key);
    int rc = 0;
    if (upg_replace_value(text, key, s2s_key, &with_key) != 0) {
        /* s2s has a key of its own */
    } else if (upg_replace_value(with_key.data, crt, s2s_crt, &with_both) != 0) {
        ctl_err("%s: s2s uses c2s's key %s with another certificate: give it its own by hand", path,
                key);
        rc = 1;
    } else if (access(s2s_crt, F_OK) == 0 && access(s2s_key, F_OK) == 0) {
        rc = ctl_tls_own(c, "s2s");
    } else if (upg_selfsigned(crt) == 1) {
        rc = ctl_tls_write(c, "s2s");
    } else {
        ctl_note("%s: s2s shares c2s's certificate and key, and the certificate is not "
                 "self-signed: put s2s's own in %s and %s, then run upgrade again",
                 path, s2s_crt, s2s_key);
        buf_free(&with_both);
        buf_init(&with_both);
    }
    if (rc == 0 && with_both.len > 0) {
        rc = upg_write(c, path, &with_both);
        if (rc == 0) {
            ctl_note("%s: s2s has its own certificate and key now (%s)", path, s2s_key);
            (*changes)++;
        }
    }
    buf_free(&with_both);
    buf_free(&with_key);
    xml_free(root);
    free(text);
    return rc;
}

static int upg_run(struct ctl *c)
{
    char group[256];
    if (c->as_root && ctl_group_ensure(c) != 0)
        return 1;
    const struct group *gr = c->as_root ? getgrnam(CTL_GROUP) : getgrgid(getgid());
    if (gr == NULL) {
        ctl_err("no group %s", c->as_root ? CTL_GROUP : "for my gid");
        return 1;
    }
    snprintf(group, sizeof(group), "%s", gr->gr_name);
    /* The ACL goes last: until every config names the group, it is what
     * lets the daemons reach the socket, so a failure half-way leaves an
     * instance that still runs. */
    int changes = 0;
    if (upg_router_group(c, group, &changes) != 0 || upg_groups(c, "sm", group, &changes) != 0 ||
        upg_groups(c, "s2s", group, &changes) != 0)
        return 1;
    for (int k = 1; k <= CTL_C2S_MAX; k++) {
        char name[32];
        snprintf(name, sizeof(name), "c2s-%d", k);
        if (upg_groups(c, name, group, &changes) != 0)
            return 1;
    }
    if (upg_router_acl(c, &changes) != 0 || upg_c2s_key(c, &changes) != 0 ||
        upg_s2s_key(c, &changes) != 0)
        return 1;
    if (changes == 0)
        printf("%s is up to date\n", c->dir);
    else
        printf("upgraded %s (%d change%s)\n", c->dir, changes, changes == 1 ? "" : "s");
    return 0;
}

int ctl_cmd_upgrade(struct ctl *c, int argc, char **argv)
{
    (void)argv;
    if (argc != 1) {
        ctl_err("usage: parleyctl -d DIR upgrade");
        return 2;
    }
    if (ctl_load(c) != 0)
        return 1;
    char path[CTL_PATH_MAX];
    ctl_path(c, path, "ctl/start.lock");
    int startfd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (startfd < 0) {
        ctl_err("cannot open %s: %s", path, strerror(errno));
        return 1;
    }
    if (flock(startfd, LOCK_EX | LOCK_NB) < 0 || ctl_sup_pid(c) != 0) {
        ctl_err("%s is running (or starting): `parleyctl -d %s stop` first, then upgrade, then "
                "start",
                c->dir, c->dir);
        close(startfd);
        return 1;
    }
    int editfd = ctl_edit_lock(c);
    int rc = editfd < 0 ? 1 : upg_run(c);
    ctl_edit_unlock(editfd);
    close(startfd);
    return rc;
}
