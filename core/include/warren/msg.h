/*
 * msg.h: reference-counted byte buffers, slices of them, and messages.
 *
 * A message is immutable after wr_msg_new(): exchange, routing key, key (Kafka's record key),
 * headers, properties, body and timestamp. Its strings live in one allocation with the
 * message, its headers in a deep copy of their own; its body is a slice that holds a
 * reference on the buffer it arrived in, so a transport can hand the broker its receive
 * buffer without a copy.
 *
 * Reference counts are not atomic: messages and buffers are touched on the loop thread only.
 */
#ifndef WARREN_MSG_H
#define WARREN_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"
#include "warren/value.h"

WR_BEGIN_DECLS

/* A refcounted byte buffer: data[0..len) is filled, cap is what was allocated. */
struct wr_buf {
    uint32_t refs;
    size_t len;
    size_t cap;
    uint8_t data[];
};

/* A new buffer of cap bytes, len 0, one reference. NULL out of memory. */
WR_API struct wr_buf *wr_buf_new(size_t cap);
WR_API struct wr_buf *wr_buf_ref(struct wr_buf *b);
/* Drops a reference; frees at zero. Accepts NULL. */
WR_API void wr_buf_unref(struct wr_buf *b);

/* A window on a buffer. A slice stored in a struct holds a reference on buf. */
struct wr_slice {
    struct wr_buf *buf;
    size_t off;
    size_t len;
};

static inline const uint8_t *wr_slice_ptr(const struct wr_slice *s)
{
    return s->buf ? s->buf->data + s->off : (const uint8_t *)"";
}

/* A borrowed string: ptr NULL means absent, which differs from present and empty. */
struct wr_str {
    const char *ptr;
    size_t len;
};

static inline struct wr_str wr_str_c(const char *s)
{
    struct wr_str r = {s, 0};
    if (s)
        while (s[r.len])
            r.len++;
    return r;
}

/* AMQP's basic properties, which every protocol maps onto. A string field is absent when its
 * ptr is NULL; delivery_mode, priority and timestamp are present when their flag is set. */
enum wr_prop_flag {
    WR_PROP_DELIVERY_MODE = 1 << 0,
    WR_PROP_PRIORITY = 1 << 1,
    WR_PROP_TIMESTAMP = 1 << 2,
    WR_PROP_HEADERS = 1 << 3, /* the publisher sent a headers table, possibly empty */
};

struct wr_props {
    unsigned flags;            /* enum wr_prop_flag */
    struct wr_str content_type;
    struct wr_str content_encoding;
    uint8_t delivery_mode;     /* 1 transient, 2 persistent */
    uint8_t priority;
    struct wr_str correlation_id;
    struct wr_str reply_to;
    struct wr_str expiration;
    struct wr_str message_id;
    int64_t timestamp;         /* seconds since the epoch, as AMQP sends it */
    struct wr_str type;
    struct wr_str user_id;
    struct wr_str app_id;
    struct wr_str cluster_id;
};

struct wr_msg {
    uint32_t refs;                  /* owned by wr_msg_ref / wr_msg_unref */
    struct wr_str exchange;         /* the exchange it was published to; never absent */
    struct wr_str routing_key;      /* never absent; may be empty */
    struct wr_str key;              /* Kafka record key; absent for most AMQP messages */
    const struct wr_table *headers; /* never NULL; may be empty */
    struct wr_props props;
    struct wr_slice body;
    int64_t timestamp_ms;           /* when the broker accepted it, ms since the epoch */
    size_t size;                    /* bytes counted for memory limits (body + metadata) */
};

/* What wr_msg_new copies from. Everything is borrowed. The body is either a slice (a new
 * reference is taken, no copy) or, when body.buf is NULL, body_ptr/body_len (copied). */
struct wr_msg_init {
    struct wr_str exchange;         /* absent: "" */
    struct wr_str routing_key;
    struct wr_str key;
    const struct wr_table *headers; /* may be NULL */
    const struct wr_props *props;   /* may be NULL */
    struct wr_slice body;
    const void *body_ptr;
    size_t body_len;
    int64_t timestamp_ms;           /* 0: now */
};

/* Builds a message with one reference. Errors: WR_ENOMEM. */
WR_API int wr_msg_new(const struct wr_msg_init *init, struct wr_msg **out, struct wr_error *err);
WR_API struct wr_msg *wr_msg_ref(struct wr_msg *msg);
/* Drops a reference; frees the message and releases its body buffer at zero. Accepts NULL. */
WR_API void wr_msg_unref(struct wr_msg *msg);

static inline const uint8_t *wr_msg_body(const struct wr_msg *msg, size_t *len)
{
    *len = msg->body.len;
    return wr_slice_ptr(&msg->body);
}

/* The key of the log record made from msg, which also picks its partition: the header
 * "x-kafka-key" when it is a string, else msg->key when present, else the routing key.
 * Points into msg. */
WR_API struct wr_str wr_msg_record_key(const struct wr_msg *msg);

/* A message's metadata, everything but the body (exchange, routing key, key, timestamp,
 * properties, headers with their types), as bytes: the one encoding durable storages keep
 * on disk (docs/storage.md). Appends to out; oom on failure. */
WR_API void wr_msg_meta_encode(struct wr_bytes *out, const struct wr_msg *msg);
/* Builds a message from metadata wr_msg_meta_encode wrote and a body slice (a reference is
 * taken, nothing copied). Trusts nothing: WR_EPROTO for malformed or trailing bytes,
 * WR_ENOMEM. */
WR_API int wr_msg_meta_decode(const uint8_t *meta, size_t len, struct wr_slice body,
                              struct wr_msg **out, struct wr_error *err);

/* Bytes held by live messages in this process, for memory watermarks. */
WR_API size_t wr_msg_bytes_live(void);

WR_END_DECLS

#endif
