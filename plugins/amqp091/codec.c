/*
 * codec.c: the hand-written half of the AMQP 0-9-1 codec: the byte writer and reader,
 * field tables, frames and body splitting. The per-method code and the content properties
 * are generated from the spec into amqp_methods.c.
 *
 * Everything read here comes from a peer: a read never passes the end of its range (the
 * cursor turns bad instead), every length is checked against the bytes that remain, and
 * nested tables and arrays stop at TABLE_DEPTH_MAX levels.
 */
#include "codec.h"

#include <stdlib.h>
#include <string.h>

/* Deeper nesting is refused: decoding recurses once per level. */
#define TABLE_DEPTH_MAX 64
/* type, channel, size in front of the payload; the end octet behind it. */
#define FRAME_HEADER_SIZE 7
#define FRAME_OVERHEAD 8

/* ---- output buffer ------------------------------------------------------------------- */

void amqp_wr_free(struct amqp_wr *w)
{
    free(w->p);
    memset(w, 0, sizeof *w);
}

bool amqp_wr_reserve(struct amqp_wr *w, size_t n)
{
    if (w->oom)
        return false;
    if (w->cap - w->len >= n)
        return true;
    if (n > SIZE_MAX / 2 - w->len) {
        w->oom = true;
        return false;
    }
    size_t cap = w->cap ? w->cap * 2 : 256;
    if (cap < w->len + n)
        cap = w->len + n;
    uint8_t *p = realloc(w->p, cap);
    if (!p) {
        w->oom = true;
        return false;
    }
    w->p = p;
    w->cap = cap;
    return true;
}

void amqp_wr_u8(struct amqp_wr *w, uint8_t v)
{
    if (amqp_wr_reserve(w, 1))
        w->p[w->len++] = v;
}

void amqp_wr_u16(struct amqp_wr *w, uint16_t v)
{
    if (!amqp_wr_reserve(w, 2))
        return;
    uint8_t *d = w->p + w->len;
    d[0] = (uint8_t)(v >> 8);
    d[1] = (uint8_t)v;
    w->len += 2;
}

static void put_u32(uint8_t *d, uint32_t v)
{
    d[0] = (uint8_t)(v >> 24);
    d[1] = (uint8_t)(v >> 16);
    d[2] = (uint8_t)(v >> 8);
    d[3] = (uint8_t)v;
}

void amqp_wr_u32(struct amqp_wr *w, uint32_t v)
{
    if (!amqp_wr_reserve(w, 4))
        return;
    put_u32(w->p + w->len, v);
    w->len += 4;
}

void amqp_wr_u64(struct amqp_wr *w, uint64_t v)
{
    if (!amqp_wr_reserve(w, 8))
        return;
    put_u32(w->p + w->len, (uint32_t)(v >> 32));
    put_u32(w->p + w->len + 4, (uint32_t)v);
    w->len += 8;
}

void amqp_wr_bytes(struct amqp_wr *w, const void *p, size_t n)
{
    if (n == 0 || !amqp_wr_reserve(w, n))
        return;
    memcpy(w->p + w->len, p, n);
    w->len += n;
}

void amqp_wr_shortstr(struct amqp_wr *w, struct wr_str s)
{
    size_t n = s.len > 255 ? 255 : s.len;
    amqp_wr_u8(w, (uint8_t)n);
    amqp_wr_bytes(w, s.ptr, n);
}

void amqp_wr_longstr(struct amqp_wr *w, struct wr_str s)
{
    size_t n = s.len > UINT32_MAX ? UINT32_MAX : s.len;
    amqp_wr_u32(w, (uint32_t)n);
    amqp_wr_bytes(w, s.ptr, n);
}

/* Writes a 32-bit length placeholder; returns where the counted bytes start. */
static size_t wr_length_begin(struct amqp_wr *w)
{
    amqp_wr_u32(w, 0);
    return w->len;
}

static void wr_length_end(struct amqp_wr *w, size_t start)
{
    if (!w->oom)
        put_u32(w->p + start - 4, (uint32_t)(w->len - start));
}

static void wr_value(struct amqp_wr *w, const struct wr_value *v);

