/*
 * test_sm_sub.c - the RFC 6121 subscription state machine (sm/sub.c),
 * row by row against the tables of RFC 6121 Appendix A (A.2 outbound,
 * A.3 inbound) and the pre-approval rules of §3.4.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "sm/sub.h"

#define N STORAGE_SUB_NONE
#define T STORAGE_SUB_TO
#define F STORAGE_SUB_FROM
#define B STORAGE_SUB_BOTH

/* One row: state before (sub, ask, pending_in, approved), the stanza, the
 * state after, and whether it is routed/delivered or answered. */
struct row {
    enum storage_sub sub;
    bool ask, pin, appr;
    enum sub_type t;
    enum storage_sub nsub;
    bool nask, npin, nappr;
    bool forward, auto_sub;
};

static void check(const struct row *rows, size_t n, bool inbound)
{
    for (size_t i = 0; i < n; i++) {
        const struct row *w = &rows[i];
        struct sub_state cur = {
            .sub = w->sub, .ask = w->ask, .pending_in = w->pin, .approved = w->appr};
        struct sub_result r;
        if (inbound)
            sub_inbound(&cur, w->t, &r);
        else
            sub_outbound(&cur, w->t, &r);
        print_message("%s row %zu\n", inbound ? "inbound" : "outbound", i);
        assert_int_equal(r.next.sub, w->nsub);
        assert_int_equal(r.next.ask, w->nask);
        assert_int_equal(r.next.pending_in, w->npin);
        assert_int_equal(r.next.approved, w->nappr);
        assert_int_equal(r.forward, w->forward);
        assert_int_equal(r.auto_subscribed, w->auto_sub);
        assert_int_equal(r.item_changed,
                         w->sub != w->nsub || w->ask != w->nask || w->appr != w->nappr);
        assert_int_equal(r.pending_changed, w->pin != w->npin);
    }
}

/* The user sends (A.2.1-A.2.4, §3.4). */
static void test_outbound(void **state)
{
    static const struct row rows[] = {
        /* subscribe: ask set unless already to/both; always routed */
        {N, 0, 0, 0, SUB_SUBSCRIBE, N, 1, 0, 0, 1, 0},
        {N, 1, 0, 0, SUB_SUBSCRIBE, N, 1, 0, 0, 1, 0},
        {N, 0, 1, 0, SUB_SUBSCRIBE, N, 1, 1, 0, 1, 0},
        {F, 0, 0, 0, SUB_SUBSCRIBE, F, 1, 0, 0, 1, 0},
        {T, 0, 0, 0, SUB_SUBSCRIBE, T, 0, 0, 0, 1, 0},
        {B, 0, 0, 0, SUB_SUBSCRIBE, B, 0, 0, 0, 1, 0},
        /* subscribed: approves a pending request (none->from, to->both) */
        {N, 0, 1, 0, SUB_SUBSCRIBED, F, 0, 0, 0, 1, 0},
        {N, 1, 1, 0, SUB_SUBSCRIBED, F, 1, 0, 0, 1, 0},
        {T, 0, 1, 0, SUB_SUBSCRIBED, B, 0, 0, 0, 1, 0},
        /* ... without one: pre-approval (§3.4.2), not routed */
        {N, 0, 0, 0, SUB_SUBSCRIBED, N, 0, 0, 1, 0, 0},
        {T, 0, 0, 0, SUB_SUBSCRIBED, T, 0, 0, 1, 0, 0},
        {N, 0, 0, 1, SUB_SUBSCRIBED, N, 0, 0, 1, 0, 0},
        /* ... already from/both: nothing */
        {F, 0, 0, 0, SUB_SUBSCRIBED, F, 0, 0, 0, 0, 0},
        {B, 0, 0, 0, SUB_SUBSCRIBED, B, 0, 0, 0, 0, 0},
        /* unsubscribe: to->none, both->from, ask cleared; routed */
        {T, 0, 0, 0, SUB_UNSUBSCRIBE, N, 0, 0, 0, 1, 0},
        {B, 0, 0, 0, SUB_UNSUBSCRIBE, F, 0, 0, 0, 1, 0},
        {N, 1, 0, 0, SUB_UNSUBSCRIBE, N, 0, 0, 0, 1, 0},
        {F, 1, 0, 0, SUB_UNSUBSCRIBE, F, 0, 0, 0, 1, 0},
        {N, 0, 0, 0, SUB_UNSUBSCRIBE, N, 0, 0, 0, 1, 0},
        /* unsubscribed: from->none, both->to, pending and approval cleared */
        {F, 0, 0, 0, SUB_UNSUBSCRIBED, N, 0, 0, 0, 1, 0},
        {B, 0, 0, 0, SUB_UNSUBSCRIBED, T, 0, 0, 0, 1, 0},
        {N, 0, 1, 0, SUB_UNSUBSCRIBED, N, 0, 0, 0, 1, 0},
        {T, 0, 1, 0, SUB_UNSUBSCRIBED, T, 0, 0, 0, 1, 0},
        /* ... a pre-approval alone: cancelled, not routed (§3.2.2 item 2) */
        {N, 0, 0, 1, SUB_UNSUBSCRIBED, N, 0, 0, 0, 0, 0},
        {N, 1, 0, 1, SUB_UNSUBSCRIBED, N, 1, 0, 0, 0, 0},
        {T, 0, 0, 1, SUB_UNSUBSCRIBED, T, 0, 0, 0, 0, 0},
        {F, 1, 0, 0, SUB_UNSUBSCRIBED, N, 1, 0, 0, 1, 0},
    };
    check(rows, sizeof(rows) / sizeof(rows[0]), false);
}

