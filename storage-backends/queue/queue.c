/*
 * queue.c: the `queue` storage backend, a durable queue (the queue model) on a journal.
 *
 * Every enqueue of a persistent message into a durable queue appends an enqueue record to the
 * active segment of the queue's journal (journal.h); every ack, and every message dropped or
 * purged, appends an ack record naming its sequence number. Memory holds an index only: for
 * each ready message its sequence number, segment, offset and size, so a backlog larger than
 * RAM works; next() and peek() read the head back with pread, and the decoded head is cached
 * so a peek followed by next reads it once. Delivered messages stay in memory until acked or
 * requeued, since the core borrows them. Transient messages (delivery mode other than 2) and
 * every message of a non-durable queue are not journaled and live in memory only, as in
 * RabbitMQ.
 *
 * The ready and unacked bookkeeping is memory.c's: sequence numbers are delivery tags, the
 * ready messages by priority level with requeues at their original place and the limits
 * (drop-head or reject-publish) in ready.h, shared with memory.c, and an id table for the
 * unacked set (container.h).
 *
 * Segments roll at segment_size. A segment goes when it is not the active one, all its
 * messages are acked, and no older segment still exists that holds a message one of its ack
 * records names: otherwise replay would bring that message back. Recovery replays the
 * segments in order; what was enqueued and never acked is ready again, in its original order,
 * marked redelivered if a deliver record says it was handed out (first deliveries are
 * journaled together once per turn of the loop, and synced with the next group commit).
 *
 * Durability (option flush): "always" fsyncs before sync() calls back, "interval" every
 * flush_interval, "never" leaves it to the OS, through the core's group commit (fsync.h): the
 * active segment is registered with it, a rolled one is handed over for a last sync, and the
 * directory is synced after a segment is created or deleted. Closing the queue syncs what is
 * left and completes every pending sync() before the queue is freed.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <warren/wr.h>

#include "journal.h"
#include "ready.h"

#define QE_DEFAULT_SEGMENT_SIZE (64ull << 20)
#define QE_SEGMENT_SUFFIX ".seg"
#define QE_READ_CHUNK (1u << 20)

/* A message of the queue. seg 0: not journaled, msg holds it. Otherwise msg is set while it
 * is unacked, and NULL while ready (the record at off in segment seg is the message). */
struct qe_entry {
    uint64_t seq;
    struct wr_msg *msg;
    uint64_t off;
    uint64_t body_len;
    uint32_t seg;
    uint32_t rec_len;
    uint8_t level;
    bool redelivered;
};

struct qe_seg {
    uint32_t id;
    int fd;
    uint64_t size;
    uint64_t live;    /* its journaled messages not acked yet */
    uint32_t min_ref; /* the oldest segment one of its ack records names */
};

struct qe_queue {
    struct wr_plugin_ctx *ctx;
    struct wr_loop *lp;
    char *dir;
    bool journaled;          /* a durable queue */
    enum wr_fsync_policy flush;
    uint64_t flush_interval_ms;
    int dir_fd;              /* the queue's directory, for syncing its entries; or -1 */
    uint64_t segment_size;

    struct ready_set ready;    /* struct qe_entry */
    struct wr_idtable unacked; /* struct qe_entry, by seq */

    struct wr_msg *head_msg; /* the decoded head, or NULL */
    uint64_t head_seq;

    struct qe_seg *segs;     /* by id; the last is the active one */
    size_t nsegs;
    size_t capsegs;
    struct wr_bytes rec;     /* scratch for encoding */
    uint64_t *delivered;     /* first deliveries not journaled yet (qe_delivered) */
    size_t n_delivered, cap_delivered;

    struct wr_fsync *fsync;  /* group commit of the journal's writes */

    uint64_t next_seq;
};

/* Puts e among the ready messages of its level, at its place by sequence number. */
static void qe_insert(struct qe_queue *q, struct qe_entry e)
{
    *(struct qe_entry *)ready_insert(&q->ready, e.level, e.seq, e.body_len) = e;
}

/* ---- segments --------------------------------------------------------------------------- */

static void qe_seg_path(const struct qe_queue *q, uint32_t id, char *out, size_t cap)
{
    snprintf(out, cap, "%s/%08u" QE_SEGMENT_SUFFIX, q->dir, id);
}

