/*
 * deadletter_test.c: message TTL, queue expiry and dead-lettering as a RabbitMQ user sees
 * them: queue and per-message TTL expiring messages nobody consumes, expired / rejected /
 * max-length messages republished to the dead-letter exchange with RabbitMQ's x-death header,
 * cycles dropped unless a rejection broke them, x-expires deleting unused queues, exclusive
 * queues deleted with their owner, reject-publish refusals counted by wr_publish, and declare
 * equivalence for the new arguments. Every wait runs the real loop with a deadline.
 */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "testutil.h"

static struct tu_broker t;
static struct wr_error err;

static void setup(void)
{
    tu_broker_init(&t);
    memset(&err, 0, sizeof err);
}

static void teardown(void) { tu_broker_fini(&t); }

TestSuite(deadletter, .init = setup, .fini = teardown, .timeout = 30);

/* ---- helpers ------------------------------------------------------------------------ */

/* A queue's declare arguments; 0 and NULL mean "none" (a TTL of 0 is declared directly). */
struct qspec {
    int64_t ttl;        /* x-message-ttl */
    int64_t expires;    /* x-expires */
    const char *dlx;
    const char *dlrk;
    int64_t max_length;
    enum wr_overflow overflow;
};

#define QSPEC(...) ((struct qspec){__VA_ARGS__})

static int declare_rc(const char *name, struct qspec s, struct wr_queue **out)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, name);
    decl.message_ttl_ms = s.ttl ? s.ttl : -1;
    decl.expires_ms = s.expires ? s.expires : -1;
    decl.dead_letter_exchange = s.dlx;
    decl.dead_letter_routing_key = s.dlrk;
    decl.max_length = s.max_length ? s.max_length : -1;
    decl.overflow = s.overflow;
    return wr_queue_declare(t.vh, &decl, out, &err);
}

static struct wr_queue *declare(const char *name, struct qspec s)
{
    struct wr_queue *q = NULL;
    cr_assert_eq(declare_rc(name, s, &q), WR_OK, "%s", err.msg);
    return q;
}

/* Publishes to ex_name as a transport does: the message names its exchange. expiration and
 * headers may be NULL. Returns wr_publish's result. */
static int pub(const char *ex_name, const char *rk, const char *body, const char *expiration,
               const struct wr_table *headers)
{
    struct wr_exchange *ex = wr_exchange_find(t.vh, ex_name);
    cr_assert_not_null(ex, "no exchange '%s'", ex_name);
    struct wr_props props = {0};
    props.expiration = wr_str_c(expiration);
    struct wr_msg_init init = {
        .exchange = wr_str_c(ex_name),
        .routing_key = wr_str_c(rk),
        .headers = headers,
        .props = &props,
        .body_ptr = body,
        .body_len = strlen(body),
    };
    struct wr_msg *msg = NULL;
    cr_assert_eq(wr_msg_new(&init, &msg, &err), WR_OK, "%s", err.msg);
    int n = wr_publish(ex, msg, NULL, &err);
    wr_msg_unref(msg);
    return n;
}

/* basic.get with no_ack: the message (a reference the caller drops) or NULL. */
static struct wr_msg *get(struct wr_queue *q)
{
    struct wr_delivery d;
    return wr_queue_get(q, true, &d, NULL) == WR_OK ? d.msg : NULL;
}

/* basic.get then basic.nack without requeue: the message is rejected. */
static void get_and_reject(struct wr_queue *q)
{
    struct wr_delivery d;
    cr_assert_eq(wr_queue_get(q, false, &d, &err), WR_OK, "queue '%s' is empty",
                 wr_queue_name(q));
    wr_msg_unref(d.msg);
    cr_assert_eq(wr_queue_nack(q, d.tag, false, &err), WR_OK, "%s", err.msg);
}

static void assert_body(const struct wr_msg *m, const char *want)
{
    cr_assert_not_null(m, "expected a message '%s'", want);
    size_t len;
    const uint8_t *p = wr_msg_body(m, &len);
    cr_assert(len == strlen(want) && memcmp(p, want, len) == 0, "body '%.*s', want '%s'",
              (int)len, (const char *)p, want);
}

static void assert_text(struct wr_str s, const char *want, const char *what)
{
    cr_assert_not_null(s.ptr, "%s is absent", what);
    cr_assert(s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0,
              "%s is '%.*s', want '%s'", what, (int)s.len, s.ptr, want);
}

static void assert_str(const struct wr_value *v, const char *want, const char *what)
{
    cr_assert_not_null(v, "%s is missing", what);
    cr_assert_eq(v->type, WR_V_STR, "%s has type %d", what, v->type);
    assert_text((struct wr_str){v->u.s.ptr, v->u.s.len}, want, what);
}

static size_t death_count(const struct wr_msg *m)
{
    const struct wr_value *v = wr_table_get(m->headers, "x-death");
    cr_assert_not_null(v, "no x-death header");
    cr_assert_eq(v->type, WR_V_ARRAY);
    return v->u.array->count;
}

