/*
 * mod.h - the modules compiled into parley-sm (one file each, sm/mod_*.c)
 * and what they share with each other. The table that orders them is in
 * mod.c.
 */
#ifndef PARLEY_SM_MOD_H
#define PARLEY_SM_MOD_H

#include "sm/sm.h"

extern const struct sm_module_def sm_mod_roster_def;
extern const struct sm_module_def sm_mod_presence_def;
extern const struct sm_module_def sm_mod_message_def;
extern const struct sm_module_def sm_mod_disco_def;
extern const struct sm_module_def sm_mod_ping_def;
extern const struct sm_module_def sm_mod_version_def;
extern const struct sm_module_def sm_mod_welcome_def;

/* The largest stanza (as serialised) sm may send to a session: the stanza
 * size the router takes (<limits><router-stanza-size>), less the largest
 * envelope around it and SM_RETURN_ROOM. A bigger one is refused
 * (sm_deliver: the router would end the sm's connection with
 * policy-violation). */
size_t sm_mod_stanza_max(const struct sm *sm);

#endif
