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
 * The ready messages, their priority levels and the queue's limits (max_length,
 * max_length_bytes, drop-head or reject-publish) are kept by ready.h, which the `queue`
 * backend shares: sequence numbers stay queue-wide, so tags are unique and each level is FIFO
 * with requeues at their original place.
 *
 * Nothing here is durable: sync is NULL because the queue is as durable as it claims to be
 * when an op returns.
 */
#include <stdint.h>
#include <stdlib.h>

#include <warren/wr.h>

#include "ready.h"

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

struct mem_queue {
    struct ready_set ready;    /* struct mem_entry */
    struct wr_idtable unacked; /* struct mem_slot */
    uint64_t next_seq;
};

/* Takes the head of the queue out of the ready set; false when none is ready. */
static bool mem_pop_head(struct mem_queue *q, struct mem_entry *out)
{
    uint8_t level = 0;
    const struct mem_entry *head = ready_head(&q->ready, &level);
    if (!head)
        return false;
    *out = *head;
    ready_pop(&q->ready, level, out->msg->body.len);
    return true;
}

/* Drops every ready message, releasing the storage's references. */
static void mem_release_ready(struct mem_queue *q)
{
    struct mem_entry e;
    while (mem_pop_head(q, &e))
        wr_msg_unref(e.msg);
}

/* Each message dropped is out of the queue before the callback runs (ready_drop). */
static void mem_drop_head(struct mem_queue *q)
{
    struct mem_entry e;
    while (ready_over_limit(&q->ready) && mem_pop_head(q, &e))
        ready_drop(&q->ready, e.msg);
}

/* Puts e among the ready messages of its level, at its place by sequence number; under
 * drop-head the head goes while the queue is past a limit (e itself, perhaps). */
static void mem_insert(struct mem_queue *q, struct mem_entry e)
{
    uint8_t level = ready_level_of(&q->ready, e.msg);
    *(struct mem_entry *)ready_insert(&q->ready, level, e.seq, e.msg->body.len) = e;
    mem_drop_head(q);
}

/* ---- ops ----------------------------------------------------------------------------- */

static int mem_open(struct wr_plugin_ctx *ctx, const struct wr_storage_args *args,
                    void **state, struct wr_error *err)
{
    (void)ctx;
    struct mem_queue *q = calloc(1, sizeof(*q));
    if (!q)
        return wr_error_set(err, WR_ENOMEM, "memory storage: out of memory");
    int rc = ready_init(&q->ready, args, sizeof(struct mem_entry), "memory storage", err);
    if (rc != WR_OK) {
        free(q);
        return rc;
    }
    wr_idtable_init(&q->unacked, sizeof(struct mem_slot));
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
    ready_fini(&q->ready);
    wr_idtable_fini(&q->unacked);
    free(q);
}

static int mem_enqueue(void *state, struct wr_msg *msg, struct wr_error *err)
{
    struct mem_queue *q = state;
    int rc = ready_admit(&q->ready, msg->body.len, err);
    if (rc == WR_OK)
        rc = ready_reserve(&q->ready, ready_level_of(&q->ready, msg), err);
    if (rc != WR_OK)
        return rc;
    mem_insert(q, (struct mem_entry){++q->next_seq, wr_msg_ref(msg), false});
    return WR_OK;
}

static int mem_next(void *state, struct wr_stored *out)
{
    struct mem_queue *q = state;
    uint8_t level = 0;
    const struct mem_entry *head = ready_head(&q->ready, &level);
    if (!head)
        return WR_ENOTFOUND;
    /* Fails before the message moves: it stays at the head, and a later next may succeed. */
    struct mem_slot *s = wr_idtable_put(&q->unacked, head->seq);
    if (!s)
        return WR_ENOMEM;
    struct mem_entry e;
    mem_pop_head(q, &e);
    q->ready.levels[level].out++;
    s->msg = e.msg;
    out->msg = e.msg;
    out->tag = e.seq;
    out->redelivered = e.redelivered;
    return WR_OK;
}

/* Takes the unacked message tag out of the table; NULL for an unknown tag. */
static struct wr_msg *mem_unacked_take(struct mem_queue *q, uint64_t tag)
{
    struct mem_slot *s = wr_idtable_find(&q->unacked, tag);
    if (!s)
        return NULL;
    struct wr_msg *msg = s->msg;
    q->ready.levels[ready_level_of(&q->ready, msg)].out--;
    wr_idtable_del(&q->unacked, s);
    return msg;
}

static int mem_take(void *state, uint64_t tag, struct wr_msg **out)
{
    *out = mem_unacked_take(state, tag);
    return *out ? WR_OK : WR_ENOTFOUND;
}

static int mem_ack(void *state, uint64_t tag)
{
    struct wr_msg *msg = NULL;
    int rc = mem_take(state, tag, &msg);
    wr_msg_unref(msg);
    return rc;
}

/* Back at its original place: room was reserved when it was enqueued. Under reject-publish a
 * requeue is never refused, the message was already accepted; under drop-head it may push
 * the queue past its limit, and the head goes (ready_over_limit). */
static int mem_requeue(void *state, uint64_t tag)
{
    struct mem_queue *q = state;
    struct wr_msg *msg = mem_unacked_take(q, tag);
    if (!msg)
        return WR_ENOTFOUND;
    mem_insert(q, (struct mem_entry){tag, msg, true});
    return WR_OK;
}

static uint64_t mem_purge(void *state)
{
    struct mem_queue *q = state;
    uint64_t n = q->ready.count;
    mem_release_ready(q);
    return n;
}

static const struct wr_msg *mem_peek(void *state)
{
    struct mem_queue *q = state;
    uint8_t level = 0;
    const struct mem_entry *head = ready_head(&q->ready, &level);
    return head ? head->msg : NULL;
}

static uint64_t mem_depth(void *state)
{
    return ((struct mem_queue *)state)->ready.count;
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
