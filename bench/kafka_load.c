/*
 * kafka_load.c: a Kafka load generator on librdkafka, for warren's Kafka listener (or any
 * Kafka broker).
 *
 * Four modes on one topic, all of its partitions:
 *   produce   produce --count records and wait for every delivery report (acks per --acks);
 *   consume   read --count records from the start of every partition (filled beforehand);
 *   e2e       a producer thread and a consumer at once; the consumer starts at the high
 *             watermarks read before the producer starts, so it sees exactly the new records,
 *             and takes them in batches (throughput first);
 *   latency   e2e paced at --rate, measured record by record: the producer sleeps between
 *             records, the consumer takes one record per rd_kafka_consumer_poll and reads the
 *             clock as it returns, and fetches wait at most FETCH_WAIT_LATENCY_MS at the
 *             broker. One warm-up record goes through end to end first and is not counted,
 *             so connection set-up is not measured.
 * Every run stops after --count records or --time seconds, whichever comes first, and waits
 * at most DRAIN_S more for outstanding delivery reports.
 *
 * Each record's value starts with the CLOCK_MONOTONIC time it was produced and its sequence
 * number. The delivery report gives the ack latency (produce call to broker acknowledgement);
 * in e2e and latency modes the consumer, in the same process, gives the end-to-end latency.
 * consume --stamped reads records another process on this machine is producing into a fresh
 * topic (amqp_load publishing into a log, for bench/bridge_bench.sh): CLOCK_MONOTONIC is the
 * machine's, so it gives their end-to-end latency too, and its rate counts from the first
 * record's send time. With --rate (the producer's pace) it takes them record by record, as
 * latency mode does.
 *
 * Output: one JSON line on stdout and one line for people on stderr. Exit status: 0 complete,
 * 1 error (connection, delivery error, a record of the wrong size), 2 cut short by --time.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define STAMP_LEN 16                  /* produce time (ns) and sequence number, 8 bytes each */
#define MAX_COUNT 100000000ULL        /* the latency arrays hold 4 bytes per record each */
#define MAX_SIZE (1024u * 1024)
#define DRAIN_S 10.0                  /* the most a run waits for reports after --time */
#define CONSUME_BATCH 4096
#define MAX_PARTITIONS 1024
#define WARMUP_SEQ UINT64_MAX          /* the sequence number that marks the warm-up record */
#define WARMUP_S 10.0                 /* the most the warm-up record may take end to end */
#define FETCH_WAIT_LATENCY_MS "10"    /* latency mode: the longest a fetch may wait at the broker */

enum mode { MODE_PRODUCE, MODE_CONSUME, MODE_E2E, MODE_LATENCY, MODE_COUNT };
static const char *const mode_names[MODE_COUNT] = {"produce", "consume", "e2e", "latency"};

struct options {
    const char *brokers, *topic, *acks;
    enum mode mode;
    size_t size;
    uint64_t count;
    double time_limit;   /* seconds */
    double rate;         /* records/s; 0: as fast as possible */
    int linger_ms;
    bool idempotence;
    bool stamped;        /* consume: the values carry another process's send stamps */
};

/* What a run measured. The producer side is written by the delivery-report callback, which
 * librdkafka calls from rd_kafka_poll on the producing thread. */
struct run {
    struct options opt;
    atomic_uint_least64_t produced;   /* read by the consumer thread in e2e mode */
    uint64_t delivered, consumed, errors;
    uint64_t bytes_delivered, bytes_consumed;
    uint64_t first_produce_ns, last_delivery_ns, first_consume_ns, last_consume_ns;
    uint32_t *ack_us, *e2e_us;   /* latencies, one per delivered / consumed record */
    char error[512];
};

static atomic_bool failed;      /* set by whichever side fails, so the other stops early */
static atomic_bool producer_done;
static atomic_bool warmed_up;   /* latency mode: the consumer has seen the warm-up record */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void put64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, 8);   /* read back by this same process: host order is fine */
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    memcpy(&v, p, 8);
    return v;
}

static void fail(struct run *r, const char *what, const char *detail)
{
    if (!atomic_exchange(&failed, true))
        snprintf(r->error, sizeof r->error, "%s: %s", what, detail);
}

static uint32_t micros(uint64_t ns)
{
    uint64_t us = ns / 1000;
    return us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static bool set(rd_kafka_conf_t *conf, const char *name, const char *value, struct run *r)
{
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof err) == RD_KAFKA_CONF_OK)
        return true;
    fail(r, name, err);
    return false;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct run *r = opaque;
    if (m->err) {
        r->errors++;
        fail(r, "delivery", rd_kafka_err2str(m->err));
        return;
    }
    if (get64((const unsigned char *)m->payload + 8) == WARMUP_SEQ)
        return;   /* not measured */
    uint64_t t = now_ns();
    r->ack_us[r->delivered++] = micros(t - get64(m->payload));
    r->bytes_delivered += m->len;
    r->last_delivery_ns = t;
}

