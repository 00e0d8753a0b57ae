/*
 * recfile_test.c: the checksummed append-only record file (warren/recfile.h) on its own.
 * Files in the format the stored definitions and the Kafka offsets have always had, built
 * here byte by byte, read back and are written again to the byte; appends read back in
 * order; a file cut at any byte loses only its torn last record, with a warning; a flipped
 * byte anywhere else stops replay by name; a rewrite renames and syncs the directory; a
 * failing write is cut off, or fails the file when it cannot be; group commit.
 */
#include <criterion/criterion.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <warren/recfile.h>
#include <warren/wr.h>

#include "testutil.h"

static char dir[] = "/tmp/warren-recfile-XXXXXX";
static char path[300];

static const struct wr_recfile_format definitions_format = {
    .magic = "WRDF",
    .version = 1,
    .max_record = 64u << 20,
    .kind = "definitions",
    .contents = "the stored definitions",
    .subsys = "definitions",
};

static const struct wr_recfile_format offsets_format = {
    .magic = "WRKO",
    .version = 1,
    .max_record = 1u << 20,
    .kind = "offsets",
    .contents = "committed offsets",
    .subsys = "kafka",
};

/* fsync, seen from libwarren: counts (and may fail) the fsyncs of directories, the step that
 * makes a rename durable. The executable's definition comes first in symbol lookup. */
static int dir_fsyncs;
static bool fail_dir_fsync;

__attribute__((visibility("default"))) int fsync(int fd)
{
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        dir_fsyncs++;
        if (fail_dir_fsync) {
            errno = EIO;
            return -1;
        }
    }
    return real(fd);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void setup(void)
{
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/test.log", dir);
}

static void teardown(void) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

TestSuite(recfile, .init = setup, .fini = teardown, .timeout = 120);

/* ---- files as today's code writes them, built by hand ----------------------------------- */

/* The checksums come from zlib itself, not from the module: "zlib's crc32" is the promise. */
static uint32_t zlib_crc(const void *p, size_t n)
{
    return (uint32_t)crc32(crc32(0L, Z_NULL, 0), p, (uInt)n);
}

#define MAX_RECORDS 8

struct file {
    uint8_t bytes[4096];
    size_t len;
    size_t starts[MAX_RECORDS + 1]; /* where each record starts; starts[n] = len */
    size_t n;
};

/* magic, u32 version */
static void file_start(struct file *f, const char *magic, uint32_t version)
{
    memcpy(f->bytes, magic, 4);
    wr_le32_put(f->bytes + 4, version);
    f->len = 8;
    f->n = 0;
    f->starts[0] = 8;
}

/* u32 len, u32 CRC-32 of len's 4 bytes, u32 CRC-32 of the payload, the payload */
static void file_record(struct file *f, const void *payload, size_t len)
{
    cr_assert_lt(f->n, MAX_RECORDS);
    cr_assert_leq(f->len + 12 + len, sizeof f->bytes);
    uint8_t *p = f->bytes + f->len;
    wr_le32_put(p, (uint32_t)len);
    wr_le32_put(p + 4, zlib_crc(p, 4));
    wr_le32_put(p + 8, zlib_crc(payload, len));
    memcpy(p + 12, payload, len);
    f->len += 12 + len;
    f->starts[++f->n] = f->len;
}

static const char *payloads[] = {
    "\x01\x05\x00\x00\x00first",
    "", /* an empty payload is a record too */
    "a longer record, to have a length with more than one interesting byte in it: "
    "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz",
};
#define N_PAYLOADS 3

static void three_records(struct file *f, const struct wr_recfile_format *fmt)
{
    file_start(f, fmt->magic, fmt->version);
    for (size_t i = 0; i < N_PAYLOADS; i++)
        file_record(f, payloads[i], strlen(payloads[i]));
}

static void write_file(const void *bytes, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, bytes, len), (ssize_t)len);
    close(fd);
}

/* The file's bytes into out; returns how many there are. */
static size_t read_back(uint8_t *out, size_t cap)
{
    int fd = open(path, O_RDONLY);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    ssize_t n = read(fd, out, cap);
    close(fd);
    cr_assert_geq(n, 0);
    return (size_t)n;
}

/* ---- replay ------------------------------------------------------------------------------ */

