/*
 * batch.c: Kafka's RecordBatch v2, read, checked, walked and written (batch.h). Every reader
 * here trusts nothing: a batch whose CRC passed can still hold records its producer framed
 * wrong, and a walk over them must end in WR_EPROTO, never in a read past the batch.
 */
#include "batch.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define CRC_OFFSET 17u       /* crc; what it covers starts 4 bytes later, at attributes */
#define CRC_START 21u
#define MAGIC_OFFSET 16u
#define MIN_RECORD_SIZE 7u   /* one byte each: length, attributes, the two deltas, key and
                              * value lengths, header count */
#define VARINT_MAX 5u
#define VARLONG_MAX 10u

/* ---- CRC-32C ------------------------------------------------------------------------- */

/* Slice-by-8: crc_table[k][b] is the CRC of byte b followed by k zero bytes, so eight input
 * bytes fold into the CRC with eight lookups and no dependency between them. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_table_once = PTHREAD_ONCE_INIT;

static void crc_table_init(void)
{
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int i = 0; i < 8; i++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1)));
        crc_table[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t c = crc_table[k - 1][b];
            crc_table[k][b] = (c >> 8) ^ crc_table[0][c & 0xff];
        }
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t n)
{
    pthread_once(&crc_table_once, crc_table_init);
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
            crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p,
                                                            size_t n)
{
    uint64_t c = ~crc;
    /* Aligned 8-byte loads; the instruction takes the bytes in little-endian order, as the
     * reflected CRC wants them. */
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

uint32_t lb_crc32c(uint32_t crc, const void *p, size_t n)
{
#if defined(__x86_64__)
    if (__builtin_cpu_supports("sse4.2"))
        return crc32c_hw(crc, p, n);
#endif
    return crc32c_sw(crc, p, n);
}

/* ---- the fixed header ---------------------------------------------------------------- */

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

static void put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

bool lb_header_read(const uint8_t *p, size_t avail, struct lb_header *h)
{
    if (avail < LB_HEADER_SIZE)
        return false;
    h->base_offset = be64(p);
    h->batch_length = be32(p + 8);
    h->partition_leader_epoch = (int32_t)be32(p + 12);
    h->crc = be32(p + 17);
    h->attributes = be16(p + 21);
    h->last_offset_delta = be32(p + 23);
    h->base_timestamp = (int64_t)be64(p + 27);
    h->max_timestamp = (int64_t)be64(p + 35);
    h->producer_id = (int64_t)be64(p + 43);
    h->producer_epoch = (int16_t)be16(p + 51);
    h->base_sequence = (int32_t)be32(p + 53);
    h->record_count = be32(p + 57);
    return true;
}

int lb_check(const uint8_t *p, size_t len, struct lb_header *h, struct wr_error *err)
{
    if (!lb_header_read(p, len, h))
        return wr_error_set(err, WR_EPROTO,
                            "record batch too short: %zu bytes, its header alone is %u", len,
                            LB_HEADER_SIZE);
    if ((uint64_t)LB_LOG_OVERHEAD + h->batch_length != len)
        return wr_error_set(err, WR_EPROTO,
                            "record batch length mismatch: batchLength %u means %llu bytes, "
                            "got %zu", h->batch_length,
                            (unsigned long long)LB_LOG_OVERHEAD + h->batch_length, len);
    if (p[MAGIC_OFFSET] != 2)
        return wr_error_set(err, WR_EPROTO,
                            "record batch magic %d is not 2: only RecordBatch v2 is supported",
                            (int8_t)p[MAGIC_OFFSET]);
    uint32_t crc = lb_crc32c(0, p + CRC_START, len - CRC_START);
    if (crc != h->crc)
        return wr_error_set(err, WR_EPROTO,
                            "record batch CRC mismatch: the batch says 0x%08x, its bytes give "
                            "0x%08x", h->crc, crc);
    if (h->last_offset_delta > INT32_MAX)
        return wr_error_set(err, WR_EPROTO, "record batch lastOffsetDelta %d is negative",
                            (int32_t)h->last_offset_delta);
    /* Offsets within a batch are distinct and at most lastOffsetDelta apart, and an
     * uncompressed record takes at least MIN_RECORD_SIZE bytes. */
    size_t records_size = len - LB_HEADER_SIZE;
    bool compressed = h->attributes & LB_ATTR_COMPRESSION;
    if ((uint64_t)h->record_count > (uint64_t)h->last_offset_delta + 1 ||
        (!compressed && (uint64_t)h->record_count * MIN_RECORD_SIZE > records_size))
        return wr_error_set(err, WR_EPROTO,
                            "record batch record count %d is implausible: lastOffsetDelta "
                            "%u, %zu bytes of records", (int32_t)h->record_count,
                            h->last_offset_delta, records_size);
    return WR_OK;
}

void lb_set_base_offset(uint8_t *p, uint64_t base)
{
    put_be64(p, base);
}