static void wr_array(struct amqp_wr *w, const struct wr_array *a)
{
    size_t start = wr_length_begin(w);
    for (size_t i = 0; a && i < a->count; i++)
        wr_value(w, &a->items[i]);
    wr_length_end(w, start);
}

static void wr_value(struct amqp_wr *w, const struct wr_value *v)
{
    uint32_t f32 = 0;
    uint64_t f64 = 0;
    switch (v->type) {
    case WR_V_BOOL: amqp_wr_u8(w, 't'); amqp_wr_u8(w, v->u.b); break;
    case WR_V_I8: amqp_wr_u8(w, 'b'); amqp_wr_u8(w, (uint8_t)v->u.i); break;
    case WR_V_U8: amqp_wr_u8(w, 'B'); amqp_wr_u8(w, (uint8_t)v->u.i); break;
    case WR_V_I16: amqp_wr_u8(w, 's'); amqp_wr_u16(w, (uint16_t)v->u.i); break;
    case WR_V_U16: amqp_wr_u8(w, 'u'); amqp_wr_u16(w, (uint16_t)v->u.i); break;
    case WR_V_I32: amqp_wr_u8(w, 'I'); amqp_wr_u32(w, (uint32_t)v->u.i); break;
    case WR_V_U32: amqp_wr_u8(w, 'i'); amqp_wr_u32(w, (uint32_t)v->u.i); break;
    case WR_V_I64: amqp_wr_u8(w, 'l'); amqp_wr_u64(w, (uint64_t)v->u.i); break;
    case WR_V_FLOAT: {
        float f = (float)v->u.d;
        memcpy(&f32, &f, 4);
        amqp_wr_u8(w, 'f');
        amqp_wr_u32(w, f32);
        break;
    }
    case WR_V_DOUBLE:
        memcpy(&f64, &v->u.d, 8);
        amqp_wr_u8(w, 'd');
        amqp_wr_u64(w, f64);
        break;
    case WR_V_DECIMAL:
        amqp_wr_u8(w, 'D');
        amqp_wr_u8(w, v->u.dec.scale);
        amqp_wr_u32(w, v->u.dec.value);
        break;
    case WR_V_STR:
    case WR_V_BYTES:
        amqp_wr_u8(w, v->type == WR_V_STR ? 'S' : 'x');
        amqp_wr_longstr(w, (struct wr_str){v->u.s.ptr, v->u.s.len});
        break;
    case WR_V_TIMESTAMP: amqp_wr_u8(w, 'T'); amqp_wr_u64(w, (uint64_t)v->u.i); break;
    case WR_V_TABLE: amqp_wr_u8(w, 'F'); amqp_wr_table(w, v->u.table); break;
    case WR_V_ARRAY: amqp_wr_u8(w, 'A'); wr_array(w, v->u.array); break;
    default: amqp_wr_u8(w, 'V'); break;
    }
}

void amqp_wr_table(struct amqp_wr *w, const struct wr_table *t)
{
    size_t start = wr_length_begin(w);
    for (size_t i = 0; t && i < t->count; i++) {
        const struct wr_field *f = &t->fields[i];
        amqp_wr_shortstr(w, (struct wr_str){f->name, f->name_len});
        wr_value(w, &f->value);
    }
    wr_length_end(w, start);
}

/* ---- input ------------------------------------------------------------------------- */

