/*
 * storage.h: what a storage-backend plugin implements.
 *
 * A queue's storage decides its semantics. The queue model (memory, queue) hands messages
 * out, keeps them unacked until ack, and requeues them at their original place; the log model
 * (issue: storage backends) appends with offsets and keeps records until retention.
 *
 * Tags: next() gives each delivery a tag unique within the queue's storage; ack and requeue
 * name it. All ops run on the loop thread.
 */
#ifndef WARREN_STORAGE_H
#define WARREN_STORAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"
#include "warren/msg.h"
#include "warren/plugin.h"
#include "warren/value.h"

WR_BEGIN_DECLS

enum wr_storage_model { WR_STORAGE_QUEUE = 1, WR_STORAGE_LOG = 2 };

/* What enqueue does when max_length or max_length_bytes would be exceeded. */
enum wr_overflow {
    WR_OVERFLOW_DROP_HEAD = 0,     /* drop the oldest ready messages (RabbitMQ's default) */
    WR_OVERFLOW_REJECT_PUBLISH,    /* refuse the new message with WR_ELIMIT */
};

/* Called by the storage for each message it drops (max-length): the callee receives the
 * storage's reference. The core dead-letters or frees it. */
typedef void wr_storage_drop_cb(void *owner, struct wr_msg *msg);

struct wr_storage_args {
    const char *vhost;
    const char *queue;
    const char *dir;            /* where this queue may keep files; not created yet */
    bool durable;
    int64_t max_length;         /* messages; -1: no limit */
    int64_t max_length_bytes;   /* body bytes; -1: no limit */
    enum wr_overflow overflow;
    uint8_t max_priority;       /* queue model: 0, or hand out messages highest
                                 * msg->props.priority first (priorities above it count as
                                 * it), FIFO within a priority, as RabbitMQ's x-max-priority */
    uint32_t partitions;        /* log model; 1 for queues */
    const struct wr_table *options; /* validated against the plugin's schema; never NULL */
    wr_storage_drop_cb *dropped;
    void *owner;                /* passed to dropped */
};

/* A message handed out by next(). msg is borrowed from the storage and valid until the tag is
 * acked or requeued; take a reference to keep it longer. */
struct wr_stored {
    struct wr_msg *msg;
    uint64_t tag;
    bool redelivered;
};

typedef void wr_storage_sync_cb(void *data, int status);

struct wr_storage_ops {
    uint32_t size; /* sizeof(struct wr_storage_ops) */
    enum wr_storage_model model;
    int (*open)(struct wr_plugin_ctx *ctx, const struct wr_storage_args *args, void **state,
                struct wr_error *err);
    /* Closes and frees; unacked and ready messages are released (or kept on disk). */
    void (*close)(void *state);

    /* Queue model. */
    /* Stores msg, taking a reference on WR_OK. May first drop head messages to make room
     * (through args->dropped), or refuse with WR_ELIMIT under WR_OVERFLOW_REJECT_PUBLISH. */
    int (*enqueue)(void *state, struct wr_msg *msg, struct wr_error *err);
    /* Moves the head ready message to the unacked set. WR_ENOTFOUND when none is ready. */
    int (*next)(void *state, struct wr_stored *out);
    /* Deletes an unacked message. WR_ENOTFOUND for an unknown tag. */
    int (*ack)(void *state, uint64_t tag);
    /* Puts an unacked message back among the ready ones at its original place (ahead of
     * everything enqueued after it), marked redelivered. WR_ENOTFOUND for an unknown tag. */
    int (*requeue)(void *state, uint64_t tag);
    /* Drops every ready message (unacked ones stay); returns how many. */
    uint64_t (*purge)(void *state);
    /* Ready messages. */
    uint64_t (*depth)(void *state);
    /* Messages handed out and not yet acked or requeued. */
    uint64_t (*unacked)(void *state);
    /* Optional: calls cb(data, status) on the loop thread once everything enqueued and acked
     * so far is as durable as the queue is configured to be. NULL: durable on return. */
    int (*sync)(void *state, wr_storage_sync_cb *cb, void *data);
    /* Optional: the head ready message (the one next() would hand out), borrowed, or NULL.
     * Lets the core expire messages (TTL) from queues nobody consumes; without it they
     * expire only when handed out. */
    const struct wr_msg *(*peek)(void *state);
    /* Optional: deletes an unacked message as ack does, handing the caller the storage's
     * reference instead of dropping it (the core dead-letters rejected messages with it).
     * WR_ENOTFOUND for an unknown tag. Without it, rejected messages are not dead-lettered. */
    int (*take)(void *state, uint64_t tag, struct wr_msg **out);
};

WR_END_DECLS

#endif
