/*
 * encode.c: the byte encodings durable files share (docs/storage.md): a growing buffer, a
 * table with every value type, and a message's metadata. Integers are little-endian; a
 * string is u32 length and bytes, length 0xFFFFFFFF meaning absent.
 *
 * Decoding goes through a cursor whose first short read sets err, so the caller checks once
 * at the end and nothing past the input is ever read.
 */
#include <stdlib.h>
#include <string.h>

#include "warren/wr.h"

#define ABSENT UINT32_MAX /* the length of an absent string */
#define MAX_DEPTH 64      /* nesting of tables and arrays */

uint8_t *wr_bytes_grow(struct wr_bytes *b, size_t n)
{
    if (b->oom)
        return NULL;
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return NULL;
            }
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    uint8_t *at = b->p + b->len;
    b->len += n;
    return at;
}

void wr_bytes_free(struct wr_bytes *b)
{
    free(b->p);
    *b = (struct wr_bytes){0};
}

/* ---- encoding ------------------------------------------------------------------------ */

static void put_u8(struct wr_bytes *o, uint8_t v)
{
    uint8_t *p = wr_bytes_grow(o, 1);
    if (p)
        *p = v;
}

static void put_u32(struct wr_bytes *o, uint32_t v)
{
    uint8_t *p = wr_bytes_grow(o, 4);
    for (int i = 0; p && i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(struct wr_bytes *o, uint64_t v)
{
    uint8_t *p = wr_bytes_grow(o, 8);
    for (int i = 0; p && i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_bytes(struct wr_bytes *o, const void *src, size_t n)
{
    if (n >= ABSENT) {
        o->oom = true; /* cannot be described; no record may be that big anyway */
        return;
    }
    put_u32(o, (uint32_t)n);
    uint8_t *p = wr_bytes_grow(o, n);
    if (p && n)
        memcpy(p, src, n);
}

static void put_str(struct wr_bytes *o, struct wr_str s)
{
    if (!s.ptr)
        put_u32(o, ABSENT);
    else
        put_bytes(o, s.ptr, s.len);
}

static void put_value(struct wr_bytes *o, const struct wr_value *v)
{
    put_u8(o, (uint8_t)v->type);
    switch (v->type) {
    case WR_V_VOID:
        break;
    case WR_V_BOOL:
        put_u8(o, v->u.b);
        break;
    case WR_V_FLOAT:
    case WR_V_DOUBLE: {
        uint64_t bits;
        memcpy(&bits, &v->u.d, sizeof bits);
        put_u64(o, bits);
        break;
    }
    case WR_V_DECIMAL:
        put_u8(o, v->u.dec.scale);
        put_u32(o, v->u.dec.value);
        break;
    case WR_V_STR:
    case WR_V_BYTES:
        put_bytes(o, v->u.s.ptr, v->u.s.len);
        break;
    case WR_V_TABLE:
        wr_table_encode(o, v->u.table);
        break;
    case WR_V_ARRAY:
        put_u32(o, (uint32_t)v->u.array->count);
        for (size_t i = 0; i < v->u.array->count; i++)
            put_value(o, &v->u.array->items[i]);
        break;
    default: /* the integer types and TIMESTAMP */
        put_u64(o, (uint64_t)v->u.i);
        break;
    }
}

void wr_table_encode(struct wr_bytes *o, const struct wr_table *t)
{
    size_t n = t ? t->count : 0;
    put_u32(o, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        put_bytes(o, t->fields[i].name, t->fields[i].name_len);
        put_value(o, &t->fields[i].value);
    }
}

void wr_msg_meta_encode(struct wr_bytes *o, const struct wr_msg *msg)
{
    const struct wr_props *pr = &msg->props;
    put_u64(o, (uint64_t)msg->timestamp_ms);
    put_str(o, msg->exchange);
    put_str(o, msg->routing_key);
    put_str(o, msg->key);
    put_u32(o, pr->flags);
    put_u8(o, pr->delivery_mode);
    put_u8(o, pr->priority);
    put_u64(o, (uint64_t)pr->timestamp);
    const struct wr_str strs[] = {pr->content_type, pr->content_encoding, pr->correlation_id,
                                  pr->reply_to,     pr->expiration,       pr->message_id,
                                  pr->type,         pr->user_id,          pr->app_id,
                                  pr->cluster_id};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        put_str(o, strs[i]);
    wr_table_encode(o, msg->headers);
}

/* ---- decoding ------------------------------------------------------------------------ */

struct cursor {
    const uint8_t *p;
    const uint8_t *end;
    bool err;
};

static const uint8_t *take(struct cursor *c, size_t n)
{
    if (c->err || (size_t)(c->end - c->p) < n) {
        c->err = true;
        return NULL;
    }
    const uint8_t *at = c->p;
    c->p += n;
    return at;
}

static uint8_t get_u8(struct cursor *c)
{
    const uint8_t *p = take(c, 1);
    return p ? *p : 0;
}

static uint32_t get_u32(struct cursor *c)
{
    const uint8_t *p = take(c, 4);
    uint32_t v = 0;
    for (int i = 0; p && i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t get_u64(struct cursor *c)
{
    const uint8_t *p = take(c, 8);
    uint64_t v = 0;
    for (int i = 0; p && i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static struct wr_str get_str(struct cursor *c)
{
    uint32_t len = get_u32(c);
    if (len == ABSENT || c->err)
        return (struct wr_str){NULL, 0};
    const uint8_t *p = take(c, len);
    return (struct wr_str){p ? (const char *)p : NULL, p ? len : 0};
}

static int get_table(struct cursor *c, int depth, struct wr_table **out);

/* Frees what a decoded value owns. */
static void value_drop(struct wr_value *v)
{
    if (v->type == WR_V_TABLE)
        wr_table_free((struct wr_table *)v->u.table);
    else if (v->type == WR_V_ARRAY)
        wr_array_free((struct wr_array *)v->u.array);
}

/* Decodes one value into v; a table or array in it is the caller's to drop. */
static int get_value(struct cursor *c, int depth, struct wr_value *v)
{
    *v = (struct wr_value){.type = (enum wr_value_type)get_u8(c)};
    switch (v->type) {
    case WR_V_VOID:
        break;
    case WR_V_BOOL:
        v->u.b = get_u8(c) != 0;
        break;
    case WR_V_FLOAT:
    case WR_V_DOUBLE: {
        uint64_t bits = get_u64(c);
        memcpy(&v->u.d, &bits, sizeof bits);
        break;
    }
    case WR_V_DECIMAL:
        v->u.dec.scale = get_u8(c);
        v->u.dec.value = get_u32(c);
        break;
    case WR_V_STR:
    case WR_V_BYTES: {
        struct wr_str s = get_str(c);
        if (!s.ptr)
            c->err = true;
        v->u.s.ptr = s.ptr ? s.ptr : "";
        v->u.s.len = s.len;
        break;
    }
    case WR_V_TABLE: {
        struct wr_table *t = NULL;
        int rc = get_table(c, depth + 1, &t);
        v->u.table = t;
        if (!t)
            v->type = WR_V_VOID;
        return rc;
    }
    case WR_V_ARRAY: {
        uint32_t n = get_u32(c);
        if (depth >= MAX_DEPTH || n > (size_t)(c->end - c->p)) {
            c->err = true;
            v->type = WR_V_VOID;
            return WR_OK;
        }
        struct wr_array *a = wr_array_new();
        if (!a) {
            v->type = WR_V_VOID;
            return WR_ENOMEM;
        }
        v->u.array = a;
        for (uint32_t i = 0; i < n && !c->err; i++) {
            struct wr_value item;
            int rc = get_value(c, depth + 1, &item);
            if (rc == WR_OK && !c->err)
                rc = wr_array_add(a, &item);
            value_drop(&item);
            if (rc != WR_OK)
                return rc;
        }
        break;
    }
    case WR_V_I8:
    case WR_V_U8:
    case WR_V_I16:
    case WR_V_U16:
    case WR_V_I32:
    case WR_V_U32:
    case WR_V_I64:
    case WR_V_TIMESTAMP:
        v->u.i = (int64_t)get_u64(c);
        break;
    default:
        c->err = true;
        v->type = WR_V_VOID;
        break;
    }
    return WR_OK;
}

static int get_table(struct cursor *c, int depth, struct wr_table **out)
{
    uint32_t n = get_u32(c);
    *out = NULL;
    if (depth >= MAX_DEPTH || n > (size_t)(c->end - c->p)) {
        c->err = true;
        return WR_OK;
    }
    struct wr_table *t = wr_table_new();
    if (!t)
        return WR_ENOMEM;
    *out = t;
    char name[256];
    for (uint32_t i = 0; i < n && !c->err; i++) {
        struct wr_str s = get_str(c);
        if (!s.ptr || s.len >= sizeof name) {
            c->err = true;
            break;
        }
        memcpy(name, s.ptr, s.len);
        name[s.len] = 0;
        struct wr_value v;
        int rc = get_value(c, depth, &v);
        if (rc == WR_OK && !c->err)
            rc = wr_table_add(t, name, &v);
        value_drop(&v);
        if (rc != WR_OK)
            return rc;
    }
    return WR_OK;
}

int wr_table_decode(const uint8_t *p, size_t len, size_t *used, struct wr_table **out)
{
    struct cursor c = {p, p + len, false};
    int rc = get_table(&c, 0, out);
    if (rc == WR_OK && c.err)
        rc = WR_EPROTO;
    if (rc != WR_OK) {
        wr_table_free(*out);
        *out = NULL;
        return rc;
    }
    *used = (size_t)(c.p - p);
    return WR_OK;
}

int wr_msg_meta_decode(const uint8_t *meta, size_t len, struct wr_slice body,
                       struct wr_msg **out, struct wr_error *err)
{
    struct cursor c = {meta, meta + len, false};
    struct wr_props props = {0};
    int64_t timestamp_ms = (int64_t)get_u64(&c);
    struct wr_str exchange = get_str(&c);
    struct wr_str routing_key = get_str(&c);
    struct wr_str key = get_str(&c);
    props.flags = get_u32(&c);
    props.delivery_mode = get_u8(&c);
    props.priority = get_u8(&c);
    props.timestamp = (int64_t)get_u64(&c);
    struct wr_str *strs[] = {&props.content_type, &props.content_encoding,
                             &props.correlation_id, &props.reply_to, &props.expiration,
                             &props.message_id, &props.type, &props.user_id, &props.app_id,
                             &props.cluster_id};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        *strs[i] = get_str(&c);
    struct wr_table *headers = NULL;
    int rc = get_table(&c, 0, &headers);
    if (rc == WR_OK && !c.err && c.p != c.end)
        c.err = true; /* trailing bytes: not what wr_msg_meta_encode wrote */
    if (rc == WR_OK && c.err)
        rc = wr_error_set(err, WR_EPROTO, "malformed message metadata");
    else if (rc != WR_OK)
        rc = wr_error_set(err, rc, "out of memory decoding a message");
    if (rc == WR_OK) {
        struct wr_msg_init init = {
            .exchange = exchange.ptr ? exchange : wr_str_c(""),
            .routing_key = routing_key.ptr ? routing_key : wr_str_c(""),
            .key = key,
            .headers = headers,
            .props = &props,
            .body = body,
            .timestamp_ms = timestamp_ms,
        };
        if (!body.buf)
            init.body_ptr = "";
        rc = wr_msg_new(&init, out, err);
    }
    wr_table_free(headers);
    return rc;
}
