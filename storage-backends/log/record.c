/*
 * record.c: messages as Kafka records and Kafka records as messages (record.h). The text a
 * Kafka consumer sees for each AMQP value is fixed by docs/storage-log.md; what an AMQP
 * consumer gets back comes from LB_META_HEADER alone, so the text never has to round-trip.
 */
#include "record.h"

#include <assert.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* AMQP short strings hold at most 255 bytes: a longer property header cannot be a property. */
#define LR_SHORTSTR_MAX 255u

/* ---- the basic properties as headers ------------------------------------------------- */

/* A property: a string (flag 0) at offset str of struct wr_props, or a number present
 * when its flag is set, held in [min, max]. */
struct lr_prop {
    const char *name;
    size_t str;
    unsigned flag;
    int64_t min, max;
};

#define LR_STR(name, field) {name, offsetof(struct wr_props, field), 0, 0, 0}

/* In the order they appear in a record (the order of AMQP's property flags). */
static const struct lr_prop lr_props[] = {
    LR_STR("content-type", content_type),
    LR_STR("content-encoding", content_encoding),
    {"delivery-mode", 0, WR_PROP_DELIVERY_MODE, 1, 2},
    {"priority", 0, WR_PROP_PRIORITY, 0, 255},
    LR_STR("correlation-id", correlation_id),
    LR_STR("reply-to", reply_to),
    LR_STR("expiration", expiration),
    LR_STR("message-id", message_id),
    {"timestamp", 0, WR_PROP_TIMESTAMP, INT64_MIN, INT64_MAX},
    LR_STR("type", type),
    LR_STR("user-id", user_id),
    LR_STR("app-id", app_id),
};

#define LR_NPROPS (sizeof lr_props / sizeof lr_props[0])

static struct wr_str *lr_prop_str(struct wr_props *props, const struct lr_prop *p)
{
    return (struct wr_str *)(void *)((char *)props + p->str);
}

static const struct wr_str *lr_prop_cstr(const struct wr_props *props, const struct lr_prop *p)
{
    return (const struct wr_str *)(const void *)((const char *)props + p->str);
}

static int64_t lr_prop_num(const struct wr_props *props, unsigned flag)
{
    return flag == WR_PROP_DELIVERY_MODE ? props->delivery_mode
           : flag == WR_PROP_PRIORITY    ? props->priority
                                         : props->timestamp;
}

static void lr_prop_num_set(struct wr_props *props, unsigned flag, int64_t v)
{
    if (flag == WR_PROP_DELIVERY_MODE)
        props->delivery_mode = (uint8_t)v;
    else if (flag == WR_PROP_PRIORITY)
        props->priority = (uint8_t)v;
    else
        props->timestamp = v;
    props->flags |= flag;
}

/* v in decimal into buf (at least 21 bytes, no NUL); returns the length. snprintf costs more
 * than the rest of a record's encoding: this runs for every published message. */
static size_t lr_i64_text(char *buf, int64_t v)
{
    char tmp[20];
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    size_t n = 0;
    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    size_t len = 0;
    if (v < 0)
        buf[len++] = '-';
    while (n)
        buf[len++] = tmp[--n];
    return len;
}

/* The set properties, each as its header. */
static void lr_props_encode(struct wr_bytes *out, uint32_t *count, const struct wr_props *props)
{
    for (size_t i = 0; i < LR_NPROPS; i++) {
        const struct lr_prop *p = &lr_props[i];
        const struct wr_str *s = lr_prop_cstr(props, p);
        char num[24];
        if (!p->flag && s->ptr) {
            lb_header_put(out, p->name, strlen(p->name), s->ptr, s->len);
            (*count)++;
        } else if (p->flag && props->flags & p->flag) {
            size_t len = lr_i64_text(num, lr_prop_num(props, p->flag));
            lb_header_put(out, p->name, strlen(p->name), num, len);
            (*count)++;
        }
    }
}

/* A decimal integer in [min, max] and nothing else: an optional '-', then digits. */
static bool lr_parse_int(const uint8_t *p, int32_t len, int64_t min, int64_t max, int64_t *out)
{
    bool neg = len > 0 && p[0] == '-';
    int32_t i = neg ? 1 : 0;
    if (i == len || len - i > 19) /* 19 digits always fit a uint64_t */
        return false;
    uint64_t v = 0;
    for (; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX + neg)
        return false;
    int64_t s = !neg ? (int64_t)v : v > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)v;
    if (s < min || s > max)
        return false;
    *out = s;
    return true;
}

/* Sets the property p from a Kafka header value; false when the value does not fit it (or
 * it is set already), and the header then stays an ordinary header. */
