/*
 * exchange_direct_test.c: the `direct` exchange type, through the real plugin loaded by the
 * real broker: exact key equality, several bindings of one key, unbind, and the default
 * exchange (a direct exchange every queue is bound to by its own name).
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
    ex = tu_exchange(&tb, "dx", "direct");
}

static void teardown(void)
{
    tu_broker_fini(&tb);
}

TestSuite(exchange_direct, .init = setup, .fini = teardown);

static const char *routed(struct wr_exchange *e, const char *rk)
{
    return tu_routed(e, rk, NULL);
}

static void bind(struct wr_queue *q, const char *key) { tu_bind(ex, q, key, NULL); }

static void unbind(struct wr_queue *q, const char *key) { tu_unbind(ex, q, key, NULL); }

Test(exchange_direct, exact_key_hits_and_everything_else_misses)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    bind(q, "orders.eu");
    cr_assert_eq(tu_publish(&tb, "dx", "orders.eu", "one", NULL), 1);
    cr_assert_eq(wr_queue_depth(q), 1);
    char *body = tu_get_body(q);
    cr_assert_str_eq(body, "one");
    free(body);
    /* No prefix, suffix, case folding or wildcard: only equality. */
    cr_assert_str_eq(routed(ex, "orders"), "");
    cr_assert_str_eq(routed(ex, "orders.eu.x"), "");
    cr_assert_str_eq(routed(ex, "Orders.eu"), "");
    cr_assert_str_eq(routed(ex, "orders.*"), "");
    cr_assert_str_eq(routed(ex, "#"), "");
    cr_assert_str_eq(routed(ex, ""), "");
    cr_assert_eq(tu_publish(&tb, "dx", "orders.us", "two", NULL), 0);
    cr_assert_eq(wr_queue_depth(q), 0);
}

Test(exchange_direct, empty_key_is_a_key_like_any_other)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    bind(q, "");
    cr_assert_str_eq(routed(ex, ""), "q");
    cr_assert_str_eq(routed(ex, "a"), "");
}

Test(exchange_direct, several_queues_bound_with_one_key_all_receive)
{
    struct wr_queue *a = tu_queue(&tb, "a");
    struct wr_queue *b = tu_queue(&tb, "b");
    struct wr_queue *c = tu_queue(&tb, "c");
    bind(a, "black");
    bind(b, "black");
    bind(c, "green");
    cr_assert_eq(tu_publish(&tb, "dx", "black", "m", NULL), 2);
    cr_assert_eq(wr_queue_depth(a), 1);
    cr_assert_eq(wr_queue_depth(b), 1);
    cr_assert_eq(wr_queue_depth(c), 0);
    cr_assert_str_eq(routed(ex, "green"), "c");
}

Test(exchange_direct, one_queue_bound_with_two_keys_gets_each_message_once)
{
    struct wr_queue *q = tu_queue(&tb, "q");
    bind(q, "a");
    bind(q, "b");
    bind(q, "a"); /* the same binding again: a no-op */
    cr_assert_eq(wr_exchange_binding_count(ex), 2);
    cr_assert_eq(tu_publish(&tb, "dx", "a", "1", NULL), 1);
    cr_assert_eq(tu_publish(&tb, "dx", "b", "2", NULL), 1);
    cr_assert_eq(wr_queue_depth(q), 2);
}

Test(exchange_direct, unbind_removes_only_that_binding)
{
    struct wr_queue *a = tu_queue(&tb, "a");
    struct wr_queue *b = tu_queue(&tb, "b");
    bind(a, "k");
    bind(b, "k");
    bind(a, "other");
    unbind(a, "k");
    cr_assert_str_eq(routed(ex, "k"), "b");
    cr_assert_str_eq(routed(ex, "other"), "a");
    unbind(b, "k");
    cr_assert_str_eq(routed(ex, "k"), "");
    unbind(b, "k"); /* already gone: not an error, as in RabbitMQ */
    bind(b, "k");   /* and the key can come back */
    cr_assert_str_eq(routed(ex, "k"), "b");
}

Test(exchange_direct, many_keys_survive_growth_and_removal)
{
    /* Enough distinct keys to grow the table several times, then remove every other one, so
     * lookups cross both resizes and the back-shifting of deleted slots. */
    enum { N = 300 };
    struct wr_queue *qs[N];
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "q%d", i);
        qs[i] = tu_queue(&tb, name);
        snprintf(name, sizeof name, "key.%d", i);
        bind(qs[i], name);
    }
    for (int i = 0; i < N; i += 2) {
        snprintf(name, sizeof name, "key.%d", i);
        unbind(qs[i], name);
    }
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(name, sizeof name, "key.%d", i);
        snprintf(want, sizeof want, "q%d", i);
        cr_assert_str_eq(routed(ex, name), i % 2 ? want : "", "key %s", name);
    }
}

Test(exchange_direct, default_exchange_routes_by_queue_name)
{
    struct wr_queue *q = tu_queue(&tb, "tasks");
    cr_assert_eq(tu_publish(&tb, "", "tasks", "job", NULL), 1);
    cr_assert_eq(tu_publish(&tb, "", "nosuchqueue", "job", NULL), 0);
    char *body = tu_get_body(q);
    cr_assert_str_eq(body, "job");
    free(body);
}

Test(exchange_direct, deleting_a_bound_queue_removes_its_bindings)
{
    struct wr_queue *a = tu_queue(&tb, "a");
    struct wr_queue *b = tu_queue(&tb, "b");
    bind(a, "k");
    bind(b, "k");
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_delete(a, false, false, NULL, &err), WR_OK, "%s", err.msg);
    cr_assert_str_eq(routed(ex, "k"), "b");
}
