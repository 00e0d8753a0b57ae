/*
 * definitions_test.c: the durable topology (core/src/definitions.c) as a user of a whole
 * server sees it: what is declared through the public API is there again, identically, after
 * the server is freed and a new one starts on the same data directory; what was deleted stays
 * deleted; what is not durable is never written. And the file itself: compaction, a torn
 * tail cut with a warning, damage, a wrong magic or a newer version refused by name with the
 * file left as it was, a failing write refused with nothing changed.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char dir[] = "/tmp/warren-defs-XXXXXX";
static char path[128]; /* dir/definitions.log */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir), "mkdtemp: %s", strerror(errno));
    snprintf(path, sizeof path, "%s/definitions.log", dir);
}

static void teardown(void) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

TestSuite(definitions, .init = setup, .fini = teardown);

/* A server on dir with the built-in plugins and extra YAML (vhosts:, plugins:). */
static int server_new(const char *extra, struct wr_server **out, struct wr_error *err)
{
    char text[2048];
    snprintf(text, sizeof text, "broker:\n  data_dir: %s\n  plugin_dirs: [" WR_TEST_PLUGIN_DIR
             "]\n%s", dir, extra ? extra : "");
    struct wr_config *cfg;
    cr_assert_eq(wr_config_load_string("defs.yaml", text, strlen(text), &cfg, err), WR_OK,
                 "%s", err->msg);
    int rc = wr_server_new(cfg, NULL, out, err);
    wr_config_free(cfg);
    return rc;
}

static struct wr_server *start(const char *extra)
{
    struct wr_error err = {0};
    struct wr_server *srv = NULL;
    cr_assert_eq(server_new(extra, &srv, &err), WR_OK, "%s", err.msg);
    return srv;
}

static struct wr_vhost *vhost(struct wr_server *srv)
{
    struct wr_vhost *vh = wr_vhost_find(wr_server_broker(srv), "/");
    cr_assert_not_null(vh);
    return vh;
}

static struct wr_exchange *exchange(struct wr_vhost *vh, const char *name, const char *type,
                                    bool durable, bool auto_delete, bool internal,
                                    const struct wr_table *args)
{
    struct wr_error err = {0};
    struct wr_exchange_decl decl = {name, type, durable, auto_delete, internal, args};
    struct wr_exchange *ex = NULL;
    cr_assert_eq(wr_exchange_declare(vh, &decl, &ex, &err), WR_OK, "%s", err.msg);
    return ex;
}

static struct wr_queue *queue(struct wr_vhost *vh, const char *name, bool durable)
{
    struct wr_error err = {0};
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, name);
    decl.durable = durable;
    struct wr_queue *q = NULL;
    cr_assert_eq(wr_queue_declare(vh, &decl, &q, &err), WR_OK, "%s", err.msg);
    return q;
}

static void bind(struct wr_exchange *ex, struct wr_queue *q, const char *key,
                 const struct wr_table *args)
{
    struct wr_error err = {0};
    cr_assert_eq(wr_bind_queue(ex, q, key, args, &err), WR_OK, "%s", err.msg);
}

static void bind_ex(struct wr_exchange *src, struct wr_exchange *dst, const char *key)
{
    struct wr_error err = {0};
    cr_assert_eq(wr_bind_exchange(src, dst, key, NULL, &err), WR_OK, "%s", err.msg);
}

static bool tables_equal(const struct wr_table *a, const struct wr_table *b)
{
    struct wr_value va = {.type = WR_V_TABLE}, vb = {.type = WR_V_TABLE};
    va.u.table = a;
    vb.u.table = b;
    return wr_value_equal(&va, &vb);
}

static void add_str(struct wr_table *t, const char *name, const char *s)
{
    struct wr_value v = wr_value_str(s);
    cr_assert_eq(wr_table_add(t, name, &v), WR_OK);
}

static void add_int(struct wr_table *t, const char *name, int64_t i)
{
    struct wr_value v = wr_value_i64(i);
    cr_assert_eq(wr_table_add(t, name, &v), WR_OK);
}

