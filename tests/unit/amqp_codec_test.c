/*
 * amqp_codec_test.c: the AMQP 0-9-1 wire codec (plugins/amqp091/codec.c and the code
 * gen_codec.py generates): field tables of every type, every method of the spec, content
 * headers with all basic properties, frames and body splitting, and the answers to broken
 * input (501 frame error, 502 syntax error, 503 command invalid, malformed UTF-8 in a
 * shortstr) without a bad read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "codec.h"

TestSuite(amqp_codec);

/* ---- helpers ------------------------------------------------------------------------- */

static void assert_bytes(const struct amqp_wr *w, const uint8_t *want, size_t n)
{
    cr_assert_not(w->oom);
    cr_assert_eq(w->len, n, "wrote %zu bytes, want %zu", w->len, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(w->p[i], want[i], "byte %zu is %02x, want %02x", i, w->p[i], want[i]);
}

static void add(struct wr_table *t, const char *name, struct wr_value v)
{
    cr_assert_eq(wr_table_add(t, name, &v), WR_OK);
}

static struct wr_value val_int(enum wr_value_type type, int64_t i)
{
    struct wr_value v = {.type = type};
    v.u.i = i;
    return v;
}

static struct wr_value val_double(enum wr_value_type type, double d)
{
    struct wr_value v = {.type = type};
    v.u.d = d;
    return v;
}

/* Decodes a whole encoded table, asserting that it used every byte. */
static struct wr_table *decode_table(const struct amqp_wr *w)
{
    struct amqp_rd r = {w->p, w->len, 0, false};
    struct wr_table *t = NULL;
    cr_assert_eq(amqp_rd_table(&r, &t), 0);
    cr_assert_not(r.bad);
    cr_assert_eq(r.off, w->len);
    cr_assert_not_null(t);
    return t;
}

static int decode_table_rc(const uint8_t *p, size_t len)
{
    struct amqp_rd r = {p, len, 0, false};
    struct wr_table *t = NULL;
    int rc = amqp_rd_table(&r, &t);
    if (rc == 0)
        wr_table_free(t);
    else
        cr_assert_null(t);
    return rc;
}

/* ---- readers and writers -------------------------------------------------------------- */

Test(amqp_codec, integers_are_big_endian)
{
    struct amqp_wr w = {0};
    amqp_wr_u8(&w, 0x01);
    amqp_wr_u16(&w, 0x0203);
    amqp_wr_u32(&w, 0x04050607);
    amqp_wr_u64(&w, 0x08090a0b0c0d0e0full);
    static const uint8_t want[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    assert_bytes(&w, want, sizeof want);

    struct amqp_rd r = {w.p, w.len, 0, false};
    cr_assert_eq(amqp_rd_u8(&r), 0x01);
    cr_assert_eq(amqp_rd_u16(&r), 0x0203);
    cr_assert_eq(amqp_rd_u32(&r), 0x04050607u);
    cr_assert_eq(amqp_rd_u64(&r), 0x08090a0b0c0d0e0full);
    cr_assert_not(r.bad);
    cr_assert_eq(amqp_rd_u8(&r), 0);
    cr_assert(r.bad);
    amqp_wr_free(&w);
}

Test(amqp_codec, reads_past_the_end_return_zero_and_set_bad)
{
    static const uint8_t three[] = {0xff, 0xff, 0xff};
    struct amqp_rd r = {three, sizeof three, 0, false};
    cr_assert_eq(amqp_rd_u32(&r), 0);
    cr_assert(r.bad);
    cr_assert_eq(amqp_rd_u8(&r), 0, "once bad, reads stay zero");

    static const uint8_t shortstr[] = {5, 'a', 'b'};
    r = (struct amqp_rd){shortstr, sizeof shortstr, 0, false};
    struct wr_str s = amqp_rd_shortstr(&r);
    cr_assert(r.bad);
    cr_assert_eq(s.len, 0);

    static const uint8_t longstr[] = {0xff, 0xff, 0xff, 0xff, 'a'};
    r = (struct amqp_rd){longstr, sizeof longstr, 0, false};
    s = amqp_rd_longstr(&r);
    cr_assert(r.bad);
    cr_assert_eq(s.len, 0);
}

Test(amqp_codec, strings)
{
    char long_name[300];
    memset(long_name, 'n', sizeof long_name);
    struct amqp_wr w = {0};
    amqp_wr_shortstr(&w, (struct wr_str){long_name, sizeof long_name});
    cr_assert_eq(w.len, 256, "a shortstr is cut to 255 bytes");
    cr_assert_eq(w.p[0], 255);
    amqp_wr_longstr(&w, (struct wr_str){"a\0b", 3});
    amqp_wr_shortstr(&w, (struct wr_str){NULL, 0});

    struct amqp_rd r = {w.p, w.len, 0, false};
    struct wr_str s = amqp_rd_shortstr(&r);
    cr_assert_eq(s.len, 255);
    cr_assert_eq(memcmp(s.ptr, long_name, 255), 0);
    s = amqp_rd_longstr(&r);
    cr_assert_eq(s.len, 3);
    cr_assert_eq(memcmp(s.ptr, "a\0b", 3), 0);
    s = amqp_rd_shortstr(&r);
    cr_assert_not_null(s.ptr, "an empty string read is present, not absent");
    cr_assert_eq(s.len, 0);
    cr_assert_not(r.bad);
    cr_assert_eq(r.off, w.len);
    amqp_wr_free(&w);
}

Test(amqp_codec, buffer_grows_geometrically)
{
    struct amqp_wr w = {0};
    size_t grows = 0, cap = 0;
    for (int i = 0; i < 100000; i++) {
        amqp_wr_u8(&w, (uint8_t)i);
        if (w.cap != cap) {
            grows++;
            cap = w.cap;
        }
    }
    cr_assert_eq(w.len, 100000);
    cr_assert_leq(grows, 12, "%zu reallocations for 100000 bytes", grows);
    for (int i = 0; i < 100000; i++)
        cr_assert_eq(w.p[i], (uint8_t)i);
    amqp_wr_free(&w);
    cr_assert_null(w.p);
    cr_assert_eq(w.len, 0);
}

/* ---- field tables --------------------------------------------------------------------- */

Test(amqp_codec, table_exact_bytes)
{
    struct amqp_wr w = {0};
    amqp_wr_table(&w, NULL);
    static const uint8_t empty[] = {0, 0, 0, 0};
    assert_bytes(&w, empty, sizeof empty);

    struct wr_table *t = wr_table_new();
    add(t, "a", wr_value_bool(true));
    w.len = 0;
    amqp_wr_table(&w, t);
    static const uint8_t bool_a[] = {0, 0, 0, 4, 1, 'a', 't', 1};
    assert_bytes(&w, bool_a, sizeof bool_a);
    wr_table_free(t);

    t = wr_table_new();
    add(t, "n", val_int(WR_V_I32, -2));
    struct wr_value dec = {.type = WR_V_DECIMAL};
    dec.u.dec.scale = 2;
    dec.u.dec.value = 12345;
    add(t, "d", dec);
    add(t, "f", val_double(WR_V_FLOAT, 1.5));
    add(t, "g", val_double(WR_V_DOUBLE, -2.0));
    w.len = 0;
    amqp_wr_table(&w, t);
    /* 7 + 8 + 7 + 11 bytes of fields */
    static const uint8_t want[] = {
        0, 0, 0, 33,
        1, 'n', 'I', 0xff, 0xff, 0xff, 0xfe,
        1, 'd', 'D', 2, 0x00, 0x00, 0x30, 0x39,
        1, 'f', 'f', 0x3f, 0xc0, 0x00, 0x00,
        1, 'g', 'd', 0xc0, 0x00, 0, 0, 0, 0, 0, 0,
    };
    assert_bytes(&w, want, sizeof want);
    wr_table_free(t);

    /* An array: its length counts the tagged values, which carry no names. */
    struct wr_array *a = wr_array_new();
    struct wr_value one = val_int(WR_V_I32, 1), hi = wr_value_str("hi");
    cr_assert_eq(wr_array_add(a, &one), WR_OK);
    cr_assert_eq(wr_array_add(a, &hi), WR_OK);
    t = wr_table_new();
    struct wr_value av = {.type = WR_V_ARRAY};
    av.u.array = a;
    add(t, "A", av);
    wr_array_free(a);
    w.len = 0;
    amqp_wr_table(&w, t);
    static const uint8_t array[] = {
        0, 0, 0, 19,
        1, 'A', 'A', 0, 0, 0, 12,
        'I', 0, 0, 0, 1,
        'S', 0, 0, 0, 2, 'h', 'i',
    };
    assert_bytes(&w, array, sizeof array);
    wr_table_free(t);
    amqp_wr_free(&w);
}

/* A table with one field of every type, a nested table and an array holding a table. */
static struct wr_table *every_type(void)
{
    struct wr_table *inner = wr_table_new();
    add(inner, "deep", wr_value_str("down"));
    struct wr_value inner_v = {.type = WR_V_TABLE};
    inner_v.u.table = inner;

    struct wr_array *a = wr_array_new();
    struct wr_value items[] = {val_int(WR_V_U8, 200), wr_value_strn("x\0y", 3), inner_v,
                               {.type = WR_V_VOID}};
    for (size_t i = 0; i < sizeof items / sizeof items[0]; i++)
        cr_assert_eq(wr_array_add(a, &items[i]), WR_OK);
    struct wr_value array_v = {.type = WR_V_ARRAY};
    array_v.u.array = a;

    struct wr_value dec = {.type = WR_V_DECIMAL};
    dec.u.dec.scale = 3;
    dec.u.dec.value = 0xfedcba98u;
    struct wr_value bytes = wr_value_strn("\x00\x01\xff", 3);
    bytes.type = WR_V_BYTES;

    struct wr_table *t = wr_table_new();
    add(t, "void", (struct wr_value){.type = WR_V_VOID});
    add(t, "bool", wr_value_bool(true));
    add(t, "i8", val_int(WR_V_I8, -100));
    add(t, "u8", val_int(WR_V_U8, 250));
    add(t, "i16", val_int(WR_V_I16, -30000));
    add(t, "u16", val_int(WR_V_U16, 65000));
    add(t, "i32", val_int(WR_V_I32, -2000000000));
    add(t, "u32", val_int(WR_V_U32, 4000000000));
    add(t, "i64", val_int(WR_V_I64, INT64_MIN + 7));
    add(t, "float", val_double(WR_V_FLOAT, -0.25));
    add(t, "double", val_double(WR_V_DOUBLE, 3.141592653589793));
    add(t, "decimal", dec);
    add(t, "str", wr_value_str("héllo"));
    add(t, "bytes", bytes);
    add(t, "timestamp", val_int(WR_V_TIMESTAMP, 1700000000));
    add(t, "table", inner_v);
    add(t, "array", array_v);
    add(t, "", wr_value_str("empty name"));
    wr_table_free(inner);
    wr_array_free(a);
    return t;
}

Test(amqp_codec, table_every_type_round_trips)
{
    struct wr_table *t = every_type();
    struct amqp_wr w = {0};
    amqp_wr_table(&w, t);
    struct wr_table *back = decode_table(&w);

    cr_assert_eq(back->count, t->count);
    for (size_t i = 0; i < t->count; i++) {
        const struct wr_field *want = &t->fields[i], *got = &back->fields[i];
        cr_assert_eq(got->name_len, want->name_len);
        cr_assert_str_eq(got->name, want->name);
        cr_assert_eq(got->value.type, want->value.type, "field %s: type %d, want %d",
                     want->name, got->value.type, want->value.type);
        cr_assert(wr_value_equal(&got->value, &want->value), "field %s differs", want->name);
    }
    /* Spot checks of what equality alone would not show. */
    cr_assert_eq(wr_table_get(back, "i64")->u.i, INT64_MIN + 7);
    cr_assert_eq(wr_table_get(back, "u32")->u.i, 4000000000);
    cr_assert_eq(wr_table_get(back, "i8")->u.i, -100);
    const struct wr_array *a = wr_table_get(back, "array")->u.array;
    cr_assert_eq(a->count, 4);
    cr_assert_eq(a->items[2].type, WR_V_TABLE);
    cr_assert_eq(a->items[3].type, WR_V_VOID);
    cr_assert_eq(a->items[1].u.s.len, 3);

    /* The decoded table encodes to the same bytes. */
    struct amqp_wr again = {0};
    amqp_wr_table(&again, back);
    assert_bytes(&again, w.p, w.len);

    amqp_wr_free(&again);
    amqp_wr_free(&w);
    wr_table_free(back);
    wr_table_free(t);
}

Test(amqp_codec, decoded_table_accepts_appends)
{
    struct wr_table *t = wr_table_new();
    char name[16];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "k%d", i);
        add(t, name, wr_value_i64(i));
    }
    struct amqp_wr w = {0};
    amqp_wr_table(&w, t);
    struct wr_table *back = decode_table(&w);
    for (int i = 5; i < 40; i++) {
        snprintf(name, sizeof name, "k%d", i);
        add(back, name, wr_value_i64(i));
    }
    cr_assert_eq(back->count, 40);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "k%d", i);
        int64_t v = -1;
        cr_assert(wr_table_get_int(back, name, &v));
        cr_assert_eq(v, i);
    }
    amqp_wr_free(&w);
    wr_table_free(back);
    wr_table_free(t);
}

