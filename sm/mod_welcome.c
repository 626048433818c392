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
 */
#include "autoconfig.h"

#include <string.h>

#include "sm/mod.h"

static void add_text(struct xml_node *parent, const char *name, const char *text)
{
    xml_add_text(xml_add_child(parent, NULL, name), text, strlen(text));
}

static int on_create(struct sm_mod *m, struct sm_pkt *p)
{
    struct sm_user *u = p->user;
    const struct sm_config *cfg = m->sm->cfg;
    struct xml_node *st = xml_add_child(p->stanza, XML_NS_COMPONENT, "message");
    xml_set_attr(st, "from", u->jid->domain);
    xml_set_attr(st, "to", u->jid->bare);
    xml_set_attr(st, "type", "normal");
    if (cfg->welcome_subject != NULL && *cfg->welcome_subject != '\0')
        add_text(st, "subject", cfg->welcome_subject);
    add_text(st, "body", cfg->welcome_body);
    return SM_PASS;
}

static int init(struct sm_mod *m)
{
    const char *body = m->sm->cfg->welcome_body;
    if (body != NULL && *body != '\0')
        sm_hook_add(m, SM_HOOK_USER_CREATE, on_create);
    return 0;
}

const struct sm_module_def sm_mod_welcome_def = {
    .name = "welcome",
    .init = init,
};