static rd_kafka_t *client_new(rd_kafka_type_t type, struct run *r)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char linger[32], err[256];
    snprintf(linger, sizeof linger, "%d", r->opt.linger_ms);
    bool ok = set(conf, "bootstrap.servers", r->opt.brokers, r) &&
              set(conf, "socket.nagle.disable", "true", r);
    if (type == RD_KAFKA_PRODUCER)
        ok = ok && set(conf, "acks", r->opt.acks, r) && set(conf, "linger.ms", linger, r) &&
             set(conf, "enable.idempotence", r->opt.idempotence ? "true" : "false", r) &&
             set(conf, "queue.buffering.max.messages", "1000000", r) &&
             set(conf, "queue.buffering.max.kbytes", "1048576", r) &&
             set(conf, "batch.size", "1000000", r) &&
             set(conf, "message.timeout.ms", "30000", r);
    else
        ok = ok && set(conf, "group.id", "kafka_load", r) &&
             set(conf, "enable.auto.commit", "false", r) &&
             set(conf, "enable.auto.offset.store", "false", r) &&
             set(conf, "fetch.wait.max.ms",
                 r->opt.mode == MODE_LATENCY || (r->opt.stamped && r->opt.rate > 0)
                     ? FETCH_WAIT_LATENCY_MS : "100", r) &&
             set(conf, "queued.min.messages", "1000000", r) &&
             set(conf, "max.partition.fetch.bytes", "4194304", r) &&
             set(conf, "fetch.max.bytes", "52428800", r);
    if (!ok) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, r);
    if (type == RD_KAFKA_PRODUCER)
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, sizeof err);   /* takes conf on success */
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fail(r, "rd_kafka_new", err);
    }
    return rk;
}

/* The number of partitions of the topic, from a metadata request; 0 on failure. */
static int partition_count(rd_kafka_t *rk, struct run *r)
{
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, r->opt.topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err) {
        fail(r, "metadata", rd_kafka_err2str(err));
        return 0;
    }
    int n = 0;
    if (md->topic_cnt == 1 && !md->topics[0].err)
        n = md->topics[0].partition_cnt;
    else
        fail(r, "metadata", md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err)
                                               : "topic not in the answer");
    rd_kafka_metadata_destroy(md);
    return n > MAX_PARTITIONS ? MAX_PARTITIONS : n;
}

/* Sleeps until the CLOCK_MONOTONIC time `until` (ns) and serves delivery reports the moment
 * they arrive, so ack latencies are not rounded up to the pacing gap: librdkafka writes a byte
 * to report_fd whenever its report queue turns non-empty. */
static void sleep_serving_reports(rd_kafka_t *rk, int report_fd, uint64_t until)
{
    for (uint64_t t = now_ns(); t < until; t = now_ns()) {
        uint64_t left_ns = until - t;
        struct timespec left = {.tv_sec = (time_t)(left_ns / 1000000000u),
                                .tv_nsec = (long)(left_ns % 1000000000u)};
        struct pollfd pfd = {.fd = report_fd, .events = POLLIN};
        if (ppoll(&pfd, 1, &left, NULL) > 0) {
            char wakeups[64];
            while (read(report_fd, wakeups, sizeof wakeups) > 0)
                continue;   /* empty the pipe; the reports themselves are in the queue */
            rd_kafka_poll(rk, 0);
        }
    }
}

/* Sends the warm-up record and waits (WARMUP_S at most) until the consumer has seen it, so
 * that both clients have their connections and metadata before the clock starts. */
static void warm_up(rd_kafka_t *rk, rd_kafka_topic_t *rkt, struct run *r, unsigned char *value)
{
    put64(value, now_ns());
    put64(value + 8, WARMUP_SEQ);
    if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, value, r->opt.size,
                         NULL, 0, NULL) == -1) {
        fail(r, "produce", rd_kafka_err2str(rd_kafka_last_error()));
        return;
    }
    uint64_t give_up = now_ns() + (uint64_t)(WARMUP_S * 1e9);
    while (!atomic_load(&warmed_up) && !atomic_load(&failed) && now_ns() < give_up)
        rd_kafka_poll(rk, 10);
    if (!atomic_load(&warmed_up))
        fail(r, "warm-up", "the first record did not come back end to end in time");
}

