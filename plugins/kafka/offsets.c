/*
 * offsets.c: the committed offsets of the consumer groups (offsets.h), in memory and in
 * <data_dir>/kafka-offsets/offsets.log.
 *
 * The file follows the discipline of warren's other durable files (docs/storage.md):
 * integers little-endian, str as in the shared encodings,
 *
 *     file     = "WRKO" u32 version(=1) record*
 *     record   = u32 len  u32 len_crc  u32 crc  payload[len]
 *                len_crc: CRC-32 of len's 4 bytes; crc: CRC-32 of the payload
 *     payload  = u8 1 (commit)  str group  str topic  u32 partition  u64 offset
 *                               u32 leader_epoch  str metadata (absent: null)
 *              | u8 2 (delete)  str group     (every offset of the group goes)
 *
 * A later commit of the same partition replaces an earlier one. At the first record that is
 * not intact the rest of the file is searched for an intact one: none means a torn last
 * write, dropped with a warning; one means damage in the middle, and opening stops with an
 * error naming both offsets, the file left as it is. So does a wrong magic or version, or an
 * intact record that does not decode. After replay, and while running once the file is more
 * than twice what a compacted one would be plus 1 MiB, it is rewritten compacted: a temporary
 * file, fdatasync, rename, fsync of the directory.
 */
#include "offsets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIR_NAME "kafka-offsets"
#define FILE_NAME "offsets.log"
#define MAGIC "WRKO"
#define VERSION 1u
#define FILE_HEAD 8                /* magic, u32 version */
#define REC_HEAD 12                /* u32 len, u32 CRC-32 of len, u32 CRC-32 of payload */
#define REC_MAX (1u << 20)         /* a commit's metadata is a few KiB: more is damage */
#define COMPACT_SLACK (1u << 20)

enum rec_type { REC_COMMIT = 1, REC_DELETE = 2 };

struct kf_offsets {
    char *dir, *path;
    int fd;
    int lock_fd;                 /* the directory, flock'ed: one writer per file */
    uint64_t size;               /* bytes of the file written */
    uint64_t live;               /* bytes a compacted file's records would take */
    bool failed;                 /* a write could not be undone: refuse further writes */
    bool model_lost;             /* memory ran out applying a record: never compact */
    struct wr_fsync *fs;
    struct wr_bytes batch;       /* staged records, with their heads */
    struct kf_offsets_group **groups;
    size_t n_groups, cap_groups;
};

/* CRC-32 (IEEE 802.3, zlib's), so the file can be checked with common tools. */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    if (!table[1]) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    }
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* ---- the model ------------------------------------------------------------------------ */

/* The bytes a commit record takes in a compacted file. */
static uint64_t commit_cost(size_t group_len, size_t topic_len, size_t metadata_len)
{
    return REC_HEAD + 1 + 4 + group_len + 4 + topic_len + 4 + 8 + 4 + 4 + metadata_len;
}

static void offsets_group_free(struct kf_offsets_group *grp)
{
    for (size_t i = 0; i < grp->n_topics; i++) {
        struct kf_offsets_topic *t = &grp->topics[i];
        for (int32_t p = 0; p < t->n_parts; p++)
            free(t->parts[p].metadata);
        free(t->parts);
        free(t->name);
    }
    free(grp->topics);
    free(grp->id);
    free(grp);
}

static size_t group_index(const struct kf_offsets *o, const char *id, size_t len)
{
    for (size_t i = 0; i < o->n_groups; i++)
        if (strlen(o->groups[i]->id) == len && memcmp(o->groups[i]->id, id, len) == 0)
            return i;
    return o->n_groups;
}

static struct kf_offsets_topic *topic_find(const struct kf_offsets_group *grp, const char *name,
                                           size_t len)
{
    for (size_t i = 0; i < grp->n_topics; i++)
        if (strlen(grp->topics[i].name) == len && memcmp(grp->topics[i].name, name, len) == 0)
            return &grp->topics[i];
    return NULL;
}

static char *dup_n(const char *p, size_t len)
{
    char *s = malloc(len + 1);
    if (s) {
        if (len)
            memcpy(s, p, len);
        s[len] = '\0';
    }
    return s;
}