/* The i-th x-death entry (0: newest). */
static const struct wr_table *death(const struct wr_msg *m, size_t i)
{
    cr_assert_lt(i, death_count(m));
    const struct wr_value *e = &wr_table_get(m->headers, "x-death")->u.array->items[i];
    cr_assert_eq(e->type, WR_V_TABLE);
    return e->u.table;
}

/* Asserts an x-death entry: count, reason, queue, exchange, a single routing key, and a time
 * (an AMQP timestamp) no older than since. */
static void assert_death(const struct wr_table *d, int64_t count, const char *reason,
                         const char *queue, const char *exchange, const char *rk, time_t since)
{
    int64_t n = 0;
    cr_assert(wr_table_get_int(d, "count", &n), "x-death count is missing");
    cr_assert_eq(n, count);
    assert_str(wr_table_get(d, "reason"), reason, "reason");
    assert_str(wr_table_get(d, "queue"), queue, "queue");
    assert_str(wr_table_get(d, "exchange"), exchange, "exchange");
    const struct wr_value *tv = wr_table_get(d, "time");
    cr_assert_not_null(tv, "x-death time is missing");
    cr_assert_eq(tv->type, WR_V_TIMESTAMP);
    cr_assert(tv->u.i >= since && tv->u.i <= time(NULL), "time %lld outside [%lld, now]",
              (long long)tv->u.i, (long long)since);
    const struct wr_value *keys = wr_table_get(d, "routing-keys");
    cr_assert_not_null(keys, "x-death routing-keys is missing");
    cr_assert_eq(keys->type, WR_V_ARRAY);
    cr_assert_eq(keys->u.array->count, 1);
    assert_str(&keys->u.array->items[0], rk, "routing-keys[0]");
}

struct depth_is {
    struct wr_queue *q;
    uint64_t n;
};

static bool depth_reached(void *data)
{
    struct depth_is *d = data;
    return wr_queue_depth(d->q) == d->n;
}

/* Runs the loop until q holds n ready messages, at most ms. */
static bool wait_depth(struct wr_queue *q, uint64_t n, int ms)
{
    struct depth_is d = {q, n};
    return tu_wait(t.lp, depth_reached, &d, ms);
}

static bool queue_gone(void *data)
{
    return wr_queue_find(t.vh, data) == NULL;
}

static bool never(void *data)
{
    (void)data;
    return false;
}

/* Runs the loop for ms (a bounded window in which something must NOT happen). */
static void run_for(int ms)
{
    tu_wait(t.lp, never, NULL, ms);
}

/* A fanout dead-letter exchange "dlx" and its queue "dlq". */
static struct wr_queue *dlq_setup(void)
{
    struct wr_exchange *dlx = tu_exchange(&t, "dlx", "fanout");
    struct wr_queue *dlq = tu_queue(&t, "dlq");
    tu_bind(dlx, dlq, "", NULL);
    return dlq;
}

/* ---- message TTL ------------------------------------------------------------------- */

Test(deadletter, queue_ttl_expires_messages_nobody_consumes)
{
    struct wr_queue *q = declare("q", QSPEC(.ttl = 30));
    cr_assert_eq(pub("", "q", "a", NULL, NULL), 1);
    cr_assert_eq(pub("", "q", "b", NULL, NULL), 1);
    cr_assert_eq(wr_queue_depth(q), 2);
    cr_assert(wait_depth(q, 0, 3000), "depth %llu after the TTL",
              (unsigned long long)wr_queue_depth(q));
    cr_assert_null(get(q));
}

Test(deadletter, message_lives_until_its_ttl)
{
    struct wr_queue *q = declare("q", QSPEC(.ttl = 400));
    pub("", "q", "a", NULL, NULL);
    run_for(100);
    cr_assert_eq(wr_queue_depth(q), 1, "expired long before its TTL");
    cr_assert(wait_depth(q, 0, 3000));
}

Test(deadletter, per_message_expiration)
{
    struct wr_queue *q = tu_queue(&t, "q");
    pub("", "q", "short", "20", NULL);
    cr_assert(wait_depth(q, 0, 3000), "a message with expiration 20 stayed");
    pub("", "q", "forever", NULL, NULL);
    pub("", "q", "bogus", "soon", NULL);
    run_for(100);
    cr_assert_eq(wr_queue_depth(q), 2, "messages without a numeric expiration never expire");
}

Test(deadletter, shorter_of_queue_ttl_and_expiration_wins)
{
    struct wr_queue *q = declare("q", QSPEC(.ttl = 60000));
    pub("", "q", "a", "20", NULL);
    cr_assert(wait_depth(q, 0, 3000));
    struct wr_queue *r = declare("r", QSPEC(.ttl = 20));
    pub("", "r", "b", "60000", NULL);
    cr_assert(wait_depth(r, 0, 3000));
}