Test(amqp_codec, table_L_reads_as_signed_64_bit)
{
    static const uint8_t p[] = {0, 0, 0, 11, 1, 'L', 'L', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xfd};
    struct amqp_rd r = {p, sizeof p, 0, false};
    struct wr_table *t = NULL;
    cr_assert_eq(amqp_rd_table(&r, &t), 0);
    cr_assert_eq(t->fields[0].value.type, WR_V_I64);
    cr_assert_eq(t->fields[0].value.u.i, -3);
    wr_table_free(t);
}

Test(amqp_codec, table_errors_are_syntax_errors)
{
    static const uint8_t bad_tag[] = {0, 0, 0, 4, 1, 'a', 'Z', 1};
    cr_assert_eq(decode_table_rc(bad_tag, sizeof bad_tag), AMQP_SYNTAX_ERROR);
    /* Lengths past the end of the buffer. */
    static const uint8_t overrun[] = {0, 0, 0, 9, 1, 'a', 't', 1};
    cr_assert_eq(decode_table_rc(overrun, sizeof overrun), AMQP_SYNTAX_ERROR);
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1, 'a', 't', 1};
    cr_assert_eq(decode_table_rc(huge, sizeof huge), AMQP_SYNTAX_ERROR);
    /* The value runs past the table's own length though not past the buffer. */
    static const uint8_t value_past_table[] = {0, 0, 0, 4, 1, 'a', 'I', 0, 0, 0, 1};
    cr_assert_eq(decode_table_rc(value_past_table, sizeof value_past_table),
                 AMQP_SYNTAX_ERROR);
    static const uint8_t name_past_table[] = {0, 0, 0, 2, 5, 'a', 'b', 'c', 'd', 'e'};
    cr_assert_eq(decode_table_rc(name_past_table, sizeof name_past_table), AMQP_SYNTAX_ERROR);
    static const uint8_t str_overrun[] = {0, 0, 0, 8, 1, 'a', 'S', 0, 0, 1, 0, 'x'};
    cr_assert_eq(decode_table_rc(str_overrun, sizeof str_overrun), AMQP_SYNTAX_ERROR);
    static const uint8_t array_bad_tag[] = {0, 0, 0, 9, 1, 'a', 'A', 0, 0, 0, 2, 'Q', 0};
    cr_assert_eq(decode_table_rc(array_bad_tag, sizeof array_bad_tag), AMQP_SYNTAX_ERROR);
    static const uint8_t short_length[] = {0, 0, 0};
    cr_assert_eq(decode_table_rc(short_length, sizeof short_length), AMQP_SYNTAX_ERROR);
    /* A good field followed by a bad one: the first is freed (ASan checks). */
    static const uint8_t good_then_bad[] = {0, 0, 0, 16, 1, 'a', 'S', 0, 0, 0, 2, 'h', 'i',
                                            1, 'b', '?', 0, 0, 0, 0};
    cr_assert_eq(decode_table_rc(good_then_bad, 20), AMQP_SYNTAX_ERROR);
}

