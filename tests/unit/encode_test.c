/*
 * encode_test.c: the byte encodings durable files share (core/src/encode.c, value.h): the
 * little-endian appenders and the bounds-checked reader, tables with every value type and a
 * message's metadata. What is written must read back the same, and no damaged input (cut
 * short, trailing bytes, an unknown type, nesting too deep) may read outside its bytes: every
 * damaged input is copied into a buffer of exactly its length, so ASan sees any overread.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include <warren/wr.h>

/* A heap copy of exactly n bytes of p (at least one byte allocated so n = 0 works). */
static uint8_t *exact_copy(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    cr_assert_not_null(c);
    memcpy(c, p, n);
    return c;
}

static void add(struct wr_table *t, const char *name, struct wr_value v)
{
    cr_assert_eq(wr_table_add(t, name, &v), WR_OK);
}

/* A table holding one field of every value type; with depth > 0 also a nested table and an
 * array holding a table, each built the same way one level down. */
static struct wr_table *every_type(int depth)
{
    struct wr_table *t = wr_table_new();
    cr_assert_not_null(t);
    add(t, "void", (struct wr_value){.type = WR_V_VOID});
    add(t, "true", wr_value_bool(true));
    add(t, "false", wr_value_bool(false));
    add(t, "i8", (struct wr_value){.type = WR_V_I8, .u.i = -128});
    add(t, "u8", (struct wr_value){.type = WR_V_U8, .u.i = 255});
    add(t, "i16", (struct wr_value){.type = WR_V_I16, .u.i = -32768});
    add(t, "u16", (struct wr_value){.type = WR_V_U16, .u.i = 65535});
    add(t, "i32", (struct wr_value){.type = WR_V_I32, .u.i = INT32_MIN});
    add(t, "u32", (struct wr_value){.type = WR_V_U32, .u.i = UINT32_MAX});
    add(t, "i64", wr_value_i64(INT64_MIN));
    add(t, "timestamp", (struct wr_value){.type = WR_V_TIMESTAMP, .u.i = 1700000000});
    add(t, "float", (struct wr_value){.type = WR_V_FLOAT, .u.d = 1.5});
    add(t, "double", (struct wr_value){.type = WR_V_DOUBLE, .u.d = -2.25e300});
    struct wr_value dec = {.type = WR_V_DECIMAL};
    dec.u.dec.scale = 2;
    dec.u.dec.value = 0xDEADBEEF;
    add(t, "decimal", dec);
    add(t, "str", wr_value_str("h\xc3\xa9llo"));
    add(t, "empty", wr_value_strn("", 0));
    struct wr_value bytes = {.type = WR_V_BYTES};
    bytes.u.s.ptr = "a\0b";
    bytes.u.s.len = 3;
    add(t, "bytes", bytes);
    struct wr_array *a = wr_array_new();
    cr_assert_not_null(a);
    struct wr_value items[] = {wr_value_i64(7), wr_value_str("x"), {.type = WR_V_VOID}};
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++)
        cr_assert_eq(wr_array_add(a, &items[i]), WR_OK);
    if (depth > 0) {
        struct wr_table *inner = every_type(depth - 1);
        struct wr_value tv = {.type = WR_V_TABLE, .u.table = inner};
        cr_assert_eq(wr_array_add(a, &tv), WR_OK);
        add(t, "table", tv);
        wr_table_free(inner);
    }
    add(t, "array", (struct wr_value){.type = WR_V_ARRAY, .u.array = a});
    wr_array_free(a);
    return t;
}

/* wr_value_equal treats integers of any width as equal: the encoding must also keep the
 * type letter, so this compares types as well, all the way down. */
static bool same_value(const struct wr_value *a, const struct wr_value *b);

static bool same_table(const struct wr_table *a, const struct wr_table *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++)
        if (strcmp(a->fields[i].name, b->fields[i].name) != 0 ||
            !same_value(&a->fields[i].value, &b->fields[i].value))
            return false;
    return true;
}

static bool same_value(const struct wr_value *a, const struct wr_value *b)
{
    if (a->type != b->type || !wr_value_equal(a, b))
        return false;
    if (a->type == WR_V_TABLE)
        return same_table(a->u.table, b->u.table);
    if (a->type == WR_V_ARRAY) {
        for (size_t i = 0; i < a->u.array->count; i++)
            if (!same_value(&a->u.array->items[i], &b->u.array->items[i]))
                return false;
    }
    return true;
}

