/*
 * record.h: the mapping between a message and the Kafka record that holds it, so AMQP and
 * Kafka clients share one log (docs/storage-log.md, "AMQP messages as records").
 *
 * A message's record carries, as Kafka headers: the basic properties that are set, each
 * under its own name (content-type, ..., app-id), then every AMQP header as text, then
 * LB_META_HEADER with the typed metadata, so a Kafka consumer reads plain text headers and an
 * AMQP consumer gets the exact message back. A record without LB_META_HEADER (a Kafka
 * producer's) becomes a message whose property-named headers set those properties.
 */
#ifndef LOG_RECORD_H
#define LOG_RECORD_H

#include <stdint.h>

#include <warren/wr.h>

#include "batch.h"

/* Encodes msgs[0..n) as one uncompressed batch with base offset 0 into out (appended):
 * record i has offset delta i, timestamp msgs[i]->timestamp_ms, key wr_msg_record_key(msg),
 * value the body, and the headers lr_headers_encode gives. WR_ENOMEM, or WR_EINVAL for
 * n == 0 or a message too large for a record. */
int lb_encode_msgs(struct wr_bytes *out, struct wr_msg *const *msgs, size_t n,
                   struct wr_error *err);

/* Appends the headers of msg's record to out, framed as a record holds them (batch.h), and
 * sets *count to how many; the last is LB_META_HEADER with value meta[0..meta_len).
 * Sets out->oom when memory runs out. */
void lr_headers_encode(struct wr_bytes *out, uint32_t *count, const struct wr_msg *msg,
                       const uint8_t *meta, size_t meta_len);

/* Builds the message of record r of a batch held in buf (r points into buf->data): when the
 * record has an LB_META_HEADER header, the message it encodes, else one with key r->key,
 * routing key r->key ("" when null), body r->value, timestamp r->timestamp, the properties
 * its property-named headers give and every other header as a WR_V_BYTES header field. The
 * body is a slice of buf (no copy). Adds the header "x-stream-offset" = r->offset (WR_V_I64)
 * as RabbitMQ streams do. WR_EPROTO, WR_ENOMEM. */
int lb_record_msg(struct wr_buf *buf, const struct lb_record *r, struct wr_msg **out,
                  struct wr_error *err);

#endif
