/*
 * route_bench.c: the routing micro-benchmark. On one thread, with no network and no peer
 * broker, it builds a broker with the built-in plugins and measures how many messages per
 * second the core and an exchange plugin route (wr_exchange_route: match and dedupe, no
 * storing), then how many a full wr_publish stores into a memory queue.
 *
 * Cases (the workloads are described in docs/benchmarks.md):
 *   direct-1000-keys        1,000 queues bound by distinct keys, random keys that all hit
 *   fanout-10-queues        10 queues on a fanout exchange
 *   topic-10000-bindings    10,000 `*` / `#` patterns over keys of 3-5 words
 *   topic-10-queues         10 queues bound by "region.<i>.*", one reached per route: the
 *                           topic exchange on the Lua cases' scale
 *   lua-header-10-queues    a `lua` exchange whose script returns one header's value, the
 *                           name of one of 10 queues
 *   lua-json-field-10-queues  a `lua` exchange whose script decodes a JSON body of about
 *                           100 bytes and returns one field, a queue name
 *   publish-direct-1-queue  wr_publish of one message into a memory queue, purged every
 *                           4,096 messages
 *   publish-new-msg-direct-1-queue  the same with a new message built for every publish
 *
 * Each case runs a fixed number of iterations or until its time cap, whichever comes first,
 * and prints one line "case routes/s" on stdout; details go to stderr. --quick runs a
 * hundredth of the iterations (a smoke test: it still checks every result).
 * Exit status: 0, or 1 when setup fails or a route reaches the wrong number of queues.
 */
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <warren/wr.h>

#define NMSGS 4096 /* distinct pre-built messages per case, a power of two */

