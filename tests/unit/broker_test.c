/*
 * broker_test.c: the broker model as a transport drives it: publish → route → memory queue
 * → consumer, prefetch, ack / nack / reject with requeue and the redelivered flag, consumer
 * cancel returning unacked messages, exchange-to-exchange bindings and cycles, the default
 * and predeclared exchanges, declare equivalence, deletion, auto-delete and basic.get.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "testutil.h"

static struct tu_broker t;
static struct wr_error err;

static void setup(void)
{
    tu_broker_init(&t);
    memset(&err, 0, sizeof err);
}

static void teardown(void) { tu_broker_fini(&t); }

TestSuite(broker, .init = setup, .fini = teardown);

/* A consumer that records what it was given. */
struct rec {
    struct wr_consumer *c;
    char bodies[64][32];
    uint64_t tags[64];
    bool redelivered[64];
    int n;
    bool ready;       /* what the ready op answers */
    bool cancelled;
};

static void rec_deliver(struct wr_consumer *c, const struct wr_delivery *d, void *data)
{
    (void)c;
    struct rec *r = data;
    cr_assert_lt(r->n, 64);
    size_t len;
    const uint8_t *p = wr_msg_body(d->msg, &len);
    cr_assert_lt(len, 32);
    memcpy(r->bodies[r->n], p, len);
    r->bodies[r->n][len] = '\0';
    r->tags[r->n] = d->tag;
    r->redelivered[r->n] = d->redelivered;
    r->n++;
}

static bool rec_ready(struct wr_consumer *c, void *data)
{
    (void)c;
    return ((struct rec *)data)->ready;
}

static void rec_cancelled(struct wr_consumer *c, void *data)
{
    (void)c;
    ((struct rec *)data)->cancelled = true;
}

static const struct wr_consumer_ops rec_ops = {
    .size = sizeof rec_ops, .deliver = rec_deliver, .ready = rec_ready,
    .cancelled = rec_cancelled};

static void consume(struct wr_queue *q, struct rec *r, uint32_t prefetch, bool no_ack)
{
    memset(r, 0, sizeof *r);
    r->ready = true;
    struct wr_consume_args args = {.prefetch = prefetch, .no_ack = no_ack};
    cr_assert_eq(wr_queue_consume(q, &rec_ops, &args, r, &r->c, &err), WR_OK, "%s", err.msg);
}

struct count_cond {
    struct rec *r;
    int n;
};

static bool has_n(void *data)
{
    struct count_cond *cc = data;
    return cc->r->n >= cc->n;
}

/* Waits until r received n messages (bounded), then lets the loop settle so that a delivery
 * beyond n would show. */
static void wait_for(struct rec *r, int n)
{
    struct count_cond cc = {r, n};
    cr_assert(tu_wait(t.lp, has_n, &cc, 2000), "consumer got %d of %d messages", r->n, n);
    tu_drain(t.lp, 100);
}

static void publish_n(const char *ex, const char *key, int n)
{
    for (int i = 1; i <= n; i++) {
        char body[16];
        snprintf(body, sizeof body, "m%d", i);
        cr_assert_eq(tu_publish(&t, ex, key, body, NULL), 1);
    }
}

Test(broker, publish_route_consume)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec r;
    consume(q, &r, 0, false);
    publish_n("", "q", 3);
    wait_for(&r, 3);
    cr_assert_eq(r.n, 3);
    cr_assert_str_eq(r.bodies[0], "m1");
    cr_assert_str_eq(r.bodies[2], "m3");
    cr_assert_eq(wr_queue_unacked(q), 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(wr_consumer_ack(r.c, r.tags[i], &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_queue_unacked(q), 0);
    cr_assert_eq(wr_queue_depth(q), 0);
    cr_assert_eq(wr_consumer_ack(r.c, r.tags[0], &err), WR_ENOTFOUND, "double ack accepted");
}

Test(broker, deliveries_are_deferred_not_inline)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec r;
    consume(q, &r, 0, false);
    publish_n("", "q", 1);
    cr_assert_eq(r.n, 0, "delivered inside the publish call");
    wait_for(&r, 1);
}

