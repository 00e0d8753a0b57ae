/*
 * storage_queue_model.h: the behaviour every storage of the queue model (`memory`, `queue`)
 * shows, tested once for each: FIFO delivery, ack, requeue at the original place with the
 * redelivered flag, peek, purge, counts, the max-length limits under drop-head and
 * reject-publish (RabbitMQ's semantics), priority queues (x-max-priority), random operations
 * against a model, and a bounded load.
 *
 * A test file includes storage_testutil.h, defines QUEUE_MODEL_SUITE as its suite's name and
 * includes this header, which defines these tests in that suite and the helpers the file's own
 * tests use as well; the suite's init calls queue_model_setup. Queues are durable and messages
 * persistent (delivery mode 2), so a storage that journals them goes through its journal.
 */
#ifndef WARREN_STORAGE_QUEUE_MODEL_H
#define WARREN_STORAGE_QUEUE_MODEL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage_testutil.h"

static char qdir[256]; /* the directory of the queue the tests open */

/* Has the queues opened from now on kept in a directory called name. A test's second queue
 * goes in a directory of its own, where a durable storage finds nothing of the first one. */
static void use_queue_dir(const char *name)
{
    snprintf(qdir, sizeof qdir, "%s/vh/%s", data_dir, name);
}

/* Loads the storage plugin name, which must be of the queue model. */
static void queue_model_setup(const char *name)
{
    storage_setup(name);
    cr_assert_eq(ops->model, WR_STORAGE_QUEUE);
    use_queue_dir("q");
}

/* ---- helpers --------------------------------------------------------------------------- */

/* What the dropped callback received, in order; it owns the references. */
#define MAX_DROPPED 16
static struct wr_msg *dropped[MAX_DROPPED];
static int n_dropped;

static void on_dropped(void *owner, struct wr_msg *msg)
{
    cr_assert_eq(owner, (void *)&n_dropped, "dropped got another owner");
    cr_assert_lt(n_dropped, MAX_DROPPED);
    dropped[n_dropped++] = msg;
}

static void release_dropped(void)
{
    for (int i = 0; i < n_dropped; i++)
        wr_msg_unref(dropped[i]);
    n_dropped = 0;
}

/* A durable queue at qdir whose dropped messages go to on_dropped. */
static struct wr_storage_args make_args(uint8_t max_priority, int64_t max_length,
                                        int64_t max_bytes, enum wr_overflow overflow)
{
    return (struct wr_storage_args){
        .vhost = "/", .queue = "q", .dir = qdir, .durable = true,
        .max_length = max_length, .max_length_bytes = max_bytes, .overflow = overflow,
        .max_priority = max_priority, .partitions = 1, .options = options,
        .dropped = on_dropped, .owner = &n_dropped,
    };
}

static void *open_args(const struct wr_storage_args *args)
{
    void *state = NULL;
    struct wr_error err = {0};
    cr_assert_eq(ops->open(ctx, args, &state, &err), WR_OK, "%s", err.msg);
    cr_assert_not_null(state);
    return state;
}

static void *open_full(uint8_t max_priority, int64_t max_length, int64_t max_bytes,
                       enum wr_overflow overflow, bool with_callback)
{
    struct wr_storage_args args = make_args(max_priority, max_length, max_bytes, overflow);
    if (!with_callback)
        args.dropped = NULL;
    return open_args(&args);
}

static void *open_limited(int64_t max_length, int64_t max_bytes, enum wr_overflow overflow,
                          bool with_callback)
{
    return open_full(0, max_length, max_bytes, overflow, with_callback);
}

static void *open_priority(uint8_t max_priority)
{
    return open_full(max_priority, -1, -1, WR_OVERFLOW_DROP_HEAD, true);
}

static void *open_plain(void)
{
    return open_priority(0);
}

#define NO_PRIORITY (-1)

/* A persistent message with the priority property set to priority, or without it
 * (NO_PRIORITY). */
static struct wr_msg *make_msg_priority(const char *body, int priority)
{
    struct wr_props props = {.flags = WR_PROP_DELIVERY_MODE, .delivery_mode = 2};
    if (priority != NO_PRIORITY) {
        props.flags |= WR_PROP_PRIORITY;
        props.priority = (uint8_t)priority;
    }
    struct wr_msg_init init = {
        .routing_key = wr_str_c("rk"),
        .props = &props,
        .body_ptr = body,
        .body_len = strlen(body),
    };
    struct wr_msg *msg = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_new(&init, &msg, &err), WR_OK, "%s", err.msg);
    return msg;
}

static struct wr_msg *make_msg(const char *body)
{
    return make_msg_priority(body, NO_PRIORITY);
}

/* Enqueues a new message and drops the test's own reference: the storage keeps one. */
static int put_priority(void *q, const char *body, int priority)
{
    struct wr_msg *msg = make_msg_priority(body, priority);
    int rc = ops->enqueue(q, msg, NULL);
    wr_msg_unref(msg);
    return rc;
}