static bool lr_prop_decode(struct wr_props *props, const struct lr_prop *p,
                           const uint8_t *value, int32_t len)
{
    int64_t v;
    if (!value)
        return false;
    if (p->flag) {
        if (props->flags & p->flag || !lr_parse_int(value, len, p->min, p->max, &v))
            return false;
        lr_prop_num_set(props, p->flag, v);
        return true;
    }
    struct wr_str *s = lr_prop_str(props, p);
    if (s->ptr || (uint32_t)len > LR_SHORTSTR_MAX)
        return false;
    *s = (struct wr_str){(const char *)value, (size_t)len};
    return true;
}

static const struct lr_prop *lr_prop_named(const uint8_t *name, int32_t len)
{
    for (size_t i = 0; i < LR_NPROPS; i++)
        if (strlen(lr_props[i].name) == (size_t)len && memcmp(lr_props[i].name, name,
                                                                (size_t)len) == 0)
            return &lr_props[i];
    return NULL;
}

/* ---- AMQP header values as text ------------------------------------------------------ */

static void lr_append_c(struct wr_bytes *out, const char *s)
{
    wr_bytes_put(out, s, strlen(s));
}

/* The shortest "%.Ng" that reads back as the same float or double. Below FLT_DIG/DBL_DIG
 * digits none is shorter than at it: any decimal of that many digits survives a trip through
 * the type, and %g drops trailing zeros. */
static void lr_append_real(struct wr_bytes *out, double d, bool single, bool json)
{
    char buf[32];
    if (!isfinite(d)) {
        /* JSON has no NaN or infinity; Java's Double.parseDouble reads these names. */
        lr_append_c(out, json ? "null" : isnan(d) ? "NaN" : d > 0 ? "Infinity" : "-Infinity");
        return;
    }
    for (int prec = single ? FLT_DIG : DBL_DIG; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (single ? strtof(buf, NULL) == (float)d : strtod(buf, NULL) == d)
            break;
    }
    lr_append_c(out, buf);
}

/* A decimal's text: its value with the point `scale` digits from the right ("123.45",
 * "0.0042"). */
static void lr_append_decimal(struct wr_bytes *out, uint8_t scale, uint32_t value)
{
    char digits[16];
    int n = snprintf(digits, sizeof digits, "%" PRIu32, value);
    int whole = n - scale; /* digits before the point */
    if (scale == 0) {
        wr_bytes_put(out, digits, (size_t)n);
    } else if (whole <= 0) {
        wr_bytes_put(out, "0.", 2);
        for (int i = 0; i < -whole; i++)
            wr_bytes_put(out, "0", 1);
        wr_bytes_put(out, digits, (size_t)n);
    } else {
        wr_bytes_put(out, digits, (size_t)whole);
        wr_bytes_put(out, ".", 1);
        wr_bytes_put(out, digits + whole, scale);
    }
}

/* s as a JSON string, escaped; bytes that are not UTF-8 pass through as they are. */
static void lr_append_json_str(struct wr_bytes *out, const char *s, size_t len)
{
    wr_bytes_put(out, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            wr_bytes_put(out, esc, 2);
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            wr_bytes_put(out, esc, 6);
        } else {
            wr_bytes_put(out, &s[i], 1);
        }
    }
    wr_bytes_put(out, "\"", 1);
}

/* v as text (json false: a header value; true: inside a JSON table or array). */
static void lr_append_value(struct wr_bytes *out, const struct wr_value *v, bool json)
{
    char num[24];
    switch (v->type) {
    case WR_V_VOID:
        if (json)
            lr_append_c(out, "null");
        break;
    case WR_V_BOOL:
        lr_append_c(out, v->u.b ? "true" : "false");
        break;
    case WR_V_FLOAT:
    case WR_V_DOUBLE:
        lr_append_real(out, v->u.d, v->type == WR_V_FLOAT, json);
        break;
    case WR_V_DECIMAL:
        lr_append_decimal(out, v->u.dec.scale, v->u.dec.value);
        break;
    case WR_V_STR:
    case WR_V_BYTES:
        if (json)
            lr_append_json_str(out, v->u.s.ptr, v->u.s.len);
        else
            wr_bytes_put(out, v->u.s.ptr, v->u.s.len);
        break;
    case WR_V_TABLE: {
        const struct wr_table *t = v->u.table;
        wr_bytes_put(out, "{", 1);
        for (size_t i = 0; i < t->count; i++) {
            if (i)
                wr_bytes_put(out, ",", 1);
            lr_append_json_str(out, t->fields[i].name, t->fields[i].name_len);
            wr_bytes_put(out, ":", 1);
            lr_append_value(out, &t->fields[i].value, true);
        }
        wr_bytes_put(out, "}", 1);
        break;
    }
    case WR_V_ARRAY: {
        const struct wr_array *a = v->u.array;
        wr_bytes_put(out, "[", 1);
        for (size_t i = 0; i < a->count; i++) {
            if (i)
                wr_bytes_put(out, ",", 1);
            lr_append_value(out, &a->items[i], true);
        }
        wr_bytes_put(out, "]", 1);
        break;
    }
    default: /* the integer types and TIMESTAMP, all held in u.i */
        wr_bytes_put(out, num, lr_i64_text(num, v->u.i));
        break;
    }
}

