/*
 * log_batch_test.c: the `log` storage's RecordBatch v2 codec (storage-backends/log/batch.c,
 * compiled in so its static CRC paths are reachable): CRC-32C vectors and the hardware and
 * software paths agreeing; messages encoded into batches (record.c, compiled in too) and read
 * back field for field; the Kafka headers an AMQP message's record carries, byte for byte; a
 * batch built byte by byte as a Kafka producer writes it, its property-named headers becoming
 * properties; and broken input (truncations, bit flips, corrupt varints behind a valid CRC,
 * random mutations) that must fail cleanly.
 */
#include "../../storage-backends/log/batch.c"
#include "../../storage-backends/log/record.c"

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- helpers ------------------------------------------------------------------------- */

/* xorshift64*: a fixed-seed generator so a failure reproduces. */
static uint64_t rng_state = 0x9E3779B97F4A7C15u;

static uint64_t rng(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

/* The batch in a buffer of exactly its size, so ASan sees any read past its end. */
static struct wr_buf *buf_of(const uint8_t *p, size_t len)
{
    struct wr_buf *buf = wr_buf_new(len);
    cr_assert_not_null(buf);
    memcpy(buf->data, p, len);
    buf->len = len;
    return buf;
}

static void fix_crc(uint8_t *p, size_t len)
{
    put_be32(p + CRC_OFFSET, crc32c_sw(0, p + CRC_START, len - CRC_START));
}

static void assert_str(struct wr_str got, struct wr_str want, const char *what)
{
    cr_assert_eq(got.ptr == NULL, want.ptr == NULL, "%s: absent vs present", what);
    if (!want.ptr)
        return;
    cr_assert_eq(got.len, want.len, "%s: length", what);
    cr_assert(memcmp(got.ptr, want.ptr, want.len) == 0, "%s: contents", what);
}

/* Equal with the same types all the way down (wr_value_equal lets integer widths differ). */
static bool value_same(const struct wr_value *a, const struct wr_value *b)
{
    if (a->type != b->type || !wr_value_equal(a, b))
        return false;
    if (a->type == WR_V_TABLE) {
        for (size_t i = 0; i < a->u.table->count; i++)
            if (!value_same(&a->u.table->fields[i].value, &b->u.table->fields[i].value))
                return false;
    } else if (a->type == WR_V_ARRAY) {
        for (size_t i = 0; i < a->u.array->count; i++)
            if (!value_same(&a->u.array->items[i], &b->u.array->items[i]))
                return false;
    }
    return true;
}

/* got is want read back from record offset: every field equal, and want's headers followed
 * by x-stream-offset = offset. */
static void assert_msg_read_back(const struct wr_msg *got, const struct wr_msg *want,
                                 uint64_t offset)
{
    assert_str(got->exchange, want->exchange, "exchange");
    assert_str(got->routing_key, want->routing_key, "routing key");
    assert_str(got->key, want->key, "key");
    cr_assert_eq(got->timestamp_ms, want->timestamp_ms);
    const struct wr_props *gp = &got->props, *wp = &want->props;
    cr_assert_eq(gp->flags, wp->flags);
    cr_assert_eq(gp->delivery_mode, wp->delivery_mode);
    cr_assert_eq(gp->priority, wp->priority);
    cr_assert_eq(gp->timestamp, wp->timestamp);
    assert_str(gp->content_type, wp->content_type, "content_type");
    assert_str(gp->content_encoding, wp->content_encoding, "content_encoding");
    assert_str(gp->correlation_id, wp->correlation_id, "correlation_id");
    assert_str(gp->reply_to, wp->reply_to, "reply_to");
    assert_str(gp->expiration, wp->expiration, "expiration");
    assert_str(gp->message_id, wp->message_id, "message_id");
    assert_str(gp->type, wp->type, "type");
    assert_str(gp->user_id, wp->user_id, "user_id");
    assert_str(gp->app_id, wp->app_id, "app_id");
    assert_str(gp->cluster_id, wp->cluster_id, "cluster_id");
    size_t glen, wlen;
    const uint8_t *gb = wr_msg_body(got, &glen), *wb = wr_msg_body(want, &wlen);
    cr_assert_eq(glen, wlen, "body length");
    cr_assert(memcmp(gb, wb, wlen) == 0, "body contents");
    cr_assert_eq(got->headers->count, want->headers->count + 1);
    for (size_t i = 0; i < want->headers->count; i++) {
        const struct wr_field *g = &got->headers->fields[i], *w = &want->headers->fields[i];
        cr_assert_str_eq(g->name, w->name);
        cr_assert(value_same(&g->value, &w->value), "header %s", w->name);
    }
    const struct wr_field *last = &got->headers->fields[want->headers->count];
    cr_assert_str_eq(last->name, "x-stream-offset");
    cr_assert_eq(last->value.type, WR_V_I64);
    cr_assert_eq(last->value.u.i, (int64_t)offset);
}

/* Message i of a test set: the property kinds, headers of several types, the key absent,
 * empty or present, and the body empty, small or body_len bytes. */
static struct wr_msg *test_msg(size_t i, size_t body_len)
{
    struct wr_table *nested = wr_table_new();
    struct wr_table *h = wr_table_new();
    struct wr_array *arr = wr_array_new();
    cr_assert(nested && h && arr);
    struct wr_value v = wr_value_str("inner");
    cr_assert_eq(wr_table_add(nested, "s", &v), WR_OK);
    v = wr_value_i64(-7);
    cr_assert_eq(wr_array_add(arr, &v), WR_OK);
    v = wr_value_bool(true);
    cr_assert_eq(wr_array_add(arr, &v), WR_OK);

    struct wr_value vals[] = {
        wr_value_str("text"),
        wr_value_i64(-(int64_t)i - 1),
        wr_value_bool(i % 2),
        {.type = WR_V_I8, .u.i = -3},
        {.type = WR_V_U16, .u.i = 65535},
        {.type = WR_V_I32, .u.i = INT32_MIN},
        {.type = WR_V_DOUBLE, .u.d = 2.5},
        {.type = WR_V_FLOAT, .u.d = 0.5},
        {.type = WR_V_DECIMAL, .u.dec = {2, 12345}},
        {.type = WR_V_BYTES, .u.s = {"\0\1\2", 3}},
        {.type = WR_V_TIMESTAMP, .u.i = 1700000000},
        {.type = WR_V_VOID},
        {.type = WR_V_TABLE, .u.table = nested},
        {.type = WR_V_ARRAY, .u.array = arr},
    };
    const char *names[] = {"str", "i64", "bool", "i8", "u16", "i32", "double", "float",
                           "decimal", "bytes", "ts", "void", "table", "array"};
    for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++)
        cr_assert_eq(wr_table_add(h, names[k], &vals[k]), WR_OK);

    char rk[32], mid[32];
    snprintf(rk, sizeof rk, "orders.%zu", i);
    snprintf(mid, sizeof mid, "m-%zu", i);
    struct wr_props props = {
        .flags = WR_PROP_DELIVERY_MODE | WR_PROP_PRIORITY | WR_PROP_TIMESTAMP |
                 WR_PROP_HEADERS,
        .content_type = wr_str_c("application/json"),
        .content_encoding = wr_str_c(""),
        .delivery_mode = 2,
        .priority = (uint8_t)(i % 10),
        .correlation_id = wr_str_c("corr"),
        .reply_to = wr_str_c("amq.rabbitmq.reply-to"),
        .expiration = wr_str_c("60000"),
        .message_id = wr_str_c(mid),
        .timestamp = 1700000000 + (int64_t)i,
        .type = wr_str_c("t"),
        .user_id = wr_str_c("guest"),
        .app_id = wr_str_c("app"),
        .cluster_id = {NULL, 0},
    };
    uint8_t *body = malloc(body_len ? body_len : 1);
    cr_assert_not_null(body);
    for (size_t k = 0; k < body_len; k++)
        body[k] = (uint8_t)(k * 31 + i);
    struct wr_str keys[] = {{NULL, 0}, {"", 0}, wr_str_c("customer-42")};
    struct wr_msg_init init = {
        .exchange = wr_str_c(i % 2 ? "orders" : ""),
        .routing_key = wr_str_c(rk),
        .key = keys[i % 3],
        .headers = i % 4 == 3 ? NULL : h, /* some messages carry no headers at all */
        .props = i % 5 == 4 ? NULL : &props,
        .body_ptr = body,
        .body_len = body_len,
        /* Out of order on purpose: the batch's max is not its last record's. */
        .timestamp_ms = 1700000000000 + (int64_t)((i * 7919) % 1000) - 500,
    };
    struct wr_msg *msg = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_new(&init, &msg, &err), WR_OK, "%s", err.msg);
    free(body);
    wr_table_free(h);
    wr_table_free(nested);
    wr_array_free(arr);
    return msg;
}