static int put(void *q, const char *body)
{
    return put_priority(q, body, NO_PRIORITY);
}

static bool body_is(const struct wr_msg *msg, const char *want)
{
    size_t len;
    const uint8_t *p = wr_msg_body(msg, &len);
    return len == strlen(want) && memcmp(p, want, len) == 0;
}

/* Takes the next delivery and checks its body and redelivered flag; returns its tag. */
static uint64_t take(void *q, const char *want, bool redelivered)
{
    struct wr_stored d = {0};
    cr_assert_eq(ops->next(q, &d), WR_OK, "expected '%s', the queue is empty", want);
    size_t len;
    const uint8_t *p = wr_msg_body(d.msg, &len);
    cr_assert(body_is(d.msg, want), "expected '%s', got '%.*s'", want, (int)len, p);
    cr_assert_eq(d.redelivered, redelivered, "'%s': redelivered is %d", want, d.redelivered);
    cr_assert_neq(d.tag, 0);
    return d.tag;
}

static void assert_empty(void *q)
{
    struct wr_stored d = {0};
    cr_assert_eq(ops->next(q, &d), WR_ENOTFOUND);
}

/* ---- delivery, ack, requeue ------------------------------------------------------------ */

Test(QUEUE_MODEL_SUITE, fifo_order)
{
    void *q = open_plain();
    assert_empty(q);
    const char *bodies[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(put(q, bodies[i]), WR_OK);
    cr_assert_eq(ops->depth(q), 5);
    uint64_t tags[5];
    for (int i = 0; i < 5; i++)
        tags[i] = take(q, bodies[i], false);
    cr_assert_eq(ops->unacked(q), 5);
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            cr_assert_neq(tags[i], tags[j], "tags must be unique");
    assert_empty(q);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ops->ack(q, tags[i]), WR_OK);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, ack_removes_and_counts_follow)
{
    void *q = open_plain();
    put(q, "one");
    put(q, "two");
    cr_assert_eq(ops->depth(q), 2);
    cr_assert_eq(ops->unacked(q), 0);
    uint64_t t1 = take(q, "one", false);
    cr_assert_eq(ops->depth(q), 1);
    cr_assert_eq(ops->unacked(q), 1);
    cr_assert_eq(ops->ack(q, t1), WR_OK);
    cr_assert_eq(ops->unacked(q), 0);
    cr_assert_eq(ops->ack(q, t1), WR_ENOTFOUND, "a tag is acked once");
    cr_assert_eq(ops->requeue(q, t1), WR_ENOTFOUND, "an acked message cannot come back");
    uint64_t t2 = take(q, "two", false);
    cr_assert_eq(ops->ack(q, t2), WR_OK);
    cr_assert_eq(ops->depth(q), 0);
    cr_assert_eq(ops->unacked(q), 0);
    assert_empty(q);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, unknown_tags)
{
    void *q = open_plain();
    cr_assert_eq(ops->ack(q, 0), WR_ENOTFOUND);
    cr_assert_eq(ops->ack(q, 42), WR_ENOTFOUND);
    cr_assert_eq(ops->requeue(q, 42), WR_ENOTFOUND);
    put(q, "x");
    cr_assert_eq(ops->ack(q, 1), WR_ENOTFOUND, "ready, not delivered: nothing to ack");
    uint64_t t = take(q, "x", false);
    cr_assert_eq(ops->ack(q, t + 1), WR_ENOTFOUND);
    cr_assert_eq(ops->unacked(q), 1);
    ops->close(q); /* releases the unacked one too */
}

