/*
 * queue_log_test.c: queues on a log-model storage (streams), as the core serves them to a
 * transport: publish appends, every consumer reads every record from its own offset
 * (x-stream-offset: first, last, next, an offset, a timestamp), acks are credit, get and
 * purge do not apply, sync barriers cover appends, records outlive the broker, and a stream
 * grows partitions that publishes then hash over.
 * Driven through the public broker API with the real `log` plugin.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testutil.h"

static struct tu_broker t;

static void setup(void)
{
    tu_broker_init(&t);
    struct wr_error err = {0};
    const char *const dirs[] = {WR_TEST_PLUGIN_DIR, NULL};
    cr_assert_eq(wr_broker_load_plugin(t.b, "log", NULL, dirs, WR_PLUGIN_STORAGE, NULL, &err),
                 WR_OK, "%s", err.msg);
}

static void teardown(void) { tu_broker_fini(&t); }

TestSuite(queue_log, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers --------------------------------------------------------------------------- */

static struct wr_queue *stream(const char *name)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, name);
    decl.storage = "log";
    decl.durable = true;
    struct wr_queue *q = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q, &err), WR_OK, "%s", err.msg);
    cr_assert(wr_queue_is_log(q));
    return q;
}

/* Publishes body to the default exchange with routing key q's name and timestamp ts_ms
 * (0: now). */
static void publish(struct wr_queue *q, const char *body, int64_t ts_ms)
{
    struct wr_msg_init init = {.routing_key = wr_str_c(wr_queue_name(q)),
                               .body_ptr = body,
                               .body_len = strlen(body),
                               .timestamp_ms = ts_ms};
    struct wr_msg *m = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_new(&init, &m, &err), WR_OK);
    uint32_t refused = 0;
    cr_assert_eq(wr_publish(wr_exchange_find(t.vh, ""), m, &refused, &err), 1, "%s", err.msg);
    wr_msg_unref(m);
}

#define MAX_GOT 64

struct reader {
    struct wr_consumer *c;
    char bodies[MAX_GOT][16];
    int64_t offsets[MAX_GOT];
    uint64_t tags[MAX_GOT];
    bool redelivered;
    int n;
};

static void on_deliver(struct wr_consumer *c, const struct wr_delivery *d, void *data)
{
    (void)c;
    struct reader *r = data;
    cr_assert_lt(r->n, MAX_GOT);
    size_t len = 0;
    const uint8_t *body = wr_msg_body(d->msg, &len);
    cr_assert_lt(len, sizeof r->bodies[0]);
    memcpy(r->bodies[r->n], body, len);
    r->bodies[r->n][len] = '\0';
    int64_t off = -1;
    cr_assert(wr_table_get_int(d->msg->headers, "x-stream-offset", &off),
              "a stream delivery carries x-stream-offset");
    r->offsets[r->n] = off;
    r->tags[r->n] = d->tag;
    r->redelivered |= d->redelivered;
    r->n++;
}

static const struct wr_consumer_ops reader_ops = {.size = sizeof reader_ops,
                                                  .deliver = on_deliver};

/* Starts a consumer delivering into r, which must be zeroed or used by consume before. */
static void consume(struct wr_queue *q, struct reader *r, uint32_t prefetch,
                    enum wr_stream_start start, int64_t at)
{
    if (r->c) /* a reader is reused: its last consumer stops first */
        wr_consumer_cancel(r->c, false);
    memset(r, 0, sizeof *r);
    struct wr_consume_args args = {.prefetch = prefetch, .stream_start = start,
                                   .stream_at = at};
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_consume(q, &reader_ops, &args, r, &r->c, &err), WR_OK, "%s",
                 err.msg);
}

static struct reader *waiting;
static int waiting_for;

static bool got_enough(void *data)
{
    (void)data;
    return waiting->n >= waiting_for;
}

/* Runs the loop until r has n deliveries (failing after 5 s), then lets it settle so that a
 * delivery too many would show. */
