/*
 * compact.c: log compaction (compact.h). A first pass maps each key of the sealed segments to
 * its latest offset; a second rewrites each segment that holds an older record of some key.
 *
 * Keys are remembered by two independent 64-bit hashes rather than by their bytes, as Kafka's
 * cleaner remembers them by a digest: memory stays at 24 bytes a key whatever the keys'
 * size. A rewritten batch keeps its header (base offset, last offset delta, timestamps,
 * producer fields) and the surviving records byte for byte, so their offset and timestamp
 * deltas stay valid; only batch_length, record_count and the CRC change, as Kafka's v2
 * cleaner does. A batch with no survivor is dropped. Records without a key, and batches that
 * are compressed or transaction markers, are kept as they are. Tombstones (null values) are
 * kept like any latest record.
 */
#include "compact.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "batch.h"

#define LC_CRC_AT 17u
#define LC_ATTRIBUTES_AT 21u
#define LC_COUNT_AT 57u

struct lc_slot {
    uint64_t h1;
    uint64_t h2;
    uint64_t offset_1;          /* the latest offset + 1; 0: an empty slot */
};

struct lc_map {
    struct lc_slot *slots;
    size_t cap;                 /* a power of two */
    size_t used;
};

static void lc_hash(const uint8_t *p, int32_t len, uint64_t *h1, uint64_t *h2)
{
    uint64_t a = 0xcbf29ce484222325ull, b = 0x9e3779b97f4a7c15ull ^ (uint64_t)len;
    for (int32_t i = 0; i < len; i++) {
        a = (a ^ p[i]) * 0x100000001b3ull;
        b = (b ^ p[i]) * 0xff51afd7ed558ccdull;
        b ^= b >> 29;
    }
    *h1 = a;
    *h2 = b;
}

static struct lc_slot *lc_find(struct lc_map *m, uint64_t h1, uint64_t h2)
{
    for (size_t i = (size_t)h1 & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct lc_slot *s = &m->slots[i];
        if (!s->offset_1 || (s->h1 == h1 && s->h2 == h2))
            return s;
    }
}

static int lc_put(struct lc_map *m, uint64_t h1, uint64_t h2, uint64_t offset)
{
    if ((m->used + 1) * 10 > m->cap * 7) {
        size_t cap = m->cap ? m->cap * 2 : 1024;
        struct lc_slot *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return WR_ENOMEM;
        struct lc_map grown = {slots, cap, m->used};
        for (size_t i = 0; i < m->cap; i++)
            if (m->slots[i].offset_1)
                *lc_find(&grown, m->slots[i].h1, m->slots[i].h2) = m->slots[i];
        free(m->slots);
        *m = grown;
    }
    struct lc_slot *s = lc_find(m, h1, h2);
    if (!s->offset_1)
        m->used++;
    *s = (struct lc_slot){h1, h2, offset + 1};
    return WR_OK;
}

/* Whether record r survives: no key, or the latest of its key. */
static bool lc_keep(struct lc_map *m, const struct lb_record *r)
{
    if (!r->key)
        return true;
    uint64_t h1, h2;
    lc_hash(r->key, r->key_len, &h1, &h2);
    struct lc_slot *s = lc_find(m, h1, h2);
    return !s->offset_1 || s->offset_1 - 1 <= r->offset;
}

static bool lc_readable(const uint8_t *batch)
{
    uint16_t attributes = (uint16_t)(batch[LC_ATTRIBUTES_AT] << 8 | batch[LC_ATTRIBUTES_AT + 1]);
    return !(attributes & (LB_ATTR_COMPRESSION | LB_ATTR_CONTROL));
}

/* Calls each batch of s in turn; stops at the first error. */
typedef int lc_batch_fn(void *data, const uint8_t *batch, size_t len);

static int lc_each(struct ls_seg *s, struct ls_reader *r, lc_batch_fn *fn, void *data)
{
    ls_reader_reset(r, s->fd);
    bool ioerr = false;
    for (uint64_t pos = LS_HEADER_SIZE; pos < s->size;) {
        const uint8_t *p = ls_reader_at(r, pos, LB_LOG_OVERHEAD, &ioerr);
        size_t len = p ? LB_LOG_OVERHEAD + ls_be32(p + LB_LENGTH_OFFSET) : 0;
        if (!p || !(p = ls_reader_at(r, pos, len, &ioerr)))
            return WR_EIO;
        int rc = fn(data, p, len);
        if (rc != WR_OK)
            return rc;
        pos += len;
    }
    return WR_OK;
}

static int lc_map_batch(void *data, const uint8_t *batch, size_t len)
{
    struct lc_map *m = data;
    if (!lc_readable(batch))
        return WR_OK;
    const uint8_t *pos = NULL;
    struct lb_record rec;
    while (lb_record_next(batch, len, &pos, &rec, NULL) == 1)
        if (rec.key) {
            uint64_t h1, h2;
            lc_hash(rec.key, rec.key_len, &h1, &h2);
            if (lc_put(m, h1, h2, rec.offset) != WR_OK)
                return WR_ENOMEM;
        }
    return WR_OK;
}