static int apply_commit(struct kf_offsets *o, struct wr_str group, struct wr_str topic,
                        int32_t partition, int64_t offset, int32_t epoch, struct wr_str meta)
{
    size_t gi = group_index(o, group.ptr, group.len);
    if (gi == o->n_groups) {
        if (o->n_groups == o->cap_groups) {
            size_t cap = o->cap_groups ? 2 * o->cap_groups : 8;
            void *p = realloc(o->groups, cap * sizeof *o->groups);
            if (!p)
                return WR_ENOMEM;
            o->groups = p;
            o->cap_groups = cap;
        }
        struct kf_offsets_group *grp = calloc(1, sizeof *grp);
        if (!grp || !(grp->id = dup_n(group.ptr, group.len))) {
            free(grp);
            return WR_ENOMEM;
        }
        o->groups[o->n_groups++] = grp;
    }
    struct kf_offsets_group *grp = o->groups[gi];
    struct kf_offsets_topic *t = topic_find(grp, topic.ptr, topic.len);
    if (!t) {
        if (grp->n_topics == grp->cap_topics) {
            size_t cap = grp->cap_topics ? 2 * grp->cap_topics : 4;
            void *p = realloc(grp->topics, cap * sizeof *grp->topics);
            if (!p)
                return WR_ENOMEM;
            grp->topics = p;
            grp->cap_topics = cap;
        }
        t = &grp->topics[grp->n_topics];
        memset(t, 0, sizeof *t);
        if (!(t->name = dup_n(topic.ptr, topic.len)))
            return WR_ENOMEM;
        grp->n_topics++;
    }
    if (partition >= t->n_parts) {
        struct kf_offset *p = realloc(t->parts, (size_t)(partition + 1) * sizeof *p);
        if (!p)
            return WR_ENOMEM;
        memset(p + t->n_parts, 0, (size_t)(partition + 1 - t->n_parts) * sizeof *p);
        t->parts = p;
        t->n_parts = partition + 1;
    }
    char *md = dup_n(meta.ptr ? meta.ptr : "", meta.len);
    if (!md)
        return WR_ENOMEM;
    struct kf_offset *po = &t->parts[partition];
    if (po->set)
        o->live -= commit_cost(group.len, topic.len, strlen(po->metadata));
    free(po->metadata);
    po->set = true;
    po->offset = offset;
    po->leader_epoch = epoch;
    po->metadata = md;
    o->live += commit_cost(group.len, topic.len, meta.len);
    return WR_OK;
}

static void apply_delete(struct kf_offsets *o, struct wr_str group)
{
    size_t gi = group_index(o, group.ptr, group.len);
    if (gi == o->n_groups)
        return;
    struct kf_offsets_group *grp = o->groups[gi];
    for (size_t i = 0; i < grp->n_topics; i++) {
        struct kf_offsets_topic *t = &grp->topics[i];
        for (int32_t p = 0; p < t->n_parts; p++)
            if (t->parts[p].set)
                o->live -= commit_cost(group.len, strlen(t->name), strlen(t->parts[p].metadata));
    }
    offsets_group_free(grp);
    memmove(&o->groups[gi], &o->groups[gi + 1], (o->n_groups - gi - 1) * sizeof *o->groups);
    o->n_groups--;
}

/* A name read from the file: present, and no NUL inside (the model keeps C strings). */
static bool stored_name_ok(struct wr_str s)
{
    return s.ptr && !memchr(s.ptr, '\0', s.len);
}

/* Applies one record's payload. WR_EPROTO if it does not decode. */
static int apply_record(struct kf_offsets *o, const uint8_t *p, size_t len)
{
    struct wr_reader rd = {p, p + len, false};
    uint8_t type = wr_read_u8(&rd);
    struct wr_str group = wr_read_str(&rd);
    if (type == REC_DELETE) {
        if (rd.err || rd.p != rd.end || !stored_name_ok(group))
            return WR_EPROTO;
        apply_delete(o, group);
        return WR_OK;
    }
    struct wr_str topic = wr_read_str(&rd);
    uint32_t partition = wr_read_u32(&rd);
    uint64_t offset = wr_read_u64(&rd);
    uint32_t epoch = wr_read_u32(&rd);
    struct wr_str meta = wr_read_str(&rd);
    if (type != REC_COMMIT || rd.err || rd.p != rd.end || !stored_name_ok(group) ||
        !stored_name_ok(topic) || partition >= KF_OFFSETS_MAX_PARTITION)
        return WR_EPROTO;
    return apply_commit(o, group, topic, (int32_t)partition, (int64_t)offset, (int32_t)epoch,
                        meta);
}

/* ---- records -------------------------------------------------------------------------- */

static void record_head(uint8_t *head, const uint8_t *payload, size_t len)
{
    wr_le32_put(head, (uint32_t)len);
    wr_le32_put(head + 4, crc32_of(head, 4));
    wr_le32_put(head + 8, crc32_of(payload, len));
}

