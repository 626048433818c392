/*
 * sub.c - the RFC 6121 subscription state machine (see sub.h). Pure.
 *
 * Choices where the RFC leaves room:
 *  - outbound subscribe is always routed (the contact's server decides),
 *    and sets ask unless the user is subscribed already (to/both);
 *  - outbound subscribed with no pending inbound request is a
 *    pre-approval (§3.4.2), not routed;
 *  - outbound unsubscribe/unsubscribed are routed whatever the state, so
 *    a contact whose server disagrees with ours gets back in step (§3.2.2
 *    item 1 says SHOULD NOT for unsubscribed without from or a pending
 *    request), except an unsubscribed that only cancels a pre-approval
 *    (§3.2.2 item 2: MUST NOT);
 *  - inbound stanzas that change nothing are not delivered (§3.1.6,
 *    §3.2.3, §3.3.3: "MUST NOT deliver"), a subscribe while one from the
 *    same contact is pending included (Appendix A.2.1: "None + Pending
 *    In" and "To + Pending In" -> not delivered, no state change): the
 *    stored request is what the user sees, again at each login (§3.1.3).
 */
#include "autoconfig.h"

#include <string.h>

#include "sm/sub.h"

int sub_type_parse(const char *type)
{
    if (type == NULL)
        return -1;
    if (strcmp(type, "subscribe") == 0)
        return SUB_SUBSCRIBE;
    if (strcmp(type, "subscribed") == 0)
        return SUB_SUBSCRIBED;
    if (strcmp(type, "unsubscribe") == 0)
        return SUB_UNSUBSCRIBE;
    if (strcmp(type, "unsubscribed") == 0)
        return SUB_UNSUBSCRIBED;
    return -1;
}

static enum storage_sub add_from(enum storage_sub s)
{
    return s == STORAGE_SUB_TO || s == STORAGE_SUB_BOTH ? STORAGE_SUB_BOTH : STORAGE_SUB_FROM;
}
static enum storage_sub add_to(enum storage_sub s)
{
    return s == STORAGE_SUB_FROM || s == STORAGE_SUB_BOTH ? STORAGE_SUB_BOTH : STORAGE_SUB_TO;
}
static enum storage_sub drop_from(enum storage_sub s)
{
    return s == STORAGE_SUB_BOTH || s == STORAGE_SUB_TO ? STORAGE_SUB_TO : STORAGE_SUB_NONE;
}
static enum storage_sub drop_to(enum storage_sub s)
{
    return s == STORAGE_SUB_BOTH || s == STORAGE_SUB_FROM ? STORAGE_SUB_FROM : STORAGE_SUB_NONE;
}

static void finish(const struct sub_state *cur, struct sub_result *r)
{
    r->item_changed =
        r->next.sub != cur->sub || r->next.ask != cur->ask || r->next.approved != cur->approved;
    r->pending_changed = r->next.pending_in != cur->pending_in;
}

void sub_outbound(const struct sub_state *cur, enum sub_type t, struct sub_result *r)
{
    memset(r, 0, sizeof(*r));
    r->next = *cur;
    switch (t) {
    case SUB_SUBSCRIBE:
        if (!sub_has_to(cur->sub))
            r->next.ask = true;
        r->forward = true;
        break;
    case SUB_SUBSCRIBED:
        if (cur->pending_in) {
            r->next.sub = add_from(cur->sub);
            r->next.pending_in = false;
            r->next.approved = false;
            r->forward = true;
        } else if (!sub_has_from(cur->sub)) {
            r->next.approved = true;
        }
        break;
    case SUB_UNSUBSCRIBE:
        r->next.sub = drop_to(cur->sub);
        r->next.ask = false;
        r->forward = true;
        break;
    case SUB_UNSUBSCRIBED:
        r->next.sub = drop_from(cur->sub);
        r->next.pending_in = false;
        r->next.approved = false;
        /* Cancelling a pre-approval alone is not routed (§3.2.2 item 2:
         * MUST NOT): the contact never learnt of it. */
        r->forward = sub_has_from(cur->sub) || cur->pending_in || !cur->approved;
        break;
    }
    finish(cur, r);
}

void sub_inbound(const struct sub_state *cur, enum sub_type t, struct sub_result *r)
{
    memset(r, 0, sizeof(*r));
    r->next = *cur;
    switch (t) {
    case SUB_SUBSCRIBE:
        if (sub_has_from(cur->sub)) {
            r->auto_subscribed = true;
        } else if (cur->approved) {
            r->next.sub = add_from(cur->sub);
            r->next.approved = false;
            r->auto_subscribed = true;
        } else if (!cur->pending_in) {
            r->next.pending_in = true;
            r->forward = true;
        }
        break;
    case SUB_SUBSCRIBED:
        if (cur->ask) {
            r->next.sub = add_to(cur->sub);
            r->next.ask = false;
            r->forward = true;
        }
        break;
    case SUB_UNSUBSCRIBE:
        if (sub_has_from(cur->sub) || cur->pending_in) {
            r->next.sub = drop_from(cur->sub);
            r->next.pending_in = false;
            r->forward = true;
        }
        break;
    case SUB_UNSUBSCRIBED:
        if (sub_has_to(cur->sub) || cur->ask) {
            r->next.sub = drop_to(cur->sub);
            r->next.ask = false;
            r->forward = true;
        }
        break;
    }
    finish(cur, r);
}