/* Encodes msgs, checks the batch, gives it base offset base, then reads every record back
 * and compares it with the message it came from. */
static void round_trip(struct wr_msg **msgs, size_t n, uint64_t base)
{
    struct wr_bytes out = {0};
    struct wr_error err = {0};
    cr_assert_eq(lb_encode_msgs(&out, msgs, n, &err), WR_OK, "%s", err.msg);
    struct lb_header h;
    cr_assert_eq(lb_check(out.p, out.len, &h, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(h.base_offset, 0);
    cr_assert_eq(h.record_count, n);
    cr_assert_eq(h.last_offset_delta, n - 1);
    cr_assert_eq(h.attributes, 0);
    cr_assert_eq(h.producer_id, -1);
    cr_assert_eq(h.producer_epoch, -1);
    cr_assert_eq(h.base_sequence, -1);
    cr_assert_eq(h.base_timestamp, msgs[0]->timestamp_ms);
    int64_t max_ts = msgs[0]->timestamp_ms;
    for (size_t i = 1; i < n; i++)
        if (msgs[i]->timestamp_ms > max_ts)
            max_ts = msgs[i]->timestamp_ms;
    cr_assert_eq(h.max_timestamp, max_ts);

    /* The base offset is outside the CRC: the log assigns it without re-checksumming. */
    lb_set_base_offset(out.p, base);
    cr_assert_eq(lb_check(out.p, out.len, &h, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(h.base_offset, base);

    struct wr_buf *buf = buf_of(out.p, out.len);
    wr_bytes_free(&out);
    const uint8_t *pos = NULL;
    struct lb_record r;
    size_t i = 0;
    int rc;
    while ((rc = lb_record_next(buf->data, buf->len, &pos, &r, &err)) == 1) {
        cr_assert_lt(i, n, "more records than messages");
        cr_assert_eq(r.offset, base + i);
        cr_assert_eq(r.timestamp, msgs[i]->timestamp_ms);
        struct wr_str key = wr_msg_record_key(msgs[i]);
        cr_assert_eq(r.key_len, (int32_t)key.len);
        cr_assert(memcmp(r.key, key.ptr, key.len) == 0, "the record key");
        cr_assert_geq(r.header_count, 1);
        struct wr_msg *got = NULL;
        cr_assert_eq(lb_record_msg(buf, &r, &got, &err), WR_OK, "%s", err.msg);
        cr_assert_eq(got->body.len ? got->body.buf : buf, buf, "the body is a slice");
        assert_msg_read_back(got, msgs[i], base + i);
        wr_msg_unref(got);
        i++;
    }
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(i, n);
    wr_buf_unref(buf);
}

static void free_msgs(struct wr_msg **msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        wr_msg_unref(msgs[i]);
}

/* A valid batch of n test messages, as bytes the caller frees. */
static uint8_t *encoded(size_t n, size_t *len)
{
    struct wr_msg *msgs[8];
    cr_assert_leq(n, 8);
    for (size_t i = 0; i < n; i++)
        msgs[i] = test_msg(i, i * 3);
    struct wr_bytes out = {0};
    struct wr_error err = {0};
    cr_assert_eq(lb_encode_msgs(&out, msgs, n, &err), WR_OK, "%s", err.msg);
    free_msgs(msgs, n);
    *len = out.len;
    return out.p;
}

/* lb_check's verdict on p[0..len); its message must contain want. */
static void assert_check_fails(const uint8_t *p, size_t len, const char *want)
{
    struct lb_header h;
    struct wr_error err = {0};
    cr_assert_eq(lb_check(p, len, &h, &err), WR_EPROTO, "len %zu passed", len);
    cr_assert_eq(err.code, WR_EPROTO);
    cr_assert_not_null(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
}

/* Walks every record and header of the batch and builds every message, as a reader would;
 * returns the first error, or the number of records. */
static int walk_all(struct wr_buf *buf)
{
    const uint8_t *pos = NULL;
    struct lb_record r;
    struct wr_error err = {0};
    int rc, n = 0;
    while ((rc = lb_record_next(buf->data, buf->len, &pos, &r, &err)) == 1) {
        const uint8_t *hpos = NULL, *name, *value;
        int32_t name_len, value_len;
        int hrc;
        while ((hrc = lb_header_next(&r, &hpos, &name, &name_len, &value, &value_len)) == 1)
            cr_assert(name_len >= 0 && name + name_len <= r.end);
        if (hrc != 0)
            return hrc;
        struct wr_msg *msg = NULL;
        if (lb_record_msg(buf, &r, &msg, &err) == WR_OK)
            wr_msg_unref(msg);
        n++;
    }
    if (rc != 0)
        cr_assert_eq(err.code, WR_EPROTO);
    return rc < 0 ? rc : n;
}

/* ---- CRC-32C ------------------------------------------------------------------------- */

Test(crc32c, check_vectors)
{
    static const uint8_t zeros[32];
    cr_assert_eq(lb_crc32c(0, "123456789", 9), 0xE3069283u);
    cr_assert_eq(crc32c_sw(0, (const uint8_t *)"123456789", 9), 0xE3069283u);
    cr_assert_eq(lb_crc32c(0, zeros, 32), 0x8A9136AAu);
    cr_assert_eq(crc32c_sw(0, zeros, 32), 0x8A9136AAu);
    cr_assert_eq(lb_crc32c(0, "", 0), 0);
    /* Continuing from a CRC gives the CRC of the concatenation. */
    cr_assert_eq(lb_crc32c(lb_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u);
    cr_assert_eq(crc32c_sw(crc32c_sw(0, (const uint8_t *)"12345", 5),
                           (const uint8_t *)"6789", 4), 0xE3069283u);
}

Test(crc32c, hardware_and_software_agree)
{
#if defined(__x86_64__)
    cr_log_info("sse4.2: %s", __builtin_cpu_supports("sse4.2") ? "yes" : "no (sw twice)");
#endif
    enum { MAX = 4096 + 16 };
    uint8_t *mem = malloc(MAX);
    cr_assert_not_null(mem);
    for (size_t i = 0; i < MAX; i++)
        mem[i] = (uint8_t)rng();
    for (size_t len = 0; len <= 300; len++)
        for (size_t align = 0; align < 8; align++) {
            uint32_t seed = (uint32_t)rng();
            cr_assert_eq(lb_crc32c(seed, mem + align, len), crc32c_sw(seed, mem + align, len),
                         "len %zu align %zu", len, align);
        }
    for (int k = 0; k < 200; k++) {
        size_t align = rng() % 16, len = rng() % (MAX - 16);
        cr_assert_eq(lb_crc32c(0, mem + align, len), crc32c_sw(0, mem + align, len),
                     "len %zu align %zu", len, align);
    }
    free(mem);
}

/* ---- varints, as the spec's examples give them ---------------------------------------- */

Test(varint, spec_examples_and_limits)
{
    struct { int64_t v; uint8_t bytes[10]; size_t n; } cases[] = {
        {0, {0x00}, 1}, {-1, {0x01}, 1}, {1, {0x02}, 1}, {300, {0xD8, 0x04}, 2},
        {INT32_MAX, {0xFE, 0xFF, 0xFF, 0xFF, 0x0F}, 5},
        {INT32_MIN, {0xFF, 0xFF, 0xFF, 0xFF, 0x0F}, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t b[10];
        cr_assert_eq(put_varint(b, cases[i].v), cases[i].n);
        cr_assert_eq(varint_size(cases[i].v), cases[i].n);
        cr_assert(memcmp(b, cases[i].bytes, cases[i].n) == 0, "%lld", (long long)cases[i].v);
        struct cursor c = {b, b + cases[i].n, false};
        cr_assert_eq(get_varint32(&c), cases[i].v);
        cr_assert(!c.bad && c.p == c.end);
        struct cursor cut = {b, b + cases[i].n - 1, false};
        get_varint32(&cut);
        cr_assert(cut.bad, "a varint cut short is an error");
    }
    uint8_t b[10];
    cr_assert_eq(put_varint(b, INT64_MIN), 10);
    struct cursor c = {b, b + 10, false};
    cr_assert_eq(get_varint(&c, VARLONG_MAX, 64), INT64_MIN);
    cr_assert(!c.bad);
    const uint8_t six[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    struct cursor c6 = {six, six + 6, false};
    get_varint32(&c6);
    cr_assert(c6.bad, "a varint is at most 5 bytes");
    const uint8_t wide[] = {0xFF, 0xFF, 0xFF, 0xFF, 0x1F};
    struct cursor cw = {wide, wide + 5, false};
    get_varint32(&cw);
    cr_assert(cw.bad, "more than 32 bits");
}

/* ---- encoding and reading back ------------------------------------------------------- */

Test(encode, one_message)
{
    struct wr_msg *msg = test_msg(2, 5);
    round_trip(&msg, 1, 0);
    round_trip(&msg, 1, 123456789012345);
    free_msgs(&msg, 1);
}

Test(encode, two_messages)
{
    struct wr_msg *msgs[2] = {test_msg(0, 0), test_msg(1, 10)};
    round_trip(msgs, 2, 7);
    free_msgs(msgs, 2);
}

Test(encode, hundred_messages_every_kind)
{
    struct wr_msg *msgs[100];
    for (size_t i = 0; i < 100; i++)
        msgs[i] = test_msg(i, i % 7 == 0 ? 0 : i * 13);
    round_trip(msgs, 100, 1000);
    free_msgs(msgs, 100);
}

Test(encode, one_mebibyte_body)
{
    struct wr_msg *msgs[2] = {test_msg(0, 1 << 20), test_msg(1, 1)};
    round_trip(msgs, 2, 42);
    free_msgs(msgs, 2);
}

Test(encode, record_key_and_meta_header_on_the_wire)
{
    struct wr_msg *msgs[3] = {test_msg(0, 0), test_msg(1, 0), test_msg(2, 0)};
    struct wr_bytes out = {0};
    struct wr_error err = {0};
    cr_assert_eq(lb_encode_msgs(&out, msgs, 3, &err), WR_OK, "%s", err.msg);
    struct wr_buf *buf = buf_of(out.p, out.len);
    const uint8_t *pos = NULL;
    struct lb_record r;
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 1, "%s", err.msg);
    cr_assert_eq(r.key_len, 8, "absent key: the routing key");
    cr_assert(memcmp(r.key, "orders.0", 8) == 0);
    cr_assert_not_null(r.value, "an empty body is an empty value, not a tombstone");
    cr_assert_eq(r.value_len, 0);
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 1, "%s", err.msg);
    cr_assert_not_null(r.key, "an empty key is present and empty");
    cr_assert_eq(r.key_len, 0);
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 1, "%s", err.msg);
    cr_assert_eq(r.key_len, 11);
    cr_assert(memcmp(r.key, "customer-42", 11) == 0);
    const uint8_t *hpos = NULL, *name = NULL, *value = NULL;
    int32_t name_len = 0, value_len = 0;
    for (uint32_t i = 0; i < r.header_count; i++)
        cr_assert_eq(lb_header_next(&r, &hpos, &name, &name_len, &value, &value_len), 1);
    cr_assert_eq(name_len, strlen(LB_META_HEADER), "the metadata comes last");
    cr_assert(memcmp(name, LB_META_HEADER, (size_t)name_len) == 0);
    struct wr_bytes meta = {0};
    wr_msg_meta_encode(&meta, msgs[2]);
    cr_assert_eq((size_t)value_len, meta.len);
    cr_assert(memcmp(value, meta.p, meta.len) == 0);
    wr_bytes_free(&meta);
    cr_assert_eq(lb_header_next(&r, &hpos, &name, &name_len, &value, &value_len), 0);
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 0);
    wr_buf_unref(buf);
    wr_bytes_free(&out);
    free_msgs(msgs, 3);
}

/* ---- what a Kafka consumer sees of an AMQP message ----------------------------------- */

struct kheader_bytes {
    const char *name;
    const char *value; /* NULL: a null value */
    size_t len;
};

#define KH(n, v) {n, v, sizeof v - 1}

/* The one record of msg's batch, in a buffer the caller frees. */
static struct wr_buf *single_record(struct wr_msg *msg, struct lb_record *r)
{
    struct wr_bytes out = {0};
    struct wr_error err = {0};
    cr_assert_eq(lb_encode_msgs(&out, &msg, 1, &err), WR_OK, "%s", err.msg);
    struct wr_buf *buf = buf_of(out.p, out.len);
    wr_bytes_free(&out);
    const uint8_t *pos = NULL;
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, r, &err), 1, "%s", err.msg);
    return buf;
}

static void assert_record_key(struct wr_msg *msg, const char *want)
{
    struct lb_record r;
    struct wr_buf *buf = single_record(msg, &r);
    cr_assert_eq(r.key_len, (int32_t)strlen(want), "key of %s", want);
    cr_assert(memcmp(r.key, want, strlen(want)) == 0, "key %s", want);
    wr_buf_unref(buf);
    wr_msg_unref(msg);
}

Test(kafka_view, every_property_and_header_type)
{
    struct wr_table *inner = wr_table_new(), *t = wr_table_new(), *h = wr_table_new();
    struct wr_array *arr = wr_array_new();
    cr_assert(inner && t && h && arr);
    struct wr_value v = {.type = WR_V_BYTES, .u.s = {"x\\1", 3}};
    cr_assert_eq(wr_table_add(inner, "b", &v), WR_OK);
    v = (struct wr_value){.type = WR_V_TABLE, .u.table = inner};
    cr_assert_eq(wr_array_add(arr, &v), WR_OK);
    v = (struct wr_value){.type = WR_V_VOID};
    cr_assert_eq(wr_array_add(arr, &v), WR_OK);
    v = (struct wr_value){.type = WR_V_DOUBLE, .u.d = 0.1};
    cr_assert_eq(wr_array_add(arr, &v), WR_OK);
    v = wr_value_strn("say \"hi\"\n\x01", 10);
    cr_assert_eq(wr_table_add(t, "s\"q", &v), WR_OK);
    v = wr_value_i64(-5);
    cr_assert_eq(wr_table_add(t, "n", &v), WR_OK);
    v = wr_value_bool(false);
    cr_assert_eq(wr_table_add(t, "f", &v), WR_OK);
    v = (struct wr_value){.type = WR_V_DECIMAL, .u.dec = {4, 42}};
    cr_assert_eq(wr_table_add(t, "d", &v), WR_OK);
    v = (struct wr_value){.type = WR_V_ARRAY, .u.array = arr};
    cr_assert_eq(wr_table_add(t, "a", &v), WR_OK);

    struct wr_value vals[] = {
        wr_value_str("text"),
        {.type = WR_V_BYTES, .u.s = {"\0\xff", 2}},
        wr_value_str(""),
        {.type = WR_V_I8, .u.i = -128},
        {.type = WR_V_U8, .u.i = 255},
        {.type = WR_V_I16, .u.i = -32768},
        {.type = WR_V_U16, .u.i = 65535},
        {.type = WR_V_I32, .u.i = INT32_MIN},
        {.type = WR_V_U32, .u.i = UINT32_MAX},
        wr_value_i64(INT64_MIN),
        {.type = WR_V_FLOAT, .u.d = (double)0.1f},
        {.type = WR_V_DOUBLE, .u.d = 0.1},
        {.type = WR_V_DOUBLE, .u.d = 1e300},
        {.type = WR_V_DECIMAL, .u.dec = {2, 12345}},
        {.type = WR_V_DECIMAL, .u.dec = {0, 7}},
        wr_value_bool(true),
        {.type = WR_V_TIMESTAMP, .u.i = 1700000000},
        {.type = WR_V_VOID},
        {.type = WR_V_TABLE, .u.table = t},
        {.type = WR_V_ARRAY, .u.array = arr},
    };
    const char *names[] = {"str", "bytes", "empty", "i8", "u8", "i16", "u16", "i32", "u32",
                           "i64", "float", "double", "big", "decimal", "decimal0", "bool",
                           "ts", "void", "table", "array"};
    for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++)
        cr_assert_eq(wr_table_add(h, names[k], &vals[k]), WR_OK);
    struct wr_props props = {
        .flags = WR_PROP_DELIVERY_MODE | WR_PROP_PRIORITY | WR_PROP_TIMESTAMP | WR_PROP_HEADERS,
        .content_type = wr_str_c("application/json"),
        .content_encoding = wr_str_c("gzip"),
        .delivery_mode = 2,
        .priority = 9,
        .correlation_id = wr_str_c("corr-1"),
        .reply_to = wr_str_c("replies"),
        .expiration = wr_str_c("60000"),
        .message_id = wr_str_c("m-1"),
        .timestamp = 1700000001,
        .type = wr_str_c("order.created"),
        .user_id = wr_str_c("guest"),
        .app_id = wr_str_c("shop"),
        .cluster_id = wr_str_c("c1"), /* not a Kafka header: only in the metadata */
    };
    struct wr_msg_init init = {
        .exchange = wr_str_c("orders"), .routing_key = wr_str_c("eu.created"), .headers = h,
        .props = &props, .body_ptr = "{}", .body_len = 2, .timestamp_ms = 1700000001000,
    };
    struct wr_msg *msg = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_new(&init, &msg, &err), WR_OK, "%s", err.msg);
    wr_table_free(h);
    wr_table_free(t);
    wr_table_free(inner);
    wr_array_free(arr);

    static const struct kheader_bytes want[] = {
        KH("content-type", "application/json"), KH("content-encoding", "gzip"),
        KH("delivery-mode", "2"), KH("priority", "9"), KH("correlation-id", "corr-1"),
        KH("reply-to", "replies"), KH("expiration", "60000"), KH("message-id", "m-1"),
        KH("timestamp", "1700000001"), KH("type", "order.created"), KH("user-id", "guest"),
        KH("app-id", "shop"),
        KH("str", "text"), KH("bytes", "\0\xff"), KH("empty", ""), KH("i8", "-128"),
        KH("u8", "255"), KH("i16", "-32768"), KH("u16", "65535"), KH("i32", "-2147483648"),
        KH("u32", "4294967295"), KH("i64", "-9223372036854775808"), KH("float", "0.1"),
        KH("double", "0.1"), KH("big", "1e+300"), KH("decimal", "123.45"),
        KH("decimal0", "7"), KH("bool", "true"), KH("ts", "1700000000"), {"void", NULL, 0},
        KH("table", "{\"s\\\"q\":\"say \\\"hi\\\"\\u000a\\u0001\",\"n\":-5,\"f\":false,"
                    "\"d\":0.0042,\"a\":[{\"b\":\"x\\\\1\"},null,0.1]}"),
        KH("array", "[{\"b\":\"x\\\\1\"},null,0.1]"),
    };
    const size_t nwant = sizeof want / sizeof want[0];
    struct lb_record r;
    struct wr_buf *buf = single_record(msg, &r);
    cr_assert_eq(r.key_len, 10, "the routing key is the record key");
    cr_assert(memcmp(r.key, "eu.created", 10) == 0);
    cr_assert_eq(r.value_len, 2);
    cr_assert(memcmp(r.value, "{}", 2) == 0);
    cr_assert_eq(r.timestamp, 1700000001000);
    cr_assert_eq(r.header_count, nwant + 1);
    const uint8_t *hpos = NULL, *name, *value;
    int32_t name_len, value_len;
    for (size_t i = 0; i < nwant; i++) {
        cr_assert_eq(lb_header_next(&r, &hpos, &name, &name_len, &value, &value_len), 1);
        cr_assert_eq((size_t)name_len, strlen(want[i].name), "header %zu: %s", i, want[i].name);
        cr_assert(memcmp(name, want[i].name, (size_t)name_len) == 0, "header %zu: %.*s", i,
                  name_len, name);
        if (!want[i].value) {
            cr_assert_null(value, "%s: a null value", want[i].name);
            continue;
        }
        cr_assert_not_null(value, "%s", want[i].name);
        cr_assert_eq((size_t)value_len, want[i].len, "%s: '%.*s'", want[i].name, value_len,
                     value);
        cr_assert(memcmp(value, want[i].value, want[i].len) == 0, "%s: '%.*s'", want[i].name,
                  value_len, value);
    }
    cr_assert_eq(lb_header_next(&r, &hpos, &name, &name_len, &value, &value_len), 1);
    cr_assert_eq((size_t)name_len, strlen(LB_META_HEADER));
    cr_assert(memcmp(name, LB_META_HEADER, (size_t)name_len) == 0, "the metadata comes last");

    struct wr_msg *got = NULL;
    cr_assert_eq(lb_record_msg(buf, &r, &got, &err), WR_OK, "%s", err.msg);
    assert_msg_read_back(got, msg, 0);
    wr_msg_unref(got);
    wr_buf_unref(buf);
    wr_msg_unref(msg);
}