static struct wr_queue *declare_ttl_zero(const char *name)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, name);
    decl.message_ttl_ms = 0;
    struct wr_queue *q = NULL;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q, &err), WR_OK, "%s", err.msg);
    return q;
}

Test(deadletter, ttl_zero_expires_without_a_consumer)
{
    struct wr_queue *q = declare_ttl_zero("q");
    pub("", "q", "a", NULL, NULL);
    cr_assert(wait_depth(q, 0, 3000));
    struct wr_queue *r = tu_queue(&t, "r");
    pub("", "r", "b", "0", NULL);
    cr_assert(wait_depth(r, 0, 3000));
}

/* RabbitMQ hands a TTL-0 message to a consumer that is waiting for it. */
struct counter {
    int n;
};

static void count_deliver(struct wr_consumer *c, const struct wr_delivery *d, void *data)
{
    (void)c, (void)d;
    ((struct counter *)data)->n++;
}

static const struct wr_consumer_ops count_ops = {.size = sizeof count_ops,
                                                 .deliver = count_deliver};

/* RabbitMQ decides at enqueue: a TTL-0 message goes to a consumer that can take it now. Here
 * delivery happens later in the loop turn, after whatever else the turn does; the sleep
 * stands for a busy turn (other frames parsed), so the clock moves on before dispatch. */
Test(deadletter, ttl_zero_reaches_a_waiting_consumer)
{
    struct wr_queue *q = declare_ttl_zero("q");
    struct counter got = {0};
    struct wr_consumer *c = NULL;
    struct wr_consume_args args = {.no_ack = true};
    cr_assert_eq(wr_queue_consume(q, &count_ops, &args, &got, &c, &err), WR_OK);
    tu_drain(t.lp, 100);
    for (int i = 0; i < 5; i++) {
        pub("", "q", "x", NULL, NULL);
        nanosleep(&(struct timespec){0, 3 * 1000 * 1000}, NULL);
        cr_assert(wait_depth(q, 0, 1000));
    }
    cr_assert_eq(got.n, 5, "%d of 5 TTL-0 messages expired although a consumer was waiting",
                 5 - got.n);
}

Test(deadletter, message_behind_a_longer_lived_head_waits)
{
    struct wr_queue *dlq = dlq_setup();
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx"));
    pub("", "q", "slow", "600", NULL);
    pub("", "q", "fast", "10", NULL);
    run_for(150);
    cr_assert_eq(wr_queue_depth(q), 2, "the expired message left before the head expired");
    cr_assert(wait_depth(q, 0, 3000));
    cr_assert(wait_depth(dlq, 2, 3000));
    struct wr_msg *m = get(dlq);
    assert_body(m, "slow");
    wr_msg_unref(m);
    m = get(dlq);
    assert_body(m, "fast");
    wr_msg_unref(m);
}

Test(deadletter, requeued_message_expires_too)
{
    struct wr_queue *q = declare("q", QSPEC(.ttl = 100));
    pub("", "q", "a", NULL, NULL);
    struct wr_delivery d;
    cr_assert_eq(wr_queue_get(q, false, &d, &err), WR_OK);
    wr_msg_unref(d.msg);
    cr_assert_eq(wr_queue_nack(q, d.tag, true, &err), WR_OK);
    cr_assert_eq(wr_queue_depth(q), 1);
    cr_assert(wait_depth(q, 0, 3000), "a requeued message outlived its TTL");
}

/* A TTL as large as the config accepts (INT64_MAX ms) means "never", not an overflow. */
Test(deadletter, huge_ttl_never_expires)
{
    struct wr_queue *q = declare("q", QSPEC(.ttl = INT64_MAX));
    struct wr_queue *r = tu_queue(&t, "r");
    pub("", "q", "a", NULL, NULL);
    pub("", "r", "b", "999999999999999999", NULL);
    run_for(100);
    cr_assert_eq(wr_queue_depth(r), 1, "expiration 999999999999999999 expired");
    cr_assert_eq(wr_queue_depth(q), 1, "x-message-ttl INT64_MAX expired at once");
}

/* ---- dead-lettering ---------------------------------------------------------------- */