void lr_headers_encode(struct wr_bytes *out, uint32_t *count, const struct wr_msg *msg,
                       const uint8_t *meta, size_t meta_len)
{
    *count = 0;
    lr_props_encode(out, count, &msg->props);
    struct wr_bytes text = {0};
    for (size_t i = 0; i < msg->headers->count; i++) {
        const struct wr_field *f = &msg->headers->fields[i];
        text.len = 0;
        lr_append_value(&text, &f->value, false);
        if (text.oom)
            out->oom = true;
        const uint8_t *value = text.p ? text.p : (const uint8_t *)""; /* "": empty, not null */
        lb_header_put(out, f->name, f->name_len, f->value.type == WR_V_VOID ? NULL : value,
                      text.len);
        (*count)++;
    }
    wr_bytes_free(&text);
    lb_header_put(out, LB_META_HEADER, sizeof LB_META_HEADER - 1, meta, meta_len);
    (*count)++;
}

/* ---- messages as a batch ---------------------------------------------------------- */

int lb_encode_msgs(struct wr_bytes *out, struct wr_msg *const *msgs, size_t n,
                   struct wr_error *err)
{
    if (n == 0 || n - 1 > INT32_MAX)
        return wr_error_set(err, WR_EINVAL, "a record batch holds 1 to 2^31 messages, not %zu",
                            n);
    size_t start = out->len;
    if (!wr_bytes_grow(out, LB_HEADER_SIZE))
        return wr_error_set(err, WR_ENOMEM, "out of memory encoding a record batch");
    /* Kafka producers take the first record's timestamp as the base; the deltas are signed
     * and wrap like the decoder's sum, so any timestamp comes back as it went in. */
    int64_t base_ts = msgs[0]->timestamp_ms;
    int64_t max_ts = base_ts;
    struct wr_bytes meta = {0}, headers = {0};
    int rc = WR_OK;
    for (size_t i = 0; i < n && rc == WR_OK; i++) {
        const struct wr_msg *msg = msgs[i];
        if (msg->timestamp_ms > max_ts)
            max_ts = msg->timestamp_ms;
        uint32_t count = 0;
        meta.len = 0;
        headers.len = 0;
        wr_msg_meta_encode(&meta, msg);
        if (!meta.oom)
            lr_headers_encode(&headers, &count, msg, meta.p, meta.len);
        if (meta.oom || headers.oom)
            rc = wr_error_set(err, WR_ENOMEM, "out of memory encoding message headers");
        else
            rc = lb_record_put(out, i,
                               (int64_t)((uint64_t)msg->timestamp_ms - (uint64_t)base_ts),
                               wr_msg_record_key(msg),
                               (struct wr_str){(const char *)wr_slice_ptr(&msg->body),
                                               msg->body.len},
                               &headers, count, err);
    }
    wr_bytes_free(&meta);
    wr_bytes_free(&headers);
    if (rc == WR_OK && out->len - start - LB_LOG_OVERHEAD > INT32_MAX)
        rc = wr_error_set(err, WR_EINVAL, "record batch of %zu bytes is larger than 2 GiB",
                          out->len - start);
    if (rc != WR_OK) {
        if (!out->oom)
            out->len = start;
        return rc;
    }
    lb_batch_finish(out->p + start, out->len - start, (uint32_t)n, base_ts, max_ts);
    return WR_OK;
}

/* ---- records as messages ------------------------------------------------------------- */

/* A slice of buf for the bytes at p (NULL: an empty body). */
static struct wr_slice lr_slice_of(struct wr_buf *buf, const uint8_t *p, int32_t len)
{
    if (!p || len <= 0)
        return (struct wr_slice){0};
    assert(p >= buf->data && p + len <= buf->data + buf->len);
    return (struct wr_slice){buf, (size_t)(p - buf->data), (size_t)len};
}

/* Adds a Kafka header to t. A table's names are C strings, so a name holding a NUL byte is
 * cut there. */
static int lr_add_header(struct wr_table *t, const uint8_t *name, int32_t name_len,
                         const uint8_t *value, int32_t value_len)
{
    char small[128];
    char *cname = (size_t)name_len < sizeof small ? small : malloc((size_t)name_len + 1);
    if (!cname)
        return WR_ENOMEM;
    memcpy(cname, name, (size_t)name_len);
    cname[name_len] = '\0';
    struct wr_value v = {.type = WR_V_VOID};
    if (value) { /* a long string: AMQP's bytes-as-they-are, which clients read as text */
        v.type = WR_V_STR;
        v.u.s.ptr = (const char *)value;
        v.u.s.len = (size_t)value_len;
    }
    int rc = wr_table_add(t, cname, &v);
    if (cname != small)
        free(cname);
    return rc;
}

