/*
 * codec.c: the Kafka wire protocol's primitives (big-endian integers, varints, the classic
 * and compact strings, bytes and arrays, tagged-field sections), the request and response
 * headers, and the arena the generated decoders allocate from. The message codec itself is
 * generated (gen/kafka_msgs.c); the rules are in codec.h.
 */
#include "codec.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ------------------------------------------------------------------------------ */

#define ARENA_BLOCK 4096

struct kf_arena_block {
    struct kf_arena_block *next;
    size_t used;
    size_t cap;
    alignas(max_align_t) unsigned char data[];
};

void *kf_arena_alloc(struct kf_arena *a, size_t n)
{
    const size_t align = alignof(max_align_t);
    if (n > SIZE_MAX / 2)
        return NULL;
    n = (n + align - 1) & ~(align - 1);
    struct kf_arena_block *b = a->blocks;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->used = 0;
        b->cap = cap;
        /* A big allocation gets a block of its own behind the current one, so the rest of
         * the current block stays in use. */
        if (a->blocks && cap > ARENA_BLOCK) {
            b->next = a->blocks->next;
            a->blocks->next = b;
        } else {
            b->next = a->blocks;
            a->blocks = b;
        }
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

void kf_arena_free(struct kf_arena *a)
{
    struct kf_arena_block *b = a->blocks;
    while (b) {
        struct kf_arena_block *next = b->next;
        free(b);
        b = next;
    }
    a->blocks = NULL;
}

/* ---- readers ---------------------------------------------------------------------------- */

/* The next n bytes, or NULL (and err set) when fewer are left or a read failed before. */
static const uint8_t *take(struct kf_in *in, size_t n)
{
    if (in->err || kf_remaining(in) < n) {
        in->err = true;
        return NULL;
    }
    const uint8_t *p = in->p;
    in->p += n;
    return p;
}

static uint64_t read_be(struct kf_in *in, size_t n)
{
    const uint8_t *p = take(in, n);
    uint64_t v = 0;
    for (size_t i = 0; p && i < n; i++)
        v = v << 8 | p[i];
    return v;
}

int8_t kf_read_i8(struct kf_in *in)
{
    return (int8_t)read_be(in, 1);
}

int16_t kf_read_i16(struct kf_in *in)
{
    return (int16_t)read_be(in, 2);
}

int32_t kf_read_i32(struct kf_in *in)
{
    return (int32_t)read_be(in, 4);
}

int64_t kf_read_i64(struct kf_in *in)
{
    return (int64_t)read_be(in, 8);
}

double kf_read_f64(struct kf_in *in)
{
    uint64_t bits = read_be(in, 8);
    double d = 0;
    memcpy(&d, &bits, sizeof d);
    return d;
}

struct kf_uuid kf_read_uuid(struct kf_in *in)
{
    struct kf_uuid u = {{0}};
    const uint8_t *p = take(in, sizeof u.b);
    if (p)
        memcpy(u.b, p, sizeof u.b);
    return u;
}

/* Up to max_bytes of 7-bit groups, least significant first. */
static uint64_t read_uvar(struct kf_in *in, int max_bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < max_bytes; i++) {
        const uint8_t *p = take(in, 1);
        if (!p)
            return 0;
        v |= (uint64_t)(*p & 0x7f) << (7 * i);
        if (!(*p & 0x80))
            return v;
    }
    in->err = true;
    return 0;
}

uint32_t kf_read_uvarint(struct kf_in *in)
{
    uint64_t v = read_uvar(in, 5);
    if (v > UINT32_MAX) {
        in->err = true;
        return 0;
    }
    return (uint32_t)v;
}

int32_t kf_read_varint(struct kf_in *in)
{
    uint32_t z = kf_read_uvarint(in);
    return (int32_t)(z >> 1) ^ -(int32_t)(z & 1);
}