Test(QUEUE_MODEL_SUITE, requeue_out_of_order_lands_at_original_places)
{
    void *q = open_plain();
    const char *bodies[] = {"1", "2", "3", "4", "5"};
    uint64_t tags[5];
    for (int i = 0; i < 5; i++)
        put(q, bodies[i]);
    for (int i = 0; i < 5; i++)
        tags[i] = take(q, bodies[i], false);
    cr_assert_eq(ops->depth(q), 0);

    cr_assert_eq(ops->requeue(q, tags[3]), WR_OK); /* 4 */
    cr_assert_eq(ops->requeue(q, tags[1]), WR_OK); /* 2 */
    cr_assert_eq(ops->depth(q), 2);
    cr_assert_eq(ops->unacked(q), 3);
    uint64_t a = take(q, "2", true);
    uint64_t c = take(q, "4", true);

    /* Now with ready messages around: requeue 5, 1, 3 (and 2, 4 again) into [] and check
     * the whole order. */
    cr_assert_eq(ops->requeue(q, tags[4]), WR_OK);
    cr_assert_eq(ops->requeue(q, tags[0]), WR_OK);
    cr_assert_eq(ops->requeue(q, c), WR_OK);
    cr_assert_eq(ops->requeue(q, tags[2]), WR_OK);
    cr_assert_eq(ops->requeue(q, a), WR_OK);
    cr_assert_eq(ops->depth(q), 5);
    cr_assert_eq(ops->unacked(q), 0);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ops->ack(q, take(q, bodies[i], true)), WR_OK);
    assert_empty(q);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, requeue_goes_ahead_of_later_messages)
{
    void *q = open_plain();
    put(q, "a");
    put(q, "b");
    put(q, "c");
    uint64_t ta = take(q, "a", false);
    uint64_t tb = take(q, "b", false);
    put(q, "d");
    put(q, "e");
    /* Ready: c d e. b goes before c, a before b; d and e were enqueued after both. */
    cr_assert_eq(ops->requeue(q, tb), WR_OK);
    cr_assert_eq(ops->requeue(q, ta), WR_OK);
    cr_assert_eq(ops->depth(q), 5);
    take(q, "a", true);
    take(q, "b", true);
    uint64_t tc = take(q, "c", false);
    /* Nothing older is ready now: c goes back to the front, ahead of d and e. */
    cr_assert_eq(ops->requeue(q, tc), WR_OK);
    take(q, "c", true);
    uint64_t td = take(q, "d", false);
    put(q, "f");
    cr_assert_eq(ops->requeue(q, td), WR_OK);
    take(q, "d", true);
    take(q, "e", false);
    take(q, "f", false);
    assert_empty(q);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, requeue_into_the_middle)
{
    /* Deliver 1..6, requeue 2 4 6, deliver them, then requeue 3 and 5 with 2 4 6 ready:
     * each must land between its neighbours. */
    void *q = open_plain();
    char body[8];
    uint64_t tags[7];
    for (int i = 1; i <= 6; i++) {
        snprintf(body, sizeof body, "%d", i);
        put(q, body);
    }
    for (int i = 1; i <= 6; i++) {
        snprintf(body, sizeof body, "%d", i);
        tags[i] = take(q, body, false);
    }
    cr_assert_eq(ops->requeue(q, tags[6]), WR_OK);
    cr_assert_eq(ops->requeue(q, tags[2]), WR_OK);
    cr_assert_eq(ops->requeue(q, tags[4]), WR_OK);
    cr_assert_eq(ops->requeue(q, tags[5]), WR_OK);
    cr_assert_eq(ops->requeue(q, tags[3]), WR_OK);
    for (int i = 2; i <= 6; i++) {
        snprintf(body, sizeof body, "%d", i);
        cr_assert_eq(ops->ack(q, take(q, body, true)), WR_OK);
    }
    cr_assert_eq(ops->unacked(q), 1);
    cr_assert_eq(ops->ack(q, tags[1]), WR_OK);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, peek_next_and_purge_leaves_unacked)
{
    void *q = open_plain();
    cr_assert_null(ops->peek(q));
    for (int i = 0; i < 5; i++)
        put(q, "m");
    put(q, "last");
    const struct wr_msg *head = ops->peek(q);
    cr_assert_not_null(head);
    cr_assert(body_is(head, "m"));
    cr_assert_eq(ops->peek(q), head, "the head is decoded once");
    struct wr_stored d = {0};
    cr_assert_eq(ops->next(q, &d), WR_OK);
    cr_assert_eq(d.msg, head, "next hands out the message peek showed");
    uint64_t t2 = take(q, "m", false);
    cr_assert_eq(ops->purge(q), 4);
    cr_assert_eq(ops->depth(q), 0);
    cr_assert_eq(ops->unacked(q), 2);
    cr_assert_eq(n_dropped, 0, "purge is not a max-length drop");
    cr_assert_null(ops->peek(q));
    assert_empty(q);
    cr_assert_eq(ops->requeue(q, d.tag), WR_OK);
    cr_assert_eq(ops->depth(q), 1);
    cr_assert_eq(ops->ack(q, t2), WR_OK);
    cr_assert_eq(ops->purge(q), 1);
    cr_assert_eq(ops->purge(q), 0);
    ops->close(q);
}

/* ---- limits ---------------------------------------------------------------------------- */