/* levels nested tables {"n": {"n": ... {}}}, or arrays [[...[]]] when arrays. */
static void nested(struct amqp_wr *w, int levels, bool arrays)
{
    size_t marks[200];
    cr_assert_leq(levels, 200);
    for (int i = 0; i < levels; i++) {
        marks[i] = w->len;
        amqp_wr_u32(w, 0);
        if (i + 1 < levels) {
            if (!arrays)
                amqp_wr_shortstr(w, wr_str_c("n"));
            amqp_wr_u8(w, arrays ? 'A' : 'F');
        }
    }
    for (int i = levels - 1; i >= 0; i--) {
        uint32_t n = (uint32_t)(w->len - marks[i] - 4);
        w->p[marks[i]] = (uint8_t)(n >> 24);
        w->p[marks[i] + 1] = (uint8_t)(n >> 16);
        w->p[marks[i] + 2] = (uint8_t)(n >> 8);
        w->p[marks[i] + 3] = (uint8_t)n;
    }
}

Test(amqp_codec, nesting_is_limited_to_64_levels)
{
    struct amqp_wr w = {0};
    nested(&w, 64, false);
    cr_assert_eq(decode_table_rc(w.p, w.len), 0);
    w.len = 0;
    nested(&w, 65, false);
    cr_assert_eq(decode_table_rc(w.p, w.len), AMQP_SYNTAX_ERROR);
    w.len = 0;
    nested(&w, 100, false);
    cr_assert_eq(decode_table_rc(w.p, w.len), AMQP_SYNTAX_ERROR);

    /* Arrays nest the same way: a table holding 99 arrays. */
    w.len = 0;
    amqp_wr_u32(&w, 0);
    amqp_wr_shortstr(&w, wr_str_c("a"));
    amqp_wr_u8(&w, 'A');
    nested(&w, 99, true);
    uint32_t n = (uint32_t)(w.len - 4);
    w.p[0] = (uint8_t)(n >> 24);
    w.p[1] = (uint8_t)(n >> 16);
    w.p[2] = (uint8_t)(n >> 8);
    w.p[3] = (uint8_t)n;
    cr_assert_eq(decode_table_rc(w.p, w.len), AMQP_SYNTAX_ERROR);
    amqp_wr_free(&w);
}

/* ---- methods -------------------------------------------------------------------------- */

