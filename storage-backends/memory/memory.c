/*
 * memory.c: the `memory` storage backend, a queue held in RAM (the queue model).
 *
 * Every enqueued message gets the next sequence number. The ready messages sit in a ring
 * deque kept in sequence order (struct wr_ring, container.h): enqueue appends, next pops the
 * head. A delivered message moves to the unacked set, a hash table keyed by its sequence
 * number, which is also its delivery tag (struct wr_idtable). A requeued message goes back
 * among the ready ones at its original place, found by binary search; the usual case, older
 * than everything ready, is a push at the front. This is what RabbitMQ's classic queues do.
 *
 * A priority queue (max_priority > 0, RabbitMQ's x-max-priority) has one ring per level,
 * 0..max_priority, as RabbitMQ keeps one backing queue per priority: a message goes to the
 * ring of its priority (none counts as 0, above max_priority as max_priority), and next takes
 * the head of the highest non-empty ring. Sequence numbers stay queue-wide, so tags are unique
 * and each ring is FIFO with requeues at their original place. A plain queue is the same code
 * with the one ring, level 0.
 *
 * Limits (max_length, max_length_bytes) count ready messages only, as RabbitMQ does. Each
 * ring always has room for every message of its level the queue holds, ready or unacked, and
 * that room is taken at enqueue: so requeue never allocates and cannot fail, and a message is
 * never stranded between the two sets.
 *
 * Nothing here is durable: sync is NULL because the queue is as durable as it claims to be
 * when an op returns.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warren/wr.h>

/* A ready message. seq is its place in the queue and, once delivered, its tag. */
struct mem_entry {
    uint64_t seq;
    struct wr_msg *msg;
    bool redelivered;
};

/* An unacked message, in the table by its tag. */
struct mem_slot {
    uint64_t tag;
    struct wr_msg *msg;
};

/* The messages of one priority level. */
struct mem_level {
    struct wr_ring ready; /* struct mem_entry, in sequence order */
    size_t out;           /* unacked messages of this level: room kept for their requeue */
};

struct mem_queue {
    size_t count;             /* ready messages, all levels */
    uint64_t ready_bytes;     /* sum of the ready messages' body lengths */
    size_t top;               /* no level above it has ready messages */
    struct wr_idtable unacked; /* struct mem_slot */

    uint64_t next_seq;
    int64_t max_length;
    int64_t max_length_bytes;
    enum wr_overflow overflow;
    wr_storage_drop_cb *dropped;
    void *owner;

    uint8_t max_priority;
    struct mem_level levels[]; /* max_priority + 1 */
};

/* The level a message belongs to: its priority, capped at max_priority; none counts as 0. */
static struct mem_level *mem_level_of(struct mem_queue *q, const struct wr_msg *msg)
{
    if (q->max_priority == 0 || !(msg->props.flags & WR_PROP_PRIORITY))
        return &q->levels[0];
    uint8_t p = msg->props.priority;
    return &q->levels[p < q->max_priority ? p : q->max_priority];
}

/* The level whose head next() hands out: the highest with ready messages. The caller knows
 * the queue has some. */
static struct mem_level *mem_head_level(struct mem_queue *q)
{
    while (q->top > 0 && q->levels[q->top].ready.count == 0)
        q->top--;
    return &q->levels[q->top];
}

/* Counts e as ready in l, which just got it. */
static void mem_add_ready(struct mem_queue *q, struct mem_level *l, const struct mem_entry *e)
{
    size_t level = (size_t)(l - q->levels);
    q->count++;
    q->ready_bytes += e->msg->body.len;
    if (level > q->top)
        q->top = level;
}

static struct mem_entry mem_pop_head(struct mem_queue *q, struct mem_level *l)
{
    struct mem_entry e = *(struct mem_entry *)wr_ring_at(&l->ready, 0);
    wr_ring_pop_front(&l->ready);
    q->count--;
    q->ready_bytes -= e.msg->body.len;
    return e;
}

/* Drops every ready message of every level, releasing the storage's references. */
static void mem_release_ready(struct mem_queue *q)
{
    for (size_t p = 0; p <= q->max_priority; p++)
        while (q->levels[p].ready.count > 0)
            wr_msg_unref(mem_pop_head(q, &q->levels[p]).msg);
    q->top = 0;
}

