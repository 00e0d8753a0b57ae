/*
 * encode.c: the byte encodings durable files share (docs/storage.md): a growing buffer, a
 * table with every value type, and a message's metadata. Integers are little-endian; a
 * string is u32 length and bytes, length 0xFFFFFFFF meaning absent.
 *
 * The fixed-width appenders and readers are inline in value.h; decoding goes through a
 * struct wr_reader whose first short read sets err, so the caller checks once at the end and
 * nothing past the input is ever read.
 */
#include <stdlib.h>
#include <string.h>

#include "warren/wr.h"

#define MAX_DEPTH 64 /* nesting of tables and arrays */

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

void wr_bytes_str(struct wr_bytes *o, const void *ptr, size_t len)
{
    if (!ptr) {
        wr_bytes_u32(o, WR_STR_ABSENT);
        return;
    }
    if (len >= WR_STR_ABSENT) {
        o->oom = true; /* cannot be described; no record may be that big anyway */
        return;
    }
    wr_bytes_u32(o, (uint32_t)len);
    wr_bytes_put(o, ptr, len);
}

/* Bytes that are never absent (names, STR and BYTES values), though their ptr may be NULL
 * when they are empty. */
static void put_bytes(struct wr_bytes *o, const void *ptr, size_t len)
{
    wr_bytes_str(o, ptr ? ptr : "", len);
}

static void put_value(struct wr_bytes *o, const struct wr_value *v)
{
    wr_bytes_u8(o, (uint8_t)v->type);
    switch (v->type) {
    case WR_V_VOID:
        break;
    case WR_V_BOOL:
        wr_bytes_u8(o, v->u.b);
        break;
    case WR_V_FLOAT:
    case WR_V_DOUBLE: {
        uint64_t bits;
        memcpy(&bits, &v->u.d, sizeof bits);
        wr_bytes_u64(o, bits);
        break;
    }
    case WR_V_DECIMAL:
        wr_bytes_u8(o, v->u.dec.scale);
        wr_bytes_u32(o, v->u.dec.value);
        break;
    case WR_V_STR:
    case WR_V_BYTES:
        put_bytes(o, v->u.s.ptr, v->u.s.len);
        break;
    case WR_V_TABLE:
        wr_table_encode(o, v->u.table);
        break;
    case WR_V_ARRAY:
        wr_bytes_u32(o, (uint32_t)v->u.array->count);
        for (size_t i = 0; i < v->u.array->count; i++)
            put_value(o, &v->u.array->items[i]);
        break;
    default: /* the integer types and TIMESTAMP */
        wr_bytes_u64(o, (uint64_t)v->u.i);
        break;
    }
}

void wr_table_encode(struct wr_bytes *o, const struct wr_table *t)
{
    size_t n = t ? t->count : 0;
    wr_bytes_u32(o, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        put_bytes(o, t->fields[i].name, t->fields[i].name_len);
        put_value(o, &t->fields[i].value);
    }
}

void wr_msg_meta_encode(struct wr_bytes *o, const struct wr_msg *msg)
{
    const struct wr_props *pr = &msg->props;
    wr_bytes_u64(o, (uint64_t)msg->timestamp_ms);
    wr_bytes_str(o, msg->exchange.ptr, msg->exchange.len);
    wr_bytes_str(o, msg->routing_key.ptr, msg->routing_key.len);
    wr_bytes_str(o, msg->key.ptr, msg->key.len);
    wr_bytes_u32(o, pr->flags);
    wr_bytes_u8(o, pr->delivery_mode);
    wr_bytes_u8(o, pr->priority);
    wr_bytes_u64(o, (uint64_t)pr->timestamp);
    const struct wr_str strs[] = {pr->content_type, pr->content_encoding, pr->correlation_id,
                                  pr->reply_to,     pr->expiration,       pr->message_id,
                                  pr->type,         pr->user_id,          pr->app_id,
                                  pr->cluster_id};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        wr_bytes_str(o, strs[i].ptr, strs[i].len);
    wr_table_encode(o, msg->headers);
}

/* ---- decoding ------------------------------------------------------------------------ */

