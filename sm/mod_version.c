/*
 * mod_version.c - XEP-0092 Software Version of the server: name and
 * version from etc/sm.xml (<version><name>, the build's version), the
 * operating system only when <version><os> is yes (it helps attackers more
 * than users). Only for the server's domain: a version query to an account
 * is for its clients. Runs on the sm's loop.
 */
#include "autoconfig.h"

#include <string.h>
#include <sys/utsname.h>

#include "sm/mod.h"

#define NS_VERSION "jabber:iq:version"

static void add_text(struct xml_node *parent, const char *name, const char *text)
{
    xml_add_text(xml_add_child(parent, NULL, name), text, strlen(text));
}

static int on_iq(struct sm_mod *m, struct sm_pkt *p)
{
    if (strcmp(p->kind, "iq") != 0 || p->type == NULL ||
        xml_child(p->stanza, NS_VERSION, "query") == NULL)
        return SM_PASS;
    if (strcmp(p->type, "get") != 0)
        return strcmp(p->type, "set") == 0 ? SM_ERROR(XML_STE_NOT_ALLOWED) : SM_PASS;
    struct xml_node *r = sm_reply(p->stanza, "result");
    struct xml_node *q = xml_add_child(r, NS_VERSION, "query");
    add_text(q, "name", m->sm->cfg->version_name);
    add_text(q, "version", PACKAGE_VERSION);
    struct utsname un;
    if (m->sm->cfg->version_os && uname(&un) == 0)
        add_text(q, "os", un.sysname);
    sm_route(m->sm, r);
    xml_free(r);
    return SM_HANDLED;
}

static int on_features(struct sm_mod *m, struct sm_pkt *p)
{
    if (p->user == NULL)
        xml_set_attr(xml_add_child(p->stanza, NULL, "feature"), "var", NS_VERSION);
    return SM_PASS;
}

static int init(struct sm_mod *m)
{
    sm_hook_add(m, SM_HOOK_PKT_SM, on_iq);
    sm_hook_add(m, SM_HOOK_DISCO_FEATURES, on_features);
    return 0;
}

const struct sm_module_def sm_mod_version_def = {.name = "version", .init = init};