static struct wr_msg *keyed_msg(const char *rk, const char *key, const struct wr_value *kk)
{
    struct wr_table *h = wr_table_new();
    cr_assert_not_null(h);
    if (kk)
        cr_assert_eq(wr_table_add(h, "x-kafka-key", kk), WR_OK);
    struct wr_msg_init init = {
        .routing_key = wr_str_c(rk), .key = key ? wr_str_c(key) : (struct wr_str){0},
        .headers = h, .body_ptr = "b", .body_len = 1, .timestamp_ms = 1,
    };
    struct wr_msg *msg = NULL;
    cr_assert_eq(wr_msg_new(&init, &msg, NULL), WR_OK);
    wr_table_free(h);
    return msg;
}

Test(kafka_view, record_key_is_x_kafka_key_then_key_then_routing_key)
{
    struct wr_value str = wr_value_str("from-header"), num = wr_value_i64(7);
    assert_record_key(keyed_msg("rk", "k", &str), "from-header");
    assert_record_key(keyed_msg("rk", "k", &num), "k"); /* not a string: ignored */
    assert_record_key(keyed_msg("rk", "k", NULL), "k");
    assert_record_key(keyed_msg("rk", NULL, NULL), "rk");
    assert_record_key(keyed_msg("rk", NULL, &num), "rk");
}