void lb_reframe(uint8_t *p, size_t len, uint16_t attributes)
{
    put_be32(p + LB_LENGTH_OFFSET, (uint32_t)(len - LB_LOG_OVERHEAD));
    put_be16(p + 21, attributes);
    put_be32(p + CRC_OFFSET, lb_crc32c(0, p + CRC_START, len - CRC_START));
}

/* ---- varints ------------------------------------------------------------------------- */

static size_t varint_size(int64_t v)
{
    uint64_t zz = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 1;
    while (zz >= 0x80) {
        zz >>= 7;
        n++;
    }
    return n;
}

/* Writes v zigzag-encoded at p; returns the bytes written (varint_size(v)). */
static size_t put_varint(uint8_t *p, int64_t v)
{
    uint64_t zz = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 0;
    while (zz >= 0x80) {
        p[n++] = (uint8_t)(zz | 0x80);
        zz >>= 7;
    }
    p[n++] = (uint8_t)zz;
    return n;
}

/* A cursor over [p, end): the first bad read sets bad, and every later read returns 0. */
struct cursor {
    const uint8_t *p;
    const uint8_t *end;
    bool bad;
};

/* A zigzag varint of at most max bytes whose value fits bits bits. */
static int64_t get_varint(struct cursor *c, size_t max, unsigned bits)
{
    uint64_t zz = 0;
    for (size_t i = 0; !c->bad && i < max; i++) {
        if (c->p >= c->end)
            break;
        uint8_t b = *c->p++;
        unsigned shift = 7 * (unsigned)i;
        if (shift + 7 > bits && (b & 0x7f) >> (bits - shift))
            break; /* more bits than the value has */
        zz |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return (int64_t)((zz >> 1) ^ (0 - (zz & 1)));
    }
    c->bad = true;
    return 0;
}

static int32_t get_varint32(struct cursor *c)
{
    return (int32_t)get_varint(c, VARINT_MAX, 32);
}

/* A length-prefixed byte string: *out NULL for length -1 (when null_ok), bounded by c->end. */
static int32_t get_blob(struct cursor *c, bool null_ok, const uint8_t **out)
{
    int32_t n = get_varint32(c);
    *out = NULL;
    if (c->bad || n < -1 || (n == -1 && !null_ok) || (n >= 0 && n > c->end - c->p)) {
        c->bad = true;
        return 0;
    }
    if (n >= 0) {
        *out = c->p;
        c->p += n;
    }
    return n;
}

/* ---- encoding ------------------------------------------------------------------------ */

static size_t blob_size(int64_t len)
{
    return varint_size(len) + (len > 0 ? (size_t)len : 0);
}

static uint8_t *put_blob(uint8_t *p, const void *src, int64_t len)
{
    p += put_varint(p, len);
    if (len > 0) {
        memcpy(p, src, (size_t)len);
        p += len;
    }
    return p;
}

void lb_header_put(struct wr_bytes *out, const void *name, size_t name_len, const void *value,
                   size_t value_len)
{
    int64_t vlen = value ? (int64_t)value_len : -1;
    if (name_len > INT32_MAX || value_len > INT32_MAX) {
        out->oom = true; /* no record can hold it */
        return;
    }
    uint8_t *p = wr_bytes_grow(out, blob_size((int64_t)name_len) + blob_size(vlen));
    if (p)
        put_blob(put_blob(p, name, (int64_t)name_len), value, vlen);
}

int lb_record_put(struct wr_bytes *out, size_t offset_delta, int64_t timestamp_delta,
                  struct wr_str key, struct wr_str value, const struct wr_bytes *headers,
                  uint32_t count, struct wr_error *err)
{
    int64_t key_len = key.ptr ? (int64_t)key.len : -1;
    int64_t value_len = value.ptr ? (int64_t)value.len : -1;
    uint64_t size = 1 + varint_size(timestamp_delta) + varint_size((int64_t)offset_delta) +
                    blob_size(key_len) + blob_size(value_len) + varint_size(count) +
                    headers->len;
    if (key.len > INT32_MAX || value.len > INT32_MAX || size > INT32_MAX)
        return wr_error_set(err, WR_EINVAL,
                            "message of %zu bytes is too large for a Kafka record", value.len);
    uint8_t *p = wr_bytes_grow(out, varint_size((int64_t)size) + size);
    if (!p)
        return wr_error_set(err, WR_ENOMEM, "out of memory encoding a record batch");
    p += put_varint(p, (int64_t)size);
    *p++ = 0; /* attributes */
    p += put_varint(p, timestamp_delta);
    p += put_varint(p, (int64_t)offset_delta);
    p = put_blob(p, key.ptr, key_len);
    p = put_blob(p, value.ptr, value_len);
    p += put_varint(p, count);
    if (headers->len)
        memcpy(p, headers->p, headers->len);
    return WR_OK;
}