/* The next n bytes, or NULL (and bad) when fewer remain. */
static const uint8_t *rd_take(struct amqp_rd *r, size_t n)
{
    if (r->bad || n > r->len - r->off) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static uint32_t get_u32(const uint8_t *s)
{
    return (uint32_t)s[0] << 24 | (uint32_t)s[1] << 16 | (uint32_t)s[2] << 8 | s[3];
}

uint8_t amqp_rd_u8(struct amqp_rd *r)
{
    const uint8_t *s = rd_take(r, 1);
    return s ? s[0] : 0;
}

uint16_t amqp_rd_u16(struct amqp_rd *r)
{
    const uint8_t *s = rd_take(r, 2);
    return s ? (uint16_t)(s[0] << 8 | s[1]) : 0;
}

uint32_t amqp_rd_u32(struct amqp_rd *r)
{
    const uint8_t *s = rd_take(r, 4);
    return s ? get_u32(s) : 0;
}

uint64_t amqp_rd_u64(struct amqp_rd *r)
{
    const uint8_t *s = rd_take(r, 8);
    return s ? (uint64_t)get_u32(s) << 32 | get_u32(s + 4) : 0;
}

struct wr_str amqp_rd_shortstr(struct amqp_rd *r)
{
    size_t n = amqp_rd_u8(r);
    const char *s = (const char *)rd_take(r, n);
    return (struct wr_str){s, s ? n : 0};
}

struct wr_str amqp_rd_longstr(struct amqp_rd *r)
{
    size_t n = amqp_rd_u32(r);
    const char *s = (const char *)rd_take(r, n);
    return (struct wr_str){s, s ? n : 0};
}

/* Names are almost always ASCII, so eight bytes at a time are tested for a high bit first;
 * a multi-byte sequence is then checked against the ranges of RFC 3629's table, which is
 * what leaves out overlong forms (C0, C1, E0 80-9F, F0 80-8F), surrogates (ED A0-BF) and
 * code points past U+10FFFF (F4 90-BF, F5-FF). */
bool amqp_utf8_valid(struct wr_str s)
{
    if (s.len == 0)
        return true;
    const uint8_t *p = (const uint8_t *)s.ptr;
    const uint8_t *end = p + s.len;
    while (p < end) {
        if (end - p >= 8) {
            uint64_t word = 0;
            memcpy(&word, p, 8);
            if ((word & 0x8080808080808080u) == 0) {
                p += 8;
                continue;
            }
        }
        uint8_t c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        size_t more = 0;              /* continuation bytes after c */
        uint8_t lo = 0x80, hi = 0xbf; /* the range allowed for the first of them */
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            lo = c == 0xe0 ? 0xa0 : 0x80;
            hi = c == 0xed ? 0x9f : 0xbf;
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            lo = c == 0xf0 ? 0x90 : 0x80;
            hi = c == 0xf4 ? 0x8f : 0xbf;
        } else {
            return false;
        }
        if ((size_t)(end - p) <= more || p[1] < lo || p[1] > hi)
            return false;
        for (size_t i = 2; i <= more; i++)
            if ((p[i] & 0xc0) != 0x80)
                return false;
        p += more + 1;
    }
    return true;
}

/* A reader over the next (32-bit length)-prefixed block of r, which skips past it. */
static struct amqp_rd rd_block(struct amqp_rd *r)
{
    size_t n = amqp_rd_u32(r);
    const uint8_t *p = rd_take(r, n);
    return (struct amqp_rd){p, p ? n : 0, 0, p == NULL};
}

/* The table and array decoders return 0, AMQP_SYNTAX_ERROR or, out of memory,
 * AMQP_INTERNAL_ERROR; on error they own nothing. */
static int rd_table(struct amqp_rd *r, int depth, struct wr_table **out);
static int rd_array(struct amqp_rd *r, int depth, struct wr_array **out);

/* Decodes the value tagged tag into *v. Strings borrow from the input; a nested table or
 * array is a new one that v owns (value_drop frees it). */
