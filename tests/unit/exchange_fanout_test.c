/*
 * exchange_fanout_test.c: the `fanout` exchange type, through the real plugin loaded by the
 * real broker: every bound queue gets every message whatever its routing key, once each,
 * and unbinding (in any order) stops exactly that queue.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "testutil.h"

static struct tu_broker tb;
static struct wr_exchange *ex;

static void setup(void)
{
    tu_broker_init(&tb);
    ex = tu_exchange(&tb, "fx", "fanout");
}

static void teardown(void)
{
    tu_broker_fini(&tb);
}

TestSuite(exchange_fanout, .init = setup, .fini = teardown);

static void bind(struct wr_queue *q, const char *key) { tu_bind(ex, q, key, NULL); }

static void unbind(struct wr_queue *q, const char *key) { tu_unbind(ex, q, key, NULL); }

Test(exchange_fanout, no_binding_means_unroutable)
{
    cr_assert_eq(tu_publish(&tb, "fx", "k", "m", NULL), 0);
}

Test(exchange_fanout, every_queue_gets_every_message_whatever_the_key)
{
    enum { N = 10 };
    struct wr_queue *qs[N];
    char name[16];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "q%d", i);
        qs[i] = tu_queue(&tb, name);
        snprintf(name, sizeof name, "key%d", i); /* keys are ignored */
        bind(qs[i], name);
    }
    cr_assert_eq(tu_publish(&tb, "fx", "anything", "first", NULL), N);
    cr_assert_eq(tu_publish(&tb, "fx", "", "second", NULL), N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(wr_queue_depth(qs[i]), 2, "queue %d", i);
        char *body = tu_get_body(qs[i]);
        cr_assert_str_eq(body, "first");
        free(body);
        body = tu_get_body(qs[i]);
        cr_assert_str_eq(body, "second");
        free(body);
    }
}

Test(exchange_fanout, a_queue_bound_twice_gets_one_copy)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    bind(q, "a");
    bind(q, "b");
    cr_assert_eq(wr_exchange_binding_count(ex), 2);
    cr_assert_eq(tu_publish(&tb, "fx", "x", "m", NULL), 1);
    cr_assert_eq(wr_queue_depth(q), 1);
}

Test(exchange_fanout, unbind_stops_exactly_that_queue)
{
    enum { N = 6 };
    struct wr_queue *qs[N];
    char name[16];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "q%d", i);
        qs[i] = tu_queue(&tb, name);
        bind(qs[i], "");
    }
    /* Remove from the middle, the front and the back of the plugin's array. */
    unbind(qs[2], "");
    unbind(qs[0], "");
    unbind(qs[5], "");
    cr_assert_eq(tu_publish(&tb, "fx", "k", "m", NULL), 3);
    for (int i = 0; i < N; i++) {
        bool kept = i == 1 || i == 3 || i == 4;
        cr_assert_eq(wr_queue_depth(qs[i]), kept ? 1 : 0, "queue %d", i);
    }
    /* A binding whose key differs is another binding: unbinding it leaves this one. */
    unbind(qs[1], "other");
    cr_assert_eq(tu_publish(&tb, "fx", "k", "m", NULL), 3);
    for (int i = 0; i < N; i++)
        unbind(qs[i], "");
    cr_assert_eq(tu_publish(&tb, "fx", "k", "m", NULL), 0);
    bind(qs[4], "");
    cr_assert_eq(tu_publish(&tb, "fx", "k", "m", NULL), 1);
}
