/*
 * storage_memory_test.c: the `memory` storage backend, loaded through the real plugin
 * loader and driven through its ops table as the broker drives it: FIFO delivery, ack,
 * requeue at the original place with the redelivered flag, purge, counts, and the
 * max-length limits under drop-head and reject-publish (RabbitMQ's semantics); then the same
 * for priority queues (x-max-priority).
 */
#include <criterion/criterion.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <warren/wr.h>

static struct wr_loop *lp;
static struct wr_broker *b;
static const struct wr_storage_ops *ops;
static struct wr_plugin_ctx *ctx;
static struct wr_table *no_options;
static char data_dir[] = "/tmp/warren-memtest-XXXXXX";

static void setup(void)
{
    struct wr_error err = {0};
    cr_assert_not_null(mkdtemp(data_dir));
    cr_assert_eq(wr_loop_new(&lp, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_broker_new(lp, data_dir, &b, &err), WR_OK, "%s", err.msg);
    const char *const dirs[] = {WR_TEST_PLUGIN_DIR, NULL};
    cr_assert_eq(wr_broker_load_plugin(b, "memory", NULL, dirs, WR_PLUGIN_STORAGE, &ctx, &err),
                 WR_OK, "%s", err.msg);
    const struct wr_plugin *p = wr_plugin_ctx_plugin(ctx);
    cr_assert_str_eq(p->name, "memory");
    cr_assert_eq(p->kind, WR_PLUGIN_STORAGE);
    ops = p->ops;
    cr_assert_geq(ops->size, sizeof(struct wr_storage_ops));
    cr_assert_eq(ops->model, WR_STORAGE_QUEUE);
    cr_assert_null(ops->sync, "memory is durable on return: no sync op");
    no_options = wr_table_new();
    cr_assert_not_null(no_options);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    wr_broker_free(b);
    wr_loop_free(lp);
    wr_table_free(no_options);
    nftw(data_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(storage_memory, .init = setup, .fini = teardown, .timeout = 60);

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

static void *open_full(uint8_t max_priority, int64_t max_length, int64_t max_bytes,
                       enum wr_overflow overflow, bool with_callback)
{
    struct wr_storage_args args = {
        .vhost = "/",
        .queue = "q",
        .dir = data_dir,
        .max_length = max_length,
        .max_length_bytes = max_bytes,
        .overflow = overflow,
        .max_priority = max_priority,
        .partitions = 1,
        .options = no_options,
        .dropped = with_callback ? on_dropped : NULL,
        .owner = &n_dropped,
    };
    void *state = NULL;
    struct wr_error err = {0};
    cr_assert_eq(ops->open(ctx, &args, &state, &err), WR_OK, "%s", err.msg);
    cr_assert_not_null(state);
    return state;
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
    return open_limited(-1, -1, WR_OVERFLOW_DROP_HEAD, true);
}

#define NO_PRIORITY (-1)

/* A message with the priority property set to priority, or without it (NO_PRIORITY). */
static struct wr_msg *make_msg_priority(const char *body, int priority)
{
    struct wr_props props = {0};
    if (priority != NO_PRIORITY) {
        props.flags = WR_PROP_PRIORITY;
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

static char *body_str(const struct wr_msg *msg)
{
    size_t len;
    const uint8_t *p = wr_msg_body(msg, &len);
    char *s = malloc(len + 1);
    memcpy(s, p, len);
    s[len] = 0;
    return s;
}

/* Takes the next delivery and checks its body and redelivered flag; returns its tag. */
static uint64_t take(void *q, const char *want, bool redelivered)
{
    struct wr_stored d = {0};
    cr_assert_eq(ops->next(q, &d), WR_OK, "expected '%s', the queue is empty", want);
    char *got = body_str(d.msg);
    cr_assert(body_is(d.msg, want), "expected '%s', got '%s'", want, got);
    free(got);
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

Test(storage_memory, fifo_order)
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
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            cr_assert_neq(tags[i], tags[j], "tags must be unique");
    assert_empty(q);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ops->ack(q, tags[i]), WR_OK);
    ops->close(q);
}

Test(storage_memory, ack_removes_and_counts_follow)
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

Test(storage_memory, unknown_tags)
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

Test(storage_memory, requeue_out_of_order_lands_at_original_places)
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

Test(storage_memory, requeue_goes_ahead_of_later_messages)
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

Test(storage_memory, requeue_into_the_middle)
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

Test(storage_memory, purge_leaves_unacked)
{
    void *q = open_plain();
    for (int i = 0; i < 5; i++)
        put(q, "m");
    uint64_t t1 = take(q, "m", false);
    uint64_t t2 = take(q, "m", false);
    cr_assert_eq(ops->purge(q), 3);
    cr_assert_eq(ops->depth(q), 0);
    cr_assert_eq(ops->unacked(q), 2);
    cr_assert_eq(n_dropped, 0, "purge is not a max-length drop");
    assert_empty(q);
    cr_assert_eq(ops->requeue(q, t1), WR_OK);
    cr_assert_eq(ops->depth(q), 1);
    cr_assert_eq(ops->ack(q, t2), WR_OK);
    cr_assert_eq(ops->purge(q), 1);
    cr_assert_eq(ops->purge(q), 0);
    ops->close(q);
}

Test(storage_memory, enqueue_takes_its_own_reference)
{
    void *q = open_plain();
    struct wr_msg *msg = make_msg("kept");
    cr_assert_eq(ops->enqueue(q, msg, NULL), WR_OK);
    cr_assert_eq(msg->refs, 2);
    uint64_t t = take(q, "kept", false);
    cr_assert_eq(ops->ack(q, t), WR_OK);
    cr_assert_eq(msg->refs, 1, "ack releases the storage's reference");
    cr_assert(body_is(msg, "kept"));
    wr_msg_unref(msg);
    ops->close(q);
}

/* ---- limits ---------------------------------------------------------------------------- */

Test(storage_memory, max_length_drop_head_passes_the_oldest_to_the_callback)
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

Test(storage_memory, drop_head_without_callback_frees)
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

Test(storage_memory, max_length_bytes_drop_head)
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

Test(storage_memory, reject_publish)
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

Test(storage_memory, reject_publish_bytes)
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

Test(storage_memory, max_length_zero)
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
    q = open_limited(0, -1, WR_OVERFLOW_REJECT_PUBLISH, true);
    cr_assert_eq(put(q, "no"), WR_ELIMIT);
    cr_assert_eq(ops->depth(q), 0);
    cr_assert_eq(n_dropped, 0);
    ops->close(q);
}

Test(storage_memory, open_refuses_bad_limits)
{
    struct wr_storage_args args = {
        .vhost = "/", .queue = "q", .dir = data_dir, .max_length = -5,
        .max_length_bytes = -1, .partitions = 1, .options = no_options,
    };
    void *state = NULL;
    struct wr_error err = {0};
    cr_assert_eq(ops->open(ctx, &args, &state, &err), WR_EINVAL);
    cr_assert_neq(strlen(err.msg), 0);
}

Test(storage_memory, close_releases_ready_and_unacked)
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

/* Random puts, deliveries, acks and requeues against a model (a sorted list of ready ids and
 * a list of unacked ones). The queue stays small, so the ring wraps around many times and
 * requeues land at its front, its back and in its middle across the wrap. */
#define MODEL_OPS 20000
#define MODEL_MAX 40

struct model_msg {
    int id;
    bool redelivered;
    uint64_t tag;
};

Test(storage_memory, random_operations_match_a_model)
{
    void *q = open_plain();
    struct model_msg ready[MODEL_MAX], unacked[MODEL_MAX];
    int n_ready = 0, n_unacked = 0, next_id = 0;
    char body[16];
    srand(7);
    for (int op = 0; op < MODEL_OPS; op++) {
        int r = rand() % 4;
        if (r == 0 && n_ready + n_unacked < MODEL_MAX) {
            snprintf(body, sizeof body, "%d", next_id);
            cr_assert_eq(put(q, body), WR_OK);
            ready[n_ready++] = (struct model_msg){next_id++, false, 0};
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
            int at = 0;
            while (at < n_ready && ready[at].id < m.id)
                at++;
            memmove(&ready[at + 1], &ready[at], (size_t)(n_ready - at) * sizeof(ready[0]));
            ready[at] = (struct model_msg){m.id, true, 0};
            n_ready++;
        }
        cr_assert_eq(ops->depth(q), (uint64_t)n_ready);
        cr_assert_eq(ops->unacked(q), (uint64_t)n_unacked);
    }
    /* Drain what is left, in the model's order. */
    for (int i = 0; i < n_ready; i++) {
        snprintf(body, sizeof body, "%d", ready[i].id);
        take(q, body, ready[i].redelivered);
    }
    assert_empty(q);
    ops->close(q);
}

/* ---- priority queues (x-max-priority) -------------------------------------------------- */

Test(storage_memory, priority_highest_first_fifo_within)
{
    void *q = open_priority(10);
    put_priority(q, "p0", 0);
    put_priority(q, "p3", 3);
    put_priority(q, "p9", 9);
    put_priority(q, "p5", 5);
    put_priority(q, "p3b", 3);
    cr_assert_eq(ops->depth(q), 5);
    const char *want[] = {"p9", "p5", "p3", "p3b", "p0"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ops->ack(q, take(q, want[i], false)), WR_OK);
    assert_empty(q);
    ops->close(q);
}

Test(storage_memory, priority_above_max_counts_as_max)
{
    void *q = open_priority(5);
    put_priority(q, "five", 5);
    put_priority(q, "two-hundred", 200);
    put_priority(q, "seven", 7);
    put_priority(q, "four", 4);
    /* 200 and 7 are 5: FIFO with the first 5, all ahead of 4. */
    take(q, "five", false);
    take(q, "two-hundred", false);
    take(q, "seven", false);
    take(q, "four", false);
    assert_empty(q);
    ops->close(q);

    /* The widest range RabbitMQ allows. */
    q = open_priority(255);
    put_priority(q, "254", 254);
    put_priority(q, "0", 0);
    put_priority(q, "255", 255);
    take(q, "255", false);
    take(q, "254", false);
    take(q, "0", false);
    ops->close(q);
}

Test(storage_memory, priority_missing_counts_as_zero)
{
    void *q = open_priority(3);
    put_priority(q, "none1", NO_PRIORITY);
    put_priority(q, "zero", 0);
    put_priority(q, "one", 1);
    put_priority(q, "none2", NO_PRIORITY);
    take(q, "one", false);
    take(q, "none1", false);
    take(q, "zero", false);
    take(q, "none2", false);
    ops->close(q);
}

Test(storage_memory, plain_queue_ignores_priorities)
{
    void *q = open_plain();
    put_priority(q, "low", 0);
    put_priority(q, "high", 9);
    put_priority(q, "none", NO_PRIORITY);
    take(q, "low", false);
    take(q, "high", false);
    take(q, "none", false);
    ops->close(q);
}

Test(storage_memory, priority_requeue_keeps_its_place_within_its_priority)
{
    void *q = open_priority(10);
    put_priority(q, "h1", 5);
    put_priority(q, "l1", 1);
    put_priority(q, "h2", 5);
    put_priority(q, "l2", 1);
    put_priority(q, "h3", 5);
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

Test(storage_memory, priority_peek_is_what_next_hands_out)
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

/* RabbitMQ's drop-head drops what a fetch would hand out: rabbit_priority_queue's drop walks
 * the per-priority backing queues from the highest priority down, as fetch does. */
Test(storage_memory, priority_max_length_drops_the_head_of_the_highest_priority)
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

Test(storage_memory, priority_reject_publish_counts_every_level)
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

Test(storage_memory, priority_purge_and_counts)
{
    void *q = open_priority(10);
    put_priority(q, "a", 0);
    put_priority(q, "b", 3);
    put_priority(q, "c", 10);
    put_priority(q, "d", NO_PRIORITY);
    put_priority(q, "e", 3);
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

Test(storage_memory, priority_close_releases_every_level)
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

/* The model above with priorities: ready ids sorted by level (high first), then by id. Levels
 * -1 (no property) to 6 on a queue whose maximum is 4, so both caps are exercised. */
#define PRIO_MAX 4

struct model_prio_msg {
    int id;
    int level;
    bool redelivered;
    uint64_t tag;
};

static int model_level(int priority)
{
    if (priority == NO_PRIORITY)
        return 0;
    return priority < PRIO_MAX ? priority : PRIO_MAX;
}

/* Where m goes among the ready ones: after every higher level and every older one of its own. */
static int model_place(const struct model_prio_msg *ready, int n_ready, int level, int id)
{
    int at = 0;
    while (at < n_ready &&
           (ready[at].level > level || (ready[at].level == level && ready[at].id < id)))
        at++;
    return at;
}

Test(storage_memory, priority_random_operations_match_a_model)
{
    void *q = open_priority(PRIO_MAX);
    struct model_prio_msg ready[MODEL_MAX], unacked[MODEL_MAX];
    int n_ready = 0, n_unacked = 0, next_id = 0;
    char body[16];
    srand(11);
    for (int op = 0; op < MODEL_OPS; op++) {
        int r = rand() % 4;
        if (r == 0 && n_ready + n_unacked < MODEL_MAX) {
            int priority = rand() % 8 - 1;
            snprintf(body, sizeof body, "%d", next_id);
            cr_assert_eq(put_priority(q, body, priority), WR_OK);
            int level = model_level(priority);
            int at = model_place(ready, n_ready, level, next_id);
            memmove(&ready[at + 1], &ready[at], (size_t)(n_ready - at) * sizeof(ready[0]));
            ready[at] = (struct model_prio_msg){next_id++, level, false, 0};
            n_ready++;
        } else if (r == 1 && n_ready > 0) {
            snprintf(body, sizeof body, "%d", ready[0].id);
            struct model_prio_msg m = ready[0];
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
            struct model_prio_msg m = unacked[k];
            unacked[k] = unacked[--n_unacked];
            cr_assert_eq(ops->requeue(q, m.tag), WR_OK);
            int at = model_place(ready, n_ready, m.level, m.id);
            memmove(&ready[at + 1], &ready[at], (size_t)(n_ready - at) * sizeof(ready[0]));
            ready[at] = (struct model_prio_msg){m.id, m.level, true, 0};
            n_ready++;
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

/* ---- a bounded load -------------------------------------------------------------------- */

#define LOAD 100000

Test(storage_memory, hundred_thousand_messages)
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

Test(storage_memory, hundred_thousand_messages_over_eleven_priorities)
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