/* The contact sends (A.3.1-A.3.4). */
static void test_inbound(void **state)
{
    static const struct row rows[] = {
        /* subscribe: pending in and delivered ... */
        {N, 0, 0, 0, SUB_SUBSCRIBE, N, 0, 1, 0, 1, 0},
        {N, 1, 0, 0, SUB_SUBSCRIBE, N, 1, 1, 0, 1, 0},
        {T, 0, 0, 0, SUB_SUBSCRIBE, T, 0, 1, 0, 1, 0},
        /* ... already pending: nothing (A.2.1, no duplicate delivery) */
        {N, 0, 1, 0, SUB_SUBSCRIBE, N, 0, 1, 0, 0, 0},
        {T, 0, 1, 0, SUB_SUBSCRIBE, T, 0, 1, 0, 0, 0},
        /* ... already from/both: answered subscribed, not delivered */
        {F, 0, 0, 0, SUB_SUBSCRIBE, F, 0, 0, 0, 0, 1},
        {B, 0, 0, 0, SUB_SUBSCRIBE, B, 0, 0, 0, 0, 1},
        /* ... pre-approved (§3.4.2): from/both at once, answered */
        {N, 0, 0, 1, SUB_SUBSCRIBE, F, 0, 0, 0, 0, 1},
        {T, 0, 0, 1, SUB_SUBSCRIBE, B, 0, 0, 0, 0, 1},
        /* subscribed: only with our request pending */
        {N, 1, 0, 0, SUB_SUBSCRIBED, T, 0, 0, 0, 1, 0},
        {F, 1, 0, 0, SUB_SUBSCRIBED, B, 0, 0, 0, 1, 0},
        {N, 1, 1, 0, SUB_SUBSCRIBED, T, 0, 1, 0, 1, 0},
        {N, 0, 0, 0, SUB_SUBSCRIBED, N, 0, 0, 0, 0, 0},
        {T, 0, 0, 0, SUB_SUBSCRIBED, T, 0, 0, 0, 0, 0},
        {B, 0, 0, 0, SUB_SUBSCRIBED, B, 0, 0, 0, 0, 0},
        /* unsubscribe: from->none, both->to, pending request withdrawn */
        {F, 0, 0, 0, SUB_UNSUBSCRIBE, N, 0, 0, 0, 1, 0},
        {B, 0, 0, 0, SUB_UNSUBSCRIBE, T, 0, 0, 0, 1, 0},
        {N, 0, 1, 0, SUB_UNSUBSCRIBE, N, 0, 0, 0, 1, 0},
        {N, 0, 0, 0, SUB_UNSUBSCRIBE, N, 0, 0, 0, 0, 0},
        {T, 0, 0, 0, SUB_UNSUBSCRIBE, T, 0, 0, 0, 0, 0},
        /* unsubscribed: to->none, both->from, our request refused */
        {T, 0, 0, 0, SUB_UNSUBSCRIBED, N, 0, 0, 0, 1, 0},
        {B, 0, 0, 0, SUB_UNSUBSCRIBED, F, 0, 0, 0, 1, 0},
        {N, 1, 0, 0, SUB_UNSUBSCRIBED, N, 0, 0, 0, 1, 0},
        {F, 1, 0, 0, SUB_UNSUBSCRIBED, F, 0, 0, 0, 1, 0},
        {N, 0, 0, 0, SUB_UNSUBSCRIBED, N, 0, 0, 0, 0, 0},
        {F, 0, 0, 0, SUB_UNSUBSCRIBED, F, 0, 0, 0, 0, 0},
    };
    check(rows, sizeof(rows) / sizeof(rows[0]), true);
}

static void test_parse(void **state)
{
    assert_int_equal(sub_type_parse("subscribe"), SUB_SUBSCRIBE);
    assert_int_equal(sub_type_parse("subscribed"), SUB_SUBSCRIBED);
    assert_int_equal(sub_type_parse("unsubscribe"), SUB_UNSUBSCRIBE);
    assert_int_equal(sub_type_parse("unsubscribed"), SUB_UNSUBSCRIBED);
    assert_int_equal(sub_type_parse("probe"), -1);
    assert_int_equal(sub_type_parse(NULL), -1);
    assert_int_equal(sub_type_parse("Subscribe"), -1);
}

/* The full handshake of RFC 6121 §3.1 seen from both sides. */
static void test_handshake_both_sides(void **state)
{
    struct sub_state user = {0}, contact = {0};
    struct sub_result r;
    sub_outbound(&user, SUB_SUBSCRIBE, &r); /* user asks */
    user = r.next;
    assert_true(r.forward && user.ask);
    sub_inbound(&contact, SUB_SUBSCRIBE, &r); /* contact's server */
    contact = r.next;
    assert_true(r.forward && contact.pending_in);
    sub_outbound(&contact, SUB_SUBSCRIBED, &r); /* contact approves */
    contact = r.next;
    assert_true(r.forward);
    assert_int_equal(contact.sub, F);
    sub_inbound(&user, SUB_SUBSCRIBED, &r); /* back at the user's server */
    user = r.next;
    assert_int_equal(user.sub, T);
    assert_false(user.ask);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbound),
        cmocka_unit_test(test_inbound),
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_handshake_both_sides),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