static int rd_value(struct amqp_rd *r, uint8_t tag, int depth, struct wr_value *v)
{
    uint32_t f32 = 0;
    uint64_t f64 = 0;
    float f = 0;
    memset(v, 0, sizeof *v);
    switch (tag) {
    case 't': v->type = WR_V_BOOL; v->u.b = amqp_rd_u8(r) != 0; break;
    case 'b': v->type = WR_V_I8; v->u.i = (int8_t)amqp_rd_u8(r); break;
    case 'B': v->type = WR_V_U8; v->u.i = amqp_rd_u8(r); break;
    case 's': v->type = WR_V_I16; v->u.i = (int16_t)amqp_rd_u16(r); break;
    case 'u': v->type = WR_V_U16; v->u.i = amqp_rd_u16(r); break;
    case 'I': v->type = WR_V_I32; v->u.i = (int32_t)amqp_rd_u32(r); break;
    case 'i': v->type = WR_V_U32; v->u.i = amqp_rd_u32(r); break;
    case 'l':
    case 'L': v->type = WR_V_I64; v->u.i = (int64_t)amqp_rd_u64(r); break;
    case 'f':
        f32 = amqp_rd_u32(r);
        memcpy(&f, &f32, 4);
        v->type = WR_V_FLOAT;
        v->u.d = f;
        break;
    case 'd':
        f64 = amqp_rd_u64(r);
        v->type = WR_V_DOUBLE;
        memcpy(&v->u.d, &f64, 8);
        break;
    case 'D':
        v->type = WR_V_DECIMAL;
        v->u.dec.scale = amqp_rd_u8(r);
        v->u.dec.value = amqp_rd_u32(r);
        break;
    case 'S':
    case 'x': {
        struct wr_str s = amqp_rd_longstr(r);
        if (r->bad)
            return AMQP_SYNTAX_ERROR;
        v->type = tag == 'S' ? WR_V_STR : WR_V_BYTES;
        v->u.s.ptr = s.ptr ? s.ptr : "";
        v->u.s.len = s.len;
        break;
    }
    case 'T': v->type = WR_V_TIMESTAMP; v->u.i = (int64_t)amqp_rd_u64(r); break;
    case 'V': v->type = WR_V_VOID; break;
    case 'F': {
        struct wr_table *t = NULL;
        int rc = rd_table(r, depth + 1, &t);
        if (rc)
            return rc;
        v->type = WR_V_TABLE;
        v->u.table = t;
        break;
    }
    case 'A': {
        struct wr_array *a = NULL;
        int rc = rd_array(r, depth + 1, &a);
        if (rc)
            return rc;
        v->type = WR_V_ARRAY;
        v->u.array = a;
        break;
    }
    default:
        r->bad = true;
        break;
    }
    return r->bad ? AMQP_SYNTAX_ERROR : 0;
}

/* Frees the nested table or array rd_value made for v. */
static void value_drop(struct wr_value *v)
{
    if (v->type == WR_V_TABLE)
        wr_table_free((struct wr_table *)v->u.table);
    else if (v->type == WR_V_ARRAY)
        wr_array_free((struct wr_array *)v->u.array);
}

