/*
 * compress.c: decompressing record batches (compress.h) with Debian's zlib, snappy, lz4 and
 * zstd. The producer chose the codec and the sizes, so nothing it says is trusted: every
 * decoder writes into a buffer bounded by the caller's limit, and one byte past it is
 * a decompression bomb, refused before more memory is spent.
 */
#include "compress.h"

#include <string.h>

#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "batch.h"

#define LZ_CHUNK (64u << 10) /* output room offered to a streaming decoder at a time */

static const char *const codec_names[] = {"none", "gzip", "snappy", "lz4", "zstd"};

/* ---- streaming decoders: gzip, lz4, zstd --------------------------------------------- */

/* One step of a streaming decoder: reads from in[0..*in_len) and writes to out[0..*out_len),
 * then sets both to the bytes it used. Returns 1 when a frame (or gzip member) ended there,
 * 0 when it needs more, -1 for bad data with *why saying what. */
typedef int lz_step_fn(void *dec, const uint8_t *in, size_t *in_len, uint8_t *out,
                       size_t *out_len, const char **why);

static int gzip_step(void *dec, const uint8_t *in, size_t *in_len, uint8_t *out,
                     size_t *out_len, const char **why)
{
    z_stream *zs = dec;
    /* zlib counts in uInt; the offered sizes are LZ_CHUNK or the input left, clamped. */
    zs->next_in = (Bytef *)(uintptr_t)in;
    zs->avail_in = *in_len > UINT32_MAX ? UINT32_MAX : (uInt)*in_len;
    zs->next_out = out;
    zs->avail_out = (uInt)*out_len;
    uInt in_before = zs->avail_in;
    int rc = inflate(zs, Z_NO_FLUSH);
    *in_len = in_before - zs->avail_in;
    *out_len -= zs->avail_out;
    if (rc == Z_STREAM_END) {
        inflateReset(zs); /* another member may follow, as Java's GZIPInputStream reads */
        return 1;
    }
    if (rc == Z_OK || rc == Z_BUF_ERROR) /* Z_BUF_ERROR: no progress, input ran out */
        return 0;
    *why = zs->msg ? zs->msg : "corrupt data";
    return -1;
}

static int lz4_step(void *dec, const uint8_t *in, size_t *in_len, uint8_t *out,
                    size_t *out_len, const char **why)
{
    size_t hint = LZ4F_decompress(dec, out, out_len, in, in_len, NULL);
    if (LZ4F_isError(hint)) {
        *why = LZ4F_getErrorName(hint);
        return -1;
    }
    return hint == 0; /* 0: the frame is complete and flushed */
}

static int zstd_step(void *dec, const uint8_t *in, size_t *in_len, uint8_t *out,
                     size_t *out_len, const char **why)
{
    ZSTD_inBuffer zin = {in, *in_len, 0};
    ZSTD_outBuffer zout = {out, *out_len, 0};
    size_t rc = ZSTD_decompressStream(dec, &zout, &zin);
    *in_len = zin.pos;
    *out_len = zout.pos;
    if (ZSTD_isError(rc)) {
        *why = ZSTD_getErrorName(rc);
        return -1;
    }
    return rc == 0; /* 0: a frame is complete and flushed */
}

/* Runs step over in[0..n) until the input is used up at the end of a frame, appending what
 * it writes to out, at most limit bytes. */
static int lz_stream(lz_step_fn *step, void *dec, const char *codec, const uint8_t *in,
                     size_t n, struct wr_bytes *out, size_t limit, struct wr_error *err)
{
    size_t start = out->len;
    for (;;) {
        size_t made = out->len - start;
        size_t room = limit - made + 1 < LZ_CHUNK ? limit - made + 1 : LZ_CHUNK;
        uint8_t *p = wr_bytes_grow(out, room);
        if (!p)
            return wr_error_set(err, WR_ENOMEM, "out of memory decompressing %s records",
                                codec);
        size_t in_len = n, out_len = room;
        const char *why = NULL;
        int rc = step(dec, in, &in_len, p, &out_len, &why);
        out->len -= room - out_len;
        in += in_len;
        n -= in_len;
        if (rc < 0)
            return wr_error_set(err, WR_EPROTO, "%s-compressed records are corrupt: %s",
                                codec, why);
        if (out->len - start > limit)
            return wr_error_set(err, WR_EPROTO,
                                "%s-compressed records inflate past the limit of %zu bytes "
                                "(max_message_size)", codec, limit);
        if (rc == 1 && n == 0)
            return WR_OK;
        if (in_len == 0 && out_len == 0)
            return wr_error_set(err, WR_EPROTO, "%s-compressed records are cut short", codec);
    }
}

static int gzip_decode(const uint8_t *in, size_t n, struct wr_bytes *out, size_t limit,
                       struct wr_error *err)
{
    z_stream zs = {0};
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) /* 16: the gzip wrapper, not zlib's */
        return wr_error_set(err, WR_ENOMEM, "out of memory decompressing gzip records");
    int rc = lz_stream(gzip_step, &zs, "gzip", in, n, out, limit, err);
    inflateEnd(&zs);
    return rc;
}

static int lz4_decode(const uint8_t *in, size_t n, struct wr_bytes *out, size_t limit,
                      struct wr_error *err)
{
    LZ4F_dctx *dctx = NULL;
    if (LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)))
        return wr_error_set(err, WR_ENOMEM, "out of memory decompressing lz4 records");
    int rc = lz_stream(lz4_step, dctx, "lz4", in, n, out, limit, err);
    LZ4F_freeDecompressionContext(dctx);
    return rc;
}

