/*
 * mod_welcome.c - a message for each new account, as serious servers send
 * one: on user-create (sm.h) <welcome><subject/><body/></welcome> from
 * etc/sm.xml is stored offline for the account, from its domain, so the
 * user gets it at the first login with a delay stamp (mod_message
 * delivers it like any other offline message). Without a <body> the
 * module does nothing.
 *
 * The message is not stored here: it is added to the user-create
 * container, and the core stores it with the account's first-seen mark in
 * one transaction (sm.h), so it is stored once, before the start or
 * stanza that loaded the account is handled (a first login's initial
 * presence flushes it), or not at all and tried again. An offline store
 * that is full (the quota) drops it: the account is not new then. Runs on
 * the sm's loop.
 *
 * A welcome too big to be stored or delivered would be lost at each new
 * account (dropped by the quota, or refused by the sm's own stanza limit
 * when read back, or by the router, which ends the sm's connection over
 * it), so the module refuses to start with one (check_size): the sm does
 * not start.
 */
#include "autoconfig.h"

#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/jid.h"
#include "common/log.h"
#include "common/xml.h"
#include "sm/mod.h"

static void add_text(struct xml_node *parent, const char *name, const char *text)
{
    xml_add_text(xml_add_child(parent, NULL, name), text, strlen(text));
}

/* The welcome for the account to (a bare JID), from domain, under parent. */
static struct xml_node *add_welcome(struct xml_node *parent, const struct sm_config *cfg,
                                    const char *domain, const char *to)
{
    struct xml_node *st = xml_add_child(parent, XML_NS_COMPONENT, "message");
    xml_set_attr(st, "from", domain);
    xml_set_attr(st, "to", to);
    xml_set_attr(st, "type", "normal");
    if (cfg->welcome_subject != NULL && *cfg->welcome_subject != '\0')
        add_text(st, "subject", cfg->welcome_subject);
    add_text(st, "body", cfg->welcome_body);
    return st;
}

static int on_create(struct sm_mod *m, struct sm_pkt *p)
{
    struct sm_user *u = p->user;
    add_welcome(p->stanza, m->sm->cfg, u->jid->domain, u->jid->bare);
    return SM_PASS;
}

/* ERR_CONFIG when the welcome from domain cannot be stored or delivered
 * for every account: its size is taken at its largest, for an account
 * whose node has JID_PART_MAX bytes, as stored (serialised as the core
 * stores it, under <limits><offline-bytes>) and as delivered (with the
 * <delay/> mod_message adds, under sm_mod_stanza_max). */
static int check_size(struct sm_mod *m, const char *domain)
{
    const struct sm_config *cfg = m->sm->cfg;
    size_t max = sm_mod_stanza_max(m->sm);
    struct buf to = BUF_INIT, b = BUF_INIT;
    for (size_t i = 0; i < JID_PART_MAX; i++)
        buf_append_byte(&to, 'x');
    buf_printf(&to, "@%s", domain);
    struct xml_node *root = xml_new(NULL, "user-create"); /* as in the core's claim */
    struct xml_node *st = add_welcome(root, cfg, domain, to.data);
    xml_serialize(st, "", &b); /* as stored: xmlns on the root */
    size_t stored = b.len;
    struct xml_node *d = xml_add_child(st, "urn:xmpp:delay", "delay");
    xml_set_attr(d, "from", domain);
    xml_set_attr(d, "stamp", "0000-00-00T00:00:00.000Z"); /* mod_message's stamp() */
    buf_reset(&b);
    xml_serialize(st, XML_NS_COMPONENT, &b); /* as delivered (sm_deliver) */
    size_t delivered = b.len;
    xml_free(root);
    buf_free(&b);
    buf_free(&to);
    if (stored > (size_t)cfg->offline_quota_bytes) {
        log_err("<welcome> is too big: up to %zu bytes as stored offline for an account of %s, "
                "over <limits><offline-bytes> (%d)",
                stored, domain, cfg->offline_quota_bytes);
        return ERR_CONFIG;
    }
    if (delivered > max) {
        log_err("<welcome> is too big: up to %zu bytes as delivered to an account of %s, over "
                "the %zu-byte stanza size limit (%zu bytes over; <limits><router-stanza-size> "
                "less the routing envelope)",
                delivered, domain, max, delivered - max);
        return ERR_CONFIG;
    }
    return 0;
}

static int init(struct sm_mod *m)
{
    const char *body = m->sm->cfg->welcome_body;
    if (body == NULL || *body == '\0')
        return 0;
    for (size_t i = 0; i < m->sm->ndomains; i++)
        if (check_size(m, m->sm->domains[i]) != 0)
            return ERR_CONFIG;
    sm_hook_add(m, SM_HOOK_USER_CREATE, on_create);
    return 0;
}

const struct sm_module_def sm_mod_welcome_def = {
    .name = "welcome",
    .init = init,
};
