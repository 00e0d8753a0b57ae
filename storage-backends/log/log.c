/*
 * log.c: the `log` storage backend, Kafka's log model: per partition a directory of
 * segments (segment.h) holding RecordBatch v2 batches exactly as produced, with offsets,
 * retention by age and size, compaction by key, and group commit (fsync.h).
 *
 * Appends go to the active (last) segment of a partition: one pwrite of the batch, plus an
 * index entry written into the mapped index every index_interval_bytes. The segment rolls
 * when the next batch would take it past segment_bytes, when its first batch is older than
 * segment_ms, or when an index is full. Retention deletes whole sealed segments from the
 * oldest on, on a timer and after each roll; compaction (compact.h) rewrites sealed segments
 * keeping the latest record of each key.
 *
 * Opening checks every segment of every partition, batch by batch, before changing
 * anything: a bad batch in a sealed segment stops start-up (WR_EPROTO naming the file and
 * position), a torn or bad tail of the last segment is cut off with a warning, and indexes
 * that do not match their log are rebuilt.
 *
 * Partitions can be added to an open log (Kafka's CreatePartitions), never removed. Open takes
 * the larger of the declared count and the partition directories on disk, so a log that grew
 * keeps every partition across a restart even where its queue is still declared smaller.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <warren/wr.h>

#include "batch.h"
#include "compact.h"
#include "compress.h"
#include "record.h"
#include "segment.h"

#define LG_DEFAULT_SEGMENT_BYTES (1ll << 30)
#define LG_DEFAULT_SEGMENT_MS (7ll * 24 * 3600 * 1000)
#define LG_DEFAULT_RETENTION_MS (7ll * 24 * 3600 * 1000)
#define LG_DEFAULT_RETENTION_CHECK_MS (5ll * 60 * 1000)
#define LG_DEFAULT_INDEX_INTERVAL 4096
#define LG_INDEX_MAX (10u << 20)          /* Kafka's segment.index.bytes */
/* What read_msgs reads at a time: about LG_READ_MSG_BYTES per record asked for, within
 * bounds. Reading much more than the records asked for costs a copy of bytes that are
 * thrown away (and a large malloc is an mmap whose pages the kernel zeroes on every call);
 * the messages pin the buffer, so it should be about their size. A batch larger than this
 * is still read whole. */
#define LG_READ_MSG_BYTES 512u
#define LG_READ_MIN_BYTES (16u << 10)
#define LG_READ_MAX_BYTES (1u << 20)
#define LG_PARTITIONS_MAX 100000u

/* The rest of a batch read_msgs stopped inside, because it had decoded as many records as
 * asked. A Kafka producer's batch may hold thousands of records in a megabyte, compressed
 * or not; without this every call would read (and inflate, and check) it again for its next
 * hundred records. Batches never change once written, so it stays right until the next
 * record is past it. */
struct lg_rest {
    struct wr_buf *buf;   /* holds the batch (the read, or the inflated copy); NULL: none */
    const uint8_t *batch; /* the uncompressed batch in buf */
    size_t len;
    const uint8_t *pos;   /* lb_record_next's place: the next record is `next` */
    uint64_t next;        /* the offset of the next record */
    uint64_t first;       /* the batch's base offset */
    uint64_t after;       /* the first offset after the batch */
};

static void lg_rest_drop(struct lg_rest *rest)
{
    wr_buf_unref(rest->buf);
    *rest = (struct lg_rest){0};
}

struct lg_part {
    char *dir;
    int dir_fd;
    struct ls_seg *segs;                  /* by base offset; the last is active */
    size_t nsegs;
    size_t cap;
    uint64_t total;                       /* bytes of every segment */
    bool dirty;                           /* rolled since the last compaction */
    struct lg_rest rest;                  /* the batch read_msgs stopped inside */
};

struct lg_log {
    struct wr_plugin_ctx *ctx;
    struct wr_loop *lp;
    char *dir;
    enum wr_fsync_policy flush;
    uint64_t flush_interval_ms;
    int64_t segment_bytes;
    int64_t segment_ms;                   /* 0: no age roll */
    int64_t retention_ms;                 /* -1: none */
    int64_t retention_bytes;              /* -1: none */
    int64_t retention_check_ms;
    uint32_t index_interval;
    bool delete;                          /* cleanup_policy has delete */
    bool compact;                         /* cleanup_policy has compact */
    struct wr_fsync *fsync;
    struct ls_reader reader;              /* scratch for every read */
    struct wr_bytes enc;                  /* scratch for append_msgs */
    uint64_t timer;
    uint32_t nparts;
    struct lg_part *parts;                /* grows (add_partitions), never shrinks */
};

static int64_t lg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct ls_seg *lg_active(struct lg_part *part)
{
    return &part->segs[part->nsegs - 1];
}

static int lg_segs_reserve(struct lg_part *part)
{
    if (part->nsegs < part->cap)
        return WR_OK;
    size_t cap = part->cap ? part->cap * 2 : 8;
    struct ls_seg *grown = realloc(part->segs, cap * sizeof *grown);
    if (!grown)
        return WR_ENOMEM;
    part->segs = grown;
    part->cap = cap;
    return WR_OK;
}

/* ---- retention -------------------------------------------------------------------------- */