static struct qe_seg *qe_seg_find(struct qe_queue *q, uint32_t id)
{
    size_t lo = 0, hi = q->nsegs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (q->segs[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < q->nsegs && q->segs[lo].id == id ? &q->segs[lo] : NULL;
}

static int qe_segs_reserve(struct qe_queue *q)
{
    if (q->nsegs < q->capsegs)
        return WR_OK;
    size_t cap = q->capsegs ? q->capsegs * 2 : 8;
    struct qe_seg *segs = realloc(q->segs, cap * sizeof *segs);
    if (!segs)
        return WR_ENOMEM;
    q->segs = segs;
    q->capsegs = cap;
    return WR_OK;
}

static int qe_write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Creates segment id, the new active one, its header saying the next sequence number. */
static int qe_seg_create(struct qe_queue *q, uint32_t id, struct wr_error *err)
{
    char path[PATH_MAX];
    qe_seg_path(q, id, path, sizeof path);
    if (qe_segs_reserve(q) != WR_OK)
        return wr_error_set(err, WR_ENOMEM, "queue storage: out of memory");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return wr_error_sys(err, WR_EIO, "queue storage: cannot create %s", path);
    uint8_t header[QJ_HEADER_SIZE];
    qj_header_encode(header, q->next_seq + 1);
    if (qe_write_all(fd, header, sizeof header) != 0) {
        int rc = wr_error_sys(err, WR_EIO, "queue storage: cannot write %s", path);
        close(fd);
        unlink(path);
        return rc;
    }
    int rc = wr_fsync_file_add(q->fsync, fd, err);
    if (rc != WR_OK) {
        close(fd);
        unlink(path);
        return rc;
    }
    if (q->nsegs > 0) /* the old active segment is written no more */
        wr_fsync_file_retire(q->fsync, q->segs[q->nsegs - 1].fd);
    wr_fsync_dir_changed(q->fsync, q->dir_fd);
    q->segs[q->nsegs++] = (struct qe_seg){id, fd, QJ_HEADER_SIZE, 0, id};
    return WR_OK;
}

/* Deletes the segments nothing needs any more (see the top of the file). */
static void qe_segs_collect(struct qe_queue *q)
{
    size_t i = 0;
    while (i + 1 < q->nsegs) {
        struct qe_seg *s = &q->segs[i];
        if (s->live > 0 || (i > 0 && q->segs[i - 1].id >= s->min_ref)) {
            i++;
            continue;
        }
        char path[PATH_MAX];
        qe_seg_path(q, s->id, path, sizeof path);
        if (unlink(path) != 0)
            wr_plog(q->ctx, WR_LOG_WARN, "cannot delete %s: %s", path, strerror(errno));
        close(s->fd);
        memmove(s, s + 1, (q->nsegs - i - 1) * sizeof *s);
        q->nsegs--;
        wr_fsync_dir_changed(q->fsync, q->dir_fd);
    }
}

/* Appends the record in q->rec to the active segment, rolling first if it is full. */
static int qe_append(struct qe_queue *q, uint32_t *seg, uint64_t *off, struct wr_error *err)
{
    struct qe_seg *a = &q->segs[q->nsegs - 1];
    if (a->size > QJ_HEADER_SIZE && a->size + q->rec.len > q->segment_size) {
        int rc = qe_seg_create(q, a->id + 1, err);
        if (rc != WR_OK)
            return rc;
        qe_segs_collect(q);
        a = &q->segs[q->nsegs - 1];
    }
    if (qe_write_all(a->fd, q->rec.p, q->rec.len) != 0) {
        char path[PATH_MAX];
        qe_seg_path(q, a->id, path, sizeof path);
        int rc = wr_error_sys(err, WR_EIO, "queue storage: cannot write %s", path);
        /* A partial record would cut the journal in the middle: take it back. */
        if (ftruncate(a->fd, (off_t)a->size) != 0 || lseek(a->fd, 0, SEEK_END) < 0)
            wr_plog(q->ctx, WR_LOG_ERROR, "cannot cut %s back to %llu bytes", path,
                    (unsigned long long)a->size);
        return rc;
    }
    *seg = a->id;
    *off = a->size;
    a->size += q->rec.len;
    wr_fsync_wrote(q->fsync);
    return WR_OK;
}

/* Journals the end of a message (acked, dropped, purged) and lets its segment go. If the ack
 * cannot be written the message is gone all the same, and may come back after a restart. */
static void qe_forget(struct qe_queue *q, const struct qe_entry *e)
{
    if (!e->seg)
        return;
    struct wr_error err = {0};
    uint32_t seg = 0;
    uint64_t off = 0;
    int rc = qj_encode_ack(&q->rec, e->seq);
    if (rc == WR_OK)
        rc = qe_append(q, &seg, &off, &err);
    if (rc != WR_OK)
        wr_plog(q->ctx, WR_LOG_ERROR, "%s: cannot journal the ack of message %llu, it may come "
                "back after a restart: %s", q->dir, (unsigned long long)e->seq,
                err.msg[0] ? err.msg : "out of memory");
    struct qe_seg *s = qe_seg_find(q, e->seg);
    if (!s)
        return;
    struct qe_seg *active = &q->segs[q->nsegs - 1];
    if (rc == WR_OK && e->seg < active->min_ref)
        active->min_ref = e->seg;
    if (--s->live == 0)
        qe_segs_collect(q);
}

#define QE_DELIVERED_MAX 1024 /* first deliveries held before they are written anyway */

/* Journals the first deliveries collected this turn in one record. One not written is only a
 * lost flag: the message comes back after a restart as not redelivered. */
static void qe_flush_delivered(struct qe_queue *q)
{
    if (q->n_delivered == 0)
        return;
    struct wr_error err = {0};
    uint32_t seg = 0;
    uint64_t off = 0;
    int rc = qj_encode_deliver(&q->rec, q->delivered, q->n_delivered);
    if (rc == WR_OK)
        rc = qe_append(q, &seg, &off, &err);
    if (rc != WR_OK)
        wr_plog(q->ctx, WR_LOG_WARN, "%s: cannot journal %zu deliveries: %s", q->dir,
                q->n_delivered, err.msg[0] ? err.msg : "out of memory");
    q->n_delivered = 0;
}

static void qe_delivered_deferred(struct wr_loop *lp, void *data)
{
    (void)lp;
    qe_flush_delivered(data);
}

/* Notes the first delivery of a journaled message, to be written at the end of this turn of
 * the loop: one record and one write for a whole burst of deliveries. */
static void qe_delivered(struct qe_queue *q, uint64_t seq)
{
    if (q->n_delivered == q->cap_delivered) {
        size_t cap = q->cap_delivered ? q->cap_delivered * 2 : 64;
        uint64_t *d = realloc(q->delivered, cap * sizeof *d);
        if (!d) {
            wr_plog(q->ctx, WR_LOG_WARN, "%s: out of memory noting a delivery", q->dir);
            return;
        }
        q->delivered = d;
        q->cap_delivered = cap;
    }
    if (q->n_delivered == 0 && wr_loop_defer(q->lp, qe_delivered_deferred, q) != WR_OK) {
        wr_plog(q->ctx, WR_LOG_WARN, "%s: out of memory noting a delivery", q->dir);
        return;
    }
    q->delivered[q->n_delivered++] = seq;
    if (q->n_delivered >= QE_DELIVERED_MAX)
        qe_flush_delivered(q); /* the deferred flush then finds nothing */
}

/* Reads the message of a journaled entry back. NULL if it cannot (logged). */
static struct wr_msg *qe_load(struct qe_queue *q, const struct qe_entry *e)
{
    char path[PATH_MAX];
    qe_seg_path(q, e->seg, path, sizeof path);
    struct qe_seg *s = qe_seg_find(q, e->seg);
    struct wr_buf *buf = wr_buf_new(e->rec_len);
    struct wr_msg *msg = NULL;
    struct wr_error err = {0};
    if (!s || !buf) {
        wr_error_set(&err, WR_ENOMEM, "out of memory");
    } else if (pread(s->fd, buf->data, e->rec_len, (off_t)e->off) != (ssize_t)e->rec_len) {
        wr_error_sys(&err, WR_EIO, "cannot read");
    } else if (!qj_record_ok(buf->data, e->rec_len - QJ_RECORD_HEAD)) {
        wr_error_set(&err, WR_EPROTO, "checksum mismatch");
    } else {
        buf->len = e->rec_len;
        qj_decode_msg(buf, 0, &msg, &err);
    }
    wr_buf_unref(buf);
    if (!msg)
        wr_plog(q->ctx, WR_LOG_ERROR, "%s offset %llu: message %llu is lost: %s", path,
                (unsigned long long)e->off, (unsigned long long)e->seq, err.msg);
    return msg;
}

/* The message of a ready entry, borrowed: the decoded head is cached. */
static struct wr_msg *qe_msg_of(struct qe_queue *q, const struct qe_entry *e)
{
    if (e->msg)
        return e->msg;
    if (q->head_msg && q->head_seq == e->seq)
        return q->head_msg;
    wr_msg_unref(q->head_msg);
    q->head_msg = qe_load(q, e);
    q->head_seq = q->head_msg ? e->seq : 0;
    return q->head_msg;
}

/* Pops the head of the queue with its message (a reference the caller owns). A journaled
 * message that cannot be read is journaled as gone and skipped. */
static bool qe_pop_msg(struct qe_queue *q, struct qe_entry *out)
{
    uint8_t level = 0;
    const struct qe_entry *head;
    while ((head = ready_head(&q->ready, &level))) {
        struct wr_msg *msg = qe_msg_of(q, head);
        struct qe_entry e = *head;
        ready_pop(&q->ready, level, e.body_len);
        if (msg && !e.msg) { /* the cache's reference goes with it */
            q->head_msg = NULL;
            q->head_seq = 0;
            e.msg = msg;
        }
        if (!e.msg) {
            qe_forget(q, &e);
            continue;
        }
        *out = e;
        return true;
    }
    return false;
}

/* Each message dropped is journaled as gone and out of the queue before the callback runs
 * (ready_drop). */
static void qe_drop_head(struct qe_queue *q)
{
    struct qe_entry e;
    while (ready_over_limit(&q->ready) && qe_pop_msg(q, &e)) {
        qe_forget(q, &e);
        ready_drop(&q->ready, e.msg);
    }
}

/* ---- recovery --------------------------------------------------------------------------- */

/* Reads a segment sequentially through a buffer. */
struct qe_reader {
    int fd;
    uint8_t *buf;
    size_t cap;
    size_t start;
    size_t end;
};

/* Makes n bytes available at r->buf + r->start; false at the end of the file. */
static bool qe_read(struct qe_reader *r, size_t n, bool *ioerr)
{
    if (r->end - r->start >= n)
        return true;
    memmove(r->buf, r->buf + r->start, r->end - r->start);
    r->end -= r->start;
    r->start = 0;
    if (n > r->cap) {
        uint8_t *b = realloc(r->buf, n);
        if (!b) {
            *ioerr = true;
            return false;
        }
        r->buf = b;
        r->cap = n;
    }
    while (r->end < n) {
        ssize_t got = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            *ioerr = true;
        if (got <= 0)
            return false;
        r->end += (size_t)got;
    }
    return true;
}

/* Replays one segment into the unacked table (used as the map of live messages). Stops at
 * the first bad record: *bad_at is its offset, or 0 if the segment is whole. */
static int qe_replay(struct qe_queue *q, struct qe_seg *s, const char *path, uint64_t *bad_at,
                     uint64_t *max_seq, struct wr_error *err)
{
    struct qe_reader r = {s->fd, malloc(QE_READ_CHUNK), QE_READ_CHUNK, 0, 0};
    if (!r.buf)
        return wr_error_set(err, WR_ENOMEM, "queue storage: out of memory");
    bool ioerr = false;
    int rc = WR_OK;
    uint64_t off = QJ_HEADER_SIZE;
    *bad_at = 0;
    if (lseek(s->fd, QJ_HEADER_SIZE, SEEK_SET) < 0)
        ioerr = true;
    while (!ioerr && qe_read(&r, 1, &ioerr)) {
        if (!qe_read(&r, QJ_RECORD_HEAD, &ioerr)) {
            *bad_at = off;
            break;
        }
        uint32_t len = wr_le32_get(r.buf + r.start + 4);
        if (len > QJ_MAX_PAYLOAD || len > s->size - off - QJ_RECORD_HEAD ||
            !qe_read(&r, QJ_RECORD_HEAD + (size_t)len, &ioerr) ||
            !qj_record_ok(r.buf + r.start, len)) {
            *bad_at = off;
            break;
        }
        const uint8_t *rec = r.buf + r.start;
        const uint8_t *payload = rec + QJ_RECORD_HEAD;
        struct qj_enqueue_info info;
        if (rec[8] == QJ_ENQUEUE && qj_enqueue_info(payload, len, &info) && info.seq) {
            struct qe_entry *e = wr_idtable_find(&q->unacked, info.seq)
                                     ? NULL : wr_idtable_put(&q->unacked, info.seq);
            if (!e) {
                rc = wr_error_set(err, WR_EPROTO, "queue storage: %s offset %llu: message %llu "
                                  "appears twice (or out of memory)", path,
                                  (unsigned long long)off, (unsigned long long)info.seq);
                break;
            }
            *e = (struct qe_entry){
                .seq = info.seq, .off = off, .body_len = info.body_len, .seg = s->id,
                .rec_len = QJ_RECORD_HEAD + len, .redelivered = false,
                .level = ready_level(&q->ready, info.has_priority, info.priority),
            };
            s->live++;
            if (info.seq > *max_seq)
                *max_seq = info.seq;
        } else if (rec[8] == QJ_DELIVER && len % 8 == 0) {
            for (uint32_t i = 0; i < len; i += 8) {
                struct qe_entry *e = wr_idtable_find(&q->unacked, wr_le64_get(payload + i));
                if (e)
                    e->redelivered = true;
            }
        } else if (rec[8] == QJ_ACK && len == 8) {
            uint64_t seq = wr_le64_get(payload);
            struct qe_entry *e = wr_idtable_find(&q->unacked, seq);
            if (e) {
                struct qe_seg *of = qe_seg_find(q, e->seg);
                if (of)
                    of->live--;
                if (e->seg < s->min_ref)
                    s->min_ref = e->seg;
                wr_idtable_del(&q->unacked, e);
            }
            if (seq > *max_seq)
                *max_seq = seq;
        } else {
            *bad_at = off;
            break;
        }
        r.start += QJ_RECORD_HEAD + (size_t)len;
        off += QJ_RECORD_HEAD + (size_t)len;
    }
    free(r.buf);
    if (rc == WR_OK && ioerr)
        rc = wr_error_sys(err, WR_EIO, "queue storage: cannot read %s", path);
    return rc;
}

static int qe_cmp_seq(const void *a, const void *b)
{
    uint64_t x = ((const struct qe_entry *)a)->seq, y = ((const struct qe_entry *)b)->seq;
    return x < y ? -1 : x > y;
}

/* Moves the live messages found by replay from the table to the ready rings, in order. */
static int qe_recover_ready(struct qe_queue *q)
{
    if (q->unacked.count == 0)
        return WR_OK;
    struct qe_entry *all = malloc(q->unacked.count * sizeof *all);
    if (!all)
        return WR_ENOMEM;
    size_t n = 0;
    struct qe_entry *e;
    for (size_t i = 0; (e = wr_idtable_next(&q->unacked, &i));)
        all[n++] = *e;
    qsort(all, n, sizeof *all, qe_cmp_seq);
    for (size_t i = 0; i < n; i++) {
        if (ready_reserve(&q->ready, all[i].level, NULL) != WR_OK) {
            free(all);
            return WR_ENOMEM;
        }
        qe_insert(q, all[i]);
    }
    free(all);
    wr_idtable_fini(&q->unacked);
    return WR_OK;
}

static int qe_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The ids of the segment files in q->dir, sorted. */
static int qe_list_segments(struct qe_queue *q, uint32_t **ids, size_t *n,
                            struct wr_error *err)
{
    DIR *d = opendir(q->dir);
    if (!d)
        return wr_error_sys(err, WR_EIO, "queue storage: cannot list %s", q->dir);
    size_t cap = 0;
    *ids = NULL;
    *n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned id = 0;
        int used = 0;
        if (strlen(de->d_name) != 8 + strlen(QE_SEGMENT_SUFFIX) ||
            sscanf(de->d_name, "%8u" QE_SEGMENT_SUFFIX "%n", &id, &used) != 1 ||
            used != (int)strlen(de->d_name) || id == 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            uint32_t *grown = realloc(*ids, cap * sizeof **ids);
            if (!grown) {
                closedir(d);
                return wr_error_set(err, WR_ENOMEM, "queue storage: out of memory");
            }
            *ids = grown;
        }
        (*ids)[(*n)++] = id;
    }
    closedir(d);
    if (*n > 1)
        qsort(*ids, *n, sizeof **ids, qe_cmp_u32);
    return WR_OK;
}

/* Opens every segment and checks every header before anything is changed. */
static int qe_open_segments(struct qe_queue *q, const uint32_t *ids, size_t n,
                            uint64_t *first_seq, struct wr_error *err)
{
    char path[PATH_MAX];
    for (size_t i = 0; i < n; i++) {
        qe_seg_path(q, ids[i], path, sizeof path);
        if (qe_segs_reserve(q) != WR_OK)
            return wr_error_set(err, WR_ENOMEM, "queue storage: out of memory");
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return wr_error_sys(err, WR_EIO, "queue storage: cannot open %s", path);
        q->segs[q->nsegs++] = (struct qe_seg){ids[i], fd, 0, 0, ids[i]};
        struct stat st;
        uint8_t header[QJ_HEADER_SIZE];
        if (fstat(fd, &st) != 0)
            return wr_error_sys(err, WR_EIO, "queue storage: cannot stat %s", path);
        q->segs[q->nsegs - 1].size = (uint64_t)st.st_size;
        if (st.st_size < QJ_HEADER_SIZE) {
            if (i + 1 < n)
                return wr_error_set(err, WR_EPROTO, "queue storage: %s is shorter than a "
                                    "segment header (%lld bytes); the journal is damaged",
                                    path, (long long)st.st_size);
            continue; /* the last: cut while being created; rewritten below */
        }
        if (pread(fd, header, sizeof header, 0) != (ssize_t)sizeof header)
            return wr_error_sys(err, WR_EIO, "queue storage: cannot read %s", path);
        int rc = qj_header_check(header, path, first_seq, err);
        if (rc != WR_OK)
            return rc;
    }
    return WR_OK;
}

static int qe_recover(struct qe_queue *q, struct wr_error *err)
{
    uint32_t *ids = NULL;
    size_t n = 0;
    uint64_t first_seq = 1, max_seq = 0;
    int rc = qe_list_segments(q, &ids, &n, err);
    if (rc == WR_OK)
        rc = qe_open_segments(q, ids, n, &first_seq, err);
    free(ids);
    char path[PATH_MAX];
    for (size_t i = 0; rc == WR_OK && i < q->nsegs; i++) {
        struct qe_seg *s = &q->segs[i];
        bool last = i + 1 == q->nsegs;
        qe_seg_path(q, s->id, path, sizeof path);
        if (s->size < QJ_HEADER_SIZE) {
            wr_plog(q->ctx, WR_LOG_WARN, "%s: torn segment header (%llu bytes), rewritten",
                    path, (unsigned long long)s->size);
            uint8_t header[QJ_HEADER_SIZE];
            qj_header_encode(header, max_seq + 1);
            if (ftruncate(s->fd, 0) != 0 || pwrite(s->fd, header, sizeof header, 0) !=
                                                (ssize_t)sizeof header)
                rc = wr_error_sys(err, WR_EIO, "queue storage: cannot rewrite %s", path);
            s->size = QJ_HEADER_SIZE;
            continue;
        }
        uint64_t bad_at = 0;
        rc = qe_replay(q, s, path, &bad_at, &max_seq, err);
        if (rc != WR_OK || !bad_at)
            continue;
        if (!last) {
            rc = wr_error_set(err, WR_EPROTO, "queue storage: %s is damaged at offset %llu "
                              "(a bad record in a segment that is not the last); nothing was "
                              "changed", path, (unsigned long long)bad_at);
            break;
        }
        wr_plog(q->ctx, WR_LOG_WARN, "%s: torn or damaged record at offset %llu, the journal "
                "is cut there (%llu bytes dropped)", path, (unsigned long long)bad_at,
                (unsigned long long)(s->size - bad_at));
        if (ftruncate(s->fd, (off_t)bad_at) != 0)
            rc = wr_error_sys(err, WR_EIO, "queue storage: cannot truncate %s", path);
        s->size = bad_at;
    }
    if (rc != WR_OK)
        return rc;
    q->next_seq = max_seq > first_seq - 1 ? max_seq : first_seq - 1;
    if (q->nsegs == 0) {
        rc = qe_seg_create(q, 1, err);
    } else {
        struct qe_seg *a = &q->segs[q->nsegs - 1];
        if (lseek(a->fd, 0, SEEK_END) < 0)
            rc = wr_error_sys(err, WR_EIO, "queue storage: cannot seek in the journal");
        else /* qe_seg_create registers the segments it creates */
            rc = wr_fsync_file_add(q->fsync, a->fd, err);
    }
    if (rc == WR_OK && qe_recover_ready(q) != WR_OK)
        rc = wr_error_set(err, WR_ENOMEM, "queue storage: out of memory recovering %s", q->dir);
    if (rc == WR_OK)
        qe_segs_collect(q);
    return rc;
}

/* ---- ops -------------------------------------------------------------------------------- */

static int qe_mkdirs(const char *dir, struct wr_error *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return wr_error_set(err, WR_EINVAL, "queue storage: path too long: %s", dir);
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != 0)
            continue;
        char c = *p;
        *p = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return wr_error_sys(err, WR_EIO, "queue storage: cannot create %s", path);
        *p = c;
        if (!c)
            return WR_OK;
    }
}