Test(deadletter, expired_message_is_dead_lettered_with_x_death)
{
    struct wr_queue *dlq = dlq_setup();
    tu_exchange(&t, "orders", "direct");
    struct wr_queue *q = declare("q", QSPEC(.ttl = 20, .dlx = "dlx"));
    tu_bind(wr_exchange_find(t.vh, "orders"), q, "eu", NULL);
    time_t before = time(NULL);
    struct wr_table *h = wr_table_new();
    struct wr_value app = wr_value_str("kept");
    cr_assert_eq(wr_table_add(h, "app", &app), WR_OK);
    cr_assert_eq(pub("orders", "eu", "payload", NULL, h), 1);
    wr_table_free(h);

    cr_assert(wait_depth(dlq, 1, 3000), "nothing reached the dead-letter queue");
    cr_assert_eq(wr_queue_depth(q), 0);
    struct wr_msg *m = get(dlq);
    assert_body(m, "payload");
    assert_text(m->routing_key, "eu", "routing key");
    assert_text(m->exchange, "dlx", "exchange of the dead letter");
    assert_str(wr_table_get(m->headers, "app"), "kept", "the publisher's header");
    cr_assert_eq(death_count(m), 1);
    assert_death(death(m, 0), 1, "expired", "q", "orders", "eu", before);
    cr_assert_null(wr_table_get(death(m, 0), "original-expiration"),
                   "no per-message TTL: no original-expiration");
    assert_str(wr_table_get(m->headers, "x-first-death-reason"), "expired", "first reason");
    assert_str(wr_table_get(m->headers, "x-first-death-queue"), "q", "first queue");
    assert_str(wr_table_get(m->headers, "x-first-death-exchange"), "orders", "first exchange");
    wr_msg_unref(m);
}

Test(deadletter, expiration_property_moves_into_x_death)
{
    struct wr_queue *dlq = dlq_setup();
    declare("q", QSPEC(.dlx = "dlx"));
    pub("", "q", "a", "15", NULL);
    cr_assert(wait_depth(dlq, 1, 3000));
    struct wr_msg *m = get(dlq);
    cr_assert_null(m->props.expiration.ptr, "the dead letter kept its expiration");
    assert_str(wr_table_get(death(m, 0), "original-expiration"), "15", "original-expiration");
    assert_death(death(m, 0), 1, "expired", "q", "", "q", time(NULL) - 5);
    wr_msg_unref(m);
}

Test(deadletter, nack_without_requeue_dead_letters_rejected)
{
    struct wr_queue *dlq = dlq_setup();
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx"));
    time_t before = time(NULL);
    pub("", "q", "bad", NULL, NULL);
    get_and_reject(q);
    cr_assert_eq(wr_queue_depth(dlq), 0, "dead letters are published later, not inside nack");
    cr_assert_eq(wr_queue_unacked(q), 0);
    cr_assert(wait_depth(dlq, 1, 3000));
    struct wr_msg *m = get(dlq);
    assert_body(m, "bad");
    assert_death(death(m, 0), 1, "rejected", "q", "", "q", before);
    assert_str(wr_table_get(m->headers, "x-first-death-reason"), "rejected", "first reason");
    wr_msg_unref(m);
}

static void reject_deliver(struct wr_consumer *c, const struct wr_delivery *d, void *data)
{
    (void)data;
    cr_assert_eq(wr_consumer_nack(c, d->tag, false, &err), WR_OK, "%s", err.msg);
}

static const struct wr_consumer_ops reject_ops = {.size = sizeof reject_ops,
                                                  .deliver = reject_deliver};

Test(deadletter, consumer_nack_dead_letters)
{
    struct wr_queue *dlq = dlq_setup();
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx"));
    struct wr_consumer *c = NULL;
    struct wr_consume_args args = {.prefetch = 1};
    cr_assert_eq(wr_queue_consume(q, &reject_ops, &args, NULL, &c, &err), WR_OK);
    for (int i = 0; i < 5; i++)
        pub("", "q", "x", NULL, NULL);
    cr_assert(wait_depth(dlq, 5, 3000), "dlq depth %llu",
              (unsigned long long)wr_queue_depth(dlq));
    cr_assert_eq(wr_queue_unacked(q), 0);
    wr_consumer_cancel(c, true);
}

Test(deadletter, max_length_drop_head_dead_letters_maxlen)
{
    struct wr_queue *dlq = dlq_setup();
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx", .max_length = 1));
    pub("", "q", "old", NULL, NULL);
    pub("", "q", "new", NULL, NULL);
    cr_assert_eq(wr_queue_depth(q), 1);
    cr_assert(wait_depth(dlq, 1, 3000));
    struct wr_msg *m = get(dlq);
    assert_body(m, "old");
    assert_death(death(m, 0), 1, "maxlen", "q", "", "q", time(NULL) - 5);
    wr_msg_unref(m);
    m = get(q);
    assert_body(m, "new");
    wr_msg_unref(m);
}

Test(deadletter, routing_key_override)
{
    struct wr_exchange *dlx = tu_exchange(&t, "dlx", "direct");
    struct wr_queue *dlq = tu_queue(&t, "dlq");
    tu_bind(dlx, dlq, "dead", NULL);
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx", .dlrk = "dead"));
    tu_exchange(&t, "orders", "topic");
    tu_bind(wr_exchange_find(t.vh, "orders"), q, "orders.#", NULL);
    pub("orders", "orders.eu", "a", NULL, NULL);
    get_and_reject(q);
    cr_assert(wait_depth(dlq, 1, 3000), "the override key did not route");
    struct wr_msg *m = get(dlq);
    assert_text(m->routing_key, "dead", "routing key");
    assert_death(death(m, 0), 1, "rejected", "q", "orders", "orders.eu", time(NULL) - 5);
    wr_msg_unref(m);
}

