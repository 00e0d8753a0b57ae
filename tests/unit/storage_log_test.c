/*
 * storage_log_test.c: the `log` storage backend, loaded through the real plugin loader and
 * driven through its ops table: appends of Kafka batches (built here, independently of the
 * backend's codec) and of messages, reads as file ranges and as messages, offsets, lookups
 * by offset and by time, batches compressed with each Kafka codec (and broken or bomb ones
 * refused on read), segment rolls, retention, compaction, partitions, group commit,
 * adding partitions (kept across a reopen that declares fewer), and recovery from torn,
 * damaged, foreign and newer files.
 */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lz4frame.h>
#include <snappy-c.h>
#include <warren/wr.h>
#include <zlib.h>
#include <zstd.h>

#include "storage_testutil.h"

static char ldir[256];

static void setup(void)
{
    storage_setup("log");
    snprintf(ldir, sizeof ldir, "%s/vh/l", data_dir);
    cr_assert_eq(ops->model, WR_STORAGE_LOG);
}

TestSuite(storage_log, .init = setup, .fini = storage_teardown, .timeout = 120);

/* ---- helpers --------------------------------------------------------------------------- */

static void set_str(const char *name, const char *value)
{
    struct wr_value v = wr_value_str(value);
    cr_assert_eq(wr_table_set(options, name, &v), WR_OK);
}

static void set_int(const char *name, int64_t value)
{
    struct wr_value v = wr_value_i64(value);
    cr_assert_eq(wr_table_set(options, name, &v), WR_OK);
}

static struct wr_storage_args make_args(uint32_t partitions)
{
    return (struct wr_storage_args){
        .vhost = "/", .queue = "l", .dir = ldir, .durable = true, .max_length = -1,
        .max_length_bytes = -1, .partitions = partitions, .options = options,
    };
}

static void *open_parts(uint32_t partitions)
{
    struct wr_storage_args args = make_args(partitions);
    void *state = NULL;
    struct wr_error err = {0};
    cr_assert_eq(ops->open(ctx, &args, &state, &err), WR_OK, "%s", err.msg);
    cr_assert_not_null(state);
    return state;
}

static void *open_log(void)
{
    return open_parts(1);
}

static int open_fails(struct wr_error *err)
{
    struct wr_storage_args args = make_args(1);
    void *state = NULL;
    int rc = ops->open(ctx, &args, &state, err);
    cr_assert_null(state);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void run_until(bool (*cond)(void *), void *data)
{
    struct wr_error err = {0};
    for (int i = 0; i < 1000 && !cond(data); i++)
        cr_assert_eq(wr_loop_run_once(lp, 10, &err), WR_OK, "%s", err.msg);
    cr_assert(cond(data), "the loop never got there");
}

/* ---- building Kafka batches (RecordBatch v2), as a producer would ---------------------- */

static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
    }
    return ~crc;
}

struct out {
    uint8_t p[1 << 16];
    size_t len;
};

static void put(struct out *o, const void *p, size_t n)
{
    cr_assert_leq(o->len + n, sizeof o->p);
    memcpy(o->p + o->len, p, n);
    o->len += n;
}

static void put_be(struct out *o, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        uint8_t c = (uint8_t)(v >> (8 * i));
        put(o, &c, 1);
    }
}

static void put_varint(struct out *o, int64_t v)
{
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z >= 0x80) {
        uint8_t c = (uint8_t)(z | 0x80);
        put(o, &c, 1);
        z >>= 7;
    }
    uint8_t c = (uint8_t)z;
    put(o, &c, 1);
}

struct rec {
    const char *key;   /* NULL: null key */
    const char *value; /* NULL: null value */
    int64_t ts;
};

/* How a test batch's records are compressed: the codecs as Kafka clients write them. */
enum codec { PLAIN, GZIP, SNAPPY_RAW, SNAPPY_XERIAL, LZ4_FRAME, ZSTD };

static void put_snappy(struct out *o, const uint8_t *p, size_t n)
{
    size_t len = snappy_max_compressed_length(n);
    cr_assert_leq(o->len + len, sizeof o->p);
    cr_assert_eq(snappy_compress((const char *)p, n, (char *)o->p + o->len, &len), SNAPPY_OK);
    o->len += len;
}

/* records compressed with codec into o; returns the attributes' codec number. */
static uint16_t compress_records(enum codec codec, const struct out *records, struct out *o)
{
    size_t cap = sizeof o->p - o->len;
    uint8_t *dst = o->p + o->len;
    switch (codec) {
    case PLAIN:
        put(o, records->p, records->len);
        return 0;
    case GZIP: {
        z_stream zs = {0};
        cr_assert_eq(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
                     Z_OK);
        zs.next_in = (Bytef *)records->p;
        zs.avail_in = (uInt)records->len;
        zs.next_out = dst;
        zs.avail_out = (uInt)cap;
        cr_assert_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
        o->len += zs.total_out;
        deflateEnd(&zs);
        return 1;
    }
    case SNAPPY_RAW:
        put_snappy(o, records->p, records->len);
        return 2;
    case SNAPPY_XERIAL: { /* two blocks, as a Java client writes more than its block size */
        static const uint8_t magic[8] = {0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0};
        put(o, magic, sizeof magic);
        put_be(o, 1, 4);
        put_be(o, 1, 4);
        size_t half = records->len / 2;
        for (int i = 0; i < 2; i++) {
            size_t at = o->len;
            put_be(o, 0, 4);
            put_snappy(o, records->p + (i ? half : 0), i ? records->len - half : half);
            uint32_t block = (uint32_t)(o->len - at - 4);
            for (int k = 0; k < 4; k++)
                o->p[at + k] = (uint8_t)(block >> (24 - 8 * k));
        }
        return 2;
    }
    case LZ4_FRAME: {
        size_t n = LZ4F_compressFrame(dst, cap, records->p, records->len, NULL);
        cr_assert(!LZ4F_isError(n), "%s", LZ4F_getErrorName(n));
        o->len += n;
        return 3;
    }
    case ZSTD: {
        size_t n = ZSTD_compress(dst, cap, records->p, records->len, 3);
        cr_assert(!ZSTD_isError(n), "%s", ZSTD_getErrorName(n));
        o->len += n;
        return 4;
    }
    }
    cr_assert_fail("codec %d", codec);
    return 0;
}

/* A batch of n records with offset deltas 0..n-1 and base offset 0, its records compressed
 * with codec. */
