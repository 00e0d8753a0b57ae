/*
 * forward_test.c: forward_to, a log queue that publishes every record it takes to an
 * exchange. Driven through a server built from YAML (the config key, the start-up checks and
 * the shutdown wiring are part of what is tested) with the real `log`, `queue` and `memory`
 * storages: Kafka batches and AMQP publishes arrive once each, in order per partition, with
 * the record key as routing key and the record headers; a clean stop in the middle of a
 * backlog repeats and loses nothing; a crash loses nothing; a route back into the source is
 * not followed; a deleted exchange stops forwarding until it is back; a deleted queue takes
 * its forwarder and offsets with it.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "testutil.h"

static char data_dir[256];
static struct wr_server *srv;

static void setup(void)
{
    snprintf(data_dir, sizeof data_dir, "/tmp/warren-forward-XXXXXX");
    cr_assert_not_null(mkdtemp(data_dir));
}

static void teardown(void)
{
    wr_server_free(srv);
    srv = NULL;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", data_dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(forward, .init = setup, .fini = teardown, .timeout = 120);

/* ---- a server from YAML --------------------------------------------------------------- */

/* The topology every test starts from: log `src` (partitions) forwarding to topic exchange
 * `fx`, which routes everything to `out` (storage out_storage). */
static const char topology[] =
    "broker: {data_dir: '%s', plugin_dirs: ['" WR_TEST_PLUGIN_DIR "'], log_level: error}\n"
    "listeners: []\n"
    "vhosts:\n"
    "  - name: /\n"
    "    exchanges:\n"
    "      - {name: fx, type: topic, durable: true}\n"
    "    queues:\n"
    "      - {name: src, storage: log, durable: true, partitions: %d, forward_to: fx}\n"
    "      - {name: out, storage: %s, durable: true}\n"
    "    bindings:\n"
    "      - {exchange: fx, queue: out, key: \"#\"}\n";

static int server_new(const char *yaml, struct wr_server **out, struct wr_error *err)
{
    struct wr_config *cfg = NULL;
    int rc = wr_config_load_string("forward.yaml", yaml, strlen(yaml), &cfg, err);
    if (rc == WR_OK)
        rc = wr_server_new(cfg, NULL, out, err);
    wr_config_free(cfg);
    return rc;
}

static void start(int partitions, const char *out_storage)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml, topology, data_dir, partitions, out_storage);
    struct wr_error err = {0};
    cr_assert_eq(server_new(yaml, &srv, &err), WR_OK, "%s", err.msg);
}

static struct wr_loop *lp(void) { return wr_server_loop(srv); }
static struct wr_vhost *vh(void) { return wr_vhost_find(wr_server_broker(srv), "/"); }
static struct wr_queue *queue(const char *name) { return wr_queue_find(vh(), name); }

/* ---- Kafka batches (RecordBatch v2, uncompressed), as a producer sends them ----------- */

struct enc {
    uint8_t *p;
    size_t len, cap;
};

static void put(struct enc *e, const void *p, size_t n)
{
    if (e->len + n > e->cap) {
        e->cap = (e->len + n) * 2;
        e->p = realloc(e->p, e->cap);
        cr_assert_not_null(e->p);
    }
    memcpy(e->p + e->len, p, n);
    e->len += n;
}

static void put_be(struct enc *e, uint64_t v, int bytes)
{
    while (bytes--) {
        uint8_t c = (uint8_t)(v >> (8 * bytes));
        put(e, &c, 1);
    }
}

static void put_varint(struct enc *e, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    for (; z >= 0x80; z >>= 7)
        put_be(e, (z & 0x7f) | 0x80, 1);
    put_be(e, z, 1);
}

static void put_bytes(struct enc *e, const char *s)
{
    put_varint(e, (int64_t)strlen(s));
    put(e, s, strlen(s));
}

static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t crc = ~0u;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = crc >> 1 ^ (0x82f63b78u & -(crc & 1));
    }
    return ~crc;
}

/* Appends to partition p of src one batch of n records: key "k<p>", value "<p>:<first+i>",
 * headers id = the value and "h" = "v". */