/* Closes the record that started at `start` in b (its head reserved there). */
static void record_end(struct wr_bytes *b, size_t start)
{
    if (!b->oom)
        record_head(b->p + start, b->p + start + REC_HEAD, b->len - start - REC_HEAD);
}

static void put_commit(struct wr_bytes *b, const char *group, const char *topic, size_t tlen,
                       int32_t partition, int64_t offset, int32_t epoch, const char *meta,
                       size_t mlen)
{
    size_t start = b->len;
    wr_bytes_grow(b, REC_HEAD);
    wr_bytes_u8(b, REC_COMMIT);
    wr_bytes_str(b, group, strlen(group));
    wr_bytes_str(b, topic, tlen);
    wr_bytes_u32(b, (uint32_t)partition);
    wr_bytes_u64(b, (uint64_t)offset);
    wr_bytes_u32(b, (uint32_t)epoch);
    wr_bytes_str(b, meta, mlen);
    record_end(b, start);
}

void kf_offsets_stage_commit(struct kf_offsets *o, const char *group, const char *topic,
                             size_t topic_len, int32_t partition, int64_t offset,
                             int32_t leader_epoch, const char *metadata, size_t metadata_len)
{
    put_commit(&o->batch, group, topic, topic_len, partition, offset, leader_epoch, metadata,
               metadata_len);
}

void kf_offsets_stage_delete(struct kf_offsets *o, const char *group)
{
    size_t start = o->batch.len;
    wr_bytes_grow(&o->batch, REC_HEAD);
    wr_bytes_u8(&o->batch, REC_DELETE);
    wr_bytes_str(&o->batch, group, strlen(group));
    record_end(&o->batch, start);
}

/* ---- the file ------------------------------------------------------------------------- */

static bool write_at(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return false;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return true;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* Writes the model to a new file that replaces the old one and becomes the one appended to.
 * The new file is durable when this returns WR_OK, so what waits for the group commit is. */
static int compact(struct kf_offsets *o, struct wr_error *err)
{
    struct wr_bytes out = {0};
    uint8_t *p = wr_bytes_grow(&out, FILE_HEAD);
    if (p) {
        memcpy(p, MAGIC, 4);
        wr_le32_put(p + 4, VERSION);
    }
    for (size_t g = 0; g < o->n_groups; g++) {
        const struct kf_offsets_group *grp = o->groups[g];
        for (size_t i = 0; i < grp->n_topics; i++) {
            const struct kf_offsets_topic *t = &grp->topics[i];
            for (int32_t pi = 0; pi < t->n_parts; pi++) {
                const struct kf_offset *po = &t->parts[pi];
                if (po->set)
                    put_commit(&out, grp->id, t->name, strlen(t->name), pi, po->offset,
                               po->leader_epoch, po->metadata, strlen(po->metadata));
            }
        }
    }
    if (out.oom) {
        wr_bytes_free(&out);
        return wr_error_set(err, WR_ENOMEM, "%s: out of memory compacting", o->path);
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", o->path);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !write_at(fd, out.p, out.len, 0) || fdatasync(fd) != 0 ||
        rename(tmp, o->path) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(tmp);
        }
        wr_bytes_free(&out);
        errno = e;
        return wr_error_sys(err, WR_EIO, "cannot write %s", fd < 0 ? tmp : o->path);
    }
    if (o->fd >= 0) {
        if (o->fs)
            wr_fsync_file_retire(o->fs, o->fd);
        close(o->fd);
    }
    o->fd = fd;
    o->size = out.len;
    wr_bytes_free(&out);
    if (o->fs && wr_fsync_file_add(o->fs, fd, err) != WR_OK)
        o->failed = true;
    if (sync_dir(o->dir) != 0) {
        /* The rename may not survive a crash, and appends would go to a file that then
         * vanishes: refuse them rather than lose them. */
        o->failed = true;
        return wr_error_sys(err, WR_EIO, "cannot fsync directory %s after replacing %s",
                            o->dir, o->path);
    }
    return o->failed ? WR_EIO : WR_OK;
}