/* RabbitMQ allows the default exchange as the DLX: the routing key names the queue. */
Test(deadletter, default_exchange_as_dlx)
{
    struct wr_queue *target = tu_queue(&t, "target");
    struct wr_queue *q = declare("q", QSPEC(.dlx = "", .dlrk = "target"));
    pub("", "q", "a", NULL, NULL);
    get_and_reject(q);
    cr_assert(wait_depth(target, 1, 3000));
}

Test(deadletter, missing_dlx_drops_silently)
{
    struct wr_queue *q = declare("q", QSPEC(.dlx = "nosuch", .ttl = 10));
    pub("", "q", "a", NULL, NULL);
    pub("", "q", "b", NULL, NULL);
    cr_assert(wait_depth(q, 0, 3000));
    pub("", "q", "c", NULL, NULL);
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "r");
    decl.dead_letter_exchange = "nosuch";
    struct wr_queue *r = NULL;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &r, &err), WR_OK);
    pub("", "r", "d", NULL, NULL);
    get_and_reject(r);
    tu_drain(t.lp, 1000);
    cr_assert_eq(wr_queue_depth(r) + wr_queue_unacked(r), 0);
}

Test(deadletter, no_dlx_rejected_message_is_dropped)
{
    struct wr_queue *q = tu_queue(&t, "q");
    pub("", "q", "a", NULL, NULL);
    get_and_reject(q);
    tu_drain(t.lp, 1000);
    cr_assert_eq(wr_queue_depth(q) + wr_queue_unacked(q), 0);
}

/* A publisher-supplied x-death history: the (q, rejected) entry is counted up and moved to
 * the front, keeping what it recorded the first time (RabbitMQ updates only the count); the
 * others keep their order. */
Test(deadletter, second_death_counts_up_and_moves_first)
{
    struct wr_queue *dlq = dlq_setup();
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx"));
    struct wr_table *h = wr_table_new(), *e1 = wr_table_new(), *e2 = wr_table_new();
    struct wr_array *deaths = wr_array_new();
    struct wr_value v = wr_value_str("other");
    wr_table_add(e1, "queue", &v);
    v = wr_value_str("expired");
    wr_table_add(e1, "reason", &v);
    v = wr_value_i64(1);
    wr_table_add(e1, "count", &v);
    v = wr_value_str("q");
    wr_table_add(e2, "queue", &v);
    v = wr_value_str("rejected");
    wr_table_add(e2, "reason", &v);
    v = wr_value_i64(3);
    wr_table_add(e2, "count", &v);
    v = wr_value_str("first-ex");
    wr_table_add(e2, "exchange", &v);
    v = (struct wr_value){.type = WR_V_TABLE, .u.table = e1};
    wr_array_add(deaths, &v);
    v = (struct wr_value){.type = WR_V_TABLE, .u.table = e2};
    wr_array_add(deaths, &v);
    v = (struct wr_value){.type = WR_V_ARRAY, .u.array = deaths};
    cr_assert_eq(wr_table_add(h, "x-death", &v), WR_OK);
    v = wr_value_str("expired");
    cr_assert_eq(wr_table_add(h, "x-first-death-reason", &v), WR_OK);
    pub("", "q", "again", NULL, h);
    wr_table_free(e1);
    wr_table_free(e2);
    wr_array_free(deaths);
    wr_table_free(h);

    get_and_reject(q);
    cr_assert(wait_depth(dlq, 1, 3000));
    struct wr_msg *m = get(dlq);
    cr_assert_eq(death_count(m), 2);
    int64_t n = 0;
    cr_assert(wr_table_get_int(death(m, 0), "count", &n) && n == 4, "count %lld", (long long)n);
    assert_str(wr_table_get(death(m, 0), "queue"), "q", "newest entry's queue");
    assert_str(wr_table_get(death(m, 0), "reason"), "rejected", "newest entry's reason");
    assert_str(wr_table_get(death(m, 0), "exchange"), "first-ex", "the first death's exchange");
    assert_str(wr_table_get(death(m, 1), "queue"), "other", "older entry's queue");
    assert_str(wr_table_get(m->headers, "x-first-death-reason"), "expired",
               "x-first-death-* are set once");
    wr_msg_unref(m);
}

/* RabbitMQ counts deaths per (queue, reason) and keeps the first one's exchange and routing
 * keys: the second time, the message came from the dead-letter exchange. */