static void lg_delete_first(struct lg_log *l, struct lg_part *part)
{
    struct ls_seg *s = &part->segs[0];
    wr_plog(l->ctx, WR_LOG_INFO, "%s: retention deletes segment %020llu (%llu bytes)",
            part->dir, (unsigned long long)s->base, (unsigned long long)s->size);
    part->total -= s->size;
    ls_close(s);
    ls_unlink(part->dir, s->base, l->ctx);
    memmove(s, s + 1, (part->nsegs - 1) * sizeof *s);
    part->nsegs--;
    wr_fsync_dir_changed(l->fsync, part->dir_fd);
}

/* Deletes sealed segments from the oldest on while they are past retention. */
static void lg_retain(struct lg_log *l, struct lg_part *part, int64_t now)
{
    while (l->delete && part->nsegs > 1) {
        const struct ls_seg *s = &part->segs[0];
        int64_t ts = s->max_ts >= 0 ? s->max_ts : s->mtime_ms;
        bool old = l->retention_ms >= 0 && now - ts > l->retention_ms;
        bool over = l->retention_bytes >= 0 &&
                    part->total - s->size >= (uint64_t)l->retention_bytes;
        if (!old && !over)
            return;
        lg_delete_first(l, part);
    }
}

static void lg_tick(struct wr_loop *lp, void *data)
{
    struct lg_log *l = data;
    int64_t now = lg_now();
    for (uint32_t p = 0; p < l->nparts; p++) {
        struct lg_part *part = &l->parts[p];
        lg_retain(l, part, now);
        if (l->compact && part->dirty && part->nsegs > 1) {
            struct wr_error err = {0};
            struct lc_target t = {part->dir, part->dir_fd, part->segs, part->nsegs - 1,
                                  &part->total};
            if (lc_compact(&t, &l->reader, l->fsync, l->index_interval, l->ctx, &err) ==
                WR_OK)
                part->dirty = false;
            else
                wr_plog(l->ctx, WR_LOG_ERROR, "%s: compaction failed: %s", part->dir,
                        err.msg);
        }
    }
    l->timer = wr_loop_timer_add(lp, (uint64_t)l->retention_check_ms, lg_tick, l);
}

/* ---- appends ---------------------------------------------------------------------------- */

static int lg_roll(struct lg_log *l, struct lg_part *part, struct wr_error *err)
{
    if (lg_segs_reserve(part) != WR_OK)
        return wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    struct ls_seg *old = lg_active(part);
    struct ls_seg s;
    int rc = ls_create(&s, part->dir, old->next, LG_INDEX_MAX, err);
    if (rc == WR_OK && (rc = wr_fsync_file_add(l->fsync, s.fd, err)) != WR_OK) {
        ls_close(&s);
        ls_unlink(part->dir, s.base, l->ctx);
    }
    if (rc != WR_OK)
        return rc;
    ls_seal(old, l->fsync);
    wr_fsync_dir_changed(l->fsync, part->dir_fd);
    part->segs[part->nsegs++] = s;
    part->total += s.size;
    part->dirty = true;
    lg_retain(l, part, lg_now());
    return WR_OK;
}

/* Appends a checked batch to partition p: the only bytes changed are its base offset. */
static int lg_append(struct lg_log *l, struct lg_part *part, uint8_t *batch, size_t len,
                     struct lb_header *h, uint64_t *base_offset, struct wr_error *err)
{
    struct ls_seg *s = lg_active(part);
    uint64_t count = (uint64_t)h->last_offset_delta + 1;
    int64_t now = lg_now();
    if (s->size > LS_HEADER_SIZE &&
        (s->size + len > (uint64_t)l->segment_bytes || ls_full(s, len, count) ||
         (l->segment_ms > 0 && s->first_ts >= 0 && now - s->first_ts > l->segment_ms))) {
        int rc = lg_roll(l, part, err);
        if (rc != WR_OK)
            return rc;
        s = lg_active(part);
    }
    if (ls_full(s, len, count))
        return wr_error_set(err, WR_ELIMIT, "log storage: a %zu-byte batch does not fit a "
                            "segment", len);
    h->base_offset = s->next;
    lb_set_base_offset(batch, s->next);
    int rc = ls_append(s, part->dir, batch, len, h, l->index_interval, now, err);
    if (rc != WR_OK)
        return rc;
    part->total += len;
    wr_fsync_wrote(l->fsync);
    *base_offset = h->base_offset;
    return WR_OK;
}

static struct lg_part *lg_part_of(struct lg_log *l, uint32_t partition, struct wr_error *err)
{
    if (partition < l->nparts)
        return &l->parts[partition];
    wr_error_set(err, WR_EINVAL, "log storage: partition %u does not exist (%u partitions)",
                 partition, l->nparts);
    return NULL;
}

static int lg_append_batch(void *state, uint32_t partition, uint8_t *batch, size_t len,
                           uint64_t *base_offset, struct wr_error *err)
{
    struct lg_log *l = state;
    struct lg_part *part = lg_part_of(l, partition, err);
    if (!part)
        return WR_EINVAL;
    struct lb_header h;
    int rc = lb_check(batch, len, &h, err);
    if (rc != WR_OK)
        return rc;
    return lg_append(l, part, batch, len, &h, base_offset, err);
}