static void *produce(void *arg)
{
    struct run *r = arg;
    rd_kafka_t *rk = client_new(RD_KAFKA_PRODUCER, r);
    if (!rk) {
        atomic_store(&producer_done, true);
        return NULL;
    }
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, r->opt.topic, NULL);
    unsigned char *value = calloc(1, r->opt.size);
    if (!value)
        fail(r, "produce", "out of memory");
    /* Latency mode sleeps between records rather than spin, which would take a core from the
     * broker and the consumer; this pipe wakes it for each delivery report. */
    int report_pipe[2] = {-1, -1};
    rd_kafka_queue_t *reports = NULL;
    if (r->opt.mode == MODE_LATENCY && !atomic_load(&failed)) {
        if (pipe2(report_pipe, O_NONBLOCK | O_CLOEXEC) == 0) {
            reports = rd_kafka_queue_get_main(rk);
            rd_kafka_queue_io_event_enable(reports, report_pipe[1], "r", 1);
            warm_up(rk, rkt, r, value);
        } else {
            fail(r, "pipe2", strerror(errno));
        }
    }
    uint64_t start = now_ns();
    uint64_t end = start + (uint64_t)(r->opt.time_limit * 1e9);
    double gap_ns = r->opt.rate > 0 ? 1e9 / r->opt.rate : 0;
    r->first_produce_ns = start;
    for (uint64_t seq = 0; seq < r->opt.count && !atomic_load(&failed); ) {
        uint64_t t = now_ns();
        if (t >= end)
            break;
        uint64_t slot = start + (uint64_t)(seq * gap_ns);   /* start itself when unpaced */
        if (t < slot) {
            if (reports)
                sleep_serving_reports(rk, report_pipe[0], slot);
            else
                rd_kafka_poll(rk, 0);   /* e2e: spin until the slot (latency runs are short) */
            continue;
        }
        put64(value, t);
        put64(value + 8, seq);
        if (rd_kafka_produce(rkt, RD_KAFKA_PARTITION_UA, RD_KAFKA_MSG_F_COPY, value,
                             r->opt.size, NULL, 0, NULL) == -1) {
            rd_kafka_resp_err_t err = rd_kafka_last_error();
            if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                fail(r, "produce", rd_kafka_err2str(err));
                break;
            }
            rd_kafka_poll(rk, 1);   /* the local queue is full: serve reports first */
            continue;
        }
        seq++;
        atomic_store(&r->produced, seq);
        if ((seq & 1023) == 0 || reports)
            rd_kafka_poll(rk, 0);
    }
    /* Wait for outstanding reports, at most DRAIN_S past the time limit. */
    uint64_t drain_end = end + (uint64_t)(DRAIN_S * 1e9);
    while (rd_kafka_outq_len(rk) > 0 && now_ns() < drain_end && !atomic_load(&failed))
        rd_kafka_poll(rk, 50);
    if (reports) {
        rd_kafka_queue_io_event_enable(reports, -1, NULL, 0);
        rd_kafka_queue_destroy(reports);
        close(report_pipe[0]);
        close(report_pipe[1]);
    }
    free(value);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_flush(rk, 0);
    rd_kafka_destroy(rk);
    atomic_store(&producer_done, true);
    return NULL;
}

/* Assigns every partition: from its start (consume) or from its high watermark (e2e and
 * latency, whose producer starts after this). */
static bool assign(rd_kafka_t *rk, struct run *r)
{
    int n = partition_count(rk, r);
    if (n == 0)
        return false;
    bool from_now = r->opt.mode != MODE_CONSUME;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(n);
    for (int p = 0; p < n; p++) {
        int64_t low = 0, high = 0;
        if (from_now) {
            rd_kafka_resp_err_t err =
                rd_kafka_query_watermark_offsets(rk, r->opt.topic, p, &low, &high, 10000);
            if (err) {
                fail(r, "watermarks", rd_kafka_err2str(err));
                rd_kafka_topic_partition_list_destroy(parts);
                return false;
            }
        }
        rd_kafka_topic_partition_list_add(parts, r->opt.topic, p)->offset =
            from_now ? high : RD_KAFKA_OFFSET_BEGINNING;
    }
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err)
        fail(r, "assign", rd_kafka_err2str(err));
    return !err;
}

/* Consumes until --count records, --time, or (with a producer alongside) every record it
 * made. The receive time of a batch is read once as it arrives; latency mode takes one record
 * per poll, so each record's receive time is its own. */