/* Reads a table from exactly the bytes [p, p + n); returns wr_read_table's result and checks
 * that a failure leaves *out NULL and err set. */
static int read_table(const uint8_t *p, size_t n, struct wr_table **out, size_t *used)
{
    uint8_t *copy = exact_copy(p, n);
    struct wr_reader r = {copy, copy + n, false};
    int rc = wr_read_table(&r, out);
    if (rc != WR_OK) {
        cr_assert_null(*out);
        cr_assert(r.err);
    }
    if (used)
        *used = (size_t)(r.p - copy);
    free(copy);
    return rc;
}

/* A full message (every property, a key, headers of every type nested depth deep, a body)
 * with its metadata encoded into b; *headers is the caller's too. */
static struct wr_msg *full_msg(int depth, struct wr_table **headers, struct wr_bytes *b)
{
    *headers = every_type(depth);
    struct wr_props pr = {
        .flags = WR_PROP_DELIVERY_MODE | WR_PROP_PRIORITY | WR_PROP_TIMESTAMP | WR_PROP_HEADERS,
        .content_type = wr_str_c("text/plain"),
        .content_encoding = wr_str_c("gzip"),
        .delivery_mode = 2,
        .priority = 9,
        .correlation_id = wr_str_c("corr"),
        .reply_to = wr_str_c("replies"),
        .expiration = wr_str_c("60000"),
        .message_id = wr_str_c("m-1"),
        .timestamp = 1700000000,
        .type = wr_str_c("order"),
        .user_id = wr_str_c("guest"),
        .app_id = wr_str_c("shop"),
        .cluster_id = wr_str_c("c1"),
    };
    struct wr_msg_init init = {
        .exchange = wr_str_c("orders"),
        .routing_key = wr_str_c("orders.eu"),
        .key = wr_str_c("customer-42"),
        .headers = *headers,
        .props = &pr,
        .body_ptr = "body",
        .body_len = 4,
        .timestamp_ms = 1700000000123,
    };
    struct wr_msg *msg = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_new(&init, &msg, &err), WR_OK, "%s", err.msg);
    wr_msg_meta_encode(b, msg);
    cr_assert(!b->oom);
    return msg;
}

