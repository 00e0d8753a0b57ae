/*
 * storage_queue_test.c: the `queue` storage backend, loaded through the real plugin loader
 * and driven through its ops table. First the queue model's tests the memory backend passes
 * too (storage_queue_model.h: FIFO, ack, requeue at the original place, purge, limits,
 * priorities), on a durable queue of persistent messages so every path goes through the
 * journal; then durability: reopen, every field of a message, torn and flipped tails, a
 * damaged middle segment, a foreign or newer file, segment deletion, and the sync callback
 * with group commit.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage_testutil.h"

#define QUEUE_MODEL_SUITE storage_queue
#include "storage_queue_model.h"

static void setup(void)
{
    queue_model_setup("queue");
    cr_assert_not_null(ops->sync);
}

TestSuite(storage_queue, .init = setup, .fini = storage_teardown, .timeout = 120);

/* ---- helpers --------------------------------------------------------------------------- */

static void set_option_str(const char *name, const char *value)
{
    struct wr_value v = wr_value_str(value);
    cr_assert_eq(wr_table_set(options, name, &v), WR_OK);
}

static void set_option_int(const char *name, int64_t value)
{
    struct wr_value v = wr_value_i64(value);
    cr_assert_eq(wr_table_set(options, name, &v), WR_OK);
}

static int open_fails(struct wr_error *err)
{
    struct wr_storage_args args = make_args(0, -1, -1, WR_OVERFLOW_DROP_HEAD);
    void *state = NULL;
    int rc = ops->open(ctx, &args, &state, err);
    cr_assert_null(state);
    return rc;
}

/* The segment files of the queue, sorted; returns how many. */
static int list_segments(char names[][64], int max)
{
    DIR *d = opendir(qdir);
    cr_assert_not_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".seg")) {
            cr_assert_lt(n, max);
            snprintf(names[n++], 64, "%.60s", de->d_name);
        }
    closedir(d);
    qsort(names, (size_t)n, 64, (int (*)(const void *, const void *))strcmp);
    return n;
}

static char *seg_path(const char *name)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", qdir, name);
    return path;
}

static long file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s", path);
    return (long)st.st_size;
}