static int lg_append_msgs(void *state, uint32_t partition, struct wr_msg *const *msgs,
                          size_t n, uint64_t *base_offset, struct wr_error *err)
{
    struct lg_log *l = state;
    struct lg_part *part = lg_part_of(l, partition, err);
    if (!part)
        return WR_EINVAL;
    l->enc.len = 0;
    int rc = lb_encode_msgs(&l->enc, msgs, n, err);
    struct lb_header h;
    if (rc == WR_OK && !lb_header_read(l->enc.p, l->enc.len, &h))
        rc = wr_error_set(err, WR_EPROTO, "log storage: encoded batch too short");
    if (rc != WR_OK)
        return rc;
    return lg_append(l, part, l->enc.p, l->enc.len, &h, base_offset, err);
}

/* ---- reads ------------------------------------------------------------------------------ */

static void lg_offsets(void *state, uint32_t partition, uint64_t *earliest, uint64_t *latest)
{
    struct lg_log *l = state;
    *earliest = *latest = 0;
    if (partition >= l->nparts)
        return;
    struct lg_part *part = &l->parts[partition];
    *earliest = part->segs[0].base;
    *latest = lg_active(part)->next;
}

/* The segment and position of the first batch holding offset or, past a gap left by
 * compaction, the next batch after it; *seg = nsegs when there is none. */
static int lg_locate(struct lg_log *l, struct lg_part *part, uint64_t offset, size_t *seg,
                     uint64_t *pos, struct wr_error *err)
{
    size_t lo = 0, hi = part->nsegs;
    while (lo < hi) { /* the first segment based above offset */
        size_t mid = lo + (hi - lo) / 2;
        if (part->segs[mid].base <= offset)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t i = lo ? lo - 1 : 0; i < part->nsegs; i++) {
        struct ls_seg *s = &part->segs[i];
        int rc = ls_find(s, &l->reader, offset, pos, err);
        if (rc != WR_OK)
            return rc;
        if (*pos < s->size) {
            *seg = i;
            return WR_OK;
        }
    }
    *seg = part->nsegs;
    return WR_OK;
}

static int lg_check_offset(struct lg_part *part, uint32_t partition, uint64_t offset,
                           struct wr_error *err)
{
    uint64_t earliest = part->segs[0].base, latest = part->segs[part->nsegs - 1].next;
    if (offset >= earliest && offset <= latest)
        return WR_OK;
    return wr_error_set(err, WR_ENOTFOUND, "log storage: partition %u: offset %llu is out of "
                        "range [%llu, %llu]", partition, (unsigned long long)offset,
                        (unsigned long long)earliest, (unsigned long long)latest);
}

static int lg_read(void *state, uint32_t partition, uint64_t offset, size_t max_bytes,
                   struct wr_log_slice *out, struct wr_error *err)
{
    struct lg_log *l = state;
    *out = (struct wr_log_slice){.fd = -1, .base_offset = offset};
    struct lg_part *part = lg_part_of(l, partition, err);
    if (!part)
        return WR_EINVAL;
    int rc = lg_check_offset(part, partition, offset, err);
    size_t i = 0;
    uint64_t pos = 0, len = 0, base = offset;
    if (rc == WR_OK)
        rc = lg_locate(l, part, offset, &i, &pos, err);
    if (rc != WR_OK || i == part->nsegs)
        return rc;
    struct ls_seg *s = &part->segs[i];
    rc = ls_range(s, &l->reader, pos, max_bytes, &len, &base, err);
    if (rc != WR_OK || len == 0)
        return rc;
    out->fd = fcntl(s->fd, F_DUPFD_CLOEXEC, 0);
    if (out->fd < 0)
        return wr_error_sys(err, WR_EIO, "log storage: cannot duplicate a segment's fd");
    out->file_offset = pos;
    out->length = len;
    out->base_offset = base;
    return WR_OK;
}

/* The most bytes the records of one compressed batch may inflate to: the broker's
 * max_message_size, read each time as the configuration may change. */
static size_t lg_inflate_limit(const struct lg_log *l)
{
    uint64_t max = wr_broker_max_message_size(wr_plugin_ctx_broker(l->ctx));
    return max > SIZE_MAX ? SIZE_MAX : (size_t)max;
}

/* Decodes the records at or after *next of the uncompressed batch at batch[0..len), which
 * lies in buf, into out, walking from *pos (NULL: the batch's start). When out fills before
 * the batch ends, rest keeps the place for the next call. */
static int lg_decode_batch(struct wr_buf *buf, const uint8_t *batch, size_t len,
                           const uint8_t *pos, uint64_t first, uint64_t after, uint64_t *next,
                           struct lg_rest *rest, struct wr_log_entry *out, size_t max,
                           size_t *n, struct wr_error *err)
{
    struct lb_record r;
    int more = 0;
    while (*n < max && (more = lb_record_next(batch, len, &pos, &r, err)) == 1) {
        if (r.offset < *next)
            continue;
        struct wr_msg *msg = NULL;
        int rc = lb_record_msg(buf, &r, &msg, err);
        if (rc != WR_OK)
            return rc;
        out[(*n)++] = (struct wr_log_entry){r.offset, msg};
        *next = r.offset + 1;
    }
    if (more < 0 && *n < max)
        return more;
    bool kept = rest->buf == buf && rest->batch == batch;
    if (kept) {
        rest->pos = pos;
        rest->next = *next;
    } else if (*n == max && *next < after) {
        lg_rest_drop(rest);
        *rest = (struct lg_rest){wr_buf_ref(buf), batch, len, pos, *next, first, after};
    }
    return WR_OK;
}