struct wr_str wr_read_str(struct wr_reader *r)
{
    uint32_t len = wr_read_u32(r);
    if (len == WR_STR_ABSENT || r->err)
        return (struct wr_str){NULL, 0};
    const uint8_t *p = wr_read_bytes(r, len);
    return (struct wr_str){p ? (const char *)p : NULL, p ? len : 0};
}

static int get_table(struct wr_reader *c, int depth, struct wr_table **out);

/* Frees what a decoded value owns. */
static void value_drop(struct wr_value *v)
{
    if (v->type == WR_V_TABLE)
        wr_table_free((struct wr_table *)v->u.table);
    else if (v->type == WR_V_ARRAY)
        wr_array_free((struct wr_array *)v->u.array);
}

/* Decodes one value into v; a table or array in it is the caller's to drop. */
static int get_value(struct wr_reader *c, int depth, struct wr_value *v)
{
    *v = (struct wr_value){.type = (enum wr_value_type)wr_read_u8(c)};
    switch (v->type) {
    case WR_V_VOID:
        break;
    case WR_V_BOOL:
        v->u.b = wr_read_u8(c) != 0;
        break;
    case WR_V_FLOAT:
    case WR_V_DOUBLE: {
        uint64_t bits = wr_read_u64(c);
        memcpy(&v->u.d, &bits, sizeof bits);
        break;
    }
    case WR_V_DECIMAL:
        v->u.dec.scale = wr_read_u8(c);
        v->u.dec.value = wr_read_u32(c);
        break;
    case WR_V_STR:
    case WR_V_BYTES: {
        struct wr_str s = wr_read_str(c);
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
        uint32_t n = wr_read_u32(c);
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
        v->u.i = (int64_t)wr_read_u64(c);
        break;
    default:
        c->err = true;
        v->type = WR_V_VOID;
        break;
    }
    return WR_OK;
}

static int get_table(struct wr_reader *c, int depth, struct wr_table **out)
{
    uint32_t n = wr_read_u32(c);
    *out = NULL;
    if (c->err || depth >= MAX_DEPTH || n > (size_t)(c->end - c->p)) {
        c->err = true;
        return WR_OK;
    }
    struct wr_table *t = wr_table_new();
    if (!t)
        return WR_ENOMEM;
    *out = t;
    char name[256];
    for (uint32_t i = 0; i < n && !c->err; i++) {
        struct wr_str s = wr_read_str(c);
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

int wr_read_table(struct wr_reader *r, struct wr_table **out)
{
    int rc = get_table(r, 0, out);
    if (rc == WR_OK && r->err)
        rc = WR_EPROTO;
    if (rc != WR_OK) {
        r->err = true;
        wr_table_free(*out);
        *out = NULL;
    }
    return rc;
}

int wr_msg_meta_decode(const uint8_t *meta, size_t len, struct wr_slice body,
                       struct wr_msg **out, struct wr_error *err)
{
    struct wr_reader c = {meta, meta + len, false};
    struct wr_props props = {0};
    int64_t timestamp_ms = (int64_t)wr_read_u64(&c);
    struct wr_str exchange = wr_read_str(&c);
    struct wr_str routing_key = wr_read_str(&c);
    struct wr_str key = wr_read_str(&c);
    props.flags = wr_read_u32(&c);
    props.delivery_mode = wr_read_u8(&c);
    props.priority = wr_read_u8(&c);
    props.timestamp = (int64_t)wr_read_u64(&c);
    struct wr_str *strs[] = {&props.content_type, &props.content_encoding,
                             &props.correlation_id, &props.reply_to, &props.expiration,
                             &props.message_id, &props.type, &props.user_id, &props.app_id,
                             &props.cluster_id};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        *strs[i] = wr_read_str(&c);
    struct wr_table *headers = NULL;
    int rc = wr_read_table(&c, &headers);
    if (rc == WR_OK && !c.err && c.p != c.end)
        rc = WR_EPROTO; /* trailing bytes: not what wr_msg_meta_encode wrote */
    if (rc == WR_ENOMEM)
        rc = wr_error_set(err, rc, "out of memory decoding a message");
    else if (rc != WR_OK)
        rc = wr_error_set(err, WR_EPROTO, "malformed message metadata");
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