Test(broker, prefetch_limits_unacked)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec r;
    consume(q, &r, 2, false);
    publish_n("", "q", 5);
    wait_for(&r, 2);
    cr_assert_eq(r.n, 2, "prefetch 2 but %d delivered", r.n);
    cr_assert_eq(wr_queue_depth(q), 3);
    cr_assert_eq(wr_consumer_ack(r.c, r.tags[0], &err), WR_OK);
    wait_for(&r, 3);
    cr_assert_eq(r.n, 3);
    cr_assert_str_eq(r.bodies[2], "m3");
    wr_consumer_set_prefetch(r.c, 0);
    wait_for(&r, 5);
    cr_assert_eq(r.n, 5);
}

Test(broker, nack_requeue_keeps_order_and_flags_redelivered)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec r;
    consume(q, &r, 3, false);
    publish_n("", "q", 4);
    wait_for(&r, 3);
    /* Requeue m3 then m1: they go back ahead of m4, in their original order. */
    cr_assert_eq(wr_consumer_nack(r.c, r.tags[2], true, &err), WR_OK);
    cr_assert_eq(wr_consumer_nack(r.c, r.tags[0], true, &err), WR_OK);
    wait_for(&r, 5);
    cr_assert_str_eq(r.bodies[3], "m1");
    cr_assert(r.redelivered[3]);
    cr_assert_str_eq(r.bodies[4], "m3");
    cr_assert(r.redelivered[4]);
    cr_assert_not(r.redelivered[0]);
    cr_assert_eq(wr_consumer_ack(r.c, r.tags[1], &err), WR_OK);
    wait_for(&r, 6);
    cr_assert_str_eq(r.bodies[5], "m4");
    cr_assert_not(r.redelivered[5]);
}

Test(broker, reject_without_requeue_drops)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec r;
    consume(q, &r, 0, false);
    publish_n("", "q", 1);
    wait_for(&r, 1);
    cr_assert_eq(wr_consumer_nack(r.c, r.tags[0], false, &err), WR_OK);
    tu_drain(t.lp, 100);
    cr_assert_eq(r.n, 1);
    cr_assert_eq(wr_queue_depth(q), 0);
    cr_assert_eq(wr_queue_unacked(q), 0);
}

Test(broker, round_robin_between_consumers)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec a, b;
    consume(q, &a, 0, true);
    consume(q, &b, 0, true);
    publish_n("", "q", 6);
    struct count_cond cc = {&b, 3};
    cr_assert(tu_wait(t.lp, has_n, &cc, 2000));
    tu_drain(t.lp, 100);
    cr_assert_eq(a.n, 3);
    cr_assert_eq(b.n, 3);
    cr_assert_str_eq(a.bodies[0], "m1");
    cr_assert_str_eq(b.bodies[0], "m2");
    cr_assert_eq(wr_queue_unacked(q), 0, "no_ack deliveries stayed unacked");
}

Test(broker, cancel_returns_unacked_to_the_queue)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec a, b;
    consume(q, &a, 0, false);
    publish_n("", "q", 3);
    wait_for(&a, 3);
    cr_assert_eq(wr_consumer_ack(a.c, a.tags[1], &err), WR_OK);
    wr_consumer_cancel(a.c, true);
    cr_assert_eq(wr_queue_depth(q), 2);
    consume(q, &b, 0, false);
    wait_for(&b, 2);
    cr_assert_eq(b.n, 2);
    cr_assert_str_eq(b.bodies[0], "m1");
    cr_assert_str_eq(b.bodies[1], "m3");
    cr_assert(b.redelivered[0] && b.redelivered[1]);
}

Test(broker, cancel_keeping_unacked_lets_caller_settle)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec a;
    consume(q, &a, 0, false);
    publish_n("", "q", 2);
    wait_for(&a, 2);
    uint64_t t0 = a.tags[0], t1 = a.tags[1];
    wr_consumer_cancel(a.c, false);
    cr_assert_eq(wr_queue_unacked(q), 2);
    cr_assert_eq(wr_queue_ack(q, t0, &err), WR_OK);
    cr_assert_eq(wr_queue_nack(q, t1, true, &err), WR_OK);
    cr_assert_eq(wr_queue_depth(q), 1);
    char *body = tu_get_body(q);
    cr_assert_str_eq(body, "m2");
    free(body);
}

Test(broker, ready_op_holds_deliveries_until_kicked)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec r;
    consume(q, &r, 0, true);
    r.ready = false;
    publish_n("", "q", 2);
    tu_drain(t.lp, 100);
    cr_assert_eq(r.n, 0);
    r.ready = true;
    wr_consumer_kick(r.c);
    wait_for(&r, 2);
    cr_assert_eq(r.n, 2);
}