Test(amqp_codec, method_ids_names_and_constants)
{
    cr_assert_eq(AMQP_BASIC_PUBLISH, (60u << 16) | 40);
    cr_assert_eq(AMQP_EXCHANGE_UNBIND_OK, (40u << 16) | 51);
    cr_assert_eq(AMQP_CONFIRM_SELECT, (85u << 16) | 10);
    cr_assert_eq(AMQP_BASIC_NACK, (60u << 16) | 120);
    cr_assert_eq(AMQP_CONNECTION_BLOCKED, (10u << 16) | 60);
    cr_assert_eq(AMQP_CONNECTION_START_OK, (10u << 16) | 11);
    cr_assert_str_eq(amqp_method_name(AMQP_BASIC_PUBLISH), "basic.publish");
    cr_assert_str_eq(amqp_method_name(AMQP_EXCHANGE_UNBIND_OK), "exchange.unbind-ok");
    cr_assert_str_eq(amqp_method_name(AMQP_CONNECTION_UPDATE_SECRET_OK),
                     "connection.update-secret-ok");
    cr_assert_null(amqp_method_name((60u << 16) | 41));
    cr_assert_null(amqp_method_name(0));

    uint32_t content[] = {AMQP_BASIC_PUBLISH, AMQP_BASIC_RETURN, AMQP_BASIC_DELIVER,
                          AMQP_BASIC_GET_OK};
    size_t with_content = 0;
    for (size_t i = 0; i < AMQP_METHOD_COUNT; i++)
        with_content += amqp_method_has_content(amqp_method_ids[i]);
    cr_assert_eq(with_content, 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert(amqp_method_has_content(content[i]));
    cr_assert_not(amqp_method_has_content(AMQP_BASIC_ACK));

    cr_assert_eq(AMQP_FRAME_METHOD, 1);
    cr_assert_eq(AMQP_FRAME_HEADER, 2);
    cr_assert_eq(AMQP_FRAME_BODY, 3);
    cr_assert_eq(AMQP_FRAME_HEARTBEAT, 8);
    cr_assert_eq(AMQP_FRAME_END, 0xce);
    cr_assert_eq(AMQP_FRAME_MIN_SIZE, 8192);
    cr_assert_eq(AMQP_NOT_FOUND, 404);
    cr_assert_eq(AMQP_FRAME_ERROR, 501);
    cr_assert_eq(AMQP_CLASS_BASIC, 60);
    cr_assert_str_eq(amqp_reply_name(404), "NOT_FOUND");
    cr_assert_str_eq(amqp_reply_name(200), "REPLY_SUCCESS");
    cr_assert_str_eq(amqp_reply_name(320), "CONNECTION_FORCED");
    cr_assert_str_eq(amqp_reply_name(541), "INTERNAL_ERROR");
    cr_assert_str_eq(amqp_reply_name(501), "FRAME_ERROR", "an error code named FRAME-... is one");
    cr_assert_null(amqp_reply_name(206), "frame constants are not reply codes");
    cr_assert_null(amqp_reply_name(999));

    /* Every id is listed once, and names its own method. */
    for (size_t i = 0; i < AMQP_METHOD_COUNT; i++) {
        cr_assert_not_null(amqp_method_name(amqp_method_ids[i]));
        for (size_t j = i + 1; j < AMQP_METHOD_COUNT; j++)
            cr_assert_neq(amqp_method_ids[i], amqp_method_ids[j]);
    }
    cr_assert_eq(AMQP_METHOD_COUNT, 66);
}

Test(amqp_codec, queue_declare_packs_bits)
{
    struct amqp_method m = {.id = AMQP_QUEUE_DECLARE};
    m.u.queue_declare.queue = wr_str_c("q");
    m.u.queue_declare.passive = true;
    m.u.queue_declare.exclusive = true;
    m.u.queue_declare.nowait = true;
    struct amqp_wr w = {0};
    amqp_wr_method(&w, 1, &m);
    static const uint8_t want[] = {
        1, 0, 1, 0, 0, 0, 13,     /* method frame, channel 1, 13 bytes */
        0, 50, 0, 10,             /* queue.declare */
        0, 0,                     /* ticket */
        1, 'q',                   /* queue */
        0x15,                     /* passive, exclusive, nowait: bits 0, 2, 4 */
        0, 0, 0, 0,               /* arguments: NULL is an empty table */
        0xce,
    };
    assert_bytes(&w, want, sizeof want);

    struct amqp_method back;
    cr_assert_eq(amqp_method_decode(w.p + 7, 13, &back), 0);
    cr_assert_eq(back.id, AMQP_QUEUE_DECLARE);
    cr_assert(back.u.queue_declare.passive);
    cr_assert_not(back.u.queue_declare.durable);
    cr_assert(back.u.queue_declare.exclusive);
    cr_assert_not(back.u.queue_declare.auto_delete);
    cr_assert(back.u.queue_declare.nowait);
    cr_assert_eq(back.u.queue_declare.arguments->count, 0);
    amqp_method_free(&back);
    cr_assert_null(back.u.queue_declare.arguments);

    /* durable and auto-delete alone: bits 1 and 3. */
    m.u.queue_declare = (struct amqp_queue_declare){.durable = true, .auto_delete = true};
    w.len = 0;
    amqp_method_encode(&w, &m);
    cr_assert_eq(w.len, 12);
    cr_assert_eq(w.p[7], 0x0a);
    amqp_wr_free(&w);
}

Test(amqp_codec, basic_publish_decodes)
{
    static const uint8_t p[] = {0, 60, 0, 40, 0, 0, 2, 'e', 'x', 3, 'k', 'e', 'y', 0x03};
    struct amqp_method m;
    cr_assert_eq(amqp_method_decode(p, sizeof p, &m), 0);
    cr_assert_eq(m.id, AMQP_BASIC_PUBLISH);
    const struct amqp_basic_publish *a = &m.u.basic_publish;
    cr_assert_eq(a->exchange.len, 2);
    cr_assert_eq(memcmp(a->exchange.ptr, "ex", 2), 0);
    cr_assert_eq(a->exchange.ptr, (const char *)p + 7, "strings borrow from the payload");
    cr_assert_eq(a->routing_key.len, 3);
    cr_assert_eq(memcmp(a->routing_key.ptr, "key", 3), 0);
    cr_assert(a->mandatory);
    cr_assert(a->immediate);
    amqp_method_free(&m);
}

Test(amqp_codec, basic_deliver_and_ack_encode)
{
    struct amqp_method m = {.id = AMQP_BASIC_DELIVER};
    m.u.basic_deliver = (struct amqp_basic_deliver){
        .consumer_tag = wr_str_c("ct"), .delivery_tag = 0x0102030405060708ull,
        .redelivered = true, .exchange = wr_str_c(""), .routing_key = wr_str_c("rk")};
    struct amqp_wr w = {0};
    amqp_method_encode(&w, &m);
    static const uint8_t deliver[] = {0, 60, 0, 60, 2, 'c', 't', 1, 2, 3, 4, 5, 6, 7, 8,
                                      1, 0, 2, 'r', 'k'};
    assert_bytes(&w, deliver, sizeof deliver);

    m = (struct amqp_method){.id = AMQP_BASIC_ACK};
    m.u.basic_ack.delivery_tag = 42;
    m.u.basic_ack.multiple = true;
    w.len = 0;
    amqp_method_encode(&w, &m);
    static const uint8_t ack[] = {0, 60, 0, 80, 0, 0, 0, 0, 0, 0, 0, 42, 1};
    assert_bytes(&w, ack, sizeof ack);
    amqp_wr_free(&w);
}

Test(amqp_codec, connection_start_carries_tables_and_longstrs)
{
    struct wr_table *props = wr_table_new();
    add(props, "product", wr_value_str("warren"));
    struct wr_table *caps = wr_table_new();
    add(caps, "publisher_confirms", wr_value_bool(true));
    struct wr_value caps_v = {.type = WR_V_TABLE};
    caps_v.u.table = caps;
    add(props, "capabilities", caps_v);

    struct amqp_method m = {.id = AMQP_CONNECTION_START};
    m.u.connection_start = (struct amqp_connection_start){
        .version_major = 0, .version_minor = 9, .server_properties = props,
        .mechanisms = wr_str_c("PLAIN AMQPLAIN"), .locales = wr_str_c("en_US")};
    struct amqp_wr w = {0};
    amqp_method_encode(&w, &m);

    struct amqp_method back;
    cr_assert_eq(amqp_method_decode(w.p, w.len, &back), 0);
    const struct amqp_connection_start *a = &back.u.connection_start;
    cr_assert_eq(a->version_minor, 9);
    cr_assert_eq(a->mechanisms.len, 14);
    cr_assert_eq(memcmp(a->mechanisms.ptr, "PLAIN AMQPLAIN", 14), 0);
    cr_assert_eq(a->locales.len, 5);
    const char *s = NULL;
    size_t n = 0;
    cr_assert(wr_table_get_str(a->server_properties, "product", &s, &n));
    cr_assert_eq(n, 6);
    const struct wr_value *c = wr_table_get(a->server_properties, "capabilities");
    cr_assert_eq(c->type, WR_V_TABLE);
    bool b = false;
    cr_assert(wr_table_get_bool(c->u.table, "publisher_confirms", &b));
    cr_assert(b);
    amqp_method_free(&back);
    amqp_wr_free(&w);
    wr_table_free(caps);
    wr_table_free(props);
}

/* Appends arguments for sig (amqp_method_sigs) whose values differ per argument and from
 * the defaults; consecutive bits share octets as the spec packs them. */
static void build_args(struct amqp_wr *w, const char *sig, unsigned salt)
{
    char text[64];
    for (size_t i = 0; sig[i];) {
        unsigned k = (unsigned)i + salt;
        switch (sig[i]) {
        case 'b': {
            uint8_t bits = 0;
            for (unsigned n = 0; sig[i] == 'b' && n < 8; n++, i++)
                if ((n + salt) % 2 == 0)
                    bits |= (uint8_t)(1u << n);
            amqp_wr_u8(w, bits);
            continue;
        }
        case 'o': amqp_wr_u8(w, (uint8_t)(0x80 + k)); break;
        case 'h': amqp_wr_u16(w, (uint16_t)(0x1000 + k)); break;
        case 'l': amqp_wr_u32(w, 0x10000000u + k); break;
        case 'q':
        case 't': amqp_wr_u64(w, 0x0102030405060700ull + k); break;
        case 's':
            snprintf(text, sizeof text, "short-%u", k);
            amqp_wr_shortstr(w, wr_str_c(text));
            break;
        case 'S': {
            int n = snprintf(text, sizeof text, "long%cstring-%u", 0, k);
            amqp_wr_longstr(w, (struct wr_str){text, (size_t)n});
            break;
        }
        case 'F': {
            struct wr_table *t = wr_table_new();
            snprintf(text, sizeof text, "key-%u", k);
            add(t, text, val_int(WR_V_I32, -(int64_t)k));
            add(t, "s", wr_value_str("value"));
            amqp_wr_table(w, t);
            wr_table_free(t);
            break;
        }
        default: cr_assert_fail("unknown signature letter %c", sig[i]);
        }
        i++;
    }
}

static void method_payload(struct amqp_wr *w, size_t i, unsigned salt)
{
    w->len = 0;
    amqp_wr_u32(w, amqp_method_ids[i]);
    build_args(w, amqp_method_sigs[i], salt);
    cr_assert_not(w->oom);
}

Test(amqp_codec, every_method_round_trips)
{
    struct amqp_wr in = {0}, out = {0};
    for (size_t i = 0; i < AMQP_METHOD_COUNT; i++) {
        const char *name = amqp_method_name(amqp_method_ids[i]);
        for (unsigned salt = 1; salt <= 2; salt++) {
            method_payload(&in, i, salt);
            struct amqp_method m;
            memset(&m, 0xa5, sizeof m);
            cr_assert_eq(amqp_method_decode(in.p, in.len, &m), 0, "%s", name);
            cr_assert_eq(m.id, amqp_method_ids[i]);
            out.len = 0;
            amqp_method_encode(&out, &m);
            cr_assert_eq(out.len, in.len, "%s: encoded %zu bytes, decoded %zu", name,
                         out.len, in.len);
            cr_assert_eq(memcmp(out.p, in.p, in.len), 0, "%s does not round-trip", name);
            amqp_method_free(&m);
        }
    }
    amqp_wr_free(&in);
    amqp_wr_free(&out);
}

Test(amqp_codec, every_method_refuses_truncation_and_trailing_bytes)
{
    struct amqp_wr in = {0};
    for (size_t i = 0; i < AMQP_METHOD_COUNT; i++) {
        const char *name = amqp_method_name(amqp_method_ids[i]);
        method_payload(&in, i, 1);
        size_t len = in.len;
        /* Each prefix in a buffer of its own size, so ASan sees any read past it. */
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *p = malloc(cut ? cut : 1);
            memcpy(p, in.p, cut);
            struct amqp_method m;
            cr_assert_eq(amqp_method_decode(p, cut, &m), AMQP_SYNTAX_ERROR,
                         "%s cut to %zu of %zu bytes", name, cut, len);
            free(p);
        }
        amqp_wr_u8(&in, 0);
        struct amqp_method m;
        cr_assert_eq(amqp_method_decode(in.p, in.len, &m), AMQP_SYNTAX_ERROR,
                     "%s with a trailing byte", name);
    }
    amqp_wr_free(&in);
}