static double time_cap = 2.0; /* seconds per case */
static uint64_t iter_div = 1; /* 100 with --quick */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* xorshift64*: a fixed seed, so every run routes the same keys through the same bindings. */
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32) % n;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const struct wr_error *err)
{
    fprintf(stderr, "route_bench: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static struct wr_msg *make_msg(const char *key, size_t body_len)
{
    static char body[4096];
    struct wr_msg_init init = {0};
    struct wr_error err = {0};
    struct wr_msg *msg;
    init.routing_key = wr_str_c(key);
    init.body_ptr = body;
    init.body_len = body_len;
    if (wr_msg_new(&init, &msg, &err) != WR_OK)
        die("wr_msg_new", &err);
    return msg;
}

static struct wr_exchange *declare_exchange(struct wr_vhost *vh, const char *name,
                                            const char *type)
{
    struct wr_exchange_decl decl = {.name = name, .type = type};
    struct wr_exchange *ex;
    struct wr_error err = {0};
    if (wr_exchange_declare(vh, &decl, &ex, &err) != WR_OK)
        die("declare exchange", &err);
    return ex;
}

static struct wr_queue *declare_queue(struct wr_vhost *vh, const char *name)
{
    struct wr_queue_decl decl;
    struct wr_queue *q;
    struct wr_error err = {0};
    wr_queue_decl_init(&decl, name);
    if (wr_queue_declare(vh, &decl, &q, &err) != WR_OK)
        die("declare queue", &err);
    return q;
}

static void bind(struct wr_exchange *ex, struct wr_queue *q, const char *key)
{
    struct wr_error err = {0};
    if (wr_bind_queue(ex, q, key, NULL, &err) != WR_OK)
        die("bind", &err);
}

static void report(const char *name, uint64_t done, double secs, const char *detail)
{
    printf("%s %.0f\n", name, (double)done / secs);
    fflush(stdout);
    fprintf(stderr, "  %s: %llu in %.3f s; %s\n", name, (unsigned long long)done, secs, detail);
}

/* A message for the Lua cases: a header "queue" when queue is not NULL, and a body. */
static struct wr_msg *make_lua_msg(const char *queue, const char *body)
{
    struct wr_table *h = wr_table_new();
    struct wr_value v = wr_value_str(queue ? queue : "");
    if (!h || (queue && wr_table_add(h, "queue", &v) != WR_OK))
        die("headers", NULL);
    struct wr_msg_init init = {0};
    struct wr_error err = {0};
    struct wr_msg *msg;
    init.routing_key = wr_str_c("any.key");
    init.headers = h;
    init.body_ptr = body;
    init.body_len = strlen(body);
    if (wr_msg_new(&init, &msg, &err) != WR_OK)
        die("wr_msg_new", &err);
    wr_table_free(h);
    return msg;
}

/* Routes msgs round-robin through ex for iters iterations or time_cap seconds. Returns the
 * iterations done; *reached gets the queues reached in total, *secs the time taken. */
static uint64_t route_loop(struct wr_exchange *ex, struct wr_msg **msgs, uint64_t iters,
                           uint64_t *reached, double *secs)
{
    struct wr_queue *out[64];
    for (size_t i = 0; i < NMSGS; i++) /* warm caches and branch predictors */
        wr_exchange_route(ex, msgs[i], out, 64);
    uint64_t n = 0, sum = 0;
    double t0 = now_s(), t = t0;
    while (n < iters) {
        for (size_t i = 0; i < 4096; i++, n++)
            sum += wr_exchange_route(ex, msgs[n & (NMSGS - 1)], out, 64);
        t = now_s();
        if (t - t0 > time_cap)
            break;
    }
    *reached = sum;
    *secs = t - t0;
    return n;
}

static void free_msgs(struct wr_msg **msgs)
{
    for (size_t i = 0; i < NMSGS; i++)
        wr_msg_unref(msgs[i]);
}

/* Runs route_loop over msgs (then frees them) and reports case_name, checking that every
 * route reached exactly one queue. */
static int route_one_each(struct wr_exchange *ex, struct wr_msg **msgs, uint64_t iters,
                          const char *case_name, const char *detail)
{
    uint64_t reached;
    double secs;
    uint64_t n = route_loop(ex, msgs, iters / iter_div, &reached, &secs);
    free_msgs(msgs);
    if (reached != n) {
        fprintf(stderr, "route_bench: %s reached %llu queues for %llu routes\n", case_name,
                (unsigned long long)reached, (unsigned long long)n);
        return 1;
    }
    report(case_name, n, secs, detail);
    return 0;
}

/* An exchange of type with nq queues "<case>.q<i>", queue i bound by the key bind_fmt
 * formats with i, and messages keyed by key_fmt with a random i: each route must reach one
 * queue. */
static int bench_one_per_route(struct wr_vhost *vh, const char *type, const char *case_name,
                               int nq, const char *bind_fmt, const char *key_fmt,
                               uint64_t iters, const char *detail)
{
    char name[64];
    snprintf(name, sizeof name, "bench.%s", case_name);
    struct wr_exchange *ex = declare_exchange(vh, name, type);
    for (int i = 0; i < nq; i++) {
        snprintf(name, sizeof name, "%s.q%d", case_name, i);
        struct wr_queue *q = declare_queue(vh, name);
        snprintf(name, sizeof name, bind_fmt, i);
        bind(ex, q, name);
    }
    static struct wr_msg *msgs[NMSGS];
    for (size_t i = 0; i < NMSGS; i++) {
        snprintf(name, sizeof name, key_fmt, rnd((uint32_t)nq));
        msgs[i] = make_msg(name, 0);
    }
    return route_one_each(ex, msgs, iters, case_name, detail);
}

static int bench_direct(struct wr_vhost *vh)
{
    return bench_one_per_route(vh, "direct", "direct-1000-keys", 1000, "orders.key.%d",
                               "orders.key.%u", 50000000, "1 queue reached per route");
}

static int bench_fanout(struct wr_vhost *vh)
{
    enum { NQ = 10 };
    struct wr_exchange *ex = declare_exchange(vh, "bench.fanout", "fanout");
    char name[64];
    for (int i = 0; i < NQ; i++) {
        snprintf(name, sizeof name, "fanout.q%d", i);
        bind(ex, declare_queue(vh, name), "");
    }
    static struct wr_msg *msgs[NMSGS];
    for (size_t i = 0; i < NMSGS; i++)
        msgs[i] = make_msg("any.key", 0);
    uint64_t reached;
    double secs;
    uint64_t n = route_loop(ex, msgs, 20000000 / iter_div, &reached, &secs);
    free_msgs(msgs);
    if (reached != n * NQ) {
        fprintf(stderr, "route_bench: fanout reached %llu queues for %llu routes\n",
                (unsigned long long)reached, (unsigned long long)n);
        return 1;
    }
    report("fanout-10-queues", n, secs, "10 queues reached per route");
    return 0;
}

/* The topic workload: keys like an event bus's region.service.event[.level[.id]], each word
 * drawn from its position's vocabulary. */
static const uint32_t topic_vocab[5] = {10, 100, 50, 5, 1000};
static const char *const topic_prefix[5] = {"r", "svc", "ev", "lvl", "id"};

static void topic_key(char *out, size_t cap)
{
    int words = 3 + (int)rnd(3);
    size_t len = 0;
    for (int w = 0; w < words; w++)
        len += (size_t)snprintf(out + len, cap - len, "%s%s%u", w ? "." : "", topic_prefix[w],
                                rnd(topic_vocab[w]));
}

/* A subscription pattern made from a random key of 3-5 words: 5% are "#." and the key's
 * last two words ("#.ev4.lvl2"); 30% keep the key's first 2..n-1 words and end in `#`
 * ("r3.svc7.#"); the other 65% are the whole key with each word turned into `*` with
 * probability 0.15 ("r3.*.ev9"). The prefixes before a `#` stay literal, as subscriptions
 * that broad ("*.*.#") would reach most queues. */
static void topic_pattern(char *out, size_t cap)
{
    char words[5][16];
    int n = 3 + (int)rnd(3);
    for (int w = 0; w < n; w++)
        snprintf(words[w], sizeof words[w], "%s%u", topic_prefix[w], rnd(topic_vocab[w]));
    uint32_t shape = rnd(100);
    size_t len = 0;
    if (shape < 5) {
        snprintf(out, cap, "#.%s.%s", words[n - 2], words[n - 1]);
    } else if (shape < 35) {
        int keep = 2 + (int)rnd((uint32_t)n - 2);
        for (int w = 0; w < keep; w++)
            len += (size_t)snprintf(out + len, cap - len, "%s.", words[w]);
        snprintf(out + len, cap - len, "#");
    } else {
        for (int w = 0; w < n; w++)
            len += (size_t)snprintf(out + len, cap - len, "%s%s", w ? "." : "",
                                    rnd(100) < 15 ? "*" : words[w]);
    }
}

static int bench_topic(struct wr_vhost *vh)
{
    enum { NQ = 1000, NB = 10000 };
    struct wr_exchange *ex = declare_exchange(vh, "bench.topic", "topic");
    struct wr_queue *qs[NQ];
    char name[64];
    for (int i = 0; i < NQ; i++) {
        snprintf(name, sizeof name, "topic.q%d", i);
        qs[i] = declare_queue(vh, name);
    }
    /* Distinct (queue, pattern) pairs, or the broker would fold repeats into one binding. */
    while (wr_exchange_binding_count(ex) < NB) {
        topic_pattern(name, sizeof name);
        bind(ex, qs[wr_exchange_binding_count(ex) % NQ], name);
    }
    static struct wr_msg *msgs[NMSGS];
    for (size_t i = 0; i < NMSGS; i++) {
        topic_key(name, sizeof name);
        msgs[i] = make_msg(name, 0);
    }
    uint64_t reached;
    double secs;
    uint64_t n = route_loop(ex, msgs, 10000000 / iter_div, &reached, &secs);
    free_msgs(msgs);
    if (reached == 0) {
        fprintf(stderr, "route_bench: topic routes reached no queue\n");
        return 1;
    }
    char detail[128];
    snprintf(detail, sizeof detail, "%u bindings, %.2f queues reached per route on average",
             wr_exchange_binding_count(ex), (double)reached / (double)n);
    report("topic-10000-bindings", n, secs, detail);
    return 0;
}

/* The topic exchange on the Lua cases' scale. */
static int bench_topic_small(struct wr_vhost *vh)
{
    return bench_one_per_route(vh, "topic", "topic-10-queues", 10, "region.%d.*",
                               "region.%u.new", 10000000,
                               "10 bindings region.<i>.*, 1 queue reached per route");
}

/* Publishes into one memory queue through a direct exchange, purging every 4,096 messages
 * so memory stays bounded (dropping them is part of the cost). With fresh_msg, each publish
 * builds its message first (wr_msg_new copying a 100-byte body, then unref), as a transport
 * does per message; without it one message is published again and again. */
static int bench_publish(struct wr_vhost *vh, bool fresh_msg)
{
    const char *ex_name = fresh_msg ? "bench.publish.new" : "bench.publish";
    const char *q_name = fresh_msg ? "publish.new.q" : "publish.q";
    struct wr_exchange *ex = declare_exchange(vh, ex_name, "direct");
    struct wr_queue *q = declare_queue(vh, q_name);
    bind(ex, q, "k");
    struct wr_msg *msg = make_msg("k", 100);
    struct wr_error err = {0};
    uint64_t iters = 20000000 / iter_div, n = 0;
    int rc = 0;
    double t0 = now_s(), t = t0;
    while (n < iters && rc == 0) {
        for (int i = 0; i < 4096 && rc == 0; i++, n++) {
            struct wr_msg *m = fresh_msg ? make_msg("k", 100) : msg;
            if (wr_publish(ex, m, NULL, &err) != 1) {
                fprintf(stderr, "route_bench: publish stored in other than 1 queue: %s\n",
                        err.msg);
                rc = 1;
            }
            if (fresh_msg)
                wr_msg_unref(m);
        }
        wr_queue_purge(q);
        t = now_s();
        if (t - t0 > time_cap)
            break;
    }
    wr_msg_unref(msg);
    if (rc == 0)
        report(fresh_msg ? "publish-new-msg-direct-1-queue" : "publish-direct-1-queue", n,
               t - t0,
               fresh_msg ? "wr_msg_new (100-byte body) + wr_publish + unref, memory queue"
                         : "one 100-byte message published again and again, memory queue");
    return rc;
}

/* A `lua` exchange running script (written to dir/file) in its default mode, where the
 * script returns queue names: nq queues "lua.qN" and messages from make(i) that each name one
 * of them. One thread, as every case here: routes/s is per core. */
static int bench_lua(struct wr_vhost *vh, const char *dir, const char *file, const char *script,
                     struct wr_msg *(*make)(uint32_t queue), const char *name,
                     const char *detail)
{
    enum { NQ = 10 };
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    if (!f || fputs(script, f) < 0 || fclose(f) != 0)
        die("writing the Lua script", NULL);
    struct wr_table *args = wr_table_new();
    struct wr_value v = wr_value_str(path);
    if (!args || wr_table_add(args, "script", &v) != WR_OK)
        die("exchange arguments", NULL);
    struct wr_exchange_decl decl = {.name = name, .type = "lua", .args = args};
    struct wr_exchange *ex;
    struct wr_error err = {0};
    if (wr_exchange_declare(vh, &decl, &ex, &err) != WR_OK)
        die("declare lua exchange", &err);
    wr_table_free(args);
    char qname[32];
    for (int i = 0; i < NQ; i++) {
        snprintf(qname, sizeof qname, "lua.q%d", i);
        if (!wr_queue_find(vh, qname))
            declare_queue(vh, qname);
    }
    static struct wr_msg *msgs[NMSGS];
    for (size_t i = 0; i < NMSGS; i++)
        msgs[i] = make(rnd(NQ));
    return route_one_each(ex, msgs, 10000000, name, detail);
}

static struct wr_msg *lua_header_msg(uint32_t queue)
{
    char value[32];
    snprintf(value, sizeof value, "lua.q%u", queue);
    return make_lua_msg(value, "");
}

/* About 100 bytes of JSON, as a small business event; the script reads its "queue". */
static struct wr_msg *lua_json_msg(uint32_t queue)
{
    char body[160];
    snprintf(body, sizeof body,
             "{\"id\": %u, \"kind\": \"invoice\", \"amount\": 129.95, \"currency\": "
             "\"EUR\", \"queue\": \"lua.q%u\", \"tags\": [\"a\", \"b\"]}",
             rnd(1000000), queue);
    return make_lua_msg(NULL, body);
}

static int bench_lua_all(struct wr_vhost *vh, const char *dir)
{
    return bench_lua(vh, dir, "header.lua",
                     "function route(msg) return msg.headers.queue end\n", lua_header_msg,
                     "lua-header-10-queues",
                     "route(msg) returns msg.headers.queue, 1 queue reached per route") ||
           bench_lua(vh, dir, "json.lua",
                     "function route(msg) return json.decode(msg.body).queue end\n",
                     lua_json_msg, "lua-json-field-10-queues",
                     "route(msg) returns json.decode(msg.body).queue, bodies of about 100 "
                     "bytes, 1 queue reached per route");
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            iter_div = 100;
            time_cap = 0.5;
        } else {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            return 2;
        }
    }
    char dir[] = "/tmp/warren-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "route_bench: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    struct wr_error err = {0};
    struct wr_loop *lp;
    struct wr_broker *b;
    struct wr_vhost *vh;
    if (wr_loop_new(&lp, &err) != WR_OK || wr_broker_new(lp, dir, &b, &err) != WR_OK)
        die("setup", &err);
    static const char *const dirs[] = {WR_BENCH_PLUGIN_DIR, NULL};
    static const char *const exchanges[] = {"direct", "fanout", "topic", "headers", "lua"};
    for (size_t i = 0; i < 5; i++)
        if (wr_broker_load_plugin(b, exchanges[i], NULL, dirs, WR_PLUGIN_EXCHANGE, NULL, &err))
            die("load plugin", &err);
    if (wr_broker_load_plugin(b, "memory", NULL, dirs, WR_PLUGIN_STORAGE, NULL, &err) ||
        wr_vhost_add(b, "/", &vh, &err) != WR_OK)
        die("setup", &err);

    int rc = bench_direct(vh) || bench_fanout(vh) || bench_topic(vh) || bench_topic_small(vh) ||
             bench_lua_all(vh, dir) ||
             bench_publish(vh, false) || bench_publish(vh, true);

    wr_broker_free(b);
    wr_loop_free(lp);
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}
