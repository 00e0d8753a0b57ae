/*
 * segment.c: one segment of a log partition, its .log file and its two indexes (segment.h).
 *
 * The offset index maps the base offset of every batch that starts at least interval bytes
 * after the previous indexed one to its position; a lookup takes the last entry at or below
 * the offset wanted and walks batch headers from there. The time index gets an entry at the
 * same moments: the largest timestamp so far and the last offset of the batch that brought
 * the log to it, so every record at or before that offset is no newer than that timestamp.
 * Both files start with a magic and a version; a reader checks an index against the log
 * before trusting it, and rebuilds it otherwise.
 */
#include "segment.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LS_READ_CHUNK (256u << 10)

uint64_t ls_be64(const uint8_t *p)
{
    return (uint64_t)ls_be32(p) << 32 | ls_be32(p + 4);
}

uint32_t ls_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ls_path(char *out, size_t cap, const char *dir, uint64_t base, const char *suffix)
{
    snprintf(out, cap, "%s/%020llu%s", dir, (unsigned long long)base, suffix);
}

static int write_all_at(int fd, const uint8_t *p, size_t len, uint64_t at)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)at);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
        at += (uint64_t)n;
    }
    return 0;
}

/* ---- the reader ------------------------------------------------------------------------- */

void ls_reader_reset(struct ls_reader *r, int fd)
{
    r->fd = fd;
    r->at = 0;
    r->len = 0;
}

const uint8_t *ls_reader_at(struct ls_reader *r, uint64_t pos, size_t n, bool *ioerr)
{
    if (pos >= r->at && pos + n <= r->at + r->len)
        return r->buf + (pos - r->at);
    size_t want = n > LS_READ_CHUNK ? n : LS_READ_CHUNK;
    if (want > r->cap) {
        uint8_t *grown = realloc(r->buf, want);
        if (!grown) {
            *ioerr = true;
            errno = ENOMEM;
            return NULL;
        }
        r->buf = grown;
        r->cap = want;
    }
    r->at = pos;
    r->len = 0;
    while (r->len < n) {
        ssize_t got = pread(r->fd, r->buf + r->len, r->cap - r->len, (off_t)(pos + r->len));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            *ioerr = true;
        if (got <= 0)
            return NULL;
        r->len += (size_t)got;
    }
    return r->buf;
}

/* ---- indexes ---------------------------------------------------------------------------- */

static const char *index_magic(bool time)
{
    return time ? "WRTI" : "WRIX";
}

static void index_header(uint8_t *p, bool time)
{
    memcpy(p, index_magic(time), 4);
    put_be16(p + 4, LS_VERSION);
    put_be16(p + 6, 0);
}

static bool index_header_ok(const uint8_t *p, size_t len, bool time)
{
    return len >= LS_INDEX_HEADER && memcmp(p, index_magic(time), 4) == 0 &&
           p[4] == 0 && p[5] == LS_VERSION;
}

/* Writes bytes as the index file (preallocated to map_len and kept open when active, else
 * exact, mapped read-only and closed). */
static int index_write(struct ls_index *ix, const char *path, const struct wr_bytes *bytes,
                       bool active, size_t map_len, struct wr_error *err)
{
    ix->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (ix->fd < 0)
        return wr_error_sys(err, WR_EIO, "log storage: cannot create %s", path);
    if (!active)
        map_len = bytes->len;
    else if (map_len < bytes->len)
        map_len = bytes->len;
    int prot = active ? PROT_READ | PROT_WRITE : PROT_READ;
    if ((active && ftruncate(ix->fd, (off_t)map_len) != 0) ||
        (!active && write_all_at(ix->fd, bytes->p, bytes->len, 0) != 0))
        goto fail;
    ix->map = mmap(NULL, map_len, prot, MAP_SHARED, ix->fd, 0);
    if (ix->map == MAP_FAILED) {
        ix->map = NULL;
        goto fail;
    }
    ix->map_len = map_len;
    ix->len = bytes->len;
    if (active) {
        memcpy(ix->map, bytes->p, bytes->len);
    } else {
        close(ix->fd);
        ix->fd = -1;
    }
    return WR_OK;
fail:;
    int rc = wr_error_sys(err, WR_EIO, "log storage: cannot write %s", path);
    close(ix->fd);
    ix->fd = -1;
    return rc;
}

