/*
 * msgset.c: converting legacy message sets (magic 0/1) to a RecordBatch v2 for the log, and
 * RecordBatches back to magic-1 message sets for old fetchers (msgset.h).
 *
 * Both CRCs are the reflected table-driven kind; only the polynomial differs (IEEE for
 * messages, Castagnoli for batches). Compressed message sets are refused rather than stored
 * as they came: the log keeps RecordBatch v2 only, and unpacking them needs codecs (gzip,
 * snappy, lz4) this plugin does not link.
 */
#include "msgset.h"

#include <string.h>

#include "codec.h"

#define BATCH_HEADER 61       /* RecordBatch v2's fixed fields (storage-backends/log) */
#define BATCH_CRC_START 21    /* the CRC-32C covers attributes to the end */
#define MSG_MIN 14            /* crc, magic, attributes, two null lengths */
#define CODEC_MASK 0x07
#define BATCH_CONTROL 0x20

static uint32_t crc_ieee_table[256], crc_castagnoli_table[256];

static uint32_t crc_update(uint32_t table[256], uint32_t poly, const uint8_t *p, size_t n)
{
    if (!table[1]) /* the loop thread only: first use fills the table */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? c >> 1 ^ poly : c >> 1;
            table[i] = c;
        }
    uint32_t crc = 0xffffffffu;
    while (n--)
        crc = table[(crc ^ *p++) & 0xff] ^ crc >> 8;
    return crc ^ 0xffffffffu;
}

static uint32_t crc_ieee(const uint8_t *p, size_t n)
{
    return crc_update(crc_ieee_table, 0xedb88320u, p, n);
}

static uint32_t crc_castagnoli(const uint8_t *p, size_t n)
{
    return crc_update(crc_castagnoli_table, 0x82f63b78u, p, n);
}

static void store_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t load_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* One legacy message, pointing into the set. */
struct legacy_msg {
    int64_t timestamp;
    struct kf_str key, value;
};

/* Parses the message at in (offset and size first). */
static enum kf_msgset_status legacy_msg_read(struct kf_in *in, struct legacy_msg *m)
{
    kf_read_i64(in); /* the producer's offset, which the log replaces */
    int32_t size = kf_read_i32(in);
    if (in->err || size < MSG_MIN || (size_t)size > kf_remaining(in))
        return KF_MSGSET_CORRUPT;
    struct kf_in body = {in->p, in->p + size, false};
    in->p += size;
    uint32_t crc = (uint32_t)kf_read_i32(&body);
    if (crc != crc_ieee(body.p, kf_remaining(&body)))
        return KF_MSGSET_CORRUPT;
    int8_t magic = kf_read_i8(&body);
    int8_t attributes = kf_read_i8(&body);
    if (magic != 0 && magic != 1)
        return KF_MSGSET_CORRUPT;
    m->timestamp = magic == 1 ? kf_read_i64(&body) : -1;
    m->key = kf_read_bytes(&body, false, true);
    m->value = kf_read_bytes(&body, false, true);
    if (body.err || kf_remaining(&body))
        return KF_MSGSET_CORRUPT;
    if (attributes & CODEC_MASK)
        return KF_MSGSET_COMPRESSED;
    return KF_MSGSET_OK;
}

static void put_varbytes(struct wr_bytes *o, struct kf_str s)
{
    kf_write_varint(o, s.ptr ? s.len : -1);
    if (s.ptr)
        wr_bytes_put(o, s.ptr, (size_t)s.len);
}

enum kf_msgset_status kf_msgset_to_batch(const uint8_t *p, size_t len, struct wr_bytes *out)
{
    /* First pass: check every message, and learn the count and the timestamps. */
    struct kf_in in = {p, p + len, false};
    struct legacy_msg m;
    int32_t count = 0;
    int64_t base_ts = -1, max_ts = -1;
    while (kf_remaining(&in)) {
        enum kf_msgset_status error = legacy_msg_read(&in, &m);
        if (error)
            return error;
        if (!count++)
            base_ts = m.timestamp;
        if (m.timestamp > max_ts)
            max_ts = m.timestamp;
    }
    if (!count)
        return KF_MSGSET_CORRUPT;
    size_t start = out->len;
    if (!wr_bytes_grow(out, BATCH_HEADER))
        return KF_MSGSET_OK;
    struct wr_bytes rec = {0};
    in = (struct kf_in){p, p + len, false};
    for (int32_t i = 0; i < count; i++) {
        legacy_msg_read(&in, &m);
        rec.len = 0;
        kf_write_i8(&rec, 0); /* record attributes */
        /* wrapping arithmetic: a client may send any timestamps */
        kf_write_varlong(&rec, (int64_t)((uint64_t)m.timestamp - (uint64_t)base_ts));
        kf_write_varint(&rec, i);
        put_varbytes(&rec, m.key);
        put_varbytes(&rec, m.value);
        kf_write_varint(&rec, 0); /* no headers */
        if (rec.oom)
            break;
        kf_write_varint(out, (int32_t)rec.len);
        wr_bytes_put(out, rec.p, rec.len);
    }
    wr_bytes_free(&rec);
    if (rec.oom || out->oom) {
        out->oom = true;
        return KF_MSGSET_OK;
    }
    uint8_t *b = out->p + start;
    size_t blen = out->len - start;
    memset(b, 0, BATCH_HEADER);
    store_be(b + 8, blen - 12, 4);               /* batch_length */
    b[16] = 2;                                   /* magic; leader epoch 0, attributes 0 */
    store_be(b + 23, (uint64_t)(count - 1), 4);  /* last_offset_delta */
    store_be(b + 27, (uint64_t)base_ts, 8);
    store_be(b + 35, (uint64_t)max_ts, 8);
    store_be(b + 43, UINT64_MAX, 8);             /* producer_id -1 */
    store_be(b + 51, UINT16_MAX, 2);             /* producer_epoch -1 */
    store_be(b + 53, UINT32_MAX, 4);             /* base_sequence -1 */
    store_be(b + 57, (uint64_t)count, 4);
    store_be(b + 17, crc_castagnoli(b + BATCH_CRC_START, blen - BATCH_CRC_START), 4);
    return KF_MSGSET_OK;
}