static void consume(struct run *r, rd_kafka_t *rk, rd_kafka_queue_t *q)
{
    rd_kafka_message_t *batch[CONSUME_BATCH];
    uint64_t end = now_ns() + (uint64_t)(r->opt.time_limit * 1e9);
    bool e2e = r->opt.mode != MODE_CONSUME;
    bool stamped = e2e || r->opt.stamped;
    bool one_by_one = r->opt.mode == MODE_LATENCY || (r->opt.stamped && r->opt.rate > 0);
    r->first_consume_ns = now_ns();
    while (r->consumed < r->opt.count && !atomic_load(&failed)) {
        uint64_t t = now_ns();
        /* e2e: past the limit, wait (DRAIN_S at most) for the records the producer made. */
        bool drained = !e2e || (atomic_load(&producer_done) &&
                                (r->consumed >= atomic_load(&r->produced) ||
                                 t >= end + (uint64_t)(DRAIN_S * 1e9)));
        if (t >= end && drained)
            break;
        ssize_t got = 0;
        if (one_by_one) {
            batch[0] = rd_kafka_consumer_poll(rk, 100);
            got = batch[0] != NULL;
        } else {
            got = rd_kafka_consume_batch_queue(q, 100, batch, CONSUME_BATCH);
        }
        if (got < 0) {
            fail(r, "consume", rd_kafka_err2str(rd_kafka_last_error()));
            break;
        }
        t = now_ns();
        for (ssize_t i = 0; i < got; i++) {
            rd_kafka_message_t *m = batch[i];
            if (m->err) {
                fail(r, "consume", rd_kafka_message_errstr(m));
            } else if (m->len != r->opt.size) {
                fail(r, "consume", "a record of the wrong size");
            } else if (get64((const unsigned char *)m->payload + 8) == WARMUP_SEQ) {
                atomic_store(&warmed_up, true);   /* not measured */
            } else if (r->consumed < r->opt.count) {
                if (stamped)
                    r->e2e_us[r->consumed] = micros(t - get64(m->payload));
                if (r->opt.stamped && r->consumed == 0)
                    r->first_consume_ns = get64(m->payload);
                r->consumed++;
                r->bytes_consumed += m->len;
                r->last_consume_ns = t;
            }
            rd_kafka_message_destroy(m);
        }
        bool all_in = r->consumed >= atomic_load(&r->produced);
        if (e2e && atomic_load(&producer_done) && all_in)
            break;
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Prints "name":{p50,p99,p999,max} of n latencies (sorting them). */
static void print_latency(FILE *f, const char *name, uint32_t *us, uint64_t n)
{
    if (n == 0) {
        fprintf(f, ",\"%s\":null", name);
        return;
    }
    qsort(us, n, sizeof *us, cmp_u32);
    fprintf(f, ",\"%s\":{\"p50\":%" PRIu32 ",\"p99\":%" PRIu32 ",\"p999\":%" PRIu32
            ",\"max\":%" PRIu32 "}", name, us[n / 2], us[n * 99 / 100], us[n * 999 / 1000],
            us[n - 1]);
}

static double rate(uint64_t n, uint64_t from, uint64_t to)
{
    return n && to > from ? n / ((to - from) / 1e9) : 0;
}

static void report(struct run *r, bool complete)
{
    const struct options *o = &r->opt;
    double prate = rate(r->delivered, r->first_produce_ns, r->last_delivery_ns);
    double crate = rate(r->consumed, r->first_consume_ns, r->last_consume_ns);
    double pmb = rate(r->bytes_delivered, r->first_produce_ns, r->last_delivery_ns) / 1e6;
    double cmb = rate(r->bytes_consumed, r->first_consume_ns, r->last_consume_ns) / 1e6;
    printf("{\"mode\":\"%s\",\"acks\":\"%s\",\"idempotence\":%s,\"size\":%zu,"
           "\"count\":%" PRIu64 ",\"rate\":%.0f,\"produced\":%" PRIu64 ",\"delivered\":%" PRIu64
           ",\"consumed\":%" PRIu64 ",\"produce_rate\":%.0f,\"produce_mb_s\":%.1f,"
           "\"consume_rate\":%.0f,\"consume_mb_s\":%.1f",
           mode_names[o->mode], o->acks, o->idempotence ? "true" : "false", o->size, o->count,
           o->rate, (uint64_t)atomic_load(&r->produced), r->delivered, r->consumed, prate, pmb,
           crate, cmb);
    print_latency(stdout, "ack_latency_us", r->ack_us, r->delivered);
    print_latency(stdout, "latency_us", r->e2e_us,
                  o->mode != MODE_CONSUME || o->stamped ? r->consumed : 0);
    printf(",\"complete\":%s,\"error\":\"%s\"}\n", complete ? "true" : "false", r->error);
    fprintf(stderr, "kafka_load %s acks=%s %zu B: produced %.0f rec/s (%.1f MB/s), consumed "
            "%.0f rec/s (%.1f MB/s)%s%s\n", mode_names[o->mode], o->acks, o->size, prate, pmb,
            crate, cmb, complete ? "" : " INCOMPLETE", r->error);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: kafka_load [--brokers HOST:PORT] [--topic NAME]\n"
        "                  [--mode produce|consume|e2e|latency] [--acks 0|1|all]\n"
        "                  [--idempotence] [--size BYTES] [--count N] [--time SECONDS]\n"
        "                  [--rate RECORDS_PER_S] [--linger-ms MS] [--stamped]\n"
        "--mode latency needs --rate; pass --linger-ms 0 unless the linger is to be measured\n");
}

static bool parse(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"brokers", required_argument, 0, 'b'}, {"topic", required_argument, 0, 't'},
        {"mode", required_argument, 0, 'm'}, {"acks", required_argument, 0, 'a'},
        {"idempotence", no_argument, 0, 'i'}, {"size", required_argument, 0, 's'},
        {"count", required_argument, 0, 'c'}, {"time", required_argument, 0, 'T'},
        {"rate", required_argument, 0, 'r'}, {"linger-ms", required_argument, 0, 'l'},
        {"stamped", no_argument, 0, 'S'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    *o = (struct options){.brokers = "127.0.0.1:9092", .topic = "kafka-load", .acks = "1",
                          .mode = MODE_E2E, .size = 100, .count = 1000000, .time_limit = 30,
                          .linger_ms = 5};
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'b': o->brokers = optarg; break;
        case 't': o->topic = optarg; break;
        case 'a': o->acks = optarg; break;
        case 'i': o->idempotence = true; break;
        case 'S': o->stamped = true; break;
        case 's': o->size = strtoull(optarg, NULL, 10); break;
        case 'c': o->count = strtoull(optarg, NULL, 10); break;
        case 'T': o->time_limit = strtod(optarg, NULL); break;
        case 'r': o->rate = strtod(optarg, NULL); break;
        case 'l': o->linger_ms = atoi(optarg); break;
        case 'm': {
            size_t m = 0;
            while (m < MODE_COUNT && strcmp(optarg, mode_names[m]))
                m++;
            if (m == MODE_COUNT)
                return false;
            o->mode = (enum mode)m;
            break;
        }
        case 'h': usage(stdout); exit(0);
        default: return false;
        }
    }
    return optind == argc && o->size >= STAMP_LEN && o->size <= MAX_SIZE && o->count > 0 &&
           o->count <= MAX_COUNT && o->time_limit > 0 && o->rate >= 0 && o->linger_ms >= 0 &&
           (o->mode != MODE_LATENCY || o->rate > 0) &&
           (!o->stamped || o->mode == MODE_CONSUME);
}