static off_t file_size(void)
{
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

static uint8_t *file_bytes(size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    uint8_t *buf = malloc(1 << 20);
    cr_assert_not_null(buf);
    *len = fread(buf, 1, 1 << 20, f);
    fclose(f);
    return buf;
}

static void file_write(const uint8_t *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(p, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* stderr of fn(data) (the broker's log), as a malloc'd string. */
static char *capture_stderr(void (*fn)(void *data), void *data)
{
    char log[160];
    snprintf(log, sizeof log, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    fn(data);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = tu_read_file(log);
    cr_assert_not_null(text);
    unlink(log);
    return text;
}

/* A persistent message published to ex. */
static int publish(struct wr_exchange *ex, const char *rk, const char *body)
{
    struct wr_props props = {.flags = WR_PROP_DELIVERY_MODE, .delivery_mode = 2};
    struct wr_msg_init init = {.routing_key = wr_str_c(rk), .props = &props,
                               .body_ptr = body, .body_len = strlen(body)};
    struct wr_msg *msg;
    cr_assert_eq(wr_msg_new(&init, &msg, NULL), WR_OK);
    int n = wr_publish(ex, msg, NULL, NULL);
    wr_msg_unref(msg);
    return n;
}

/* The declaration of the durable queue "billing" the restart tests use. */
static void billing_decl(struct wr_queue_decl *decl, struct wr_table *args,
                         struct wr_table *options)
{
    wr_queue_decl_init(decl, "billing");
    decl->storage = "queue";
    decl->durable = true;
    decl->max_length = 100;
    decl->max_length_bytes = 1 << 20;
    decl->overflow = WR_OVERFLOW_REJECT_PUBLISH;
    decl->message_ttl_ms = 60000;
    decl->expires_ms = 3600000;
    decl->dead_letter_exchange = "ae";
    decl->dead_letter_routing_key = "dead";
    decl->max_priority = 5;
    add_int(args, "x-max-length", 100);
    add_int(args, "x-max-length-bytes", 1 << 20);
    add_str(args, "x-overflow", "reject-publish");
    add_int(args, "x-message-ttl", 60000);
    add_int(args, "x-expires", 3600000);
    add_str(args, "x-dead-letter-exchange", "ae");
    add_str(args, "x-dead-letter-routing-key", "dead");
    add_int(args, "x-max-priority", 5);
    add_str(options, "flush", "always");
    decl->args = args;
    decl->options = options;
}

Test(definitions, restart_restores_what_is_durable_and_nothing_else)
{
    struct wr_server *srv = start(NULL);
    struct wr_vhost *vh = vhost(srv);
    struct wr_error err = {0};

    /* Arguments of several types, a nested table among them. */
    struct wr_table *ex_args = wr_table_new(), *inner = wr_table_new();
    add_str(ex_args, "alternate-exchange", "ae");
    add_int(ex_args, "x-custom", -7);
    struct wr_value flag = wr_value_bool(true);
    wr_table_add(inner, "on", &flag);
    struct wr_value nested = {.type = WR_V_TABLE, .u.table = inner};
    wr_table_add(ex_args, "x-nested", &nested);
    struct wr_table *bind_args = wr_table_new();
    add_int(bind_args, "x-weight", 3);

    exchange(vh, "ae", "fanout", true, false, false, NULL);
    struct wr_exchange *orders = exchange(vh, "orders", "topic", true, false, false, ex_args);
    struct wr_exchange *audit = exchange(vh, "audit", "fanout", true, true, true, NULL);
    struct wr_table *q_args = wr_table_new(), *q_opts = wr_table_new();
    struct wr_queue_decl decl;
    billing_decl(&decl, q_args, q_opts);
    struct wr_queue *billing = NULL;
    cr_assert_eq(wr_queue_declare(vh, &decl, &billing, &err), WR_OK, "%s", err.msg);
    struct wr_queue_decl idle_decl;
    wr_queue_decl_init(&idle_decl, "idle");
    idle_decl.durable = true;
    idle_decl.auto_delete = true;
    struct wr_queue *idle = NULL;
    cr_assert_eq(wr_queue_declare(vh, &idle_decl, &idle, &err), WR_OK, "%s", err.msg);

    bind(orders, billing, "orders.eu.*", bind_args);
    bind(orders, billing, "orders.us.*", NULL);
    bind_ex(orders, audit, "#");
    bind(audit, idle, "", NULL);
    bind(wr_exchange_find(vh, "amq.topic"), billing, "amq.#", NULL);

    /* Not durable, exclusive, or bound to something that is: never stored. */
    struct wr_exchange *tmp = exchange(vh, "tmp", "fanout", false, false, false, NULL);
    struct wr_queue *scratch = queue(vh, "scratch", false);
    struct wr_queue_decl mine_decl;
    wr_queue_decl_init(&mine_decl, "mine");
    mine_decl.durable = true;
    mine_decl.exclusive = true;
    mine_decl.owner = &mine_decl;
    struct wr_queue *mine = NULL;
    cr_assert_eq(wr_queue_declare(vh, &mine_decl, &mine, &err), WR_OK, "%s", err.msg);
    bind(orders, scratch, "orders.#", NULL);
    bind(orders, mine, "orders.#", NULL);
    bind(tmp, billing, "", NULL);
    bind_ex(orders, tmp, "tmp.#");

    /* Deleted: stays deleted. */
    struct wr_queue *gone = queue(vh, "gone", true);
    bind(orders, gone, "gone", NULL);
    cr_assert_eq(wr_queue_delete(gone, false, false, NULL, &err), WR_OK, "%s", err.msg);
    struct wr_exchange *gone_ex = exchange(vh, "gone-ex", "direct", true, false, false, NULL);
    bind(gone_ex, billing, "k", NULL);
    cr_assert_eq(wr_exchange_delete(gone_ex, false, &err), WR_OK, "%s", err.msg);
    bind(orders, billing, "orders.old", NULL);
    cr_assert_eq(wr_unbind_queue(orders, billing, "orders.old", NULL, &err), WR_OK);

    cr_assert_eq(publish(orders, "orders.eu.1", "first"), 4); /* billing idle scratch mine */
    cr_assert_eq(publish(wr_exchange_find(vh, "amq.topic"), "amq.x", "second"), 1);
    wr_server_free(srv);

    srv = start(NULL);
    vh = vhost(srv);
    orders = wr_exchange_find(vh, "orders");
    cr_assert_not_null(orders);
    cr_assert_str_eq(wr_exchange_type(orders), "topic");
    cr_assert(wr_exchange_is_durable(orders) && !wr_exchange_is_auto_delete(orders) &&
              !wr_exchange_is_internal(orders));
    cr_assert(tables_equal(wr_exchange_args(orders), ex_args), "exchange arguments differ");
    audit = wr_exchange_find(vh, "audit");
    cr_assert_not_null(audit);
    cr_assert(wr_exchange_is_auto_delete(audit) && wr_exchange_is_internal(audit));
    cr_assert_not_null(wr_exchange_find(vh, "ae"));
    cr_assert_eq(wr_exchange_binding_count(orders), 3);
    cr_assert_eq(wr_exchange_binding_count(wr_exchange_find(vh, "amq.topic")), 1);

    billing = wr_queue_find(vh, "billing");
    cr_assert_not_null(billing);
    cr_assert(wr_queue_is_durable(billing) && !wr_queue_is_auto_delete(billing));
    cr_assert(tables_equal(wr_queue_args(billing), q_args), "queue arguments differ");
    cr_assert_eq(wr_queue_depth(billing), 2, "the queue storage kept both messages");
    /* Every declared property came back: the same declaration is equivalent, another not. */
    struct wr_queue *same = NULL;
    cr_assert_eq(wr_queue_declare(vh, &decl, &same, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(same, billing);
    struct wr_queue_decl other = decl;
    other.dead_letter_routing_key = "elsewhere";
    cr_assert_eq(wr_queue_declare(vh, &other, NULL, NULL), WR_EEXIST);
    other = decl;
    other.max_priority = 4;
    cr_assert_eq(wr_queue_declare(vh, &other, NULL, NULL), WR_EEXIST);
    /* An auto-delete queue that never had a consumer stays, as in RabbitMQ. */
    cr_assert_not_null(wr_queue_find(vh, "idle"));
    cr_assert(wr_queue_is_auto_delete(wr_queue_find(vh, "idle")));

    cr_assert_str_eq(tu_routed(orders, "orders.eu.9", NULL), "billing,idle");
    cr_assert_str_eq(tu_routed(orders, "orders.us.9", NULL), "billing,idle");
    cr_assert_str_eq(tu_routed(orders, "orders.old", NULL), "idle");
    cr_assert_str_eq(tu_routed(wr_exchange_find(vh, "amq.topic"), "amq.y", NULL), "billing");

    static const char *const absent_ex[] = {"tmp", "gone-ex"};
    for (size_t i = 0; i < 2; i++)
        cr_assert_null(wr_exchange_find(vh, absent_ex[i]), "%s came back", absent_ex[i]);
    static const char *const absent_q[] = {"scratch", "mine", "gone"};
    for (size_t i = 0; i < 3; i++)
        cr_assert_null(wr_queue_find(vh, absent_q[i]), "%s came back", absent_q[i]);
    wr_server_free(srv);
    wr_table_free(ex_args);
    wr_table_free(inner);
    wr_table_free(bind_args);
    wr_table_free(q_args);
    wr_table_free(q_opts);
}

Test(definitions, nothing_is_written_for_what_is_not_durable)
{
    struct wr_server *srv = start(NULL);
    struct wr_vhost *vh = vhost(srv);
    struct wr_exchange *tmp = exchange(vh, "tmp", "direct", false, false, false, NULL);
    struct wr_queue *scratch = queue(vh, "scratch", false);
    bind(tmp, scratch, "k", NULL);
    bind(wr_exchange_find(vh, "amq.direct"), scratch, "k", NULL);
    cr_assert_eq(file_size(), -1, "no file until something durable is declared");

    struct wr_exchange *d = exchange(vh, "d", "direct", true, false, false, NULL);
    off_t size = file_size();
    cr_assert_gt(size, 0);
    bind(d, scratch, "k", NULL);
    cr_assert_eq(file_size(), size, "a binding to a non-durable queue is not stored");
    struct wr_queue *dq = queue(vh, "dq", true);
    size = file_size();
    bind(tmp, dq, "k", NULL);
    cr_assert_eq(file_size(), size, "a binding from a non-durable exchange is not stored");
    bind(d, dq, "k", NULL);
    cr_assert_gt(file_size(), size);
    size = file_size();
    /* Declaring what exists and binding what is bound change nothing. */
    exchange(vh, "d", "direct", true, false, false, NULL);
    queue(vh, "dq", true);
    bind(d, dq, "k", NULL);
    cr_assert_eq(file_size(), size);
    wr_server_free(srv);

    srv = start(NULL);
    vh = vhost(srv);
    cr_assert_eq(wr_exchange_binding_count(wr_exchange_find(vh, "d")), 1);
    cr_assert_str_eq(tu_routed(wr_exchange_find(vh, "d"), "k", NULL), "dq");
    cr_assert_null(wr_exchange_find(vh, "tmp"));
    cr_assert_null(wr_queue_find(vh, "scratch"));
    wr_server_free(srv);
}

Test(definitions, compaction_at_start_and_while_running)
{
    struct wr_server *srv = start(NULL);
    struct wr_vhost *vh = vhost(srv);
    struct wr_error err = {0};
    struct wr_queue *keep = queue(vh, "keep", true);
    for (int i = 0; i < 50; i++) {
        struct wr_exchange *churn = exchange(vh, "churn", "topic", true, false, false, NULL);
        bind(churn, keep, "a.#", NULL);
        cr_assert_eq(wr_exchange_delete(churn, false, &err), WR_OK, "%s", err.msg);
    }
    off_t grown = file_size();
    wr_server_free(srv);

    srv = start(NULL);
    off_t compacted = file_size();
    cr_assert_lt(compacted, grown / 10, "%lld bytes after compaction, %lld before",
                 (long long)compacted, (long long)grown);
    size_t len1, len2;
    uint8_t *first = file_bytes(&len1);
    wr_server_free(srv);
    srv = start(NULL);
    uint8_t *second = file_bytes(&len2);
    cr_assert(len1 == len2 && memcmp(first, second, len1) == 0, "a second start rewrites the "
              "same bytes");
    free(first);
    free(second);

    /* Churn while running: the log is rewritten once history dominates it, so it stays
     * bounded (each pair of records is about 110 bytes; 700 pairs pass the 64 KiB slack). */
    vh = vhost(srv);
    for (int i = 0; i < 700; i++) {
        struct wr_queue *q = queue(vh, "churn-q", true);
        cr_assert_eq(wr_queue_delete(q, false, false, NULL, &err), WR_OK, "%s", err.msg);
    }
    cr_assert_lt(file_size(), 70 * 1024, "%lld bytes", (long long)file_size());
    cr_assert_not_null(wr_queue_find(vh, "keep"));
    wr_server_free(srv);
    srv = start(NULL);
    vh = vhost(srv);
    cr_assert_not_null(wr_queue_find(vh, "keep"));
    cr_assert_null(wr_queue_find(vh, "churn-q"));
    cr_assert_null(wr_exchange_find(vh, "churn"));
    wr_server_free(srv);
}

/* A file with an exchange "a", a queue "q" and a binding a -> q, written by a server. */
static uint8_t *three_records(size_t *len)
{
    struct wr_server *srv = start(NULL);
    struct wr_vhost *vh = vhost(srv);
    struct wr_exchange *a = exchange(vh, "a", "direct", true, false, false, NULL);
    bind(a, queue(vh, "q", true), "k", NULL);
    wr_server_free(srv);
    return file_bytes(len);
}

static void start_and_free(void *data)
{
    (void)data;
    wr_server_free(start(NULL));
}

/* Where the last record of a well-formed file starts: records are a u32 length, two u32
 * CRCs and the payload, after the 8-byte file header. */
static size_t last_record(const uint8_t *p, size_t len)
{
    size_t off = 8, last = 8;
    while (off < len) {
        last = off;
        off += 12 + ((size_t)p[off] | (size_t)p[off + 1] << 8 | (size_t)p[off + 2] << 16 |
                     (size_t)p[off + 3] << 24);
    }
    cr_assert_eq(off, len);
    return last;
}

Test(definitions, a_torn_tail_is_cut_with_a_warning)
{
    size_t len;
    uint8_t *good = three_records(&len);
    size_t last = last_record(good, len);
    uint8_t *buf = calloc(1, len + 4096);
    cr_assert_not_null(buf);
    static const struct {
        const char *what;
        size_t n;
    } tails[] = {
        {"part of a record header", 3},
        {"a record running past the end", 14}, /* the last record's header and 2 bytes */
        {"zeros, as a file system may leave after a crash", 4096},
    };
    for (size_t i = 0; i < 3; i++) {
        memcpy(buf, good, len);
        memset(buf + len, 0, 4096);
        if (i < 2) /* the zeros are there already */
            memcpy(buf + len, good + last, tails[i].n);
        file_write(buf, len + tails[i].n);
        char *log = capture_stderr(start_and_free, NULL);
        cr_assert(strstr(log, "torn"), "%s: no warning in:\n%s", tails[i].what, log);
        cr_assert(strstr(log, path), "%s: the warning names the file:\n%s", tails[i].what, log);
        free(log);
        size_t got_len;
        uint8_t *got = file_bytes(&got_len);
        cr_assert(got_len == len && memcmp(got, good, len) == 0,
                  "%s: the rewritten file is the intact part", tails[i].what);
        free(got);
    }

    /* The last record cut short: it is dropped, the others stay. */
    file_write(good, len - 3);
    char *log = capture_stderr(start_and_free, NULL);
    cr_assert(strstr(log, "torn"), "%s", log);
    free(log);
    struct wr_server *srv = start(NULL);
    struct wr_vhost *vh = vhost(srv);
    cr_assert_not_null(wr_exchange_find(vh, "a"));
    cr_assert_not_null(wr_queue_find(vh, "q"));
    cr_assert_eq(wr_exchange_binding_count(wr_exchange_find(vh, "a")), 0);
    wr_server_free(srv);
    free(buf);
    free(good);
}

/* Start-up fails with code and a message holding want, and leaves the file as it was. */
static void refused(const uint8_t *bytes, size_t len, int code, const char *want)
{
    file_write(bytes, len);
    struct wr_error err = {0};
    struct wr_server *srv = NULL;
    cr_assert_eq(server_new(NULL, &srv, &err), code, "got %d: %s", err.code, err.msg);
    cr_assert(strstr(err.msg, path), "the error names the file: %s", err.msg);
    cr_assert(strstr(err.msg, want), "expected '%s' in: %s", want, err.msg);
    size_t got_len;
    uint8_t *got = file_bytes(&got_len);
    cr_assert(got_len == len && memcmp(got, bytes, len) == 0, "the file was changed");
    free(got);
}

Test(definitions, damage_before_the_last_record_stops_start_up)
{
    size_t len;
    uint8_t *good = three_records(&len);
    uint8_t *bad = malloc(len);
    cr_assert_not_null(bad);
    /* A byte of the first record's payload, then one of its length. */
    static const size_t flips[] = {8 + 12 + 5, 8 + 1};
    for (size_t i = 0; i < 2; i++) {
        memcpy(bad, good, len);
        bad[flips[i]] ^= 0x40;
        refused(bad, len, WR_EPROTO, "damaged record at offset 8");
    }
    free(bad);
    free(good);
}

Test(definitions, a_wrong_magic_or_another_version_stops_start_up)
{
    size_t len;
    uint8_t *good = three_records(&len);
    uint8_t *bad = malloc(len);
    cr_assert_not_null(bad);
    memcpy(bad, good, len);
    bad[0] = 'X';
    refused(bad, len, WR_EPROTO, "not a warren definitions file");
    memcpy(bad, good, len);
    bad[4] = 2;
    refused(bad, len, WR_EPROTO, "format version 2, and this warren reads version 1 (it was "
                                 "written by a newer warren)");
    refused(good, 5, WR_EPROTO, "not a warren definitions file");
    free(bad);
    free(good);
}

Test(definitions, a_failed_write_refuses_the_change_and_undoes_it)
{
    struct wr_server *srv = start(NULL);
    struct wr_vhost *vh = vhost(srv);
    struct wr_error err = {0};
    struct wr_exchange *first = exchange(vh, "first", "fanout", true, false, false, NULL);
    struct wr_queue *q = queue(vh, "q", true);
    off_t size = file_size();

    /* The file may not grow: every write past its size fails (EFBIG). */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit saved;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit small = {(rlim_t)size + 5, saved.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    struct wr_exchange_decl xdecl = {"second", "fanout", true, false, false, NULL};
    int ex_rc = wr_exchange_declare(vh, &xdecl, NULL, &err);
    struct wr_error ex_err = err;
    struct wr_queue_decl qdecl;
    wr_queue_decl_init(&qdecl, "q2");
    qdecl.durable = true;
    int q_rc = wr_queue_declare(vh, &qdecl, NULL, &err);
    int bind_rc = wr_bind_queue(first, q, "", NULL, &err);
    int del_rc = wr_exchange_delete(first, false, &err);
    int qdel_rc = wr_queue_delete(q, false, false, NULL, &err);
    off_t after = file_size();
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);

    cr_assert_eq(ex_rc, WR_EIO, "%s", ex_err.msg);
    cr_assert(strstr(ex_err.msg, path) && strstr(ex_err.msg, "refused"), "%s", ex_err.msg);
    cr_assert_null(wr_exchange_find(vh, "second"));
    cr_assert_eq(q_rc, WR_EIO);
    cr_assert_null(wr_queue_find(vh, "q2"));
    cr_assert_eq(bind_rc, WR_EIO);
    cr_assert_eq(wr_exchange_binding_count(first), 0);
    cr_assert_eq(del_rc, WR_EIO);
    cr_assert_eq(wr_exchange_find(vh, "first"), first);
    cr_assert_eq(qdel_rc, WR_EIO);
    cr_assert_eq(wr_queue_find(vh, "q"), q);
    cr_assert_eq(after, size, "the failed writes were cut off again");

    /* With room again, the same declare works. */
    cr_assert_eq(wr_exchange_declare(vh, &xdecl, NULL, &err), WR_OK, "%s", err.msg);
    wr_server_free(srv);
    srv = start(NULL);
    vh = vhost(srv);
    cr_assert_not_null(wr_exchange_find(vh, "first"));
    cr_assert_not_null(wr_exchange_find(vh, "second"));
    cr_assert_not_null(wr_queue_find(vh, "q"));
    cr_assert_null(wr_queue_find(vh, "q2"));
    cr_assert_eq(wr_exchange_binding_count(wr_exchange_find(vh, "first")), 0);
    wr_server_free(srv);
}

static const char config_topology[] =
    "vhosts:\n"
    "  - name: /\n"
    "    exchanges: [{name: cfg-ex, type: topic, durable: true}]\n"
    "    queues: [{name: cfg-q, durable: true}]\n"
    "    bindings: [{exchange: cfg-ex, queue: cfg-q, key: cfg}]\n";

Test(definitions, the_config_is_declared_at_every_start_and_wins)
{
    struct wr_server *srv = start(config_topology);
    struct wr_vhost *vh = vhost(srv);
    cr_assert_eq(file_size(), -1, "the config's topology is not recorded");
    struct wr_exchange *cfg_ex = wr_exchange_find(vh, "cfg-ex");
    bind(cfg_ex, wr_queue_find(vh, "cfg-q"), "api", NULL);
    bind(cfg_ex, queue(vh, "api-q", true), "api", NULL);
    wr_server_free(srv);

    /* The same config again: its topology and the stored bindings to it. */
    srv = start(config_topology);
    vh = vhost(srv);
    cfg_ex = wr_exchange_find(vh, "cfg-ex");
    cr_assert_eq(wr_exchange_binding_count(cfg_ex), 3);
    cr_assert_str_eq(tu_routed(cfg_ex, "api", NULL), "api-q,cfg-q");
    wr_server_free(srv);

    /* A config that declares api-q otherwise: the config's wins, with a warning. */
    static const char other[] =
        "vhosts:\n"
        "  - name: /\n"
        "    exchanges: [{name: cfg-ex, type: topic, durable: true}]\n"
        "    queues: [{name: cfg-q, durable: true}, {name: api-q, durable: true, max_length: 5}]\n"
        "    bindings: [{exchange: cfg-ex, queue: cfg-q, key: cfg}]\n";
    srv = start(other);
    vh = vhost(srv);
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "api-q");
    decl.durable = true;
    decl.max_length = 5;
    cr_assert_eq(wr_queue_declare(vh, &decl, NULL, NULL), WR_OK, "the config's api-q is kept");
    cr_assert_eq(wr_exchange_binding_count(wr_exchange_find(vh, "cfg-ex")), 3);
    wr_server_free(srv);

    /* Without the config's exchange, the bindings stored to it are dropped: start-up goes
     * on. */
    srv = start(NULL);
    vh = vhost(srv);
    cr_assert_null(wr_exchange_find(vh, "cfg-ex"));
    cr_assert_null(wr_queue_find(vh, "api-q"), "dropped when the config contradicted it");
    wr_server_free(srv);
}

Test(definitions, a_missing_plugin_stops_start_up_by_name)
{
    static const char with_plugin[] =
        "plugins: [{name: testex, path: " WR_TEST_TEST_PLUGIN_DIR "/testex.so}]\n";
    struct wr_server *srv = start(with_plugin);
    exchange(vhost(srv), "custom", "testex", true, false, false, NULL);
    wr_server_free(srv);
    size_t len;
    uint8_t *before = file_bytes(&len);
    struct wr_error err = {0};
    cr_assert_eq(server_new(NULL, &srv, &err), WR_ENOTFOUND, "%s", err.msg);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "exchange 'custom'") &&
                  strstr(err.msg, "no exchange plugin 'testex' is loaded"),
              "%s", err.msg);
    size_t after_len;
    uint8_t *after = file_bytes(&after_len);
    cr_assert(after_len == len && memcmp(before, after, len) == 0);
    srv = start(with_plugin);
    cr_assert_not_null(wr_exchange_find(vhost(srv), "custom"));
    wr_server_free(srv);
    free(before);
    free(after);
}

static bool queue_gone(void *data)
{
    struct wr_vhost *vh = data;
    return wr_queue_find(vh, "brief") == NULL;
}

Test(definitions, implicit_deletes_are_recorded)
{
    struct wr_server *srv = start(NULL);
    struct wr_vhost *vh = vhost(srv);
    struct wr_error err = {0};
    /* An auto-delete exchange goes with its last binding. */
    struct wr_exchange *ad = exchange(vh, "ad", "fanout", true, true, false, NULL);
    struct wr_queue *q = queue(vh, "q", true);
    bind(ad, q, "", NULL);
    cr_assert_eq(wr_queue_delete(q, false, false, NULL, &err), WR_OK, "%s", err.msg);
    cr_assert_null(wr_exchange_find(vh, "ad"));
    /* A queue with x-expires goes once unused that long. */
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "brief");
    decl.durable = true;
    decl.expires_ms = 20;
    cr_assert_eq(wr_queue_declare(vh, &decl, NULL, &err), WR_OK, "%s", err.msg);
    cr_assert(tu_wait(wr_server_loop(srv), queue_gone, vh, 5000), "x-expires never fired");
    wr_server_free(srv);

    srv = start(NULL);
    vh = vhost(srv);
    cr_assert_null(wr_exchange_find(vh, "ad"));
    cr_assert_null(wr_queue_find(vh, "q"));
    cr_assert_null(wr_queue_find(vh, "brief"));
    wr_server_free(srv);
}

Test(definitions, x_expires_runs_again_after_a_restart)
{
    struct wr_server *srv = start(NULL);
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, "brief");
    decl.durable = true;
    decl.expires_ms = 300;
    struct wr_error err = {0};
    cr_assert_eq(wr_queue_declare(vhost(srv), &decl, NULL, &err), WR_OK, "%s", err.msg);
    wr_server_free(srv); /* before it expires */

    srv = start(NULL);
    struct wr_vhost *vh = vhost(srv);
    cr_assert_not_null(wr_queue_find(vh, "brief"), "restored, its clock started again");
    cr_assert(tu_wait(wr_server_loop(srv), queue_gone, vh, 5000), "x-expires never fired");
    wr_server_free(srv);
    srv = start(NULL);
    cr_assert_null(wr_queue_find(vhost(srv), "brief"));
    wr_server_free(srv);
}

Test(definitions, definitions_of_a_vhost_the_config_drops_are_kept)
{
    static const char two[] = "vhosts: [{name: /}, {name: other}]\n";
    struct wr_server *srv = start(two);
    struct wr_vhost *other = wr_vhost_find(wr_server_broker(srv), "other");
    cr_assert_not_null(other);
    struct wr_exchange *ex = exchange(other, "kept", "fanout", true, false, false, NULL);
    bind(ex, queue(other, "kept-q", true), "", NULL);
    wr_server_free(srv);

    srv = start(NULL);
    cr_assert_null(wr_vhost_find(wr_server_broker(srv), "other"));
    wr_server_free(srv);
    srv = start(two);
    other = wr_vhost_find(wr_server_broker(srv), "other");
    cr_assert_str_eq(tu_routed(wr_exchange_find(other, "kept"), "", NULL), "kept-q");
    wr_server_free(srv);
}

/* CRC-32 (zlib's), to forge records whose checksums hold. */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n--) {
        c ^= *p++;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    }
    return c ^ 0xFFFFFFFFu;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

Test(definitions, garbage_never_crashes_start_up)
{
    size_t len;
    uint8_t *good = three_records(&len);
    size_t last = last_record(good, len);
    uint8_t *bad = malloc(len);
    cr_assert_not_null(bad);
    /* Every byte flipped: refused, or (in the last record) cut as torn. */
    for (size_t i = 0; i < len; i++) {
        memcpy(bad, good, len);
        bad[i] ^= 0x01;
        file_write(bad, len);
        struct wr_error err = {0};
        struct wr_server *srv = NULL;
        int rc = server_new(NULL, &srv, &err);
        if (i >= last)
            cr_assert_eq(rc, WR_OK, "byte %zu of the last record: %s", i, err.msg);
        else
            cr_assert_eq(rc, WR_EPROTO, "byte %zu: %d %s", i, rc, err.msg);
        wr_server_free(srv);
    }
    /* The last record's payload cut short but with checksums that hold: an intact record
     * that does not decode. */
    size_t payload = len - last - 12;
    for (size_t n = 0; n < payload; n++) {
        memcpy(bad, good, last + 12 + n);
        put32(bad + last, (uint32_t)n);
        put32(bad + last + 4, crc32_of(bad + last, 4));
        put32(bad + last + 8, crc32_of(bad + last + 12, n));
        file_write(bad, last + 12 + n);
        struct wr_error err = {0};
        struct wr_server *srv = NULL;
        cr_assert_eq(server_new(NULL, &srv, &err), WR_EPROTO, "%zu bytes: %s", n, err.msg);
        cr_assert(strstr(err.msg, "not understood"), "%s", err.msg);
    }
    free(bad);
    free(good);
}