static void flip_byte(const char *path, long off)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t c;
    cr_assert_eq(pread(fd, &c, 1, off), 1);
    c ^= 0x5a;
    cr_assert_eq(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

/* Runs the loop until *flag is set, at most 10 seconds. */
static void run_until(const bool *flag)
{
    struct wr_error err = {0};
    for (int i = 0; i < 1000 && !*flag; i++)
        cr_assert_eq(wr_loop_run_once(lp, 10, &err), WR_OK, "%s", err.msg);
    cr_assert(*flag, "the loop never got there");
}

/* ---- the queue model across restarts --------------------------------------------------- */

Test(storage_queue, dropped_messages_stay_gone_after_a_restart)
{
    void *q = open_limited(3, -1, WR_OVERFLOW_DROP_HEAD, true);
    put(q, "1");
    put(q, "2");
    put(q, "3");
    cr_assert_eq(put(q, "4"), WR_OK);
    cr_assert_eq(n_dropped, 1);
    cr_assert(body_is(dropped[0], "1"));
    uint64_t t2 = take(q, "2", false);
    put(q, "5");
    cr_assert_eq(n_dropped, 1, "unacked messages do not count");
    cr_assert_eq(ops->requeue(q, t2), WR_OK);
    cr_assert_eq(n_dropped, 2);
    cr_assert(body_is(dropped[1], "2"), "the requeued 2 is the oldest ready");
    take(q, "3", false);
    take(q, "4", false);
    take(q, "5", false);
    release_dropped();
    ops->close(q);

    /* Gone for good: nothing dropped comes back. */
    q = open_limited(3, -1, WR_OVERFLOW_DROP_HEAD, true);
    take(q, "3", true);
    take(q, "4", true);
    take(q, "5", true);
    assert_empty(q);
    ops->close(q);
}

Test(storage_queue, priorities_survive_a_restart)
{
    void *q = open_priority(5);
    put_priority(q, "low", 1);
    put_priority(q, "none", NO_PRIORITY);
    put_priority(q, "high", 9); /* above max_priority: counts as 5 */
    put_priority(q, "mid", 3);
    put_priority(q, "high2", 5);
    uint64_t t = take(q, "high", false);
    cr_assert_eq(ops->requeue(q, t), WR_OK);
    take(q, "high", true);
    ops->close(q);

    q = open_priority(5);
    take(q, "high", true); /* handed out before the restart; the rest never were */
    take(q, "high2", false);
    take(q, "mid", false);
    take(q, "low", false);
    take(q, "none", false);
    assert_empty(q);
    ops->close(q);
}

Test(storage_queue, bad_options_are_refused)
{
    struct wr_error err = {0};
    set_option_str("flush", "sometimes");
    cr_assert_eq(open_fails(&err), WR_EINVAL);
    cr_assert(strstr(err.msg, "flush"), "%s", err.msg);
    set_option_str("flush", "never");
    set_option_int("segment_size", 0);
    cr_assert_eq(open_fails(&err), WR_EINVAL);
}

/* The model's random operations with restarts, across a tiny segment size so segments roll
 * and go. */
Test(storage_queue, random_operations_with_restarts_match_a_model)
{
    set_option_int("segment_size", 512);
    run_model(0, 6000, 11, true);
    char names[64][64];
    cr_assert_leq(list_segments(names, 64), 40, "acked segments are deleted");
}

/* ---- durability ------------------------------------------------------------------------ */

Test(storage_queue, reopen_brings_back_ready_and_unacked_once)
{
    void *q = open_plain();
    const char *bodies[] = {"1", "2", "3", "4", "5"};
    for (int i = 0; i < 5; i++)
        put(q, bodies[i]);
    uint64_t t1 = take(q, "1", false);
    take(q, "2", false); /* unacked at close */
    uint64_t t3 = take(q, "3", false);
    cr_assert_eq(ops->ack(q, t1), WR_OK);
    cr_assert_eq(ops->ack(q, t3), WR_OK);
    ops->close(q);

    /* What was handed out comes back redelivered; what nobody saw does not. */
    q = open_plain();
    cr_assert_eq(ops->depth(q), 3);
    cr_assert_eq(ops->unacked(q), 0);
    uint64_t t2 = take(q, "2", true);
    take(q, "4", false);
    take(q, "5", false);
    assert_empty(q);
    cr_assert_eq(ops->ack(q, t2), WR_OK);
    put(q, "6");
    ops->close(q);

    q = open_plain();
    take(q, "4", true);
    take(q, "5", true);
    uint64_t t6 = take(q, "6", false);
    cr_assert_gt(t6, t2, "tags keep growing across restarts");
    assert_empty(q);
    ops->close(q);
}

Test(storage_queue, transient_messages_and_plain_queues_keep_nothing)
{
    void *q = open_plain();
    struct wr_msg_init init = {.routing_key = wr_str_c("rk"), .body_ptr = "t", .body_len = 1};
    struct wr_msg *msg = NULL;
    cr_assert_eq(wr_msg_new(&init, &msg, NULL), WR_OK);
    cr_assert_eq(ops->enqueue(q, msg, NULL), WR_OK);
    put(q, "p");
    take(q, "t", false);
    ops->close(q);
    q = open_plain();
    take(q, "p", false);
    assert_empty(q);
    ops->close(q);

    struct wr_storage_args args = make_args(0, -1, -1, WR_OVERFLOW_DROP_HEAD);
    use_queue_dir("plain");
    args.durable = false;
    q = open_args(&args);
    cr_assert_eq(ops->enqueue(q, msg, NULL), WR_OK);
    put(q, "p");
    take(q, "t", false);
    ops->close(q);
    struct stat st;
    cr_assert_neq(stat(qdir, &st), 0, "a non-durable queue writes nothing");
    wr_msg_unref(msg);
}

static struct wr_msg *make_full_msg(size_t body_len)
{
    struct wr_table *nested = wr_table_new();
    struct wr_value v = wr_value_str("inner");
    wr_table_add(nested, "s", &v);
    struct wr_array *arr = wr_array_new();
    v = wr_value_i64(-7);
    wr_array_add(arr, &v);
    v = wr_value_str("x");
    wr_array_add(arr, &v);
    struct wr_table *h = wr_table_new();
    v = wr_value_str("text");
    wr_table_add(h, "str", &v);
    v = wr_value_i64(-1234567890123LL);
    wr_table_add(h, "long", &v);
    v = (struct wr_value){.type = WR_V_I8, .u.i = -5};
    wr_table_add(h, "i8", &v);
    v = wr_value_bool(true);
    wr_table_add(h, "bool", &v);
    v = (struct wr_value){.type = WR_V_DOUBLE, .u.d = 2.5};
    wr_table_add(h, "double", &v);
    v = (struct wr_value){.type = WR_V_DECIMAL, .u.dec = {2, 31415}};
    wr_table_add(h, "dec", &v);
    v = (struct wr_value){.type = WR_V_BYTES, .u.s = {"\0\1\2", 3}};
    wr_table_add(h, "bytes", &v);
    v = (struct wr_value){.type = WR_V_TIMESTAMP, .u.i = 1700000000};
    wr_table_add(h, "ts", &v);
    v = (struct wr_value){.type = WR_V_VOID};
    wr_table_add(h, "void", &v);
    v = (struct wr_value){.type = WR_V_TABLE, .u.table = nested};
    wr_table_add(h, "table", &v);
    v = (struct wr_value){.type = WR_V_ARRAY, .u.array = arr};
    wr_table_add(h, "array", &v);
    struct wr_props props = {
        .flags = WR_PROP_DELIVERY_MODE | WR_PROP_PRIORITY | WR_PROP_TIMESTAMP | WR_PROP_HEADERS,
        .content_type = wr_str_c("application/json"),
        .content_encoding = wr_str_c("gzip"),
        .delivery_mode = 2,
        .priority = 4,
        .correlation_id = wr_str_c("corr"),
        .reply_to = wr_str_c("replies"),
        .expiration = wr_str_c("60000"),
        .message_id = wr_str_c("id-1"),
        .timestamp = 1700000001,
        .type = wr_str_c("t"),
        .user_id = wr_str_c("guest"),
        .app_id = wr_str_c("app"),
        .cluster_id = wr_str_c(""),
    };
    uint8_t *body = malloc(body_len + 1);
    for (size_t i = 0; i < body_len; i++)
        body[i] = (uint8_t)(i * 31 + 7);
    struct wr_msg_init init = {
        .exchange = wr_str_c("orders"), .routing_key = wr_str_c("orders.eu"),
        .key = wr_str_c("k1"), .headers = h, .props = &props, .body_ptr = body,
        .body_len = body_len, .timestamp_ms = 1700000000123LL,
    };
    struct wr_msg *msg = NULL;
    cr_assert_eq(wr_msg_new(&init, &msg, NULL), WR_OK);
    free(body);
    wr_table_free(h);
    wr_table_free(nested);
    wr_array_free(arr);
    return msg;
}

static bool str_eq(struct wr_str a, struct wr_str b)
{
    if (!a.ptr || !b.ptr)
        return !a.ptr && !b.ptr;
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static void assert_same_msg(const struct wr_msg *a, const struct wr_msg *b)
{
    cr_assert(str_eq(a->exchange, b->exchange));
    cr_assert(str_eq(a->routing_key, b->routing_key));
    cr_assert(str_eq(a->key, b->key));
    cr_assert_eq(a->timestamp_ms, b->timestamp_ms);
    const struct wr_props *p = &a->props, *r = &b->props;
    cr_assert_eq(p->flags, r->flags);
    cr_assert_eq(p->delivery_mode, r->delivery_mode);
    cr_assert_eq(p->priority, r->priority);
    cr_assert_eq(p->timestamp, r->timestamp);
    cr_assert(str_eq(p->content_type, r->content_type));
    cr_assert(str_eq(p->content_encoding, r->content_encoding));
    cr_assert(str_eq(p->correlation_id, r->correlation_id));
    cr_assert(str_eq(p->reply_to, r->reply_to));
    cr_assert(str_eq(p->expiration, r->expiration));
    cr_assert(str_eq(p->message_id, r->message_id));
    cr_assert(str_eq(p->type, r->type));
    cr_assert(str_eq(p->user_id, r->user_id));
    cr_assert(str_eq(p->app_id, r->app_id));
    cr_assert(str_eq(p->cluster_id, r->cluster_id));
    cr_assert_eq(a->headers->count, b->headers->count);
    for (size_t i = 0; i < a->headers->count; i++) {
        const struct wr_field *f = &a->headers->fields[i], *g = &b->headers->fields[i];
        cr_assert_str_eq(f->name, g->name);
        cr_assert_eq(f->value.type, g->value.type, "%s", f->name);
        if (f->value.type == WR_V_TABLE || f->value.type == WR_V_ARRAY)
            continue;
        cr_assert(wr_value_equal(&f->value, &g->value), "header %s differs", f->name);
    }
    const struct wr_value *t = wr_table_get(b->headers, "table");
    cr_assert_not_null(t);
    const char *s = NULL;
    size_t len = 0;
    cr_assert(wr_table_get_str(t->u.table, "s", &s, &len));
    cr_assert_eq(len, 5);
    cr_assert_eq(memcmp(s, "inner", 5), 0);
    const struct wr_value *arr = wr_table_get(b->headers, "array");
    cr_assert_eq(arr->u.array->count, 2);
    cr_assert_eq(arr->u.array->items[0].u.i, -7);
    cr_assert_eq(arr->u.array->items[1].type, WR_V_STR);
    size_t la, lb;
    const uint8_t *ba = wr_msg_body(a, &la), *bb = wr_msg_body(b, &lb);
    cr_assert_eq(la, lb);
    cr_assert_eq(memcmp(ba, bb, la), 0, "the body differs");
}

Test(storage_queue, every_field_survives)
{
    struct wr_msg *empty = make_full_msg(0);
    struct wr_msg *big = make_full_msg(1 << 20);
    void *q = open_plain();
    cr_assert_eq(ops->enqueue(q, empty, NULL), WR_OK);
    cr_assert_eq(ops->enqueue(q, big, NULL), WR_OK);
    ops->close(q);
    q = open_plain();
    struct wr_stored d = {0};
    cr_assert_eq(ops->next(q, &d), WR_OK);
    assert_same_msg(empty, d.msg);
    cr_assert_eq(ops->next(q, &d), WR_OK);
    assert_same_msg(big, d.msg);
    ops->close(q);
    wr_msg_unref(empty);
    wr_msg_unref(big);
}

/* Three messages of 100-byte bodies in one segment; returns the segment's path. */
static const char *three_in_one_segment(long *last_record_at)
{
    char body[101];
    memset(body, 'x', 100);
    body[100] = 0;
    void *q = open_plain();
    put(q, body);
    put(q, body);
    char names[8][64];
    cr_assert_eq(list_segments(names, 8), 1);
    *last_record_at = file_size(seg_path(names[0]));
    body[0] = 'y';
    put(q, body);
    ops->close(q);
    return seg_path(names[0]);
}

Test(storage_queue, torn_tail_is_cut_at_the_last_whole_record)
{
    long at = 0;
    const char *path = three_in_one_segment(&at);
    long size = file_size(path);
    cr_assert_eq(truncate(path, at + (size - at) / 2), 0);
    void *q = open_plain();
    cr_assert_eq(ops->depth(q), 2);
    cr_assert_eq(file_size(path), at, "the torn record is cut off");
    put(q, "after");
    ops->close(q);
    q = open_plain();
    cr_assert_eq(ops->depth(q), 3, "appends go on after the cut");
    ops->close(q);
}

Test(storage_queue, flipped_byte_in_the_tail_is_cut)
{
    long at = 0;
    const char *path = three_in_one_segment(&at);
    flip_byte(path, at + 40);
    void *q = open_plain();
    cr_assert_eq(ops->depth(q), 2);
    cr_assert_eq(file_size(path), at);
    ops->close(q);
}

/* Several segments; returns how many, with their names and sizes. */
static int several_segments(char names[][64], long sizes[])
{
    set_option_int("segment_size", 300);
    void *q = open_plain();
    char body[101];
    memset(body, 'z', 100);
    body[100] = 0;
    for (int i = 0; i < 6; i++)
        put(q, body);
    ops->close(q);
    int n = list_segments(names, 16);
    cr_assert_geq(n, 3);
    for (int i = 0; i < n; i++)
        sizes[i] = file_size(seg_path(names[i]));
    return n;
}

static void assert_untouched(char names[][64], const long sizes[], int n)
{
    char now[16][64];
    cr_assert_eq(list_segments(now, 16), n, "no segment was deleted");
    for (int i = 0; i < n; i++)
        cr_assert_eq(file_size(seg_path(names[i])), sizes[i], "%s changed", names[i]);
}

Test(storage_queue, damaged_middle_segment_fails_to_open)
{
    char names[16][64];
    long sizes[16];
    int n = several_segments(names, sizes);
    flip_byte(seg_path(names[1]), 40);
    struct wr_error err = {0};
    cr_assert_eq(open_fails(&err), WR_EPROTO);
    cr_assert(strstr(err.msg, names[1]), "the error names the file: %s", err.msg);
    assert_untouched(names, sizes, n);
}

Test(storage_queue, wrong_magic_or_newer_version_fails_to_open)
{
    char names[16][64];
    long sizes[16];
    int n = several_segments(names, sizes);
    struct wr_error err = {0};

    flip_byte(seg_path(names[n - 1]), 0);
    cr_assert_eq(open_fails(&err), WR_EPROTO);
    cr_assert(strstr(err.msg, names[n - 1]), "%s", err.msg);
    cr_assert(strstr(err.msg, "magic"), "%s", err.msg);
    assert_untouched(names, sizes, n);
    flip_byte(seg_path(names[n - 1]), 0);

    flip_byte(seg_path(names[0]), 4); /* version 1 ^ 0x5a */
    cr_assert_eq(open_fails(&err), WR_EPROTO);
    cr_assert(strstr(err.msg, names[0]), "%s", err.msg);
    cr_assert(strstr(err.msg, "version"), "%s", err.msg);
    assert_untouched(names, sizes, n);
    flip_byte(seg_path(names[0]), 4);

    void *q = open_plain();
    cr_assert_eq(ops->depth(q), 6, "restored files open again");
    ops->close(q);
}

Test(storage_queue, acked_segments_are_deleted)
{
    set_option_int("segment_size", 300);
    void *q = open_plain();
    char body[101];
    memset(body, 'w', 100);
    body[100] = 0;
    for (int i = 0; i < 10; i++)
        put(q, body);
    char names[32][64];
    int before = list_segments(names, 32);
    cr_assert_geq(before, 4);
    uint64_t tags[10];
    for (int i = 0; i < 10; i++)
        tags[i] = take(q, body, false);
    /* Ack the newest first: older segments must wait for theirs. */
    for (int i = 9; i >= 1; i--)
        cr_assert_eq(ops->ack(q, tags[i]), WR_OK);
    int pinned = list_segments(names, 32);
    cr_assert_geq(pinned, 2, "the first segment still holds an unacked message");
    cr_assert_eq(ops->ack(q, tags[0]), WR_OK);
    int after = list_segments(names, 32);
    cr_assert_leq(after, 2, "only the active segment (and one just rolled) remain: %d", after);
    ops->close(q);
    q = open_plain();
    cr_assert_eq(ops->depth(q), 0, "nothing acked comes back");
    ops->close(q);
}

/* ---- sync ------------------------------------------------------------------------------ */

struct sync_probe {
    bool fired;
    int status;
    int calls;
};

static bool in_sync_call;

static void on_synced(void *data, int status)
{
    struct sync_probe *p = data;
    cr_assert_not(in_sync_call, "the callback ran inside sync()");
    p->fired = true;
    p->status = status;
    p->calls++;
}

static void sync_and_wait(void *q, struct sync_probe *p)
{
    in_sync_call = true;
    cr_assert_eq(ops->sync(q, on_synced, p), WR_OK);
    in_sync_call = false;
    cr_assert_not(p->fired);
    run_until(&p->fired);
    cr_assert_eq(p->status, WR_OK);
    cr_assert_eq(p->calls, 1);
}

Test(storage_queue, sync_fires_on_the_loop_for_every_policy)
{
    const char *policies[] = {"always", "interval", "never"};
    for (int i = 0; i < 3; i++) {
        set_option_str("flush", policies[i]);
        set_option_int("flush_interval", 20);
        void *q = open_plain();
        struct sync_probe idle = {0};
        sync_and_wait(q, &idle); /* nothing written */
        put(q, "x");
        struct sync_probe p = {0};
        sync_and_wait(q, &p);
        ops->ack(q, take(q, "x", false));
        struct sync_probe a = {0};
        sync_and_wait(q, &a);
        ops->close(q);
    }
}

Test(storage_queue, group_commit_covers_every_waiter)
{
    void *q = open_plain();
    struct sync_probe probes[50] = {{0}};
    for (int i = 0; i < 50; i++) {
        put(q, "m");
        cr_assert_eq(ops->sync(q, on_synced, &probes[i]), WR_OK);
    }
    run_until(&probes[49].fired);
    for (int i = 0; i < 50; i++) {
        cr_assert(probes[i].fired, "waiter %d", i);
        cr_assert_eq(probes[i].calls, 1);
    }
    ops->close(q);
}

Test(storage_queue, close_completes_pending_syncs)
{
    set_option_str("flush", "interval");
    set_option_int("flush_interval", 60000);
    void *q = open_plain();
    put(q, "m");
    struct sync_probe p = {0};
    cr_assert_eq(ops->sync(q, on_synced, &p), WR_OK);
    cr_assert_not(p.fired);
    ops->close(q);
    cr_assert(p.fired, "close syncs and calls back");
    cr_assert_eq(p.status, WR_OK);
}