/* Decodes the records at or after *next of the batches in buf into out. */
static int lg_decode(const struct lg_log *l, struct lg_part *part, struct wr_buf *buf,
                     uint64_t *next, struct wr_log_entry *out, size_t max, size_t *n,
                     struct wr_error *err)
{
    for (size_t at = 0; at + LB_HEADER_SIZE <= buf->len && *n < max;) {
        struct lb_header h;
        lb_header_read(buf->data + at, buf->len - at, &h);
        size_t len = LB_LOG_OVERHEAD + h.batch_length;
        uint64_t after = h.base_offset + h.last_offset_delta + 1;
        const uint8_t *batch = buf->data + at;
        at += len;
        if (after <= *next)
            continue;
        if (h.attributes & LB_ATTR_CONTROL) { /* transaction markers are not records */
            *next = after;
            continue;
        }
        int rc;
        if (h.attributes & LB_ATTR_COMPRESSION) {
            /* The messages take references on the decompressed copy, not on buf. */
            struct wr_buf *plain = NULL;
            rc = lb_decompress(batch, len, lg_inflate_limit(l), &plain, err);
            if (rc != WR_OK)
                wr_error_wrap(err, "log storage: batch at offset %llu",
                              (unsigned long long)h.base_offset);
            else
                rc = lg_decode_batch(plain, plain->data, plain->len, NULL, h.base_offset, after,
                                     next,
                                     &part->rest, out, max, n, err);
            wr_buf_unref(plain);
        } else {
            rc = lg_decode_batch(buf, batch, len, NULL, h.base_offset, after, next, &part->rest,
                                 out, max, n, err);
        }
        if (rc != WR_OK || *n == max)
            return rc;
        *next = after;
    }
    return WR_OK;
}

static int lg_read_msgs(void *state, uint32_t partition, uint64_t offset,
                        struct wr_log_entry *out, size_t max, size_t *n, struct wr_error *err)
{
    struct lg_log *l = state;
    *n = 0;
    struct lg_part *part = lg_part_of(l, partition, err);
    if (!part)
        return WR_EINVAL;
    int rc = lg_check_offset(part, partition, offset, err);
    uint64_t next = offset;
    struct lg_rest *rest = &part->rest;
    if (rc == WR_OK && rest->buf && offset >= rest->first && offset < rest->after) {
        /* From its place when this reader is the one that stopped there, else from the
         * batch's start (another reader of the same batch: still no read, no inflate). */
        rc = lg_decode_batch(rest->buf, rest->batch, rest->len,
                             offset == rest->next ? rest->pos : NULL, rest->first,
                             rest->after, &next,
                             rest, out, max, n, err);
        if (rc == WR_OK && *n < max)
            next = rest->after; /* the batch is done */
    }
    while (rc == WR_OK && *n < max) {
        size_t i = 0;
        uint64_t pos = 0, len = 0, base = 0;
        rc = lg_locate(l, part, next, &i, &pos, err);
        if (rc != WR_OK || i == part->nsegs)
            break;
        struct ls_seg *s = &part->segs[i];
        size_t want = (max - *n) * LG_READ_MSG_BYTES;
        want = want < LG_READ_MIN_BYTES ? LG_READ_MIN_BYTES
               : want > LG_READ_MAX_BYTES ? LG_READ_MAX_BYTES : want;
        rc = ls_range(s, &l->reader, pos, want, &len, &base, err);
        struct wr_buf *buf = rc == WR_OK ? wr_buf_new(len) : NULL;
        if (rc == WR_OK && !buf)
            rc = wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
        else if (rc == WR_OK && pread(s->fd, buf->data, len, (off_t)pos) != (ssize_t)len)
            rc = wr_error_sys(err, WR_EIO, "log storage: cannot read segment %020llu of %s",
                              (unsigned long long)s->base, part->dir);
        if (rc == WR_OK) {
            buf->len = len;
            uint64_t before = next;
            rc = lg_decode(l, part, buf, &next, out, max, n, err);
            if (rc == WR_OK && next == before)
                next = base + 1; /* cannot happen with whole batches; never loop */
        }
        wr_buf_unref(buf);
    }
    if (rc != WR_OK && *n > 0)
        return WR_OK; /* give what was decoded; the next call meets the error */
    return rc;
}

/* The first record at or after `from` of the batch at p[0..len) whose timestamp is >= ts. */
static bool lg_time_in_batch(const uint8_t *p, size_t len, uint64_t from, int64_t ts,
                             uint64_t *offset, int64_t *timestamp)
{
    const uint8_t *rp = NULL;
    struct lb_record r;
    while (lb_record_next(p, len, &rp, &r, NULL) == 1)
        if (r.offset >= from && r.timestamp >= ts) {
            *offset = r.offset;
            *timestamp = r.timestamp;
            return true;
        }
    return false;
}

/* The first record at or after `from` in the batches of s from pos whose timestamp is >= ts.
 * WR_ENOTFOUND when the segment has none. */