static void expect_n(struct reader *r, int n)
{
    waiting = r;
    waiting_for = n;
    cr_assert(tu_wait(t.lp, got_enough, NULL, 5000), "%d deliveries of %d", r->n, n);
    tu_drain(t.lp, 1000);
    cr_assert_eq(r->n, n);
}

static void expect_bodies(const struct reader *r, const char *const *want, int n)
{
    cr_assert_eq(r->n, n);
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(r->bodies[i], want[i], "delivery %d", i);
}

/* ---- tests ----------------------------------------------------------------------------- */

Test(queue_log, consumers_read_from_first_in_order_with_offsets)
{
    struct wr_queue *q = stream("s");
    const char *const all[] = {"m0", "m1", "m2", "m3", "m4"};
    for (int i = 0; i < 5; i++)
        publish(q, all[i], 0);
    cr_assert_eq(wr_queue_depth(q), 5);
    struct reader r = {0};
    consume(q, &r, 10, WR_STREAM_FIRST, 0);
    expect_n(&r, 5);
    expect_bodies(&r, all, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(r.offsets[i], i);
    cr_assert_not(r.redelivered);
    /* A record read stays: the log keeps it after the ack. */
    for (int i = 0; i < 5; i++)
        cr_assert_eq(wr_consumer_ack(r.c, r.tags[i], NULL), WR_OK);
    cr_assert_eq(wr_queue_depth(q), 5);
}

Test(queue_log, acks_are_credit)
{
    struct wr_queue *q = stream("s");
    const char *const all[] = {"a", "b", "c", "d", "e"};
    for (int i = 0; i < 5; i++)
        publish(q, all[i], 0);
    struct reader r = {0};
    consume(q, &r, 2, WR_STREAM_FIRST, 0);
    expect_n(&r, 2);
    cr_assert_eq(wr_consumer_ack(r.c, r.tags[0], NULL), WR_OK);
    expect_n(&r, 3);
    /* A nack frees credit too, and never hands the record out again. */
    cr_assert_eq(wr_consumer_nack(r.c, r.tags[1], true, NULL), WR_OK);
    cr_assert_eq(wr_consumer_nack(r.c, r.tags[2], false, NULL), WR_OK);
    expect_n(&r, 5);
    expect_bodies(&r, all, 5);
    cr_assert_not(r.redelivered);
}

Test(queue_log, every_consumer_reads_every_record)
{
    struct wr_queue *q = stream("s");
    struct reader r1 = {0}, r2 = {0};
    consume(q, &r1, 100, WR_STREAM_NEXT, 0);
    consume(q, &r2, 100, WR_STREAM_NEXT, 0);
    const char *const all[] = {"x", "y", "z"};
    for (int i = 0; i < 3; i++)
        publish(q, all[i], 0);
    expect_n(&r1, 3);
    expect_n(&r2, 3);
    expect_bodies(&r1, all, 3);
    expect_bodies(&r2, all, 3);
}

Test(queue_log, start_positions)
{
    struct wr_queue *q = stream("s");
    /* Recent enough that retention by age (7 days by default) keeps them. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    const int64_t base = (int64_t)now.tv_sec * 1000 - 60000;
    const char *const all[] = {"t0", "t1", "t2", "t3"};
    for (int i = 0; i < 4; i++)
        publish(q, all[i], base + i * 1000);
    struct reader r = {0};
    consume(q, &r, 10, WR_STREAM_LAST, 0);
    expect_n(&r, 1);
    expect_bodies(&r, all + 3, 1);
    consume(q, &r, 10, WR_STREAM_NEXT, 0);
    expect_n(&r, 0);
    consume(q, &r, 10, WR_STREAM_OFFSET, 2);
    expect_n(&r, 2);
    expect_bodies(&r, all + 2, 2);
    consume(q, &r, 10, WR_STREAM_OFFSET, -1); /* below the first: from the first */
    expect_n(&r, 4);
    consume(q, &r, 10, WR_STREAM_OFFSET, 100); /* past the end: what comes next */
    expect_n(&r, 0);
    consume(q, &r, 10, WR_STREAM_TIMESTAMP, base + 1500);
    expect_n(&r, 2);
    expect_bodies(&r, all + 2, 2);
    consume(q, &r, 10, WR_STREAM_TIMESTAMP, base + 1000);
    expect_n(&r, 3);
    expect_bodies(&r, all + 1, 3);
    consume(q, &r, 10, WR_STREAM_TIMESTAMP, base + 99000); /* every record older: next */
    expect_n(&r, 0);
    publish(q, "later", 0);
    expect_n(&r, 1);
    cr_assert_str_eq(r.bodies[0], "later");
}

Test(queue_log, get_and_purge_do_not_apply)
{
    struct wr_queue *q = stream("s");
    publish(q, "kept", 0);
    struct wr_delivery d;
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_get(q, true, &d, &err), WR_EINVAL);
    cr_assert(strstr(err.msg, "stream"), "%s", err.msg);
    cr_assert_eq(wr_queue_purge(q), 0);
    cr_assert_eq(wr_queue_depth(q), 1);
    cr_assert_eq(wr_queue_unacked(q), 0);
}

