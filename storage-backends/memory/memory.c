/*
 * memory.c: the `memory` storage backend, a queue held in RAM (the queue model).
 *
 * Every enqueued message gets the next sequence number. The ready messages sit in a ring
 * deque kept in sequence order: enqueue appends, next pops the head. A delivered message
 * moves to the unacked set, a hash table keyed by its sequence number, which is also its
 * delivery tag (open addressing, linear probing, backward-shift deletion: no tombstones, no
 * scan). A requeued message goes back among the ready ones at its original place, found by
 * binary search; the usual case, older than everything ready, is a push at the front. This
 * is what RabbitMQ's classic queues do.
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

#define MEM_MIN_CAP 16

/* A ready message. seq is its place in the queue and, once delivered, its tag. */
struct mem_entry {
    uint64_t seq;
    struct wr_msg *msg;
    bool redelivered;
};

/* An unacked message; tag 0 marks an empty slot (sequence numbers start at 1). */
struct mem_slot {
    uint64_t tag;
    struct wr_msg *msg;
};

/* The ready messages of one priority level. */
struct mem_ring {
    struct mem_entry *entries; /* in sequence order from head */
    size_t head;
    size_t count;
    size_t out;                /* unacked messages of this level: room kept for their requeue */
    size_t cap;                /* a power of two, or 0; >= count + out */
};

struct mem_queue {
    size_t count;           /* ready messages, all levels */
    uint64_t ready_bytes;   /* sum of the ready messages' body lengths */
    size_t top;             /* no level above it has ready messages */

    struct mem_slot *slots; /* unacked, by tag */
    size_t scap;            /* a power of two, or 0 */
    size_t sused;

    uint64_t next_seq;
    int64_t max_length;
    int64_t max_length_bytes;
    enum wr_overflow overflow;
    wr_storage_drop_cb *dropped;
    void *owner;

    uint8_t max_priority;
    struct mem_ring levels[]; /* max_priority + 1 */
};

/* ---- the ready ring ------------------------------------------------------------------ */

static struct mem_entry *mem_at(struct mem_ring *r, size_t i)
{
    return &r->entries[(r->head + i) & (r->cap - 1)];
}

/* Makes room for n messages of this level in all (ready and unacked). */
static int mem_reserve(struct mem_ring *r, size_t n)
{
    if (n <= r->cap)
        return WR_OK;
    size_t cap = r->cap ? r->cap : MEM_MIN_CAP;
    while (cap < n) {
        if (cap > SIZE_MAX / 2 / sizeof(struct mem_entry))
            return WR_ENOMEM;
        cap *= 2;
    }
    struct mem_entry *entries = malloc(cap * sizeof(*entries));
    if (!entries)
        return WR_ENOMEM;
    for (size_t i = 0; i < r->count; i++)
        entries[i] = *mem_at(r, i);
    free(r->entries);
    r->entries = entries;
    r->head = 0;
    r->cap = cap;
    return WR_OK;
}

/* The ring a message belongs to: its priority, capped at max_priority; none counts as 0. */
static struct mem_ring *mem_ring_of(struct mem_queue *q, const struct wr_msg *msg)
{
    if (q->max_priority == 0 || !(msg->props.flags & WR_PROP_PRIORITY))
        return &q->levels[0];
    uint8_t p = msg->props.priority;
    return &q->levels[p < q->max_priority ? p : q->max_priority];
}

/* The ring whose head next() hands out: the highest with ready messages. The caller knows
 * the queue has some. */
static struct mem_ring *mem_head_ring(struct mem_queue *q)
{
    while (q->top > 0 && q->levels[q->top].count == 0)
        q->top--;
    return &q->levels[q->top];
}

/* Keeps top at or above r, which just got a ready message. */
static void mem_raise_top(struct mem_queue *q, const struct mem_ring *r)
{
    size_t level = (size_t)(r - q->levels);
    if (level > q->top)
        q->top = level;
}

static struct mem_entry mem_pop_head(struct mem_queue *q, struct mem_ring *r)
{
    struct mem_entry e = r->entries[r->head];
    r->head = (r->head + 1) & (r->cap - 1);
    r->count--;
    q->count--;
    q->ready_bytes -= e.msg->body.len;
    return e;
}

/* Inserts e among the ready messages of its ring by its sequence number. The caller made
 * room. */
static void mem_insert(struct mem_queue *q, struct mem_ring *r, struct mem_entry e)
{
    size_t lo = 0, hi = r->count;
    if (r->count > 0 && e.seq > mem_at(r, r->count - 1)->seq)
        lo = r->count; /* after everything: an append */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (mem_at(r, mid)->seq < e.seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Shift the shorter side: at the front (the usual requeue) nothing moves at all. */
    if (lo < r->count - lo) {
        r->head = (r->head - 1) & (r->cap - 1);
        for (size_t i = 0; i < lo; i++)
            *mem_at(r, i) = *mem_at(r, i + 1);
    } else {
        for (size_t i = r->count; i > lo; i--)
            *mem_at(r, i) = *mem_at(r, i - 1);
    }
    *mem_at(r, lo) = e;
    r->count++;
    q->count++;
    q->ready_bytes += e.msg->body.len;
    mem_raise_top(q, r);
}

/* Drops every ready message of every level, releasing the storage's references. */
static void mem_release_ready(struct mem_queue *q)
{
    for (size_t p = 0; p <= q->max_priority; p++)
        while (q->levels[p].count > 0)
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
        struct mem_entry e = mem_pop_head(q, mem_head_ring(q));
        if (q->dropped)
            q->dropped(q->owner, e.msg);
        else
            wr_msg_unref(e.msg);
    }
}