struct seen {
    size_t n;
    size_t len[MAX_RECORDS];
    uint8_t bytes[MAX_RECORDS][256];
    size_t refuse_at; /* the record to answer with refuse_rc; MAX_RECORDS: none */
    int refuse_rc;
};

static int collect(void *data, const uint8_t *payload, size_t len)
{
    struct seen *s = data;
    if (s->n == s->refuse_at)
        return s->refuse_rc;
    cr_assert_lt(s->n, MAX_RECORDS);
    cr_assert_leq(len, sizeof s->bytes[0]);
    memcpy(s->bytes[s->n], payload, len);
    s->len[s->n++] = len;
    return WR_OK;
}

static struct wr_recfile *new_rf(const char *in, const struct wr_recfile_format *fmt)
{
    struct wr_recfile *rf = NULL;
    cr_assert_eq(wr_recfile_new(in, "test.log", fmt, &rf, NULL), WR_OK);
    cr_assert_str_eq(wr_recfile_dir(rf), in);
    return rf;
}

/* Replays rf with stderr captured into *log (malloc'd; NULL: not wanted). */
static int replay(struct wr_recfile *rf, struct seen *s, struct wr_error *err, char **log)
{
    char log_path[340];
    snprintf(log_path, sizeof log_path, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(2);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    *s = (struct seen){.refuse_at = s->refuse_at, .refuse_rc = s->refuse_rc};
    int rc = wr_recfile_replay(rf, collect, s, err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char *text = tu_read_file(log_path);
    cr_assert_not_null(text);
    unlink(log_path);
    if (log)
        *log = text;
    else
        free(text);
    return rc;
}

static void assert_payloads(const struct seen *s, size_t n)
{
    cr_assert_eq(s->n, n, "%zu records, not %zu", s->n, n);
    for (size_t i = 0; i < n; i++)
        cr_assert(s->len[i] == strlen(payloads[i]) &&
                      memcmp(s->bytes[i], payloads[i], s->len[i]) == 0,
                  "record %zu", i);
}

/* The records of payloads[from..to), framed by the module, after what b holds. */
static void frame(struct wr_bytes *b, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        size_t start = wr_recfile_record_begin(b);
        size_t len = strlen(payloads[i]);
        uint8_t *p = wr_bytes_grow(b, len);
        cr_assert_not_null(p);
        memcpy(p, payloads[i], len);
        wr_recfile_record_end(b, start);
    }
    cr_assert_not(b->oom);
}

Test(recfile, files_written_today_read_back_and_are_written_again_to_the_byte)
{
    const struct wr_recfile_format *fmts[] = {&definitions_format, &offsets_format};
    for (size_t k = 0; k < 2; k++) {
        struct file f;
        three_records(&f, fmts[k]);
        write_file(f.bytes, f.len);
        struct wr_recfile *rf = new_rf(dir, fmts[k]);
        struct seen s = {.refuse_at = MAX_RECORDS};
        struct wr_error err = {0};
        char *log = NULL;
        cr_assert_eq(replay(rf, &s, &err, &log), WR_OK, "%s: %s", fmts[k]->magic, err.msg);
        assert_payloads(&s, N_PAYLOADS);
        cr_assert_eq(strstr(log, "torn"), NULL, "%s", log);
        free(log);

        struct wr_bytes b = {0};
        frame(&b, 0, N_PAYLOADS);
        cr_assert_eq(wr_recfile_rewrite(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
        cr_assert_eq(wr_recfile_size(rf), f.len);
        uint8_t got[4096];
        cr_assert_eq(read_back(got, sizeof got), f.len);
        cr_assert_arr_eq(got, f.bytes, f.len, "%s: not the bytes of today's format",
                         fmts[k]->magic);
        wr_bytes_free(&b);
        wr_recfile_free(rf);
    }
}

Test(recfile, appends_read_back_in_order)
{
    char sub[340];
    snprintf(sub, sizeof sub, "%s/a/b", dir);
    struct wr_recfile *rf = new_rf(sub, &definitions_format);
    struct seen s = {.refuse_at = MAX_RECORDS};
    struct wr_error err = {0};
    cr_assert_eq(wr_recfile_replay(rf, collect, &s, &err), WR_ENOTFOUND);
    cr_assert_eq(err.code, WR_OK, "no file is not an error: %s", err.msg);
    cr_assert_eq(wr_recfile_size(rf), 0);

    cr_assert_eq(wr_recfile_make_dir(rf, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_recfile_rewrite(rf, NULL, 0, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_recfile_size(rf), WR_RECFILE_HEAD);
    struct wr_bytes b = {0};
    frame(&b, 0, 1);
    cr_assert_eq(wr_recfile_append(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
    b.len = 0;
    frame(&b, 1, N_PAYLOADS); /* two records in one append */
    cr_assert_eq(wr_recfile_append(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
    wr_bytes_free(&b);
    wr_recfile_free(rf);

    rf = new_rf(sub, &definitions_format);
    char *log = NULL;
    cr_assert_eq(replay(rf, &s, &err, &log), WR_OK, "%s", err.msg);
    free(log);
    assert_payloads(&s, N_PAYLOADS);
    wr_recfile_free(rf);
}

Test(recfile, a_file_cut_at_any_byte_loses_only_its_torn_last_record)
{
    struct file f;
    three_records(&f, &offsets_format);
    struct wr_recfile *rf = new_rf(dir, &offsets_format);
    for (size_t cut = 0; cut <= f.len; cut++) {
        write_file(f.bytes, cut);
        struct seen s = {.refuse_at = MAX_RECORDS};
        struct wr_error err = {0};
        char *log = NULL;
        int rc = replay(rf, &s, &err, &log);
        if (cut < WR_RECFILE_HEAD) {
            cr_assert_eq(rc, WR_EPROTO, "cut at %zu", cut);
            cr_assert(strstr(err.msg, path) &&
                          strstr(err.msg, "is not a warren offsets file (no 'WRKO' header)"),
                      "%s", err.msg);
            free(log);
            continue;
        }
        size_t whole = 0;
        while (whole < f.n && f.starts[whole + 1] <= cut)
            whole++;
        cr_assert_eq(rc, WR_OK, "cut at %zu: %s", cut, err.msg);
        assert_payloads(&s, whole);
        if (f.starts[whole] == cut) {
            cr_assert_eq(strstr(log, "torn"), NULL, "cut at %zu, a record's end: %s", cut, log);
        } else {
            char want[400];
            snprintf(want, sizeof want, "%s: the last record (offset %zu, %zu bytes) is torn",
                     path, f.starts[whole], cut - f.starts[whole]);
            cr_assert(strstr(log, want) && strstr(log, "[kafka]"), "cut at %zu: %s", cut, log);
        }
        free(log);
        uint8_t got[4096];
        cr_assert_eq(read_back(got, sizeof got), cut, "replay changed nothing on disk");
    }

    /* Zeros after the last record, as a file system may leave after a crash. */
    uint8_t zeros[4096 + 4096] = {0};
    memcpy(zeros, f.bytes, f.len);
    write_file(zeros, f.len + 4096);
    struct seen s = {.refuse_at = MAX_RECORDS};
    struct wr_error err = {0};
    char *log = NULL;
    cr_assert_eq(replay(rf, &s, &err, &log), WR_OK, "%s", err.msg);
    assert_payloads(&s, N_PAYLOADS);
    cr_assert(strstr(log, "torn"), "%s", log);
    free(log);
    wr_recfile_free(rf);
}

Test(recfile, a_flipped_byte_stops_replay_unless_it_is_in_the_last_record)
{
    struct file f;
    three_records(&f, &definitions_format);
    struct wr_recfile *rf = new_rf(dir, &definitions_format);
    for (size_t i = 0; i < f.len; i++) {
        struct file bad = f;
        bad.bytes[i] ^= 0x01;
        write_file(bad.bytes, bad.len);
        struct seen s = {.refuse_at = MAX_RECORDS};
        struct wr_error err = {0};
        char *log = NULL;
        int rc = replay(rf, &s, &err, &log);
        size_t rec = 0;
        while (rec < f.n && f.starts[rec + 1] <= i)
            rec++;
        char want[800];
        if (i < 4) {
            snprintf(want, sizeof want, "%s is not a warren definitions file (no 'WRDF' header)"
                     "; start-up stops and the file is left as it is", path);
        } else if (i < 8) {
            snprintf(want, sizeof want, "%s has format version %u, and this warren reads "
                     "version 1", path, 1u ^ (1u << (8 * (i - 4))));
        } else if (rec == f.n - 1) {
            cr_assert_eq(rc, WR_OK, "byte %zu, in the last record: %s", i, err.msg);
            assert_payloads(&s, f.n - 1);
            cr_assert(strstr(log, "torn"), "byte %zu: %s", i, log);
            free(log);
            continue;
        } else {
            snprintf(want, sizeof want, "%s: damaged record at offset %zu, followed by intact "
                     "ones from offset %zu: start-up stops and the file is left as it is "
                     "(restore it from a backup, or move it away to start without the stored "
                     "definitions)", path, f.starts[rec], f.starts[rec + 1]);
        }
        free(log);
        cr_assert_eq(rc, WR_EPROTO, "byte %zu: %s", i, err.msg);
        cr_assert(strstr(err.msg, want), "byte %zu: expected\n  %s\nin\n  %s", i, want, err.msg);
        uint8_t got[4096];
        cr_assert_eq(read_back(got, sizeof got), bad.len);
        cr_assert_arr_eq(got, bad.bytes, bad.len, "byte %zu: the file was changed", i);
    }

    /* A version from the future says so. */
    struct file newer = f;
    wr_le32_put(newer.bytes + 4, 2);
    write_file(newer.bytes, newer.len);
    struct seen s = {.refuse_at = MAX_RECORDS};
    struct wr_error err = {0};
    cr_assert_eq(replay(rf, &s, &err, NULL), WR_EPROTO);
    cr_assert(strstr(err.msg, "format version 2, and this warren reads version 1 (it was "
                              "written by a newer warren)"), "%s", err.msg);
    wr_recfile_free(rf);
}

Test(recfile, a_length_past_the_formats_longest_is_damage)
{
    struct file f;
    file_start(&f, "WRKO", 1);
    file_record(&f, payloads[0], strlen(payloads[0]));
    file_record(&f, payloads[1], 0);
    wr_le32_put(f.bytes + 8, offsets_format.max_record + 1);
    wr_le32_put(f.bytes + 12, zlib_crc(f.bytes + 8, 4)); /* a length whose own CRC holds */
    write_file(f.bytes, f.len);
    struct wr_recfile *rf = new_rf(dir, &offsets_format);
    struct seen s = {.refuse_at = MAX_RECORDS};
    struct wr_error err = {0};
    cr_assert_eq(replay(rf, &s, &err, NULL), WR_EPROTO);
    cr_assert(strstr(err.msg, "damaged record at offset 8"), "%s", err.msg);
    wr_recfile_free(rf);
}

Test(recfile, a_record_the_user_does_not_understand_stops_replay)
{
    struct file f;
    three_records(&f, &definitions_format);
    write_file(f.bytes, f.len);
    struct wr_recfile *rf = new_rf(dir, &definitions_format);
    struct seen s = {.refuse_at = 1, .refuse_rc = WR_EPROTO};
    struct wr_error err = {0};
    cr_assert_eq(replay(rf, &s, &err, NULL), WR_EPROTO);
    char want[800];
    snprintf(want, sizeof want, "%s: the record at offset %zu is intact but not understood; "
             "start-up stops and the file is left as it is", path, f.starts[1]);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    s = (struct seen){.refuse_at = 2, .refuse_rc = WR_ENOMEM};
    cr_assert_eq(replay(rf, &s, &err, NULL), WR_ENOMEM);
    snprintf(want, sizeof want, "%s: out of memory at offset %zu", path, f.starts[2]);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    wr_recfile_free(rf);
}

/* ---- writing ----------------------------------------------------------------------------- */

static struct wr_recfile *with_three(const struct wr_recfile_format *fmt)
{
    struct wr_recfile *rf = new_rf(dir, fmt);
    struct wr_bytes b = {0};
    frame(&b, 0, N_PAYLOADS);
    cr_assert_eq(wr_recfile_rewrite(rf, NULL, 0, NULL), WR_OK);
    cr_assert_eq(wr_recfile_append(rf, b.p, b.len, NULL), WR_OK);
    wr_bytes_free(&b);
    return rf;
}

Test(recfile, a_rewrite_replaces_the_file_by_rename_and_syncs_the_directory)
{
    struct wr_recfile *rf = with_three(&definitions_format);
    struct stat before;
    cr_assert_eq(stat(path, &before), 0);

    struct wr_bytes b = {0};
    frame(&b, 0, 1);
    dir_fsyncs = 0;
    struct wr_error err = {0};
    cr_assert_eq(wr_recfile_rewrite(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(dir_fsyncs, 1, "the directory is fsync'd once, after the rename");
    struct stat after;
    cr_assert_eq(stat(path, &after), 0, "the file is there after the rename");
    cr_assert_neq(after.st_ino, before.st_ino, "a new file took the old one's name");
    char tmp[340];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_assert_neq(access(tmp, F_OK), 0, "no temporary file is left");

    struct file want;
    file_start(&want, "WRDF", 1);
    file_record(&want, payloads[0], strlen(payloads[0]));
    uint8_t got[4096];
    cr_assert_eq(read_back(got, sizeof got), want.len);
    cr_assert_arr_eq(got, want.bytes, want.len);
    cr_assert_eq(wr_recfile_size(rf), want.len);

    /* Appends go to the new file. */
    b.len = 0;
    frame(&b, 1, N_PAYLOADS);
    cr_assert_eq(wr_recfile_append(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
    wr_bytes_free(&b);
    struct seen s = {.refuse_at = MAX_RECORDS};
    cr_assert_eq(replay(rf, &s, &err, NULL), WR_OK, "%s", err.msg);
    assert_payloads(&s, N_PAYLOADS);
    wr_recfile_free(rf);
}

Test(recfile, a_failed_rewrite_leaves_the_old_file)
{
    struct wr_recfile *rf = with_three(&offsets_format);
    uint8_t old[4096];
    size_t old_len = read_back(old, sizeof old);

    signal(SIGXFSZ, SIG_IGN);
    struct rlimit saved;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit small = {10, saved.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    struct wr_bytes b = {0};
    frame(&b, 0, 1);
    struct wr_error err = {0};
    int rc = wr_recfile_rewrite(rf, b.p, b.len, &err);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
    wr_bytes_free(&b);

    char want[800];
    snprintf(want, sizeof want, "cannot write %s: File too large", path);
    cr_assert_eq(rc, WR_EIO);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    cr_assert_not(wr_recfile_failed(rf));
    uint8_t got[4096];
    cr_assert_eq(read_back(got, sizeof got), old_len);
    cr_assert_arr_eq(got, old, old_len, "the old file is as it was");
    char tmp[340];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_assert_neq(access(tmp, F_OK), 0, "no temporary file is left");
    cr_assert_eq(wr_recfile_size(rf), old_len, "appends still go to the old file");
    wr_recfile_free(rf);
}

Test(recfile, a_directory_that_cannot_be_synced_fails_the_file)
{
    struct wr_recfile *rf = with_three(&definitions_format);
    struct wr_bytes b = {0};
    frame(&b, 0, 1);
    fail_dir_fsync = true;
    struct wr_error err = {0};
    int rc = wr_recfile_rewrite(rf, b.p, b.len, &err);
    fail_dir_fsync = false;
    char want[800];
    snprintf(want, sizeof want, "cannot fsync directory %s after replacing %s", dir, path);
    cr_assert_eq(rc, WR_EIO);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    cr_assert(wr_recfile_failed(rf));

    /* The rename may not last: every later write is refused, by name. */
    snprintf(want, sizeof want, "%s: an earlier write failed and could not be undone", path);
    err = (struct wr_error){0};
    cr_assert_eq(wr_recfile_append(rf, b.p, b.len, &err), WR_EIO);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    err = (struct wr_error){0};
    cr_assert_eq(wr_recfile_rewrite(rf, b.p, b.len, &err), WR_EIO);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    err = (struct wr_error){0};
    cr_assert_eq(wr_recfile_sync(rf, &err), WR_EIO);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    wr_bytes_free(&b);
    wr_recfile_free(rf);
}

Test(recfile, a_failed_append_is_cut_off_and_the_next_one_works)
{
    struct wr_recfile *rf = with_three(&definitions_format);
    uint64_t size = wr_recfile_size(rf);
    struct wr_bytes b = {0};
    frame(&b, 0, 1);

    /* The file may grow by 5 bytes: the write stops partway. */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit saved;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit small = {(rlim_t)size + 5, saved.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    struct wr_error err = {0};
    int rc = wr_recfile_append(rf, b.p, b.len, &err);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);

    char want[800];
    snprintf(want, sizeof want, "cannot write to %s: File too large", path);
    cr_assert_eq(rc, WR_EIO);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    cr_assert_eq(err.sys_errno, EFBIG);
    cr_assert_not(wr_recfile_failed(rf), "the file was cut back: nothing is lost");
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq((uint64_t)st.st_size, size, "the partial record was cut off");

    cr_assert_eq(wr_recfile_append(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
    wr_bytes_free(&b);
    struct seen s = {.refuse_at = MAX_RECORDS};
    char *log = NULL;
    cr_assert_eq(replay(rf, &s, &err, &log), WR_OK, "%s", err.msg);
    cr_assert_eq(strstr(log, "torn"), NULL, "%s", log);
    free(log);
    cr_assert_eq(s.n, N_PAYLOADS + 1);
    wr_recfile_free(rf);
}

Test(recfile, errors_name_the_file_or_directory)
{
    /* A directory under a regular file cannot be made. */
    char blocked[340], sub[400];
    snprintf(blocked, sizeof blocked, "%s/plain", dir);
    int fd = open(blocked, O_WRONLY | O_CREAT, 0644);
    cr_assert_geq(fd, 0);
    close(fd);
    snprintf(sub, sizeof sub, "%s/sub", blocked);
    struct wr_recfile *rf = new_rf(sub, &definitions_format);
    struct wr_error err = {0};
    cr_assert_eq(wr_recfile_make_dir(rf, &err), WR_EIO);
    char want[800];
    snprintf(want, sizeof want, "cannot create %s: Not a directory", sub);
    cr_assert(strstr(err.msg, want), "%s", err.msg);

    /* No directory to write in. */
    err = (struct wr_error){0};
    cr_assert_eq(wr_recfile_rewrite(rf, NULL, 0, &err), WR_EIO);
    snprintf(want, sizeof want, "cannot write %s/test.log.tmp", sub);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    cr_assert_eq(wr_recfile_size(rf), 0);
    wr_recfile_free(rf);

    /* A file that cannot be read: a directory where it should be. */
    cr_assert_eq(mkdir(path, 0755), 0);
    rf = new_rf(dir, &definitions_format);
    struct seen s = {.refuse_at = MAX_RECORDS};
    err = (struct wr_error){0};
    cr_assert_eq(replay(rf, &s, &err, NULL), WR_EIO);
    snprintf(want, sizeof want, "cannot read %s", path);
    cr_assert(strstr(err.msg, want), "%s", err.msg);
    wr_recfile_free(rf);
}

/* ---- group commit ------------------------------------------------------------------------ */

static int synced = 1; /* the status the callback got; 1: not called yet */

static void on_synced(void *data, int status)
{
    (void)data;
    synced = status;
}

static void wait_synced(struct wr_loop *lp, struct wr_fsync *fs)
{
    synced = 1;
    cr_assert_eq(wr_fsync_wait(fs, on_synced, NULL), WR_OK);
    for (int i = 0; i < 500 && synced == 1; i++)
        cr_assert_eq(wr_loop_run_once(lp, 10, NULL), WR_OK);
    cr_assert_eq(synced, WR_OK, "the group commit completed");
}

Test(recfile, under_group_commit_appends_are_synced_by_the_syncer)
{
    struct wr_loop *lp = NULL;
    struct wr_fsync *fs = NULL;
    cr_assert_eq(wr_loop_new(&lp, NULL), WR_OK);
    cr_assert_eq(wr_fsync_new(lp, WR_FSYNC_ALWAYS, 0, &fs, NULL), WR_OK);
    struct wr_recfile *rf = with_three(&offsets_format);
    struct wr_error err = {0};
    cr_assert_eq(wr_recfile_group_commit(rf, fs, &err), WR_OK, "%s", err.msg);

    struct wr_bytes b = {0};
    frame(&b, 0, 1);
    cr_assert_eq(wr_recfile_append(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
    wait_synced(lp, fs);
    /* A rewrite hands the syncer the new file. */
    cr_assert_eq(wr_recfile_rewrite(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(wr_recfile_append(rf, b.p, b.len, &err), WR_OK, "%s", err.msg);
    wait_synced(lp, fs);
    cr_assert_eq(wr_recfile_sync(rf, &err), WR_OK, "%s", err.msg);
    wr_bytes_free(&b);

    struct seen s = {.refuse_at = MAX_RECORDS};
    cr_assert_eq(replay(rf, &s, &err, NULL), WR_OK, "%s", err.msg);
    cr_assert_eq(s.n, 2);
    wr_fsync_free(fs);
    wr_recfile_free(rf);
    wr_loop_free(lp);
}