static int lg_time_scan(struct lg_log *l, struct ls_seg *s, uint64_t pos, uint64_t from,
                        int64_t ts, uint64_t *offset, int64_t *timestamp)
{
    bool ioerr = false;
    while (pos < s->size) {
        const uint8_t *p = ls_reader_at(&l->reader, pos, LB_HEADER_SIZE, &ioerr);
        struct lb_header h;
        if (!p || !lb_header_read(p, LB_HEADER_SIZE, &h))
            return WR_EIO;
        size_t len = LB_LOG_OVERHEAD + h.batch_length;
        if (h.max_timestamp >= ts && !(h.attributes & LB_ATTR_CONTROL)) {
            p = ls_reader_at(&l->reader, pos, len, &ioerr);
            if (!p)
                return WR_EIO;
            struct wr_buf *plain = NULL;
            bool found;
            if (!(h.attributes & LB_ATTR_COMPRESSION))
                found = lg_time_in_batch(p, len, from, ts, offset, timestamp);
            else if (lb_decompress(p, len, lg_inflate_limit(l), &plain, NULL) == WR_OK)
                found = lg_time_in_batch(plain->data, plain->len, from, ts, offset, timestamp);
            else { /* undecodable (read_msgs tells why): the batch is as close as we get */
                *offset = h.base_offset > from ? h.base_offset : from;
                *timestamp = h.max_timestamp;
                found = true;
            }
            wr_buf_unref(plain);
            if (found)
                return WR_OK;
        }
        pos += len;
    }
    return WR_ENOTFOUND;
}

static int lg_offset_for_time(void *state, uint32_t partition, int64_t ts_ms, uint64_t *offset,
                              int64_t *timestamp)
{
    struct lg_log *l = state;
    if (partition >= l->nparts)
        return WR_EINVAL;
    struct lg_part *part = &l->parts[partition];
    for (size_t i = 0; i < part->nsegs; i++) {
        struct ls_seg *s = &part->segs[i];
        if (s->max_ts < ts_ms)
            continue; /* every record of it is older */
        int64_t rel = ls_time_lookup(s, ts_ms);
        uint64_t from = rel < 0 ? s->base : s->base + (uint64_t)rel + 1;
        uint64_t pos = 0;
        if (ls_find(s, &l->reader, from, &pos, NULL) != WR_OK)
            return WR_EIO;
        int rc = lg_time_scan(l, s, pos, from, ts_ms, offset, timestamp);
        if (rc != WR_ENOTFOUND)
            return rc;
    }
    return WR_ENOTFOUND;
}

static int lg_sync(void *state, wr_storage_sync_cb *cb, void *data)
{
    struct lg_log *l = state;
    return wr_fsync_wait(l->fsync, cb, data);
}

/* ---- open and recovery ------------------------------------------------------------------ */

static int lg_mkdir(const char *path, struct wr_error *err)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return WR_OK;
    return wr_error_sys(err, WR_EIO, "log storage: cannot create %s", path);
}

static int lg_mkdirs(const char *dir, struct wr_error *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return wr_error_set(err, WR_EINVAL, "log storage: path too long: %s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        int rc = lg_mkdir(path, err);
        *p = '/';
        if (rc != WR_OK)
            return rc;
    }
    return lg_mkdir(path, err);
}

static int lg_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The base offsets of the segments in part->dir, sorted. */
static int lg_list(struct lg_part *part, uint64_t **bases, size_t *n, struct wr_error *err)
{
    DIR *d = opendir(part->dir);
    if (!d)
        return wr_error_sys(err, WR_EIO, "log storage: cannot list %s", part->dir);
    size_t cap = 0;
    *bases = NULL;
    *n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        if (strlen(name) != LS_NAME_DIGITS + 4 || strcmp(name + LS_NAME_DIGITS, ".log") != 0 ||
            strspn(name, "0123456789") != LS_NAME_DIGITS)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *grown = realloc(*bases, cap * sizeof *grown);
            if (!grown) {
                closedir(d);
                return wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
            }
            *bases = grown;
        }
        (*bases)[(*n)++] = strtoull(name, NULL, 10);
    }
    closedir(d);
    if (*n > 1)
        qsort(*bases, *n, sizeof **bases, lg_cmp_u64);
    return WR_OK;
}

/* Recovery's first pass: opens and checks every segment, changing nothing. *cut gets where
 * the last segment's good batches end (its size if whole), *torn whether its header is. */
static int lg_check_part(struct lg_log *l, struct lg_part *part, uint64_t *cut, bool *torn,
                         struct wr_error *err)
{
    uint64_t *bases = NULL;
    size_t n = 0;
    int rc = lg_list(part, &bases, &n, err);
    char path[PATH_MAX];
    for (size_t i = 0; rc == WR_OK && i < n; i++) {
        bool last = i + 1 == n;
        if ((rc = lg_segs_reserve(part)) != WR_OK) {
            rc = wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
            break;
        }
        struct ls_seg *s = &part->segs[part->nsegs++];
        ls_path(path, sizeof path, part->dir, bases[i], ".log");
        rc = ls_open(s, part->dir, bases[i], torn, err);
        if (rc == WR_OK && *torn && !last)
            rc = wr_error_set(err, WR_EPROTO, "log storage: %s is shorter than its header "
                              "and is not the last segment; nothing was changed", path);
        if (rc != WR_OK || *torn)
            break;
        struct wr_error why = {0};
        rc = ls_scan(s, part->dir, &l->reader, cut, &why, err);
        if (rc == WR_OK && *cut < s->size && !last)
            rc = wr_error_set(err, WR_EPROTO, "log storage: %s is damaged at position %llu "
                              "(%s) and is not the last segment; nothing was changed", path,
                              (unsigned long long)*cut, why.msg);
        if (rc == WR_OK && *cut < s->size)
            wr_plog(l->ctx, WR_LOG_WARN, "%s: %s at position %llu, the log is cut there "
                    "(%llu bytes dropped)", path, why.msg, (unsigned long long)*cut,
                    (unsigned long long)(s->size - *cut));
        if (rc == WR_OK && i > 0 && part->segs[part->nsegs - 2].next > s->base)
            rc = wr_error_set(err, WR_EPROTO, "log storage: %s starts at offset %llu, inside "
                              "the segment before it; nothing was changed", path,
                              (unsigned long long)s->base);
    }
    free(bases);
    return rc;
}

