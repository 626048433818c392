/*
 * mod_disco.c - XEP-0030 Service Discovery for the server's domain and for
 * accounts (answered by the server on the account's behalf, RFC 6120
 * §10.5.3). #info: an identity (server/im, or account/registered) and the
 * features every module adds through the disco-features hook; #items:
 * none (no nodes, no services hosted by the sm). A node= we do not have is
 * item-not-found. Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <string.h>

#include "sm/mod.h"

#define NS_INFO  "http://jabber.org/protocol/disco#info"
#define NS_ITEMS "http://jabber.org/protocol/disco#items"

static void feature(struct xml_node *q, const char *var)
{
    xml_set_attr(xml_add_child(q, NULL, "feature"), "var", var);
}

static int on_iq(struct sm_mod *m, struct sm_pkt *p)
{
    if (strcmp(p->kind, "iq") != 0 || p->type == NULL)
        return SM_PASS;
    if (p->to != NULL && p->to->resource != NULL)
        return SM_PASS;
    struct xml_node *info = xml_child(p->stanza, NS_INFO, "query");
    struct xml_node *items = xml_child(p->stanza, NS_ITEMS, "query");
    if (info == NULL && items == NULL)
        return SM_PASS;
    if (strcmp(p->type, "get") != 0)
        return strcmp(p->type, "set") == 0 ? SM_ERROR(XML_STE_NOT_ALLOWED) : SM_PASS;
    if (xml_get_attr(info ? info : items, "node") != NULL)
        return SM_ERROR(XML_STE_ITEM_NOT_FOUND);
    struct xml_node *r = sm_reply(p->stanza, "result");
    struct xml_node *q = xml_add_child(r, info ? NS_INFO : NS_ITEMS, "query");
    if (info != NULL) {
        struct xml_node *id = xml_add_child(q, NULL, "identity");
        xml_set_attr(id, "category", p->user ? "account" : "server");
        xml_set_attr(id, "type", p->user ? "registered" : "im");
        if (p->user == NULL)
            xml_set_attr(id, "name", m->sm->cfg->version_name);
        feature(q, NS_INFO);
        feature(q, NS_ITEMS);
        struct sm_pkt fp;
        memset(&fp, 0, sizeof(fp));
        fp.stanza = q;
        fp.user = p->user;
        sm_hook_run(m->sm, SM_HOOK_DISCO_FEATURES, &fp);
    }
    sm_route(m->sm, r);
    xml_free(r);
    return SM_HANDLED;
}

static int init(struct sm_mod *m)
{
    sm_hook_add(m, SM_HOOK_PKT_SM, on_iq);
    sm_hook_add(m, SM_HOOK_PKT_USER, on_iq);
    return 0;
}

const struct sm_module_def sm_mod_disco_def = {.name = "disco", .init = init};