Test(amqp_codec, unknown_methods_are_command_invalid)
{
    static const uint8_t unknown_method[] = {0, 60, 0, 41};
    struct amqp_method m;
    cr_assert_eq(amqp_method_decode(unknown_method, 4, &m), AMQP_COMMAND_INVALID);
    cr_assert_eq(m.id, (60u << 16) | 41);
    static const uint8_t unknown_class[] = {0x12, 0x34, 0, 10, 1, 2, 3};
    cr_assert_eq(amqp_method_decode(unknown_class, sizeof unknown_class, &m),
                 AMQP_COMMAND_INVALID);
    cr_assert_eq(m.id, 0x1234000au);
    static const uint8_t too_short[] = {0, 60, 0};
    cr_assert_eq(amqp_method_decode(too_short, sizeof too_short, &m), AMQP_SYNTAX_ERROR);
}

Test(amqp_codec, method_with_a_bad_table_is_a_syntax_error)
{
    /* queue.bind with arguments {"a": 'Z'...}: bad tag, nothing leaks. */
    static const uint8_t p[] = {0, 50, 0, 20, 0, 0, 1, 'q', 1, 'e', 1, 'k', 0,
                                0, 0, 0, 4, 1, 'a', 'Z', 1};
    struct amqp_method m;
    cr_assert_eq(amqp_method_decode(p, sizeof p, &m), AMQP_SYNTAX_ERROR);
    /* A good table but a byte after it. */
    static const uint8_t trailing[] = {0, 50, 0, 20, 0, 0, 1, 'q', 1, 'e', 1, 'k', 0,
                                       0, 0, 0, 4, 1, 'a', 't', 1, 9};
    cr_assert_eq(amqp_method_decode(trailing, sizeof trailing, &m), AMQP_SYNTAX_ERROR);
}

/* ---- UTF-8 in shortstrs ------------------------------------------------------------------ */

static bool utf8(const char *s)
{
    return amqp_utf8_valid((struct wr_str){s, strlen(s)});
}