Test(deadletter, rejected_twice_through_the_same_queue_counts_two)
{
    struct wr_exchange *dlx = tu_exchange(&t, "dlx", "fanout");
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx"));
    tu_bind(dlx, q, "", NULL);
    pub("", "q", "a", NULL, NULL);
    get_and_reject(q);
    cr_assert(wait_depth(q, 1, 3000), "a rejected message may come back to its queue");
    get_and_reject(q);
    cr_assert(wait_depth(q, 1, 3000));
    struct wr_msg *m = get(q);
    cr_assert_eq(death_count(m), 1);
    assert_death(death(m, 0), 2, "rejected", "q", "", "q", time(NULL) - 5);
    wr_msg_unref(m);
}

Test(deadletter, expiry_cycle_is_dropped_after_one_death)
{
    struct wr_exchange *dlx = tu_exchange(&t, "dlx", "fanout");
    struct wr_queue *a = declare("a", QSPEC(.ttl = 10, .dlx = "dlx"));
    struct wr_queue *witness = tu_queue(&t, "witness");
    tu_bind(dlx, a, "", NULL);
    tu_bind(dlx, witness, "", NULL);
    pub("", "a", "m", NULL, NULL);
    cr_assert(wait_depth(witness, 1, 3000), "the dead letter went nowhere");
    cr_assert(wait_depth(a, 0, 3000));
    run_for(100);
    cr_assert_eq(wr_queue_depth(a), 0, "the message came back into the cycle");
    cr_assert_eq(wr_queue_depth(witness), 1, "the message went round more than once");
}

/* Only a rejection inside the cycle breaks it (RabbitMQ's is_cycle): one rejected in another
 * queue before the message entered an expiry loop does not. */
Test(deadletter, older_rejection_does_not_excuse_an_expiry_cycle)
{
    struct wr_exchange *to_a = tu_exchange(&t, "to-a", "fanout");
    struct wr_exchange *loop = tu_exchange(&t, "a-loop", "fanout");
    struct wr_queue *x = declare("x", QSPEC(.dlx = "to-a"));
    struct wr_queue *a = declare("a", QSPEC(.ttl = 10, .dlx = "a-loop"));
    struct wr_queue *witness = tu_queue(&t, "witness");
    tu_bind(to_a, a, "", NULL);
    tu_bind(loop, a, "", NULL);
    tu_bind(loop, witness, "", NULL);
    pub("", "x", "m", NULL, NULL);
    get_and_reject(x);
    cr_assert(wait_depth(witness, 1, 3000), "the message never expired out of a");
    cr_assert(wait_depth(a, 0, 3000));
    run_for(200);
    cr_assert_eq(wr_queue_depth(witness), 1, "the message went round the expiry loop %llu times",
                 (unsigned long long)wr_queue_depth(witness));
}

/* The classic retry pattern: rejected in work, parked in retry until its TTL, back to work.
 * The rejection makes the cycle legitimate, so nothing is dropped. */
Test(deadletter, retry_cycle_through_a_rejection_is_kept)
{
    struct wr_exchange *retry_ex = tu_exchange(&t, "retry-ex", "fanout");
    struct wr_exchange *work_ex = tu_exchange(&t, "work-ex", "fanout");
    struct wr_queue *work = declare("work", QSPEC(.dlx = "retry-ex"));
    struct wr_queue *retry = declare("retry", QSPEC(.ttl = 20, .dlx = "work-ex"));
    tu_bind(retry_ex, retry, "", NULL);
    tu_bind(work_ex, work, "", NULL);
    pub("", "work", "job", NULL, NULL);
    for (int round = 1; round <= 3; round++) {
        get_and_reject(work);
        cr_assert(wait_depth(work, 1, 3000), "round %d: the job did not come back", round);
    }
    struct wr_msg *m = get(work);
    assert_body(m, "job");
    cr_assert_eq(death_count(m), 2);
    assert_death(death(m, 0), 3, "expired", "retry", "retry-ex", "work", time(NULL) - 10);
    assert_death(death(m, 1), 3, "rejected", "work", "", "work", time(NULL) - 10);
    assert_str(wr_table_get(m->headers, "x-first-death-reason"), "rejected", "first reason");
    assert_str(wr_table_get(m->headers, "x-first-death-queue"), "work", "first queue");
    wr_msg_unref(m);
}

/* Two rejected messages chase each other through a max-length-1 queue that dead-letters into
 * itself. RabbitMQ drops each once it has died of maxlen in q with no rejection since; at the
 * least, the broker must keep serving its loop rather than spin inside one dead-letter pass. */
