/*
 * kafka_msgset_test.c: the Kafka transport's legacy message sets (plugins/kafka/msgset.c,
 * compiled in with the codec's primitives): magic 0/1 sets built byte by byte as an old
 * producer writes them, converted to a RecordBatch v2 that the log storage's own checker
 * (storage-backends/log/batch.c, compiled in) accepts and reads back; batches converted
 * back to magic-1 sets from an offset; and broken input (CRCs, magics, compression, every
 * truncation) that must fail cleanly.
 */
#include "../../plugins/kafka/codec.c"
#include "../../plugins/kafka/msgset.c"
#include "../../storage-backends/log/batch.c"

#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

/* ---- building legacy message sets ---------------------------------------------------- */

struct test_msg {
    int8_t magic;
    int8_t attributes;
    int64_t timestamp;
    const char *key, *value; /* NULL: null */
};

static void put_test_blob(struct wr_bytes *o, const char *s)
{
    kf_write_bytes(o, s ? kf_str_c(s) : (struct kf_str){NULL, 0}, false);
}

/* Appends one message with offset `offset` and a correct CRC. */
static void put_legacy(struct wr_bytes *o, int64_t offset, const struct test_msg *m)
{
    kf_write_i64(o, offset);
    size_t size_at = o->len;
    kf_write_i32(o, 0);
    kf_write_i32(o, 0);
    size_t from = o->len;
    kf_write_i8(o, m->magic);
    kf_write_i8(o, m->attributes);
    if (m->magic == 1)
        kf_write_i64(o, m->timestamp);
    put_test_blob(o, m->key);
    put_test_blob(o, m->value);
    cr_assert(!o->oom);
    store_be(o->p + size_at, o->len - size_at - 4, 4);
    store_be(o->p + from - 4, crc_ieee(o->p + from, o->len - from), 4);
}

static const struct test_msg three[] = {
    {1, 0, 1700000000500, "k1", "first"},
    {1, 0, 1700000000100, NULL, ""},
    {1, 0, 1700000000900, "", NULL},
};

static struct wr_bytes legacy_set(const struct test_msg *msgs, size_t n)
{
    struct wr_bytes o = {0};
    for (size_t i = 0; i < n; i++)
        put_legacy(&o, (int64_t)i, &msgs[i]);
    return o;
}

static void assert_blob(const uint8_t *p, int32_t len, const char *want, const char *what)
{
    if (!want) {
        cr_assert_null(p, "%s: expected null", what);
        return;
    }
    cr_assert_not_null(p, "%s: expected \"%s\", got null", what, want);
    cr_assert_eq((size_t)len, strlen(want), "%s length", what);
    cr_assert(!memcmp(p, want, (size_t)len), "%s bytes", what);
}