/* Recovery's second pass: cuts the last segment's tail, rebuilds indexes, maps them. */
static int lg_repair_part(struct lg_log *l, struct lg_part *part, uint64_t cut, bool torn,
                          struct wr_error *err)
{
    int rc = WR_OK;
    char path[PATH_MAX];
    if (part->nsegs > 0 && torn) {
        struct ls_seg *s = lg_active(part);
        ls_path(path, sizeof path, part->dir, s->base, ".log");
        wr_plog(l->ctx, WR_LOG_WARN, "%s: torn segment header (%llu bytes), rewritten", path,
                (unsigned long long)s->size);
        uint64_t base = s->base;
        ls_close(s);
        part->nsegs--;
        if ((rc = ls_create(s, part->dir, base, LG_INDEX_MAX, err)) != WR_OK)
            return rc;
        part->nsegs++;
    } else if (part->nsegs > 0 && cut < lg_active(part)->size) {
        rc = ls_truncate(lg_active(part), part->dir, cut, err);
        lg_active(part)->index_ok = false;
    }
    for (size_t i = 0; rc == WR_OK && i < part->nsegs; i++) {
        struct ls_seg *s = &part->segs[i];
        bool active = i + 1 == part->nsegs;
        if (s->idx.map) /* created just above */
            continue;
        if (!s->index_ok && !active)
            wr_plog(l->ctx, WR_LOG_WARN, "%s: the indexes of segment %020llu do not match "
                    "its log (missing, empty or stale): rebuilt", part->dir,
                    (unsigned long long)s->base);
        rc = ls_index_load(s, part->dir, &l->reader, active, LG_INDEX_MAX, l->index_interval,
                           err);
    }
    if (rc == WR_OK && part->nsegs == 0) {
        if ((rc = lg_segs_reserve(part)) != WR_OK)
            return wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
        rc = ls_create(&part->segs[0], part->dir, 0, LG_INDEX_MAX, err);
        if (rc == WR_OK)
            part->nsegs = 1;
        wr_fsync_dir_changed(l->fsync, part->dir_fd);
    }
    for (size_t i = 0; i < part->nsegs; i++)
        part->total += part->segs[i].size;
    if (rc == WR_OK)
        rc = wr_fsync_file_add(l->fsync, lg_active(part)->fd, err);
    return rc;
}

static int lg_options(struct lg_log *l, const struct wr_storage_args *args,
                      struct wr_error *err)
{
    const struct wr_table *opts = args->options;
    l->flush = args->durable ? WR_FSYNC_ALWAYS : WR_FSYNC_NEVER;
    l->flush_interval_ms = WR_FSYNC_DEFAULT_INTERVAL_MS;
    int rc = wr_fsync_options(opts, &l->flush, &l->flush_interval_ms, err);
    if (rc != WR_OK) {
        wr_error_wrap(err, "log storage");
        return rc;
    }
    l->segment_bytes = LG_DEFAULT_SEGMENT_BYTES;
    l->segment_ms = LG_DEFAULT_SEGMENT_MS;
    l->retention_ms = LG_DEFAULT_RETENTION_MS;
    l->retention_bytes = args->max_length_bytes >= 0 ? args->max_length_bytes : -1;
    l->retention_check_ms = LG_DEFAULT_RETENTION_CHECK_MS;
    int64_t v = 0;
    if (wr_table_get_int(opts, "segment_bytes", &v)) {
        if (v < LS_HEADER_SIZE + LB_HEADER_SIZE || v > INT32_MAX)
            return wr_error_set(err, WR_EINVAL, "log storage: segment_bytes must be between "
                                "%u and 2GiB", LS_HEADER_SIZE + LB_HEADER_SIZE);
        l->segment_bytes = v;
    }
    if (wr_table_get_int(opts, "segment_ms", &v))
        l->segment_ms = v > 0 ? v : 0;
    /* 0 (and -1, for callers that pass integers) mean no limit. */
    if (wr_table_get_int(opts, "retention_ms", &v))
        l->retention_ms = v > 0 ? v : -1;
    if (wr_table_get_int(opts, "retention_bytes", &v))
        l->retention_bytes = v > 0 ? v : -1;
    if (wr_table_get_int(opts, "retention_check_interval", &v)) {
        if (v <= 0)
            return wr_error_set(err, WR_EINVAL, "log storage: retention_check_interval must "
                                "be > 0");
        l->retention_check_ms = v;
    }
    l->index_interval = LG_DEFAULT_INDEX_INTERVAL;
    if (wr_table_get_int(opts, "index_interval_bytes", &v)) {
        if (v < 0 || v > INT32_MAX)
            return wr_error_set(err, WR_EINVAL, "log storage: index_interval_bytes must be "
                                "between 0 and 2GiB");
        l->index_interval = (uint32_t)v;
    }
    l->delete = true;
    const char *s = NULL;
    size_t len = 0;
    if (wr_table_get_str(opts, "cleanup_policy", &s, &len)) {
        bool del = len == 6 && memcmp(s, "delete", 6) == 0;
        bool comp = len == 7 && memcmp(s, "compact", 7) == 0;
        bool both = (len == 14 && memcmp(s, "compact,delete", 14) == 0) ||
                    (len == 14 && memcmp(s, "delete,compact", 14) == 0);
        if (!del && !comp && !both)
            return wr_error_set(err, WR_EINVAL, "log storage: cleanup_policy must be delete, "
                                "compact or compact,delete, not '%.*s'", (int)len, s);
        l->delete = del || both;
        l->compact = comp || both;
    }
    return WR_OK;
}