static bool mem_over_limit(const struct mem_queue *q)
{
    return (q->max_length >= 0 && q->count > (uint64_t)q->max_length) ||
           (q->max_length_bytes >= 0 && q->ready_bytes > (uint64_t)q->max_length_bytes);
}

/* Drop-head: while the ready messages exceed a limit, the head (the message next() would hand
 * out) goes to the owner (who may dead-letter it) or is freed. In a priority queue that is
 * the oldest of the highest priority, as RabbitMQ drops: its drop takes the first non-empty
 * backing queue from the highest priority down, as fetch does. Each is out of the queue
 * before the callback runs, so the callback may come back into this queue. */
static void mem_drop_head(struct mem_queue *q)
{
    while (q->count > 0 && mem_over_limit(q)) {
        struct mem_entry e = mem_pop_head(q, mem_head_level(q));
        if (q->dropped)
            q->dropped(q->owner, e.msg);
        else
            wr_msg_unref(e.msg);
    }
}

/* ---- ops ----------------------------------------------------------------------------- */

static int mem_open(struct wr_plugin_ctx *ctx, const struct wr_storage_args *args,
                    void **state, struct wr_error *err)
{
    (void)ctx;
    if (args->max_length < -1 || args->max_length_bytes < -1)
        return wr_error_set(err, WR_EINVAL,
                            "memory storage: max_length and max_length_bytes must be -1 "
                            "(no limit) or >= 0");
    if (args->overflow != WR_OVERFLOW_DROP_HEAD && args->overflow != WR_OVERFLOW_REJECT_PUBLISH)
        return wr_error_set(err, WR_EINVAL, "memory storage: unknown overflow mode %d",
                            (int)args->overflow);
    size_t n_levels = (size_t)args->max_priority + 1;
    struct mem_queue *q = calloc(1, sizeof(*q) + n_levels * sizeof(struct mem_level));
    if (!q)
        return wr_error_set(err, WR_ENOMEM, "memory storage: out of memory");
    for (size_t p = 0; p < n_levels; p++)
        wr_ring_init(&q->levels[p].ready, sizeof(struct mem_entry));
    wr_idtable_init(&q->unacked, sizeof(struct mem_slot));
    q->max_length = args->max_length;
    q->max_length_bytes = args->max_length_bytes;
    q->overflow = args->overflow;
    q->dropped = args->dropped;
    q->owner = args->owner;
    q->max_priority = args->max_priority;
    *state = q;
    return WR_OK;
}

static void mem_close(void *state)
{
    struct mem_queue *q = state;
    if (!q)
        return;
    mem_release_ready(q);
    struct mem_slot *s;
    for (size_t i = 0; (s = wr_idtable_next(&q->unacked, &i));)
        wr_msg_unref(s->msg);
    for (size_t p = 0; p <= q->max_priority; p++)
        wr_ring_fini(&q->levels[p].ready);
    wr_idtable_fini(&q->unacked);
    free(q);
}

/* Under drop-head the message goes in first and the head is trimmed after, as RabbitMQ's
 * rabbit_amqqueue_process does (publish, then maybe_drop_head). So a message that alone
 * exceeds max_length_bytes, or any message when max_length is 0, ends up dropped itself,
 * through dropped (dead-lettered) like any other, after everything older. */
static int mem_enqueue(void *state, struct wr_msg *msg, struct wr_error *err)
{
    struct mem_queue *q = state;
    size_t len = msg->body.len;
    if (q->overflow == WR_OVERFLOW_REJECT_PUBLISH) {
        if (q->max_length >= 0 && q->count + 1 > (uint64_t)q->max_length)
            return wr_error_set(err, WR_ELIMIT,
                                "queue is full: %zu ready messages, max_length %lld "
                                "(overflow reject-publish)",
                                q->count, (long long)q->max_length);
        if (q->max_length_bytes >= 0 && q->ready_bytes + len > (uint64_t)q->max_length_bytes)
            return wr_error_set(err, WR_ELIMIT,
                                "queue is full: %llu ready bytes + %zu, max_length_bytes %lld "
                                "(overflow reject-publish)",
                                (unsigned long long)q->ready_bytes, len,
                                (long long)q->max_length_bytes);
    }
    struct mem_level *l = mem_level_of(q, msg);
    size_t room = l->ready.count + l->out + 1;
    if (wr_ring_reserve(&l->ready, room) != WR_OK)
        return wr_error_set(err, WR_ENOMEM, "memory storage: out of memory for %zu messages",
                            room);
    struct mem_entry *e = wr_ring_push_back(&l->ready);
    *e = (struct mem_entry){++q->next_seq, wr_msg_ref(msg), false};
    mem_add_ready(q, l, e);
    if (q->overflow == WR_OVERFLOW_DROP_HEAD)
        mem_drop_head(q);
    return WR_OK;
}

