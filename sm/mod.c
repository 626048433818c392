/*
 * mod.c - the sm's modules: one static table of what is compiled in, the
 * list etc/sm.xml enables, and the hook chains.
 *
 * <modules><module>roster</module>...</modules> names the modules to run;
 * without <modules> every module of the table runs. The list's order is
 * the order of each hook's chain, but no behaviour depends on it: the
 * modules' handlers of one hook take disjoint stanzas (by kind and
 * payload namespace), and what must follow another module's work hangs on
 * the hook that work runs (mod_message's offline flush is on
 * sess-available, which mod_presence runs once it recorded the presence).
 * What does matter is that a module a module needs is there: checked
 * here, with every name, before any module starts (deps below), so a list
 * that would lose stanzas or fail every presence is refused at start.
 * Modules are never loaded from files (STYLE.md).
 *
 * A chain runs the handlers of one hook in module order until one returns
 * something other than SM_PASS. Start-up and the sm's loop.
 */
#include "autoconfig.h"

#include <assert.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "common/jid.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/xml.h"
#include "sm/mod.h"
#include "sm/sm.h"

static const struct sm_module_def *const all[] = {
    &sm_mod_roster_def, &sm_mod_message_def, &sm_mod_presence_def, &sm_mod_disco_def,
    &sm_mod_ping_def,   &sm_mod_version_def, &sm_mod_welcome_def,
};
#define NALL (sizeof(all) / sizeof(all[0]))

void sm_hook_add(struct sm_mod *m, enum sm_hook h, sm_handler fn)
{
    struct sm *sm = m->sm;
    size_t n = sm->nhooks[h];
    if (n >= sizeof(sm->hooks[h]) / sizeof(sm->hooks[h][0]))
        return;
    sm->hooks[h][n].fn = fn;
    sm->hooks[h][n].mod = m;
    sm->nhooks[h] = n + 1;
}

int sm_hook_run(struct sm *sm, enum sm_hook h, struct sm_pkt *p)
{
    for (size_t i = 0; i < sm->nhooks[h]; i++) {
        int r = sm->hooks[h][i].fn(sm->hooks[h][i].mod, p);
        if (r != SM_PASS)
            return r;
    }
    return SM_PASS;
}

static const struct sm_module_def *find(const char *name, size_t len)
{
    for (size_t i = 0; i < NALL; i++)
        if (strlen(all[i]->name) == len && memcmp(all[i]->name, name, len) == 0)
            return all[i];
    return NULL;
}

/* What a module cannot work without, and why (the start-up error says). */
static const struct {
    const struct sm_module_def *mod, *needs;
    const char *why;
} deps[] = {
    {&sm_mod_presence_def, &sm_mod_roster_def,
     "subscriptions and who gets a user's presence are roster items: every presence would fail "
     "with internal-server-error"},
    {&sm_mod_message_def, &sm_mod_presence_def,
     "only presence makes a session available: every message to a bare JID would be stored "
     "offline and never delivered"},
    {&sm_mod_welcome_def, &sm_mod_message_def,
     "the welcome is stored offline, and only message delivers what is stored"},
};
#define NDEPS (sizeof(deps) / sizeof(deps[0]))

static bool listed(const struct sm_module_def *const *defs, size_t n,
                   const struct sm_module_def *def)
{
    for (size_t i = 0; i < n; i++)
        if (defs[i] == def)
            return true;
    return false;
}

static int add(struct sm *sm, const struct sm_module_def *def)
{
    struct sm_mod *m = &sm->mods[sm->nmods];
    m->def = def;
    m->sm = sm;
    m->index = def->mdata ? (int)sm->nslots++ : -1;
    sm->nmods++;
    int rc = def->init ? def->init(m) : 0;
    if (rc != 0)
        log_err("module %s failed to start: %s", def->name, err_str(rc));
    return rc;
}

