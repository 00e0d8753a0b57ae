/*
 * ready.h: the ready messages of a queue-model storage by priority level, with the queue's
 * limits: the bookkeeping the `memory` and `queue` backends share, so it is written once.
 * A static library linked into both plugins; its names are hidden like the rest of them.
 *
 * A message is an element of the storage's own type whose first 8 bytes are its sequence
 * number, the key of struct wr_ring (container.h). A priority queue (max_priority > 0,
 * RabbitMQ's x-max-priority) has one ring per level, 0..max_priority, as RabbitMQ keeps one
 * backing queue per priority: a message goes to the ring of its priority (none counts as 0,
 * above max_priority as max_priority), and the head of the set is the head of the highest
 * non-empty ring. Each ring is kept in sequence order, so a requeued message goes back to its
 * original place. A plain queue is the same code with the one ring, level 0.
 *
 * Limits (max_length, max_length_bytes) count ready messages only, as RabbitMQ does. Each ring
 * always has room for every message of its level the queue holds, ready or unacked, and that
 * room is taken at enqueue (ready_reserve): so a requeue never allocates and cannot fail, and
 * a message is never stranded between the ready and the unacked set. The storage keeps its
 * unacked set itself and counts it per level in `out`.
 *
 * The members are read-only to the storage, but for `out`. All of it runs on the loop thread.
 */
#ifndef WARREN_STORAGE_READY_H
#define WARREN_STORAGE_READY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warren/wr.h>

struct ready_level {
    struct wr_ring ring; /* the storage's elements, in sequence order */
    size_t out;          /* unacked messages of this level, counted by the storage */
};

struct ready_set {
    const char *name;       /* what error messages start with: "memory storage" */
    size_t count;           /* ready messages, all levels */
    uint64_t bytes;         /* the sum of their body lengths */
    size_t top;             /* no level above it has ready messages */
    int64_t max_length;     /* -1: no limit */
    int64_t max_length_bytes;
    enum wr_overflow overflow;
    wr_storage_drop_cb *dropped;
    void *owner;
    uint8_t max_priority;
    struct ready_level *levels; /* max_priority + 1 */
};

/* Checks the limits of args and sets up an empty set of elements of elem_size bytes. name
 * must outlive rs. WR_EINVAL for a limit below -1 or an unknown overflow mode, WR_ENOMEM;
 * either leaves nothing to free. */
int ready_init(struct ready_set *rs, const struct wr_storage_args *args, size_t elem_size,
               const char *name, struct wr_error *err);
/* Frees the rings (the elements' messages are the storage's to release first). */
void ready_fini(struct ready_set *rs);

/* Under reject-publish: WR_ELIMIT, with a message naming the limit, when one more ready
 * message of len body bytes would exceed a limit. WR_OK otherwise, and always under
 * drop-head. Only an enqueue asks: a requeue is never refused, its message was accepted. */
int ready_admit(const struct ready_set *rs, size_t len, struct wr_error *err);
/* Makes the room an enqueue at level takes: one more than the level's ready and unacked
 * messages. WR_ENOMEM leaves the set as it was. */
int ready_reserve(struct ready_set *rs, uint8_t level, struct wr_error *err);
/* Opens the place of the message seq among the ready ones of its level (after every older
 * one: the end for a new message, its original place for a requeued one) and counts it, with
 * len body bytes; returns the element for the storage to fill. The room was reserved. */
void *ready_insert(struct ready_set *rs, uint8_t level, uint64_t seq, uint64_t len);
/* Under drop-head: whether the ready messages exceed a limit, so the head must go. */
bool ready_over_limit(const struct ready_set *rs);
/* Hands a dropped message, and the storage's reference to it, to the owner's callback (which
 * may dead-letter it), or frees it when there is none. The message is out of the set
 * already, so the callback may come back into the queue. */
void ready_drop(const struct ready_set *rs, struct wr_msg *msg);

/* The level of a message with that priority property (has_priority false: none). */
static inline uint8_t ready_level(const struct ready_set *rs, bool has_priority,
                                  uint8_t priority)
{
    if (rs->max_priority == 0 || !has_priority)
        return 0;
    return priority < rs->max_priority ? priority : rs->max_priority;
}

static inline uint8_t ready_level_of(const struct ready_set *rs, const struct wr_msg *msg)
{
    return ready_level(rs, (msg->props.flags & WR_PROP_PRIORITY) != 0, msg->props.priority);
}

/* The element next() hands out, the head of the highest level with ready messages, and that
 * level in *level; NULL when none is ready. Good until the set changes. */
static inline void *ready_head(struct ready_set *rs, uint8_t *level)
{
    if (rs->count == 0)
        return NULL;
    while (rs->top > 0 && rs->levels[rs->top].ring.count == 0)
        rs->top--;
    *level = (uint8_t)rs->top;
    return wr_ring_at(&rs->levels[rs->top].ring, 0);
}

/* Takes the head of level, whose body is len bytes, out of the set; read it first. */
static inline void ready_pop(struct ready_set *rs, uint8_t level, uint64_t len)
{
    wr_ring_pop_front(&rs->levels[level].ring);
    rs->count--;
    rs->bytes -= len;
}

#endif