/* Checks batch b as the log would, with base offset base, against msgs. */
static void assert_batch(uint8_t *b, size_t len, uint64_t base, const struct test_msg *msgs,
                         size_t n)
{
    struct lb_header h;
    struct wr_error err = {0};
    lb_set_base_offset(b, base);
    cr_assert_eq(lb_check(b, len, &h, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(h.record_count, n);
    cr_assert_eq(h.last_offset_delta, n - 1);
    cr_assert_eq(h.attributes, 0);
    cr_assert_eq(h.producer_id, -1);
    cr_assert_eq(h.producer_epoch, -1);
    cr_assert_eq(h.base_sequence, -1);
    const uint8_t *pos = NULL;
    struct lb_record r;
    size_t i = 0;
    int rc;
    while ((rc = lb_record_next(b, len, &pos, &r, &err)) == 1) {
        cr_assert_lt(i, n);
        cr_assert_eq(r.offset, base + i);
        cr_assert_eq(r.timestamp, msgs[i].magic == 1 ? msgs[i].timestamp : -1);
        assert_blob(r.key, r.key_len, msgs[i].key, "key");
        assert_blob(r.value, r.value_len, msgs[i].value, "value");
        cr_assert_eq(r.header_count, 0);
        i++;
    }
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(i, n);
}

/* ---- CRCs ---------------------------------------------------------------------------- */

Test(msgset, crc_check_values)
{
    const uint8_t *s = (const uint8_t *)"123456789";
    cr_assert_eq(crc_ieee(s, 9), 0xCBF43926u);
    cr_assert_eq(crc_castagnoli(s, 9), 0xE3069283u);
    cr_assert_eq(crc_castagnoli(s, 9), lb_crc32c(0, s, 9), "agrees with the log storage");
}

/* ---- message set -> RecordBatch -------------------------------------------------------- */

Test(msgset, magic1_set_becomes_a_batch_the_log_accepts)
{
    struct wr_bytes set = legacy_set(three, 3);
    struct wr_bytes out = {0};
    cr_assert_eq(kf_msgset_to_batch(set.p, set.len, &out), KF_MSGSET_OK);
    struct lb_header h;
    cr_assert(lb_header_read(out.p, out.len, &h));
    cr_assert_eq(h.base_timestamp, 1700000000500);
    cr_assert_eq(h.max_timestamp, 1700000000900);
    assert_batch(out.p, out.len, 42, three, 3);
    wr_bytes_free(&set);
    wr_bytes_free(&out);
}

Test(msgset, magic0_messages_have_no_timestamp)
{
    const struct test_msg m[] = {{0, 0, 0, "a", "b"}, {0, 0, 0, NULL, "c"}};
    struct wr_bytes set = legacy_set(m, 2);
    struct wr_bytes out = {0};
    cr_assert_eq(kf_msgset_to_batch(set.p, set.len, &out), KF_MSGSET_OK);
    assert_batch(out.p, out.len, 0, m, 2);
    wr_bytes_free(&set);
    wr_bytes_free(&out);
}

/* The converter appends: what out held before stays. */
Test(msgset, appends_after_what_out_holds)
{
    struct wr_bytes set = legacy_set(three, 1);
    struct wr_bytes out = {0};
    memcpy(wr_bytes_grow(&out, 3), "xyz", 3);
    cr_assert_eq(kf_msgset_to_batch(set.p, set.len, &out), KF_MSGSET_OK);
    cr_assert(!memcmp(out.p, "xyz", 3));
    assert_batch(out.p + 3, out.len - 3, 7, three, 1);
    wr_bytes_free(&set);
    wr_bytes_free(&out);
}

static enum kf_msgset_status convert(const uint8_t *p, size_t len)
{
    struct wr_bytes out = {0};
    enum kf_msgset_status st = kf_msgset_to_batch(p, len, &out);
    wr_bytes_free(&out);
    return st;
}

Test(msgset, broken_sets_are_refused)
{
    struct wr_bytes set = legacy_set(three, 3);
    cr_assert_eq(convert(set.p, 0), KF_MSGSET_CORRUPT, "empty");
    size_t whole = 0; /* where the next message starts: a set may end there */
    for (size_t len = 1; len < set.len; len++) {
        if (len == whole + 12 + load_be(set.p + whole + 8, 4)) {
            whole = len;
            cr_assert_eq(convert(set.p, len), KF_MSGSET_OK, "whole messages up to %zu", len);
        } else {
            cr_assert_eq(convert(set.p, len), KF_MSGSET_CORRUPT, "cut at %zu", len);
        }
    }
    cr_assert_gt(whole, 0);
    set.p[set.len - 1] ^= 1; /* the last message's null value length, under its CRC */
    cr_assert_eq(convert(set.p, set.len), KF_MSGSET_CORRUPT, "a flipped bit");
    set.p[set.len - 1] ^= 1;
    set.p[20] ^= 0x40; /* the first message's magic, under its CRC */
    cr_assert_eq(convert(set.p, set.len), KF_MSGSET_CORRUPT, "a changed magic");
    set.p[20] ^= 0x40;
    set.p[16] ^= 1; /* the first message's CRC itself */
    cr_assert_eq(convert(set.p, set.len), KF_MSGSET_CORRUPT, "a wrong CRC");
    set.p[16] ^= 1;
    cr_assert_eq(convert(set.p, set.len), KF_MSGSET_OK, "restored");
    wr_bytes_free(&set);

    const struct test_msg bad_magic = {2, 0, 0, "k", "v"}; /* a correct CRC, though */
    set = legacy_set(&bad_magic, 1);
    cr_assert_eq(convert(set.p, set.len), KF_MSGSET_CORRUPT, "magic 2 in a message set");
    wr_bytes_free(&set);

    /* A size that leaves bytes over inside the message: the fields must fill it. */
    set = legacy_set(three, 1);
    wr_bytes_grow(&set, 1)[0] = 0;
    store_be(set.p + 8, load_be(set.p + 8, 4) + 1, 4);
    store_be(set.p + 12, crc_ieee(set.p + 16, set.len - 16), 4);
    cr_assert_eq(convert(set.p, set.len), KF_MSGSET_CORRUPT, "trailing bytes in a message");
    wr_bytes_free(&set);
}

Test(msgset, compressed_wrappers_are_refused)
{
    const struct test_msg gz[] = {{1, 0, 5, NULL, "plain"}, {1, 1, 5, NULL, "gzip bytes"}};
    struct wr_bytes set = legacy_set(gz, 2);
    cr_assert_eq(convert(set.p, set.len), KF_MSGSET_COMPRESSED);
    wr_bytes_free(&set);
}

/* ---- RecordBatches -> magic-1 message set ---------------------------------------------- */

/* Parses a magic-1 set as kafka-go reads it, checking each CRC; returns the count. */
static size_t read_legacy(const uint8_t *p, size_t len, uint64_t *offsets,
                          struct test_msg *msgs, char (*keys)[16], char (*values)[16])
{
    struct kf_in in = {p, p + len, false};
    size_t n = 0;
    while (kf_remaining(&in)) {
        offsets[n] = (uint64_t)kf_read_i64(&in);
        int32_t size = kf_read_i32(&in);
        cr_assert(!in.err && size >= 0 && (size_t)size <= kf_remaining(&in));
        struct kf_in m = {in.p, in.p + size, false};
        in.p += size;
        uint32_t crc = (uint32_t)kf_read_i32(&m);
        cr_assert_eq(crc, crc_ieee(m.p, kf_remaining(&m)), "message %zu's CRC", n);
        msgs[n].magic = kf_read_i8(&m);
        msgs[n].attributes = kf_read_i8(&m);
        msgs[n].timestamp = kf_read_i64(&m);
        struct kf_str k = kf_read_bytes(&m, false, true), v = kf_read_bytes(&m, false, true);
        cr_assert(!m.err && !kf_remaining(&m));
        cr_assert(k.len < 16 && v.len < 16);
        msgs[n].key = k.ptr ? memcpy(keys[n], k.ptr, (size_t)k.len) : NULL;
        if (k.ptr)
            keys[n][k.len] = 0;
        msgs[n].value = v.ptr ? memcpy(values[n], v.ptr, (size_t)v.len) : NULL;
        if (v.ptr)
            values[n][v.len] = 0;
        n++;
    }
    return n;
}

/* Two batches as the log holds them: three at offset 10, one more at 13. */
static struct wr_bytes two_batches(void)
{
    struct wr_bytes set = legacy_set(three, 3), log = {0};
    cr_assert_eq(kf_msgset_to_batch(set.p, set.len, &log), KF_MSGSET_OK);
    lb_set_base_offset(log.p, 10);
    size_t first = log.len;
    const struct test_msg more = {1, 0, 1700000001000, "k4", "fourth"};
    wr_bytes_free(&set);
    set = legacy_set(&more, 1);
    cr_assert_eq(kf_msgset_to_batch(set.p, set.len, &log), KF_MSGSET_OK);
    lb_set_base_offset(log.p + first, 13);
    wr_bytes_free(&set);
    return log;
}

Test(msgset, batches_become_magic1_messages_from_the_offset_asked)
{
    struct wr_bytes log = two_batches();
    struct wr_bytes out = {0};
    cr_assert_eq(kf_msgset_from_batches(log.p, log.len, 11, &out), KF_MSGSET_OK);
    uint64_t offsets[8];
    struct test_msg got[8];
    char keys[8][16], values[8][16];
    size_t n = read_legacy(out.p, out.len, offsets, got, keys, values);
    cr_assert_eq(n, 3, "offsets 11, 12 and 13");
    const struct test_msg *want[] = {&three[1], &three[2]};
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(offsets[i], 11 + i);
        cr_assert_eq(got[i].magic, 1);
        cr_assert_eq(got[i].attributes, 0);
        cr_assert_eq(got[i].timestamp, want[i]->timestamp);
        cr_assert((!got[i].key && !want[i]->key) || !strcmp(got[i].key, want[i]->key));
        cr_assert((!got[i].value && !want[i]->value) || !strcmp(got[i].value, want[i]->value));
    }
    cr_assert_eq(offsets[2], 13);
    cr_assert_str_eq(got[2].value, "fourth");
    cr_assert_eq(got[2].timestamp, 1700000001000);

    /* And back: the set converts to a batch holding the same records. */
    struct wr_bytes again = {0};
    cr_assert_eq(kf_msgset_to_batch(out.p, out.len, &again), KF_MSGSET_OK);
    const struct test_msg tail[] = {three[1], three[2], got[2]};
    assert_batch(again.p, again.len, 11, tail, 3);
    wr_bytes_free(&again);
    wr_bytes_free(&out);
    wr_bytes_free(&log);
}

Test(msgset, a_cut_off_batch_ends_the_set)
{
    struct wr_bytes log = two_batches();
    size_t first = 12 + load_be(log.p + 8, 4);
    for (size_t len = 0; len < log.len; len++) {
        struct wr_bytes out = {0};
        cr_assert_eq(kf_msgset_from_batches(log.p, len, 10, &out), KF_MSGSET_OK, "len %zu",
                     len);
        uint64_t offsets[8];
        struct test_msg got[8];
        char keys[8][16], values[8][16];
        size_t n = out.len ? read_legacy(out.p, out.len, offsets, got, keys, values) : 0;
        cr_assert_eq(n, len < first ? 0 : 3, "whole batches only, len %zu: %zu", len, n);
        wr_bytes_free(&out);
    }
    wr_bytes_free(&log);
}

Test(msgset, compressed_or_broken_batches_stop_the_set)
{
    struct wr_bytes log = two_batches();
    size_t first = 12 + load_be(log.p + 8, 4);
    struct wr_bytes out = {0};

    log.p[first + 22] |= 1; /* the second batch is gzip: the first's messages go out */
    cr_assert_eq(kf_msgset_from_batches(log.p, log.len, 10, &out), KF_MSGSET_OK);
    uint64_t offsets[8];
    struct test_msg got[8];
    char keys[8][16], values[8][16];
    cr_assert_eq(read_legacy(out.p, out.len, offsets, got, keys, values), 3);
    out.len = 0;
    /* ...and a fetch starting there is told why nothing comes. */
    cr_assert_eq(kf_msgset_from_batches(log.p + first, log.len - first, 13, &out),
                 KF_MSGSET_COMPRESSED);
    cr_assert_eq(out.len, 0);
    log.p[first + 22] &= (uint8_t)~1;

    log.p[16] = 1; /* not magic 2 */
    cr_assert_eq(kf_msgset_from_batches(log.p, log.len, 10, &out), KF_MSGSET_CORRUPT);
    log.p[16] = 2;
    log.p[BATCH_HEADER] = 0x7f; /* the first record's length runs past the batch */
    cr_assert_eq(kf_msgset_from_batches(log.p, log.len, 10, &out), KF_MSGSET_CORRUPT);
    cr_assert_eq(out.len, 0, "nothing of a malformed batch is written");
    wr_bytes_free(&out);
    wr_bytes_free(&log);
}

/* A control batch (transaction marker) carries no messages for the client. */
Test(msgset, control_batches_are_left_out)
{
    struct wr_bytes log = two_batches();
    log.p[22] |= BATCH_CONTROL;
    struct wr_bytes out = {0};
    cr_assert_eq(kf_msgset_from_batches(log.p, log.len, 10, &out), KF_MSGSET_OK);
    uint64_t offsets[8];
    struct test_msg got[8];
    char keys[8][16], values[8][16];
    cr_assert_eq(read_legacy(out.p, out.len, offsets, got, keys, values), 1);
    cr_assert_eq(offsets[0], 13);
    wr_bytes_free(&out);
    wr_bytes_free(&log);
}
