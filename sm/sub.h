/*
 * sub.h - the presence subscription state machine of RFC 6121 (§3 and the
 * tables of Appendix A), as pure functions: no I/O, so that the whole
 * table is unit-tested (tests/unit/test_sm_sub.c).
 *
 * The state of one contact in a user's roster: the subscription (none, to,
 * from, both), a pending outbound request (ask), a pending inbound request
 * (kept in storage's subscription_requests) and a pre-approval (§3.4).
 */
#ifndef PARLEY_SM_SUB_H
#define PARLEY_SM_SUB_H

#include <stdbool.h>

#include "storage/storage.h"

struct sub_state {
    enum storage_sub sub;
    bool ask;        /* Pending Out */
    bool pending_in; /* Pending In */
    bool approved;   /* pre-approved (§3.4) */
};

enum sub_type { SUB_SUBSCRIBE, SUB_SUBSCRIBED, SUB_UNSUBSCRIBE, SUB_UNSUBSCRIBED };

struct sub_result {
    struct sub_state next;
    bool item_changed;    /* sub/ask/approved changed: store and push the item */
    bool pending_changed; /* pending_in changed: store or delete the request */
    bool forward;         /* outbound: route to the contact; inbound: deliver to the user */
    bool auto_subscribed; /* inbound: answer 'subscribed' on the user's behalf */
};

/* Parse a presence type; -1 when it is not a subscription type. */
int sub_type_parse(const char *type);

/* The user sends type to the contact (§3.1.2, 3.1.5, 3.2.2, 3.3.2, 3.4). */
void sub_outbound(const struct sub_state *cur, enum sub_type t, struct sub_result *r);
/* The contact sends type to the user (§3.1.3, 3.1.6, 3.2.3, 3.3.3). */
void sub_inbound(const struct sub_state *cur, enum sub_type t, struct sub_result *r);

/* Whether presence goes from the user to the contact (from/both) and
 * from the contact to the user (to/both). */
static inline bool sub_has_from(enum storage_sub s)
{
    return s == STORAGE_SUB_FROM || s == STORAGE_SUB_BOTH;
}
static inline bool sub_has_to(enum storage_sub s)
{
    return s == STORAGE_SUB_TO || s == STORAGE_SUB_BOTH;
}

#endif
