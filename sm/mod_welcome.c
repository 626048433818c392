/*
 * mod_welcome.c - a message for each new account, as serious servers send
 * one: on user-create (sm.h) <welcome><subject/><body/></welcome> from
 * etc/sm.xml is stored offline for the account, from its domain, so the
 * user gets it at the first login with a delay stamp (mod_message
 * delivers it like any other offline message). Without a <body> the
 * module does nothing.
 *
 * The store runs under a hold on the user: the start or stanza that
 * loaded the account is handled after it (a first login's initial
 * presence flushes it). A store that fails takes the account's first-seen
 * mark back (sm_user_create_failed), so the next load tries again and the
 * welcome is not lost; it comes twice only if the database stored it and
 * the answer was lost. An offline store that is full (the quota) is not
 * tried again: the account is not new then. Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/err.h"
#include "common/log.h"
#include "sm/mod.h"

static void on_stored(void *arg, int err, const struct storage_result *res)
{
    struct sm_user *u = arg;
    if (err == ERR_LIMIT) {
        log_warn("welcome for %s not stored: offline quota reached", u->jid->bare);
    } else if (err != 0) {
        log_warn("welcome for %s not stored: %s", u->jid->bare, storage_result_error(res));
        sm_user_create_failed(u);
    } else {
        log_info("welcome stored for %s", u->jid->bare);
    }
    sm_user_release(u);
}

static void add_text(struct xml_node *parent, const char *name, const char *text)
{
    xml_add_text(xml_add_child(parent, NULL, name), text, strlen(text));
}

static int on_create(struct sm_mod *m, struct sm_pkt *p)
{
    struct sm_user *u = p->user;
    const struct sm_config *cfg = m->sm->cfg;
    struct xml_node *st = xml_new(XML_NS_COMPONENT, "message");
    xml_set_attr(st, "from", u->jid->domain);
    xml_set_attr(st, "to", u->jid->bare);
    xml_set_attr(st, "type", "normal");
    if (cfg->welcome_subject != NULL && *cfg->welcome_subject != '\0')
        add_text(st, "subject", cfg->welcome_subject);
    add_text(st, "body", cfg->welcome_body);
    struct buf b = BUF_INIT;
    xml_serialize(st, "", &b); /* self-contained: xmlns on the root */
    xml_free(st);
    int rc = storage_offline_store(m->sm->st, u->jid->bare, 0, b.data, on_stored, u);
    buf_free(&b);
    if (rc == 0) {
        sm_user_hold(u);
    } else {
        log_warn("welcome for %s not stored: %s", u->jid->bare, err_str(rc));
        sm_user_create_failed(u);
    }
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