/* The modules <modules> names, in its order, into defs (NALL at most:
 * each once); ERR_CONFIG, logged, for anything else. */
static int parse_list(const struct xml_node *list, const struct sm_module_def **defs, size_t *n)
{
    *n = 0;
    if (list->attrs != NULL) {
        log_err("<modules> takes no attributes");
        return ERR_CONFIG;
    }
    for (struct xml_node *c = list->children; c != NULL; c = c->next) {
        if (c->type != XML_ELEM)
            continue;
        if (strcmp(c->name, "module") != 0) {
            log_err("<modules>: unknown element <%s>", c->name);
            return ERR_CONFIG;
        }
        size_t len;
        const char *name = xml_text(c, &len);
        while (len > 0 && (*name == ' ' || *name == '\n' || *name == '\t')) {
            name++;
            len--;
        }
        while (len > 0 && (name[len - 1] == ' ' || name[len - 1] == '\n' || name[len - 1] == '\t'))
            len--;
        const struct sm_module_def *def = find(name, len);
        if (def == NULL) {
            char names[NALL * 16] = "";
            for (size_t i = 0; i < NALL; i++)
                snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
                         i ? ", " : "", all[i]->name);
            log_err("<modules>: no module named '%.*s' (there are: %s)", (int)len, name, names);
            return ERR_CONFIG;
        }
        if (listed(defs, *n, def)) {
            log_err("<modules>: %s listed twice", def->name);
            return ERR_CONFIG;
        }
        defs[(*n)++] = def;
    }
    return 0;
}

int sm_mods_init(struct sm *sm, const struct xml_node *list)
{
    static_assert(NALL <= SM_MAX_MODS, "every module fits");
    const struct sm_module_def *defs[NALL];
    size_t n = NALL;
    if (list == NULL)
        memcpy(defs, all, sizeof(all));
    else if (parse_list(list, defs, &n) != 0)
        return ERR_CONFIG;
    int rc = 0;
    for (size_t i = 0; i < NDEPS; i++) {
        if (listed(defs, n, deps[i].mod) && !listed(defs, n, deps[i].needs)) {
            log_err("<modules>: module %s needs module %s (%s): add <module>%s</module> or "
                    "leave out %s",
                    deps[i].mod->name, deps[i].needs->name, deps[i].why, deps[i].needs->name,
                    deps[i].mod->name);
            rc = ERR_CONFIG;
        }
    }
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (add(sm, defs[i]) != 0)
            return ERR_CONFIG;
    return 0;
}

void sm_mods_free(struct sm *sm)
{
    for (size_t i = sm->nmods; i-- > 0;)
        if (sm->mods[i].def->free != NULL)
            sm->mods[i].def->free(&sm->mods[i]);
    sm->nmods = 0;
    sm->nslots = 0;
}

/* The envelope is sm.c's route_head: a c2s name and a domain (router
 * names, at most JID_PART_MAX bytes each) and the session ID; and room for
 * the error attribute of its return (SM_RETURN_ROOM). */
size_t sm_mod_stanza_max(const struct sm *sm)
{
    static const char shape[] = "<r:route to='' from='' sid=''></r:route>";
    return sm->cfg->router_stanza_size -
           (sizeof(shape) - 1 + 2 * JID_PART_MAX + SM_SID_LEN + SM_RETURN_ROOM);
}

static_assert(sizeof(struct sm_user) % alignof(void *) == 0, "slots right after sm_user");
static_assert(sizeof(struct sm_sess) % alignof(void *) == 0, "slots right after sm_sess");

void *sm_mods_calloc(const struct sm *sm, size_t size)
{
    /* The slots start at size rounded up to a pointer's alignment (a
     * no-op for the structs that hold pointers, as these do: obj + 1). */
    size = (size + alignof(void *) - 1) / alignof(void *) * alignof(void *);
    return xcalloc(1, size + sm->nslots * sizeof(void *));
}