Test(encode, appends_and_refuses_nothing)
{
    struct wr_bytes out = {0};
    struct wr_error err = {0};
    cr_assert_eq(lb_encode_msgs(&out, NULL, 0, &err), WR_EINVAL);
    cr_assert_eq(out.len, 0);
    /* Two batches appended one after the other each stand alone. */
    struct wr_msg *msgs[2] = {test_msg(0, 3), test_msg(1, 4)};
    cr_assert_eq(lb_encode_msgs(&out, msgs, 1, &err), WR_OK, "%s", err.msg);
    size_t first = out.len;
    cr_assert_eq(lb_encode_msgs(&out, msgs + 1, 1, &err), WR_OK, "%s", err.msg);
    struct lb_header h;
    cr_assert_eq(lb_check(out.p, first, &h, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(lb_check(out.p + first, out.len - first, &h, &err), WR_OK, "%s", err.msg);
    wr_bytes_free(&out);
    free_msgs(msgs, 2);
}

/* ---- a batch as a Kafka producer writes it --------------------------------------------- */

struct writer {
    uint8_t b[2048];
    size_t n;
};

static void w_be(struct writer *w, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        w->b[w->n++] = (uint8_t)(v >> (8 * i));
}

/* Zigzag varint, written here from the spec rather than with the code under test. */
static void w_varint(struct writer *w, int64_t v)
{
    uint64_t zz = v < 0 ? ((uint64_t)(-(v + 1)) << 1) | 1 : (uint64_t)v << 1;
    do {
        uint8_t byte = zz & 0x7f;
        zz >>= 7;
        w->b[w->n++] = byte | (zz ? 0x80 : 0);
    } while (zz);
}

static void w_blob(struct writer *w, const char *s, int len)
{
    w_varint(w, len);
    for (int i = 0; i < len; i++)
        w->b[w->n++] = (uint8_t)s[i];
}

struct kheader {
    const char *name, *value; /* value NULL: null */
};

/* One record, framed by its length. */
static void w_record(struct writer *w, int64_t ts_delta, int offset_delta, const char *key,
                     const char *value, const struct kheader *hs, int nh)
{
    struct writer rec = {.n = 0};
    rec.b[rec.n++] = 0; /* attributes */
    w_varint(&rec, ts_delta);
    w_varint(&rec, offset_delta);
    w_blob(&rec, key, key ? (int)strlen(key) : -1);
    w_blob(&rec, value, value ? (int)strlen(value) : -1);
    w_varint(&rec, nh);
    for (int i = 0; i < nh; i++) {
        w_blob(&rec, hs[i].name, (int)strlen(hs[i].name));
        w_blob(&rec, hs[i].value, hs[i].value ? (int)strlen(hs[i].value) : -1);
    }
    w_varint(w, (int64_t)rec.n);
    memcpy(w->b + w->n, rec.b, rec.n);
    w->n += rec.n;
}

/* The 61-byte header before records of count records, then the records; fills in the
 * length and CRC. Returns the batch length. */
static size_t w_batch(struct writer *w, const struct writer *records, int count,
                      uint16_t attributes)
{
    w->n = 0;
    w_be(w, 0, 8);                          /* baseOffset */
    w_be(w, 0, 4);                          /* batchLength, below */
    w_be(w, 0xFFFFFFFF, 4);                 /* partitionLeaderEpoch */
    w_be(w, 2, 1);                          /* magic */
    w_be(w, 0, 4);                          /* crc, below */
    w_be(w, attributes, 2);
    w_be(w, (uint64_t)(count ? count - 1 : 0), 4);
    w_be(w, 1700000000000, 8);              /* baseTimestamp */
    w_be(w, 1700000000250, 8);              /* maxTimestamp */
    w_be(w, 4711, 8);                       /* producerId: an idempotent producer */
    w_be(w, 3, 2);
    w_be(w, 99, 4);                         /* baseSequence */
    w_be(w, (uint64_t)count, 4);
    cr_assert_eq(w->n, LB_HEADER_SIZE);
    memcpy(w->b + w->n, records->b, records->n);
    w->n += records->n;
    uint32_t batch_length = (uint32_t)(w->n - 12);
    for (int i = 0; i < 4; i++)
        w->b[8 + i] = (uint8_t)(batch_length >> (24 - 8 * i));
    uint32_t crc = lb_crc32c(0, w->b + 21, w->n - 21);
    for (int i = 0; i < 4; i++)
        w->b[17 + i] = (uint8_t)(crc >> (24 - 8 * i));
    return w->n;
}

/* Two records: a keyed one with three headers (one null, one name twice), and a tombstone
 * with a null key written 250 ms later. */
static size_t kafka_producer_batch(struct writer *w)
{
    static const struct kheader hs[] = {{"trace", "abc"}, {"empty", NULL}, {"trace", "x"}};
    struct writer recs = {.n = 0};
    w_record(&recs, 0, 0, "user-1", "{\"n\":1}", hs, 3);
    w_record(&recs, 250, 1, NULL, NULL, NULL, 0);
    return w_batch(w, &recs, 2, 0);
}

Test(kafka_producer, records_decode_to_messages)
{
    struct writer w;
    size_t len = kafka_producer_batch(&w);
    struct lb_header h;
    struct wr_error err = {0};
    cr_assert_eq(lb_check(w.b, len, &h, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(h.producer_id, 4711);
    cr_assert_eq(h.producer_epoch, 3);
    cr_assert_eq(h.base_sequence, 99);
    cr_assert_eq(h.partition_leader_epoch, -1);
    cr_assert_eq(h.max_timestamp, 1700000000250);
    lb_set_base_offset(w.b, 500);
    struct wr_buf *buf = buf_of(w.b, len);

    const uint8_t *pos = NULL;
    struct lb_record r;
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 1, "%s", err.msg);
    cr_assert_eq(r.offset, 500);
    cr_assert_eq(r.timestamp, 1700000000000);
    cr_assert_eq(r.header_count, 3);
    struct wr_msg *msg = NULL;
    cr_assert_eq(lb_record_msg(buf, &r, &msg, &err), WR_OK, "%s", err.msg);
    assert_str(msg->exchange, wr_str_c(""), "exchange");
    assert_str(msg->routing_key, wr_str_c("user-1"), "routing key");
    assert_str(msg->key, wr_str_c("user-1"), "key");
    cr_assert_eq(msg->timestamp_ms, 1700000000000);
    size_t blen;
    const uint8_t *body = wr_msg_body(msg, &blen);
    cr_assert_eq(blen, 7);
    cr_assert(memcmp(body, "{\"n\":1}", 7) == 0);
    cr_assert_eq(msg->body.buf, buf, "the body is a slice of the batch");
    const struct wr_value *v = wr_table_get(msg->headers, "trace");
    cr_assert_not_null(v);
    cr_assert_eq(v->type, WR_V_STR, "a Kafka header is a long string to AMQP");
    cr_assert_eq(v->u.s.len, 3, "the first of two 'trace' headers wins");
    cr_assert(memcmp(v->u.s.ptr, "abc", 3) == 0);
    v = wr_table_get(msg->headers, "empty");
    cr_assert_not_null(v);
    cr_assert_eq(v->type, WR_V_VOID, "a null header value");
    int64_t off = 0;
    cr_assert(wr_table_get_int(msg->headers, "x-stream-offset", &off));
    cr_assert_eq(off, 500);
    wr_msg_unref(msg);

    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 1, "%s", err.msg);
    cr_assert_eq(r.offset, 501);
    cr_assert_eq(r.timestamp, 1700000000250);
    cr_assert_null(r.key);
    cr_assert_null(r.value, "a tombstone");
    cr_assert_eq(r.header_count, 0);
    cr_assert_eq(lb_record_msg(buf, &r, &msg, &err), WR_OK, "%s", err.msg);
    assert_str(msg->routing_key, wr_str_c(""), "routing key of a null key");
    cr_assert_null(msg->key.ptr);
    cr_assert_eq(msg->body.len, 0);
    cr_assert_eq(msg->headers->count, 1);
    cr_assert(wr_table_get_int(msg->headers, "x-stream-offset", &off));
    cr_assert_eq(off, 501);
    wr_msg_unref(msg);

    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 0);
    wr_buf_unref(buf);
}

/* The bytes of header name in msg, which must be a long-string header. */
static void assert_str_header(const struct wr_msg *msg, const char *name, const char *want)
{
    const struct wr_value *v = wr_table_get(msg->headers, name);
    cr_assert_not_null(v, "header %s", name);
    cr_assert_eq(v->type, WR_V_STR, "header %s", name);
    cr_assert_eq(v->u.s.len, strlen(want), "header %s", name);
    cr_assert(memcmp(v->u.s.ptr, want, strlen(want)) == 0, "header %s", name);
}

Test(kafka_producer, property_headers_set_properties)
{
    char long_type[300];
    memset(long_type, 'a', sizeof long_type - 1);
    long_type[sizeof long_type - 1] = '\0';
    const struct kheader good[] = {
        {"content-type", "text/plain"}, {"content-encoding", "utf-8"},
        {"delivery-mode", "2"}, {"priority", "7"}, {"correlation-id", "c-9"},
        {"reply-to", "replies"}, {"expiration", "1000"}, {"message-id", "m-9"},
        {"timestamp", "-12"}, {"type", "t"}, {"user-id", "u"}, {"app-id", "a"},
        {"trace", "abc"}, {"content-type", "second"},
    };
    const struct kheader bad[] = {
        {"priority", "high"}, {"delivery-mode", "3"}, {"timestamp", "1.5"},
        {"content-type", NULL}, {"message-id", long_type}, {"priority", "7"},
    };
    struct writer w, recs = {.n = 0};
    w_record(&recs, 0, 0, "k", "v", good, (int)(sizeof good / sizeof good[0]));
    size_t len = w_batch(&w, &recs, 1, 0);
    struct wr_buf *buf = buf_of(w.b, len);
    const uint8_t *pos = NULL;
    struct lb_record r;
    struct wr_error err = {0};
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 1, "%s", err.msg);
    struct wr_msg *msg = NULL;
    cr_assert_eq(lb_record_msg(buf, &r, &msg, &err), WR_OK, "%s", err.msg);
    const struct wr_props *p = &msg->props;
    assert_str(p->content_type, wr_str_c("text/plain"), "content_type");
    assert_str(p->content_encoding, wr_str_c("utf-8"), "content_encoding");
    cr_assert(p->flags & WR_PROP_DELIVERY_MODE);
    cr_assert_eq(p->delivery_mode, 2);
    cr_assert(p->flags & WR_PROP_PRIORITY);
    cr_assert_eq(p->priority, 7);
    assert_str(p->correlation_id, wr_str_c("c-9"), "correlation_id");
    assert_str(p->reply_to, wr_str_c("replies"), "reply_to");
    assert_str(p->expiration, wr_str_c("1000"), "expiration");
    assert_str(p->message_id, wr_str_c("m-9"), "message_id");
    cr_assert(p->flags & WR_PROP_TIMESTAMP);
    cr_assert_eq(p->timestamp, -12);
    assert_str(p->type, wr_str_c("t"), "type");
    assert_str(p->user_id, wr_str_c("u"), "user_id");
    assert_str(p->app_id, wr_str_c("a"), "app_id");
    cr_assert_eq(msg->headers->count, 3, "trace, the second content-type, x-stream-offset");
    assert_str_header(msg, "trace", "abc");
    assert_str_header(msg, "content-type", "second");
    wr_msg_unref(msg);
    wr_buf_unref(buf);

    /* Values a property cannot hold stay ordinary headers, and the properties stay unset. */
    struct writer recs2 = {.n = 0};
    w_record(&recs2, 0, 0, "k", "v", bad, (int)(sizeof bad / sizeof bad[0]));
    len = w_batch(&w, &recs2, 1, 0);
    buf = buf_of(w.b, len);
    pos = NULL;
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 1, "%s", err.msg);
    cr_assert_eq(lb_record_msg(buf, &r, &msg, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(msg->props.flags & (WR_PROP_DELIVERY_MODE | WR_PROP_TIMESTAMP), 0);
    cr_assert(msg->props.flags & WR_PROP_PRIORITY, "the good priority after the bad one");
    cr_assert_eq(msg->props.priority, 7);
    cr_assert_null(msg->props.content_type.ptr, "a null value is no content type");
    cr_assert_null(msg->props.message_id.ptr, "300 bytes is no AMQP short string");
    assert_str_header(msg, "priority", "high");
    assert_str_header(msg, "delivery-mode", "3");
    assert_str_header(msg, "timestamp", "1.5");
    assert_str_header(msg, "message-id", long_type);
    const struct wr_value *v = wr_table_get(msg->headers, "content-type");
    cr_assert_not_null(v);
    cr_assert_eq(v->type, WR_V_VOID);
    cr_assert_eq(msg->headers->count, 6);
    wr_msg_unref(msg);
    wr_buf_unref(buf);
}

Test(kafka_producer, empty_batch_after_compaction)
{
    struct writer w, none = {.n = 0};
    size_t len = w_batch(&w, &none, 0, 0);
    struct lb_header h;
    struct wr_error err = {0};
    cr_assert_eq(lb_check(w.b, len, &h, &err), WR_OK, "%s", err.msg);
    struct wr_buf *buf = buf_of(w.b, len);
    cr_assert_eq(walk_all(buf), 0);
    wr_buf_unref(buf);
}

Test(kafka_producer, compressed_records_are_not_walked)
{
    struct writer w;
    struct writer recs = {.n = 0};
    w_record(&recs, 0, 0, "k", "v", NULL, 0);
    w_record(&recs, 0, 1, "k", "v", NULL, 0);
    for (uint16_t codec = 1; codec <= 4; codec++) {
        size_t len = w_batch(&w, &recs, 2, codec); /* not really compressed: never read */
        struct lb_header h;
        struct wr_error err = {0};
        cr_assert_eq(lb_check(w.b, len, &h, &err), WR_OK, "%s", err.msg);
        const uint8_t *pos = NULL;
        struct lb_record r;
        cr_assert_eq(lb_record_next(w.b, len, &pos, &r, &err), WR_EPROTO);
        cr_assert_not_null(strstr(err.msg, "compressed"), "%s", err.msg);
    }
}

/* ---- broken input -------------------------------------------------------------------- */

Test(broken, every_truncation_fails_check)
{
    size_t len;
    uint8_t *p = encoded(3, &len);
    for (size_t n = 0; n < len; n++) {
        uint8_t *cut = malloc(n ? n : 1);
        cr_assert_not_null(cut);
        memcpy(cut, p, n);
        assert_check_fails(cut, n, n < LB_HEADER_SIZE ? "too short" : "length mismatch");
        free(cut);
    }
    free(p);
}

Test(broken, every_bit_flip_fails_check)
{
    size_t len;
    uint8_t *p = encoded(3, &len);
    struct lb_header h;
    struct wr_error err = {0};
    for (size_t byte = 0; byte < len; byte++)
        for (int bit = 0; bit < 8; bit++) {
            p[byte] ^= (uint8_t)(1 << bit);
            if (byte < 8 || (byte >= 12 && byte < 16))
                /* baseOffset and partitionLeaderEpoch: the broker's to set, not covered */
                cr_assert_eq(lb_check(p, len, &h, &err), WR_OK, "%s", err.msg);
            else if (byte < 12)
                assert_check_fails(p, len, "length mismatch");
            else if (byte == MAGIC_OFFSET)
                assert_check_fails(p, len, "magic");
            else
                assert_check_fails(p, len, "CRC mismatch");
            p[byte] ^= (uint8_t)(1 << bit);
        }
    cr_assert_eq(lb_check(p, len, &h, &err), WR_OK, "%s", err.msg);
    free(p);
}

Test(broken, messages_name_the_failed_check)
{
    size_t len;
    uint8_t *p = encoded(2, &len);
    uint8_t *copy = malloc(len);
    cr_assert_not_null(copy);

    for (int magic = 0; magic <= 1; magic++) {
        memcpy(copy, p, len);
        copy[MAGIC_OFFSET] = (uint8_t)magic;
        char want[32];
        snprintf(want, sizeof want, "magic %d is not 2", magic);
        assert_check_fails(copy, len, want);
    }

    memcpy(copy, p, len);
    copy[len - 1] ^= 0xff;
    char want[96];
    snprintf(want, sizeof want, "says 0x%08x, its bytes give 0x%08x", be32(p + CRC_OFFSET),
             crc32c_sw(0, copy + CRC_START, len - CRC_START));
    assert_check_fails(copy, len, want);

    memcpy(copy, p, len);
    put_be32(copy + 57, 3); /* three records claimed, lastOffsetDelta says at most two */
    fix_crc(copy, len);
    assert_check_fails(copy, len, "record count 3 is implausible");

    memcpy(copy, p, len);
    put_be32(copy + 23, 1000000);
    put_be32(copy + 57, 1000000); /* a million records in a few hundred bytes */
    fix_crc(copy, len);
    assert_check_fails(copy, len, "implausible");

    memcpy(copy, p, len);
    put_be32(copy + 23, 0x80000000u);
    fix_crc(copy, len);
    assert_check_fails(copy, len, "lastOffsetDelta -2147483648 is negative");
    free(copy);
    free(p);
}

/* A record with its fields replaced by bytes behind a valid CRC: lb_check passes, the walk
 * fails cleanly with WR_EPROTO. */
static void assert_walk_fails(const struct writer *recs, int count)
{
    struct writer w;
    size_t len = w_batch(&w, recs, count, 0);
    struct lb_header h;
    struct wr_error err = {0};
    cr_assert_eq(lb_check(w.b, len, &h, &err), WR_OK, "%s", err.msg);
    struct wr_buf *buf = buf_of(w.b, len);
    const uint8_t *pos = NULL;
    struct lb_record r;
    cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), WR_EPROTO);
    cr_assert_eq(err.code, WR_EPROTO);
    cr_assert_gt(strlen(err.msg), 0);
    wr_buf_unref(buf);
}