Test(broker, exclusive_consumer)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec a, b;
    memset(&a, 0, sizeof a);
    struct wr_consume_args ex = {.exclusive = true};
    cr_assert_eq(wr_queue_consume(q, &rec_ops, &ex, &a, &a.c, &err), WR_OK);
    memset(&b, 0, sizeof b);
    struct wr_consume_args plain = {0};
    cr_assert_eq(wr_queue_consume(q, &rec_ops, &plain, &b, &b.c, &err), WR_EBUSY);
}

Test(broker, basic_get)
{
    struct wr_queue *q = tu_queue(&t, "q");
    struct wr_delivery d;
    cr_assert_eq(wr_queue_get(q, false, &d, &err), WR_ENOTFOUND);
    publish_n("", "q", 2);
    cr_assert_eq(wr_queue_get(q, false, &d, &err), WR_OK);
    cr_assert_not(d.redelivered);
    wr_msg_unref(d.msg);
    cr_assert_eq(wr_queue_unacked(q), 1);
    cr_assert_eq(wr_queue_nack(q, d.tag, true, &err), WR_OK);
    cr_assert_eq(wr_queue_get(q, true, &d, &err), WR_OK);
    cr_assert(d.redelivered);
    size_t len;
    cr_assert_eq(memcmp(wr_msg_body(d.msg, &len), "m1", 2), 0);
    wr_msg_unref(d.msg);
    cr_assert_eq(wr_queue_unacked(q), 0);
    cr_assert_eq(wr_queue_depth(q), 1);
}

Test(broker, unroutable_publish_returns_zero)
{
    tu_queue(&t, "q");
    cr_assert_eq(tu_publish(&t, "", "nobody", "x", NULL), 0);
    cr_assert_eq(tu_publish(&t, "amq.direct", "q", "x", NULL), 0);
}

Test(broker, max_message_size)
{
    tu_queue(&t, "q");
    wr_broker_set_max_message_size(t.b, 4);
    cr_assert_eq(tu_publish(&t, "", "q", "12345", NULL), WR_ELIMIT);
    cr_assert_eq(tu_publish(&t, "", "q", "1234", NULL), 1);
}

Test(broker, predeclared_exchanges)
{
    const char *names[] = {"", "amq.direct", "amq.fanout", "amq.topic", "amq.headers",
                           "amq.match"};
    const char *types[] = {"direct", "direct", "fanout", "topic", "headers", "headers"};
    for (int i = 0; i < 6; i++) {
        struct wr_exchange *ex = wr_exchange_find(t.vh, names[i]);
        cr_assert_not_null(ex, "missing '%s'", names[i]);
        cr_assert_str_eq(wr_exchange_type(ex), types[i]);
        cr_assert(wr_exchange_is_durable(ex));
        cr_assert_eq(wr_exchange_delete(ex, false, &err), WR_EPERM);
    }
    struct wr_exchange_decl decl = {.name = "amq.custom", .type = "direct"};
    cr_assert_eq(wr_exchange_declare(t.vh, &decl, NULL, &err), WR_EPERM);
    struct wr_exchange_decl same = {.name = "amq.topic", .type = "topic", .durable = true};
    cr_assert_eq(wr_exchange_declare(t.vh, &same, NULL, &err), WR_OK, "%s", err.msg);
}

Test(broker, default_exchange_bindings_are_implicit)
{
    struct wr_queue *q = tu_queue(&t, "q");
    struct wr_exchange *def = wr_exchange_find(t.vh, "");
    cr_assert_eq(wr_bind_queue(def, q, "other", NULL, &err), WR_EPERM);
    cr_assert_eq(wr_unbind_queue(def, q, "q", NULL, &err), WR_EPERM);
    cr_assert_eq(tu_publish(&t, "", "q", "x", NULL), 1);
}