Test(QUEUE_MODEL_SUITE, max_length_drop_head_passes_the_oldest_to_the_callback)
{
    void *q = open_limited(3, -1, WR_OVERFLOW_DROP_HEAD, true);
    put(q, "1");
    put(q, "2");
    put(q, "3");
    cr_assert_eq(n_dropped, 0);
    cr_assert_eq(put(q, "4"), WR_OK);
    cr_assert_eq(n_dropped, 1);
    cr_assert(body_is(dropped[0], "1"));
    cr_assert_eq(put(q, "5"), WR_OK);
    cr_assert_eq(n_dropped, 2);
    cr_assert(body_is(dropped[1], "2"));
    cr_assert_eq(ops->depth(q), 3);

    /* Unacked messages do not count: deliver two, then two more fit. */
    uint64_t t3 = take(q, "3", false);
    uint64_t t4 = take(q, "4", false);
    put(q, "6");
    put(q, "7");
    cr_assert_eq(n_dropped, 2);
    cr_assert_eq(ops->depth(q), 3);

    /* A requeue makes a message ready again; over the limit, the head goes (RabbitMQ). */
    cr_assert_eq(ops->requeue(q, t4), WR_OK);
    cr_assert_eq(n_dropped, 3);
    cr_assert(body_is(dropped[2], "4"), "the requeued 4 is now the oldest ready");
    cr_assert_eq(ops->depth(q), 3);
    take(q, "5", false);
    take(q, "6", false);
    take(q, "7", false);
    cr_assert_eq(ops->ack(q, t3), WR_OK);
    release_dropped();
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, drop_head_without_callback_frees)
{
    void *q = open_limited(1, -1, WR_OVERFLOW_DROP_HEAD, false);
    struct wr_msg *first = make_msg("first");
    cr_assert_eq(ops->enqueue(q, first, NULL), WR_OK);
    cr_assert_eq(put(q, "second"), WR_OK);
    cr_assert_eq(first->refs, 1, "the storage released its reference to the dropped one");
    cr_assert_eq(n_dropped, 0);
    take(q, "second", false);
    wr_msg_unref(first);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, max_length_bytes_drop_head)
{
    void *q = open_limited(-1, 10, WR_OVERFLOW_DROP_HEAD, true);
    put(q, "aaaa");   /* 4 */
    put(q, "bbbb");   /* 8 */
    put(q, "cc");     /* 10: at the limit, kept */
    cr_assert_eq(n_dropped, 0);
    put(q, "d");      /* 11: drop aaaa -> 7 */
    cr_assert_eq(n_dropped, 1);
    cr_assert(body_is(dropped[0], "aaaa"));
    put(q, "eeeeeeee"); /* 15: drop bbbb (11), cc (9) */
    cr_assert_eq(n_dropped, 3);
    cr_assert(body_is(dropped[1], "bbbb"));
    cr_assert(body_is(dropped[2], "cc"));
    cr_assert_eq(ops->depth(q), 2);

    /* Unacked bytes do not count. */
    uint64_t t = take(q, "d", false);
    put(q, "ff"); /* ready: eeeeeeee ff = 10 */
    cr_assert_eq(n_dropped, 3);

    /* Bigger than the limit on its own: everything older goes, then the message itself,
     * as RabbitMQ does (publish, then drop from the head while over). */
    put(q, "0123456789X");
    cr_assert_eq(n_dropped, 6);
    cr_assert(body_is(dropped[3], "eeeeeeee"));
    cr_assert(body_is(dropped[4], "ff"));
    cr_assert(body_is(dropped[5], "0123456789X"));
    cr_assert_eq(ops->depth(q), 0);
    cr_assert_eq(ops->unacked(q), 1);
    cr_assert_eq(ops->ack(q, t), WR_OK);
    release_dropped();
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, reject_publish)
{
    void *q = open_limited(2, -1, WR_OVERFLOW_REJECT_PUBLISH, true);
    cr_assert_eq(put(q, "1"), WR_OK);
    cr_assert_eq(put(q, "2"), WR_OK);
    struct wr_msg *msg = make_msg("3");
    struct wr_error err = {0};
    cr_assert_eq(ops->enqueue(q, msg, &err), WR_ELIMIT);
    cr_assert_eq(err.code, WR_ELIMIT);
    cr_assert_neq(strlen(err.msg), 0);
    cr_assert_eq(msg->refs, 1, "a refused message is not kept");
    cr_assert_eq(ops->depth(q), 2);
    cr_assert_eq(n_dropped, 0);

    /* Unacked do not count: deliver one and the next fits. */
    uint64_t t = take(q, "1", false);
    cr_assert_eq(ops->enqueue(q, msg, NULL), WR_OK);
    /* A requeue is never refused, even past the limit. */
    cr_assert_eq(ops->requeue(q, t), WR_OK);
    cr_assert_eq(ops->depth(q), 3);
    cr_assert_eq(n_dropped, 0);
    take(q, "1", true);
    take(q, "2", false);
    take(q, "3", false);
    wr_msg_unref(msg);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, reject_publish_bytes)
{
    void *q = open_limited(-1, 5, WR_OVERFLOW_REJECT_PUBLISH, true);
    cr_assert_eq(put(q, "abc"), WR_OK);
    cr_assert_eq(put(q, "def"), WR_ELIMIT);
    cr_assert_eq(put(q, "de"), WR_OK);
    cr_assert_eq(put(q, ""), WR_OK, "an empty body adds no bytes");
    cr_assert_eq(put(q, "x"), WR_ELIMIT);
    cr_assert_eq(ops->depth(q), 3);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, max_length_zero)
{
    /* Drop-head keeps nothing: the new message itself is dropped, through the callback. */
    void *q = open_limited(0, -1, WR_OVERFLOW_DROP_HEAD, true);
    cr_assert_eq(put(q, "gone"), WR_OK);
    cr_assert_eq(n_dropped, 1);
    cr_assert(body_is(dropped[0], "gone"));
    cr_assert_eq(ops->depth(q), 0);
    assert_empty(q);
    release_dropped();
    ops->close(q);

    /* Reject-publish refuses everything. */
    use_queue_dir("refuses");
    q = open_limited(0, -1, WR_OVERFLOW_REJECT_PUBLISH, true);
    cr_assert_eq(put(q, "no"), WR_ELIMIT);
    cr_assert_eq(ops->depth(q), 0);
    cr_assert_eq(n_dropped, 0);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, open_refuses_bad_limits)
{
    struct wr_storage_args args = make_args(0, -5, -1, WR_OVERFLOW_DROP_HEAD);
    void *state = NULL;
    struct wr_error err = {0};
    cr_assert_eq(ops->open(ctx, &args, &state, &err), WR_EINVAL);
    cr_assert_neq(strlen(err.msg), 0);
}

