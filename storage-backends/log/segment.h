/*
 * segment.h: one segment of a log partition: `<base>.log` holding whole RecordBatch v2
 * batches after a 16-byte header, a sparse offset index `<base>.index` and a time index
 * `<base>.timeindex`, both memory-mapped (docs/storage-log.md has the byte layout).
 *
 * The active segment's indexes are preallocated to their largest size and trimmed when the
 * segment is sealed (rolled) or closed, as Kafka does; a sealed segment's indexes are mapped
 * read-only and their files closed. Indexes are derived data: one that is missing, empty or
 * does not match the log is rebuilt from the log.
 */
#ifndef LOG_SEGMENT_H
#define LOG_SEGMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <warren/wr.h>

#include "batch.h"

#define LS_MAGIC "WRLG"
#define LS_VERSION 1
#define LS_HEADER_SIZE 16u      /* magic | u16 version | u16 flags (0) | u64 base offset */
#define LS_INDEX_HEADER 8u      /* "WRIX" or "WRTI" | u16 version | u16 0 */
#define LS_INDEX_ENTRY 8u       /* u32 relative offset | u32 position in the .log */
#define LS_TIME_ENTRY 12u       /* i64 max timestamp so far | u32 relative offset */
#define LS_NAME_DIGITS 20

struct ls_index {
    int fd;                     /* open while the segment is active, else -1 */
    uint8_t *map;
    size_t map_len;             /* bytes mapped */
    size_t len;                 /* bytes in use, header included */
};

struct ls_seg {
    uint64_t base;              /* its first offset, in its name */
    uint64_t next;              /* the offset after its last batch (base when empty) */
    uint64_t size;              /* bytes of the .log, header included */
    int fd;
    int64_t max_ts;             /* the largest batch max_timestamp, or -1 */
    int64_t first_ts;           /* the first batch's max_timestamp, or -1 */
    int64_t mtime_ms;           /* the last write, wall clock: retention without timestamps */
    uint64_t since_index;       /* bytes appended since the last offset index entry */
    bool index_ok;              /* set by ls_scan: the index files match the log */
    struct ls_index idx;
    struct ls_index tix;
};

/* Reads a segment file through a buffer: ls_reader_at makes [pos, pos + n) available. */
struct ls_reader {
    int fd;
    uint8_t *buf;
    size_t cap;
    uint64_t at;                /* file position of buf[0] */
    size_t len;
};

void ls_path(char *out, size_t cap, const char *dir, uint64_t base, const char *suffix);

/* Creates segment base in dir: the .log with its header, empty indexes preallocated to
 * index_max bytes and mapped. WR_EIO naming the file. */
int ls_create(struct ls_seg *s, const char *dir, uint64_t base, size_t index_max,
              struct wr_error *err);

/* Opens an existing segment and checks its header (magic, version, base) without changing
 * anything: WR_EPROTO naming the file for a foreign or newer file. A .log shorter than its
 * header is *torn (left for the caller to judge). */
int ls_open(struct ls_seg *s, const char *dir, uint64_t base, bool *torn,
            struct wr_error *err);

/* Reads every batch and checks it (lb_check), setting next, max_ts, first_ts, and index_ok
 * (the index files agree with the batches). *bad_pos is where the first bad or torn batch
 * starts, or the size if none; why describes it. Changes nothing. WR_EIO, WR_ENOMEM. */
int ls_scan(struct ls_seg *s, const char *dir, struct ls_reader *r, uint64_t *bad_pos,
            struct wr_error *why, struct wr_error *err);

/* Cuts the .log at pos (a batch boundary found by ls_scan). */
int ls_truncate(struct ls_seg *s, const char *dir, uint64_t pos, struct wr_error *err);

/* Writes the indexes from the batches of the log (active: preallocated to index_max and
 * kept open for appends; else exact and read-only), or maps the existing ones when
 * s->index_ok and the segment is not active. */
int ls_index_load(struct ls_seg *s, const char *dir, struct ls_reader *r, bool active,
                  size_t index_max, uint32_t interval, struct wr_error *err);

/* True if a batch of len bytes holding count offsets cannot go in the active segment
 * s (relative offsets or positions would overflow 32 bits, or an index is full). ls_append
 * must not be called when it is. */
bool ls_full(const struct ls_seg *s, size_t len, uint64_t count);

/* Appends a checked batch (its base offset already set to s->next) at the end of the .log,
 * with index entries every interval bytes. One write. On failure the file is cut back. */
int ls_append(struct ls_seg *s, const char *dir, const uint8_t *batch, size_t len,
              const struct lb_header *h, uint32_t interval, int64_t now_ms,
              struct wr_error *err);

/* Trims the active segment's indexes to their used length, maps them read-only and closes
 * their files, handing them and the .log to fs for a last sync: the segment is sealed. */
void ls_seal(struct ls_seg *s, struct wr_fsync *fs);

/* Unmaps and closes everything; an active segment's indexes are trimmed first. */
void ls_close(struct ls_seg *s);

/* Deletes the segment's three files (after ls_close). */
void ls_unlink(const char *dir, uint64_t base, const struct wr_plugin_ctx *ctx);

/* The position of the first batch whose last offset is >= offset (s->size if none), found
 * through the offset index and then batch headers. */
int ls_find(struct ls_seg *s, struct ls_reader *r, uint64_t offset, uint64_t *pos,
            struct wr_error *err);

/* From the batch at pos: whole batches totalling at most max_bytes, at least one. *len 0 at
 * the end of the segment; *base the first batch's base offset. */
int ls_range(struct ls_seg *s, struct ls_reader *r, uint64_t pos, size_t max_bytes,
             uint64_t *len, uint64_t *base, struct wr_error *err);

/* The relative offset of the last time-index entry older than ts (its records are all
 * older), or -1 when none is. */
int64_t ls_time_lookup(const struct ls_seg *s, int64_t ts);

/* Makes [pos, pos + n) of r's file available; NULL past the end of the file (or on an I/O
 * error: *ioerr). */
const uint8_t *ls_reader_at(struct ls_reader *r, uint64_t pos, size_t n, bool *ioerr);
void ls_reader_reset(struct ls_reader *r, int fd);

/* Reads the big-endian fields of a stored batch header at p (>= 27 bytes). */
uint64_t ls_be64(const uint8_t *p);
uint32_t ls_be32(const uint8_t *p);
#define LS_LAST_DELTA_AT 23u    /* offset of last_offset_delta in a batch */
#define LS_BATCH_PEEK 27u       /* bytes that hold base, length and last_offset_delta */

#endif
