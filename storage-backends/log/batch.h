/*
 * batch.h: Kafka's RecordBatch v2 (magic 2), as the `log` storage keeps it on disk and a
 * Kafka client sends and fetches it (../shared/specs/kafka, "RecordBatch"):
 *
 *     i64 base_offset | i32 batch_length | i32 partition_leader_epoch | i8 magic (2) |
 *     u32 crc | i16 attributes | i32 last_offset_delta | i64 base_timestamp |
 *     i64 max_timestamp | i64 producer_id | i16 producer_epoch | i32 base_sequence |
 *     i32 record_count | records...
 *
 * Big-endian. batch_length counts the bytes after itself; crc is CRC-32C of everything from
 * attributes to the end. A record is varint-framed: length, attributes, timestamp delta,
 * offset delta, key, value, headers (zigzag varints; -1 lengths mean null).
 */
#ifndef LOG_BATCH_H
#define LOG_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warren/wr.h>

#define LB_HEADER_SIZE 61u       /* every fixed field up to and including record_count */
#define LB_LENGTH_OFFSET 8u      /* batch_length: the batch is 12 + batch_length bytes */
#define LB_LOG_OVERHEAD 12u      /* base_offset and batch_length */
#define LB_META_HEADER "x-warren-meta"

/* attributes: bits 0-2 compression (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), bit 3
 * timestamp type, bit 4 transactional, bit 5 control. */
#define LB_ATTR_COMPRESSION 0x07
#define LB_ATTR_TRANSACTIONAL 0x10
#define LB_ATTR_CONTROL 0x20

struct lb_header {
    uint64_t base_offset;
    uint32_t batch_length;
    int32_t partition_leader_epoch;
    uint32_t crc;
    uint16_t attributes;
    uint32_t last_offset_delta;
    int64_t base_timestamp;
    int64_t max_timestamp;
    int64_t producer_id;
    int16_t producer_epoch;
    int32_t base_sequence;
    uint32_t record_count;
};

/* CRC-32C (Castagnoli) of p[0..n), continuing from crc (0 to start). Uses SSE4.2's crc32
 * instruction where the CPU has it. */
uint32_t lb_crc32c(uint32_t crc, const void *p, size_t n);

/* Reads the fixed fields of the batch at p; false if fewer than LB_HEADER_SIZE bytes. */
bool lb_header_read(const uint8_t *p, size_t avail, struct lb_header *h);

/* Checks the batch at p[0..len) completely: len equals 12 + batch_length, magic 2, the CRC
 * matches, last_offset_delta < 2^31 and record_count is plausible for the bytes. Fills h.
 * WR_EPROTO with a message saying which check failed (a user reads it in a produce error
 * or a recovery warning). */
int lb_check(const uint8_t *p, size_t len, struct lb_header *h, struct wr_error *err);

/* Writes base into the batch's first 8 bytes (not covered by the CRC). */
void lb_set_base_offset(uint8_t *p, uint64_t base);

/* Makes the batch at p[0..len) whole again after its records or attributes changed: writes
 * batchLength for len, the attributes, and the CRC. */
void lb_reframe(uint8_t *p, size_t len, uint16_t attributes);

/* Appends one record to out: offset_delta, timestamp_delta, key and value (ptr NULL: null),
 * then count headers already framed in headers (lb_header_put). WR_EINVAL when a length
 * passes 2^31, WR_ENOMEM. */
int lb_record_put(struct wr_bytes *out, size_t offset_delta, int64_t timestamp_delta,
                  struct wr_str key, struct wr_str value, const struct wr_bytes *headers,
                  uint32_t count, struct wr_error *err);

/* Fills in the fixed fields of the uncompressed batch at p[0..len) whose count records
 * (lb_record_put) follow its LB_HEADER_SIZE bytes: base offset 0, no leader epoch,
 * producer_id -1, producer_epoch -1, base_sequence -1, CreateTime timestamps base_ts and
 * max_ts, batchLength and CRC. */
void lb_batch_finish(uint8_t *p, size_t len, uint32_t count, int64_t base_ts, int64_t max_ts);

/* Appends one record header to out as a record frames it: name, then value (NULL: a null
 * value). Sets out->oom when memory runs out or a length passes 2^31. */
void lb_header_put(struct wr_bytes *out, const void *name, size_t name_len, const void *value,
                   size_t value_len);

/* One record of an uncompressed batch, pointing into the batch's bytes. */
struct lb_record {
    uint64_t offset;             /* base_offset + offset delta */
    int64_t timestamp;           /* base_timestamp + timestamp delta */
    const uint8_t *key;          /* NULL: null key (key_len -1) */
    int32_t key_len;
    const uint8_t *value;        /* NULL: null value, a tombstone for compaction (len -1) */
    int32_t value_len;
    const uint8_t *headers;      /* the raw header array, for lb_header_next */
    uint32_t header_count;
    const uint8_t *end;          /* where this record ends */
};

/* Walks the records of a checked, uncompressed batch: *pos starts at NULL; each call fills
 * r with the next record and returns 1, 0 after the last, or WR_EPROTO for a malformed
 * record (the CRC passed, so the producer wrote it wrong). The first call checks every
 * record (framing, headers, increasing offsets within lastOffsetDelta, exactly record_count
 * of them filling the batch), so a malformed batch fails before any record is returned.
 * Compressed batches are WR_EPROTO: lb_decompress (compress.h) makes them readable. */
int lb_record_next(const uint8_t *batch, size_t len, const uint8_t **pos,
                   struct lb_record *r, struct wr_error *err);

/* Walks a record's headers: *pos starts at NULL; returns 1 with name/value filled (value
 * NULL for a null value), 0 after the last, WR_EPROTO if malformed. */
int lb_header_next(const struct lb_record *r, const uint8_t **pos, const uint8_t **name,
                   int32_t *name_len, const uint8_t **value, int32_t *value_len);

#endif