Test(QUEUE_MODEL_SUITE, close_releases_ready_and_unacked)
{
    void *q = open_plain();
    struct wr_msg *ready = make_msg("ready");
    struct wr_msg *out = make_msg("out");
    cr_assert_eq(ops->enqueue(q, out, NULL), WR_OK);
    cr_assert_eq(ops->enqueue(q, ready, NULL), WR_OK);
    take(q, "out", false);
    ops->close(q);
    cr_assert_eq(ready->refs, 1);
    cr_assert_eq(out->refs, 1);
    wr_msg_unref(ready);
    wr_msg_unref(out);
}

/* ---- random operations against a model ------------------------------------------------- */

/* The model: the ready ids sorted by level (high first), then by id, and the unacked ones. */
#define MODEL_OPS 20000
#define MODEL_MAX 40

struct model_msg {
    int id;
    int level;
    bool redelivered;
    uint64_t tag;
};

/* Puts m among the ready ones: after every higher level and every older one of its own. */
static void model_insert(struct model_msg *ready, int *n_ready, struct model_msg m)
{
    int at = 0;
    while (at < *n_ready &&
           (ready[at].level > m.level || (ready[at].level == m.level && ready[at].id < m.id)))
        at++;
    memmove(&ready[at + 1], &ready[at], (size_t)(*n_ready - at) * sizeof(ready[0]));
    ready[at] = m;
    (*n_ready)++;
}

/* Random puts, deliveries, acks and requeues on a queue of max_priority, checked against the
 * model after each: depth, unacked and the head peek shows. The queue stays small, so each
 * ring wraps around many times and requeues land at its front, its back and in its middle
 * across the wrap. A priority queue gets priorities from none to max_priority + 2, so both
 * caps are exercised. With restarts, the queue is also closed and opened again now and then:
 * the unacked messages come back at their places, redelivered (they were handed out), and
 * the ready ones keep their flags. Drains the queue at the end and closes it. */
static void run_model(uint8_t max_priority, int n_ops, unsigned seed, bool restarts)
{
    void *q = open_priority(max_priority);
    struct model_msg ready[MODEL_MAX], unacked[MODEL_MAX];
    int n_ready = 0, n_unacked = 0, next_id = 0;
    char body[16];
    srand(seed);
    for (int op = 0; op < n_ops; op++) {
        int r = rand() % (restarts ? 5 : 4);
        if (r == 0 && n_ready + n_unacked < MODEL_MAX) {
            int priority = max_priority ? rand() % (max_priority + 4) - 1 : NO_PRIORITY;
            int level = priority < 0 ? 0 : priority < max_priority ? priority : max_priority;
            snprintf(body, sizeof body, "%d", next_id);
            cr_assert_eq(put_priority(q, body, priority), WR_OK);
            model_insert(ready, &n_ready, (struct model_msg){next_id++, level, false, 0});
        } else if (r == 1 && n_ready > 0) {
            snprintf(body, sizeof body, "%d", ready[0].id);
            struct model_msg m = ready[0];
            m.tag = take(q, body, m.redelivered);
            memmove(&ready[0], &ready[1], (size_t)(n_ready - 1) * sizeof(ready[0]));
            n_ready--;
            unacked[n_unacked++] = m;
        } else if (r == 2 && n_unacked > 0) {
            int k = rand() % n_unacked;
            cr_assert_eq(ops->ack(q, unacked[k].tag), WR_OK);
            unacked[k] = unacked[--n_unacked];
        } else if (r == 3 && n_unacked > 0) {
            int k = rand() % n_unacked;
            struct model_msg m = unacked[k];
            unacked[k] = unacked[--n_unacked];
            cr_assert_eq(ops->requeue(q, m.tag), WR_OK);
            m.redelivered = true;
            model_insert(ready, &n_ready, m);
        } else if (r == 4 && op % 500 == 4) {
            ops->close(q);
            q = open_priority(max_priority);
            for (int i = 0; i < n_unacked; i++) {
                unacked[i].redelivered = true;
                model_insert(ready, &n_ready, unacked[i]);
            }
            n_unacked = 0;
        }
        cr_assert_eq(ops->depth(q), (uint64_t)n_ready);
        cr_assert_eq(ops->unacked(q), (uint64_t)n_unacked);
        const struct wr_msg *head = ops->peek(q);
        if (n_ready == 0) {
            cr_assert_null(head);
        } else {
            snprintf(body, sizeof body, "%d", ready[0].id);
            cr_assert(body_is(head, body), "peek is not the model's head %s", body);
        }
    }
    for (int i = 0; i < n_ready; i++) {
        snprintf(body, sizeof body, "%d", ready[i].id);
        take(q, body, ready[i].redelivered);
    }
    assert_empty(q);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, random_operations_match_a_model)
{
    run_model(0, MODEL_OPS, 7, false);
}