Test(broker, exchange_declare_equivalence_and_unknown_type)
{
    struct wr_exchange_decl decl = {.name = "e", .type = "topic", .durable = true};
    struct wr_exchange *ex, *again;
    cr_assert_eq(wr_exchange_declare(t.vh, &decl, &ex, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_exchange_declare(t.vh, &decl, &again, &err), WR_OK);
    cr_assert_eq(ex, again);
    decl.type = "fanout";
    cr_assert_eq(wr_exchange_declare(t.vh, &decl, NULL, &err), WR_EEXIST);
    cr_assert(strstr(err.msg, "inequivalent"), "%s", err.msg);
    struct wr_exchange_decl bad = {.name = "f", .type = "nosuchtype"};
    cr_assert_eq(wr_exchange_declare(t.vh, &bad, NULL, &err), WR_ENOTFOUND);
    cr_assert(strstr(err.msg, "unknown exchange type 'nosuchtype'"), "%s", err.msg);
}

static struct wr_exchange *declare_ex(const char *name, const char *type, bool auto_delete)
{
    struct wr_exchange_decl decl = {.name = name, .type = type, .auto_delete = auto_delete};
    struct wr_exchange *ex;
    cr_assert_eq(wr_exchange_declare(t.vh, &decl, &ex, &err), WR_OK, "%s", err.msg);
    return ex;
}

Test(broker, exchange_to_exchange_binding)
{
    struct wr_exchange *front = declare_ex("front", "fanout", false);
    struct wr_exchange *back = declare_ex("back", "direct", false);
    struct wr_queue *q1 = tu_queue(&t, "q1"), *q2 = tu_queue(&t, "q2");
    cr_assert_eq(wr_bind_exchange(front, back, "", NULL, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_bind_queue(back, q1, "k1", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_queue(back, q2, "k2", NULL, &err), WR_OK);
    cr_assert_eq(tu_publish(&t, "front", "k2", "x", NULL), 1);
    cr_assert_eq(wr_queue_depth(q1), 0);
    cr_assert_eq(wr_queue_depth(q2), 1);
    cr_assert_eq(wr_unbind_exchange(front, back, "", NULL, &err), WR_OK);
    cr_assert_eq(tu_publish(&t, "front", "k2", "x", NULL), 0);
}

Test(broker, binding_cycle_terminates_and_delivers_once)
{
    struct wr_exchange *a = declare_ex("a", "fanout", false);
    struct wr_exchange *b = declare_ex("b", "fanout", false);
    struct wr_exchange *c = declare_ex("c", "fanout", false);
    struct wr_queue *q = tu_queue(&t, "q");
    cr_assert_eq(wr_bind_exchange(a, b, "", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_exchange(b, c, "", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_exchange(c, a, "", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_exchange(a, a, "", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_queue(a, q, "", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_queue(c, q, "", NULL, &err), WR_OK);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tu_publish(&t, (const char *[]){"a", "b", "c"}[i], "", "x", NULL), 1);
    cr_assert_eq(wr_queue_depth(q), 3);
}

Test(broker, same_queue_bound_twice_gets_one_copy)
{
    struct wr_exchange *ex = declare_ex("f", "fanout", false);
    struct wr_queue *q = tu_queue(&t, "q");
    cr_assert_eq(wr_bind_queue(ex, q, "one", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_queue(ex, q, "two", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_queue(ex, q, "two", NULL, &err), WR_OK); /* idempotent */
    cr_assert_eq(wr_exchange_binding_count(ex), 2);
    cr_assert_eq(tu_publish(&t, "f", "", "x", NULL), 1);
    cr_assert_eq(wr_queue_depth(q), 1);
}

Test(broker, queue_declare_names_and_equivalence)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "");
    struct wr_queue *q1, *q2;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q1, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q2, &err), WR_OK, "%s", err.msg);
    cr_assert_neq(q1, q2);
    cr_assert_eq(strncmp(wr_queue_name(q1), "amq.gen-", 8), 0, "%s", wr_queue_name(q1));
    cr_assert_eq(strlen(wr_queue_name(q1)), 30);
    wr_queue_decl_init(&decl, "amq.mine");
    cr_assert_eq(wr_queue_declare(t.vh, &decl, NULL, &err), WR_EPERM);
    wr_queue_decl_init(&decl, "d");
    decl.durable = true;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, NULL, &err), WR_OK);
    decl.durable = false;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, NULL, &err), WR_EEXIST);
    cr_assert(strstr(err.msg, "inequivalent arg 'durable'"), "%s", err.msg);
    decl.storage = "nosuch";
    wr_queue_decl_init(&decl, "e");
    decl.storage = "nosuch";
    cr_assert_eq(wr_queue_declare(t.vh, &decl, NULL, &err), WR_ENOTFOUND);
}

Test(broker, exclusive_queue_is_locked_to_its_owner)
{
    int owner_a, owner_b;
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "ex");
    decl.exclusive = true;
    decl.owner = &owner_a;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, NULL, &err), WR_OK);
    cr_assert_eq(wr_queue_declare(t.vh, &decl, NULL, &err), WR_OK);
    decl.owner = &owner_b;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, NULL, &err), WR_EBUSY);
}