static int mem_next(void *state, struct wr_stored *out)
{
    struct mem_queue *q = state;
    if (q->count == 0)
        return WR_ENOTFOUND;
    struct mem_level *l = mem_head_level(q);
    const struct mem_entry *head = wr_ring_at(&l->ready, 0);
    /* Fails before the message moves: it stays at the head, and a later next may succeed. */
    struct mem_slot *s = wr_idtable_put(&q->unacked, head->seq);
    if (!s)
        return WR_ENOMEM;
    struct mem_entry e = mem_pop_head(q, l);
    l->out++;
    s->msg = e.msg;
    out->msg = e.msg;
    out->tag = e.seq;
    out->redelivered = e.redelivered;
    return WR_OK;
}

static int mem_take(void *state, uint64_t tag, struct wr_msg **out)
{
    struct mem_queue *q = state;
    struct mem_slot *s = wr_idtable_find(&q->unacked, tag);
    if (!s)
        return WR_ENOTFOUND;
    *out = s->msg;
    mem_level_of(q, s->msg)->out--;
    wr_idtable_del(&q->unacked, s);
    return WR_OK;
}

static int mem_ack(void *state, uint64_t tag)
{
    struct wr_msg *msg = NULL;
    int rc = mem_take(state, tag, &msg);
    wr_msg_unref(msg);
    return rc;
}

/* A requeued message counts as ready again, so under drop-head it may push the queue past
 * its limit; RabbitMQ then trims the head (requeue_and_run calls maybe_drop_head), and so do
 * we. Under reject-publish a requeue is never refused: the message was already accepted. */
static int mem_requeue(void *state, uint64_t tag)
{
    struct mem_queue *q = state;
    struct mem_slot *s = wr_idtable_find(&q->unacked, tag);
    if (!s)
        return WR_ENOTFOUND;
    struct mem_entry e = {s->tag, s->msg, true};
    struct mem_level *l = mem_level_of(q, e.msg);
    l->out--;
    wr_idtable_del(&q->unacked, s);
    /* Back at its original place; room was reserved when it was enqueued. */
    struct mem_entry *at = wr_ring_insert_ordered(&l->ready, e.seq);
    *at = e;
    mem_add_ready(q, l, at);
    if (q->overflow == WR_OVERFLOW_DROP_HEAD)
        mem_drop_head(q);
    return WR_OK;
}

static uint64_t mem_purge(void *state)
{
    struct mem_queue *q = state;
    uint64_t n = q->count;
    mem_release_ready(q);
    return n;
}

static const struct wr_msg *mem_peek(void *state)
{
    struct mem_queue *q = state;
    if (q->count == 0)
        return NULL;
    return ((const struct mem_entry *)wr_ring_at(&mem_head_level(q)->ready, 0))->msg;
}

static uint64_t mem_depth(void *state)
{
    return ((struct mem_queue *)state)->count;
}

static uint64_t mem_unacked(void *state)
{
    return ((struct mem_queue *)state)->unacked.count;
}

static const struct wr_storage_ops ops = {
    .size = sizeof(struct wr_storage_ops),
    .model = WR_STORAGE_QUEUE,
    .open = mem_open,
    .close = mem_close,
    .enqueue = mem_enqueue,
    .next = mem_next,
    .ack = mem_ack,
    .requeue = mem_requeue,
    .purge = mem_purge,
    .depth = mem_depth,
    .unacked = mem_unacked,
    .sync = NULL,
    .peek = mem_peek,
    .take = mem_take,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_STORAGE, .name = "memory", .version = WR_VERSION_STRING,
                 .ops = &ops, .options = NULL);