/* ---- priority queues (x-max-priority) -------------------------------------------------- */

/* A message to enqueue, with its priority property (NO_PRIORITY: none). */
struct put_spec {
    const char *body;
    int priority;
};

static void put_each(void *q, const struct put_spec *in, int n)
{
    for (int i = 0; i < n; i++)
        cr_assert_eq(put_priority(q, in[i].body, in[i].priority), WR_OK);
}

/* Enqueues the n messages of in, then checks that next() hands them out in the order of want
 * (acking each) and that nothing else is ready. */
static void check_order(void *q, const struct put_spec *in, const char *const *want, int n)
{
    put_each(q, in, n);
    cr_assert_eq(ops->depth(q), (uint64_t)n);
    for (int i = 0; i < n; i++)
        cr_assert_eq(ops->ack(q, take(q, want[i], false)), WR_OK);
    assert_empty(q);
}

Test(QUEUE_MODEL_SUITE, priority_highest_first_fifo_within)
{
    void *q = open_priority(10);
    const struct put_spec in[] = {{"p0", 0}, {"p3", 3}, {"p9", 9}, {"p5", 5}, {"p3b", 3}};
    const char *const want[] = {"p9", "p5", "p3", "p3b", "p0"};
    check_order(q, in, want, 5);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, priority_above_max_counts_as_max)
{
    /* 200 and 7 are 5: FIFO with the first 5, all ahead of 4. */
    void *q = open_priority(5);
    const struct put_spec in[] = {{"five", 5}, {"two-hundred", 200}, {"seven", 7}, {"four", 4}};
    const char *const want[] = {"five", "two-hundred", "seven", "four"};
    check_order(q, in, want, 4);
    ops->close(q);

    /* The widest range RabbitMQ allows. */
    use_queue_dir("widest");
    q = open_priority(255);
    const struct put_spec widest[] = {{"254", 254}, {"0", 0}, {"255", 255}};
    const char *const widest_want[] = {"255", "254", "0"};
    check_order(q, widest, widest_want, 3);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, priority_missing_counts_as_zero)
{
    void *q = open_priority(3);
    const struct put_spec in[] = {
        {"none1", NO_PRIORITY}, {"zero", 0}, {"one", 1}, {"none2", NO_PRIORITY},
    };
    const char *const want[] = {"one", "none1", "zero", "none2"};
    check_order(q, in, want, 4);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, plain_queue_ignores_priorities)
{
    void *q = open_plain();
    const struct put_spec in[] = {{"low", 0}, {"high", 9}, {"none", NO_PRIORITY}};
    const char *const want[] = {"low", "high", "none"};
    check_order(q, in, want, 3);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, priority_requeue_keeps_its_place_within_its_priority)
{
    void *q = open_priority(10);
    const struct put_spec in[] = {{"h1", 5}, {"l1", 1}, {"h2", 5}, {"l2", 1}, {"h3", 5}};
    put_each(q, in, 5);
    uint64_t th1 = take(q, "h1", false);
    uint64_t th2 = take(q, "h2", false);
    put_priority(q, "h4", 5);
    /* Ready: h3 h4 | l1 l2. Each requeued one goes back ahead of the later 5s, above the 1s. */
    cr_assert_eq(ops->requeue(q, th2), WR_OK);
    cr_assert_eq(ops->requeue(q, th1), WR_OK);
    cr_assert_eq(ops->unacked(q), 0);
    cr_assert_eq(ops->depth(q), 6);
    take(q, "h1", true);
    take(q, "h2", true);
    take(q, "h3", false);
    take(q, "h4", false);
    uint64_t tl1 = take(q, "l1", false);
    /* A low one comes back below a higher one published meanwhile, ahead of its own level. */
    put_priority(q, "h5", 5);
    put_priority(q, "l3", 1);
    cr_assert_eq(ops->requeue(q, tl1), WR_OK);
    take(q, "h5", false);
    take(q, "l1", true);
    take(q, "l2", false);
    take(q, "l3", false);
    assert_empty(q);
    ops->close(q); /* the unacked ones go with it */
}