Test(deadletter, rejected_maxlen_ping_pong_keeps_the_loop_responsive, .timeout = 10)
{
    struct wr_exchange *dlx = tu_exchange(&t, "dlx", "fanout");
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx", .max_length = 1));
    tu_bind(dlx, q, "", NULL);
    struct wr_delivery d1, d2;
    pub("", "q", "m1", NULL, NULL);
    cr_assert_eq(wr_queue_get(q, false, &d1, &err), WR_OK);
    pub("", "q", "m2", NULL, NULL);
    cr_assert_eq(wr_queue_get(q, false, &d2, &err), WR_OK);
    wr_msg_unref(d1.msg);
    wr_msg_unref(d2.msg);
    cr_assert_eq(wr_queue_nack(q, d1.tag, false, &err), WR_OK);
    cr_assert_eq(wr_queue_nack(q, d2.tag, false, &err), WR_OK);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    tu_drain(t.lp, 500);
    clock_gettime(CLOCK_MONOTONIC, &b);
    cr_assert_lt(b.tv_sec - a.tv_sec, 2, "one loop pass took %lld s",
                 (long long)(b.tv_sec - a.tv_sec));
    cr_assert_leq(wr_queue_depth(q), 1);
    uint64_t n = 0;
    cr_assert_eq(wr_queue_delete(q, false, false, &n, &err), WR_OK);
}

/* ---- x-expires --------------------------------------------------------------------- */

Test(deadletter, unused_queue_expires)
{
    declare("q", QSPEC(.expires = 50));
    pub("", "q", "a", NULL, NULL);
    cr_assert(tu_wait(t.lp, queue_gone, "q", 3000), "an unused queue outlived x-expires");
}

Test(deadletter, queue_with_a_consumer_does_not_expire)
{
    struct wr_queue *q = declare("q", QSPEC(.expires = 50));
    struct counter got = {0};
    struct wr_consumer *c = NULL;
    struct wr_consume_args args = {0};
    cr_assert_eq(wr_queue_consume(q, &count_ops, &args, &got, &c, &err), WR_OK);
    cr_assert(!tu_wait(t.lp, queue_gone, "q", 300), "a queue with a consumer expired");
    wr_consumer_cancel(c, true);
    cr_assert(tu_wait(t.lp, queue_gone, "q", 3000), "the queue did not expire once unused");
}

Test(deadletter, redeclare_postpones_expiry)
{
    declare("q", QSPEC(.expires = 500));
    for (int i = 0; i < 12; i++) {
        cr_assert(!tu_wait(t.lp, queue_gone, "q", 50), "expired while redeclared (step %d)", i);
        declare("q", QSPEC(.expires = 500));
    }
    cr_assert(tu_wait(t.lp, queue_gone, "q", 3000));
}

Test(deadletter, basic_get_postpones_expiry)
{
    struct wr_queue *q = declare("q", QSPEC(.expires = 500));
    for (int i = 0; i < 12; i++) {
        cr_assert(!tu_wait(t.lp, queue_gone, "q", 50), "expired while used (step %d)", i);
        cr_assert_null(get(q));
    }
    cr_assert(tu_wait(t.lp, queue_gone, "q", 3000));
}

Test(deadletter, expired_queue_stays_valid_while_referenced)
{
    struct wr_queue *q = wr_queue_ref(declare("q", QSPEC(.expires = 20)));
    cr_assert(tu_wait(t.lp, queue_gone, "q", 3000));
    cr_assert(wr_queue_is_deleted(q));
    cr_assert_eq(wr_queue_ack(q, 1, &err), WR_ENOTFOUND);
    wr_queue_unref(q);
}

/* ---- exclusive queues, publish refusals, declare equivalence ------------------------- */

static int cancelled_calls;

static void note_cancelled(struct wr_consumer *c, void *data)
{
    (void)c, (void)data;
    cancelled_calls++;
}

static const struct wr_consumer_ops cancel_ops = {
    .size = sizeof cancel_ops, .deliver = count_deliver, .cancelled = note_cancelled};

Test(deadletter, delete_owned_removes_only_that_owners_exclusive_queues)
{
    int conn_a, conn_b;
    struct wr_queue_decl decl;
    const char *names[] = {"a1", "a2", "b1", "shared"};
    const void *owners[] = {&conn_a, &conn_a, &conn_b, &conn_a};
    for (int i = 0; i < 4; i++) {
        wr_queue_decl_init(&decl, names[i]);
        decl.exclusive = i < 3;
        decl.owner = owners[i];
        cr_assert_eq(wr_queue_declare(t.vh, &decl, NULL, &err), WR_OK, "%s", err.msg);
    }
    struct counter got = {0};
    struct wr_consumer *c = NULL;
    struct wr_consume_args args = {0};
    cr_assert_eq(wr_queue_consume(wr_queue_find(t.vh, "a1"), &cancel_ops, &args, &got, &c,
                                  &err),
                 WR_OK);
    wr_vhost_delete_owned(t.vh, &conn_a);
    cr_assert_null(wr_queue_find(t.vh, "a1"));
    cr_assert_null(wr_queue_find(t.vh, "a2"));
    cr_assert_not_null(wr_queue_find(t.vh, "b1"));
    cr_assert_not_null(wr_queue_find(t.vh, "shared"), "not exclusive: not the owner's");
    cr_assert_eq(cancelled_calls, 1, "the deleted queue's consumer was not cancelled");
    cr_assert_eq(tu_publish(&t, "", "a1", "x", NULL), 0, "a deleted queue is unroutable");
    wr_vhost_delete_owned(t.vh, &conn_a);
    cr_assert_not_null(wr_queue_find(t.vh, "b1"));
}

