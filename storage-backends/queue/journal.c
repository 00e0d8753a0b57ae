/*
 * journal.c: encoding and decoding of the `queue` backend's journal records (journal.h).
 *
 * An enqueue record holds a fixed prefix (sequence number, body length, priority), the
 * message's metadata in the core's encoding (wr_msg_meta_encode) and the body last, so the
 * body is the tail of the record and comes back as a slice of the buffer it was read into.
 */
#include "journal.h"

#include <stdlib.h>
#include <string.h>

#include <zlib.h>


uint32_t qj_crc(const uint8_t *p, size_t len)
{
    uLong crc = crc32(0L, Z_NULL, 0);
    while (len > 0) {
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        crc = crc32(crc, p, n);
        p += n;
        len -= n;
    }
    return (uint32_t)crc;
}

/* ---- header ---------------------------------------------------------------------------- */

void qj_header_encode(uint8_t out[QJ_HEADER_SIZE], uint64_t first_seq)
{
    memcpy(out, QJ_MAGIC, 4);
    wr_le32_put(out + 4, QJ_VERSION);
    wr_le64_put(out + 8, first_seq);
}

int qj_header_check(const uint8_t in[QJ_HEADER_SIZE], const char *path, uint64_t *first_seq,
                    struct wr_error *err)
{
    if (memcmp(in, QJ_MAGIC, 4) != 0)
        return wr_error_set(err, WR_EPROTO,
                            "queue storage: %s is not a queue journal segment (bad magic); "
                            "move it out of the queue's directory", path);
    uint32_t version = wr_le32_get(in + 4);
    if (version != QJ_VERSION)
        return wr_error_set(err, WR_EPROTO,
                            "queue storage: %s has journal format version %u, this build reads "
                            "version %u; use a matching warren", path, version, QJ_VERSION);
    *first_seq = wr_le64_get(in + 8);
    return WR_OK;
}

/* ---- encoding -------------------------------------------------------------------------- */

/* Fills in len and crc of the record that o holds. */
static int out_finish(struct wr_bytes *o)
{
    if (o->oom)
        return WR_ENOMEM;
    size_t len = o->len - QJ_RECORD_HEAD;
    if (len > QJ_MAX_PAYLOAD)
        return WR_ELIMIT;
    wr_le32_put(o->p + 4, (uint32_t)len);
    wr_le32_put(o->p, qj_crc(o->p + 4, o->len - 4));
    return WR_OK;
}

static void out_start(struct wr_bytes *o, enum qj_type type)
{
    o->len = 0;
    o->oom = false;
    wr_bytes_grow(o, 8);
    wr_bytes_u8(o, (uint8_t)type);
}

int qj_encode_enqueue(struct wr_bytes *o, uint64_t seq, const struct wr_msg *msg)
{
    if (msg->body.len > QJ_MAX_PAYLOAD)
        return WR_ELIMIT;
    const struct wr_props *pr = &msg->props;
    out_start(o, QJ_ENQUEUE);
    wr_bytes_u64(o, seq);
    wr_bytes_u64(o, msg->body.len);
    wr_bytes_u8(o, (pr->flags & WR_PROP_PRIORITY) != 0);
    wr_bytes_u8(o, pr->priority);
    wr_msg_meta_encode(o, msg);
    size_t body_len = 0;
    const uint8_t *body = wr_msg_body(msg, &body_len);
    wr_bytes_put(o, body, body_len);
    return out_finish(o);
}

int qj_encode_ack(struct wr_bytes *o, uint64_t seq)
{
    out_start(o, QJ_ACK);
    wr_bytes_u64(o, seq);
    return out_finish(o);
}

int qj_encode_deliver(struct wr_bytes *o, const uint64_t *seqs, size_t n)
{
    out_start(o, QJ_DELIVER);
    for (size_t i = 0; i < n; i++)
        wr_bytes_u64(o, seqs[i]);
    return out_finish(o);
}

/* ---- decoding -------------------------------------------------------------------------- */

bool qj_record_ok(const uint8_t *rec, uint32_t len)
{
    return wr_le32_get(rec + 4) == len && qj_crc(rec + 4, (size_t)len + 5) == wr_le32_get(rec);
}

bool qj_enqueue_info(const uint8_t *payload, uint32_t len, struct qj_enqueue_info *out)
{
    if (len < QJ_ENQUEUE_PREFIX)
        return false;
    out->seq = wr_le64_get(payload);
    out->body_len = wr_le64_get(payload + 8);
    out->has_priority = payload[16] != 0;
    out->priority = payload[17];
    return out->body_len <= len - QJ_ENQUEUE_PREFIX;
}

int qj_decode_msg(struct wr_buf *buf, size_t off, struct wr_msg **out, struct wr_error *err)
{
    const uint8_t *rec = buf->data + off;
    uint32_t len = wr_le32_get(rec + 4);
    struct qj_enqueue_info info;
    if (rec[8] != QJ_ENQUEUE || !qj_enqueue_info(rec + QJ_RECORD_HEAD, len, &info))
        return wr_error_set(err, WR_EPROTO, "queue storage: not an enqueue record");
    size_t meta_off = off + QJ_RECORD_HEAD + QJ_ENQUEUE_PREFIX;
    size_t meta_len = len - QJ_ENQUEUE_PREFIX - (size_t)info.body_len;
    struct wr_slice body = {buf, meta_off + meta_len, (size_t)info.body_len};
    int rc = wr_msg_meta_decode(buf->data + meta_off, meta_len, body, out, err);
    if (rc != WR_OK)
        wr_error_wrap(err, "queue storage");
    return rc;
}