/* Writes one magic-1 message. */
static void put_message(struct wr_bytes *o, uint64_t offset, int64_t timestamp,
                        struct kf_str key, struct kf_str value)
{
    kf_write_i64(o, (int64_t)offset);
    size_t size_at = o->len;
    kf_write_i32(o, 0);  /* message_size, below */
    kf_write_i32(o, 0);  /* crc, below */
    size_t crc_from = o->len;
    kf_write_i8(o, 1);   /* magic */
    kf_write_i8(o, 0);   /* attributes: uncompressed, CreateTime */
    kf_write_i64(o, timestamp);
    kf_write_bytes(o, key, false);
    kf_write_bytes(o, value, false);
    if (o->oom)
        return;
    store_be(o->p + size_at, o->len - size_at - 4, 4);
    store_be(o->p + crc_from - 4, crc_ieee(o->p + crc_from, o->len - crc_from), 4);
}

/* Reads a varint length and that many bytes (-1: null) of a record. */
static struct kf_str record_bytes(struct kf_in *in)
{
    int32_t n = kf_read_varint(in);
    struct kf_str s = {NULL, 0};
    if (n < -1 || (n >= 0 && (size_t)n > kf_remaining(in))) {
        in->err = true;
    } else if (n >= 0) {
        s = (struct kf_str){(const char *)in->p, n};
        in->p += n;
    }
    return s;
}

/* Writes the records of one uncompressed batch from `from` on; false if one does not parse
 * (what was written of it is taken back). */
static bool batch_convert(const uint8_t *b, size_t blen, uint64_t from, struct wr_bytes *out,
                          size_t *n)
{
    uint64_t base = load_be(b, 8);
    int64_t base_ts = (int64_t)load_be(b + 27, 8);
    uint32_t count = (uint32_t)load_be(b + 57, 4);
    struct kf_in in = {b + BATCH_HEADER, b + blen, false};
    size_t mark = out->len, written = 0;
    for (uint32_t i = 0; i < count; i++) {
        int32_t rlen = kf_read_varint(&in);
        if (in.err || rlen < 0 || (size_t)rlen > kf_remaining(&in))
            break;
        struct kf_in rec = {in.p, in.p + rlen, false};
        in.p += rlen;
        kf_read_i8(&rec); /* record attributes: unused */
        int64_t ts = (int64_t)((uint64_t)base_ts + (uint64_t)kf_read_varlong(&rec));
        int32_t delta = kf_read_varint(&rec);
        struct kf_str key = record_bytes(&rec);
        struct kf_str value = record_bytes(&rec);
        if (rec.err || delta < 0) {
            in.err = true;
            break;
        }
        if (base + (uint64_t)delta >= from) {
            put_message(out, base + (uint64_t)delta, ts, key, value);
            written++;
        }
    }
    if (in.err || kf_remaining(&in)) {
        out->len = mark;
        return false;
    }
    *n += written;
    return true;
}

enum kf_msgset_status kf_msgset_from_batches(const uint8_t *p, size_t len, uint64_t from,
                               struct wr_bytes *out)
{
    size_t n = 0;
    while (len >= BATCH_HEADER) {
        size_t blen = 12 + (size_t)load_be(p + 8, 4);
        if (blen > len)
            break; /* cut off by max_bytes: the next fetch starts there */
        enum kf_msgset_status error = KF_MSGSET_OK;
        uint16_t attributes = (uint16_t)load_be(p + 21, 2);
        if (blen < BATCH_HEADER || p[16] != 2)
            error = KF_MSGSET_CORRUPT;
        else if (attributes & CODEC_MASK)
            error = KF_MSGSET_COMPRESSED;
        else if (!(attributes & BATCH_CONTROL) && !batch_convert(p, blen, from, out, &n))
            error = KF_MSGSET_CORRUPT;
        if (error)
            return n ? KF_MSGSET_OK : error;
        p += blen;
        len -= blen;
    }
    return KF_MSGSET_OK;
}