Test(broker, queue_delete_conditions_and_consumer_cancel)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec r;
    consume(q, &r, 0, false);
    r.ready = false;
    publish_n("", "q", 2);
    cr_assert_eq(wr_queue_delete(q, true, false, NULL, &err), WR_EBUSY);
    cr_assert_eq(wr_queue_delete(q, false, true, NULL, &err), WR_EBUSY);
    uint64_t count = 0;
    wr_queue_ref(q);
    cr_assert_eq(wr_queue_delete(q, false, false, &count, &err), WR_OK);
    cr_assert_eq(count, 2);
    cr_assert(r.cancelled, "consumer not told of the deletion");
    cr_assert(wr_queue_is_deleted(q));
    cr_assert_null(wr_queue_find(t.vh, "q"));
    cr_assert_eq(wr_queue_ack(q, 1, &err), WR_ENOTFOUND);
    wr_queue_unref(q);
    cr_assert_eq(tu_publish(&t, "", "q", "x", NULL), 0);
}

Test(broker, auto_delete_queue_goes_with_last_consumer)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "ad");
    decl.auto_delete = true;
    struct wr_queue *q;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q, &err), WR_OK);
    static struct rec a, b;
    consume(q, &a, 0, false);
    consume(q, &b, 0, false);
    wr_consumer_cancel(a.c, true);
    cr_assert_not_null(wr_queue_find(t.vh, "ad"));
    wr_consumer_cancel(b.c, true);
    cr_assert_null(wr_queue_find(t.vh, "ad"));
}

Test(broker, auto_delete_exchange_goes_with_last_binding)
{
    struct wr_exchange *ex = declare_ex("ad", "direct", true);
    struct wr_queue *q = tu_queue(&t, "q");
    cr_assert_eq(wr_bind_queue(ex, q, "a", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_queue(ex, q, "b", NULL, &err), WR_OK);
    cr_assert_eq(wr_unbind_queue(ex, q, "a", NULL, &err), WR_OK);
    cr_assert_not_null(wr_exchange_find(t.vh, "ad"));
    cr_assert_eq(wr_queue_delete(q, false, false, NULL, &err), WR_OK);
    cr_assert_null(wr_exchange_find(t.vh, "ad"), "auto-delete exchange survived");
}

Test(broker, exchange_delete_removes_its_bindings)
{
    struct wr_exchange *ex = declare_ex("e", "fanout", false);
    struct wr_exchange *up = declare_ex("up", "fanout", false);
    struct wr_queue *q = tu_queue(&t, "q");
    cr_assert_eq(wr_bind_queue(ex, q, "", NULL, &err), WR_OK);
    cr_assert_eq(wr_bind_exchange(up, ex, "", NULL, &err), WR_OK);
    cr_assert_eq(wr_exchange_delete(ex, true, &err), WR_EBUSY);
    cr_assert_eq(wr_exchange_delete(ex, false, &err), WR_OK);
    cr_assert_null(wr_exchange_find(t.vh, "e"));
    cr_assert_eq(wr_exchange_binding_count(up), 0);
    cr_assert_eq(tu_publish(&t, "up", "", "x", NULL), 0);
    cr_assert_eq(tu_publish(&t, "", "q", "x", NULL), 1, "queue lost its default binding");
}

Test(broker, max_length_drops_head)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "bounded");
    decl.max_length = 2;
    struct wr_queue *q;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q, &err), WR_OK, "%s", err.msg);
    publish_n("", "bounded", 3);
    cr_assert_eq(wr_queue_depth(q), 2);
    char *body = tu_get_body(q);
    cr_assert_str_eq(body, "m2");
    free(body);
}