static size_t make_batch_codec(uint8_t *dst, size_t cap, const struct rec *recs, int n,
                               enum codec codec)
{
    static struct out body;
    body.len = 0;
    int64_t base_ts = recs[0].ts, max_ts = recs[0].ts;
    for (int i = 0; i < n; i++) {
        static struct out r;
        r.len = 0;
        uint8_t attr = 0;
        put(&r, &attr, 1);
        put_varint(&r, recs[i].ts - base_ts);
        put_varint(&r, i);
        put_varint(&r, recs[i].key ? (int64_t)strlen(recs[i].key) : -1);
        if (recs[i].key)
            put(&r, recs[i].key, strlen(recs[i].key));
        put_varint(&r, recs[i].value ? (int64_t)strlen(recs[i].value) : -1);
        if (recs[i].value)
            put(&r, recs[i].value, strlen(recs[i].value));
        put_varint(&r, 0);
        put_varint(&body, (int64_t)r.len);
        put(&body, r.p, r.len);
        if (recs[i].ts > max_ts)
            max_ts = recs[i].ts;
    }
    static struct out o;
    o.len = 0;
    put_be(&o, 0, 8);                          /* base offset */
    put_be(&o, 0, 4);                          /* batch length, below */
    put_be(&o, 0, 4);                          /* leader epoch */
    put_be(&o, 2, 1);                          /* magic */
    put_be(&o, 0, 4);                          /* crc, below */
    put_be(&o, 0, 2);                          /* attributes, below */
    put_be(&o, (uint64_t)(n - 1), 4);          /* last offset delta */
    put_be(&o, (uint64_t)base_ts, 8);
    put_be(&o, (uint64_t)max_ts, 8);
    put_be(&o, UINT64_MAX, 8);                 /* producer id -1 */
    put_be(&o, 0xffff, 2);
    put_be(&o, 0xffffffff, 4);
    put_be(&o, (uint64_t)n, 4);
    uint16_t attributes = compress_records(codec, &body, &o);
    uint32_t batch_length = (uint32_t)(o.len - 12);
    for (int i = 0; i < 4; i++)
        o.p[8 + i] = (uint8_t)(batch_length >> (24 - 8 * i));
    o.p[21] = (uint8_t)(attributes >> 8);
    o.p[22] = (uint8_t)attributes;
    uint32_t crc = crc32c(o.p + 21, o.len - 21);
    for (int i = 0; i < 4; i++)
        o.p[17 + i] = (uint8_t)(crc >> (24 - 8 * i));
    cr_assert_leq(o.len, cap);
    memcpy(dst, o.p, o.len);
    return o.len;
}

