/*
 * storage_bench.c: the durable storages measured against this machine's disk, in one run.
 * Before each backend's cases, the disk's own limits (same filesystem, same run):
 * sequential write bandwidth without and with an fdatasync per MiB, and the rate of bare
 * 100-byte append + fdatasync rounds. The `queue` backend is driven through the broker as a
 * transport drives it:
 *
 *   enqueue   persistent messages (100 B, 1 KiB) published into a durable queue with
 *             flush = never, interval (200ms) and always, then one sync barrier; msgs/s and
 *             body MB/s, and that MB/s as a fraction of the sequential write bandwidth
 *   group     flush = always: publish B messages (B = 1, 10, 100, 1000), one
 *             wr_broker_sync, wait for its callback, repeat; confirms/s against
 *             (bare fdatasync rate x B), the aim being a ratio of 0.5 or better
 *   drain     a backlog written with flush = never, taken with get + ack until empty
 *
 * The `log` backend is driven through its storage ops directly (no broker queue in between, so
 * the storage is what is measured), one partition:
 *
 *   append    RecordBatch v2 batches of about 16 KiB (Kafka's default batch.size) holding
 *             100 B or 1 KiB values, each followed by a sync request as a transport answers
 *             a produce request once it is as durable as configured; flush = never,
 *             interval, always; records/s, batch MB/s and that as a fraction of the
 *             sequential write bandwidth (the aim for never: 0.8 or better)
 *   msgs      append_msgs of one 100-byte message at a time, as AMQP publishes arrive
 *   group     flush = always: one batch of B records, one sync, wait for it, repeat
 *   read      a log of 100-byte records read back by file range (as sendfile would serve
 *             it; once without touching the bytes, once pread into memory) and decoded into
 *             messages with read_msgs
 *
 * Each case stops after a fixed count or its time cap, whichever comes first. Every case
 * prints one JSON line on stdout as it ends; a table of all of them follows. --quick is a
 * smoke run (a small fraction of the work, a few seconds); --dir DIR puts the scratch
 * directory under DIR instead of /tmp; --only queue|log runs one backend. Every case
 * starts after a syncfs, so none pays for what the one before it left to write back. The
 * scratch directory is removed at exit.
 * Exit status: 0, or 1 when setup fails, a sync fails or times out, or a count is wrong.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <warren/wr.h>

#include "batch.h"         /* storage-backends/log: to check the batches built here */

#define MIB (1024 * 1024)
#define CHUNK 256          /* publishes between two turns of the loop, as a transport reads */
#define SYNC_TIMEOUT_S 30.0
#define BATCH_SIZE 16384   /* a Kafka producer's default batch.size */
#define TURN_BATCHES 16    /* appended batches between two turns of the loop: 256 KiB, what
                            * one read of a busy Kafka connection brings */
#define FETCH_MAX MIB      /* bytes per read: a Kafka consumer's max.partition.fetch.bytes */
#define READ_MSGS 256      /* messages per read_msgs */

struct scale {
    double cap;             /* seconds per case */
    size_t seq_bytes;       /* sequential write size */
    double fsync_secs;      /* bare fdatasync loop length */
    uint64_t enqueue_max;   /* messages per enqueue case (100 B; a quarter for 1 KiB) */
    uint64_t group_max;     /* messages per group-commit case */
    uint64_t backlog;       /* messages to drain */
    uint64_t log_bytes;     /* batch bytes per log append case */
    uint64_t log_read;      /* bytes of the log read back */
};

static const struct scale full = {2.0, 256 * MIB, 2.0, 2000000, 1000000, 200000,
                                  4096ull * MIB, 256 * MIB};
static const struct scale quick = {0.2, 16 * MIB, 0.2, 4000, 2000, 2000, 4 * MIB, 2 * MIB};
static const struct scale *sc = &full;

static char scratch[4096];  /* removed at exit */

struct row {
    const char *backend;    /* the section: the disk's limits are measured again in each */
    char name[48];
    uint64_t count;
    double secs;
    double rate;            /* per second: msgs, confirms or syncs */
    double mb_s;            /* body (or file) megabytes per second; < 0: not measured */
    double ratio;           /* < 0: none */
    const char *ratio_of;
    uint64_t disk_bytes;    /* growth of the data directory; 0: not measured */
    double ceiling;         /* group commit: the lower of fdatasync/s x B and the
                             * flush = never enqueue rate; 0: none */
};