Test(deadletter, publish_counts_refusing_queues)
{
    struct wr_exchange *fan = tu_exchange(&t, "fan", "fanout");
    struct wr_queue *full = declare("full", QSPEC(.max_length = 1,
                                                  .overflow = WR_OVERFLOW_REJECT_PUBLISH));
    struct wr_queue *open = tu_queue(&t, "open");
    tu_bind(fan, full, "", NULL);
    tu_bind(fan, open, "", NULL);
    struct wr_msg *msg = tu_msg("", "x", NULL);
    uint32_t refused = 99;
    cr_assert_eq(wr_publish(fan, msg, &refused, &err), 2);
    cr_assert_eq(refused, 0);
    cr_assert_eq(wr_publish(fan, msg, &refused, &err), 1);
    cr_assert_eq(refused, 1);
    cr_assert_eq(wr_publish(fan, msg, NULL, &err), 1, "refused may be NULL");
    refused = 99;
    cr_assert_eq(wr_publish(wr_exchange_find(t.vh, "amq.direct"), msg, &refused, &err), 0);
    cr_assert_eq(refused, 0, "unroutable is not refused");
    wr_msg_unref(msg);
    cr_assert_eq(wr_queue_depth(full), 1);
    cr_assert_eq(wr_queue_depth(open), 3);
}

Test(deadletter, reject_publish_does_not_dead_letter)
{
    struct wr_queue *dlq = dlq_setup();
    declare("q", QSPEC(.dlx = "dlx", .max_length = 1, .overflow = WR_OVERFLOW_REJECT_PUBLISH));
    cr_assert_eq(pub("", "q", "a", NULL, NULL), 1);
    cr_assert_eq(pub("", "q", "b", NULL, NULL), 0);
    tu_drain(t.lp, 1000);
    cr_assert_eq(wr_queue_depth(dlq), 0, "a refused publish is not a dead letter");
}

Test(deadletter, redeclare_with_other_ttl_or_dlx_is_refused)
{
    struct qspec base = QSPEC(.ttl = 100, .expires = 5000, .dlx = "dlx", .dlrk = "k");
    declare("q", base);
    struct wr_queue *same = NULL;
    cr_assert_eq(declare_rc("q", base, &same), WR_OK, "an equal redeclare is fine");
    struct {
        struct qspec s;
        const char *arg;
    } cases[] = {
        {QSPEC(.ttl = 200, .expires = 5000, .dlx = "dlx", .dlrk = "k"), "x-message-ttl"},
        {QSPEC(.expires = 5000, .dlx = "dlx", .dlrk = "k"), "x-message-ttl"},
        {QSPEC(.ttl = 100, .expires = 6000, .dlx = "dlx", .dlrk = "k"), "x-expires"},
        {QSPEC(.ttl = 100, .expires = 5000, .dlx = "other", .dlrk = "k"),
         "x-dead-letter-exchange"},
        {QSPEC(.ttl = 100, .expires = 5000, .dlrk = "k"), "x-dead-letter-exchange"},
        {QSPEC(.ttl = 100, .expires = 5000, .dlx = "dlx"), "x-dead-letter-routing-key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(&err, 0, sizeof err);
        cr_assert_eq(declare_rc("q", cases[i].s, NULL), WR_EEXIST, "case %zu", i);
        cr_assert_eq(err.code, WR_EEXIST);
        cr_assert_not_null(strstr(err.msg, cases[i].arg), "case %zu: '%s'", i, err.msg);
    }
}

Test(deadletter, queue_args_are_kept_as_given)
{
    struct wr_table *args = wr_table_new();
    struct wr_value v = wr_value_i64(1500);
    cr_assert_eq(wr_table_add(args, "x-message-ttl", &v), WR_OK);
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "q");
    decl.message_ttl_ms = 1500;
    decl.args = args;
    struct wr_queue *q = NULL;
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q, &err), WR_OK);
    wr_table_free(args);
    int64_t ttl = 0;
    cr_assert(wr_table_get_int(wr_queue_args(q), "x-message-ttl", &ttl));
    cr_assert_eq(ttl, 1500);
    cr_assert_not_null(wr_queue_args(tu_queue(&t, "plain")), "never NULL");
    cr_assert_eq(wr_queue_args(tu_queue(&t, "plain"))->count, 0);
}

/* Dead letters still pending when the broker goes are freed, not published (ASan checks). */
Test(deadletter, pending_dead_letters_are_freed_with_the_broker)
{
    dlq_setup();
    struct wr_queue *q = declare("q", QSPEC(.dlx = "dlx", .ttl = 60000));
    for (int i = 0; i < 3; i++)
        pub("", "q", "x", NULL, NULL);
    for (int i = 0; i < 3; i++)
        get_and_reject(q);
}
