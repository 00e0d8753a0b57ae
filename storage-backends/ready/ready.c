/*
 * ready.c: the ready messages of a queue-model storage and the queue's limits (ready.h).
 */
#include "ready.h"

#include <stdlib.h>

int ready_init(struct ready_set *rs, const struct wr_storage_args *args, size_t elem_size,
               const char *name, struct wr_error *err)
{
    if (args->max_length < -1 || args->max_length_bytes < -1)
        return wr_error_set(err, WR_EINVAL,
                            "%s: max_length and max_length_bytes must be -1 (no limit) or >= 0",
                            name);
    if (args->overflow != WR_OVERFLOW_DROP_HEAD && args->overflow != WR_OVERFLOW_REJECT_PUBLISH)
        return wr_error_set(err, WR_EINVAL, "%s: unknown overflow mode %d", name,
                            (int)args->overflow);
    size_t n_levels = (size_t)args->max_priority + 1;
    struct ready_level *levels = calloc(n_levels, sizeof *levels);
    if (!levels)
        return wr_error_set(err, WR_ENOMEM, "%s: out of memory", name);
    for (size_t p = 0; p < n_levels; p++)
        wr_ring_init(&levels[p].ring, elem_size);
    *rs = (struct ready_set){
        .name = name,
        .max_length = args->max_length,
        .max_length_bytes = args->max_length_bytes,
        .overflow = args->overflow,
        .dropped = args->dropped,
        .owner = args->owner,
        .max_priority = args->max_priority,
        .levels = levels,
    };
    return WR_OK;
}

void ready_fini(struct ready_set *rs)
{
    if (!rs->levels)
        return;
    for (size_t p = 0; p <= rs->max_priority; p++)
        wr_ring_fini(&rs->levels[p].ring);
    free(rs->levels);
    rs->levels = NULL;
}

/* Under drop-head the message goes in first and the head is trimmed after (ready_over_limit),
 * as RabbitMQ's rabbit_amqqueue_process does (publish, then maybe_drop_head). So a message
 * that alone exceeds max_length_bytes, or any message when max_length is 0, ends up dropped
 * itself, through dropped (dead-lettered) like any other, after everything older. */
int ready_admit(const struct ready_set *rs, size_t len, struct wr_error *err)
{
    if (rs->overflow != WR_OVERFLOW_REJECT_PUBLISH)
        return WR_OK;
    if (rs->max_length >= 0 && rs->count + 1 > (uint64_t)rs->max_length)
        return wr_error_set(err, WR_ELIMIT,
                            "queue is full: %zu ready messages, max_length %lld "
                            "(overflow reject-publish)",
                            rs->count, (long long)rs->max_length);
    if (rs->max_length_bytes >= 0 && rs->bytes + len > (uint64_t)rs->max_length_bytes)
        return wr_error_set(err, WR_ELIMIT,
                            "queue is full: %llu ready bytes + %zu, max_length_bytes %lld "
                            "(overflow reject-publish)",
                            (unsigned long long)rs->bytes, len, (long long)rs->max_length_bytes);
    return WR_OK;
}

int ready_reserve(struct ready_set *rs, uint8_t level, struct wr_error *err)
{
    struct ready_level *l = &rs->levels[level];
    size_t room = l->ring.count + l->out + 1;
    if (wr_ring_reserve(&l->ring, room) != WR_OK)
        return wr_error_set(err, WR_ENOMEM, "%s: out of memory for %zu messages", rs->name,
                            room);
    return WR_OK;
}

void *ready_insert(struct ready_set *rs, uint8_t level, uint64_t seq, uint64_t len)
{
    void *at = wr_ring_insert_ordered(&rs->levels[level].ring, seq);
    rs->count++;
    rs->bytes += len;
    if (level > rs->top)
        rs->top = level;
    return at;
}

/* A requeued message counts as ready again, so it too may push the queue past its limit;
 * RabbitMQ then trims the head (requeue_and_run calls maybe_drop_head), and so do the
 * storages. In a priority queue the head is the oldest of the highest priority, as RabbitMQ
 * drops: its drop takes the first non-empty backing queue from the highest priority down,
 * as fetch does. */
bool ready_over_limit(const struct ready_set *rs)
{
    if (rs->overflow != WR_OVERFLOW_DROP_HEAD || rs->count == 0)
        return false;
    return (rs->max_length >= 0 && rs->count > (uint64_t)rs->max_length) ||
           (rs->max_length_bytes >= 0 && rs->bytes > (uint64_t)rs->max_length_bytes);
}

void ready_drop(const struct ready_set *rs, struct wr_msg *msg)
{
    if (rs->dropped)
        rs->dropped(rs->owner, msg);
    else
        wr_msg_unref(msg);
}