static void produce(uint32_t p, int first, int n)
{
    struct enc recs = {0}, b = {0};
    for (int i = 0; i < n; i++) {
        char key[16], value[32];
        snprintf(key, sizeof key, "k%u", p);
        snprintf(value, sizeof value, "%u:%d", p, first + i);
        struct enc r = {0};
        put_be(&r, 0, 1);     /* attributes */
        put_varint(&r, 0);    /* timestamp delta */
        put_varint(&r, i);    /* offset delta */
        put_bytes(&r, key);
        put_bytes(&r, value);
        put_varint(&r, 2);    /* headers */
        put_bytes(&r, "id");
        put_bytes(&r, value);
        put_bytes(&r, "h");
        put_bytes(&r, "v");
        put_varint(&recs, (int64_t)r.len);
        put(&recs, r.p, r.len);
        free(r.p);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000; /* inside retention */
    put_be(&b, 0, 8);                 /* base offset: the log sets it */
    put_be(&b, 49 + recs.len, 4);     /* batch length */
    put_be(&b, 0, 4);                 /* leader epoch */
    put_be(&b, 2, 1);                 /* magic */
    put_be(&b, 0, 4);                 /* crc, below */
    put_be(&b, 0, 2);                 /* attributes: uncompressed */
    put_be(&b, (uint64_t)n - 1, 4);   /* last offset delta */
    put_be(&b, (uint64_t)now, 8);
    put_be(&b, (uint64_t)now, 8);
    put_be(&b, UINT64_MAX, 8);        /* producer id -1 */
    put_be(&b, 0xffff, 2);
    put_be(&b, 0xffffffff, 4);
    put_be(&b, (uint64_t)n, 4);
    put(&b, recs.p, recs.len);
    uint32_t crc = crc32c(b.p + 21, b.len - 21);
    for (int i = 0; i < 4; i++)
        b.p[17 + i] = (uint8_t)(crc >> (24 - 8 * i));
    uint64_t base = 0;
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_append_batch(queue("src"), p, b.p, b.len, &base, &err), WR_OK, "%s",
                 err.msg);
    free(recs.p);
    free(b.p);
}

/* ---- what arrives ------------------------------------------------------------------- */

static bool text_is(const struct wr_value *v, const char *s)
{
    return v && (v->type == WR_V_STR || v->type == WR_V_BYTES) && v->u.s.len == strlen(s) &&
           memcmp(v->u.s.ptr, s, v->u.s.len) == 0;
}

struct seen {
    int *count;          /* per record: how many times it arrived, [p * per + i] */
    int per;             /* records per partition */
    int next[8];         /* per partition: the index expected next (first arrivals) */
    int total, dups;
};

static bool depth_is(void *data)
{
    struct wr_queue *q = queue("out");
    return q && wr_queue_depth(q) >= *(uint64_t *)data;
}

static void wait_depth(uint64_t n)
{
    cr_assert(tu_wait(lp(), depth_is, &n, 20000), "out has %llu messages, not %llu",
              (unsigned long long)wr_queue_depth(queue("out")), (unsigned long long)n);
}

/* Takes every message of out and counts it in s, checking what each carries. in_order:
 * first arrivals must come in offset order per partition. */
static void take_all(struct seen *s, bool in_order)
{
    struct wr_delivery d;
    struct wr_error err = {0};
    while (wr_queue_get(queue("out"), true, &d, &err) == WR_OK) {
        const struct wr_msg *m = d.msg;
        const struct wr_value *id = wr_table_get(m->headers, "id");
        cr_assert_not_null(id, "a forwarded record keeps its headers");
        cr_assert(text_is(wr_table_get(m->headers, "h"), "v"));
        cr_assert_null(wr_table_get(m->headers, "x-stream-offset"));
        char idtext[32] = {0};
        memcpy(idtext, id->u.s.ptr, id->u.s.len < 31 ? id->u.s.len : 31);
        unsigned p = 0;
        int i = -1;
        cr_assert_eq(sscanf(idtext, "%u:%d", &p, &i), 2, "id '%s'", idtext);
        cr_assert(p < 8 && i >= 0 && i < s->per, "id '%s'", idtext);
        char key[16];
        snprintf(key, sizeof key, "k%u", p);
        cr_assert_eq(m->routing_key.len, strlen(key));
        cr_assert_eq(memcmp(m->routing_key.ptr, key, strlen(key)), 0,
                     "the routing key is the record key");
        cr_assert_eq(m->body.len, strlen(idtext));
        cr_assert_eq(memcmp(wr_slice_ptr(&m->body), idtext, m->body.len), 0);
        cr_assert_eq(m->exchange.len, 2, "published to fx");
        if (s->count[p * s->per + i]++ == 0) {
            if (in_order)
                cr_assert_eq(i, s->next[p], "partition %u: %d arrived, %d expected", p, i,
                             s->next[p]);
            s->next[p] = i + 1;
            s->total++;
        } else {
            s->dups++;
        }
        wr_msg_unref(d.msg);
    }
}