/* Maps an existing, checked index read-only. */
static int index_map(struct ls_index *ix, const char *path, struct wr_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int rc = wr_error_sys(err, WR_EIO, "log storage: cannot open %s", path);
        if (fd >= 0)
            close(fd);
        return rc;
    }
    ix->map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (ix->map == MAP_FAILED) {
        ix->map = NULL;
        return wr_error_sys(err, WR_EIO, "log storage: cannot map %s", path);
    }
    ix->fd = -1;
    ix->map_len = ix->len = (size_t)st.st_size;
    return WR_OK;
}

static void index_close(struct ls_index *ix)
{
    if (ix->fd >= 0) {
        if (ftruncate(ix->fd, (off_t)ix->len) != 0) {
            /* a longer file is still a valid index up to its zeros: rebuilt at open */
        }
        close(ix->fd);
    }
    if (ix->map)
        munmap(ix->map, ix->map_len);
    *ix = (struct ls_index){.fd = -1};
}

/* Reads a whole index file into memory for checking; a missing file reads as empty. */
static int slurp(const char *path, struct wr_bytes *out, struct wr_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? WR_OK : wr_error_sys(err, WR_EIO, "log storage: cannot "
                                                      "open %s", path);
    struct stat st;
    int rc = WR_OK;
    uint8_t *p = NULL;
    if (fstat(fd, &st) != 0)
        rc = wr_error_sys(err, WR_EIO, "log storage: cannot stat %s", path);
    else if (st.st_size > 0 && !(p = wr_bytes_grow(out, (size_t)st.st_size)))
        rc = wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    else if (p && pread(fd, p, (size_t)st.st_size, 0) != st.st_size)
        rc = wr_error_sys(err, WR_EIO, "log storage: cannot read %s", path);
    close(fd);
    return rc;
}

/* ---- segments --------------------------------------------------------------------------- */

static void seg_init(struct ls_seg *s, uint64_t base)
{
    *s = (struct ls_seg){
        .base = base, .next = base, .size = LS_HEADER_SIZE, .fd = -1, .max_ts = -1,
        .first_ts = -1, .mtime_ms = wall_ms(), .idx = {.fd = -1}, .tix = {.fd = -1},
    };
}

int ls_create(struct ls_seg *s, const char *dir, uint64_t base, size_t index_max,
              struct wr_error *err)
{
    char path[PATH_MAX];
    seg_init(s, base);
    ls_path(path, sizeof path, dir, base, ".log");
    s->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (s->fd < 0)
        return wr_error_sys(err, WR_EIO, "log storage: cannot create %s", path);
    uint8_t header[LS_HEADER_SIZE];
    memcpy(header, LS_MAGIC, 4);
    put_be16(header + 4, LS_VERSION);
    put_be16(header + 6, 0);
    put_be64(header + 8, base);
    if (write_all_at(s->fd, header, sizeof header, 0) != 0) {
        int rc = wr_error_sys(err, WR_EIO, "log storage: cannot write %s", path);
        ls_close(s);
        return rc;
    }
    uint8_t ih[LS_INDEX_HEADER];
    struct wr_bytes bytes = {ih, sizeof ih, sizeof ih, false};
    index_header(ih, false);
    ls_path(path, sizeof path, dir, base, ".index");
    int rc = index_write(&s->idx, path, &bytes, true, index_max, err);
    if (rc == WR_OK) {
        index_header(ih, true);
        ls_path(path, sizeof path, dir, base, ".timeindex");
        rc = index_write(&s->tix, path, &bytes, true, index_max, err);
    }
    if (rc != WR_OK)
        ls_close(s);
    return rc;
}