int64_t kf_read_varlong(struct kf_in *in)
{
    uint64_t z = read_uvar(in, 10);
    return (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
}

/* A length prefix: int16 (string) or int32 (bytes), or compact (unsigned varint N+1).
 * Returns -1 for null, or the length; an error (set in err) returns -2. */
static int32_t read_len(struct kf_in *in, bool compact, bool wide, bool nullable)
{
    int32_t n;
    if (compact) {
        uint32_t u = kf_read_uvarint(in);
        n = u > INT32_MAX ? -2 : (int32_t)u - 1;
    } else {
        n = wide ? kf_read_i32(in) : kf_read_i16(in);
    }
    if (in->err || n < -1 || (n == -1 && !nullable)) {
        in->err = true;
        return -2;
    }
    return n;
}

static struct kf_str read_blob(struct kf_in *in, bool compact, bool wide, bool nullable)
{
    struct kf_str s = {NULL, 0};
    int32_t n = read_len(in, compact, wide, nullable);
    if (n < 0)
        return s;
    const uint8_t *p = take(in, (size_t)n);
    if (p) {
        s.ptr = (const char *)p;
        s.len = n;
    }
    return s;
}

struct kf_str kf_read_string(struct kf_in *in, bool compact, bool nullable)
{
    return read_blob(in, compact, false, nullable);
}

struct kf_str kf_read_bytes(struct kf_in *in, bool compact, bool nullable)
{
    return read_blob(in, compact, true, nullable);
}

int32_t kf_read_array_len(struct kf_in *in, bool compact, bool nullable, size_t min_elem)
{
    int32_t n = read_len(in, compact, true, nullable);
    if (n == -2)
        return 0;
    if (n > 0 && (size_t)n > kf_remaining(in) / (min_elem ? min_elem : 1)) {
        in->err = true;
        return 0;
    }
    return n;
}

struct kf_in kf_read_tagged(struct kf_in *in)
{
    uint32_t size = kf_read_uvarint(in);
    struct kf_in sub = {in->p, in->p, true};
    const uint8_t *p = take(in, size);
    if (p) {
        sub.end = p + size;
        sub.err = false;
    }
    return sub;
}

void kf_skip_tagged_fields(struct kf_in *in)
{
    uint32_t count = kf_read_uvarint(in);
    for (uint32_t i = 0; i < count && !in->err; i++) {
        kf_read_uvarint(in);
        kf_read_tagged(in);
    }
}

/* ---- writers ---------------------------------------------------------------------------- */

static void write_be(struct wr_bytes *o, uint64_t v, size_t n)
{
    uint8_t *p = wr_bytes_grow(o, n);
    for (size_t i = 0; p && i < n; i++)
        p[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
}

void kf_write_i8(struct wr_bytes *o, int8_t v)
{
    write_be(o, (uint8_t)v, 1);
}

void kf_write_i16(struct wr_bytes *o, int16_t v)
{
    write_be(o, (uint16_t)v, 2);
}

void kf_write_i32(struct wr_bytes *o, int32_t v)
{
    write_be(o, (uint32_t)v, 4);
}

void kf_write_i64(struct wr_bytes *o, int64_t v)
{
    write_be(o, (uint64_t)v, 8);
}

void kf_write_f64(struct wr_bytes *o, double v)
{
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof bits);
    write_be(o, bits, 8);
}

void kf_write_uuid(struct wr_bytes *o, struct kf_uuid u)
{
    wr_bytes_put(o, u.b, sizeof u.b);
}

static void write_uvar(struct wr_bytes *o, uint64_t v)
{
    uint8_t buf[10];
    size_t n = 0;
    while (v >= 0x80) {
        buf[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    buf[n++] = (uint8_t)v;
    wr_bytes_put(o, buf, n);
}

void kf_write_uvarint(struct wr_bytes *o, uint32_t v)
{
    write_uvar(o, v);
}

void kf_write_varint(struct wr_bytes *o, int32_t v)
{
    write_uvar(o, (uint32_t)v << 1 ^ (uint32_t)(v >> 31));
}

void kf_write_varlong(struct wr_bytes *o, int64_t v)
{
    write_uvar(o, (uint64_t)v << 1 ^ (uint64_t)(v >> 63));
}

/* A length prefix as read_len reads it; n < 0 is null. */
static void write_len(struct wr_bytes *o, int32_t n, bool compact, bool wide)
{
    if (compact)
        kf_write_uvarint(o, n < 0 ? 0 : (uint32_t)n + 1);
    else if (wide)
        kf_write_i32(o, n < 0 ? -1 : n);
    else
        kf_write_i16(o, n < 0 ? -1 : (int16_t)n);
}

/* A length that does not fit the prefix (a negative one, or past INT16_MAX for a classic
 * string) is cut, so the prefix always matches the bytes that follow it. */
static void write_blob(struct wr_bytes *o, struct kf_str s, bool compact, bool wide)
{
    int32_t n = s.len < 0 ? 0 : s.len;
    if (!compact && !wide && n > INT16_MAX)
        n = INT16_MAX;
    write_len(o, s.ptr ? n : -1, compact, wide);
    if (s.ptr)
        wr_bytes_put(o, s.ptr, (size_t)n);
}

void kf_write_string(struct wr_bytes *o, struct kf_str s, bool compact)
{
    write_blob(o, s, compact, false);
}

void kf_write_bytes(struct wr_bytes *o, struct kf_str s, bool compact)
{
    write_blob(o, s, compact, true);
}

void kf_write_array_len(struct wr_bytes *o, int32_t n, bool compact)
{
    write_len(o, n, compact, true);
}

void kf_write_tagged(struct wr_bytes *o, uint32_t tag, struct wr_bytes *val)
{
    kf_write_uvarint(o, tag);
    kf_write_uvarint(o, (uint32_t)val->len);
    wr_bytes_put(o, val->p, val->len);
    if (val->oom)
        o->oom = true;
    wr_bytes_free(val);
}

/* ---- headers ---------------------------------------------------------------------------- */

void kf_request_peek(const uint8_t *p, size_t len, int16_t *api_key, int16_t *api_version)
{
    if (len < 4) {
        *api_key = *api_version = -1;
        return;
    }
    struct kf_in in = {p, p + 4, false};
    *api_key = kf_read_i16(&in);
    *api_version = kf_read_i16(&in);
}

int kf_request_header_decode(struct kf_in *in, bool flexible, struct kf_request_header *out)
{
    out->api_key = kf_read_i16(in);
    out->api_version = kf_read_i16(in);
    out->correlation_id = kf_read_i32(in);
    /* ClientId keeps its int16 length even in header v2. */
    out->client_id = kf_read_string(in, false, true);
    if (flexible)
        kf_skip_tagged_fields(in);
    return in->err ? WR_EPROTO : WR_OK;
}

void kf_request_header_encode(struct wr_bytes *out, const struct kf_request_header *h,
                              bool flexible)
{
    kf_write_i16(out, h->api_key);
    kf_write_i16(out, h->api_version);
    kf_write_i32(out, h->correlation_id);
    kf_write_string(out, h->client_id, false);
    if (flexible)
        kf_write_uvarint(out, 0);
}

void kf_response_header_encode(struct wr_bytes *out, int32_t correlation_id, bool flexible)
{
    kf_write_i32(out, correlation_id);
    if (flexible)
        kf_write_uvarint(out, 0);
}

int kf_response_header_decode(struct kf_in *in, bool flexible, int32_t *correlation_id)
{
    *correlation_id = kf_read_i32(in);
    if (flexible)
        kf_skip_tagged_fields(in);
    return in->err ? WR_EPROTO : WR_OK;
}