static struct row rows[48];
static size_t nrows;
static const char *backend;  /* the section running: "queue" or "log" */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void remove_scratch(void)
{
    if (scratch[0])
        nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void die(const char *what, const char *why)
{
    fprintf(stderr, "storage_bench: %s: %s\n", what, why ? why : "");
    remove_scratch();
    exit(1);
}

static uint64_t tree_bytes;

static int add_size(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path, (void)ftw;
    if (flag == FTW_F)
        tree_bytes += (uint64_t)st->st_size;
    return 0;
}

/* Bytes in the files under dir. */
static uint64_t du(const char *dir)
{
    tree_bytes = 0;
    nftw(dir, add_size, 16, FTW_PHYS);
    return tree_bytes;
}

/* Writes back what earlier cases left in the page cache (and, on a VM, makes the host write
 * it too), so that each case starts on an idle disk: left behind, gigabytes from one case
 * slow the fdatasyncs of the next (an ext4 journal commit waits for other files' data). */
static void quiesce(void)
{
    int fd = open(scratch, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    double t0 = now_s();
    if (fd < 0 || syncfs(fd) != 0)
        die("syncfs", strerror(errno));
    close(fd);
    if (now_s() - t0 > 0.1)
        fprintf(stderr, "  (%.2f s to write back what earlier cases left)\n", now_s() - t0);
}

/* Prints r as a JSON line under name and keeps it for the table. */
static void add_row(const char *name, struct row *r)
{
    snprintf(r->name, sizeof r->name, "%s", name);
    r->backend = backend;
    if (nrows < sizeof rows / sizeof rows[0])
        rows[nrows++] = *r;
    printf("{\"bench\":\"storage\",\"backend\":\"%s\",\"case\":\"%s\",\"count\":%llu,"
           "\"secs\":%.4f,\"per_s\":%.1f",
           backend, r->name, (unsigned long long)r->count, r->secs, r->rate);
    if (r->mb_s >= 0)
        printf(",\"mb_per_s\":%.2f", r->mb_s);
    if (r->ratio >= 0)
        printf(",\"ratio\":%.3f,\"ratio_of\":\"%s\"", r->ratio, r->ratio_of);
    if (r->disk_bytes)
        printf(",\"disk_bytes\":%llu,\"disk_mb_per_s\":%.2f", (unsigned long long)r->disk_bytes,
               (double)r->disk_bytes / 1e6 / r->secs);
    if (r->ceiling > 0)
        printf(",\"ceiling_per_s\":%.1f,\"ratio_ceiling\":%.3f", r->ceiling,
               r->rate / r->ceiling);
    printf("}\n");
    fflush(stdout);
}

/* ---- the machine's limits ------------------------------------------------------------- */

static void write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            die("write", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static void datasync(int fd)
{
    if (fdatasync(fd) != 0)
        die("fdatasync", strerror(errno));
}

static int open_scratch_file(const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", scratch, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        die(path, strerror(errno));
    return fd;
}

/* Appends sc->seq_bytes in 1 MiB writes to a new file, with an fdatasync after each write
 * (sync_each) or once at the end; returns MB/s (10^6 bytes) including that last sync. */
static uint8_t chunk[MIB]; /* incompressible bytes, in case the disk compresses */

static double seq_write(bool sync_each, const char *name)
{
    char path[4200];
    int fd = open_scratch_file(name, path, sizeof path);
    size_t done = 0;
    quiesce();
    double t0 = now_s();
    while (done < sc->seq_bytes && now_s() - t0 < 5 * sc->cap) {
        write_all(fd, chunk, MIB);
        if (sync_each)
            datasync(fd);
        done += MIB;
    }
    datasync(fd);
    double secs = now_s() - t0;
    close(fd);
    unlink(path);
    double mb_s = (double)done / 1e6 / secs;
    add_row(name, &(struct row){.count = done / MIB, .secs = secs,
                                .rate = (double)(done / MIB) / secs, .mb_s = mb_s, .ratio = -1});
    return mb_s;
}

/* Rounds of "append 100 bytes, fdatasync" for sc->fsync_secs: the most durable writes per
 * second one file on this disk takes, the ceiling of an fsync-per-confirm broker. */
static double fsync_rate(void)
{
    char path[4200];
    int fd = open_scratch_file("disk-fdatasync-100B", path, sizeof path);
    uint64_t n = 0;
    quiesce();
    double t0 = now_s(), t = t0;
    while (n < 1000000 && t - t0 < sc->fsync_secs) {
        write_all(fd, chunk, 100);
        datasync(fd);
        n++;
        t = now_s();
    }
    close(fd);
    unlink(path);
    double rate = (double)n / (t - t0);
    add_row("disk-fdatasync-100B",
            &(struct row){.count = n, .secs = t - t0, .rate = rate, .mb_s = -1, .ratio = -1});
    return rate;
}

/* ---- the queue backend ------------------------------------------------------------------ */

struct bench {
    struct wr_loop *lp;
    struct wr_broker *b;
    struct wr_vhost *vh;
    struct wr_exchange *dflt;   /* the default exchange: routing key = queue name */
    char data_dir[4200];
    double seq_mb_s;            /* the disk's limits, measured first */
    double fsyncs_per_s;
    double never_per_s;         /* 100-byte enqueues/s with flush = never */
    const struct wr_storage_ops *log; /* the log plugin's ops */
    struct wr_plugin_ctx *log_ctx;
    double log_never_per_s;     /* 100-byte records/s appended with flush = never */
};

static uint8_t body[1024];

/* The storage options for a flush policy, as the config would give them; the caller frees
 * the table. */
static struct wr_table *flush_options(const char *flush)
{
    struct wr_table *opts = wr_table_new();
    struct wr_value v = wr_value_str(flush);
    if (!opts || wr_table_add(opts, "flush", &v) != WR_OK)
        die("options", "out of memory");
    if (strcmp(flush, "interval") == 0) {
        v = wr_value_i64(200); /* a DURATION option arrives as milliseconds */
        if (wr_table_add(opts, "flush_interval", &v) != WR_OK)
            die("options", "out of memory");
    }
    return opts;
}

static struct wr_queue *declare(struct bench *bn, const char *name, const char *flush)
{
    struct wr_table *opts = flush_options(flush);
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, name);
    decl.storage = "queue";
    decl.durable = true;
    decl.options = opts;
    struct wr_queue *q;
    struct wr_error err = {0};
    int rc = wr_queue_declare(bn->vh, &decl, &q, &err);
    wr_table_free(opts);
    if (rc != WR_OK)
        die("declare queue", err.msg);
    return q;
}

static void drop_queue(struct wr_queue *q)
{
    struct wr_error err = {0};
    if (wr_queue_delete(q, false, false, NULL, &err) != WR_OK)
        die("delete queue", err.msg);
}

/* A persistent message built as a transport builds one, published through the default
 * exchange into the queue called name. */
static void publish(struct bench *bn, const char *name, size_t len)
{
    struct wr_props props = {.flags = WR_PROP_DELIVERY_MODE, .delivery_mode = 2};
    struct wr_msg_init init = {.routing_key = wr_str_c(name), .props = &props,
                               .body_ptr = body, .body_len = len};
    struct wr_msg *msg;
    struct wr_error err = {0};
    if (wr_msg_new(&init, &msg, &err) != WR_OK)
        die("wr_msg_new", err.msg);
    int stored = wr_publish(bn->dflt, msg, NULL, &err);
    wr_msg_unref(msg);
    if (stored != 1)
        die("publish", stored < 0 ? err.msg : "not stored in exactly one queue");
}

static void turn(struct bench *bn, int timeout_ms)
{
    struct wr_error err = {0};
    if (wr_loop_run_once(bn->lp, timeout_ms, &err) != WR_OK)
        die("loop", err.msg);
}

struct sync_wait {
    bool done;
    int status;
};

static void synced(void *data, int status)
{
    struct sync_wait *w = data;
    w->done = true;
    w->status = status;
}

/* The group-commit barrier: returns once everything published so far is as durable as its
 * queue is configured to be. */
static void barrier(struct bench *bn)
{
    struct sync_wait w = {false, WR_OK};
    if (!wr_broker_sync(bn->b, synced, &w))
        die("wr_broker_sync", "out of memory");
    double t0 = now_s();
    /* A turn runs the deferred tasks before it polls: poll without waiting first, so a
     * completion deferred by the last turn is not held up by a wait for nothing. */
    for (turn(bn, 0); !w.done; turn(bn, 0)) {
        if (now_s() - t0 > SYNC_TIMEOUT_S)
            die("wr_broker_sync", "no callback within 30 s");
        turn(bn, 50);
    }
    if (w.status != WR_OK)
        die("wr_broker_sync", wr_status_str(w.status));
}

static void check_depth(struct wr_queue *q, uint64_t want, const char *name)
{
    if (wr_queue_depth(q) != want) {
        fprintf(stderr, "storage_bench: %s: depth %llu, expected %llu\n", name,
                (unsigned long long)wr_queue_depth(q), (unsigned long long)want);
        remove_scratch();
        exit(1);
    }
}

/* Publishes len-byte messages into a fresh queue until max or the time cap, then one
 * barrier; the time includes the barrier, so every byte counted reached the file (and the
 * disk, unless flush = never). */
static void bench_enqueue(struct bench *bn, const char *flush, size_t len, uint64_t max)
{
    char name[48];
    snprintf(name, sizeof name, "queue-enqueue-%s-%s", len < 1024 ? "100B" : "1KiB", flush);
    struct wr_queue *q = declare(bn, name, flush);
    uint64_t before = du(bn->data_dir), n = 0;
    quiesce();
    double t0 = now_s();
    while (n < max && now_s() - t0 < sc->cap) {
        for (int i = 0; i < CHUNK && n < max; i++, n++)
            publish(bn, name, len);
        turn(bn, 0);
    }
    barrier(bn);
    double secs = now_s() - t0;
    check_depth(q, n, name);
    struct row r = {.count = n, .secs = secs, .rate = (double)n / secs,
                    .mb_s = (double)(n * len) / 1e6 / secs, .ratio_of = "disk-seq-write MB/s",
                    .disk_bytes = du(bn->data_dir) - before};
    r.ratio = r.mb_s / bn->seq_mb_s;
    add_row(name, &r);
    if (len == 100 && strcmp(flush, "never") == 0)
        bn->never_per_s = r.rate;
    drop_queue(q);
}

/* flush = always: batches of size messages, each confirmed by one barrier. */
static void bench_group(struct bench *bn, uint64_t size)
{
    char name[48];
    snprintf(name, sizeof name, "queue-group-commit-B%llu", (unsigned long long)size);
    struct wr_queue *q = declare(bn, name, "always");
    uint64_t n = 0, batches = 0;
    quiesce();
    double t0 = now_s();
    do {
        for (uint64_t i = 0; i < size; i++, n++) {
            publish(bn, name, 100);
            if ((i + 1) % CHUNK == 0)
                turn(bn, 0);
        }
        barrier(bn);
        batches++;
    } while (n + size <= sc->group_max && now_s() - t0 < sc->cap);
    double secs = now_s() - t0;
    check_depth(q, n, name);
    struct row r = {.count = n, .secs = secs, .rate = (double)n / secs,
                    .mb_s = (double)(n * 100) / 1e6 / secs,
                    .ratio_of = "disk-fdatasync/s x B"};
    r.ratio = r.rate / (bn->fsyncs_per_s * (double)size);
    /* Past some B, fdatasync/s x B exceeds what the enqueue path takes without any sync:
     * the ratio to the lower of the two says how much the syncs themselves cost. */
    r.ceiling = bn->fsyncs_per_s * (double)size;
    if (bn->never_per_s < r.ceiling)
        r.ceiling = bn->never_per_s;
    add_row(name, &r);
    fprintf(stderr, "  %s: %llu batches, %.0f barriers/s; %.3f of min(fdatasync/s x B, "
            "flush-never enqueues/s)\n", name, (unsigned long long)batches,
            (double)batches / secs, r.rate / r.ceiling);
    drop_queue(q);
}

/* A backlog written with flush = never, then get + ack until the queue is empty. */
static void bench_drain(struct bench *bn)
{
    const char *name = "queue-drain-100B-never";
    struct wr_queue *q = declare(bn, name, "never");
    for (uint64_t n = 0; n < sc->backlog; n++) {
        publish(bn, name, 100);
        if ((n + 1) % CHUNK == 0)
            turn(bn, 0);
    }
    barrier(bn);
    check_depth(q, sc->backlog, name);
    struct wr_error err = {0};
    uint64_t n = 0;
    quiesce();
    double t0 = now_s();
    while (n < sc->backlog && now_s() - t0 < 5 * sc->cap) {
        for (int i = 0; i < CHUNK && n < sc->backlog; i++, n++) {
            struct wr_delivery d;
            if (wr_queue_get(q, false, &d, &err) != WR_OK)
                die("get", err.msg);
            if (d.msg->body.len != 100)
                die("get", "a body of the wrong length");
            wr_msg_unref(d.msg);
            if (wr_queue_ack(q, d.tag, &err) != WR_OK)
                die("ack", err.msg);
        }
        turn(bn, 0);
    }
    barrier(bn);
    double secs = now_s() - t0;
    check_depth(q, sc->backlog - n, name);
    if (wr_queue_unacked(q) != 0)
        die(name, "messages left unacked");
    add_row(name, &(struct row){.count = n, .secs = secs, .rate = (double)n / secs,
                                .mb_s = (double)(n * 100) / 1e6 / secs, .ratio = -1});
    drop_queue(q);
}

/* ---- the log backend -------------------------------------------------------------------- */

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* A zigzag varint, as Kafka frames a record's fields. */
static size_t put_varint(uint8_t *p, int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 0;
    for (; u >= 0x80; u >>= 7)
        p[n++] = (uint8_t)(u | 0x80);
    p[n++] = (uint8_t)u;
    return n;
}

/* Writes into out (cap bytes) the RecordBatch v2 an uncompressed Kafka producer sends: up to
 * max records (fewer if cap is reached) with null keys, no headers and len-byte values, all
 * stamped ts_ms. Returns the batch's length and sets *records. The batch is checked with the
 * log's own reader (batch.c), so a mistake here cannot pass for a storage error. */
static size_t build_batch(uint8_t *out, size_t cap, size_t len, uint32_t max, int64_t ts_ms,
                          uint32_t *records)
{
    uint8_t rec[32];
    size_t pos = LB_HEADER_SIZE;
    uint32_t n = 0;
    while (n < max) {
        size_t h = 0;
        rec[h++] = 0;           /* attributes */
        rec[h++] = 0;           /* timestamp delta 0, as a varint */
        h += put_varint(rec + h, n);
        h += put_varint(rec + h, -1);
        h += put_varint(rec + h, (int64_t)len);
        uint8_t size[8];
        size_t sz = put_varint(size, (int64_t)(h + len + 1));
        if (pos + sz + h + len + 1 > cap)
            break;
        memcpy(out + pos, size, sz);
        memcpy(out + pos + sz, rec, h);
        memcpy(out + pos + sz + h, body, len);
        out[pos + sz + h + len] = 0;    /* no headers */
        pos += sz + h + len + 1;
        n++;
    }
    if (n == 0)
        die("build_batch", "not even one record fits");
    put_be(out, 0, 8);                      /* base offset: the log assigns it */
    put_be(out + 8, pos - LB_LOG_OVERHEAD, 4);
    put_be(out + 12, UINT32_MAX, 4);        /* partition leader epoch: -1 from producers */
    out[16] = 2;                            /* magic */
    put_be(out + 21, 0, 2);                 /* attributes: no compression */
    put_be(out + 23, n - 1, 4);             /* last offset delta */
    put_be(out + 27, (uint64_t)ts_ms, 8);
    put_be(out + 35, (uint64_t)ts_ms, 8);
    put_be(out + 43, UINT64_MAX, 8);        /* producer id, epoch, base sequence: -1 */
    put_be(out + 51, UINT16_MAX, 2);
    put_be(out + 53, UINT32_MAX, 4);
    put_be(out + 57, n, 4);
    put_be(out + 17, lb_crc32c(0, out + 21, pos - 21), 4);
    struct lb_header h;
    struct wr_error err = {0};
    if (lb_check(out, pos, &h, &err) != WR_OK)
        die("build_batch", err.msg);
    *records = n;
    return pos;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct log {
    void *state;
    char dir[4300];
};

/* Opens a fresh one-partition log under the data directory with the given flush policy. */
static void log_open(struct bench *bn, struct log *lg, const char *name, const char *flush)
{
    struct wr_table *opts = flush_options(flush);
    snprintf(lg->dir, sizeof lg->dir, "%s/%s", bn->data_dir, name);
    struct wr_storage_args args = {.vhost = "/", .queue = name, .dir = lg->dir,
                                   .durable = true, .max_length = -1,
                                   .max_length_bytes = -1, .partitions = 1, .options = opts};
    struct wr_error err = {0};
    int rc = bn->log->open(bn->log_ctx, &args, &lg->state, &err);
    wr_table_free(opts);
    if (rc != WR_OK)
        die("log open", err.msg);
}

/* Closes the log and deletes its files, so the cases after it find the disk as it was. */
static void log_drop(struct bench *bn, struct log *lg)
{
    bn->log->close(lg->state);
    lg->state = NULL;
    nftw(lg->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

struct sync_count {
    uint64_t asked;
    uint64_t done;
    int status;
};

static void counted(void *data, int status)
{
    struct sync_count *c = data;
    c->done++;
    if (status != WR_OK)
        c->status = status;
}

static void log_sync(struct bench *bn, struct log *lg, struct sync_count *c)
{
    if (bn->log->sync(lg->state, counted, c) != WR_OK)
        die("log sync", "request refused");
    c->asked++;
}

/* Turns the loop until every sync asked for has called back. */
static void log_settle(struct bench *bn, struct sync_count *c)
{
    double t0 = now_s();
    for (turn(bn, 0); c->done < c->asked; turn(bn, 0)) {
        if (now_s() - t0 > SYNC_TIMEOUT_S)
            die("log sync", "no callback within 30 s");
        turn(bn, 50);
    }
    if (c->status != WR_OK)
        die("log sync", wr_status_str(c->status));
}

static void check_latest(struct bench *bn, struct log *lg, uint64_t want, const char *name)
{
    uint64_t earliest = 1, latest = 0;
    bn->log->offsets(lg->state, 0, &earliest, &latest);
    if (earliest != 0 || latest != want) {
        fprintf(stderr, "storage_bench: %s: offsets %llu..%llu, expected 0..%llu\n", name,
                (unsigned long long)earliest, (unsigned long long)latest,
                (unsigned long long)want);
        remove_scratch();
        exit(1);
    }
}

static uint8_t batch[128 * 1024]; /* holds 1,000 records of 100 B (group commit) */

/* Appends one batch at offset next, which it must get. */
static void append(struct bench *bn, struct log *lg, size_t len, uint64_t next)
{
    uint64_t base = UINT64_MAX;
    struct wr_error err = {0};
    if (bn->log->append_batch(lg->state, 0, batch, len, &base, &err) != WR_OK)
        die("append_batch", err.msg);
    if (base != next)
        die("append_batch", "a base offset out of sequence");
}

/* About 16 KiB batches of len-byte values, a sync request after each (a produce request
 * answered once durable as configured), a turn of the loop every TURN_BATCHES; the time
 * ends when the last sync has called back. */
static void bench_log_append(struct bench *bn, const char *flush, size_t len)
{
    char name[48];
    snprintf(name, sizeof name, "log-append-%s-%s", len < 1024 ? "100B" : "1KiB", flush);
    uint32_t per = 0;
    size_t blen = build_batch(batch, BATCH_SIZE, len, UINT32_MAX, now_ms(), &per);
    struct log lg;
    log_open(bn, &lg, name, flush);
    struct sync_count c = {0, 0, WR_OK};
    uint64_t batches = 0;
    quiesce();
    double t0 = now_s();
    while (batches * blen < sc->log_bytes && now_s() - t0 < sc->cap) {
        for (int i = 0; i < TURN_BATCHES; i++, batches++) {
            append(bn, &lg, blen, batches * per);
            log_sync(bn, &lg, &c);
        }
        turn(bn, 0);
    }
    log_settle(bn, &c);
    double secs = now_s() - t0;
    uint64_t n = batches * per;
    check_latest(bn, &lg, n, name);
    struct row r = {.count = n, .secs = secs, .rate = (double)n / secs,
                    .mb_s = (double)(batches * blen) / 1e6 / secs,
                    .ratio_of = "disk-seq-write MB/s", .disk_bytes = du(lg.dir)};
    r.ratio = r.mb_s / bn->seq_mb_s;
    add_row(name, &r);
    fprintf(stderr, "  %s: %u records of %zu B per %zu-byte batch, %.0f batches/s\n", name,
            per, len, blen, (double)batches / secs);
    if (len == 100 && strcmp(flush, "never") == 0)
        bn->log_never_per_s = r.rate;
    log_drop(bn, &lg);
}

/* One 100-byte persistent message per append_msgs, as AMQP publishes arrive (a turn of the
 * loop every CHUNK), flush = never, one sync at the end. */
static void bench_log_msgs(struct bench *bn)
{
    const char *name = "log-append-msgs-100B-never";
    struct log lg;
    log_open(bn, &lg, name, "never");
    struct wr_props props = {.flags = WR_PROP_DELIVERY_MODE, .delivery_mode = 2};
    struct wr_msg_init init = {.exchange = wr_str_c("amq.direct"),
                               .routing_key = wr_str_c("stream"), .props = &props,
                               .body_ptr = body, .body_len = 100};
    struct sync_count c = {0, 0, WR_OK};
    struct wr_error err = {0};
    uint64_t n = 0;
    quiesce();
    double t0 = now_s();
    while (n < sc->enqueue_max && now_s() - t0 < sc->cap) {
        for (int i = 0; i < CHUNK && n < sc->enqueue_max; i++, n++) {
            struct wr_msg *msg;
            uint64_t base = UINT64_MAX;
            if (wr_msg_new(&init, &msg, &err) != WR_OK)
                die("wr_msg_new", err.msg);
            int rc = bn->log->append_msgs(lg.state, 0, &msg, 1, &base, &err);
            wr_msg_unref(msg);
            if (rc != WR_OK)
                die("append_msgs", err.msg);
            if (base != n)
                die("append_msgs", "a base offset out of sequence");
        }
        turn(bn, 0);
    }
    log_sync(bn, &lg, &c);
    log_settle(bn, &c);
    double secs = now_s() - t0;
    check_latest(bn, &lg, n, name);
    struct row r = {.count = n, .secs = secs, .rate = (double)n / secs,
                    .mb_s = (double)(n * 100) / 1e6 / secs, .ratio = -1,
                    .disk_bytes = du(lg.dir)};
    add_row(name, &r);
    log_drop(bn, &lg);
}

/* flush = always: one batch of size 100-byte records, one sync, wait for it, repeat. */
static void bench_log_group(struct bench *bn, uint32_t size)
{
    char name[48];
    snprintf(name, sizeof name, "log-group-commit-B%u", size);
    uint32_t per = 0;
    size_t blen = build_batch(batch, sizeof batch, 100, size, now_ms(), &per);
    if (per != size)
        die(name, "the batch buffer is too small");
    struct log lg;
    log_open(bn, &lg, name, "always");
    struct sync_count c = {0, 0, WR_OK};
    uint64_t n = 0;
    quiesce();
    double t0 = now_s();
    do {
        append(bn, &lg, blen, n);
        n += size;
        log_sync(bn, &lg, &c);
        log_settle(bn, &c);
    } while (n + size <= sc->group_max && now_s() - t0 < sc->cap);
    double secs = now_s() - t0;
    check_latest(bn, &lg, n, name);
    struct row r = {.count = n, .secs = secs, .rate = (double)n / secs,
                    .mb_s = (double)(c.asked * blen) / 1e6 / secs,
                    .ratio_of = "disk-fdatasync/s x B"};
    r.ratio = r.rate / (bn->fsyncs_per_s * (double)size);
    r.ceiling = bn->fsyncs_per_s * (double)size;
    if (bn->log_never_per_s < r.ceiling)
        r.ceiling = bn->log_never_per_s;
    add_row(name, &r);
    fprintf(stderr, "  %s: %llu syncs/s; %.3f of min(fdatasync/s x B, flush-never "
            "records/s)\n", name, (unsigned long long)((double)c.asked / secs),
            r.rate / r.ceiling);
    log_drop(bn, &lg);
}

static uint8_t fetched[2 * FETCH_MAX]; /* a range is at most FETCH_MAX (batches < 1 MiB) */

/* The range from read() at offset, checked: it starts with the batch holding offset and
 * holds whole batches of blen bytes. With copy, its bytes are pread as sendfile would read
 * them, and every batch header in them is checked. Returns the offset after the range. */
static uint64_t read_range(struct bench *bn, struct log *lg, uint64_t offset, size_t blen,
                           uint32_t per, bool copy, uint64_t *bytes)
{
    struct wr_log_slice slice = {.fd = -1};
    struct wr_error err = {0};
    if (bn->log->read(lg->state, 0, offset, FETCH_MAX, &slice, &err) != WR_OK)
        die("read", err.msg);
    if (slice.length == 0 || slice.length % blen || slice.length > sizeof fetched ||
        slice.base_offset != offset)
        die("read", "a range that does not hold whole batches from the offset asked for");
    uint64_t batches = slice.length / blen;
    if (copy) {
        ssize_t got = pread(slice.fd, fetched, slice.length, (off_t)slice.file_offset);
        if (got != (ssize_t)slice.length)
            die("pread", got < 0 ? strerror(errno) : "short read");
        for (uint64_t i = 0; i < batches; i++) {
            struct lb_header h;
            if (!lb_header_read(fetched + i * blen, blen, &h) ||
                h.base_offset != offset + i * per || h.record_count != per)
                die("read", "a batch that is not the one appended there");
        }
    }
    close(slice.fd);
    *bytes += slice.length;
    return offset + batches * per;
}

/* A log of 100-byte records (flush = never) read back from offset 0 to its end three ways:
 * file ranges alone, file ranges pread, and read_msgs. */
static void bench_log_read(struct bench *bn)
{
    const char *name = "log-read-100B";
    uint32_t per = 0;
    size_t blen = build_batch(batch, BATCH_SIZE, 100, UINT32_MAX, now_ms(), &per);
    struct log lg;
    log_open(bn, &lg, name, "never");
    uint64_t batches = sc->log_read / blen;
    for (uint64_t i = 0; i < batches; i++)
        append(bn, &lg, blen, i * per);
    struct sync_count c = {0, 0, WR_OK};
    log_sync(bn, &lg, &c);
    log_settle(bn, &c);
    uint64_t latest = batches * per;
    check_latest(bn, &lg, latest, name);

    quiesce();
    for (int copy = 0; copy < 2; copy++) {
        uint64_t offset = 0, bytes = 0;
        double t0 = now_s();
        while (offset < latest && now_s() - t0 < sc->cap)
            offset = read_range(bn, &lg, offset, blen, per, copy, &bytes);
        double secs = now_s() - t0;
        add_row(copy ? "log-read-ranges-pread-100B" : "log-read-ranges-100B",
                &(struct row){.count = offset, .secs = secs, .rate = (double)offset / secs,
                              .mb_s = (double)bytes / 1e6 / secs, .ratio = -1});
    }

    struct wr_log_entry out[READ_MSGS];
    struct wr_error err = {0};
    uint64_t offset = 0;
    double t0 = now_s();
    while (offset < latest && now_s() - t0 < sc->cap) {
        size_t n = 0;
        if (bn->log->read_msgs(lg.state, 0, offset, out, READ_MSGS, &n, &err) != WR_OK)
            die("read_msgs", err.msg);
        if (n == 0)
            die("read_msgs", "the end of the log before its latest offset");
        bool ok = true;
        for (size_t i = 0; i < n; i++) {
            ok = ok && out[i].offset == offset + i && out[i].msg->body.len == 100;
            wr_msg_unref(out[i].msg);
        }
        if (!ok)
            die("read_msgs", "a record out of sequence or of the wrong size");
        offset += n;
    }
    double secs = now_s() - t0;
    add_row("log-read-msgs-100B", &(struct row){.count = offset, .secs = secs,
                                                 .rate = (double)offset / secs,
                                                 .mb_s = (double)(offset * 100) / 1e6 / secs,
                                                 .ratio = -1});
    log_drop(bn, &lg);
}

/* Loads the log plugin and checks it has the ops these cases call. */
static void log_load(struct bench *bn, const char *const *dirs)
{
    struct wr_error err = {0};
    if (wr_broker_load_plugin(bn->b, "log", NULL, dirs, WR_PLUGIN_STORAGE, &bn->log_ctx, &err))
        die("load plugin", err.msg);
    const struct wr_storage_ops *ops = wr_plugin_ctx_plugin(bn->log_ctx)->ops;
    if (ops->model != WR_STORAGE_LOG ||
        ops->size < offsetof(struct wr_storage_ops, offsets) + sizeof ops->offsets ||
        !ops->append_batch || !ops->append_msgs || !ops->read || !ops->read_msgs ||
        !ops->offsets || !ops->sync)
        die("load plugin", "log: not a log-model storage with the ops this bench calls");
    bn->log = ops;
}

static void print_table(void)
{
    printf("\n%-30s %10s %8s %12s %9s %7s  %s\n", "case", "count", "secs", "per s", "MB/s",
           "ratio", "ratio of");
    for (size_t i = 0; i < nrows; i++) {
        const struct row *r = &rows[i];
        if (i == 0 || strcmp(r->backend, rows[i - 1].backend) != 0)
            printf("-- %s\n", r->backend);
        char mb[16] = "-", ratio[16] = "-";
        if (r->mb_s >= 0)
            snprintf(mb, sizeof mb, "%.1f", r->mb_s);
        if (r->ratio >= 0)
            snprintf(ratio, sizeof ratio, "%.3f", r->ratio);
        printf("%-30s %10llu %8.3f %12.0f %9s %7s  %s\n", r->name,
               (unsigned long long)r->count, r->secs, r->rate, mb, ratio,
               r->ratio >= 0 ? r->ratio_of : "");
    }
}

static const char *const modes[] = {"never", "interval", "always"};

/* The disk's limits, measured again before each backend's cases: on a VM they drift as the
 * host's cache fills and drains, and a backend is read against the limits of its moment. */
static void measure_limits(struct bench *bn)
{
    bn->seq_mb_s = seq_write(false, "disk-seq-write");
    seq_write(true, "disk-seq-write-fdatasync-1MiB");
    bn->fsyncs_per_s = fsync_rate();
}

static void run_queue(struct bench *bn, const char *const *dirs)
{
    backend = "queue";
    measure_limits(bn);
    struct wr_error err = {0};
    if (wr_broker_load_plugin(bn->b, "queue", NULL, dirs, WR_PLUGIN_STORAGE, NULL, &err))
        die("load plugin", err.msg);
    for (size_t m = 0; m < 3; m++) {
        bench_enqueue(bn, modes[m], 100, sc->enqueue_max);
        bench_enqueue(bn, modes[m], 1024, sc->enqueue_max / 4);
    }
    for (uint64_t size = 1; size <= 1000; size *= 10)
        bench_group(bn, size);
    bench_drain(bn);
}

static void run_log(struct bench *bn, const char *const *dirs)
{
    backend = "log";
    measure_limits(bn);
    log_load(bn, dirs);
    for (size_t m = 0; m < 3; m++) {
        bench_log_append(bn, modes[m], 100);
        bench_log_append(bn, modes[m], 1024);
    }
    bench_log_msgs(bn);
    for (uint32_t size = 1; size <= 1000; size *= 10)
        bench_log_group(bn, size);
    bench_log_read(bn);
}

int main(int argc, char **argv)
{
    const char *parent = "/tmp", *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            sc = &quick;
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            parent = argv[++i];
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc &&
                   (strcmp(argv[i + 1], "queue") == 0 || strcmp(argv[i + 1], "log") == 0)) {
            only = argv[++i];
        } else {
            fprintf(stderr, "usage: %s [--quick] [--dir DIR] [--only queue|log]\n", argv[0]);
            return 2;
        }
    }
    snprintf(scratch, sizeof scratch, "%s/warren-storage-bench-XXXXXX", parent);
    if (!mkdtemp(scratch)) {
        fprintf(stderr, "storage_bench: mkdtemp %s: %s\n", scratch, strerror(errno));
        return 1;
    }
    fprintf(stderr, "storage_bench: scratch directory %s\n", scratch);

    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < MIB; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        chunk[i] = (uint8_t)x;
    }
    memcpy(body, chunk, sizeof body);

    struct bench bn = {0};

    struct wr_error err = {0};
    snprintf(bn.data_dir, sizeof bn.data_dir, "%s/data", scratch);
    if (mkdir(bn.data_dir, 0700) != 0)
        die(bn.data_dir, strerror(errno));
    if (wr_loop_new(&bn.lp, &err) != WR_OK || wr_broker_new(bn.lp, bn.data_dir, &bn.b, &err))
        die("setup", err.msg);
    static const char *const dirs[] = {WR_BENCH_PLUGIN_DIR, NULL};
    static const char *const exchanges[] = {"direct", "fanout", "topic", "headers"};
    for (size_t i = 0; i < 4; i++)
        if (wr_broker_load_plugin(bn.b, exchanges[i], NULL, dirs, WR_PLUGIN_EXCHANGE, NULL,
                                  &err))
            die("load plugin", err.msg);
    if (wr_vhost_add(bn.b, "/", &bn.vh, &err) != WR_OK)
        die("setup", err.msg);
    bn.dflt = wr_exchange_find(bn.vh, "");

    if (!only || strcmp(only, "queue") == 0)
        run_queue(&bn, dirs);
    if (!only || strcmp(only, "log") == 0)
        run_log(&bn, dirs);

    wr_broker_free(bn.b);
    wr_loop_free(bn.lp);
    print_table();
    remove_scratch();
    return 0;
}