/* The message a Kafka producer's record stands for: key and routing key the record key,
 * property-named headers as properties, the other headers as long strings, no exchange. */
static int lr_kafka_msg(struct wr_buf *buf, const struct lb_record *r, struct wr_table *headers,
                        struct wr_msg **out, struct wr_error *err)
{
    struct wr_props props = {0};
    const uint8_t *pos = NULL, *name, *value;
    int32_t name_len, value_len;
    int rc;
    while ((rc = lb_header_next(r, &pos, &name, &name_len, &value, &value_len)) == 1) {
        const struct lr_prop *p = lr_prop_named(name, name_len);
        if (p && lr_prop_decode(&props, p, value, value_len))
            continue;
        if (lr_add_header(headers, name, name_len, value, value_len) != WR_OK)
            return wr_error_set(err, WR_ENOMEM, "out of memory for record headers");
    }
    if (rc != 0)
        return wr_error_set(err, WR_EPROTO, "malformed headers in the record at offset %llu",
                            (unsigned long long)r->offset);
    struct wr_str key = {(const char *)r->key, r->key ? (size_t)r->key_len : 0};
    struct wr_value offset = wr_value_i64((int64_t)r->offset);
    if (wr_table_set(headers, "x-stream-offset", &offset) != WR_OK)
        return wr_error_set(err, WR_ENOMEM, "out of memory for record headers");
    struct wr_msg_init init = {
        .routing_key = key.ptr ? key : wr_str_c(""),
        .key = key,
        .headers = headers,
        .props = &props,
        .body = lr_slice_of(buf, r->value, r->value_len),
        .body_ptr = "",
        .timestamp_ms = r->timestamp,
    };
    return wr_msg_new(&init, out, err);
}

/* The message warren encoded into a record: its metadata, the record value as its body, and
 * x-stream-offset added to its headers. Messages are immutable, so the decoded one lends its
 * fields to a second one that carries the extra header. */
static int lr_warren_msg(struct wr_buf *buf, const struct lb_record *r, const uint8_t *meta,
                         int32_t meta_len, struct wr_msg **out, struct wr_error *err)
{
    struct wr_msg *decoded = NULL;
    int rc = wr_msg_meta_decode(meta, (size_t)meta_len, (struct wr_slice){0}, &decoded, err);
    if (rc != WR_OK) {
        wr_error_wrap(err, "record at offset %llu", (unsigned long long)r->offset);
        return rc;
    }
    struct wr_table *headers = wr_table_dup(decoded->headers);
    struct wr_value offset = wr_value_i64((int64_t)r->offset);
    if (!headers || wr_table_set(headers, "x-stream-offset", &offset) != WR_OK) {
        wr_table_free(headers);
        wr_msg_unref(decoded);
        return wr_error_set(err, WR_ENOMEM, "out of memory for record headers");
    }
    struct wr_msg_init init = {
        .exchange = decoded->exchange,
        .routing_key = decoded->routing_key,
        .key = decoded->key,
        .headers = headers,
        .props = &decoded->props,
        .body = lr_slice_of(buf, r->value, r->value_len),
        .body_ptr = "",
        .timestamp_ms = decoded->timestamp_ms,
    };
    rc = wr_msg_new(&init, out, err);
    wr_table_free(headers);
    wr_msg_unref(decoded);
    return rc;
}

int lb_record_msg(struct wr_buf *buf, const struct lb_record *r, struct wr_msg **out,
                  struct wr_error *err)
{
    const uint8_t *pos = NULL, *name, *value;
    int32_t name_len, value_len;
    int rc;
    while ((rc = lb_header_next(r, &pos, &name, &name_len, &value, &value_len)) == 1)
        if (name_len == sizeof LB_META_HEADER - 1 &&
            memcmp(name, LB_META_HEADER, sizeof LB_META_HEADER - 1) == 0)
            break;
    if (rc < 0)
        return wr_error_set(err, WR_EPROTO, "malformed headers in the record at offset %llu",
                            (unsigned long long)r->offset);
    if (rc == 1 && !value)
        return wr_error_set(err, WR_EPROTO, "record at offset %llu: null %s header",
                            (unsigned long long)r->offset, LB_META_HEADER);
    if (rc == 1)
        return lr_warren_msg(buf, r, value, value_len, out, err);
    struct wr_table *headers = wr_table_new();
    if (!headers)
        return wr_error_set(err, WR_ENOMEM, "out of memory for record headers");
    rc = lr_kafka_msg(buf, r, headers, out, err);
    wr_table_free(headers);
    return rc;
}