int main(int argc, char **argv)
{
    struct run r = {0};
    if (!parse(argc, argv, &r.opt)) {
        usage(stderr);
        return 1;
    }
    bool produces = r.opt.mode != MODE_CONSUME;
    bool consumes = r.opt.mode != MODE_PRODUCE;
    r.ack_us = produces ? malloc(r.opt.count * sizeof *r.ack_us) : NULL;
    r.e2e_us = consumes ? malloc(r.opt.count * sizeof *r.e2e_us) : NULL;
    if ((produces && !r.ack_us) || (consumes && !r.e2e_us)) {
        fprintf(stderr, "kafka_load: out of memory for %" PRIu64 " latencies\n", r.opt.count);
        return 1;
    }
    if (r.opt.mode == MODE_PRODUCE) {
        produce(&r);
    } else {
        rd_kafka_t *rk = client_new(RD_KAFKA_CONSUMER, &r);
        if (rk) {
            rd_kafka_poll_set_consumer(rk);
            rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(rk);
            if (assign(rk, &r)) {
                pthread_t producer;
                bool started = false;
                if (r.opt.mode != MODE_CONSUME) {
                    started = pthread_create(&producer, NULL, produce, &r) == 0;
                    if (!started)
                        fail(&r, "pthread_create", strerror(errno));
                }
                consume(&r, rk, q);
                if (started)
                    pthread_join(producer, NULL);
            }
            rd_kafka_queue_destroy(q);
            rd_kafka_consumer_close(rk);
            rd_kafka_destroy(rk);
        }
    }
    bool complete = (!produces || r.delivered == r.opt.count) &&
                    (!consumes || r.consumed == r.opt.count);
    report(&r, complete);
    free(r.ack_us);
    free(r.e2e_us);
    return atomic_load(&failed) ? 1 : complete ? 0 : 2;
}