int ls_open(struct ls_seg *s, const char *dir, uint64_t base, bool *torn,
            struct wr_error *err)
{
    char path[PATH_MAX];
    seg_init(s, base);
    *torn = false;
    ls_path(path, sizeof path, dir, base, ".log");
    s->fd = open(path, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (s->fd < 0 || fstat(s->fd, &st) != 0)
        return wr_error_sys(err, WR_EIO, "log storage: cannot open %s", path);
    s->size = (uint64_t)st.st_size;
    s->mtime_ms = (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
    uint8_t h[LS_HEADER_SIZE] = {0};
    ssize_t got = pread(s->fd, h, sizeof h, 0);
    if (got < 0)
        return wr_error_sys(err, WR_EIO, "log storage: cannot read %s", path);
    /* Judge the magic on whatever there is, so a foreign file is never taken for a torn one. */
    if (memcmp(h, LS_MAGIC, (size_t)got < 4 ? (size_t)got : 4) != 0)
        return wr_error_set(err, WR_EPROTO, "log storage: %s is not a warren log segment "
                            "(bad magic); nothing was changed", path);
    if ((size_t)got < sizeof h) {
        *torn = true;
        return WR_OK;
    }
    unsigned version = (unsigned)h[4] << 8 | h[5];
    if (version > LS_VERSION)
        return wr_error_set(err, WR_EPROTO, "log storage: %s has format version %u, newer "
                            "than this warren reads (%u); nothing was changed", path, version,
                            LS_VERSION);
    if (version == 0 || ls_be64(h + 8) != base)
        return wr_error_set(err, WR_EPROTO, "log storage: %s: bad header (version %u, base "
                            "offset %llu); nothing was changed", path, version,
                            (unsigned long long)ls_be64(h + 8));
    return WR_OK;
}

/* Where a check of an existing index against the batches stands. */
struct index_check {
    const uint8_t *p;           /* the entries */
    size_t count;
    size_t at;
    bool ok;
};

static void check_start(struct index_check *c, const struct wr_bytes *file, bool time)
{
    size_t entry = time ? LS_TIME_ENTRY : LS_INDEX_ENTRY;
    c->ok = index_header_ok(file->p, file->len, time) &&
            (file->len - LS_INDEX_HEADER) % entry == 0;
    c->p = c->ok ? file->p + LS_INDEX_HEADER : NULL;
    c->count = c->ok ? (file->len - LS_INDEX_HEADER) / entry : 0;
    c->at = 0;
}

int ls_scan(struct ls_seg *s, const char *dir, struct ls_reader *r, uint64_t *bad_pos,
            struct wr_error *why, struct wr_error *err)
{
    char path[PATH_MAX];
    struct wr_bytes files[2] = {{0}, {0}};
    ls_path(path, sizeof path, dir, s->base, ".index");
    int rc = slurp(path, &files[0], err);
    ls_path(path, sizeof path, dir, s->base, ".timeindex");
    if (rc == WR_OK)
        rc = slurp(path, &files[1], err);
    struct index_check ic, tc;
    check_start(&ic, &files[0], false);
    check_start(&tc, &files[1], true);
    ls_reader_reset(r, s->fd);
    bool ioerr = false;
    uint64_t pos = LS_HEADER_SIZE;
    while (rc == WR_OK && pos < s->size) {
        const uint8_t *p = ls_reader_at(r, pos, LB_LOG_OVERHEAD, &ioerr);
        if (!p) {
            wr_error_set(why, WR_EPROTO, "a torn batch header");
            break;
        }
        uint64_t total = LB_LOG_OVERHEAD + (uint64_t)ls_be32(p + LB_LENGTH_OFFSET);
        if (total < LB_HEADER_SIZE || total > s->size - pos) {
            wr_error_set(why, WR_EPROTO, "a batch of %llu bytes that does not fit the file",
                         (unsigned long long)total);
            break;
        }
        struct lb_header h;
        p = ls_reader_at(r, pos, (size_t)total, &ioerr);
        if (!p || lb_check(p, (size_t)total, &h, why) != WR_OK)
            break;
        uint64_t last = h.base_offset + h.last_offset_delta;
        if (h.base_offset < s->next || last - s->base > UINT32_MAX) {
            wr_error_set(why, WR_EPROTO, "batch offset %llu out of order (expected >= %llu)",
                         (unsigned long long)h.base_offset, (unsigned long long)s->next);
            break;
        }
        while (ic.ok && ic.at < ic.count && ls_be32(ic.p + ic.at * 8 + 4) < pos)
            ic.ok = false; /* an entry inside a batch */
        if (ic.ok && ic.at < ic.count && ls_be32(ic.p + ic.at * 8 + 4) == pos) {
            ic.ok = ls_be32(ic.p + ic.at * 8) == h.base_offset - s->base;
            ic.at++;
        }
        if (h.max_timestamp > s->max_ts)
            s->max_ts = h.max_timestamp;
        if (s->first_ts < 0 && pos == LS_HEADER_SIZE)
            s->first_ts = h.max_timestamp;
        const uint8_t *te = tc.ok ? tc.p + tc.at * LS_TIME_ENTRY : NULL;
        if (te && tc.at < tc.count && ls_be32(te + 8) < last - s->base)
            tc.ok = false;
        if (tc.ok && tc.at < tc.count && ls_be32(te + 8) == last - s->base) {
            tc.ok = (int64_t)ls_be64(te) == s->max_ts;
            tc.at++;
        }
        s->next = last + 1;
        pos += total;
    }
    wr_bytes_free(&files[0]);
    wr_bytes_free(&files[1]);
    if (rc == WR_OK && ioerr)
        rc = wr_error_sys(err, WR_EIO, "log storage: cannot read %s",
                          (ls_path(path, sizeof path, dir, s->base, ".log"), path));
    *bad_pos = pos;
    s->index_ok = ic.ok && ic.at == ic.count && tc.ok && tc.at == tc.count;
    return rc;
}

int ls_truncate(struct ls_seg *s, const char *dir, uint64_t pos, struct wr_error *err)
{
    if (ftruncate(s->fd, (off_t)pos) == 0) {
        s->size = pos;
        return WR_OK;
    }
    char path[PATH_MAX];
    ls_path(path, sizeof path, dir, s->base, ".log");
    return wr_error_sys(err, WR_EIO, "log storage: cannot truncate %s", path);
}

/* The index entries due before the batch at pos with header h (the append rule). */
static void index_entries(struct ls_seg *s, uint64_t pos, const struct lb_header *h,
                          uint64_t total, uint32_t interval, struct wr_bytes *ib,
                          struct wr_bytes *tb)
{
    int64_t last_ts = tb->len > LS_INDEX_HEADER ? (int64_t)ls_be64(tb->p + tb->len - 12) : -1;
    if (h->max_timestamp > s->max_ts)
        s->max_ts = h->max_timestamp;
    if (s->since_index >= interval) {
        uint8_t *e = wr_bytes_grow(ib, LS_INDEX_ENTRY);
        if (e) {
            put_be32(e, (uint32_t)(h->base_offset - s->base));
            put_be32(e + 4, (uint32_t)pos);
        }
        if (s->max_ts > last_ts && (e = wr_bytes_grow(tb, LS_TIME_ENTRY))) {
            put_be64(e, (uint64_t)s->max_ts);
            put_be32(e + 8, (uint32_t)(h->base_offset + h->last_offset_delta - s->base));
        }
        s->since_index = 0;
    }
    s->since_index += total;
}

int ls_index_load(struct ls_seg *s, const char *dir, struct ls_reader *r, bool active,
                  size_t index_max, uint32_t interval, struct wr_error *err)
{
    char path[PATH_MAX], tpath[PATH_MAX];
    ls_path(path, sizeof path, dir, s->base, ".index");
    ls_path(tpath, sizeof tpath, dir, s->base, ".timeindex");
    if (s->index_ok && !active) {
        int rc = index_map(&s->idx, path, err);
        return rc == WR_OK ? index_map(&s->tix, tpath, err) : rc;
    }
    struct wr_bytes ib = {0}, tb = {0};
    uint8_t *h0 = wr_bytes_grow(&ib, LS_INDEX_HEADER), *h1 = wr_bytes_grow(&tb, LS_INDEX_HEADER);
    if (h0 && h1) {
        index_header(h0, false);
        index_header(h1, true);
    }
    ls_reader_reset(r, s->fd);
    bool ioerr = false;
    int64_t max_ts = s->max_ts;
    s->max_ts = -1;
    s->since_index = 0;
    for (uint64_t pos = LS_HEADER_SIZE; pos < s->size;) {
        const uint8_t *p = ls_reader_at(r, pos, LB_HEADER_SIZE, &ioerr);
        struct lb_header h;
        if (!p || !lb_header_read(p, LB_HEADER_SIZE, &h)) {
            ioerr = true;
            break;
        }
        uint64_t total = LB_LOG_OVERHEAD + (uint64_t)h.batch_length;
        index_entries(s, pos, &h, total, interval, &ib, &tb);
        pos += total;
    }
    if (max_ts > s->max_ts)
        s->max_ts = max_ts;
    int rc = WR_OK;
    if (ib.oom || tb.oom)
        rc = wr_error_set(err, WR_ENOMEM, "log storage: out of memory");
    else if (ioerr)
        rc = wr_error_sys(err, WR_EIO, "log storage: cannot read the log of %s", path);
    if (rc == WR_OK)
        rc = index_write(&s->idx, path, &ib, active, index_max, err);
    if (rc == WR_OK)
        rc = index_write(&s->tix, tpath, &tb, active, index_max, err);
    wr_bytes_free(&ib);
    wr_bytes_free(&tb);
    return rc;
}

bool ls_full(const struct ls_seg *s, size_t len, uint64_t count)
{
    return s->size + len > UINT32_MAX || s->next + count - s->base > UINT32_MAX ||
           s->idx.len + LS_INDEX_ENTRY > s->idx.map_len ||
           s->tix.len + LS_TIME_ENTRY > s->tix.map_len;
}

int ls_append(struct ls_seg *s, const char *dir, const uint8_t *batch, size_t len,
              const struct lb_header *h, uint32_t interval, int64_t now_ms,
              struct wr_error *err)
{
    uint64_t pos = s->size;
    if (write_all_at(s->fd, batch, len, pos) != 0) {
        char path[PATH_MAX];
        ls_path(path, sizeof path, dir, s->base, ".log");
        int rc = wr_error_sys(err, WR_EIO, "log storage: cannot write %s", path);
        if (ftruncate(s->fd, (off_t)pos) != 0) /* a torn batch would be cut at recovery */
            s->size = pos;
        return rc;
    }
    if (pos == LS_HEADER_SIZE)
        s->first_ts = h->max_timestamp;
    /* Entries go straight into the mapped files: a wr_bytes over their free room. */
    struct wr_bytes ib = {s->idx.map, s->idx.len, s->idx.map_len, false};
    struct wr_bytes tb = {s->tix.map, s->tix.len, s->tix.map_len, false};
    index_entries(s, pos, h, len, interval, &ib, &tb);
    s->idx.len = ib.len;
    s->tix.len = tb.len;
    s->size = pos + len;
    s->next = h->base_offset + h->last_offset_delta + 1;
    s->mtime_ms = now_ms;
    return WR_OK;
}

static void index_seal(struct ls_index *ix, struct wr_fsync *fs)
{
    if (ix->fd < 0)
        return;
    if (ftruncate(ix->fd, (off_t)ix->len) == 0) {
        void *map = mmap(NULL, ix->len, PROT_READ, MAP_SHARED, ix->fd, 0);
        if (map != MAP_FAILED) {
            munmap(ix->map, ix->map_len);
            ix->map = map;
            ix->map_len = ix->len;
        }
    }
    wr_fsync_file_retire(fs, ix->fd);
    close(ix->fd);
    ix->fd = -1;
}

void ls_seal(struct ls_seg *s, struct wr_fsync *fs)
{
    index_seal(&s->idx, fs);
    index_seal(&s->tix, fs);
    wr_fsync_file_retire(fs, s->fd);
}

void ls_close(struct ls_seg *s)
{
    index_close(&s->idx);
    index_close(&s->tix);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

void ls_unlink(const char *dir, uint64_t base, const struct wr_plugin_ctx *ctx)
{
    static const char *const suffixes[] = {".log", ".index", ".timeindex", ".log.cleaned"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        ls_path(path, sizeof path, dir, base, suffixes[i]);
        if (unlink(path) != 0 && errno != ENOENT)
            wr_plog(ctx, WR_LOG_WARN, "cannot delete %s: %s", path, strerror(errno));
    }
}

int ls_find(struct ls_seg *s, struct ls_reader *r, uint64_t offset, uint64_t *pos,
            struct wr_error *err)
{
    uint64_t at = LS_HEADER_SIZE;
    if (offset > s->base) {
        uint64_t rel = offset - s->base;
        size_t lo = 0, hi = (s->idx.len - LS_INDEX_HEADER) / LS_INDEX_ENTRY;
        const uint8_t *e = s->idx.map + LS_INDEX_HEADER;
        while (lo < hi) { /* the first entry above rel */
            size_t mid = lo + (hi - lo) / 2;
            if (ls_be32(e + mid * LS_INDEX_ENTRY) <= rel)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo > 0)
            at = ls_be32(e + (lo - 1) * LS_INDEX_ENTRY + 4);
    }
    ls_reader_reset(r, s->fd);
    bool ioerr = false;
    while (at < s->size) {
        const uint8_t *p = ls_reader_at(r, at, LS_BATCH_PEEK, &ioerr);
        if (!p)
            return wr_error_sys(err, WR_EIO, "log storage: cannot read segment %llu",
                                (unsigned long long)s->base);
        if (ls_be64(p) + ls_be32(p + LS_LAST_DELTA_AT) >= offset)
            break;
        at += LB_LOG_OVERHEAD + ls_be32(p + LB_LENGTH_OFFSET);
    }
    *pos = at < s->size ? at : s->size;
    return WR_OK;
}

int ls_range(struct ls_seg *s, struct ls_reader *r, uint64_t pos, size_t max_bytes,
             uint64_t *len, uint64_t *base, struct wr_error *err)
{
    *len = 0;
    if (pos >= s->size)
        return WR_OK;
    bool ioerr = false;
    uint64_t at = pos;
    while (at < s->size) {
        const uint8_t *p = ls_reader_at(r, at, LB_LOG_OVERHEAD, &ioerr);
        if (!p)
            return wr_error_sys(err, WR_EIO, "log storage: cannot read segment %llu",
                                (unsigned long long)s->base);
        uint64_t total = LB_LOG_OVERHEAD + ls_be32(p + LB_LENGTH_OFFSET);
        if (at == pos)
            *base = ls_be64(p);
        else if (at - pos + total > max_bytes)
            break;
        at += total;
    }
    *len = at - pos;
    return WR_OK;
}

int64_t ls_time_lookup(const struct ls_seg *s, int64_t ts)
{
    size_t lo = 0, hi = (s->tix.len - LS_INDEX_HEADER) / LS_TIME_ENTRY;
    const uint8_t *e = s->tix.map + LS_INDEX_HEADER;
    while (lo < hi) { /* the first entry not older than ts */
        size_t mid = lo + (hi - lo) / 2;
        if ((int64_t)ls_be64(e + mid * LS_TIME_ENTRY) < ts)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == 0 ? -1 : (int64_t)ls_be32(e + (lo - 1) * LS_TIME_ENTRY + 8);
}