/* Writes one record from raw body bytes, framed by declared (which may lie). */
static void w_raw_record(struct writer *w, int64_t declared, const uint8_t *body, size_t n)
{
    w_varint(w, declared);
    memcpy(w->b + w->n, body, n);
    w->n += n;
}

Test(broken, corrupt_records_behind_a_valid_crc)
{
    /* attributes, ts delta, offset delta, key, value (long enough that a batch claiming a
     * second record still looks plausible), header count */
    const uint8_t good[] = {0, 0, 0, 0x02, 'k', 0x14, '0', '1', '2', '3', '4', '5', '6', '7',
                            '8', '9', 0x00};
    struct writer recs;

    recs.n = 0;
    w_raw_record(&recs, sizeof good, good, sizeof good);
    struct writer w;
    size_t len = w_batch(&w, &recs, 1, 0);
    struct wr_buf *buf = buf_of(w.b, len);
    cr_assert_eq(walk_all(buf), 1, "the uncorrupted record reads");
    wr_buf_unref(buf);

    recs.n = 0; /* record length longer than its contents, running past the batch */
    w_raw_record(&recs, sizeof good + 1, good, sizeof good);
    assert_walk_fails(&recs, 1);

    recs.n = 0; /* record length shorter than its contents */
    w_raw_record(&recs, sizeof good - 1, good, sizeof good);
    assert_walk_fails(&recs, 1);

    recs.n = 0; /* a byte after the headers, inside the record's length */
    uint8_t trailing[sizeof good + 1];
    memcpy(trailing, good, sizeof good);
    trailing[sizeof good] = 0;
    w_raw_record(&recs, sizeof trailing, trailing, sizeof trailing);
    assert_walk_fails(&recs, 1);

    recs.n = 0; /* a length one too long that swallows the next record's first byte */
    w_raw_record(&recs, sizeof good + 1, good, sizeof good);
    uint8_t second[sizeof good];
    memcpy(second, good, sizeof good);
    second[2] = 0x02; /* offset delta 1 */
    w_raw_record(&recs, sizeof second, second, sizeof second);
    assert_walk_fails(&recs, 2);

    recs.n = 0; /* negative record length */
    w_raw_record(&recs, -1, good, sizeof good);
    assert_walk_fails(&recs, 1);

    const uint8_t key_minus_two[] = {0, 0, 0, 0x03, 0x02, 'v', 0x00};
    recs.n = 0;
    w_raw_record(&recs, sizeof key_minus_two, key_minus_two, sizeof key_minus_two);
    assert_walk_fails(&recs, 1);

    const uint8_t key_past_end[] = {0, 0, 0, 0x7E, 'k', 0x02, 'v', 0x00};
    recs.n = 0;
    w_raw_record(&recs, sizeof key_past_end, key_past_end, sizeof key_past_end);
    assert_walk_fails(&recs, 1);

    const uint8_t value_past_end[] = {0, 0, 0, 0x02, 'k', 0x04, 'v', 0x00};
    recs.n = 0;
    w_raw_record(&recs, sizeof value_past_end, value_past_end, sizeof value_past_end);
    assert_walk_fails(&recs, 1);

    const uint8_t too_many_headers[] = {0, 0, 0, 0x02, 'k', 0x02, 'v', 0x04, 0x02, 'h', 0x01};
    recs.n = 0;
    w_raw_record(&recs, sizeof too_many_headers, too_many_headers, sizeof too_many_headers);
    assert_walk_fails(&recs, 1);

    const uint8_t null_header_name[] = {0, 0, 0, 0x02, 'k', 0x02, 'v', 0x02, 0x01, 0x01};
    recs.n = 0;
    w_raw_record(&recs, sizeof null_header_name, null_header_name, sizeof null_header_name);
    assert_walk_fails(&recs, 1);

    const uint8_t header_value_past_end[] = {0, 0, 0, 0x02, 'k', 0x02, 'v', 0x02, 0x02, 'h',
                                             0x08, 'x'};
    recs.n = 0;
    w_raw_record(&recs, sizeof header_value_past_end, header_value_past_end,
                 sizeof header_value_past_end);
    assert_walk_fails(&recs, 1);

    const uint8_t negative_header_count[] = {0, 0, 0, 0x02, 'k', 0x02, 'v', 0x01};
    recs.n = 0;
    w_raw_record(&recs, sizeof negative_header_count, negative_header_count,
                 sizeof negative_header_count);
    assert_walk_fails(&recs, 1);

    /* A varint that never ends: every byte has its continuation bit, to the record's end. */
    const uint8_t endless[] = {0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
    recs.n = 0;
    w_raw_record(&recs, sizeof endless, endless, sizeof endless);
    assert_walk_fails(&recs, 1);
    recs.n = 0; /* a record length longer than a varint may be */
    memset(recs.b, 0x80, 8);
    recs.n = 8;
    assert_walk_fails(&recs, 1);

    const uint8_t offset_beyond_last[] = {0, 0, 0x04, 0x02, 'k', 0x02, 'v', 0x00};
    recs.n = 0;
    w_raw_record(&recs, sizeof offset_beyond_last, offset_beyond_last,
                 sizeof offset_beyond_last);
    assert_walk_fails(&recs, 1);

    recs.n = 0; /* fewer records than record_count */
    w_raw_record(&recs, sizeof good, good, sizeof good);
    assert_walk_fails(&recs, 2);

    recs.n = 0; /* more records than record_count: two, with offset deltas 0 and 1 */
    w_raw_record(&recs, sizeof good, good, sizeof good);
    w_raw_record(&recs, sizeof second, second, sizeof second);
    struct writer w2;
    size_t len2 = w_batch(&w2, &recs, 2, 0);
    put_be32(w2.b + 57, 1);
    fix_crc(w2.b, len2);
    struct wr_buf *buf2 = buf_of(w2.b, len2);
    struct wr_error err = {0};
    const uint8_t *pos = NULL;
    struct lb_record r;
    cr_assert_eq(lb_record_next(buf2->data, buf2->len, &pos, &r, &err), WR_EPROTO);
    cr_assert_not_null(strstr(err.msg, "more bytes"), "%s", err.msg);
    wr_buf_unref(buf2);

    recs.n = 0; /* two records with the same offset */
    w_raw_record(&recs, sizeof good, good, sizeof good);
    w_raw_record(&recs, sizeof good, good, sizeof good);
    assert_walk_fails(&recs, 2);
}

Test(broken, warren_meta_that_does_not_decode)
{
    static const struct kheader bad[] = {{LB_META_HEADER, "garbage"}};
    static const struct kheader null[] = {{LB_META_HEADER, NULL}};
    struct writer recs = {.n = 0};
    w_record(&recs, 0, 0, "k", "v", bad, 1);
    w_record(&recs, 0, 1, "k", "v", null, 1);
    struct writer w;
    size_t len = w_batch(&w, &recs, 2, 0);
    struct wr_buf *buf = buf_of(w.b, len);
    const uint8_t *pos = NULL;
    struct lb_record r;
    struct wr_error err = {0};
    struct wr_msg *msg = NULL;
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(lb_record_next(buf->data, buf->len, &pos, &r, &err), 1, "%s", err.msg);
        cr_assert_eq(lb_record_msg(buf, &r, &msg, &err), WR_EPROTO);
        cr_assert_null(msg);
        cr_assert_not_null(strstr(err.msg, "offset"), "%s", err.msg);
    }
    wr_buf_unref(buf);
}

