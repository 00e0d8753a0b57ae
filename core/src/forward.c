/*
 * forward.c: forward_to, a log queue (a Kafka topic) that also publishes every record it
 * takes to an exchange, so AMQP queues and Lua routing get Kafka traffic with acks and
 * dead-lettering (docs/storage.md#forwarding).
 *
 * A forwarder reads its log as a consumer would, from its own offset per partition, and
 * publishes each record as the message read_msgs gives for it, minus the x-stream-offset
 * header, in offset order. It is woken by a queue watch (once per loop turn that appended)
 * and publishes at most FORWARD_TURN_MAX records per round, shared by the partitions. A
 * backlog goes on in the next round from a 0 ms timer, which runs after the loop has polled
 * its sockets: a big backlog takes turns with the clients instead of stalling them.
 *
 * Progress is the next offset to publish, per partition, in a record file in the queue's
 * directory. It moves only once the publishes below it are durable: after a round, one
 * wr_broker_sync barrier covers them (and every other write before it), and its callback
 * records the offsets it covered. So a crash may publish again what was published after
 * the last recorded offset, and never loses a record; a clean stop (forward_stop_all, then
 * the server's drain) records everything that was published, so a restart repeats nothing.
 *
 * The offsets file, forward.offsets, is a record file (warren/recfile.h) with the magic
 * "WRFW" and version 1, integers little-endian:
 *
 *     payload  = u32 partition  u64 next   (the first offset not yet durably forwarded)
 *
 * A later record of a partition replaces an earlier one. The file is rewritten compacted
 * when the forwarder starts and once it is more than twice that size plus 64 KiB.
 */
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"
#include "warren/recfile.h"

#define FORWARD_TURN_MAX 2048 /* records per round, over every partition */
#define FORWARD_READ_MAX 128 /* records per read_msgs */
#define FILE_NAME "forward.offsets"
#define RECORD_LEN (4 + 8)
#define COMPACT_SLACK (64u << 10)
#define PARTITIONS_MAX (1u << 20) /* a larger one in the file is damage */

static const struct wr_recfile_format format = {
    .magic = "WRFW",
    .version = 1,
    .max_record = RECORD_LEN,
    .kind = "forward offsets",
    .contents = "forwarding progress (every record is forwarded again from the start of its "
                "partition)",
    .subsys = "forward",
};

struct fwd_part {
    uint64_t next;      /* the next offset to publish */
    uint64_t recorded;  /* the offset in the file: everything below is durably published */
    uint64_t covered;   /* what the barrier in flight covers */
    bool known;         /* the file or the log gave it a starting offset */
    bool stuck;         /* a read failed: told once, retried at the next round */
};

struct forward {
    struct wr_queue *q;           /* referenced */
    char *exchange;
    struct wr_queue_watch *watch;
    struct wr_recfile *rf;
    struct fwd_part *parts;
    uint32_t n_parts;
    struct wr_sync *barrier;      /* in flight, or NULL */
    bool scheduled;               /* a round is deferred, or timed (then timer is set) */
    uint64_t timer;
    bool unsynced;                /* published since the barrier in flight was asked */
    bool missing;                 /* the exchange is gone: warned once */
};

static void forward_run(struct wr_loop *lp, void *data);

/* ---- offsets -------------------------------------------------------------------------- */

/* Grows f to n partitions (a Kafka client may add some); new ones start unknown. */
static int parts_grow(struct forward *f, uint32_t n)
{
    if (n <= f->n_parts)
        return WR_OK;
    struct fwd_part *grown = realloc(f->parts, n * sizeof *grown);
    if (!grown)
        return WR_ENOMEM;
    memset(grown + f->n_parts, 0, (n - f->n_parts) * sizeof *grown);
    f->parts = grown;
    f->n_parts = n;
    return WR_OK;
}

/* A record of the file (the wr_recfile_record_cb of replay). */
static int apply_record(void *data, const uint8_t *p, size_t len)
{
    struct forward *f = data;
    struct wr_reader rd = {p, p + len, false};
    uint32_t partition = wr_read_u32(&rd);
    uint64_t next = wr_read_u64(&rd);
    if (rd.err || rd.p != rd.end || partition >= PARTITIONS_MAX)
        return WR_EPROTO;
    if (parts_grow(f, partition + 1) != WR_OK)
        return WR_ENOMEM;
    f->parts[partition] = (struct fwd_part){.next = next, .recorded = next, .known = true};
    return WR_OK;
}

static void put_record(struct wr_bytes *b, uint32_t partition, uint64_t next)
{
    size_t start = wr_recfile_record_begin(b);
    wr_bytes_u32(b, partition);
    wr_bytes_u64(b, next);
    wr_recfile_record_end(b, start);
}

