/*
 * compress.h: reading compressed record batches. A Kafka producer may compress the records of
 * a batch (attributes & LB_ATTR_COMPRESSION: 1 gzip, 2 snappy, 3 lz4, 4 zstd); the log keeps
 * and serves the batch as it came, and only turning records into messages (read_msgs,
 * offset_for_time) needs them decompressed.
 *
 * Formats, as Kafka clients write them: gzip is RFC 1952 (members may follow each other);
 * snappy is either raw snappy (librdkafka) or xerial framing (Java clients: the magic
 * "\x82SNAPPY\0", two 32-bit versions, then blocks of a big-endian 32-bit length and raw
 * snappy); lz4 is the LZ4 frame format; zstd is zstd frames.
 */
#ifndef LOG_COMPRESS_H
#define LOG_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include <warren/wr.h>

/* Decompresses the records of the compressed batch at batch[0..len) (checked by lb_check):
 * *out is a new buffer holding the same batch uncompressed (compression bits cleared,
 * batchLength and CRC rewritten), for lb_record_next and lb_record_msg. A batch may claim or
 * inflate to anything: more than limit bytes of records is refused. WR_EPROTO (an unknown
 * codec, data corrupt or cut short, over the limit) with a message naming the codec,
 * WR_ENOMEM. */
int lb_decompress(const uint8_t *batch, size_t len, size_t limit, struct wr_buf **out,
                  struct wr_error *err);

#endif