Test(broken, random_mutations_never_crash)
{
    size_t len;
    uint8_t *p = encoded(4, &len);
    uint8_t *m = malloc(len);
    cr_assert_not_null(m);
    int walked = 0, failed = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(m, p, len);
        int flips = 1 + (int)(rng() % 4);
        for (int k = 0; k < flips; k++) {
            /* Mostly inside the records, where the walker is exercised. */
            size_t at = rng() % 4 ? LB_HEADER_SIZE + rng() % (len - LB_HEADER_SIZE)
                                  : CRC_START + rng() % (len - CRC_START);
            switch (rng() % 3) {
            case 0: m[at] ^= (uint8_t)(1u << (rng() % 8)); break;
            case 1: m[at] = (uint8_t)rng(); break;
            default: m[at] = (uint8_t)(rng() % 2 ? 0xFF : 0x80); break;
            }
        }
        fix_crc(m, len);
        struct lb_header h;
        struct wr_error err = {0};
        if (lb_check(m, len, &h, &err) != WR_OK)
            continue;
        struct wr_buf *buf = buf_of(m, len);
        if (walk_all(buf) < 0)
            failed++;
        else
            walked++;
        wr_buf_unref(buf);
    }
    cr_log_info("random mutations: %d walked, %d malformed", walked, failed);
    cr_assert_gt(walked + failed, 10000, "most mutations reach the record walker");
    cr_assert_gt(failed, 0);
    free(m);
    free(p);
}