/* Frees the broker and makes a new one on the same data directory. */
static void reopen(void)
{
    wr_broker_free(t.b);
    wr_loop_free(t.lp);
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_new(&t.lp, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_broker_new(t.lp, t.data_dir, &t.b, &err), WR_OK, "%s", err.msg);
    const char *const dirs[] = {WR_TEST_PLUGIN_DIR, NULL};
    static const char *const plugins[] = {"direct", "fanout", "topic", "headers", "memory",
                                          "log"};
    for (size_t i = 0; i < sizeof plugins / sizeof plugins[0]; i++)
        cr_assert_eq(wr_broker_load_plugin(t.b, plugins[i], NULL, dirs, 0, NULL, &err), WR_OK,
                     "%s", err.msg);
    cr_assert_eq(wr_vhost_add(t.b, "/", &t.vh, &err), WR_OK, "%s", err.msg);
}

static int sync_status = 1;

static void on_synced(void *data, int status)
{
    (void)data;
    sync_status = status;
}

static bool synced(void *data)
{
    (void)data;
    return sync_status != 1;
}

Test(queue_log, records_survive_the_broker)
{
    struct wr_queue *q = stream("s");
    const char *const all[] = {"p0", "p1", "p2"};
    for (int i = 0; i < 3; i++)
        publish(q, all[i], 0);
    cr_assert_not_null(wr_broker_sync(t.b, on_synced, NULL));
    cr_assert(tu_wait(t.lp, synced, NULL, 5000), "the sync barrier did not complete");
    cr_assert_eq(sync_status, WR_OK);

    /* A new broker on the same data directory: the stream's records are there. */
    reopen();
    q = stream("s");
    cr_assert_eq(wr_queue_depth(q), 3);
    struct reader r = {0};
    consume(q, &r, 10, WR_STREAM_FIRST, 0);
    expect_n(&r, 3);
    expect_bodies(&r, all, 3);
}

/* ---- by offset, as a Kafka transport uses a log queue ----------------------------------- */

static int watched;
static bool watched_deleted;
static struct wr_queue_watch *self_cancelling;

static void on_append(struct wr_queue *q, void *data)
{
    (void)data;
    watched++;
    watched_deleted = wr_queue_is_deleted(q);
    if (self_cancelling) {
        wr_queue_unwatch(self_cancelling);
        self_cancelling = NULL;
    }
}

static bool watched_once(void *data)
{
    return watched >= *(int *)data;
}