static int qe_options(struct qe_queue *q, const struct wr_table *opts, struct wr_error *err)
{
    int64_t v = 0;
    q->flush = WR_FSYNC_ALWAYS;
    q->flush_interval_ms = WR_FSYNC_DEFAULT_INTERVAL_MS;
    int rc = wr_fsync_options(opts, &q->flush, &q->flush_interval_ms, err);
    if (rc != WR_OK) {
        wr_error_wrap(err, "queue storage");
        return rc;
    }
    q->segment_size = QE_DEFAULT_SEGMENT_SIZE;
    if (wr_table_get_int(opts, "segment_size", &v)) {
        if (v <= 0)
            return wr_error_set(err, WR_EINVAL, "queue storage: segment_size must be > 0");
        q->segment_size = (uint64_t)v;
    }
    return WR_OK;
}

static void qe_close(void *state);

static int qe_open(struct wr_plugin_ctx *ctx, const struct wr_storage_args *args, void **state,
                   struct wr_error *err)
{
    struct qe_queue *q = calloc(1, sizeof(*q));
    if (!q)
        return wr_error_set(err, WR_ENOMEM, "queue storage: out of memory");
    int rc = ready_init(&q->ready, args, sizeof(struct qe_entry), "queue storage", err);
    if (rc != WR_OK) {
        free(q);
        return rc;
    }
    wr_idtable_init(&q->unacked, sizeof(struct qe_entry));
    q->ctx = ctx;
    q->lp = wr_plugin_ctx_loop(ctx);
    q->journaled = args->durable;
    q->dir_fd = -1;
    q->dir = strdup(args->dir ? args->dir : "");
    rc = q->dir ? qe_options(q, args->options, err)
                : wr_error_set(err, WR_ENOMEM, "queue storage: out of memory");
    if (rc == WR_OK && q->journaled)
        rc = qe_mkdirs(q->dir, err);
    if (rc == WR_OK && q->journaled) {
        q->dir_fd = open(q->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (q->dir_fd < 0)
            rc = wr_error_sys(err, WR_EIO, "queue storage: cannot open %s", q->dir);
    }
    /* A queue with no journal has nothing to sync: sync() completes on the next loop turn. */
    if (rc == WR_OK)
        rc = wr_fsync_new(q->lp, q->journaled ? q->flush : WR_FSYNC_NEVER,
                          q->flush_interval_ms, &q->fsync, err);
    if (rc == WR_OK && q->journaled)
        rc = qe_recover(q, err);
    if (rc != WR_OK) {
        qe_close(q);
        return rc;
    }
    *state = q;
    return WR_OK;
}

static void qe_close(void *state)
{
    struct qe_queue *q = state;
    if (!q)
        return;
    if (q->n_delivered)
        wr_loop_defer_cancel(q->lp, qe_delivered_deferred, q);
    qe_flush_delivered(q);
    free(q->delivered);
    wr_fsync_free(q->fsync); /* syncs what is left and calls back every pending sync() */
    for (size_t p = 0; p <= q->ready.max_priority; p++) {
        const struct wr_ring *r = &q->ready.levels[p].ring;
        for (size_t i = 0; i < r->count; i++)
            wr_msg_unref(((struct qe_entry *)wr_ring_at(r, i))->msg);
    }
    ready_fini(&q->ready);
    struct qe_entry *e;
    for (size_t i = 0; (e = wr_idtable_next(&q->unacked, &i));)
        wr_msg_unref(e->msg);
    wr_idtable_fini(&q->unacked);
    wr_msg_unref(q->head_msg);
    for (size_t i = 0; i < q->nsegs; i++)
        close(q->segs[i].fd);
    free(q->segs);
    wr_bytes_free(&q->rec);
    if (q->dir_fd >= 0)
        close(q->dir_fd);
    free(q->dir);
    free(q);
}

static int qe_enqueue(void *state, struct wr_msg *msg, struct wr_error *err)
{
    struct qe_queue *q = state;
    size_t len = msg->body.len;
    struct qe_entry e = {
        .seq = q->next_seq + 1,
        .body_len = len,
        .level = ready_level_of(&q->ready, msg),
    };
    int rc = ready_admit(&q->ready, len, err);
    if (rc == WR_OK)
        rc = ready_reserve(&q->ready, e.level, err);
    if (rc != WR_OK)
        return rc;
    bool persistent = (msg->props.flags & WR_PROP_DELIVERY_MODE) &&
                      msg->props.delivery_mode == 2;
    if (q->journaled && persistent) {
        rc = qj_encode_enqueue(&q->rec, e.seq, msg);
        if (rc == WR_ELIMIT)
            return wr_error_set(err, rc, "queue storage: a %zu-byte message is too big for a "
                                "journal record", len);
        if (rc != WR_OK)
            return wr_error_set(err, rc, "queue storage: out of memory");
        rc = qe_append(q, &e.seg, &e.off, err);
        if (rc != WR_OK)
            return rc;
        e.rec_len = (uint32_t)q->rec.len;
        q->segs[q->nsegs - 1].live++;
    } else {
        e.msg = wr_msg_ref(msg);
    }
    q->next_seq = e.seq;
    qe_insert(q, e); /* the newest: an append */
    qe_drop_head(q);
    return WR_OK;
}

static int qe_next(void *state, struct wr_stored *out)
{
    struct qe_queue *q = state;
    if (q->ready.count == 0)
        return WR_ENOTFOUND;
    if (wr_idtable_reserve(&q->unacked, 1) != WR_OK)
        return WR_ENOMEM;
    struct qe_entry e;
    if (!qe_pop_msg(q, &e))
        return WR_ENOTFOUND;
    q->ready.levels[e.level].out++;
    if (e.seg && !e.redelivered)
        qe_delivered(q, e.seq);
    *(struct qe_entry *)wr_idtable_put(&q->unacked, e.seq) = e; /* room was made above */
    out->msg = e.msg;
    out->tag = e.seq;
    out->redelivered = e.redelivered;
    return WR_OK;
}

/* Takes the unacked message tag out of the table into *out; false for an unknown tag. */
static bool qe_unacked_take(struct qe_queue *q, uint64_t tag, struct qe_entry *out)
{
    struct qe_entry *s = wr_idtable_find(&q->unacked, tag);
    if (!s)
        return false;
    *out = *s;
    q->ready.levels[out->level].out--;
    wr_idtable_del(&q->unacked, s);
    return true;
}

static int qe_take(void *state, uint64_t tag, struct wr_msg **out)
{
    struct qe_queue *q = state;
    struct qe_entry e;
    if (!qe_unacked_take(q, tag, &e))
        return WR_ENOTFOUND;
    *out = e.msg;
    qe_forget(q, &e);
    return WR_OK;
}

static int qe_ack(void *state, uint64_t tag)
{
    struct wr_msg *msg = NULL;
    int rc = qe_take(state, tag, &msg);
    wr_msg_unref(msg);
    return rc;
}

/* As in memory.c: never refused, and under drop-head the head may go. */
static int qe_requeue(void *state, uint64_t tag)
{
    struct qe_queue *q = state;
    struct qe_entry e;
    if (!qe_unacked_take(q, tag, &e))
        return WR_ENOTFOUND;
    e.redelivered = true;
    if (e.seg) { /* back to an index entry; the disk has it */
        wr_msg_unref(e.msg);
        e.msg = NULL;
    }
    qe_insert(q, e);
    qe_drop_head(q);
    return WR_OK;
}

/* Takes the head of the queue out of the ready set and journals it as gone. */
static void qe_forget_head(struct qe_queue *q, const struct qe_entry *head, uint8_t level)
{
    struct qe_entry e = *head;
    ready_pop(&q->ready, level, e.body_len);
    wr_msg_unref(e.msg);
    qe_forget(q, &e);
}

static uint64_t qe_purge(void *state)
{
    struct qe_queue *q = state;
    uint64_t n = q->ready.count;
    uint8_t level = 0;
    const struct qe_entry *head;
    while ((head = ready_head(&q->ready, &level)))
        qe_forget_head(q, head, level);
    wr_msg_unref(q->head_msg);
    q->head_msg = NULL;
    q->head_seq = 0;
    return n;
}

static const struct wr_msg *qe_peek(void *state)
{
    struct qe_queue *q = state;
    uint8_t level = 0;
    const struct qe_entry *head;
    while ((head = ready_head(&q->ready, &level))) {
        struct wr_msg *msg = qe_msg_of(q, head);
        if (msg)
            return msg;
        qe_forget_head(q, head, level); /* unreadable: gone, as in next */
    }
    return NULL;
}

static uint64_t qe_depth(void *state)
{
    return ((struct qe_queue *)state)->ready.count;
}

static uint64_t qe_unacked(void *state)
{
    return ((struct qe_queue *)state)->unacked.count;
}

static int qe_sync(void *state, wr_storage_sync_cb *cb, void *data)
{
    struct qe_queue *q = state;
    return wr_fsync_wait(q->fsync, cb, data);
}

static const struct wr_storage_ops ops = {
    .size = sizeof(struct wr_storage_ops),
    .model = WR_STORAGE_QUEUE,
    .open = qe_open,
    .close = qe_close,
    .enqueue = qe_enqueue,
    .next = qe_next,
    .ack = qe_ack,
    .requeue = qe_requeue,
    .purge = qe_purge,
    .depth = qe_depth,
    .unacked = qe_unacked,
    .sync = qe_sync,
    .peek = qe_peek,
    .take = qe_take,
};

static const struct wr_option options[] = {
    {"flush", WR_OPT_STRING, false,
     "always (fsync before confirming, group commit), interval or never; default always"},
    {"flush_interval", WR_OPT_DURATION, false,
     "with flush: interval, how often the journal is synced; default 200ms"},
    {"segment_size", WR_OPT_SIZE, false, "journal segment size before a roll; default 64MiB"},
    {NULL, 0, false, NULL},
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_STORAGE, .name = "queue", .version = WR_VERSION_STRING,
                 .ops = &ops, .options = options);