void lb_batch_finish(uint8_t *p, size_t len, uint32_t count, int64_t base_ts, int64_t max_ts)
{
    put_be64(p, 0);
    put_be32(p + 12, UINT32_MAX);                 /* partitionLeaderEpoch: none */
    p[MAGIC_OFFSET] = 2;
    put_be32(p + 23, count - 1);
    put_be64(p + 27, (uint64_t)base_ts);
    put_be64(p + 35, (uint64_t)max_ts);
    put_be64(p + 43, UINT64_MAX);                 /* producerId, Epoch, baseSequence: none */
    put_be16(p + 51, UINT16_MAX);
    put_be32(p + 53, UINT32_MAX);
    put_be32(p + 57, count);
    lb_reframe(p, len, 0);                        /* attributes: uncompressed, CreateTime */
}

/* ---- walking records ----------------------------------------------------------------- */

/* Parses the record at c->p, which must end by c->end; on success c->p is past it. */
static bool record_parse(struct cursor *c, const struct lb_header *h, struct lb_record *r)
{
    int32_t size = get_varint32(c);
    if (c->bad || size < 1 || size > c->end - c->p)
        return false;
    struct cursor rc = {c->p + 1, c->p + size, false}; /* past attributes: unused */
    int64_t timestamp_delta = get_varint(&rc, VARLONG_MAX, 64);
    int32_t offset_delta = get_varint32(&rc);
    r->key_len = get_blob(&rc, true, &r->key);
    r->value_len = get_blob(&rc, true, &r->value);
    int32_t header_count = get_varint32(&rc);
    r->headers = rc.p;
    for (int32_t i = 0; !rc.bad && i < header_count; i++) {
        const uint8_t *blob;
        get_blob(&rc, false, &blob);
        get_blob(&rc, true, &blob);
    }
    if (rc.bad || header_count < 0 || rc.p != rc.end || offset_delta < 0 ||
        (uint32_t)offset_delta > h->last_offset_delta)
        return false;
    r->header_count = (uint32_t)header_count;
    r->offset = h->base_offset + (uint32_t)offset_delta;
    r->timestamp = (int64_t)((uint64_t)h->base_timestamp + (uint64_t)timestamp_delta);
    r->end = rc.end;
    c->p = rc.end;
    return true;
}

/* Walks every record once, so a malformed batch fails before its first record is used: each
 * record well framed, offsets increasing, exactly record_count of them filling the batch. */
static int records_check(const uint8_t *batch, size_t len, const struct lb_header *h,
                         struct wr_error *err)
{
    struct cursor c = {batch + LB_HEADER_SIZE, batch + len, false};
    uint64_t prev_delta = 0;
    for (uint32_t i = 0; i < h->record_count; i++) {
        struct lb_record r = {0};
        size_t at = (size_t)(c.p - batch);
        if (c.p == c.end)
            return wr_error_set(err, WR_EPROTO,
                                "record batch says %u records but holds %u", h->record_count,
                                i);
        if (!record_parse(&c, h, &r))
            return wr_error_set(err, WR_EPROTO,
                                "record %u of the batch (byte %zu) is malformed", i, at);
        uint64_t delta = r.offset - h->base_offset;
        if (i > 0 && delta <= prev_delta)
            return wr_error_set(err, WR_EPROTO,
                                "record %u of the batch does not follow the previous offset",
                                i);
        prev_delta = delta;
    }
    if (c.p != c.end)
        return wr_error_set(err, WR_EPROTO,
                            "record batch says %u records but has %td more bytes after them",
                            h->record_count, c.end - c.p);
    return WR_OK;
}

int lb_record_next(const uint8_t *batch, size_t len, const uint8_t **pos,
                   struct lb_record *r, struct wr_error *err)
{
    struct lb_header h;
    if (!lb_header_read(batch, len, &h))
        return wr_error_set(err, WR_EPROTO, "record batch too short: %zu bytes", len);
    if (h.attributes & LB_ATTR_COMPRESSION)
        return wr_error_set(err, WR_EPROTO,
                            "record batch is compressed (codec %u): its records cannot be "
                            "read without decompressing", h.attributes & LB_ATTR_COMPRESSION);
    const uint8_t *end = batch + len;
    if (!*pos) {
        int rc = records_check(batch, len, &h, err);
        if (rc != WR_OK)
            return rc;
        *pos = batch + LB_HEADER_SIZE;
    }
    if (*pos < batch + LB_HEADER_SIZE || *pos > end)
        return wr_error_set(err, WR_EPROTO, "record position outside the batch");
    if (*pos == end)
        return 0;
    struct cursor c = {*pos, end, false};
    if (!record_parse(&c, &h, r))
        return wr_error_set(err, WR_EPROTO, "malformed record at byte %td of the batch",
                            *pos - batch);
    *pos = c.p;
    return 1;
}

int lb_header_next(const struct lb_record *r, const uint8_t **pos, const uint8_t **name,
                   int32_t *name_len, const uint8_t **value, int32_t *value_len)
{
    if (!*pos)
        *pos = r->headers;
    /* The headers are the record's last field, so they end where it does. */
    if (*pos == r->end)
        return 0;
    struct cursor c = {*pos, r->end, *pos > r->end};
    *name_len = get_blob(&c, false, name);
    *value_len = get_blob(&c, true, value);
    if (c.bad)
        return WR_EPROTO;
    *pos = c.p;
    return 1;
}
