/*
 * mod.c - the sm's modules: one static table of what is compiled in, the
 * list etc/sm.xml enables (in order), and the hook chains.
 *
 * <modules><module>roster</module>...</modules> names the modules to run,
 * in chain order; without <modules> every module of the table runs in the
 * table's order, which is the order that makes sense (roster before
 * presence, offline flush before the initial broadcast, the server's own
 * iq handlers last). Modules are never loaded from files (STYLE.md).
 *
 * A chain runs the handlers of one hook in module order until one returns
 * something other than SM_PASS. Start-up and the sm's loop.
 */
#include "autoconfig.h"

#include <assert.h>
#include <stdalign.h>
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

static int add(struct sm *sm, const struct sm_module_def *def)
{
    for (size_t i = 0; i < sm->nmods; i++) {
        if (sm->mods[i].def == def) {
            log_err("<modules>: %s listed twice", def->name);
            return ERR_CONFIG;
        }
    }
    if (sm->nmods >= SM_MAX_MODS)
        return ERR_CONFIG;
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

int sm_mods_init(struct sm *sm, const struct xml_node *list)
{
    if (list == NULL) {
        for (size_t i = 0; i < NALL; i++)
            if (add(sm, all[i]) != 0)
                return ERR_CONFIG;
        return 0;
    }
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
            log_err("<modules>: no module named '%.*s'", (int)len, name);
            return ERR_CONFIG;
        }
        if (add(sm, def) != 0)
            return ERR_CONFIG;
    }
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
 * names, at most JID_PART_MAX bytes each) and the session ID. */
size_t sm_mod_stanza_max(void)
{
    static const char shape[] = "<r:route to='' from='' sid=''></r:route>";
    struct xml_limits lim;
    xml_limits_default(&lim);
    return lim.max_stanza_bytes - (sizeof(shape) - 1 + 2 * JID_PART_MAX + SM_SID_LEN);
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
