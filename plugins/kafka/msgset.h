/*
 * msgset.h: Kafka's legacy message sets (magic 0 and 1), for clients older than
 * RecordBatch v2 (Produce v0-2, Fetch v2-3). The log storage keeps only RecordBatch v2, so
 * they are converted at the edge:
 *
 *     message set: (i64 offset | i32 message_size | message)*
 *     message:     u32 crc | i8 magic | i8 attributes | i64 timestamp (magic 1 only) |
 *                  bytes key | bytes value
 *
 * Big-endian; crc is CRC-32 (IEEE) of magic to the end of the message; bytes are an i32
 * length (-1: null) and the data; attributes bits 0-2 are the compression codec.
 */
#ifndef KAFKA_MSGSET_H
#define KAFKA_MSGSET_H

#include <stddef.h>
#include <stdint.h>

#include <warren/wr.h>

/* Kafka's CORRUPT_MESSAGE and UNSUPPORTED_COMPRESSION_TYPE, for the caller to answer. */
enum kf_msgset_status { KF_MSGSET_OK, KF_MSGSET_CORRUPT, KF_MSGSET_COMPRESSED };

/* Converts the message set p[0..len) into one uncompressed RecordBatch v2 (base offset 0,
 * producer id -1, no headers, the CRC-32C set) appended to out. A magic-0 message gets
 * timestamp -1. KF_MSGSET_CORRUPT: a bad CRC or framing, an unknown magic, an empty set;
 * KF_MSGSET_COMPRESSED: a compressed (wrapper) message, which this broker cannot unpack.
 * Out of memory sets out->oom. */
enum kf_msgset_status kf_msgset_to_batch(const uint8_t *p, size_t len, struct wr_bytes *out);

/* Appends to out the records of the RecordBatches in p[0..len) whose offset is at least
 * `from`, as magic-1 messages with their absolute offsets (control batches are left out).
 * It stops at a batch that is cut off, compressed or does not parse. When messages were
 * written before it, that is KF_MSGSET_OK (the client's next fetch starts at the batch);
 * otherwise KF_MSGSET_COMPRESSED or KF_MSGSET_CORRUPT, so the client sees why it cannot go
 * on. Out of memory sets out->oom. */
enum kf_msgset_status kf_msgset_from_batches(const uint8_t *p, size_t len, uint64_t from,
                               struct wr_bytes *out);

#endif