int kf_offsets_flush(struct kf_offsets *o, struct wr_error *err)
{
    struct wr_bytes *b = &o->batch;
    int rc = WR_OK;
    if (b->oom) {
        rc = wr_error_set(err, WR_ENOMEM, "%s: out of memory recording offsets", o->path);
    } else if (o->failed) {
        rc = wr_error_set(err, WR_EIO,
                          "%s: an earlier write failed and could not be undone, so commits are "
                          "refused: check the disk, then restart the broker", o->path);
    } else if (b->len && !write_at(o->fd, b->p, b->len, o->size)) {
        int e = errno;
        if (ftruncate(o->fd, (off_t)o->size) != 0)
            o->failed = true;
        errno = e;
        rc = wr_error_sys(err, WR_EIO, "cannot write to %s", o->path);
    } else if (b->len) {
        wr_fsync_wrote(o->fs);
        o->size += b->len;
        for (size_t off = 0; off < b->len;) {
            size_t len = wr_le32_get(b->p + off);
            if (!o->model_lost && apply_record(o, b->p + off + REC_HEAD, len) != WR_OK) {
                o->model_lost = true;
                wr_log(WR_LOG_WARN, "kafka",
                       "out of memory tracking committed offsets: %s is no longer compacted, "
                       "and fetches may miss commits, until a restart", o->path);
            }
            off += REC_HEAD + len;
        }
    }
    b->len = 0;
    b->oom = false;
    /* A long-running broker commits the same partitions again and again: rewrite the file
     * once most of it is history. */
    if (rc == WR_OK && !o->model_lost && !o->failed &&
        o->size > 2 * (FILE_HEAD + o->live) + COMPACT_SLACK) {
        struct wr_error cerr = {0};
        if (compact(o, &cerr) != WR_OK)
            wr_log(WR_LOG_WARN, "kafka", "compacting the committed offsets: %s", cerr.msg);
    }
    return rc;
}

int kf_offsets_wait(struct kf_offsets *o, wr_storage_sync_cb *cb, void *data)
{
    return wr_fsync_wait(o->fs, cb, data);
}

int kf_offsets_sync_now(struct kf_offsets *o)
{
    return !o->failed && fdatasync(o->fd) == 0 ? WR_OK : WR_EIO;
}

/* ---- opening -------------------------------------------------------------------------- */

/* Does a whole, intact record start at off? *len gets its payload length. */
static bool intact_at(const uint8_t *buf, size_t size, size_t off, size_t *len)
{
    if (size - off < REC_HEAD || crc32_of(buf + off, 4) != wr_le32_get(buf + off + 4))
        return false;
    uint32_t n = wr_le32_get(buf + off);
    if (n > REC_MAX || size - off - REC_HEAD < n)
        return false;
    *len = n;
    return crc32_of(buf + off + REC_HEAD, n) == wr_le32_get(buf + off + 8);
}