Test(amqp_codec, utf8_accepts_every_well_formed_length)
{
    cr_assert(amqp_utf8_valid((struct wr_str){NULL, 0}));
    cr_assert(utf8("amq.gen-JzTY20BRgKO-HjmUJj0wLg, long enough for the 8-byte path"));
    cr_assert(utf8("\xc2\x80" "\xdf\xbf"));                 /* U+0080, U+07FF */
    cr_assert(utf8("\xe0\xa0\x80" "\xed\x9f\xbf"));         /* U+0800, U+D7FF */
    cr_assert(utf8("\xee\x80\x80" "\xef\xbf\xbf"));         /* U+E000, U+FFFF */
    cr_assert(utf8("\xf0\x90\x80\x80" "\xf4\x8f\xbf\xbf")); /* U+10000, U+10FFFF */
    cr_assert(utf8("caf\xc3\xa9.orders-\xe2\x82\xac-\xf0\x9f\x98\x80-queue.na\xc3\xafve"));
    cr_assert(utf8("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e 12345678"));
}

Test(amqp_codec, utf8_refuses_malformed_sequences)
{
    static const char *const bad[] = {
        "\x80", "\xbf", "abc\x80" "def",          /* lone continuation bytes */
        "\xc0\x80", "\xc1\xbf",                   /* overlong 2-byte forms */
        "\xe0\x80\x80", "\xe0\x9f\xbf",           /* overlong 3-byte forms */
        "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf",   /* overlong 4-byte forms */
        "\xed\xa0\x80", "\xed\xbf\xbf",           /* surrogates U+D800, U+DFFF */
        "\xc3", "\xe2\x82", "\xf0\x9f\x98",       /* truncated at the end */
        "\xe2\x82" "A", "\xf0\x9f" "AB",          /* truncated before ASCII */
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",   /* past U+10FFFF */
        "\xf8\x88\x80\x80\x80", "\xfe", "\xff",   /* bytes UTF-8 never uses */
        "abcdefgh\xff", "abcdefg\xc3\xa9\xff",    /* after the 8-byte ASCII path */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(utf8(bad[i]), "bad[%zu] was accepted", i);
}

Test(amqp_codec, method_with_a_bad_shortstr_is_bad_utf8)
{
    /* queue.declare "\xff\xfe", as RabbitMQ's differential scenario sends it. */
    static const uint8_t p[] = {0, 50, 0, 10, 0, 0, 2, 0xff, 0xfe, 0, 0, 0, 0, 0};
    struct amqp_method m;
    cr_assert_eq(amqp_method_decode(p, sizeof p, &m), AMQP_DECODE_BAD_UTF8);
    /* The same frame cut short, or with a byte too many, stays a syntax error. */
    cr_assert_eq(amqp_method_decode(p, sizeof p - 1, &m), AMQP_SYNTAX_ERROR);
    static const uint8_t trailing[] = {0, 50, 0, 10, 0, 0, 2, 0xff, 0xfe, 0, 0, 0, 0, 0, 7};
    cr_assert_eq(amqp_method_decode(trailing, sizeof trailing, &m), AMQP_SYNTAX_ERROR);
    /* "café" is a good name. */
    static const uint8_t good[] = {0, 50, 0, 10, 0, 0, 5, 'c', 'a', 'f', 0xc3, 0xa9,
                                   0, 0, 0, 0, 0};
    cr_assert_eq(amqp_method_decode(good, sizeof good, &m), 0);
    cr_assert_eq(m.u.queue_declare.queue.len, 5);
    amqp_method_free(&m);
}

/* The offsets of the shortstrs build_args wrote ("short-N"), at most max of them. */
static size_t shortstr_offsets(const struct amqp_wr *w, size_t *off, size_t max)
{
    size_t n = 0;
    for (size_t i = 4; i + 6 <= w->len && n < max; i++)
        if (memcmp(w->p + i, "short-", 6) == 0)
            off[n++] = i;
    return n;
}

Test(amqp_codec, every_shortstr_argument_is_checked_unless_the_method_has_content)
{
    struct amqp_wr in = {0};
    size_t checked = 0;
    for (size_t i = 0; i < AMQP_METHOD_COUNT; i++) {
        uint32_t id = amqp_method_ids[i];
        const char *name = amqp_method_name(id);
        method_payload(&in, i, 1);
        size_t off[8];
        size_t n = shortstr_offsets(&in, off, 8);
        size_t want = 0;
        for (const char *c = amqp_method_sigs[i]; *c; c++)
            want += *c == 's';
        cr_assert_eq(n, want, "%s", name);
        int expect = amqp_method_has_content(id) ? 0 : AMQP_DECODE_BAD_UTF8;
        for (size_t k = 0; k < n; k++) {
            in.p[off[k]] = 0xc0; /* "\xc0hort-1": an overlong form's lead byte */
            struct amqp_method m;
            int rc = amqp_method_decode(in.p, in.len, &m);
            cr_assert_eq(rc, expect, "%s, shortstr %zu: rc %d", name, k, rc);
            if (rc == 0)
                amqp_method_free(&m);
            in.p[off[k]] = 's';
            checked++;
        }
    }
    cr_assert_gt(checked, 30);
    amqp_wr_free(&in);
}

Test(amqp_codec, basic_publish_table_keys_and_properties_are_not_checked)
{
    /* RabbitMQ skips content-bearing methods, table keys and content properties. */
    static const uint8_t publish[] = {0, 60, 0, 40, 0, 0, 1, 0xff, 1, 0xfe, 0};
    struct amqp_method m;
    cr_assert_eq(amqp_method_decode(publish, sizeof publish, &m), 0);
    amqp_method_free(&m);
    /* queue.declare "q" with arguments {"\xff": true}. */
    static const uint8_t key[] = {0, 50, 0, 10, 0, 0, 1, 'q', 0, 0, 0, 0, 4, 1, 0xff, 't', 1};
    cr_assert_eq(amqp_method_decode(key, sizeof key, &m), 0);
    amqp_method_free(&m);
    /* A basic content header whose content-type is "\xff". */
    static const uint8_t header[] = {0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 0, 1, 0xff};
    struct amqp_content_header h;
    cr_assert_eq(amqp_content_header_decode(header, sizeof header, &h), 0);
    cr_assert_eq(h.props.content_type.len, 1);
    wr_table_free(h.headers);
}

/* ---- frames --------------------------------------------------------------------------- */

Test(amqp_codec, frame_parse)
{
    static const uint8_t frame[] = {1, 0, 7, 0, 0, 0, 4, 0, 20, 0, 41, 0xce, 0xaa};
    struct amqp_frame f;
    cr_assert_eq(amqp_frame_parse(frame, sizeof frame, 4096, &f), 12);
    cr_assert_eq(f.type, AMQP_FRAME_METHOD);
    cr_assert_eq(f.channel, 7);
    cr_assert_eq(f.size, 4);
    cr_assert_eq(f.payload, frame + 7);

    for (size_t len = 0; len < 12; len++)
        cr_assert_eq(amqp_frame_parse(frame, len, 4096, &f), 0, "partial frame of %zu", len);

    uint8_t bad_end[12];
    memcpy(bad_end, frame, 12);
    bad_end[11] = 0xcd;
    cr_assert_eq(amqp_frame_parse(bad_end, 12, 4096, &f), -AMQP_FRAME_ERROR);

    static const uint8_t unknown_type[] = {5, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(amqp_frame_parse(unknown_type, 7, 4096, &f), -AMQP_FRAME_ERROR);

    /* 4089 bytes of payload make a 4097-byte frame: refused from the header alone. */
    static const uint8_t oversized[] = {3, 0, 1, 0, 0, 0x0f, 0xf9};
    cr_assert_eq(amqp_frame_parse(oversized, 7, 4096, &f), -AMQP_FRAME_ERROR);
    static const uint8_t huge[] = {3, 0, 1, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(amqp_frame_parse(huge, 7, UINT32_MAX, &f), -AMQP_FRAME_ERROR);

    /* Exactly frame_max is fine. */
    uint8_t *full = calloc(1, 4096);
    full[0] = AMQP_FRAME_BODY;
    full[5] = 0x0f;
    full[6] = 0xf8;
    full[4095] = AMQP_FRAME_END;
    cr_assert_eq(amqp_frame_parse(full, 4095, 4096, &f), 0);
    cr_assert_eq(amqp_frame_parse(full, 4096, 4096, &f), 4096);
    cr_assert_eq(f.size, 4088);
    free(full);
}

Test(amqp_codec, heartbeat_frame)
{
    struct amqp_wr w = {0};
    amqp_wr_heartbeat(&w);
    static const uint8_t want[] = {8, 0, 0, 0, 0, 0, 0, 0xce};
    assert_bytes(&w, want, sizeof want);
    struct amqp_frame f;
    cr_assert_eq(amqp_frame_parse(w.p, w.len, 8192, &f), 8);
    cr_assert_eq(f.type, AMQP_FRAME_HEARTBEAT);
    cr_assert_eq(f.size, 0);
    amqp_wr_free(&w);
}

/* Parses the body frames in w, checking each against frame_max, into a new buffer. */
static size_t collect_body(const struct amqp_wr *w, uint32_t frame_max, uint8_t *body,
                           size_t *frames)
{
    size_t off = 0, len = 0;
    *frames = 0;
    while (off < w->len) {
        struct amqp_frame f;
        ssize_t n = amqp_frame_parse(w->p + off, w->len - off, frame_max, &f);
        cr_assert_gt(n, 0);
        cr_assert_eq(f.type, AMQP_FRAME_BODY);
        cr_assert_eq(f.channel, 3);
        memcpy(body + len, f.payload, f.size);
        len += f.size;
        off += (size_t)n;
        ++*frames;
    }
    return len;
}

Test(amqp_codec, body_splits_at_frame_max_minus_8)
{
    enum { LEN = 10000 };
    uint8_t *body = malloc(LEN), *back = malloc(LEN);
    for (size_t i = 0; i < LEN; i++)
        body[i] = (uint8_t)(i * 7);
    struct amqp_wr w = {0};
    size_t frames = 0;

    amqp_wr_body(&w, 3, 4096, body, LEN);
    cr_assert_eq(w.len, LEN + 3 * 8);
    cr_assert_eq(w.p[5] << 8 | w.p[6], 4088, "first frame carries frame_max - 8");
    cr_assert_eq(collect_body(&w, 4096, back, &frames), LEN);
    cr_assert_eq(frames, 3);
    cr_assert_eq(memcmp(back, body, LEN), 0);

    w.len = 0;
    amqp_wr_body(&w, 3, 4096, body, 2 * 4088);
    cr_assert_eq(collect_body(&w, 4096, back, &frames), 2 * 4088);
    cr_assert_eq(frames, 2);

    w.len = 0;
    amqp_wr_body(&w, 3, 131072, body, LEN);
    cr_assert_eq(collect_body(&w, 131072, back, &frames), LEN);
    cr_assert_eq(frames, 1);

    w.len = 0;
    amqp_wr_body(&w, 3, 4096, body, 0);
    cr_assert_eq(w.len, 0, "an empty body has no body frames");
    amqp_wr_free(&w);
    free(body);
    free(back);
}

/* ---- content headers ------------------------------------------------------------------ */

static void assert_str(struct wr_str got, const char *want, const char *what)
{
    if (!want) {
        cr_assert_null(got.ptr, "%s should be absent", what);
        return;
    }
    cr_assert_not_null(got.ptr, "%s should be present", what);
    cr_assert_eq(got.len, strlen(want), "%s length", what);
    cr_assert_eq(memcmp(got.ptr, want, got.len), 0, "%s", what);
}

/* Writes a content header frame and decodes its payload into h. */
static void header_round_trip(struct amqp_wr *w, const struct wr_props *props,
                              const struct wr_table *headers,
                              struct amqp_content_header *h)
{
    w->len = 0;
    amqp_wr_content_header(w, 5, 123456789012ull, props, headers);
    cr_assert_not(w->oom);
    struct amqp_frame f;
    cr_assert_eq(amqp_frame_parse(w->p, w->len, 131072, &f), (ssize_t)w->len);
    cr_assert_eq(f.type, AMQP_FRAME_HEADER);
    cr_assert_eq(f.channel, 5);
    cr_assert_eq(amqp_content_header_decode(f.payload, f.size, h), 0);
    cr_assert_eq(h->class_id, AMQP_CLASS_BASIC);
    cr_assert_eq(h->body_size, 123456789012ull);
}

Test(amqp_codec, content_header_all_properties_round_trip)
{
    struct wr_props p = {
        .flags = WR_PROP_DELIVERY_MODE | WR_PROP_PRIORITY | WR_PROP_TIMESTAMP,
        .content_type = wr_str_c("application/json"),
        .content_encoding = wr_str_c("gzip"),
        .delivery_mode = 2,
        .priority = 7,
        .correlation_id = wr_str_c("corr"),
        .reply_to = wr_str_c("amq.rabbitmq.reply-to"),
        .expiration = wr_str_c("60000"),
        .message_id = wr_str_c("msg-1"),
        .timestamp = 1700000000,
        .type = wr_str_c("order"),
        .user_id = wr_str_c("guest"),
        .app_id = wr_str_c("app"),
        .cluster_id = wr_str_c("cluster"),
    };
    struct wr_table *headers = every_type();
    struct amqp_wr w = {0};
    struct amqp_content_header h;
    header_round_trip(&w, &p, headers, &h);
    /* Fourteen properties: flag bits 15..2. */
    cr_assert_eq(w.p[7 + 12], 0xff);
    cr_assert_eq(w.p[7 + 13], 0xfc);

    cr_assert_eq(h.props.flags, WR_PROP_DELIVERY_MODE | WR_PROP_PRIORITY |
                                    WR_PROP_TIMESTAMP | WR_PROP_HEADERS);
    assert_str(h.props.content_type, "application/json", "content-type");
    assert_str(h.props.content_encoding, "gzip", "content-encoding");
    cr_assert_eq(h.props.delivery_mode, 2);
    cr_assert_eq(h.props.priority, 7);
    assert_str(h.props.correlation_id, "corr", "correlation-id");
    assert_str(h.props.reply_to, "amq.rabbitmq.reply-to", "reply-to");
    assert_str(h.props.expiration, "60000", "expiration");
    assert_str(h.props.message_id, "msg-1", "message-id");
    cr_assert_eq(h.props.timestamp, 1700000000);
    assert_str(h.props.type, "order", "type");
    assert_str(h.props.user_id, "guest", "user-id");
    assert_str(h.props.app_id, "app", "app-id");
    assert_str(h.props.cluster_id, "cluster", "cluster-id");
    cr_assert_not_null(h.headers);
    cr_assert_eq(h.headers->count, headers->count);
    for (size_t i = 0; i < headers->count; i++) {
        cr_assert_str_eq(h.headers->fields[i].name, headers->fields[i].name);
        cr_assert_eq(h.headers->fields[i].value.type, headers->fields[i].value.type);
        cr_assert(wr_value_equal(&h.headers->fields[i].value, &headers->fields[i].value));
    }
    wr_table_free(h.headers);
    wr_table_free(headers);
    amqp_wr_free(&w);
}

Test(amqp_codec, content_header_absent_and_empty_properties)
{
    struct wr_props none = {0};
    struct amqp_wr w = {0};
    struct amqp_content_header h;
    header_round_trip(&w, &none, NULL, &h);
    static const uint8_t want[] = {2, 0, 5, 0, 0, 0, 14, 0, 60, 0, 0,
                                   0, 0, 0, 0x1c, 0xbe, 0x99, 0x1a, 0x14, 0, 0, 0xce};
    assert_bytes(&w, want, sizeof want);
    cr_assert_eq(h.props.flags, 0);
    cr_assert_null(h.props.content_type.ptr);
    cr_assert_null(h.props.cluster_id.ptr);
    cr_assert_null(h.headers);

    /* An empty headers table is written only when the publisher sent one. */
    struct wr_table *empty = wr_table_new();
    header_round_trip(&w, &none, empty, &h);
    cr_assert_null(h.headers);
    struct wr_props sent_empty = {.flags = WR_PROP_HEADERS, .content_type = wr_str_c("")};
    header_round_trip(&w, &sent_empty, empty, &h);
    cr_assert_eq(w.p[7 + 12], 0xa0, "content-type and headers: bits 15 and 13");
    cr_assert_eq(h.props.flags, WR_PROP_HEADERS);
    cr_assert_not_null(h.headers);
    cr_assert_eq(h.headers->count, 0);
    assert_str(h.props.content_type, "", "an empty content-type");
    wr_table_free(h.headers);
    wr_table_free(empty);
    amqp_wr_free(&w);
}

Test(amqp_codec, content_header_errors)
{
    /* Bit 1 is not a basic property. */
    static const uint8_t unknown_bit[] = {0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x02};
    struct amqp_content_header h;
    cr_assert_eq(amqp_content_header_decode(unknown_bit, sizeof unknown_bit, &h),
                 AMQP_SYNTAX_ERROR);
    /* A continuation word naming a 16th property. */
    static const uint8_t second_word[] = {0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0x01,
                                          0x80, 0x00};
    cr_assert_eq(amqp_content_header_decode(second_word, sizeof second_word, &h),
                 AMQP_SYNTAX_ERROR);
    /* A class without properties. */
    static const uint8_t other_class[] = {0, 50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0};
    cr_assert_eq(amqp_content_header_decode(other_class, sizeof other_class, &h),
                 AMQP_SYNTAX_ERROR);
    /* headers present but its table is broken. */
    static const uint8_t bad_headers[] = {0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0x20, 0,
                                          0, 0, 0, 4, 1, 'a', '!', 1};
    cr_assert_eq(amqp_content_header_decode(bad_headers, sizeof bad_headers, &h),
                 AMQP_SYNTAX_ERROR);
    cr_assert_null(h.headers);

    /* Every prefix of a full header is truncated; one more byte is trailing. */
    struct wr_props p = {.flags = WR_PROP_DELIVERY_MODE | WR_PROP_TIMESTAMP,
                         .content_type = wr_str_c("text/plain"),
                         .message_id = wr_str_c("id")};
    struct wr_table *headers = wr_table_new();
    add(headers, "x", wr_value_str("y"));
    struct amqp_wr w = {0};
    amqp_wr_content_header(&w, 1, 10, &p, headers);
    size_t len = w.len - 8;
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.p + 7, cut);
        cr_assert_eq(amqp_content_header_decode(copy, cut, &h), AMQP_SYNTAX_ERROR,
                     "cut to %zu of %zu", cut, len);
        free(copy);
    }
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, w.p + 7, len);
    longer[len] = 0;
    cr_assert_eq(amqp_content_header_decode(longer, len + 1, &h), AMQP_SYNTAX_ERROR);
    cr_assert_eq(amqp_content_header_decode(longer, len, &h), 0);
    wr_table_free(h.headers);
    free(longer);
    wr_table_free(headers);
    amqp_wr_free(&w);
}