/* Counts the records a batch loses, and with out set, appends what survives of it. */
struct lc_pass {
    struct lc_map *map;
    uint64_t dropped;
    struct wr_bytes *out;
};

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static int lc_filter_batch(void *data, const uint8_t *batch, size_t len)
{
    struct lc_pass *pass = data;
    size_t start = pass->out ? pass->out->len : 0;
    uint8_t *head = pass->out && lc_readable(batch) ? wr_bytes_grow(pass->out, LB_HEADER_SIZE)
                                                    : NULL;
    if (head)
        memcpy(head, batch, LB_HEADER_SIZE);
    uint32_t kept = 0, count = 0;
    const uint8_t *pos = NULL, *rec_start = batch + LB_HEADER_SIZE;
    struct lb_record rec;
    while (lc_readable(batch) && lb_record_next(batch, len, &pos, &rec, NULL) == 1) {
        count++;
        if (lc_keep(pass->map, &rec)) {
            kept++;
            uint8_t *p = head ? wr_bytes_grow(pass->out, (size_t)(rec.end - rec_start)) : NULL;
            if (p)
                memcpy(p, rec_start, (size_t)(rec.end - rec_start));
        } else {
            pass->dropped++;
        }
        rec_start = rec.end;
    }
    if (!pass->out)
        return WR_OK;
    if (pass->out->oom)
        return WR_ENOMEM;
    if (!head || kept == count) { /* whole: copied as it is */
        pass->out->len = start;
        uint8_t *p = wr_bytes_grow(pass->out, len);
        if (!p)
            return WR_ENOMEM;
        memcpy(p, batch, len);
    } else if (kept == 0) {
        pass->out->len = start;
    } else {
        uint8_t *b = pass->out->p + start;
        size_t blen = pass->out->len - start;
        put_be32(b + LB_LENGTH_OFFSET, (uint32_t)(blen - LB_LOG_OVERHEAD));
        put_be32(b + LC_COUNT_AT, kept);
        put_be32(b + LC_CRC_AT, lb_crc32c(0, b + LC_ATTRIBUTES_AT, blen - LC_ATTRIBUTES_AT));
    }
    return WR_OK;
}

/* Writes the survivors of segment s to its .cleaned file and renames it over the .log. */
static int lc_rewrite(struct lc_target *t, struct ls_seg *s, struct ls_reader *r,
                      struct lc_map *map, uint32_t interval, struct wr_error *err)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    ls_path(path, sizeof path, t->dir, s->base, ".log");
    ls_path(tmp, sizeof tmp, t->dir, s->base, ".log.cleaned");
    struct wr_bytes out = {0};
    uint8_t *header = wr_bytes_grow(&out, LS_HEADER_SIZE);
    if (header && pread(s->fd, header, LS_HEADER_SIZE, 0) != LS_HEADER_SIZE) {
        wr_bytes_free(&out);
        return wr_error_sys(err, WR_EIO, "log storage: cannot read %s", path);
    }
    struct lc_pass pass = {map, 0, &out};
    int rc = header ? lc_each(s, r, lc_filter_batch, &pass) : WR_ENOMEM;
    if (rc != WR_OK) {
        wr_bytes_free(&out);
        return rc == WR_ENOMEM ? wr_error_set(err, rc, "log storage: out of memory")
                               : wr_error_sys(err, rc, "log storage: cannot read %s", path);
    }
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0;
    for (size_t done = 0; ok && done < out.len;) {
        ssize_t n = write(fd, out.p + done, out.len - done);
        if (n < 0 && errno == EINTR)
            continue;
        ok = n > 0;
        done += ok ? (size_t)n : 0;
    }
    ok = ok && fdatasync(fd) == 0 && rename(tmp, path) == 0;
    wr_bytes_free(&out);
    if (!ok) {
        rc = wr_error_sys(err, WR_EIO, "log storage: cannot write %s", tmp);
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return rc;
    }
    close(fd);
    /* The old file is gone from the directory; reopen the new one under the same name. */
    uint64_t next = s->next, old_size = s->size;
    bool torn = false;
    ls_close(s);
    rc = ls_open(s, t->dir, s->base, &torn, err);
    if (rc == WR_OK) {
        s->next = next;
        s->index_ok = false;
        rc = ls_index_load(s, t->dir, r, false, 0, interval, err);
    }
    *t->total = *t->total - old_size + s->size;
    return rc;
}

int lc_compact(struct lc_target *t, struct ls_reader *r, struct wr_fsync *fs,
               uint32_t interval, const struct wr_plugin_ctx *ctx, struct wr_error *err)
{
    struct lc_map map = {0};
    int rc = WR_OK;
    for (size_t i = 0; rc == WR_OK && i < t->nsegs; i++)
        rc = lc_each(&t->segs[i], r, lc_map_batch, &map);
    for (size_t i = 0; rc == WR_OK && i < t->nsegs; i++) {
        struct lc_pass count = {&map, 0, NULL};
        rc = lc_each(&t->segs[i], r, lc_filter_batch, &count);
        if (rc != WR_OK || count.dropped == 0)
            continue;
        rc = lc_rewrite(t, &t->segs[i], r, &map, interval, err);
        if (rc == WR_OK) {
            wr_fsync_dir_changed(fs, t->dir_fd);
            wr_plog(ctx, WR_LOG_INFO, "%s: compaction dropped %llu records of segment %020llu",
                    t->dir, (unsigned long long)count.dropped,
                    (unsigned long long)t->segs[i].base);
        }
    }
    free(map.slots);
    if (rc == WR_EIO && !err->msg[0])
        wr_error_sys(err, WR_EIO, "log storage: cannot read a segment of %s", t->dir);
    else if (rc == WR_ENOMEM && !err->msg[0])
        wr_error_set(err, WR_ENOMEM, "log storage: out of memory compacting %s", t->dir);
    return rc;
}