/* Replaces the file with one record per known partition. */
static int compact(struct forward *f, struct wr_error *err)
{
    struct wr_bytes out = {0};
    for (uint32_t p = 0; p < f->n_parts; p++)
        if (f->parts[p].known)
            put_record(&out, p, f->parts[p].recorded);
    int rc = out.oom ? wr_error_set(err, WR_ENOMEM, "out of memory compacting %s",
                                    wr_recfile_path(f->rf))
                     : wr_recfile_rewrite(f->rf, out.p, out.len, err);
    wr_bytes_free(&out);
    return rc;
}

/* Records the offsets the completed barrier covered. */
static void record_covered(struct forward *f)
{
    struct wr_bytes b = {0};
    for (uint32_t p = 0; p < f->n_parts; p++)
        if (f->parts[p].covered != f->parts[p].recorded)
            put_record(&b, p, f->parts[p].covered);
    struct wr_error err = {0};
    int rc = WR_OK;
    if (b.oom)
        rc = wr_error_set(&err, WR_ENOMEM, "out of memory");
    else if (b.len)
        rc = wr_recfile_append(f->rf, b.p, b.len, &err);
    wr_bytes_free(&b);
    if (rc != WR_OK) {
        /* Not recorded: a restart forwards these records again, which is the safe side. */
        wr_log(WR_LOG_ERROR, "forward", "queue '%s': cannot record the forwarded offsets: %s",
               f->q->name, err.msg);
        return;
    }
    for (uint32_t p = 0; p < f->n_parts; p++)
        f->parts[p].recorded = f->parts[p].covered;
    uint64_t live = WR_RECFILE_HEAD + (uint64_t)f->n_parts * (WR_RECFILE_REC_HEAD + RECORD_LEN);
    if (!wr_recfile_failed(f->rf) && wr_recfile_size(f->rf) > 2 * live + COMPACT_SLACK &&
        compact(f, &err) != WR_OK)
        wr_log(WR_LOG_WARN, "forward", "compacting the forwarded offsets: %s", err.msg);
}

/* ---- the barrier ---------------------------------------------------------------------- */

static void ask_barrier(struct forward *f);

static void on_synced(void *data, int status)
{
    struct forward *f = data;
    f->barrier = NULL;
    if (status != WR_OK) {
        /* The publishes may not be on disk: keep the old offsets, and let the next round
         * ask again rather than spin on a failing disk here. */
        wr_log(WR_LOG_ERROR, "forward", "queue '%s': the records forwarded to '%s' could not "
               "be made durable (%s); their offsets are not recorded", f->q->name, f->exchange,
               wr_status_str(status));
        f->unsynced = true;
        return;
    }
    record_covered(f);
    /* Also at shutdown: this is how the drain gets the last round's offsets written. */
    if (f->unsynced)
        ask_barrier(f);
}

/* One barrier at a time covers everything published before it; what is published while
 * it waits is covered by the next. */
static void ask_barrier(struct forward *f)
{
    if (f->barrier || !f->unsynced)
        return;
    for (uint32_t p = 0; p < f->n_parts; p++)
        f->parts[p].covered = f->parts[p].next;
    f->unsynced = false;
    f->barrier = wr_broker_sync(f->q->vh->broker, on_synced, f);
    if (!f->barrier) {
        wr_log(WR_LOG_ERROR, "forward", "queue '%s': out of memory asking for a sync",
               f->q->name);
        f->unsynced = true;
    }
}

/* ---- forwarding ----------------------------------------------------------------------- */

/* A forwarded record is stored in no queue that forwards itself, its own source included:
 * forwarding cannot loop, through one log or several. */
static bool not_forwarding(const struct wr_queue *q, const struct wr_msg *msg)
{
    (void)msg;
    return !q->forward;
}

/* msg's headers without the x-stream-offset read_msgs added. NULL: out of memory. */
static struct wr_table *headers_without_offset(const struct wr_table *h)
{
    struct wr_table *t = wr_table_new();
    for (size_t i = 0; t && i < h->count; i++)
        if (strcmp(h->fields[i].name, "x-stream-offset") != 0 &&
            wr_table_add(t, h->fields[i].name, &h->fields[i].value) != WR_OK) {
            wr_table_free(t);
            t = NULL;
        }
    return t;
}