Test(broker, max_length_reject_publish)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "bounded");
    decl.max_length = 1;
    decl.overflow = WR_OVERFLOW_REJECT_PUBLISH;
    struct wr_queue *q;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(tu_publish(&t, "", "bounded", "a", NULL), 1);
    cr_assert_eq(tu_publish(&t, "", "bounded", "b", NULL), 0);
    cr_assert_eq(wr_queue_depth(q), 1);
}

Test(broker, users)
{
    const char *vhosts[] = {"/", NULL};
    cr_assert_eq(wr_broker_user_add(t.b, "alice", "secret", vhosts, &err), WR_OK);
    cr_assert_eq(wr_broker_user_add(t.b, "alice", "x", vhosts, &err), WR_EEXIST);
    cr_assert(wr_broker_authenticate(t.b, "alice", "secret"));
    cr_assert_not(wr_broker_authenticate(t.b, "alice", "wrong"));
    cr_assert_not(wr_broker_authenticate(t.b, "bob", "secret"));
    cr_assert(wr_broker_user_may_access(t.b, "alice", "/"));
    cr_assert_not(wr_broker_user_may_access(t.b, "alice", "/other"));
    cr_assert(wr_broker_user_may_declare(t.b, "alice", "direct"),
              "types that run no user code need no permission");
    cr_assert_eq(wr_broker_user_allow_scripts(t.b, "bob", true, &err), WR_ENOTFOUND);
}

Test(broker, message_fields_are_copied)
{
    struct wr_table *h = wr_table_new();
    struct wr_value v = wr_value_str("eu");
    cr_assert_eq(wr_table_add(h, "region", &v), WR_OK);
    char rk[] = "orders.new";
    struct wr_props props = {0};
    props.content_type = wr_str_c("application/json");
    props.flags = WR_PROP_DELIVERY_MODE;
    props.delivery_mode = 2;
    struct wr_msg_init init = {.routing_key = wr_str_c(rk), .headers = h, .props = &props,
                               .body_ptr = "{}", .body_len = 2};
    struct wr_msg *msg;
    cr_assert_eq(wr_msg_new(&init, &msg, &err), WR_OK);
    rk[0] = 'X';
    wr_table_free(h);
    cr_assert_eq(memcmp(msg->routing_key.ptr, "orders.new", 10), 0);
    const char *s;
    size_t len;
    cr_assert(wr_table_get_str(msg->headers, "region", &s, &len));
    cr_assert_eq(len, 2);
    cr_assert_eq(msg->props.delivery_mode, 2);
    cr_assert_eq(msg->props.content_type.len, 16);
    cr_assert_null(msg->key.ptr);
    cr_assert_gt(msg->timestamp_ms, 0);
    cr_assert_geq(wr_msg_bytes_live(), msg->size);
    wr_msg_unref(msg);
}

Test(broker, many_bindings_are_indexed_idempotent_and_removable)
{
    struct wr_exchange *ex = declare_ex("many", "direct", false);
    struct wr_queue *q1 = tu_queue(&t, "q1"), *q2 = tu_queue(&t, "q2");
    char key[32];
    for (int i = 0; i < 20000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(wr_bind_queue(ex, i % 2 ? q1 : q2, key, NULL, &err), WR_OK, "%s", err.msg);
    }
    for (int i = 0; i < 20000; i += 7) { /* again: no new binding */
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(wr_bind_queue(ex, i % 2 ? q1 : q2, key, NULL, &err), WR_OK);
    }
    cr_assert_eq(wr_exchange_binding_count(ex), 20000);
    struct wr_table *args = wr_table_new();
    struct wr_value v = wr_value_i64(1);
    wr_table_add(args, "x", &v);
    cr_assert_eq(wr_bind_queue(ex, q1, "k1", args, &err), WR_OK); /* other args: another */
    cr_assert_eq(wr_exchange_binding_count(ex), 20001);
    cr_assert_eq(wr_unbind_queue(ex, q1, "k1", args, &err), WR_OK);
    wr_table_free(args);
    for (int i = 0; i < 20000; i += 2) {
        snprintf(key, sizeof key, "k%d", i);
        cr_assert_eq(wr_unbind_queue(ex, q2, key, NULL, &err), WR_OK);
    }
    cr_assert_eq(wr_exchange_binding_count(ex), 10000);
    cr_assert_eq(tu_publish(&t, "many", "k2", "x", NULL), 0);
    cr_assert_eq(tu_publish(&t, "many", "k3", "x", NULL), 1);
    cr_assert_eq(wr_queue_delete(q1, false, false, NULL, &err), WR_OK);
    cr_assert_eq(wr_exchange_binding_count(ex), 0);
}