static int zstd_decode(const uint8_t *in, size_t n, struct wr_bytes *out, size_t limit,
                       struct wr_error *err)
{
    /* zstd's default window limit (2^27) also bounds the memory one frame can ask for. */
    ZSTD_DStream *ds = ZSTD_createDStream();
    if (!ds)
        return wr_error_set(err, WR_ENOMEM, "out of memory decompressing zstd records");
    int rc = lz_stream(zstd_step, ds, "zstd", in, n, out, limit, err);
    ZSTD_freeDStream(ds);
    return rc;
}

/* ---- snappy: one block, or xerial's framed blocks ------------------------------------ */

static const uint8_t xerial_magic[8] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0};
#define XERIAL_HEADER 16u /* the magic, then version and compatible version, 32 bits each */

/* One raw snappy block; its header claims its size, checked against the limit first. */
static int snappy_block(const uint8_t *in, size_t n, struct wr_bytes *out, size_t limit,
                        struct wr_error *err)
{
    size_t size = 0;
    if (snappy_uncompressed_length((const char *)in, n, &size) != SNAPPY_OK)
        return wr_error_set(err, WR_EPROTO, "snappy-compressed records are corrupt: bad "
                            "length header");
    if (size > limit)
        return wr_error_set(err, WR_EPROTO,
                            "snappy-compressed records claim %zu bytes, past the limit of %zu "
                            "bytes (max_message_size)", size, limit);
    uint8_t *p = wr_bytes_grow(out, size);
    if (!p)
        return wr_error_set(err, WR_ENOMEM, "out of memory decompressing snappy records");
    if (snappy_uncompress((const char *)in, n, (char *)p, &size) != SNAPPY_OK)
        return wr_error_set(err, WR_EPROTO, "snappy-compressed records are corrupt or cut "
                            "short");
    return WR_OK;
}

static int snappy_decode(const uint8_t *in, size_t n, struct wr_bytes *out, size_t limit,
                         struct wr_error *err)
{
    if (n < sizeof xerial_magic || memcmp(in, xerial_magic, sizeof xerial_magic) != 0)
        return snappy_block(in, n, out, limit, err);
    if (n < XERIAL_HEADER)
        return wr_error_set(err, WR_EPROTO, "snappy-compressed records are cut short: "
                            "xerial header of %zu bytes", n);
    size_t start = out->len;
    for (size_t at = XERIAL_HEADER; at < n;) {
        if (n - at < 4)
            return wr_error_set(err, WR_EPROTO, "snappy-compressed records are cut short: "
                                "xerial block length at byte %zu", at);
        uint32_t block = (uint32_t)in[at] << 24 | (uint32_t)in[at + 1] << 16 |
                         (uint32_t)in[at + 2] << 8 | in[at + 3];
        at += 4;
        if (block > n - at)
            return wr_error_set(err, WR_EPROTO, "snappy-compressed records are cut short: "
                                "xerial block of %u bytes at byte %zu, %zu left", block, at,
                                n - at);
        int rc = snappy_block(in + at, block, out, limit - (out->len - start), err);
        if (rc != WR_OK)
            return rc;
        at += block;
    }
    return WR_OK;
}

/* ---- the batch ----------------------------------------------------------------------- */

int lb_decompress(const uint8_t *batch, size_t len, size_t limit, struct wr_buf **out,
                  struct wr_error *err)
{
    *out = NULL;
    struct lb_header h;
    if (!lb_header_read(batch, len, &h))
        return wr_error_set(err, WR_EPROTO, "record batch too short: %zu bytes", len);
    unsigned codec = h.attributes & LB_ATTR_COMPRESSION;
    /* batchLength is 32 bits: the records may fill at most what it can describe. */
    size_t max = INT32_MAX - (LB_HEADER_SIZE - LB_LOG_OVERHEAD);
    if (limit > max)
        limit = max;
    const uint8_t *in = batch + LB_HEADER_SIZE;
    size_t n = len - LB_HEADER_SIZE;
    struct wr_bytes plain = {0};
    wr_bytes_put(&plain, batch, LB_HEADER_SIZE);
    if (plain.oom)
        return wr_error_set(err, WR_ENOMEM, "out of memory decompressing records");
    int rc;
    switch (codec) {
    case 1: rc = gzip_decode(in, n, &plain, limit, err); break;
    case 2: rc = snappy_decode(in, n, &plain, limit, err); break;
    case 3: rc = lz4_decode(in, n, &plain, limit, err); break;
    case 4: rc = zstd_decode(in, n, &plain, limit, err); break;
    default:
        rc = wr_error_set(err, WR_EPROTO, "record batch compression codec %u is unknown: "
                          "Kafka defines 0 to 4", codec);
        break;
    }
    if (rc == WR_OK && !(*out = wr_buf_new(plain.len)))
        rc = wr_error_set(err, WR_ENOMEM, "out of memory for %s records", codec_names[codec]);
    if (rc == WR_OK) {
        memcpy((*out)->data, plain.p, plain.len);
        (*out)->len = plain.len;
        lb_reframe((*out)->data, plain.len, (uint16_t)(h.attributes & ~LB_ATTR_COMPRESSION));
    }
    wr_bytes_free(&plain);
    return rc;
}
