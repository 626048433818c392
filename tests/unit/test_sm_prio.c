/*
 * test_sm_prio.c - which session gets a message to the bare JID
 * (sm_user_top_sess, the policy documented in sm/mod_message.c): the
 * highest non-negative priority among available sessions, on a tie the
 * one that sent presence last; none when every session is unavailable or
 * negative.
 */
#include "autoconfig.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sm/sm.h"

struct fixture {
    struct sm_user u;
    struct sm_sess s[4];
};

static void setup_sessions(struct fixture *f, const int *prio, const bool *avail,
                           const uint64_t *seq, size_t n)
{
    memset(f, 0, sizeof(*f));
    for (size_t i = 0; i < n; i++) {
        f->s[i].priority = prio[i];
        f->s[i].available = avail[i];
        f->s[i].active_seq = seq[i];
        f->s[i].next = i + 1 < n ? &f->s[i + 1] : NULL;
        f->s[i].user = &f->u;
    }
    f->u.sessions = n ? &f->s[0] : NULL;
    f->u.nsess = (unsigned)n;
}

static void test_highest_priority(void **state)
{
    struct fixture f;
    setup_sessions(&f, (int[]){1, 5, 3}, (bool[]){1, 1, 1}, (uint64_t[]){9, 1, 5}, 3);
    assert_ptr_equal(sm_user_top_sess(&f.u), &f.s[1]);
}

static void test_tie_most_recent(void **state)
{
    struct fixture f;
    setup_sessions(&f, (int[]){5, 5, 0}, (bool[]){1, 1, 1}, (uint64_t[]){3, 7, 9}, 3);
    assert_ptr_equal(sm_user_top_sess(&f.u), &f.s[1]);
    f.s[0].active_seq = 8;
    assert_ptr_equal(sm_user_top_sess(&f.u), &f.s[0]);
}

static void test_negative_and_unavailable(void **state)
{
    struct fixture f;
    setup_sessions(&f, (int[]){-1, 10, 0}, (bool[]){1, 0, 1}, (uint64_t[]){1, 2, 3}, 3);
    assert_ptr_equal(sm_user_top_sess(&f.u), &f.s[2]); /* 10 is not available */
    f.s[2].priority = -5;
    assert_null(sm_user_top_sess(&f.u)); /* only negative ones left */
    setup_sessions(&f, NULL, NULL, NULL, 0);
    assert_null(sm_user_top_sess(&f.u));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_highest_priority),
        cmocka_unit_test(test_tie_most_recent),
        cmocka_unit_test(test_negative_and_unavailable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