/* Opens partition p's directory, making it if it is missing; its segments come next from
 * lg_check_part and lg_repair_part. */
static int lg_part_init(struct lg_log *l, uint32_t p, struct wr_error *err)
{
    struct lg_part *part = &l->parts[p];
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%u", l->dir, p) >= (int)sizeof path)
        return wr_error_set(err, WR_EINVAL, "log storage: path too long: %s", l->dir);
    if (!(part->dir = strdup(path)))
        return wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    int rc = lg_mkdir(path, err);
    if (rc == WR_OK && (part->dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
        rc = wr_error_sys(err, WR_EIO, "log storage: cannot open %s", path);
    return rc;
}

static void lg_part_fini(struct lg_part *part)
{
    lg_rest_drop(&part->rest);
    for (size_t i = 0; i < part->nsegs; i++)
        ls_close(&part->segs[i]);
    free(part->segs);
    free(part->dir);
    if (part->dir_fd >= 0)
        close(part->dir_fd);
    *part = (struct lg_part){.dir_fd = -1};
}

/* Makes room for count partitions; the new entries have no directory yet. */
static int lg_parts_reserve(struct lg_log *l, uint32_t count, struct wr_error *err)
{
    struct lg_part *grown = realloc(l->parts, count * sizeof *grown);
    if (!grown)
        return wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    for (uint32_t p = l->nparts; p < count; p++)
        grown[p] = (struct lg_part){.dir_fd = -1};
    l->parts = grown;
    return WR_OK;
}

/* One past the highest partition directory in l->dir (named "0", "1", ... as lg_part_init
 * names them), or 0: a log that grew keeps its partitions whatever its queue declares. */
static int lg_parts_on_disk(const struct lg_log *l, uint32_t *count, struct wr_error *err)
{
    *count = 0;
    DIR *d = opendir(l->dir);
    if (!d)
        return wr_error_sys(err, WR_EIO, "log storage: cannot list %s", l->dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        if (len == 0 || len > 5 || strspn(name, "0123456789") != len ||
            (name[0] == '0' && len > 1))
            continue;
        uint32_t p = (uint32_t)strtoul(name, NULL, 10);
        struct stat st;
        if (p < LG_PARTITIONS_MAX && p >= *count && fstatat(dirfd(d), name, &st, 0) == 0 &&
            S_ISDIR(st.st_mode))
            *count = p + 1;
    }
    closedir(d);
    return WR_OK;
}

static void lg_close(void *state);

static int lg_open(struct wr_plugin_ctx *ctx, const struct wr_storage_args *args, void **state,
                   struct wr_error *err)
{
    uint32_t declared = args->partitions ? args->partitions : 1, found = 0;
    if (declared > LG_PARTITIONS_MAX)
        return wr_error_set(err, WR_EINVAL, "log storage: %u partitions is too many (at most "
                            "%u)", declared, LG_PARTITIONS_MAX);
    if (!args->dir)
        return wr_error_set(err, WR_EINVAL, "log storage: no directory given");
    struct lg_log *l = calloc(1, sizeof *l);
    if (!l)
        return wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    l->ctx = ctx;
    l->lp = wr_plugin_ctx_loop(ctx);
    l->dir = strdup(args->dir);
    int rc = l->dir ? lg_options(l, args, err)
                    : wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    if (rc == WR_OK)
        rc = lg_mkdirs(l->dir, err);
    if (rc == WR_OK)
        rc = lg_parts_on_disk(l, &found, err);
    uint32_t nparts = found > declared ? found : declared;
    if (rc == WR_OK && found > declared)
        wr_plog(ctx, WR_LOG_INFO, "%s: %u partitions on disk, more than the %u declared: all "
                "are kept (the log grew); declare %u to silence this", l->dir, found, declared,
                found);
    if (rc == WR_OK && (rc = lg_parts_reserve(l, nparts, err)) == WR_OK)
        l->nparts = nparts;
    for (uint32_t p = 0; rc == WR_OK && p < nparts; p++)
        rc = lg_part_init(l, p, err);
    if (rc == WR_OK)
        rc = wr_fsync_new(l->lp, l->flush, l->flush_interval_ms, &l->fsync, err);
    uint64_t *cuts = rc == WR_OK ? calloc(nparts, sizeof *cuts) : NULL;
    bool *torn = rc == WR_OK ? calloc(nparts, sizeof *torn) : NULL;
    if (rc == WR_OK && (!cuts || !torn))
        rc = wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    /* Every partition is checked before any is repaired: a failure changes nothing. */
    for (uint32_t p = 0; rc == WR_OK && p < nparts; p++)
        rc = lg_check_part(l, &l->parts[p], &cuts[p], &torn[p], err);
    for (uint32_t p = 0; rc == WR_OK && p < nparts; p++)
        rc = lg_repair_part(l, &l->parts[p], cuts[p], torn[p], err);
    free(cuts);
    free(torn);
    if (rc == WR_OK) {
        l->timer = wr_loop_timer_add(l->lp, (uint64_t)l->retention_check_ms, lg_tick, l);
        if (!l->timer)
            rc = wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    }
    if (rc != WR_OK) {
        lg_close(l);
        return rc;
    }
    *state = l;
    return WR_OK;
}

/* New partitions are made one at a time, each whole (directory, first segment, registered
 * for sync) before the next; a failure keeps the ones made and leaves the failed one's
 * directory, which the next open takes as an empty partition. */
static int lg_add_partitions(void *state, uint32_t count, uint32_t *partitions,
                             struct wr_error *err)
{
    struct lg_log *l = state;
    uint32_t had = l->nparts;
    int rc = WR_OK;
    if (count > LG_PARTITIONS_MAX)
        rc = wr_error_set(err, WR_EINVAL, "log storage: %u partitions is too many (at most "
                          "%u)", count, LG_PARTITIONS_MAX);
    else if (count > had)
        rc = lg_parts_reserve(l, count, err);
    for (uint32_t p = had; rc == WR_OK && p < count; p++) {
        struct lg_part *part = &l->parts[p];
        uint64_t cut = 0;
        bool torn = false;
        rc = lg_part_init(l, p, err);
        if (rc == WR_OK)
            rc = lg_check_part(l, part, &cut, &torn, err);
        if (rc == WR_OK)
            rc = lg_repair_part(l, part, cut, torn, err);
        if (rc != WR_OK)
            lg_part_fini(part);
        else
            l->nparts = p + 1;
    }
    if (l->nparts > had) { /* the queue's directory has new entries */
        int dir_fd = open(l->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0 && rc == WR_OK)
            rc = wr_error_sys(err, WR_EIO, "log storage: cannot open %s", l->dir);
        if (dir_fd >= 0) {
            wr_fsync_dir_changed(l->fsync, dir_fd);
            close(dir_fd);
        }
    }
    *partitions = l->nparts;
    return rc;
}

static void lg_close(void *state)
{
    struct lg_log *l = state;
    if (!l)
        return;
    if (l->timer)
        wr_loop_timer_del(l->lp, l->timer);
    wr_fsync_free(l->fsync); /* syncs what is left and calls back every pending sync() */
    for (uint32_t p = 0; p < l->nparts; p++)
        lg_part_fini(&l->parts[p]);
    free(l->parts);
    free(l->reader.buf);
    wr_bytes_free(&l->enc);
    free(l->dir);
    free(l);
}

static const struct wr_storage_ops ops = {
    .size = sizeof(struct wr_storage_ops),
    .model = WR_STORAGE_LOG,
    .open = lg_open,
    .close = lg_close,
    .sync = lg_sync,
    .append_batch = lg_append_batch,
    .append_msgs = lg_append_msgs,
    .read = lg_read,
    .read_msgs = lg_read_msgs,
    .offsets = lg_offsets,
    .offset_for_time = lg_offset_for_time,
    .add_partitions = lg_add_partitions,
};

static const struct wr_option options[] = {
    {"flush", WR_OPT_STRING, false,
     "always (fsync before sync() calls back, group commit), interval or never; default "
     "always for a durable queue, never otherwise"},
    {"flush_interval", WR_OPT_DURATION, false,
     "with flush: interval, how often the log is synced; default 200ms"},
    {"segment_bytes", WR_OPT_SIZE, false, "segment size before a roll; default 1GiB"},
    {"segment_ms", WR_OPT_DURATION, false,
     "roll a segment whose first batch is older than this; 0: never; default 7d"},
    {"retention_ms", WR_OPT_DURATION, false,
     "delete sealed segments whose newest record is older; 0: keep forever; default 7d"},
    {"retention_bytes", WR_OPT_SIZE, false,
     "delete the oldest sealed segments while a partition is larger; 0: no limit (default; "
     "x-max-length-bytes sets it)"},
    {"retention_check_interval", WR_OPT_DURATION, false,
     "how often retention and compaction run; default 5m"},
    {"index_interval_bytes", WR_OPT_SIZE, false,
     "bytes of batches between two offset index entries; default 4KiB"},
    {"cleanup_policy", WR_OPT_STRING, false,
     "delete (retention), compact (the latest record per key) or compact,delete; "
     "default delete"},
    {NULL, 0, false, NULL},
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_STORAGE, .name = "log", .version = WR_VERSION_STRING,
                 .ops = &ops, .options = options);