Test(queue_log, batches_offsets_and_watches)
{
    struct wr_queue *q = stream("s");
    cr_assert_eq(wr_queue_partitions(q), 1);
    publish(q, "first", 0);
    publish(q, "second", 0);
    uint64_t earliest = 9, latest = 9;
    cr_assert_eq(wr_queue_offsets(q, 0, &earliest, &latest), WR_OK);
    cr_assert_eq(earliest, 0);
    cr_assert_eq(latest, 2);

    /* The first batch as a fetch sends it, appended again as a producer would send it.
     * Publishes of one loop turn are appended together: the batch holds both. */
    struct wr_log_slice s;
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_read(q, 0, 0, 1, &s, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(s.base_offset, 0);
    uint8_t batch[4096];
    cr_assert_leq(s.length, sizeof batch);
    cr_assert_eq(pread(s.fd, batch, s.length, (off_t)s.file_offset), (ssize_t)s.length);
    close(s.fd);
    int want = 1;
    struct wr_queue_watch *w = wr_queue_watch(q, on_append, NULL);
    cr_assert_not_null(w);
    uint64_t base = 0;
    cr_assert_eq(wr_queue_append_batch(q, 0, batch, s.length, &base, &err), WR_OK, "%s",
                 err.msg);
    cr_assert_eq(base, 2);
    cr_assert(tu_wait(t.lp, watched_once, &want, 5000), "the watcher was not called");
    cr_assert_eq(wr_queue_offsets(q, 0, &earliest, &latest), WR_OK);
    cr_assert_eq(latest, 4, "one batch of the two publishes");
    uint64_t at = 0;
    int64_t ts = 0;
    cr_assert_eq(wr_queue_offset_for_time(q, 0, 0, &at, &ts), WR_OK);
    cr_assert_eq(at, 0);

    /* A stream consumer reads the appended batch like any record. */
    struct reader r = {0};
    consume(q, &r, 10, WR_STREAM_OFFSET, 2);
    expect_n(&r, 2);
    cr_assert_str_eq(r.bodies[0], "first");
    cr_assert_str_eq(r.bodies[1], "second");
    cr_assert_eq(r.offsets[0], 2);
    cr_assert_eq(r.offsets[1], 3);

    /* Many appends in one turn: one call. A watcher may cancel itself in its callback. */
    publish(q, "x", 0);
    publish(q, "y", 0);
    want = 2;
    self_cancelling = w;
    cr_assert(tu_wait(t.lp, watched_once, &want, 5000));
    tu_drain(t.lp, 500);
    cr_assert_eq(watched, 2);
    publish(q, "z", 0);
    tu_drain(t.lp, 500);
    cr_assert_eq(watched, 2, "a cancelled watch is not called");

    /* Bad partitions and queues that are not logs are refused; deletion is told. */
    cr_assert_eq(wr_queue_append_batch(q, 1, batch, s.length, &base, &err), WR_EINVAL);
    cr_assert_eq(wr_queue_offsets(q, 7, &earliest, &latest), WR_EINVAL);
    struct wr_queue *plain = tu_queue(&t, "plain");
    cr_assert_eq(wr_queue_read(plain, 0, 0, 100, &s, &err), WR_EINVAL);
    cr_assert_eq(wr_queue_partitions(plain), 0);
    w = wr_queue_watch(q, on_append, NULL);
    cr_assert_eq(wr_queue_delete(q, false, false, NULL, &err), WR_OK);
    cr_assert_eq(watched, 3);
    cr_assert(watched_deleted);
    wr_queue_unwatch(w); /* after the queue: still the caller's to free */
}

static void count_logs(struct wr_queue *q, void *data)
{
    *(int *)data += wr_queue_is_log(q);
}

Test(queue_log, listing_queues_and_their_options)
{
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "t3");
    decl.storage = "log";
    decl.durable = true;
    decl.partitions = 3;
    struct wr_table *opts = wr_table_new();
    struct wr_value v = wr_value_i64(3600000);
    cr_assert_eq(wr_table_add(opts, "retention_ms", &v), WR_OK);
    decl.options = opts;
    struct wr_queue *q = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_declare(t.vh, &decl, &q, &err), WR_OK, "%s", err.msg);
    wr_table_free(opts);
    int64_t ms = 0;
    cr_assert(wr_table_get_int(wr_queue_options(q), "retention_ms", &ms));
    cr_assert_eq(ms, 3600000);
    cr_assert_eq(wr_queue_partitions(q), 3);
    stream("s");
    struct wr_queue *plain = tu_queue(&t, "plain");
    cr_assert_eq(wr_queue_options(plain)->count, 0);
    int logs = 0;
    cr_assert_eq(wr_vhost_each_queue(t.vh, count_logs, &logs), 3);
    cr_assert_eq(logs, 2);
}