/* Publishes one record's message to ex. WR_ENOMEM. */
static int forward_one(struct wr_exchange *ex, const struct wr_msg *rec, struct wr_error *err)
{
    struct wr_table *headers = headers_without_offset(rec->headers);
    if (!headers)
        return wr_error_set(err, WR_ENOMEM, "out of memory");
    /* A record is as durable as the log that holds it; one that does not say otherwise (a
     * Kafka producer's) is persistent, so a durable queue keeps it across a restart as the
     * recorded offset assumes. An AMQP publisher's delivery mode stands. */
    struct wr_props props = rec->props;
    if (!(props.flags & WR_PROP_DELIVERY_MODE)) {
        props.flags |= WR_PROP_DELIVERY_MODE;
        props.delivery_mode = 2;
    }
    struct wr_msg_init init = {
        .exchange = wr_str_c(ex->name),
        .routing_key = rec->routing_key,
        .key = rec->key,
        .headers = headers,
        .props = &props,
        .body = rec->body,
        .body_ptr = "",
        .timestamp_ms = rec->timestamp_ms,
    };
    struct wr_msg *m = NULL;
    int rc = wr_msg_new(&init, &m, err);
    wr_table_free(headers);
    if (rc != WR_OK)
        return rc;
    rc = exchange_store(ex, m, not_forwarding, NULL, err);
    wr_msg_unref(m);
    return rc < 0 ? rc : WR_OK;
}

/* Publishes up to turn records of partition p in order. Returns how many; *more when the
 * partition has more to give now. */
static size_t forward_partition(struct forward *f, struct wr_exchange *ex, uint32_t p,
                                size_t turn, bool *more)
{
    struct wr_queue *q = f->q;
    struct fwd_part *fp = &f->parts[p];
    size_t done = 0;
    while (done < turn && !q->deleted) {
        struct wr_log_entry got[FORWARD_READ_MAX];
        size_t want = turn - done < FORWARD_READ_MAX ? turn - done : FORWARD_READ_MAX;
        size_t n = 0;
        struct wr_error err = {0};
        int rc = q->ops->read_msgs(q->state, p, fp->next, got, want, &n, &err);
        if (rc == WR_ENOTFOUND) {
            uint64_t first = 0, latest = 0;
            q->ops->offsets(q->state, p, &first, &latest);
            if (fp->next >= first)
                break;
            wr_log(WR_LOG_WARN, "forward", "queue '%s' partition %u: retention deleted "
                   "records %llu to %llu before they were forwarded to '%s'", q->name, p,
                   (unsigned long long)fp->next, (unsigned long long)first - 1, f->exchange);
            fp->next = first;
            continue;
        }
        if (rc != WR_OK) {
            if (!fp->stuck)
                wr_log(WR_LOG_ERROR, "forward", "queue '%s' partition %u: forwarding stops at "
                       "offset %llu: %s", q->name, p, (unsigned long long)fp->next, err.msg);
            fp->stuck = true;
            return done;
        }
        fp->stuck = false;
        size_t k = 0;
        for (; k < n; k++) {
            if (forward_one(ex, got[k].msg, &err) != WR_OK) {
                wr_log(WR_LOG_ERROR, "forward", "queue '%s' partition %u: forwarding offset "
                       "%llu: %s; retried at the next append", q->name, p,
                       (unsigned long long)got[k].offset, err.msg);
                break;
            }
            fp->next = got[k].offset + 1;
            done++;
        }
        for (size_t i = 0; i < n; i++)
            wr_msg_unref(got[i].msg);
        if (k < n || n == 0)
            return done;
    }
    *more = *more || done == turn;
    return done;
}

static void forward_timed(struct wr_loop *lp, void *data)
{
    struct forward *f = data;
    f->timer = 0;
    forward_run(lp, f);
}

/* A round soon: deferred (before the loop next sleeps) after appends, or with later (a
 * backlog) from a 0 ms timer, after the loop has served its sockets. */
static void schedule(struct forward *f, bool later)
{
    struct wr_loop *lp = f->q->vh->broker->lp;
    if (f->scheduled || f->q->vh->broker->forward_stopped)
        return;
    if (later ? !(f->timer = wr_loop_timer_add(lp, 0, forward_timed, f))
              : wr_loop_defer(lp, forward_run, f) != WR_OK) {
        wr_log(WR_LOG_ERROR, "forward", "queue '%s': cannot schedule forwarding (out of "
               "memory); retried at the next append", f->q->name);
        return;
    }
    f->scheduled = true;
}

/* A partition the file does not know starts at the first record the log keeps. */
static void parts_start(struct forward *f)
{
    struct wr_queue *q = f->q;
    for (uint32_t p = 0; p < f->n_parts; p++) {
        struct fwd_part *fp = &f->parts[p];
        uint64_t first = 0, latest = 0;
        if (p >= q->partitions)
            continue;
        q->ops->offsets(q->state, p, &first, &latest);
        if (!fp->known) {
            *fp = (struct fwd_part){.next = first, .recorded = first, .known = true};
        } else if (fp->next > latest) {
            /* The log lost its tail (recovery after a crash): what comes is new. */
            wr_log(WR_LOG_WARN, "forward", "queue '%s' partition %u: forwarded up to offset "
                   "%llu, but the log ends at %llu; forwarding from there", q->name, p,
                   (unsigned long long)fp->next, (unsigned long long)latest);
            fp->next = fp->recorded = latest;
        }
    }
}

