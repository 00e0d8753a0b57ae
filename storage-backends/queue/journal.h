/*
 * journal.h: the on-disk format of the `queue` storage backend (docs/storage-queue.md).
 *
 * A queue's journal is a series of segment files. Each starts with a header (magic, format
 * version, the first sequence number it may hold) and continues with records:
 *
 *     u32 crc | u32 len | u8 type | payload[len]
 *
 * crc is the CRC-32 (zlib's) of everything after it: len, type and payload, so a torn or
 * flipped record never passes. An enqueue record holds the message's sequence number and the
 * whole message; an ack record holds a sequence number. Integers are little-endian.
 */
#ifndef QUEUE_JOURNAL_H
#define QUEUE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warren/wr.h>

#define QJ_MAGIC "WRQJ"
#define QJ_VERSION 1u
#define QJ_HEADER_SIZE 16u        /* magic[4] | u32 version | u64 first_seq */
#define QJ_RECORD_HEAD 9u         /* u32 crc | u32 len | u8 type */
#define QJ_MAX_PAYLOAD (1u << 30) /* a record never claims more: a bigger len is corruption */
#define QJ_ENQUEUE_PREFIX 18u     /* u64 seq | u64 body_len | u8 has_priority | u8 priority */

/* A deliver record lists messages handed out for the first time (u64 seqs), so recovery can
 * tell the messages a consumer may have seen (redelivered) from those nobody saw. */
enum qj_type { QJ_ENQUEUE = 1, QJ_ACK = 2, QJ_DELIVER = 3 };

/* What replay needs of an enqueue record without decoding the message. */
struct qj_enqueue_info {
    uint64_t seq;
    uint64_t body_len;
    bool has_priority;
    uint8_t priority;
};

uint32_t qj_crc(const uint8_t *p, size_t len);

void qj_header_encode(uint8_t out[QJ_HEADER_SIZE], uint64_t first_seq);
/* WR_OK, or WR_EPROTO with err naming path for a wrong magic or a version this build does
 * not read. */
int qj_header_check(const uint8_t in[QJ_HEADER_SIZE], const char *path, uint64_t *first_seq,
                    struct wr_error *err);

/* Replaces o's contents with one whole record. WR_ENOMEM, or WR_ELIMIT for a message bigger
 * than a record may be. */
int qj_encode_enqueue(struct wr_bytes *o, uint64_t seq, const struct wr_msg *msg);
int qj_encode_ack(struct wr_bytes *o, uint64_t seq);
/* One deliver record for seqs[0..n). */
int qj_encode_deliver(struct wr_bytes *o, const uint64_t *seqs, size_t n);

/* Checks a record's header and crc: rec holds QJ_RECORD_HEAD + len bytes. */
bool qj_record_ok(const uint8_t *rec, uint32_t len);

/* Reads the fixed part of an enqueue payload; false if it is too short. */
bool qj_enqueue_info(const uint8_t *payload, uint32_t len, struct qj_enqueue_info *out);

/* Builds the message of an enqueue record held in buf at off (the record's first byte); the
 * body is a slice of buf, so nothing is copied twice. WR_EPROTO for a malformed payload,
 * WR_ENOMEM. */
int qj_decode_msg(struct wr_buf *buf, size_t off, struct wr_msg **out, struct wr_error *err);

#endif