static int rd_table(struct amqp_rd *r, int depth, struct wr_table **out)
{
    *out = NULL;
    struct amqp_rd b = depth > TABLE_DEPTH_MAX ? (struct amqp_rd){.bad = true} : rd_block(r);
    if (b.bad) {
        r->bad = true;
        return AMQP_SYNTAX_ERROR;
    }
    struct wr_table *t = wr_table_new();
    if (!t)
        return AMQP_INTERNAL_ERROR;
    int rc = 0;
    while (rc == 0 && b.off < b.len) {
        struct wr_str name = amqp_rd_shortstr(&b);
        uint8_t tag = amqp_rd_u8(&b);
        struct wr_value v;
        if (b.bad) {
            rc = AMQP_SYNTAX_ERROR;
            break;
        }
        rc = rd_value(&b, tag, depth, &v);
        if (rc)
            break;
        /* wr_table_add deep-copies; a name is a shortstr, so it fits the stack. */
        char cname[256];
        memcpy(cname, name.ptr ? name.ptr : "", name.len);
        cname[name.len] = '\0';
        if (wr_table_add(t, cname, &v) != WR_OK)
            rc = AMQP_INTERNAL_ERROR;
        value_drop(&v);
    }
    if (rc) {
        if (rc == AMQP_SYNTAX_ERROR)
            r->bad = true;
        wr_table_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

static int rd_array(struct amqp_rd *r, int depth, struct wr_array **out)
{
    *out = NULL;
    struct amqp_rd b = depth > TABLE_DEPTH_MAX ? (struct amqp_rd){.bad = true} : rd_block(r);
    if (b.bad) {
        r->bad = true;
        return AMQP_SYNTAX_ERROR;
    }
    struct wr_array *a = wr_array_new();
    if (!a)
        return AMQP_INTERNAL_ERROR;
    int rc = 0;
    while (rc == 0 && b.off < b.len) {
        uint8_t tag = amqp_rd_u8(&b);
        struct wr_value v;
        rc = rd_value(&b, tag, depth, &v);
        if (rc)
            break;
        if (wr_array_add(a, &v) != WR_OK)
            rc = AMQP_INTERNAL_ERROR;
        value_drop(&v);
    }
    if (rc) {
        if (rc == AMQP_SYNTAX_ERROR)
            r->bad = true;
        wr_array_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

int amqp_rd_table(struct amqp_rd *r, struct wr_table **out)
{
    return rd_table(r, 1, out);
}

/* ---- frames ------------------------------------------------------------------------ */

ssize_t amqp_frame_parse(const uint8_t *p, size_t len, uint32_t frame_max,
                         struct amqp_frame *f)
{
    if (len < FRAME_HEADER_SIZE)
        return 0;
    uint8_t type = p[0];
    if (type != AMQP_FRAME_METHOD && type != AMQP_FRAME_HEADER && type != AMQP_FRAME_BODY &&
        type != AMQP_FRAME_HEARTBEAT)
        return -AMQP_FRAME_ERROR;
    uint32_t size = get_u32(p + 3);
    /* 64-bit sum: size near 4 GiB must not wrap around the limit. */
    if ((uint64_t)size + FRAME_OVERHEAD > frame_max)
        return -AMQP_FRAME_ERROR;
    size_t total = (size_t)size + FRAME_OVERHEAD;
    if (len < total)
        return 0;
    if (p[total - 1] != AMQP_FRAME_END)
        return -AMQP_FRAME_ERROR;
    f->type = type;
    f->channel = (uint16_t)(p[1] << 8 | p[2]);
    f->size = size;
    f->payload = p + FRAME_HEADER_SIZE;
    return (ssize_t)total;
}

size_t amqp_wr_frame_begin(struct amqp_wr *w, uint8_t type, uint16_t channel)
{
    size_t mark = w->len;
    amqp_wr_u8(w, type);
    amqp_wr_u16(w, channel);
    amqp_wr_u32(w, 0);
    return mark;
}

void amqp_wr_frame_end(struct amqp_wr *w, size_t mark)
{
    if (!w->oom)
        put_u32(w->p + mark + 3, (uint32_t)(w->len - mark - FRAME_HEADER_SIZE));
    amqp_wr_u8(w, AMQP_FRAME_END);
}

void amqp_wr_heartbeat(struct amqp_wr *w)
{
    static const uint8_t frame[FRAME_OVERHEAD] = {AMQP_FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0,
                                                   AMQP_FRAME_END};
    amqp_wr_bytes(w, frame, sizeof frame);
}

void amqp_wr_method(struct amqp_wr *w, uint16_t channel, const struct amqp_method *m)
{
    size_t mark = amqp_wr_frame_begin(w, AMQP_FRAME_METHOD, channel);
    amqp_method_encode(w, m);
    amqp_wr_frame_end(w, mark);
}

void amqp_wr_body(struct amqp_wr *w, uint16_t channel, uint32_t frame_max,
                  const uint8_t *body, size_t len)
{
    /* A negotiated frame_max is at least AMQP_FRAME_MIN_SIZE; 0 means no limit. */
    size_t chunk = frame_max == 0 ? UINT32_MAX
                   : frame_max > FRAME_OVERHEAD ? frame_max - FRAME_OVERHEAD : 1;
    size_t frames = len / chunk + (len % chunk != 0);
    if (frames > (SIZE_MAX - len) / FRAME_OVERHEAD) {
        w->oom = true;
        return;
    }
    if (!amqp_wr_reserve(w, len + frames * FRAME_OVERHEAD))
        return;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        uint8_t *d = w->p + w->len;
        d[0] = AMQP_FRAME_BODY;
        d[1] = (uint8_t)(channel >> 8);
        d[2] = (uint8_t)channel;
        put_u32(d + 3, (uint32_t)n);
        memcpy(d + FRAME_HEADER_SIZE, body + off, n);
        d[FRAME_HEADER_SIZE + n] = AMQP_FRAME_END;
        w->len += n + FRAME_OVERHEAD;
    }
}
