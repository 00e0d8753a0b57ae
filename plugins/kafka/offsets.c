/*
 * offsets.c: the committed offsets of the consumer groups (offsets.h), in memory and in
 * <data_dir>/kafka-offsets/offsets.log.
 *
 * The file is a record file (warren/recfile.h: framing, checksums, the torn-tail rule,
 * rewrites by rename) with the magic "WRKO" and version 1. Integers are little-endian, str as
 * in the shared encodings (docs/storage.md), and a record's payload is
 *
 *     payload  = u8 1 (commit)  str group  str topic  u32 partition  u64 offset
 *                               u32 leader_epoch  str metadata (absent: null)
 *              | u8 2 (delete)  str group     (every offset of the group goes)
 *
 * A later commit of the same partition replaces an earlier one. An intact record that does
 * not decode stops the opening, the file left as it is. After replay, and while running once
 * the file is more than twice what a compacted one would be plus 1 MiB, it is rewritten
 * compacted. Appends are made durable by the group commit.
 */
#include "offsets.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "warren/recfile.h"

#define DIR_NAME "kafka-offsets"
#define FILE_NAME "offsets.log"
#define FILE_HEAD WR_RECFILE_HEAD
#define REC_HEAD WR_RECFILE_REC_HEAD
#define COMPACT_SLACK (1u << 20)

static const struct wr_recfile_format format = {
    .magic = "WRKO",
    .version = 1,
    .max_record = 1u << 20, /* a commit's metadata is a few KiB: more is damage */
    .kind = "offsets",
    .contents = "committed offsets",
    .subsys = "kafka",
};

enum rec_type { REC_COMMIT = 1, REC_DELETE = 2 };

struct kf_offsets {
    struct wr_recfile *rf;
    const char *path;            /* rf's, for messages */
    int lock_fd;                 /* the directory, flock'ed: one writer per file */
    uint64_t live;               /* bytes a compacted file's records would take */
    bool model_lost;             /* memory ran out applying a record: never compact */
    struct wr_fsync *fs;
    struct wr_bytes batch;       /* staged records, with their heads */
    struct kf_offsets_group **groups;
    size_t n_groups, cap_groups;
};

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

/* Applies one record's payload (also the wr_recfile_record_cb of replay). WR_EPROTO if it
 * does not decode. */
static int apply_record(void *data, const uint8_t *p, size_t len)
{
    struct kf_offsets *o = data;
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

static void put_commit(struct wr_bytes *b, const char *group, const char *topic, size_t tlen,
                       int32_t partition, int64_t offset, int32_t epoch, const char *meta,
                       size_t mlen)
{
    size_t start = wr_recfile_record_begin(b);
    wr_bytes_u8(b, REC_COMMIT);
    wr_bytes_str(b, group, strlen(group));
    wr_bytes_str(b, topic, tlen);
    wr_bytes_u32(b, (uint32_t)partition);
    wr_bytes_u64(b, (uint64_t)offset);
    wr_bytes_u32(b, (uint32_t)epoch);
    wr_bytes_str(b, meta, mlen);
    wr_recfile_record_end(b, start);
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
    size_t start = wr_recfile_record_begin(&o->batch);
    wr_bytes_u8(&o->batch, REC_DELETE);
    wr_bytes_str(&o->batch, group, strlen(group));
    wr_recfile_record_end(&o->batch, start);
}

/* ---- the file ------------------------------------------------------------------------- */

/* Writes the model to a new file that replaces the old one and becomes the one appended to.
 * The new file is durable when this returns WR_OK, so what waits for the group commit is. */
static int compact(struct kf_offsets *o, struct wr_error *err)
{
    struct wr_bytes out = {0};
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
    int rc = out.oom ? wr_error_set(err, WR_ENOMEM, "%s: out of memory compacting", o->path)
                     : wr_recfile_rewrite(o->rf, out.p, out.len, err);
    wr_bytes_free(&out);
    return rc;
}

int kf_offsets_flush(struct kf_offsets *o, struct wr_error *err)
{
    struct wr_bytes *b = &o->batch;
    int rc = WR_OK;
    if (b->oom) {
        rc = wr_error_set(err, WR_ENOMEM, "%s: out of memory recording offsets", o->path);
    } else if (b->len && (rc = wr_recfile_append(o->rf, b->p, b->len, err)) == WR_OK) {
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
    if (rc == WR_OK && !o->model_lost && !wr_recfile_failed(o->rf) &&
        wr_recfile_size(o->rf) > 2 * (FILE_HEAD + o->live) + COMPACT_SLACK) {
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
    return wr_recfile_sync(o->rf, NULL);
}

/* ---- opening -------------------------------------------------------------------------- */

int kf_offsets_open(struct wr_loop *lp, const char *data_dir, struct kf_offsets **out,
                    struct wr_error *err)
{
    struct kf_offsets *o = calloc(1, sizeof *o);
    size_t n = strlen(data_dir) + sizeof "/" DIR_NAME;
    char *dir = malloc(n);
    if (!o || !dir) {
        free(o);
        free(dir);
        return wr_error_set(err, WR_ENOMEM, "out of memory opening the committed offsets");
    }
    o->lock_fd = -1;
    snprintf(dir, n, "%s/" DIR_NAME, data_dir);
    int rc = wr_recfile_new(dir, FILE_NAME, &format, &o->rf, err);
    free(dir);
    if (rc == WR_OK) {
        o->path = wr_recfile_path(o->rf);
        rc = wr_recfile_make_dir(o->rf, err);
    }
    if (rc == WR_OK) {
        /* Two Kafka listeners in one broker (or two brokers on one data_dir) would both
         * append. */
        const char *locked = wr_recfile_dir(o->rf);
        o->lock_fd = open(locked, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (o->lock_fd < 0 || flock(o->lock_fd, LOCK_EX | LOCK_NB) != 0)
            rc = wr_error_sys(err, WR_EBUSY, "cannot lock %s: it is in use by another Kafka "
                              "listener or broker; give each its own data_dir", locked);
    }
    if (rc == WR_OK && (rc = wr_recfile_replay(o->rf, apply_record, o, err)) == WR_ENOTFOUND)
        rc = WR_OK;
    if (rc == WR_OK)
        rc = compact(o, err);
    if (rc == WR_OK)
        rc = wr_fsync_new(lp, WR_FSYNC_ALWAYS, 0, &o->fs, err);
    if (rc == WR_OK)
        rc = wr_recfile_group_commit(o->rf, o->fs, err);
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
    wr_recfile_free(o->rf);
    if (o->lock_fd >= 0)
        close(o->lock_fd);
    for (size_t i = 0; i < o->n_groups; i++)
        offsets_group_free(o->groups[i]);
    free(o->groups);
    wr_bytes_free(&o->batch);
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