/* A batch of n records with offset deltas 0..n-1 and base offset 0. */
static size_t make_batch(uint8_t *dst, size_t cap, const struct rec *recs, int n)
{
    return make_batch_codec(dst, cap, recs, n, PLAIN);
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* Appends a batch of n records "v<i>" with timestamp ts; returns its base offset. The copy
 * as stored (base offset set) goes to kept when not NULL. */
static uint64_t append_n(void *l, uint32_t part, int n, int64_t ts, uint8_t *kept, size_t *klen)
{
    struct rec recs[64];
    char values[64][16];
    cr_assert_leq(n, 64);
    for (int i = 0; i < n; i++) {
        snprintf(values[i], sizeof values[i], "v%d", i);
        recs[i] = (struct rec){NULL, values[i], ts};
    }
    uint8_t batch[8192];
    size_t len = make_batch(batch, sizeof batch, recs, n);
    uint64_t base = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->append_batch(l, part, batch, len, &base, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(get_be64(batch), base, "the base offset is written into the batch");
    if (kept) {
        memcpy(kept, batch, len);
        *klen = len;
    }
    return base;
}

static uint8_t *slice_bytes(const struct wr_log_slice *s)
{
    uint8_t *p = malloc(s->length ? s->length : 1);
    cr_assert_not_null(p);
    cr_assert_eq(pread(s->fd, p, s->length, (off_t)s->file_offset), (ssize_t)s->length);
    return p;
}

static struct wr_log_slice read_at(void *l, uint32_t part, uint64_t offset, size_t max)
{
    struct wr_log_slice s;
    struct wr_error err = {0};
    cr_assert_eq(ops->read(l, part, offset, max, &s, &err), WR_OK, "%s", err.msg);
    return s;
}

static void slice_close(struct wr_log_slice *s)
{
    if (s->fd >= 0)
        close(s->fd);
}

static int count_files(const char *dir, const char *suffix)
{
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    int n = 0;
    struct dirent *de;
    size_t sl = strlen(suffix);
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len > sl && strcmp(de->d_name + len - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static char *part_file(uint32_t part, uint64_t base, const char *suffix)
{
    static char path[4][512];
    static int turn;
    char *p = path[turn++ % 4];
    snprintf(p, 512, "%s/%u/%020llu%s", ldir, part, (unsigned long long)base, suffix);
    return p;
}

static char *read_all(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "%s", path);
    struct stat st;
    cr_assert_eq(fstat(fd, &st), 0);
    char *p = malloc((size_t)st.st_size + 1);
    cr_assert_eq(read(fd, p, (size_t)st.st_size), st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return p;
}

static off_t file_size(const char *path)
{
    struct stat st;
    cr_assert_eq(stat(path, &st), 0, "%s", path);
    return st.st_size;
}

static void flip_byte(const char *path, off_t at)
{
    int fd = open(path, O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t c;
    cr_assert_eq(pread(fd, &c, 1, at), 1);
    c ^= 0x40;
    cr_assert_eq(pwrite(fd, &c, 1, at), 1);
    close(fd);
}

/* ---- append and read ------------------------------------------------------------------- */

Test(storage_log, append_batch_and_read_gives_the_bytes_back)
{
    void *l = open_log();
    uint8_t kept[3][8192];
    size_t klen[3];
    int64_t ts = now_ms();
    cr_assert_eq(append_n(l, 0, 3, ts, kept[0], &klen[0]), 0);
    cr_assert_eq(append_n(l, 0, 2, ts, kept[1], &klen[1]), 3);
    cr_assert_eq(append_n(l, 0, 4, ts, kept[2], &klen[2]), 5);
    uint64_t earliest, latest;
    ops->offsets(l, 0, &earliest, &latest);
    cr_assert_eq(earliest, 0);
    cr_assert_eq(latest, 9);

    struct wr_log_slice s = read_at(l, 0, 0, 1 << 20);
    cr_assert_eq(s.base_offset, 0);
    cr_assert_eq(s.length, klen[0] + klen[1] + klen[2]);
    uint8_t *bytes = slice_bytes(&s);
    cr_assert_arr_eq(bytes, kept[0], klen[0]);
    cr_assert_arr_eq(bytes + klen[0], kept[1], klen[1]);
    cr_assert_arr_eq(bytes + klen[0] + klen[1], kept[2], klen[2]);
    free(bytes);
    slice_close(&s);

    /* An offset inside a batch gives the batch holding it. */
    s = read_at(l, 0, 4, 1 << 20);
    cr_assert_eq(s.base_offset, 3);
    cr_assert_eq(s.length, klen[1] + klen[2]);
    slice_close(&s);

    /* latest: nothing yet; beyond: out of range. */
    s = read_at(l, 0, 9, 1 << 20);
    cr_assert_eq(s.length, 0);
    cr_assert_eq(s.fd, -1);
    struct wr_error err = {0};
    cr_assert_eq(ops->read(l, 0, 10, 100, &s, &err), WR_ENOTFOUND);
    ops->close(l);
}

/* What a Kafka fetch does with a slice: sendfile() it to a socket. The peer reads whole
 * batches with their base offsets and valid CRCs, even after retention deleted the segment
 * (the slice's fd keeps the file). */
Test(storage_log, a_slice_goes_out_by_sendfile_as_kafka_batches)
{
    void *l = open_log();
    uint8_t kept[2][8192];
    size_t klen[2];
    int64_t ts = now_ms();
    append_n(l, 0, 3, ts, kept[0], &klen[0]);
    append_n(l, 0, 5, ts, kept[1], &klen[1]);
    struct wr_log_slice s = read_at(l, 0, 0, 1 << 20);
    ops->close(l); /* and the files are gone too: the dup'd fd still reads them */
    nftw(data_dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    cr_assert_eq(mkdir(data_dir, 0700), 0);

    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    off_t at = (off_t)s.file_offset;
    size_t left = s.length;
    uint8_t got[16384];
    size_t n = 0;
    while (left > 0) { /* the socket buffer takes it all: 16 KiB at most here */
        ssize_t sent = sendfile(sv[0], s.fd, &at, left);
        cr_assert_gt(sent, 0, "sendfile: %s", strerror(errno));
        left -= (size_t)sent;
        while (n < s.length - left) {
            ssize_t r = read(sv[1], got + n, sizeof got - n);
            cr_assert_gt(r, 0);
            n += (size_t)r;
        }
    }
    close(sv[0]);
    close(sv[1]);
    slice_close(&s);
    cr_assert_eq(n, klen[0] + klen[1]);
    /* Each batch as a Kafka client parses it: length field, magic 2, CRC-32C from the
     * attributes on, base offset assigned. */
    size_t pos = 0;
    uint64_t want_base[] = {0, 3};
    for (int b = 0; b < 2; b++) {
        const uint8_t *batch = got + pos;
        uint32_t blen = (uint32_t)get_be64(batch + 4) & 0xFFFFFFFFu; /* bytes 8..11 */
        cr_assert_eq(12 + (size_t)blen, klen[b]);
        cr_assert_eq(get_be64(batch), want_base[b]);
        cr_assert_eq(batch[16], 2, "magic");
        uint32_t crc = (uint32_t)get_be64(batch + 13) & 0xFFFFFFFFu; /* bytes 17..20 */
        cr_assert_eq(crc32c(batch + 21, klen[b] - 21), crc);
        cr_assert_arr_eq(batch, kept[b], klen[b]);
        pos += klen[b];
    }
}

Test(storage_log, a_corrupt_batch_is_refused_and_nothing_is_written)
{
    void *l = open_log();
    struct rec r = {"k", "v", now_ms()};
    uint8_t batch[256];
    size_t len = make_batch(batch, sizeof batch, &r, 1);
    batch[len - 1] ^= 1;
    uint64_t base = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->append_batch(l, 0, batch, len, &base, &err), WR_EPROTO);
    cr_assert(strstr(err.msg, "CRC"), "%s", err.msg);
    cr_assert_eq(ops->append_batch(l, 0, batch, len - 1, &base, &err), WR_EPROTO);
    uint64_t earliest, latest;
    ops->offsets(l, 0, &earliest, &latest);
    cr_assert_eq(latest, 0);
    cr_assert_eq(ops->append_batch(l, 1, batch, len, &base, &err), WR_EINVAL);
    ops->close(l);
}

Test(storage_log, read_respects_max_bytes_but_gives_one_whole_batch)
{
    void *l = open_log();
    size_t klen[3];
    uint8_t kept[8192];
    int64_t ts = now_ms();
    append_n(l, 0, 40, ts, kept, &klen[0]);
    append_n(l, 0, 1, ts, kept, &klen[1]);
    append_n(l, 0, 1, ts, kept, &klen[2]);
    struct wr_log_slice s = read_at(l, 0, 0, 10);
    cr_assert_eq(s.length, klen[0], "the first batch whole, though bigger than max_bytes");
    slice_close(&s);
    s = read_at(l, 0, 0, klen[0] + klen[1] + klen[2] - 1);
    cr_assert_eq(s.length, klen[0] + klen[1]);
    slice_close(&s);
    s = read_at(l, 0, 40, klen[1] + klen[2]);
    cr_assert_eq(s.base_offset, 40);
    cr_assert_eq(s.length, klen[1] + klen[2]);
    slice_close(&s);
    ops->close(l);
}

/* Timestamps from long ago, with no age roll or retention to act on them. */
static void keep_old_records(void)
{
    set_int("segment_ms", 0);
    set_int("retention_ms", 0);
}

Test(storage_log, append_msgs_and_read_msgs_give_equal_messages)
{
    keep_old_records();
    void *l = open_log();
    struct wr_table *h = wr_table_new();
    struct wr_value v = wr_value_str("blue");
    cr_assert_eq(wr_table_add(h, "colour", &v), WR_OK);
    struct wr_msg *msgs[3];
    const char *bodies[3] = {"one", "", "three"};
    for (int i = 0; i < 3; i++) {
        struct wr_msg_init init = {
            .exchange = wr_str_c("ex"), .routing_key = wr_str_c("rk"),
            .key = i == 0 ? wr_str_c("key0") : (struct wr_str){0}, .headers = h,
            .body_ptr = bodies[i], .body_len = strlen(bodies[i]), .timestamp_ms = 1000 + i,
        };
        cr_assert_eq(wr_msg_new(&init, &msgs[i], NULL), WR_OK);
    }
    uint64_t base = 99;
    struct wr_error err = {0};
    cr_assert_eq(ops->append_msgs(l, 0, msgs, 2, &base, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(base, 0);
    cr_assert_eq(ops->append_msgs(l, 0, msgs + 2, 1, &base, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(base, 2);

    struct wr_log_entry out[8];
    size_t n = 0;
    cr_assert_eq(ops->read_msgs(l, 0, 1, out, 8, &n, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(n, 2, "offset 1 skips the first record of the first batch");
    for (size_t i = 0; i < n; i++) {
        const struct wr_msg *m = out[i].msg, *want = msgs[i + 1];
        cr_assert_eq(out[i].offset, i + 1);
        size_t blen;
        const uint8_t *body = wr_msg_body(m, &blen);
        cr_assert_eq(blen, want->body.len);
        cr_assert_arr_eq(body, wr_slice_ptr(&want->body), blen);
        cr_assert_eq(m->routing_key.len, 2);
        cr_assert_arr_eq(m->routing_key.ptr, "rk", 2);
        cr_assert_eq(m->timestamp_ms, want->timestamp_ms);
        const char *c;
        size_t clen;
        cr_assert(wr_table_get_str(m->headers, "colour", &c, &clen));
        cr_assert_eq(clen, 4);
        int64_t off;
        cr_assert(wr_table_get_int(m->headers, "x-stream-offset", &off));
        cr_assert_eq(off, (int64_t)(i + 1));
        wr_msg_unref(out[i].msg);
    }
    cr_assert_eq(ops->read_msgs(l, 0, 0, out, 1, &n, &err), WR_OK);
    cr_assert_eq(n, 1);
    cr_assert_eq(out[0].msg->key.len, 4, "the key comes back");
    wr_msg_unref(out[0].msg);
    cr_assert_eq(ops->read_msgs(l, 0, 3, out, 8, &n, &err), WR_OK);
    cr_assert_eq(n, 0, "the end of the log");
    for (int i = 0; i < 3; i++)
        wr_msg_unref(msgs[i]);
    wr_table_free(h);
    ops->close(l);
}

Test(storage_log, offset_for_time)
{
    set_int("index_interval_bytes", 1);
    keep_old_records();
    void *l = open_log();
    int64_t t0 = 1700000000000;
    for (int i = 0; i < 50; i++)
        append_n(l, 0, 2, t0 + i * 1000, NULL, NULL);
    uint64_t off = 0;
    int64_t ts = 0;
    cr_assert_eq(ops->offset_for_time(l, 0, t0, &off, &ts), WR_OK);
    cr_assert_eq(off, 0);
    cr_assert_eq(ops->offset_for_time(l, 0, t0 + 20500, &off, &ts), WR_OK);
    cr_assert_eq(off, 42);
    cr_assert_eq(ts, t0 + 21000);
    cr_assert_eq(ops->offset_for_time(l, 0, t0 + 49000, &off, &ts), WR_OK);
    cr_assert_eq(off, 98);
    cr_assert_eq(ops->offset_for_time(l, 0, t0 + 49001, &off, &ts), WR_ENOTFOUND);
    ops->close(l);
}

/* ---- compressed batches ---------------------------------------------------------------- */

static const enum codec every_codec[] = {PLAIN, GZIP, SNAPPY_RAW, SNAPPY_XERIAL, LZ4_FRAME,
                                         ZSTD};
#define NCODECS (sizeof every_codec / sizeof every_codec[0])

/* Appends a batch of recs compressed with codec; returns its base offset. */
static uint64_t append_codec(void *l, const struct rec *recs, int n, enum codec codec)
{
    static uint8_t batch[1 << 16];
    size_t len = make_batch_codec(batch, sizeof batch, recs, n, codec);
    uint64_t base = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->append_batch(l, 0, batch, len, &base, &err), WR_OK, "%s", err.msg);
    return base;
}

/* Three records per codec: k<codec>-<i> = a value long enough to compress, at
 * t0 + codec * 1000 + i * 10. */
static void codec_records(size_t c, int64_t t0, struct rec recs[3], char keys[3][16],
                          char values[3][128])
{
    for (int i = 0; i < 3; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu-%d", c, i);
        snprintf(values[i], sizeof values[i], "value %zu.%d: %s", c, i,
                 "the same words again and again and again and again and again");
        recs[i] = (struct rec){keys[i], values[i], t0 + (int64_t)c * 1000 + i * 10};
    }
}

Test(storage_log, compressed_batches_read_as_the_same_messages)
{
    keep_old_records();
    void *l = open_log();
    int64_t t0 = 1700000000000;
    char keys[NCODECS][3][16], values[NCODECS][3][128];
    struct rec recs[NCODECS][3];
    for (size_t c = 0; c < NCODECS; c++) {
        codec_records(c, t0, recs[c], keys[c], values[c]);
        cr_assert_eq(append_codec(l, recs[c], 3, every_codec[c]), 3 * c);
    }
    struct wr_log_entry out[3 * NCODECS];
    size_t n = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->read_msgs(l, 0, 0, out, 3 * NCODECS, &n, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(n, 3 * NCODECS);
    for (size_t k = 0; k < n; k++) {
        const struct rec *want = &recs[k / 3][k % 3];
        const struct wr_msg *m = out[k].msg;
        cr_assert_eq(out[k].offset, k);
        size_t blen;
        const uint8_t *body = wr_msg_body(m, &blen);
        cr_assert_eq(blen, strlen(want->value), "record %zu", k);
        cr_assert_arr_eq(body, want->value, blen, "record %zu", k);
        cr_assert_eq(m->key.len, strlen(want->key));
        cr_assert_arr_eq(m->key.ptr, want->key, m->key.len);
        cr_assert_eq(m->routing_key.len, strlen(want->key));
        cr_assert_eq(m->timestamp_ms, want->ts);
        int64_t off;
        cr_assert(wr_table_get_int(m->headers, "x-stream-offset", &off));
        cr_assert_eq(off, (int64_t)k);
        wr_msg_unref(out[k].msg);
    }
    /* From the middle of a compressed batch: its earlier records are skipped. */
    cr_assert_eq(ops->read_msgs(l, 0, 3 * 4 + 2, out, 2, &n, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(n, 2);
    cr_assert_eq(out[0].offset, 14);
    cr_assert_eq(out[1].offset, 15);
    for (size_t k = 0; k < n; k++)
        wr_msg_unref(out[k].msg);

    /* offset_for_time finds the record inside each batch, not just the batch. */
    for (size_t c = 0; c < NCODECS; c++) {
        uint64_t off = 0;
        int64_t ts = 0;
        cr_assert_eq(ops->offset_for_time(l, 0, t0 + (int64_t)c * 1000 + 15, &off, &ts), WR_OK);
        cr_assert_eq(off, 3 * c + 2, "codec %zu", c);
        cr_assert_eq(ts, t0 + (int64_t)c * 1000 + 20, "codec %zu", c);
    }
    ops->close(l);
}

/* A batch made unreadable: its records compressed with codec, then cut or relabelled. */
struct broken {
    const char *what;
    enum codec codec;
    size_t cut;         /* bytes cut off the end of the compressed data */
    uint16_t attributes; /* 0: the codec's own */
    const char *want;   /* in the error message */
};

/* Appends the batch of recs as b describes it to a fresh log and checks read_msgs refuses
 * it with WR_EPROTO naming the failure, and offset_for_time still points at the batch. */
static void assert_read_refused(const struct broken *b, const struct rec *recs, int n)
{
    static uint8_t batch[1 << 16];
    size_t len = make_batch_codec(batch, sizeof batch, recs, n, b->codec);
    len -= b->cut;
    if (b->attributes) {
        batch[21] = (uint8_t)(b->attributes >> 8);
        batch[22] = (uint8_t)b->attributes;
    }
    uint32_t batch_length = (uint32_t)(len - 12), crc = crc32c(batch + 21, len - 21);
    for (int i = 0; i < 4; i++) {
        batch[8 + i] = (uint8_t)(batch_length >> (24 - 8 * i));
        batch[17 + i] = (uint8_t)(crc >> (24 - 8 * i));
    }
    void *l = open_log();
    uint64_t base = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->append_batch(l, 0, batch, len, &base, &err), WR_OK, "%s: %s", b->what,
                 err.msg);
    struct wr_log_entry out[4];
    size_t got = 9;
    err = (struct wr_error){0};
    cr_assert_eq(ops->read_msgs(l, 0, 0, out, 4, &got, &err), WR_EPROTO, "%s", b->what);
    cr_assert_eq(got, 0);
    cr_assert_not_null(strstr(err.msg, b->want), "%s: '%s' lacks '%s'", b->what, err.msg,
                       b->want);
    uint64_t off = 9;
    int64_t ts = 0;
    cr_assert_eq(ops->offset_for_time(l, 0, recs[0].ts, &off, &ts), WR_OK, "%s", b->what);
    cr_assert_eq(off, 0, "%s: the undecodable batch is as close as it gets", b->what);
    ops->close(l);
    cr_assert_eq(nftw(ldir, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0, "the next case starts anew");
}

Test(storage_log, broken_compressed_batches_are_refused_on_read)
{
    keep_old_records();
    char keys[3][16], values[3][128];
    struct rec recs[3];
    codec_records(0, 1700000000000, recs, keys, values);
    static const struct broken cases[] = {
        {"gzip cut", GZIP, 9, 0, "gzip-compressed records are cut short"},
        {"snappy cut", SNAPPY_RAW, 9, 0, "snappy-compressed records are corrupt"},
        {"xerial cut", SNAPPY_XERIAL, 9, 0, "snappy-compressed records are cut short"},
        {"lz4 cut", LZ4_FRAME, 9, 0, "lz4-compressed records are cut short"},
        {"zstd cut", ZSTD, 9, 0, "zstd-compressed records are cut short"},
        {"plain records called gzip", PLAIN, 0, 1, "gzip-compressed records are corrupt"},
        {"codec 5", GZIP, 0, 5, "compression codec 5 is unknown"},
        {"codec 6", GZIP, 0, 6, "compression codec 6 is unknown"},
        {"codec 7", GZIP, 0, 7, "compression codec 7 is unknown"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_read_refused(&cases[i], recs, 3);
}

Test(storage_log, a_decompression_bomb_is_refused)
{
    keep_old_records();
    /* 40 KB of one letter compresses to almost nothing; the limit is max_message_size. */
    wr_broker_set_max_message_size(b, 16384);
    static char big[40000];
    memset(big, 'a', sizeof big - 1);
    struct rec recs[1] = {{"k", big, 1700000000000}};
    static const struct broken cases[] = {
        {"gzip bomb", GZIP, 0, 0, "gzip-compressed records inflate past the limit of 16384"},
        {"snappy bomb", SNAPPY_RAW, 0, 0, "snappy-compressed records claim"},
        {"xerial bomb", SNAPPY_XERIAL, 0, 0, "past the limit of 16384 bytes"},
        {"lz4 bomb", LZ4_FRAME, 0, 0, "lz4-compressed records inflate past the limit"},
        {"zstd bomb", ZSTD, 0, 0, "zstd-compressed records inflate past the limit"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_read_refused(&cases[i], recs, 1);
    /* Within the limit the same batch reads. */
    wr_broker_set_max_message_size(b, 1 << 17);
    void *l = open_log();
    cr_assert_eq(append_codec(l, recs, 1, ZSTD), 0);
    struct wr_log_entry out[1];
    size_t n = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->read_msgs(l, 0, 0, out, 1, &n, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert_eq(out[0].msg->body.len, sizeof big - 1);
    wr_msg_unref(out[0].msg);
    ops->close(l);
}

Test(storage_log, index_lookups_match_a_linear_scan)
{
    set_int("index_interval_bytes", 300);
    set_int("segment_bytes", 64 << 10);
    void *l = open_log();
    enum { N = 1500 };
    static uint64_t bases[N], counts[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        counts[i] = 1 + (uint64_t)(rand() % 5);
        bases[i] = append_n(l, 0, (int)counts[i], now_ms(), NULL, NULL);
    }
    uint64_t latest, earliest;
    ops->offsets(l, 0, &earliest, &latest);
    cr_assert_eq(latest, bases[N - 1] + counts[N - 1]);
    for (int k = 0; k < 2000; k++) {
        uint64_t off = (uint64_t)rand() % latest;
        int i = 0;
        while (!(bases[i] <= off && off < bases[i] + counts[i]))
            i++;
        struct wr_log_slice s = read_at(l, 0, off, 1);
        cr_assert_eq(s.base_offset, bases[i], "offset %llu", (unsigned long long)off);
        cr_assert_gt(s.length, 0);
        uint8_t head[8];
        cr_assert_eq(pread(s.fd, head, 8, (off_t)s.file_offset), 8);
        cr_assert_eq(get_be64(head), bases[i]);
        slice_close(&s);
    }
    ops->close(l);
    /* The same after a reopen, through the indexes written to disk. */
    l = open_log();
    for (int k = 0; k < 300; k++) {
        uint64_t off = (uint64_t)rand() % latest;
        int i = 0;
        while (!(bases[i] <= off && off < bases[i] + counts[i]))
            i++;
        struct wr_log_slice s = read_at(l, 0, off, 1);
        cr_assert_eq(s.base_offset, bases[i]);
        slice_close(&s);
    }
    ops->close(l);
}

/* ---- rolls, retention, compaction ------------------------------------------------------ */

Test(storage_log, segments_roll_by_size_and_reads_cross_them)
{
    set_int("segment_bytes", 500);
    void *l = open_log();
    char dir[300];
    snprintf(dir, sizeof dir, "%s/0", ldir);
    for (int i = 0; i < 30; i++)
        cr_assert_eq(append_n(l, 0, 2, now_ms(), NULL, NULL), (uint64_t)i * 2);
    int segs = count_files(dir, ".log");
    cr_assert_gt(segs, 3);
    cr_assert_eq(count_files(dir, ".index"), segs);
    cr_assert_eq(count_files(dir, ".timeindex"), segs);
    for (uint64_t off = 0; off < 60; off++) {
        struct wr_log_slice s = read_at(l, 0, off, 1 << 20);
        cr_assert_eq(s.base_offset, off & ~1ull);
        cr_assert_leq(s.length, 500, "one segment's batches");
        slice_close(&s);
    }
    struct wr_log_entry out[100];
    size_t n = 0, total = 0;
    for (uint64_t off = 0; off < 60; off += n) {
        cr_assert_eq(ops->read_msgs(l, 0, off, out, 100, &n, NULL), WR_OK);
        cr_assert_gt(n, 0);
        for (size_t i = 0; i < n; i++) {
            cr_assert_eq(out[i].offset, off + i);
            wr_msg_unref(out[i].msg);
        }
        total += n;
    }
    cr_assert_eq(total, 60);
    ops->close(l);
}

Test(storage_log, a_segment_rolls_when_its_first_batch_is_old)
{
    set_int("segment_ms", 60000);
    void *l = open_log();
    char dir[300];
    snprintf(dir, sizeof dir, "%s/0", ldir);
    append_n(l, 0, 1, now_ms(), NULL, NULL);
    append_n(l, 0, 1, now_ms(), NULL, NULL);
    cr_assert_eq(count_files(dir, ".log"), 1);
    ops->close(l);
    nftw(ldir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    l = open_log();
    append_n(l, 0, 1, now_ms() - 120000, NULL, NULL);
    append_n(l, 0, 1, now_ms(), NULL, NULL);
    cr_assert_eq(count_files(dir, ".log"), 2);
    cr_assert_eq(file_size(part_file(0, 1, ".log")) > 0, true, "the new segment is based at 1");
    ops->close(l);
}

struct earliest_probe {
    void *l;
    uint64_t want;
};

static bool earliest_reached(void *data)
{
    struct earliest_probe *p = data;
    uint64_t earliest, latest;
    ops->offsets(p->l, 0, &earliest, &latest);
    return earliest >= p->want;
}

Test(storage_log, retention_by_age_deletes_old_segments)
{
    set_int("segment_bytes", 500);
    set_int("retention_ms", 3600 * 1000);
    set_int("retention_check_interval", 20);
    set_int("segment_ms", 0);
    void *l = open_log();
    int64_t old = now_ms() - 7200 * 1000;
    for (int i = 0; i < 10; i++)
        append_n(l, 0, 1, old, NULL, NULL);
    uint64_t first_new = append_n(l, 0, 1, now_ms(), NULL, NULL);
    for (int i = 0; i < 10; i++)
        append_n(l, 0, 1, now_ms(), NULL, NULL);
    struct earliest_probe p = {l, 1};
    run_until(earliest_reached, &p);
    uint64_t earliest, latest;
    ops->offsets(l, 0, &earliest, &latest);
    cr_assert_leq(earliest, first_new, "new records stay");
    cr_assert_eq(latest, 21);
    struct stat st;
    cr_assert_neq(stat(part_file(0, 0, ".log"), &st), 0, "the oldest segment's file is gone");
    cr_assert_neq(stat(part_file(0, 0, ".index"), &st), 0);
    struct wr_error err = {0};
    struct wr_log_slice s;
    cr_assert_eq(ops->read(l, 0, 0, 100, &s, &err), WR_ENOTFOUND);
    ops->close(l);
}

Test(storage_log, retention_by_size_keeps_the_newest_bytes)
{
    set_int("segment_bytes", 400);
    set_int("retention_bytes", 1200);
    set_int("retention_check_interval", 20);
    void *l = open_log();
    for (int i = 0; i < 40; i++)
        append_n(l, 0, 1, now_ms(), NULL, NULL);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/0", ldir);
    uint64_t earliest, latest;
    ops->offsets(l, 0, &earliest, &latest);
    cr_assert_gt(earliest, 0, "rolls apply retention");
    cr_assert_eq(latest, 40);
    off_t total = 0;
    DIR *d = opendir(dir);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len > 4 && strcmp(de->d_name + len - 4, ".log") == 0) {
            char path[600];
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            total += file_size(path);
        }
    }
    closedir(d);
    /* Retention runs after each roll; the active segment has grown since. */
    cr_assert_leq(total, 1200 + 2 * 400, "at most retention_bytes, a segment, the active one");
    cr_assert_geq(total, 1200 - 400);
    cr_assert_eq(count_files(dir, ".log"), count_files(dir, ".index"));
    ops->close(l);
}

Test(storage_log, max_length_bytes_sets_retention_bytes)
{
    set_int("segment_bytes", 400);
    struct wr_storage_args args = make_args(1);
    args.max_length_bytes = 800;
    void *l = NULL;
    struct wr_error err = {0};
    cr_assert_eq(ops->open(ctx, &args, &l, &err), WR_OK, "%s", err.msg);
    for (int i = 0; i < 40; i++)
        append_n(l, 0, 1, now_ms(), NULL, NULL);
    uint64_t earliest, latest;
    ops->offsets(l, 0, &earliest, &latest);
    cr_assert_gt(earliest, 10);
    ops->close(l);
}

struct compact_probe {
    void *l;
};

static bool compacted(void *data)
{
    struct compact_probe *p = data;
    struct wr_log_entry out[64];
    size_t n = 0;
    cr_assert_eq(ops->read_msgs(p->l, 0, 0, out, 64, &n, NULL), WR_OK);
    for (size_t i = 0; i < n; i++)
        wr_msg_unref(out[i].msg);
    return n < 30;
}

Test(storage_log, compaction_keeps_the_latest_record_per_key)
{
    set_str("cleanup_policy", "compact");
    set_int("segment_bytes", 600);
    set_int("retention_check_interval", 20);
    void *l = open_log();
    /* 30 records over keys k0..k4 in batches of 3, then one more batch to seal the rest. */
    char keys[30][8], values[30][8];
    for (int i = 0; i < 30; i += 3) {
        struct rec recs[3];
        for (int j = 0; j < 3; j++) {
            snprintf(keys[i + j], 8, "k%d", (i + j) % 5);
            snprintf(values[i + j], 8, "v%d", i + j);
            recs[j] = (struct rec){keys[i + j], values[i + j], now_ms()};
        }
        uint8_t batch[1024];
        size_t len = make_batch(batch, sizeof batch, recs, 3);
        uint64_t base;
        cr_assert_eq(ops->append_batch(l, 0, batch, len, &base, NULL), WR_OK);
    }
    append_n(l, 0, 1, now_ms(), NULL, NULL); /* offset 30, maybe in the active segment */
    struct compact_probe p = {l};
    run_until(compacted, &p);
    struct wr_log_entry out[64];
    size_t n = 0;
    cr_assert_eq(ops->read_msgs(l, 0, 0, out, 64, &n, NULL), WR_OK);
    /* Every record kept is the latest of its key among the sealed ones, at its offset. */
    uint64_t prev = 0;
    int seen_last_of_k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t blen;
        const uint8_t *body = wr_msg_body(out[i].msg, &blen);
        char value[16] = {0};
        memcpy(value, body, blen < 15 ? blen : 15);
        if (i > 0)
            cr_assert_gt(out[i].offset, prev, "offsets increase");
        prev = out[i].offset;
        if (out[i].offset < 30) {
            char want[8];
            snprintf(want, sizeof want, "v%llu", (unsigned long long)out[i].offset);
            cr_assert_str_eq(value, want, "a record keeps its offset");
            if (out[i].offset >= 25)
                seen_last_of_k++;
        }
        wr_msg_unref(out[i].msg);
    }
    cr_assert_eq(seen_last_of_k, 5, "the latest record of every key survives");
    /* A read from inside a gap gives the next batch that still exists. */
    struct wr_log_slice s = read_at(l, 0, 1, 1 << 20);
    cr_assert_gt(s.length, 0);
    cr_assert_geq(s.base_offset, 0);
    slice_close(&s);
    uint64_t earliest, latest;
    ops->offsets(l, 0, &earliest, &latest);
    cr_assert_eq(earliest, 0);
    cr_assert_eq(latest, 31);
    ops->close(l);
    l = open_log(); /* the rewritten segments pass recovery's checks */
    cr_assert_eq(ops->read_msgs(l, 0, 0, out, 64, &n, NULL), WR_OK);
    for (size_t i = 0; i < n; i++)
        wr_msg_unref(out[i].msg);
    cr_assert_lt(n, 30);
    ops->close(l);
}

Test(storage_log, partitions_are_independent)
{
    void *l = open_parts(3);
    for (uint32_t p = 0; p < 3; p++)
        for (uint32_t i = 0; i <= p; i++)
            cr_assert_eq(append_n(l, p, 2, now_ms(), NULL, NULL), i * 2);
    for (uint32_t p = 0; p < 3; p++) {
        uint64_t earliest, latest;
        ops->offsets(l, p, &earliest, &latest);
        cr_assert_eq(latest, (p + 1) * 2);
        char dir[300];
        snprintf(dir, sizeof dir, "%s/%u", ldir, p);
        cr_assert_eq(count_files(dir, ".log"), 1);
    }
    struct wr_log_slice s;
    struct wr_error err = {0};
    cr_assert_eq(ops->read(l, 3, 0, 100, &s, &err), WR_EINVAL);
    ops->close(l);
}

/* ---- group commit ---------------------------------------------------------------------- */

struct sync_probe {
    bool fired;
    int status;
    int calls;
};

static bool in_sync_call;

static void on_synced(void *data, int status)
{
    struct sync_probe *p = data;
    cr_assert_not(in_sync_call, "the callback ran inside sync()");
    p->fired = true;
    p->status = status;
    p->calls++;
}

static bool fired(void *data)
{
    return ((struct sync_probe *)data)->fired;
}

Test(storage_log, sync_calls_back_for_every_policy)
{
    const char *policies[] = {"always", "interval", "never"};
    for (int i = 0; i < 3; i++) {
        set_str("flush", policies[i]);
        set_int("flush_interval", 20);
        void *l = open_log();
        struct sync_probe probes[20] = {{0}};
        for (int k = 0; k < 20; k++) {
            append_n(l, 0, 1, now_ms(), NULL, NULL);
            in_sync_call = true;
            cr_assert_eq(ops->sync(l, on_synced, &probes[k]), WR_OK);
            in_sync_call = false;
        }
        run_until(fired, &probes[19]);
        for (int k = 0; k < 20; k++) {
            cr_assert(probes[k].fired, "%s: waiter %d", policies[i], k);
            cr_assert_eq(probes[k].status, WR_OK);
            cr_assert_eq(probes[k].calls, 1);
        }
        ops->close(l);
        nftw(ldir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    }
}

Test(storage_log, close_completes_pending_syncs)
{
    set_str("flush", "interval");
    set_int("flush_interval", 60000);
    void *l = open_log();
    append_n(l, 0, 1, now_ms(), NULL, NULL);
    struct sync_probe p = {0};
    cr_assert_eq(ops->sync(l, on_synced, &p), WR_OK);
    cr_assert_not(p.fired);
    ops->close(l);
    cr_assert(p.fired);
    cr_assert_eq(p.status, WR_OK);
}

/* ---- adding partitions ---------------------------------------------------------------- */

/* How many partitions the log has: add_partitions with a count it already has is a query. */
static uint32_t partitions_of(void *l)
{
    uint32_t n = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->add_partitions(l, 1, &n, &err), WR_OK, "%s", err.msg);
    return n;
}

static void expect_one_batch(void *l, uint32_t part, const uint8_t *kept, size_t klen)
{
    uint64_t earliest, latest;
    ops->offsets(l, part, &earliest, &latest);
    cr_assert_eq(earliest, 0);
    cr_assert_eq(latest, 1, "partition %u keeps its record", part);
    struct wr_log_slice s = read_at(l, part, 0, 1 << 20);
    cr_assert_eq(s.length, klen);
    uint8_t *got = slice_bytes(&s);
    cr_assert_arr_eq(got, kept, klen);
    free(got);
    slice_close(&s);
}

Test(storage_log, a_log_grows_and_its_new_partitions_take_appends)
{
    void *l = open_log();
    append_n(l, 0, 2, now_ms(), NULL, NULL);
    uint32_t n = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->add_partitions(l, 3, &n, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(n, 3);
    for (uint32_t p = 1; p < 3; p++) {
        uint64_t earliest = 9, latest = 9;
        ops->offsets(l, p, &earliest, &latest);
        cr_assert_eq(earliest, 0, "a new partition starts empty at offset 0");
        cr_assert_eq(latest, 0);
        char dir[300];
        snprintf(dir, sizeof dir, "%s/%u", ldir, p);
        cr_assert_eq(count_files(dir, ".log"), 1, "partition %u has its first segment", p);
    }
    uint8_t kept[8192];
    size_t klen = 0;
    cr_assert_eq(append_n(l, 2, 1, now_ms(), kept, &klen), 0);
    expect_one_batch(l, 2, kept, klen);
    uint64_t earliest, latest;
    ops->offsets(l, 0, &earliest, &latest);
    cr_assert_eq(latest, 2, "partition 0 is untouched");

    cr_assert_eq(ops->add_partitions(l, 2, &n, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(n, 3, "a log never shrinks");
    cr_assert_eq(ops->add_partitions(l, 200000, &n, &err), WR_EINVAL);
    cr_assert(strstr(err.msg, "too many"), "%s", err.msg);
    cr_assert_eq(n, 3);

    /* The new directories are made durable by the next sync. */
    struct sync_probe probe = {0};
    cr_assert_eq(ops->sync(l, on_synced, &probe), WR_OK);
    run_until(fired, &probe);
    cr_assert_eq(probe.status, WR_OK);
    ops->close(l);
}

Test(storage_log, reopening_with_fewer_partitions_declared_keeps_them_all)
{
    void *l = open_log();
    uint32_t n = 0;
    struct wr_error err = {0};
    cr_assert_eq(ops->add_partitions(l, 3, &n, &err), WR_OK, "%s", err.msg);
    uint8_t kept[8192];
    size_t klen = 0;
    append_n(l, 2, 1, now_ms(), kept, &klen);
    ops->close(l);

    l = open_parts(1); /* the queue still declares one, as a YAML not updated would */
    cr_assert_eq(partitions_of(l), 3);
    expect_one_batch(l, 2, kept, klen);
    cr_assert_eq(append_n(l, 2, 1, now_ms(), NULL, NULL), 1);
    ops->close(l);

    l = open_parts(5); /* and a larger declared count wins over the disk */
    cr_assert_eq(partitions_of(l), 5);
    uint64_t earliest, latest;
    ops->offsets(l, 2, &earliest, &latest);
    cr_assert_eq(latest, 2);
    ops->close(l);
}

/* ---- recovery -------------------------------------------------------------------------- */

/* Three segments of ten one-record batches each (segment_bytes fits ten). */
static void make_three_segments(size_t *batch_len)
{
    uint8_t kept[512];
    struct rec r = {NULL, "v0", 0};
    *batch_len = make_batch(kept, sizeof kept, &r, 1);
    set_int("segment_bytes", 16 + 10 * (int64_t)*batch_len);
    keep_old_records();
    void *l = open_log();
    for (int i = 0; i < 30; i++)
        append_n(l, 0, 1, 1700000000000 + i, NULL, NULL);
    ops->close(l);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/0", ldir);
    cr_assert_eq(count_files(dir, ".log"), 3);
}

static uint64_t latest_of(void *l)
{
    uint64_t earliest, latest;
    ops->offsets(l, 0, &earliest, &latest);
    return latest;
}

Test(storage_log, a_torn_last_batch_is_cut_off)
{
    size_t blen;
    make_three_segments(&blen);
    const char *last = part_file(0, 20, ".log");
    off_t size = file_size(last);
    cr_assert_eq(truncate(last, size - 5), 0);
    void *l = open_log();
    cr_assert_eq(latest_of(l), 29);
    cr_assert_eq(file_size(last), size - (off_t)blen);
    cr_assert_eq(append_n(l, 0, 1, now_ms(), NULL, NULL), 29, "appends go on after the cut");
    ops->close(l);
}

Test(storage_log, a_flipped_byte_in_the_tail_cuts_the_log_there)
{
    size_t blen;
    make_three_segments(&blen);
    const char *last = part_file(0, 20, ".log");
    flip_byte(last, 16 + 7 * (off_t)blen + 40);
    void *l = open_log();
    cr_assert_eq(latest_of(l), 27);
    cr_assert_eq(file_size(last), 16 + 7 * (off_t)blen);
    ops->close(l);
}

Test(storage_log, a_damaged_middle_segment_stops_open_and_changes_nothing)
{
    size_t blen;
    make_three_segments(&blen);
    const char *mid = part_file(0, 10, ".log");
    flip_byte(mid, 16 + 3 * (off_t)blen + 30);
    size_t len[3];
    char *before[3];
    for (int i = 0; i < 3; i++)
        before[i] = read_all(part_file(0, (uint64_t)i * 10, ".log"), &len[i]);
    struct wr_error err = {0};
    cr_assert_eq(open_fails(&err), WR_EPROTO);
    cr_assert(strstr(err.msg, "00000000000000000010.log"), "%s", err.msg);
    for (int i = 0; i < 3; i++) {
        size_t n;
        char *after = read_all(part_file(0, (uint64_t)i * 10, ".log"), &n);
        cr_assert_eq(n, len[i]);
        cr_assert_arr_eq(after, before[i], n);
        free(after);
        free(before[i]);
    }
}

Test(storage_log, empty_and_missing_indexes_are_rebuilt)
{
    size_t blen;
    set_int("index_interval_bytes", 1);
    make_three_segments(&blen);
    off_t idx_size = file_size(part_file(0, 0, ".index"));
    cr_assert_gt(idx_size, 8);
    cr_assert_eq(truncate(part_file(0, 0, ".index"), 0), 0);
    cr_assert_eq(unlink(part_file(0, 10, ".index")), 0);
    cr_assert_eq(unlink(part_file(0, 10, ".timeindex")), 0);
    void *l = open_log();
    cr_assert_eq(file_size(part_file(0, 0, ".index")), idx_size);
    cr_assert_eq(file_size(part_file(0, 10, ".index")), idx_size);
    for (uint64_t off = 0; off < 30; off++) {
        struct wr_log_slice s = read_at(l, 0, off, 1);
        cr_assert_eq(s.base_offset, off);
        slice_close(&s);
    }
    uint64_t off;
    int64_t ts;
    cr_assert_eq(ops->offset_for_time(l, 0, 1700000000000 + 15, &off, &ts), WR_OK);
    cr_assert_eq(off, 15);
    ops->close(l);
}

static void expect_refused(const char *path, const char *what)
{
    size_t len[3];
    char *before[3];
    for (int i = 0; i < 3; i++)
        before[i] = read_all(part_file(0, (uint64_t)i * 10, ".log"), &len[i]);
    struct wr_error err = {0};
    cr_assert_eq(open_fails(&err), WR_EPROTO);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, what), "%s", err.msg);
    for (int i = 0; i < 3; i++) {
        size_t n;
        char *after = read_all(part_file(0, (uint64_t)i * 10, ".log"), &n);
        cr_assert_eq(n, len[i], "nothing deleted or cut");
        cr_assert_arr_eq(after, before[i], n);
        free(after);
        free(before[i]);
    }
}

Test(storage_log, a_foreign_file_stops_open)
{
    size_t blen;
    make_three_segments(&blen);
    const char *last = part_file(0, 20, ".log");
    int fd = open(last, O_RDWR);
    cr_assert_eq(pwrite(fd, "NOPE", 4, 0), 4);
    close(fd);
    expect_refused(last, "magic");
}

Test(storage_log, a_newer_format_stops_open)
{
    size_t blen;
    make_three_segments(&blen);
    const char *first = part_file(0, 0, ".log");
    int fd = open(first, O_RDWR);
    uint8_t version[2] = {0, 9};
    cr_assert_eq(pwrite(fd, version, 2, 4), 2);
    close(fd);
    expect_refused(first, "version 9");
}

Test(storage_log, bad_options_are_refused)
{
    set_str("flush", "sometimes");
    struct wr_error err = {0};
    cr_assert_eq(open_fails(&err), WR_EINVAL);
    cr_assert(strstr(err.msg, "flush"), "%s", err.msg);
    set_str("flush", "always");
    set_str("cleanup_policy", "shred");
    cr_assert_eq(open_fails(&err), WR_EINVAL);
    cr_assert(strstr(err.msg, "cleanup_policy"), "%s", err.msg);
}

/* Reads every record of partition 0 from `from` in calls of `step`, as a log consumer does,
 * checking offsets and values; returns the next offset. */
static uint64_t read_in_steps(void *l, uint64_t from, size_t step, size_t calls,
                              char values[][32])
{
    struct wr_log_entry out[64];
    struct wr_error err = {0};
    for (size_t c = 0; c < calls; c++) {
        size_t n = 0;
        cr_assert_eq(ops->read_msgs(l, 0, from, out, step, &n, &err), WR_OK, "%s", err.msg);
        cr_assert_eq(n, step, "call %zu from %llu", c, (unsigned long long)from);
        for (size_t k = 0; k < n; k++) {
            cr_assert_eq(out[k].offset, from + k);
            size_t blen;
            const uint8_t *body = wr_msg_body(out[k].msg, &blen);
            cr_assert_eq(blen, strlen(values[from + k]), "offset %llu",
                         (unsigned long long)(from + k));
            cr_assert_arr_eq(body, values[from + k], blen);
            wr_msg_unref(out[k].msg);
        }
        from += n;
    }
    return from;
}

/* A Kafka producer's batch holds many records; consumers read them a few at a time. Each
 * call must go on from where it stopped, inside the batch (plain and compressed), also when
 * two readers at different places take turns. */
Test(storage_log, big_batches_are_read_piecewise_by_several_readers)
{
    keep_old_records();
    void *l = open_log();
    enum { PER_BATCH = 200, NBATCH = 2 };
    static char keys[PER_BATCH * NBATCH][16], values[PER_BATCH * NBATCH][32];
    static struct rec recs[PER_BATCH * NBATCH];
    for (int i = 0; i < PER_BATCH * NBATCH; i++) {
        snprintf(keys[i], sizeof keys[i], "k%d", i % 7);
        snprintf(values[i], sizeof values[i], "value number %d", i);
        recs[i] = (struct rec){keys[i], values[i], 1700000000000 + i};
    }
    cr_assert_eq(append_codec(l, recs, PER_BATCH, PLAIN), 0);
    cr_assert_eq(append_codec(l, recs + PER_BATCH, PER_BATCH, ZSTD), PER_BATCH);

    /* One reader, 8 at a time, through both batches. */
    cr_assert_eq(read_in_steps(l, 0, 8, PER_BATCH * NBATCH / 8, values), PER_BATCH * NBATCH);
    /* Two readers taking turns, one in each batch, then both in the compressed one. */
    uint64_t a = 3, b = PER_BATCH + 5;
    for (int turn = 0; turn < 20; turn++) {
        a = read_in_steps(l, a, 7, 1, values);
        b = read_in_steps(l, b, 5, 1, values);
    }
    cr_assert_eq(a, 3 + 20 * 7);
    cr_assert_eq(b, PER_BATCH + 5 + 20 * 5);
    a = PER_BATCH + 1;
    for (int turn = 0; turn < 10; turn++) {
        a = read_in_steps(l, a, 3, 1, values);
        b = read_in_steps(l, b, 9, 1, values);
    }
    /* A reader going back to a place inside a batch it passed gets the same records. */
    cr_assert_eq(read_in_steps(l, PER_BATCH + 2, 4, 1, values), PER_BATCH + 6);
    cr_assert_eq(read_in_steps(l, 1, 4, 1, values), 5);
    ops->close(l);
}