Test(QUEUE_MODEL_SUITE, priority_peek_is_what_next_hands_out)
{
    cr_assert_not_null(ops->peek);
    void *q = open_priority(10);
    cr_assert_null(ops->peek(q));
    put_priority(q, "a", 1);
    cr_assert(body_is(ops->peek(q), "a"));
    put_priority(q, "b", 7);
    cr_assert(body_is(ops->peek(q), "b"));
    put_priority(q, "c", 7);
    cr_assert(body_is(ops->peek(q), "b"));
    uint64_t tb = take(q, "b", false);
    cr_assert(body_is(ops->peek(q), "c"));
    cr_assert_eq(ops->requeue(q, tb), WR_OK);
    cr_assert(body_is(ops->peek(q), "b"));
    take(q, "b", true);
    take(q, "c", false);
    cr_assert(body_is(ops->peek(q), "a"), "the lower level shows once the higher is empty");
    take(q, "a", false);
    cr_assert_null(ops->peek(q));
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, priority_max_length_drops_the_head_of_the_highest_priority)
{
    void *q = open_full(10, 3, -1, WR_OVERFLOW_DROP_HEAD, true);
    put_priority(q, "lo", 1);
    put_priority(q, "hi", 9);
    put_priority(q, "mid", 5);
    cr_assert_eq(n_dropped, 0);
    cr_assert_eq(put_priority(q, "lo2", 1), WR_OK);
    cr_assert_eq(n_dropped, 1);
    cr_assert(body_is(dropped[0], "hi"));
    /* A new message of the highest priority is the head itself, so it is the one to go. */
    cr_assert_eq(put_priority(q, "top", 9), WR_OK);
    cr_assert_eq(n_dropped, 2);
    cr_assert(body_is(dropped[1], "top"));
    cr_assert_eq(ops->depth(q), 3);

    /* A requeue past the limit drops the head too, whatever level it came back to. */
    uint64_t tmid = take(q, "mid", false);
    put_priority(q, "lo3", 1);
    cr_assert_eq(n_dropped, 2);
    cr_assert_eq(ops->requeue(q, tmid), WR_OK);
    cr_assert_eq(n_dropped, 3);
    cr_assert(body_is(dropped[2], "mid"));
    take(q, "lo", false);
    take(q, "lo2", false);
    take(q, "lo3", false);
    assert_empty(q);
    release_dropped();
    ops->close(q);

    /* max_length_bytes, and no callback: the storage frees what it drops. */
    use_queue_dir("bytes");
    q = open_full(10, -1, 4, WR_OVERFLOW_DROP_HEAD, false);
    put_priority(q, "aa", 2);
    put_priority(q, "bb", 8);
    put_priority(q, "c", 0); /* 5 bytes: bb goes */
    take(q, "aa", false);
    take(q, "c", false);
    assert_empty(q);
    cr_assert_eq(n_dropped, 0);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, priority_reject_publish_counts_every_level)
{
    void *q = open_full(10, 2, -1, WR_OVERFLOW_REJECT_PUBLISH, true);
    cr_assert_eq(put_priority(q, "a", 1), WR_OK);
    cr_assert_eq(put_priority(q, "b", 9), WR_OK);
    cr_assert_eq(put_priority(q, "c", 5), WR_ELIMIT, "a higher priority does not get in");
    cr_assert_eq(put_priority(q, "d", 0), WR_ELIMIT);
    cr_assert_eq(ops->depth(q), 2);
    cr_assert_eq(n_dropped, 0);
    take(q, "b", false);
    take(q, "a", false);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, priority_purge_and_counts)
{
    void *q = open_priority(10);
    const struct put_spec in[] = {{"a", 0}, {"b", 3}, {"c", 10}, {"d", NO_PRIORITY}, {"e", 3}};
    put_each(q, in, 5);
    cr_assert_eq(ops->depth(q), 5);
    uint64_t tc = take(q, "c", false);
    uint64_t tb = take(q, "b", false);
    cr_assert_eq(ops->depth(q), 3);
    cr_assert_eq(ops->unacked(q), 2);
    cr_assert_eq(ops->purge(q), 3);
    cr_assert_eq(ops->depth(q), 0);
    cr_assert_eq(ops->unacked(q), 2);
    cr_assert_null(ops->peek(q));
    assert_empty(q);
    /* After a purge the levels work as before. */
    cr_assert_eq(ops->requeue(q, tb), WR_OK);
    put_priority(q, "f", 1);
    cr_assert_eq(ops->requeue(q, tc), WR_OK);
    cr_assert_eq(ops->depth(q), 3);
    take(q, "c", true);
    take(q, "b", true);
    take(q, "f", false);
    cr_assert_eq(ops->unacked(q), 3);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, priority_close_releases_every_level)
{
    void *q = open_priority(255);
    struct wr_msg *msgs[4] = {
        make_msg_priority("ready-0", 0), make_msg_priority("ready-200", 200),
        make_msg_priority("out-255", 255), make_msg_priority("ready-none", NO_PRIORITY),
    };
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ops->enqueue(q, msgs[i], NULL), WR_OK);
    take(q, "out-255", false);
    ops->close(q);
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(msgs[i]->refs, 1, "message %d still held by the storage", i);
        wr_msg_unref(msgs[i]);
    }
}