static void seen_init(struct seen *s, int partitions, int per)
{
    *s = (struct seen){.per = per};
    s->count = calloc((size_t)(partitions * per), sizeof *s->count);
    cr_assert_not_null(s->count);
}

/* ---- tests -------------------------------------------------------------------------- */

Test(forward, kafka_records_arrive_once_in_order_with_key_and_headers)
{
    start(3, "memory");
    for (int round = 0; round < 4; round++)
        for (uint32_t p = 0; p < 3; p++)
            produce(p, round * 50, 50);
    wait_depth(600);
    struct seen s;
    seen_init(&s, 3, 200);
    take_all(&s, true);
    cr_assert_eq(s.total, 600);
    cr_assert_eq(s.dups, 0);

    /* An AMQP publish into the log is forwarded as read_msgs gives it: its own routing
     * key, headers and properties. */
    struct wr_table *h = wr_table_new();
    struct wr_value v = wr_value_str("amqp");
    cr_assert_eq(wr_table_add(h, "from", &v), WR_OK);
    struct wr_msg *m = tu_msg("src", "hello", h);
    uint32_t refused = 0;
    struct wr_error err = {0};
    cr_assert_eq(wr_publish(wr_exchange_find(vh(), ""), m, &refused, &err), 1);
    wr_msg_unref(m);
    wr_table_free(h);
    wait_depth(1);
    struct wr_delivery d;
    cr_assert_eq(wr_queue_get(queue("out"), true, &d, &err), WR_OK);
    cr_assert(text_is(wr_table_get(d.msg->headers, "from"), "amqp"));
    cr_assert_null(wr_table_get(d.msg->headers, "x-stream-offset"));
    cr_assert_eq(d.msg->routing_key.len, 3);
    cr_assert_eq(memcmp(wr_slice_ptr(&d.msg->body), "hello", 5), 0);
    wr_msg_unref(d.msg);
    tu_drain(lp(), 200);
    cr_assert_eq(wr_queue_depth(queue("out")), 0, "forwarded once");
    free(s.count);
}

static void stop_now(struct wr_loop *loop, void *data)
{
    (void)loop;
    wr_server_stop(data);
}

Test(forward, a_clean_stop_in_the_middle_repeats_and_loses_nothing)
{
    enum { PER = 20000 };
    start(2, "queue");
    for (int i = 0; i < PER; i += 500)
        for (uint32_t p = 0; p < 2; p++)
            produce(p, i, 500);
    /* Stop as SIGTERM does, after the first round of forwarding: the server stops the
     * forwarders, drains the sync barriers and frees everything. */
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_defer(lp(), stop_now, srv), WR_OK);
    cr_assert_eq(wr_server_run(srv, &err), WR_OK, "%s", err.msg);
    uint64_t before = wr_queue_depth(queue("out"));
    cr_assert(before > 0 && before < 2 * PER, "stopped with %llu of %d forwarded",
              (unsigned long long)before, 2 * PER);
    wr_server_free(srv);
    srv = NULL;

    start(2, "queue");
    wait_depth(2 * PER);
    struct seen s;
    seen_init(&s, 2, PER);
    take_all(&s, true);
    cr_assert_eq(s.total, 2 * PER);
    cr_assert_eq(s.dups, 0, "a clean stop records every offset it forwarded");
    tu_drain(lp(), 200);
    cr_assert_eq(wr_queue_depth(queue("out")), 0);
    free(s.count);
}

static bool some_forwarded(void *data)
{
    (void)data;
    return wr_queue_depth(queue("out")) > 0;
}

