/*
 * storage.h: what a storage-backend plugin implements.
 *
 * A queue's storage decides its semantics. The queue model (memory, queue) hands messages
 * out, keeps them unacked until ack, and requeues them at their original place; the log model
 * (issue: storage backends) appends with offsets and keeps records until retention.
 *
 * Tags: next() gives each delivery a tag unique within the queue's storage; ack and requeue
 * name it. All ops run on the loop thread.
 *
 * The log model keeps, per partition, Kafka RecordBatch v2 batches (magic 2) exactly as the
 * wire carries them, each at an offset: the first record of the log is offset 0, and a batch
 * holds the offsets base..base+last_offset_delta. Records that arrive as messages (AMQP
 * publishes) are encoded into batches of their own, so every reader sees one format.
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

/* Log model: a byte range of a segment file holding whole batches, for sendfile(). fd is a
 * duplicate the caller owns and closes, so the range stays readable even if retention
 * deletes the segment meanwhile. */
struct wr_log_slice {
    int fd;                     /* -1 when length is 0 */
    uint64_t file_offset;
    uint64_t length;            /* 0: no batch at or after the offset asked for */
    uint64_t base_offset;       /* of the range's first batch */
};

/* Log model: one record decoded into a message. */
struct wr_log_entry {
    uint64_t offset;
    struct wr_msg *msg;         /* one reference, the caller's */
};

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

    /* Log model. partition < args->partitions; another is WR_EINVAL. Appends are durable
     * as the queue's flush policy says once sync() calls back. */
    /* Appends one RecordBatch as it came: checks that len is its whole length, magic 2 and
     * its CRC32C, then writes the assigned base offset into its first 8 bytes (the only
     * bytes changed; the CRC does not cover them). WR_EPROTO for a corrupt batch, with
     * nothing written. */
    int (*append_batch)(void *state, uint32_t partition, uint8_t *batch, size_t len,
                        uint64_t *base_offset, struct wr_error *err);
    /* Appends n messages as one batch: value the body, key msg->key, timestamp
     * msg->timestamp_ms, and one record header "x-warren-meta" holding the rest of the
     * message (wr_msg_meta_encode), so read_msgs gives back an equal message. */
    int (*append_msgs)(void *state, uint32_t partition, struct wr_msg *const *msgs, size_t n,
                       uint64_t *base_offset, struct wr_error *err);
    /* Whole batches starting with the one that holds offset, from one segment: at most
     * max_bytes, except that the first batch is given whole however big it is (as Kafka's
     * fetch). offset == latest: length 0. Below earliest or above latest: WR_ENOTFOUND
     * (Kafka's OFFSET_OUT_OF_RANGE). */
    int (*read)(void *state, uint32_t partition, uint64_t offset, size_t max_bytes,
                struct wr_log_slice *out, struct wr_error *err);
    /* Records from offset on (records of the first batch below offset are skipped), at most
     * max, decoded into messages; *n = 0 at the end of the log. A message appended by
     * append_msgs comes back equal to the one appended; a record from a Kafka producer
     * comes back with its key, body, timestamp and headers (long strings; those named as
     * basic properties set the properties: docs/storage-log.md). Each message gets
     * the header "x-stream-offset" (a signed 64-bit integer), as RabbitMQ's streams give
     * their consumers. Compressed batches are decompressed (gzip, snappy, lz4, zstd).
     * WR_ENOTFOUND below earliest; WR_EPROTO for a batch it cannot decode. */
    int (*read_msgs)(void *state, uint32_t partition, uint64_t offset,
                     struct wr_log_entry *out, size_t max, size_t *n, struct wr_error *err);
    /* earliest: the first offset still kept; latest: the offset the next record will get
     * (Kafka's log end offset). Both equal on an empty log. */
    void (*offsets)(void *state, uint32_t partition, uint64_t *earliest, uint64_t *latest);
    /* The first offset whose record's timestamp is >= ts_ms, and that timestamp (Kafka's
     * ListOffsets by time). WR_ENOTFOUND when every record is older. */
    int (*offset_for_time)(void *state, uint32_t partition, int64_t ts_ms, uint64_t *offset,
                           int64_t *timestamp);

    /* Optional, log model: grows the log to count partitions (Kafka's CreatePartitions; a
     * log never shrinks). The new ones start empty at offset 0, and their directories are
     * durable once sync() calls back. count at or below what the log has changes nothing.
     * *partitions gets how many the log has afterwards: more than args->partitions when it
     * kept partitions it found on disk at open (a log that grew before a restart), and on an
     * error the ones added before it stay. WR_EINVAL for more than the storage can hold.
     * Without it, partitions cannot be added to an existing queue. */
    int (*add_partitions)(void *state, uint32_t count, uint32_t *partitions,
                          struct wr_error *err);
};

WR_END_DECLS

#endif