/* ---- garbage -------------------------------------------------------------------------- */

/* A small deterministic generator, so a failure reproduces. */
static uint32_t next_random(uint32_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

Test(amqp_codec, garbage_and_mutations_never_read_out_of_bounds)
{
    uint32_t seed = 12345;
    struct amqp_wr in = {0};
    for (int round = 0; round < 20000; round++) {
        /* Half the time a valid payload with a few bytes changed, else random bytes behind a
         * real method id. */
        size_t i = next_random(&seed) % AMQP_METHOD_COUNT;
        method_payload(&in, i, 1);
        if (round % 2) {
            for (int k = 0; k < 3; k++)
                in.p[4 + next_random(&seed) % (in.len > 4 ? in.len - 4 : 1)] ^=
                    (uint8_t)next_random(&seed);
        } else {
            in.len = 4;
            size_t n = next_random(&seed) % 64;
            for (size_t k = 0; k < n; k++)
                amqp_wr_u8(&in, (uint8_t)next_random(&seed));
        }
        size_t len = in.len;
        if (len > 4 && next_random(&seed) % 4 == 0)
            len = 4 + next_random(&seed) % (len - 4);
        uint8_t *p = malloc(len ? len : 1);
        memcpy(p, in.p, len);
        struct amqp_method m;
        int rc = amqp_method_decode(p, len, &m);
        cr_assert(rc == 0 || rc == AMQP_SYNTAX_ERROR || rc == AMQP_DECODE_BAD_UTF8, "rc %d",
                  rc);
        if (rc == 0)
            amqp_method_free(&m);
        struct amqp_content_header h;
        if (amqp_content_header_decode(p, len, &h) == 0)
            wr_table_free(h.headers);
        struct amqp_frame f;
        ssize_t n = amqp_frame_parse(p, len, 8192, &f);
        cr_assert(n == 0 || n == -AMQP_FRAME_ERROR || (n > 0 && (size_t)n <= len));
        free(p);
    }
    amqp_wr_free(&in);
}