Test(forward, a_crash_may_repeat_but_never_loses)
{
    enum { PER = 5000 };
    start(1, "queue");
    for (int i = 0; i < PER; i += 500)
        produce(0, i, 500);
    cr_assert(tu_wait(lp(), some_forwarded, NULL, 10000));
    /* Freed with a barrier possibly in flight and no drain, as close to kill -9 as a unit
     * test gets: what was published after the last recorded offset comes again. */
    wr_server_free(srv);
    srv = NULL;
    start(1, "queue");
    struct seen s;
    seen_init(&s, 1, PER);
    for (int i = 0; i < 100 && s.total < PER; i++) {
        uint64_t one = 1;
        tu_wait(lp(), depth_is, &one, 200);
        take_all(&s, false);
    }
    cr_assert_eq(s.total, PER, "every record arrives");
    free(s.count);
}

Test(forward, a_route_back_into_the_source_is_not_followed)
{
    start(1, "memory");
    struct wr_error err = {0};
    cr_assert_eq(wr_bind_queue(wr_exchange_find(vh(), "fx"), queue("src"), "#", NULL, &err),
                 WR_OK, "%s", err.msg);
    produce(0, 0, 10);
    wait_depth(10);
    tu_drain(lp(), 300);
    uint64_t first = 0, latest = 0;
    cr_assert_eq(wr_queue_offsets(queue("src"), 0, &first, &latest), WR_OK);
    cr_assert_eq(latest, 10, "nothing forwarded went back into the log");
    cr_assert_eq(wr_queue_depth(queue("out")), 10);
}

Test(forward, a_deleted_exchange_stops_forwarding_until_it_is_back)
{
    start(1, "memory");
    produce(0, 0, 5);
    wait_depth(5);
    struct wr_error err = {0};
    cr_assert_eq(wr_exchange_delete(wr_exchange_find(vh(), "fx"), false, &err), WR_OK, "%s",
                 err.msg);
    produce(0, 5, 5);
    tu_drain(lp(), 300);
    cr_assert_eq(wr_queue_depth(queue("out")), 5, "nothing forwarded without its exchange");

    /* Declared and bound again: the next record resumes from where forwarding stopped. */
    struct wr_exchange_decl decl = {"fx", "topic", true, false, false, NULL};
    struct wr_exchange *fx = NULL;
    cr_assert_eq(wr_exchange_declare(vh(), &decl, &fx, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_bind_queue(fx, queue("out"), "#", NULL, &err), WR_OK, "%s", err.msg);
    produce(0, 10, 5);
    wait_depth(15);
    struct seen s;
    seen_init(&s, 1, 15);
    take_all(&s, true);
    cr_assert_eq(s.total, 15);
    free(s.count);
}

Test(forward, a_deleted_queue_takes_its_forwarder_and_offsets)
{
    start(1, "memory");
    produce(0, 0, 5);
    wait_depth(5);
    char path[512];
    snprintf(path, sizeof path, "%s/%%2F/src/forward.offsets", data_dir);
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "the offsets live in the queue's directory");
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_delete(queue("src"), false, false, NULL, &err), WR_OK, "%s", err.msg);
    cr_assert_neq(stat(path, &st), 0);
    tu_drain(lp(), 200);
}

static void expect_startup_error(const char *yaml_tail, const char *msg)
{
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "broker: {data_dir: '%s', plugin_dirs: ['" WR_TEST_PLUGIN_DIR "']}\n"
             "listeners: []\n%s", data_dir, yaml_tail);
    struct wr_server *s = NULL;
    struct wr_error err = {0};
    cr_assert_neq(server_new(yaml, &s, &err), WR_OK);
    cr_assert_null(s);
    cr_assert_str_eq(err.msg, msg);
}

Test(forward, startup_refuses_forward_to_without_a_log_or_an_exchange)
{
    expect_startup_error("vhosts:\n"
                         "  - name: /\n"
                         "    exchanges: [{name: fx, type: fanout}]\n"
                         "    queues:\n"
                         "      - {name: q, storage: queue, forward_to: fx}\n",
                         "forward.yaml:7:47: vhosts[0].queues[0].forward_to: forward_to needs "
                         "a queue on a log-model storage (such as log), but storage 'queue' is "
                         "of the queue model");
    expect_startup_error("vhosts:\n"
                         "  - name: /\n"
                         "    queues:\n"
                         "      - {name: q, storage: log, forward_to: nowhere}\n",
                         "forward.yaml:6:45: vhosts[0].queues[0].forward_to: no exchange "
                         "'nowhere' in vhost '/' (declare it under exchanges)");
}