static void forward_run(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct forward *f = data;
    struct wr_queue *q = f->q;
    struct wr_broker *b = q->vh->broker;
    f->scheduled = false;
    if (q->deleted || b->forward_stopped)
        return;
    uint32_t had = f->n_parts;
    if (parts_grow(f, q->partitions) != WR_OK) {
        wr_log(WR_LOG_ERROR, "forward", "queue '%s': out of memory", q->name);
        return;
    }
    if (f->n_parts != had)
        parts_start(f);
    struct wr_exchange *ex = wr_exchange_find(q->vh, f->exchange);
    if (!ex) {
        if (!f->missing)
            wr_log(WR_LOG_WARN, "forward", "queue '%s' in vhost '%s': exchange '%s' does not "
                   "exist; forwarding stops (its offsets are kept) until it is declared again "
                   "and a record arrives", q->name, q->vh->name, f->exchange);
        f->missing = true;
        return;
    }
    if (f->missing)
        wr_log(WR_LOG_INFO, "forward", "queue '%s': exchange '%s' is back; forwarding resumes",
               q->name, f->exchange);
    f->missing = false;
    bool more = false;
    size_t published = 0, turn = FORWARD_TURN_MAX / q->partitions;
    if (turn < FORWARD_READ_MAX / 8)
        turn = FORWARD_READ_MAX / 8;
    for (uint32_t p = 0; p < q->partitions && !q->deleted; p++)
        published += forward_partition(f, ex, p, turn, &more);
    if (published) {
        f->unsynced = true;
        alarm_check(b);
        ask_barrier(f);
    }
    if (more)
        schedule(f, true);
}

/* ---- life ----------------------------------------------------------------------------- */

static void forward_free(struct forward *f)
{
    struct wr_queue *q = f->q;
    /* At shutdown after the drain timed out: those publishes are forwarded again. */
    wr_sync_cancel(f->barrier);
    if (f->timer)
        wr_loop_timer_del(q->vh->broker->lp, f->timer);
    else if (f->scheduled)
        wr_loop_defer_cancel(q->vh->broker->lp, forward_run, f);
    wr_queue_unwatch(f->watch);
    wr_recfile_free(f->rf);
    q->forward = NULL;
    wr_queue_unref(q);
    free(f->parts);
    free(f->exchange);
    free(f);
}

/* Records were appended (or q is going). */
static void on_append(struct wr_queue *q, void *data)
{
    struct forward *f = data;
    if (wr_queue_is_deleted(q))
        forward_free(f); /* before the queue's directory, and the file in it, goes */
    else
        schedule(f, false);
}

int forward_start(struct wr_queue *q, const char *exchange, struct wr_error *err)
{
    if (!q->log)
        return wr_error_set(err, WR_EINVAL, "queue '%s' is not a log: forward_to needs a "
                            "log-model storage", q->name);
    struct forward *f = calloc(1, sizeof *f);
    if (!f || !(f->exchange = strdup(exchange))) {
        free(f);
        return wr_error_set(err, WR_ENOMEM, "out of memory starting forwarding");
    }
    f->q = wr_queue_ref(q);
    int rc = wr_recfile_new(q->dir, FILE_NAME, &format, &f->rf, err);
    if (rc == WR_OK)
        rc = wr_recfile_make_dir(f->rf, err);
    if (rc == WR_OK && (rc = wr_recfile_replay(f->rf, apply_record, f, err)) == WR_ENOTFOUND)
        rc = WR_OK;
    if (rc == WR_OK && parts_grow(f, q->partitions) != WR_OK)
        rc = wr_error_set(err, WR_ENOMEM, "out of memory starting forwarding");
    if (rc == WR_OK) {
        parts_start(f);
        rc = compact(f, err);
    }
    if (rc == WR_OK && !(f->watch = wr_queue_watch(q, on_append, f)))
        rc = wr_error_set(err, WR_ENOMEM, "out of memory starting forwarding");
    if (rc != WR_OK) {
        forward_free(f);
        return rc;
    }
    q->forward = f;
    schedule(f, false); /* what arrived while the broker was down */
    return WR_OK;
}

void forward_stop_all(struct wr_broker *b)
{
    b->forward_stopped = true;
}