static bool str_eq(struct wr_str a, struct wr_str b)
{
    if (!a.ptr || !b.ptr)
        return !a.ptr && !b.ptr;
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

TestSuite(encode);

Test(encode, integers_are_little_endian)
{
    struct wr_bytes b = {0};
    wr_bytes_u8(&b, 0xAB);
    wr_bytes_u32(&b, 0x01020304u);
    wr_bytes_u64(&b, 0x1112131415161718ull);
    static const uint8_t want[] = {0xAB, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15,
                                   0x14, 0x13, 0x12, 0x11};
    cr_assert(!b.oom);
    cr_assert_eq(b.len, sizeof want);
    cr_assert_arr_eq(b.p, want, sizeof want);
    cr_assert_eq(wr_le32_get(b.p + 1), 0x01020304u);
    cr_assert_eq(wr_le64_get(b.p + 5), 0x1112131415161718ull);

    uint8_t at[12] = {0};
    wr_le32_put(at, 0xA0B0C0D0u);
    wr_le64_put(at + 4, UINT64_MAX - 1);
    cr_assert_eq(at[0], 0xD0);
    cr_assert_eq(at[3], 0xA0);
    cr_assert_eq(at[4], 0xFE);
    cr_assert_eq(wr_le64_get(at + 4), UINT64_MAX - 1);
    wr_bytes_free(&b);
}

Test(encode, strings_present_empty_and_absent)
{
    struct wr_bytes b = {0};
    wr_bytes_str(&b, "abc", 3);
    wr_bytes_str(&b, "", 0);
    wr_bytes_str(&b, NULL, 0);
    static const uint8_t want[] = {3, 0, 0, 0, 'a', 'b', 'c', 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF};
    cr_assert_eq(b.len, sizeof want);
    cr_assert_arr_eq(b.p, want, sizeof want);

    uint8_t *in = exact_copy(b.p, b.len);
    struct wr_reader r = {in, in + b.len, false};
    struct wr_str s = wr_read_str(&r);
    cr_assert(str_eq(s, wr_str_c("abc")));
    s = wr_read_str(&r);
    cr_assert_not_null(s.ptr, "empty is present");
    cr_assert_eq(s.len, 0);
    s = wr_read_str(&r);
    cr_assert_null(s.ptr, "absent");
    cr_assert(!r.err);
    cr_assert_eq(r.p, r.end);
    free(in);
    wr_bytes_free(&b);
}

Test(encode, a_string_too_long_to_describe_sets_oom)
{
    struct wr_bytes b = {0};
    wr_bytes_str(&b, "x", (size_t)UINT32_MAX);
    cr_assert(b.oom);
    cr_assert_eq(b.len, 0);
    wr_bytes_free(&b);
}

Test(encode, a_short_read_sets_err_and_every_later_read_gives_zero)
{
    static const uint8_t in[] = {1, 2, 3, 4, 5, 6};
    uint8_t *p = exact_copy(in, sizeof in);
    struct wr_reader r = {p, p + sizeof in, false};
    cr_assert_eq(wr_read_u8(&r), 1);
    cr_assert_eq(wr_read_u32(&r), 0x05040302u);
    cr_assert(!r.err);
    cr_assert_eq(wr_read_u64(&r), 0, "one byte left: too short");
    cr_assert(r.err);
    cr_assert_eq(wr_read_u8(&r), 0, "after an error even a byte that is there reads as 0");
    cr_assert_null(wr_read_bytes(&r, 0));
    cr_assert_null(wr_read_str(&r).ptr);
    free(p);

    static const uint8_t claims_more[] = {10, 0, 0, 0, 'a', 'b'};
    p = exact_copy(claims_more, sizeof claims_more);
    r = (struct wr_reader){p, p + sizeof claims_more, false};
    cr_assert_null(wr_read_str(&r).ptr);
    cr_assert(r.err, "a length past the end is an error, not an absent string");
    free(p);
}

Test(encode, a_table_of_every_type_round_trips)
{
    struct wr_table *t = every_type(3);
    struct wr_bytes b = {0};
    wr_table_encode(&b, t);
    cr_assert(!b.oom);
    struct wr_table *back = NULL;
    size_t used = 0;
    cr_assert_eq(read_table(b.p, b.len, &back, &used), WR_OK);
    cr_assert_eq(used, b.len);
    cr_assert(same_table(t, back));

    /* And it encodes to the same bytes again. */
    struct wr_bytes again = {0};
    wr_table_encode(&again, back);
    cr_assert_eq(again.len, b.len);
    cr_assert_arr_eq(again.p, b.p, b.len);
    wr_bytes_free(&again);
    wr_table_free(back);
    wr_table_free(t);
    wr_bytes_free(&b);
}

Test(encode, an_empty_and_a_null_table_are_a_zero_count)
{
    struct wr_bytes b = {0};
    wr_table_encode(&b, NULL);
    struct wr_table *empty = wr_table_new();
    wr_table_encode(&b, empty);
    static const uint8_t want[] = {0, 0, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(b.len, sizeof want);
    cr_assert_arr_eq(b.p, want, sizeof want);
    struct wr_table *back = NULL;
    cr_assert_eq(read_table(b.p, 4, &back, NULL), WR_OK);
    cr_assert_eq(back->count, 0);
    wr_table_free(back);
    wr_table_free(empty);
    wr_bytes_free(&b);
}

Test(encode, every_truncation_of_a_table_is_eproto)
{
    struct wr_table *t = every_type(2);
    struct wr_bytes b = {0};
    wr_table_encode(&b, t);
    for (size_t n = 0; n < b.len; n++) {
        struct wr_table *back = NULL;
        cr_assert_eq(read_table(b.p, n, &back, NULL), WR_EPROTO, "cut to %zu of %zu", n, b.len);
    }
    wr_table_free(t);
    wr_bytes_free(&b);
}

Test(encode, a_table_in_the_middle_of_a_record_leaves_the_reader_after_it)
{
    struct wr_table *t = every_type(1);
    struct wr_bytes b = {0};
    wr_bytes_u8(&b, 0x42);
    wr_table_encode(&b, t);
    size_t table_end = b.len;
    wr_bytes_u32(&b, 0xCAFEF00Du);
    uint8_t *in = exact_copy(b.p, b.len);
    struct wr_reader r = {in, in + b.len, false};
    struct wr_table *back = NULL;
    cr_assert_eq(wr_read_u8(&r), 0x42);
    cr_assert_eq(wr_read_table(&r, &back), WR_OK);
    cr_assert_eq(r.p, in + table_end);
    cr_assert_eq(wr_read_u32(&r), 0xCAFEF00Du);
    cr_assert(!r.err);
    cr_assert(same_table(t, back));

    /* A reader already in error reads no table. */
    struct wr_table *none = NULL;
    cr_assert_eq(wr_read_u64(&r), 0);
    cr_assert_eq(wr_read_table(&r, &none), WR_EPROTO);
    cr_assert_null(none);
    free(in);
    wr_table_free(back);
    wr_table_free(t);
    wr_bytes_free(&b);
}

Test(encode, malformed_values_are_eproto)
{
    /* count 1, name "k", then a value. */
    static const uint8_t head[] = {1, 0, 0, 0, 1, 0, 0, 0, 'k'};
    struct {
        const char *what;
        uint8_t value[8];
        size_t len;
    } cases[] = {
        {"an unknown type", {WR_V_ARRAY + 1}, 1},
        {"a type past 255", {0xFF}, 1},
        {"an absent string value", {WR_V_STR, 0xFF, 0xFF, 0xFF, 0xFF}, 5},
        {"an array counting more items than bytes", {WR_V_ARRAY, 0xFF, 0xFF, 0, 0}, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t in[sizeof head + 8];
        memcpy(in, head, sizeof head);
        memcpy(in + sizeof head, cases[i].value, cases[i].len);
        struct wr_table *back = NULL;
        cr_assert_eq(read_table(in, sizeof head + cases[i].len, &back, NULL), WR_EPROTO, "%s",
                     cases[i].what);
    }
    static const uint8_t huge_count[] = {0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0};
    struct wr_table *back = NULL;
    cr_assert_eq(read_table(huge_count, sizeof huge_count, &back, NULL), WR_EPROTO);
    static const uint8_t absent_name[] = {1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, WR_V_VOID};
    cr_assert_eq(read_table(absent_name, sizeof absent_name, &back, NULL), WR_EPROTO);
}

/* levels tables, each the only field of the one around it. */
static void nested_tables(struct wr_bytes *b, int levels)
{
    for (int i = 1; i < levels; i++) {
        wr_bytes_u32(b, 1);
        wr_bytes_str(b, "n", 1);
        wr_bytes_u8(b, WR_V_TABLE);
    }
    wr_bytes_u32(b, 0);
}

/* levels arrays inside one table, each the only item of the one around it. */
static void nested_arrays(struct wr_bytes *b, int levels)
{
    wr_bytes_u32(b, 1);
    wr_bytes_str(b, "a", 1);
    for (int i = 1; i < levels; i++) {
        wr_bytes_u8(b, WR_V_ARRAY);
        wr_bytes_u32(b, 1);
    }
    wr_bytes_u8(b, WR_V_ARRAY);
    wr_bytes_u32(b, 0);
}

Test(encode, nesting_up_to_64_reads_and_deeper_is_eproto)
{
    /* Far deeper input is refused at the limit, not followed down the stack. */
    struct {
        void (*build)(struct wr_bytes *b, int levels);
        int levels, rc;
    } cases[] = {
        {nested_tables, 64, WR_OK},     {nested_tables, 65, WR_EPROTO},
        {nested_tables, 100000, WR_EPROTO}, {nested_arrays, 64, WR_OK},
        {nested_arrays, 65, WR_EPROTO}, {nested_arrays, 100000, WR_EPROTO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct wr_bytes b = {0};
        cases[i].build(&b, cases[i].levels);
        struct wr_table *back = NULL;
        cr_assert_eq(read_table(b.p, b.len, &back, NULL), cases[i].rc, "%s %d deep",
                     cases[i].build == nested_tables ? "tables" : "arrays", cases[i].levels);
        wr_table_free(back);
        wr_bytes_free(&b);
    }
}

Test(encode, message_metadata_round_trips_with_every_property_and_header_type)
{
    struct wr_table *h = NULL;
    struct wr_bytes b = {0};
    struct wr_msg *msg = full_msg(2, &h, &b);
    struct wr_buf *buf = wr_buf_new(4);
    cr_assert_not_null(buf);
    memcpy(buf->data, "body", 4);
    buf->len = 4;
    struct wr_slice body = {buf, 0, 4};
    struct wr_msg *back = NULL;
    struct wr_error err = {0};
    uint8_t *in = exact_copy(b.p, b.len);
    cr_assert_eq(wr_msg_meta_decode(in, b.len, body, &back, &err), WR_OK, "%s", err.msg);
    free(in);
    wr_buf_unref(buf);

    cr_assert(str_eq(back->exchange, msg->exchange));
    cr_assert(str_eq(back->routing_key, msg->routing_key));
    cr_assert(str_eq(back->key, msg->key));
    cr_assert_eq(back->timestamp_ms, msg->timestamp_ms);
    const struct wr_props *a = &msg->props, *z = &back->props;
    cr_assert_eq(z->flags, a->flags);
    cr_assert_eq(z->delivery_mode, 2);
    cr_assert_eq(z->priority, 9);
    cr_assert_eq(z->timestamp, a->timestamp);
    const struct wr_str *sa[] = {&a->content_type, &a->content_encoding, &a->correlation_id,
                                 &a->reply_to, &a->expiration, &a->message_id, &a->type,
                                 &a->user_id, &a->app_id, &a->cluster_id};
    const struct wr_str *sz[] = {&z->content_type, &z->content_encoding, &z->correlation_id,
                                 &z->reply_to, &z->expiration, &z->message_id, &z->type,
                                 &z->user_id, &z->app_id, &z->cluster_id};
    for (size_t i = 0; i < sizeof sa / sizeof sa[0]; i++)
        cr_assert(str_eq(*sz[i], *sa[i]), "property %zu", i);
    cr_assert(same_table(back->headers, h));
    size_t len = 0;
    const uint8_t *p = wr_msg_body(back, &len);
    cr_assert_eq(len, 4);
    cr_assert_arr_eq(p, "body", 4);

    /* The decoded message encodes to the same bytes. */
    struct wr_bytes again = {0};
    wr_msg_meta_encode(&again, back);
    cr_assert_eq(again.len, b.len);
    cr_assert_arr_eq(again.p, b.p, b.len);
    wr_bytes_free(&again);
    wr_msg_unref(back);
    wr_msg_unref(msg);
    wr_table_free(h);
    wr_bytes_free(&b);
}

Test(encode, absent_properties_and_key_stay_absent)
{
    struct wr_msg_init init = {.exchange = wr_str_c(""), .routing_key = wr_str_c("rk")};
    struct wr_msg *msg = NULL, *back = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_new(&init, &msg, &err), WR_OK);
    struct wr_bytes b = {0};
    wr_msg_meta_encode(&b, msg);
    cr_assert_eq(wr_msg_meta_decode(b.p, b.len, (struct wr_slice){0}, &back, &err), WR_OK,
                 "%s", err.msg);
    cr_assert_null(back->key.ptr);
    cr_assert_null(back->props.content_type.ptr);
    cr_assert_null(back->props.cluster_id.ptr);
    cr_assert(str_eq(back->exchange, wr_str_c("")));
    cr_assert_eq(back->headers->count, 0);
    wr_msg_unref(back);
    wr_msg_unref(msg);
    wr_bytes_free(&b);
}

Test(encode, every_truncation_of_message_metadata_and_trailing_bytes_are_eproto)
{
    struct wr_table *h = NULL;
    struct wr_bytes b = {0};
    struct wr_msg *msg = full_msg(1, &h, &b);
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *in = exact_copy(b.p, n);
        struct wr_msg *back = NULL;
        struct wr_error err = {0};
        cr_assert_eq(wr_msg_meta_decode(in, n, (struct wr_slice){0}, &back, &err), WR_EPROTO,
                     "cut to %zu of %zu", n, b.len);
        cr_assert_null(back);
        cr_assert_eq(err.code, WR_EPROTO);
        free(in);
    }
    wr_bytes_u8(&b, 0);
    uint8_t *in = exact_copy(b.p, b.len);
    struct wr_msg *back = NULL;
    struct wr_error err = {0};
    cr_assert_eq(wr_msg_meta_decode(in, b.len, (struct wr_slice){0}, &back, &err), WR_EPROTO);
    cr_assert_null(back);
    cr_assert_str_eq(err.msg, "malformed message metadata");
    free(in);
    wr_msg_unref(msg);
    wr_table_free(h);
    wr_bytes_free(&b);
}
