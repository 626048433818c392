/*
 * mod_ping.c - XEP-0199 XMPP Ping: the server answers a ping to its domain
 * and, on the account's behalf, to a local bare JID (RFC 6120 §10.5.3: the
 * server handles an iq to a bare JID). A ping to a full JID goes to that
 * session like any iq. Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <string.h>

#include "sm/mod.h"

#define NS_PING "urn:xmpp:ping"

static int on_iq(struct sm_mod *m, struct sm_pkt *p)
{
    if (strcmp(p->kind, "iq") != 0 || p->type == NULL ||
        xml_child(p->stanza, NS_PING, "ping") == NULL)
        return SM_PASS;
    if (p->to != NULL && p->to->resource != NULL)
        return SM_PASS;
    if (strcmp(p->type, "get") != 0)
        return strcmp(p->type, "set") == 0 ? SM_ERROR(XML_STE_BAD_REQUEST) : SM_PASS;
    struct xml_node *r = sm_reply(p->stanza, "result");
    sm_route(m->sm, r);
    xml_free(r);
    return SM_HANDLED;
}

static int on_features(struct sm_mod *m, struct sm_pkt *p)
{
    xml_set_attr(xml_add_child(p->stanza, NULL, "feature"), "var", NS_PING);
    return SM_PASS;
}

static int init(struct sm_mod *m)
{
    sm_hook_add(m, SM_HOOK_PKT_SM, on_iq);
    sm_hook_add(m, SM_HOOK_PKT_USER, on_iq);
    sm_hook_add(m, SM_HOOK_DISCO_FEATURES, on_features);
    return 0;
}

const struct sm_module_def sm_mod_ping_def = {.name = "ping", .init = init};