/* ---- the unacked table --------------------------------------------------------------- */

static size_t mem_hash(uint64_t tag, size_t cap)
{
    /* Fibonacci hashing: consecutive tags spread over the whole table. */
    return (size_t)((tag * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (cap - 1);
}

static void mem_slot_put(struct mem_slot *slots, size_t cap, struct mem_slot s)
{
    size_t i = mem_hash(s.tag, cap);
    while (slots[i].tag)
        i = (i + 1) & (cap - 1);
    slots[i] = s;
}

/* Keeps the table at most 3/4 full with one more entry. */
static int mem_slots_reserve(struct mem_queue *q)
{
    if ((q->sused + 1) * 4 <= q->scap * 3)
        return WR_OK;
    size_t cap = q->scap ? q->scap * 2 : MEM_MIN_CAP;
    struct mem_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return WR_ENOMEM;
    for (size_t i = 0; i < q->scap; i++)
        if (q->slots[i].tag)
            mem_slot_put(slots, cap, q->slots[i]);
    free(q->slots);
    q->slots = slots;
    q->scap = cap;
    return WR_OK;
}

static struct mem_slot *mem_slot_find(struct mem_queue *q, uint64_t tag)
{
    if (tag == 0 || q->scap == 0)
        return NULL;
    for (size_t i = mem_hash(tag, q->scap);; i = (i + 1) & (q->scap - 1)) {
        if (q->slots[i].tag == tag)
            return &q->slots[i];
        if (!q->slots[i].tag)
            return NULL;
    }
}

/* Empties a slot and pulls back the entries after it that probed past it, so lookups never
 * meet a hole in their probe run. */
static void mem_slot_del(struct mem_queue *q, struct mem_slot *s)
{
    size_t mask = q->scap - 1;
    size_t hole = (size_t)(s - q->slots);
    for (size_t i = (hole + 1) & mask; q->slots[i].tag; i = (i + 1) & mask) {
        size_t home = mem_hash(q->slots[i].tag, q->scap);
        /* Move it if its home is not in (hole, i], cyclically. */
        if (((i - home) & mask) >= ((i - hole) & mask)) {
            q->slots[hole] = q->slots[i];
            hole = i;
        }
    }
    q->slots[hole] = (struct mem_slot){0};
    q->sused--;
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
    struct mem_queue *q = calloc(1, sizeof(*q) + n_levels * sizeof(struct mem_ring));
    if (!q)
        return wr_error_set(err, WR_ENOMEM, "memory storage: out of memory");
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
    for (size_t i = 0; i < q->scap; i++)
        wr_msg_unref(q->slots[i].msg);
    for (size_t p = 0; p <= q->max_priority; p++)
        free(q->levels[p].entries);
    free(q->slots);
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
    struct mem_ring *r = mem_ring_of(q, msg);
    if (mem_reserve(r, r->count + r->out + 1) != WR_OK)
        return wr_error_set(err, WR_ENOMEM, "memory storage: out of memory for %zu messages",
                            r->count + r->out + 1);
    *mem_at(r, r->count) = (struct mem_entry){++q->next_seq, wr_msg_ref(msg), false};
    r->count++;
    q->count++;
    q->ready_bytes += len;
    mem_raise_top(q, r);
    if (q->overflow == WR_OVERFLOW_DROP_HEAD)
        mem_drop_head(q);
    return WR_OK;
}

static int mem_next(void *state, struct wr_stored *out)
{
    struct mem_queue *q = state;
    if (q->count == 0)
        return WR_ENOTFOUND;
    /* Fails before the message moves: it stays at the head, and a later next may succeed. */
    if (mem_slots_reserve(q) != WR_OK)
        return WR_ENOMEM;
    struct mem_ring *r = mem_head_ring(q);
    struct mem_entry e = mem_pop_head(q, r);
    r->out++;
    mem_slot_put(q->slots, q->scap, (struct mem_slot){e.seq, e.msg});
    q->sused++;
    out->msg = e.msg;
    out->tag = e.seq;
    out->redelivered = e.redelivered;
    return WR_OK;
}

static int mem_take(void *state, uint64_t tag, struct wr_msg **out)
{
    struct mem_queue *q = state;
    struct mem_slot *s = mem_slot_find(q, tag);
    if (!s)
        return WR_ENOTFOUND;
    *out = s->msg;
    mem_ring_of(q, s->msg)->out--;
    mem_slot_del(q, s);
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
    struct mem_slot *s = mem_slot_find(q, tag);
    if (!s)
        return WR_ENOTFOUND;
    struct mem_entry e = {s->tag, s->msg, true};
    struct mem_ring *r = mem_ring_of(q, e.msg);
    r->out--;
    mem_slot_del(q, s);
    mem_insert(q, r, e); /* room was reserved when it was enqueued */
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
    return q->count ? mem_at(mem_head_ring(q), 0)->msg : NULL;
}

static uint64_t mem_depth(void *state)
{
    return ((struct mem_queue *)state)->count;
}

static uint64_t mem_unacked(void *state)
{
    return ((struct mem_queue *)state)->sused;
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