/* ---- adding partitions ---------------------------------------------------------------- */

static void publish_keyed(const char *key, const char *body)
{
    struct wr_msg_init init = {.routing_key = wr_str_c("s"),
                               .key = wr_str_c(key),
                               .body_ptr = body,
                               .body_len = strlen(body)};
    struct wr_msg *m = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_new(&init, &m, &err), WR_OK);
    cr_assert_eq(wr_publish(wr_exchange_find(t.vh, ""), m, NULL, &err), 1, "%s", err.msg);
    wr_msg_unref(m);
}

static uint64_t records_in(struct wr_queue *q, uint32_t partition)
{
    uint64_t earliest = 0, latest = 0;
    cr_assert_eq(wr_queue_offsets(q, partition, &earliest, &latest), WR_OK);
    return latest - earliest;
}

Test(queue_log, a_stream_grows_and_publishes_spread_over_its_new_partitions)
{
    struct wr_queue *q = stream("s");
    publish_keyed("k", "before");
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_add_partitions(q, 1, &err), WR_EINVAL, "a log never shrinks");
    cr_assert(strstr(err.msg, "can only grow"), "%s", err.msg);
    cr_assert_eq(wr_queue_add_partitions(q, 3, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_queue_partitions(q), 3);
    cr_assert_eq(records_in(q, 0), 1, "the records before stay where they were");

    char key[16];
    for (int i = 0; i < 64; i++) {
        snprintf(key, sizeof key, "k%d", i);
        publish_keyed(key, "after");
    }
    for (uint32_t p = 1; p < 3; p++)
        cr_assert_gt(records_in(q, p), 0, "keys hash over 3 partitions: %u got none", p);
    cr_assert_eq(wr_queue_depth(q), 65);

    uint8_t batch[8];
    uint64_t offset = 0;
    cr_assert_eq(wr_queue_append_batch(q, 3, batch, sizeof batch, &offset, &err), WR_EINVAL);

    struct wr_queue *plain = tu_queue(&t, "plain");
    cr_assert_eq(wr_queue_add_partitions(plain, 2, &err), WR_EINVAL);
    cr_assert(strstr(err.msg, "not a log"), "%s", err.msg);
}

/* Kafka's default partitioner: toPositive(murmur2(key)) % partitions. The hashes are those
 * Kafka's UtilsTest checks murmur2 against; the partitions follow from them. */