/* Levels from none to 6 on a queue whose maximum is 4. */
Test(QUEUE_MODEL_SUITE, priority_random_operations_match_a_model)
{
    run_model(4, MODEL_OPS, 11, false);
}

/* ---- a bounded load -------------------------------------------------------------------- */

#define LOAD 100000

Test(QUEUE_MODEL_SUITE, hundred_thousand_messages)
{
    void *q = open_plain();
    size_t live_before = wr_msg_bytes_live();
    /* Enqueue all, deliver all, requeue every 10th (in reverse), then drain and ack. */
    for (int i = 0; i < LOAD; i++)
        cr_assert_eq(put(q, "payload"), WR_OK);
    cr_assert_eq(ops->depth(q), LOAD);
    uint64_t *tags = malloc(LOAD * sizeof(*tags));
    cr_assert_not_null(tags);
    for (int i = 0; i < LOAD; i++) {
        struct wr_stored d;
        cr_assert_eq(ops->next(q, &d), WR_OK);
        tags[i] = d.tag;
    }
    cr_assert_eq(ops->unacked(q), LOAD);
    for (int i = LOAD - 10; i >= 0; i -= 10)
        cr_assert_eq(ops->requeue(q, tags[i]), WR_OK);
    cr_assert_eq(ops->depth(q), LOAD / 10);
    for (int i = 0; i < LOAD; i++)
        if (i % 10 != 0)
            cr_assert_eq(ops->ack(q, tags[i]), WR_OK);
    uint64_t prev = 0;
    for (int i = 0; i < LOAD / 10; i++) {
        struct wr_stored d;
        cr_assert_eq(ops->next(q, &d), WR_OK);
        cr_assert(d.redelivered);
        cr_assert_gt(d.tag, prev, "requeued messages come back in their original order");
        prev = d.tag;
        cr_assert_eq(ops->ack(q, d.tag), WR_OK);
    }
    cr_assert_eq(ops->depth(q), 0);
    cr_assert_eq(ops->unacked(q), 0);
    assert_empty(q);
    free(tags);
    /* Every message is gone; the ones the test made were released with their last ack. */
    cr_assert_leq(wr_msg_bytes_live(), live_before);
    ops->close(q);
}

Test(QUEUE_MODEL_SUITE, hundred_thousand_messages_over_eleven_priorities)
{
    void *q = open_priority(10);
    char body[16];
    /* Priorities cycle 0..10, so every level's ring grows many times. */
    for (int i = 0; i < LOAD; i++) {
        snprintf(body, sizeof body, "%d", i % 11);
        cr_assert_eq(put_priority(q, body, i % 11), WR_OK);
    }
    cr_assert_eq(ops->depth(q), LOAD);
    int level = 10;
    uint64_t prev = 0;
    for (int i = 0; i < LOAD; i++) {
        struct wr_stored d;
        cr_assert_eq(ops->next(q, &d), WR_OK);
        int got = d.msg->props.priority;
        cr_assert_leq(got, level, "priority %d after %d", got, level);
        if (got < level)
            prev = 0;
        cr_assert_gt(d.tag, prev, "FIFO within priority %d", got);
        level = got;
        prev = d.tag;
        /* Every 7th goes back; it must come straight out again, as the head of its level. */
        if (i % 7 == 0) {
            cr_assert_eq(ops->requeue(q, d.tag), WR_OK);
            struct wr_stored again;
            cr_assert_eq(ops->next(q, &again), WR_OK);
            cr_assert_eq(again.tag, d.tag);
            cr_assert(again.redelivered);
        }
        cr_assert_eq(ops->ack(q, d.tag), WR_OK);
    }
    assert_empty(q);
    cr_assert_eq(ops->unacked(q), 0);
    ops->close(q);
}

#endif