static int read_file(const char *path, uint8_t **out, size_t *size, struct wr_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? WR_ENOTFOUND : wr_error_sys(err, WR_EIO, "cannot open %s", path);
    struct stat st;
    uint8_t *buf = NULL;
    size_t got = 0;
    int rc = WR_OK;
    if (fstat(fd, &st) != 0) {
        rc = wr_error_sys(err, WR_EIO, "cannot stat %s", path);
    } else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        rc = wr_error_set(err, WR_ENOMEM, "out of memory reading %s", path);
    } else {
        while (got < (size_t)st.st_size) {
            ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (got != (size_t)st.st_size)
            rc = wr_error_sys(err, WR_EIO, "cannot read %s", path);
    }
    close(fd);
    if (rc != WR_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *size = got;
    return WR_OK;
}

static int replay(struct kf_offsets *o, const uint8_t *buf, size_t size, struct wr_error *err)
{
    if (size < FILE_HEAD || memcmp(buf, MAGIC, 4) != 0)
        return wr_error_set(err, WR_EPROTO,
                            "%s is not a warren offsets file (no '" MAGIC "' header); start-up "
                            "stops and the file is left as it is", o->path);
    uint32_t version = wr_le32_get(buf + 4);
    if (version != VERSION)
        return wr_error_set(err, WR_EPROTO,
                            "%s has format version %u, and this warren reads version %u%s; "
                            "start-up stops and the file is left as it is", o->path, version,
                            VERSION, version > VERSION ? " (it was written by a newer warren)"
                                                       : "");
    size_t off = FILE_HEAD;
    while (off < size) {
        size_t len = 0;
        if (!intact_at(buf, size, off, &len)) {
            /* A torn write can only be the last record: damage followed by an intact record
             * is corruption, and nothing is cut then. */
            for (size_t at = off + 1; at < size; at++) {
                size_t l;
                if (intact_at(buf, size, at, &l))
                    return wr_error_set(err, WR_EPROTO,
                                        "%s: damaged record at offset %zu, followed by intact "
                                        "ones from offset %zu: start-up stops and the file is "
                                        "left as it is (restore it from a backup, or move it "
                                        "away to start without committed offsets)",
                                        o->path, off, at);
            }
            wr_log(WR_LOG_WARN, "kafka",
                   "%s: the last record (offset %zu, %zu bytes) is torn, as a crash during a "
                   "write leaves it; it is dropped", o->path, off, size - off);
            break;
        }
        int rc = apply_record(o, buf + off + REC_HEAD, len);
        if (rc != WR_OK)
            return wr_error_set(err, rc,
                                rc == WR_ENOMEM ? "%s: out of memory at offset %zu"
                                                : "%s: the record at offset %zu is intact but "
                                                  "not understood; start-up stops and the file "
                                                  "is left as it is",
                                o->path, off);
        off += REC_HEAD + len;
    }
    return WR_OK;
}

int kf_offsets_open(struct wr_loop *lp, const char *data_dir, struct kf_offsets **out,
                    struct wr_error *err)
{
    struct kf_offsets *o = calloc(1, sizeof *o);
    if (!o)
        return wr_error_set(err, WR_ENOMEM, "out of memory opening the committed offsets");
    o->fd = o->lock_fd = -1;
    size_t n = strlen(data_dir) + sizeof DIR_NAME + sizeof FILE_NAME + 2;
    o->dir = malloc(n);
    o->path = malloc(n);
    if (!o->dir || !o->path) {
        kf_offsets_close(o);
        return wr_error_set(err, WR_ENOMEM, "out of memory opening the committed offsets");
    }
    snprintf(o->dir, n, "%s/%s", data_dir, DIR_NAME);
    snprintf(o->path, n, "%s/%s", o->dir, FILE_NAME);
    if (mkdir(data_dir, 0755) != 0 && errno != EEXIST) {
        wr_error_sys(err, WR_EIO, "cannot create %s", data_dir);
        kf_offsets_close(o);
        return WR_EIO;
    }
    if (mkdir(o->dir, 0755) != 0 && errno != EEXIST) {
        wr_error_sys(err, WR_EIO, "cannot create %s", o->dir);
        kf_offsets_close(o);
        return WR_EIO;
    }
    /* Two Kafka listeners in one broker (or two brokers on one data_dir) would both append. */
    o->lock_fd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (o->lock_fd < 0 || flock(o->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        wr_error_sys(err, WR_EBUSY, "cannot lock %s: it is in use by another Kafka listener or "
                     "broker; give each its own data_dir", o->dir);
        kf_offsets_close(o);
        return WR_EBUSY;
    }
    uint8_t *buf = NULL;
    size_t size = 0;
    int rc = read_file(o->path, &buf, &size, err);
    if (rc == WR_OK) {
        rc = replay(o, buf, size, err);
        free(buf);
    } else if (rc == WR_ENOTFOUND) {
        rc = WR_OK;
    }
    if (rc == WR_OK)
        rc = compact(o, err);
    if (rc == WR_OK)
        rc = wr_fsync_new(lp, WR_FSYNC_ALWAYS, 0, &o->fs, err);
    if (rc == WR_OK)
        rc = wr_fsync_file_add(o->fs, o->fd, err);
    if (rc != WR_OK) {
        kf_offsets_close(o);
        return rc;
    }
    *out = o;
    return WR_OK;
}

void kf_offsets_close(struct kf_offsets *o)
{
    if (!o)
        return;
    wr_fsync_free(o->fs);
    if (o->fd >= 0)
        close(o->fd);
    if (o->lock_fd >= 0)
        close(o->lock_fd);
    for (size_t i = 0; i < o->n_groups; i++)
        offsets_group_free(o->groups[i]);
    free(o->groups);
    wr_bytes_free(&o->batch);
    free(o->dir);
    free(o->path);
    free(o);
}

/* ---- lookups -------------------------------------------------------------------------- */

size_t kf_offsets_n_groups(const struct kf_offsets *o)
{
    return o->n_groups;
}

const struct kf_offsets_group *kf_offsets_group_at(const struct kf_offsets *o, size_t i)
{
    return o->groups[i];
}

const struct kf_offsets_group *kf_offsets_find(const struct kf_offsets *o, const char *id)
{
    size_t i = group_index(o, id, strlen(id));
    return i < o->n_groups ? o->groups[i] : NULL;
}

const struct kf_offset *kf_offsets_get(const struct kf_offsets *o, const char *group,
                                       const char *topic, size_t topic_len, int32_t partition)
{
    const struct kf_offsets_group *grp = kf_offsets_find(o, group);
    const struct kf_offsets_topic *t = grp ? topic_find(grp, topic, topic_len) : NULL;
    if (!t || partition < 0 || partition >= t->n_parts || !t->parts[partition].set)
        return NULL;
    return &t->parts[partition];
}