Test(queue_log, keys_pick_the_partition_a_kafka_producer_would)
{
    struct wr_queue *q = stream("s");
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_add_partitions(q, 7, &err), WR_OK, "%s", err.msg);
    static const struct {
        const char *key;
        int32_t murmur2;
    } vectors[] = {
        {"21", -973932308},
        {"foobar", -790332482},
        {"a-little-bit-long-string", -985981536},
        {"abc", 479470107},
    };
    uint64_t want[7] = {0};
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        publish_keyed(vectors[i].key, "v");
        uint32_t p = ((uint32_t)vectors[i].murmur2 & 0x7fffffff) % 7;
        want[p]++;
        for (uint32_t j = 0; j < 7; j++)
            cr_assert_eq(records_in(q, j), want[j], "after key '%s': partition %u",
                         vectors[i].key, j);
    }

    /* An x-kafka-partition header below the count (a routing script's choice) picks the
     * partition; one out of range is ignored and the key decides. */
    struct wr_table *ph = wr_table_new();
    struct wr_value pv = wr_value_i64(5);
    cr_assert_eq(wr_table_add(ph, "x-kafka-partition", &pv), WR_OK);
    struct wr_msg_init pinit = {.routing_key = wr_str_c("s"), .key = wr_str_c("21"),
                                .headers = ph, .body_ptr = "v", .body_len = 1};
    struct wr_msg *pm = NULL;
    cr_assert_eq(wr_msg_new(&pinit, &pm, &err), WR_OK);
    cr_assert_eq(wr_publish(wr_exchange_find(t.vh, ""), pm, NULL, &err), 1, "%s", err.msg);
    wr_msg_unref(pm);
    want[5]++;
    pv = wr_value_i64(7);
    cr_assert_eq(wr_table_set(ph, "x-kafka-partition", &pv), WR_OK);
    cr_assert_eq(wr_msg_new(&pinit, &pm, &err), WR_OK);
    cr_assert_eq(wr_publish(wr_exchange_find(t.vh, ""), pm, NULL, &err), 1, "%s", err.msg);
    wr_msg_unref(pm);
    wr_table_free(ph);
    want[3]++; /* "21" hashes to partition 3 of 7 */
    for (uint32_t j = 0; j < 7; j++)
        cr_assert_eq(records_in(q, j), want[j], "partition %u", j);

    /* Without a key, the routing key is the record key; an x-kafka-key header beats both. */
    struct wr_table *h = wr_table_new();
    struct wr_value v = wr_value_str("abc");
    cr_assert_eq(wr_table_add(h, "x-kafka-key", &v), WR_OK);
    struct wr_msg_init init = {.routing_key = wr_str_c("21"), .key = wr_str_c("foobar"),
                               .headers = h, .body_ptr = "v", .body_len = 1};
    struct wr_msg *m = NULL;
    cr_assert_eq(wr_msg_new(&init, &m, &err), WR_OK);
    struct wr_str k = wr_msg_record_key(m);
    cr_assert(k.len == 3 && !memcmp(k.ptr, "abc", 3));
    wr_msg_unref(m);
    wr_table_free(h);
    init = (struct wr_msg_init){.routing_key = wr_str_c("21"), .body_ptr = "v", .body_len = 1};
    cr_assert_eq(wr_msg_new(&init, &m, &err), WR_OK);
    k = wr_msg_record_key(m);
    cr_assert(k.len == 2 && !memcmp(k.ptr, "21", 2));
    wr_msg_unref(m);
}

/* Publishes wait for the end of the loop turn to be appended together, but nothing sees
 * them out of order: a producer's batch appended in between comes after the publishes made
 * before it, and a reader or a barrier appends what is pending first. */
Test(queue_log, pending_publishes_keep_their_order)
{
    struct wr_queue *q = stream("s");
    publish(q, "seed", 0);
    struct wr_log_slice s;
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_read(q, 0, 0, 1, &s, &err), WR_OK, "%s", err.msg);
    uint8_t batch[4096];
    cr_assert_leq(s.length, sizeof batch);
    cr_assert_eq(pread(s.fd, batch, s.length, (off_t)s.file_offset), (ssize_t)s.length);
    close(s.fd);

    publish(q, "a", 0);
    publish(q, "b", 0);
    uint64_t base = 0;
    cr_assert_eq(wr_queue_append_batch(q, 0, batch, s.length, &base, &err), WR_OK, "%s",
                 err.msg);
    cr_assert_eq(base, 3, "after seed, a and b");
    publish(q, "c", 0);
    cr_assert_eq(wr_queue_depth(q), 5, "a reader counts the pending publish");

    struct reader r = {0};
    consume(q, &r, 10, WR_STREAM_FIRST, 0);
    expect_n(&r, 5);
    const char *const want[] = {"seed", "a", "b", "seed", "c"};
    expect_bodies(&r, want, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(r.offsets[i], i);
}