/* x-priority: the high-priority consumer takes everything while it has room, then the
 * lower one gets the rest; equal priorities still alternate. */
Test(broker, consumer_priority_wins_while_it_has_room)
{
    struct wr_queue *q = tu_queue(&t, "q");
    static struct rec low, high, high2;
    consume(q, &low, 2, false);
    memset(&high, 0, sizeof high);
    high.ready = true;
    struct wr_consume_args args = {.prefetch = 2, .priority = 10};
    cr_assert_eq(wr_queue_consume(q, &rec_ops, &args, &high, &high.c, &err), WR_OK);
    publish_n("", "q", 4);
    wait_for(&low, 2);
    cr_assert_eq(high.n, 2);
    cr_assert_str_eq(high.bodies[0], "m1");
    cr_assert_str_eq(high.bodies[1], "m2");
    cr_assert_str_eq(low.bodies[0], "m3");
    cr_assert_str_eq(low.bodies[1], "m4");
    /* Acking one of high's frees a place: the next message is high's again. */
    cr_assert_eq(wr_consumer_ack(high.c, high.tags[0], &err), WR_OK);
    publish_n("", "q", 1);
    wait_for(&high, 3);
    cr_assert_eq(low.n, 2);
    /* A second consumer of the same priority shares turns with the first. */
    memset(&high2, 0, sizeof high2);
    high2.ready = true;
    args.prefetch = 0;
    cr_assert_eq(wr_queue_consume(q, &rec_ops, &args, &high2, &high2.c, &err), WR_OK);
    cr_assert_eq(wr_consumer_ack(high.c, high.tags[1], &err), WR_OK);
    cr_assert_eq(wr_consumer_ack(high.c, high.tags[2], &err), WR_OK);
    publish_n("", "q", 4);
    wait_for(&high2, 2);
    cr_assert_eq(high.n + high2.n, 3 + 4, "the four went to the two high consumers");
    cr_assert_eq(low.n, 2);
}

/* alternate-exchange: what the exchange cannot route goes to its alternate (and that one's
 * alternate), and an alternate loop ends. */
Test(broker, alternate_exchange_takes_unroutable)
{
    struct wr_table *args = wr_table_new();
    struct wr_value ae = wr_value_str("ae");
    cr_assert_eq(wr_table_add(args, "alternate-exchange", &ae), WR_OK);
    struct wr_exchange_decl decl = {.name = "main", .type = "direct", .args = args};
    struct wr_exchange *main_ex;
    cr_assert_eq(wr_exchange_declare(t.vh, &decl, &main_ex, &err), WR_OK, "%s", err.msg);
    wr_table_free(args);
    struct wr_queue *routed = tu_queue(&t, "routed"), *other = tu_queue(&t, "other");
    tu_bind(main_ex, routed, "k", NULL);
    cr_assert_eq(tu_publish(&t, "main", "nowhere", "x", NULL), 0, "no alternate yet");
    struct wr_exchange *ae_ex = declare_ex("ae", "fanout", false);
    tu_bind(ae_ex, other, "", NULL);
    cr_assert_eq(tu_publish(&t, "main", "k", "x", NULL), 1);
    cr_assert_eq(tu_publish(&t, "main", "nowhere", "y", NULL), 1);
    cr_assert_eq(wr_queue_depth(routed), 1);
    cr_assert_eq(wr_queue_depth(other), 1);
    /* Two exchanges each other's alternate, nothing bound: the loop ends, unroutable. */
    tu_unbind(ae_ex, other, "", NULL);
    const char *names[2] = {"ping", "pong"};
    for (int i = 0; i < 2; i++) {
        args = wr_table_new();
        struct wr_value other_name = wr_value_str(names[1 - i]);
        cr_assert_eq(wr_table_add(args, "alternate-exchange", &other_name), WR_OK);
        struct wr_exchange_decl d = {.name = names[i], .type = "fanout", .args = args};
        cr_assert_eq(wr_exchange_declare(t.vh, &d, NULL, &err), WR_OK, "%s", err.msg);
        wr_table_free(args);
    }
    cr_assert_eq(tu_publish(&t, "ping", "nowhere", "z", NULL), 0);
}
