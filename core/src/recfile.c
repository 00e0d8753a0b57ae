/*
 * recfile.c: the checksummed append-only record file (recfile.h): framing, replay with its
 * torn-tail rule, appends that are cut off again when they fail, and rewrites by rename.
 *
 * Replay reads the whole file into memory: these files hold what their users keep in memory
 * anyway, and the torn-tail rule needs to look past the first bad record.
 */
#include "warren/recfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "warren/fsync.h"
#include "warren/log.h"

struct wr_recfile {
    const struct wr_recfile_format *fmt;
    char *dir, *path, *tmp;      /* tmp: where a rewrite is written before its rename */
    int fd;                      /* -1 until the first rewrite creates the file */
    uint64_t size;               /* bytes of the file written */
    bool failed;                 /* a write could not be undone: refuse every later one */
    struct wr_fsync *fs;         /* group commit; NULL: each append is fdatasync'd */
};

/* CRC-32 (IEEE 802.3, zlib's crc32), so the file can be checked with common tools. */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    static uint32_t table[256];
    if (!table[1]) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
    }
    uint32_t c = 0xFFFFFFFFu;
    while (n--)
        c = table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

int wr_recfile_new(const char *dir, const char *name, const struct wr_recfile_format *fmt,
                   struct wr_recfile **out, struct wr_error *err)
{
    size_t n = strlen(dir) + strlen(name) + sizeof "/.tmp";
    struct wr_recfile *rf = calloc(1, sizeof *rf);
    if (rf) {
        rf->fd = -1;
        rf->dir = strdup(dir);
        rf->path = malloc(n);
        rf->tmp = malloc(n);
    }
    if (!rf || !rf->dir || !rf->path || !rf->tmp) {
        wr_recfile_free(rf);
        return wr_error_set(err, WR_ENOMEM, "out of memory opening %s/%s", dir, name);
    }
    rf->fmt = fmt;
    snprintf(rf->path, n, "%s/%s", dir, name);
    snprintf(rf->tmp, n, "%s/%s.tmp", dir, name);
    *out = rf;
    return WR_OK;
}

void wr_recfile_free(struct wr_recfile *rf)
{
    if (!rf)
        return;
    if (rf->fd >= 0)
        close(rf->fd);
    free(rf->dir);
    free(rf->path);
    free(rf->tmp);
    free(rf);
}

const char *wr_recfile_path(const struct wr_recfile *rf)
{
    return rf->path;
}

const char *wr_recfile_dir(const struct wr_recfile *rf)
{
    return rf->dir;
}

uint64_t wr_recfile_size(const struct wr_recfile *rf)
{
    return rf->size;
}

bool wr_recfile_failed(const struct wr_recfile *rf)
{
    return rf->failed;
}

int wr_recfile_make_dir(struct wr_recfile *rf, struct wr_error *err)
{
    char *path = strdup(rf->dir);
    if (!path)
        return wr_error_set(err, WR_ENOMEM, "out of memory creating %s", rf->dir);
    size_t n = strlen(path);
    int rc = WR_OK;
    for (size_t i = 1; rc == WR_OK && i <= n; i++) {
        if (path[i] != '/' && path[i] != '\0')
            continue;
        char c = path[i];
        path[i] = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            rc = wr_error_sys(err, WR_EIO, "cannot create %s", path);
        path[i] = c;
    }
    free(path);
    return rc;
}

/* ---- replay ------------------------------------------------------------------------- */

static int read_file(const char *path, uint8_t **out, size_t *size, struct wr_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? WR_ENOTFOUND : wr_error_sys(err, WR_EIO, "cannot open %s", path);
    struct stat st;
    uint8_t *buf = NULL;
    size_t got = 0;
    int rc = WR_OK;
    if (fstat(fd, &st) != 0) {
        rc = wr_error_sys(err, WR_EIO, "cannot stat %s", path);
    } else if (!(buf = malloc(st.st_size ? (size_t)st.st_size : 1))) {
        rc = wr_error_set(err, WR_ENOMEM, "out of memory reading %s", path);
    } else {
        while (got < (size_t)st.st_size) {
            ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (size_t)r;
        }
        if (got != (size_t)st.st_size)
            rc = wr_error_sys(err, WR_EIO, "cannot read %s", path);
    }
    close(fd);
    if (rc != WR_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *size = got;
    return WR_OK;
}

/* Does a whole, intact record start at off? *len gets its payload length. */
static bool intact_at(const struct wr_recfile *rf, const uint8_t *buf, size_t size, size_t off,
                      size_t *len)
{
    if (size - off < WR_RECFILE_REC_HEAD || crc32_of(buf + off, 4) != wr_le32_get(buf + off + 4))
        return false;
    uint32_t n = wr_le32_get(buf + off);
    if (n > rf->fmt->max_record || size - off - WR_RECFILE_REC_HEAD < n)
        return false;
    *len = n;
    return crc32_of(buf + off + WR_RECFILE_REC_HEAD, n) == wr_le32_get(buf + off + 8);
}

static int replay(struct wr_recfile *rf, const uint8_t *buf, size_t size,
                  wr_recfile_record_cb *cb, void *data, struct wr_error *err)
{
    const struct wr_recfile_format *fmt = rf->fmt;
    if (size < WR_RECFILE_HEAD || memcmp(buf, fmt->magic, 4) != 0)
        return wr_error_set(err, WR_EPROTO,
                            "%s is not a warren %s file (no '%.4s' header); start-up stops and "
                            "the file is left as it is",
                            rf->path, fmt->kind, fmt->magic);
    uint32_t version = wr_le32_get(buf + 4);
    if (version != fmt->version)
        return wr_error_set(err, WR_EPROTO,
                            "%s has format version %u, and this warren reads version %u%s; "
                            "start-up stops and the file is left as it is",
                            rf->path, version, fmt->version,
                            version > fmt->version ? " (it was written by a newer warren)" : "");
    size_t off = WR_RECFILE_HEAD;
    while (off < size) {
        size_t len = 0;
        if (!intact_at(rf, buf, size, off, &len)) {
            /* A torn write can only be the last record: damage followed by an intact record
             * is corruption, and nothing is cut then. */
            for (size_t at = off + 1; at < size; at++) {
                size_t l = 0;
                if (intact_at(rf, buf, size, at, &l))
                    return wr_error_set(err, WR_EPROTO,
                                        "%s: damaged record at offset %zu, followed by intact "
                                        "ones from offset %zu: start-up stops and the file is "
                                        "left as it is (restore it from a backup, or move it "
                                        "away to start without %s)",
                                        rf->path, off, at, fmt->contents);
            }
            wr_log(WR_LOG_WARN, fmt->subsys,
                   "%s: the last record (offset %zu, %zu bytes) is torn, as a crash during a "
                   "write leaves it; it is dropped",
                   rf->path, off, size - off);
            break;
        }
        int rc = cb(data, buf + off + WR_RECFILE_REC_HEAD, len);
        if (rc != WR_OK)
            return wr_error_set(err, rc,
                                rc == WR_ENOMEM ? "%s: out of memory at offset %zu"
                                                : "%s: the record at offset %zu is intact but "
                                                  "not understood; start-up stops and the file "
                                                  "is left as it is",
                                rf->path, off);
        off += WR_RECFILE_REC_HEAD + len;
    }
    return WR_OK;
}

int wr_recfile_replay(struct wr_recfile *rf, wr_recfile_record_cb *cb, void *data,
                      struct wr_error *err)
{
    uint8_t *buf = NULL;
    size_t size = 0;
    int rc = read_file(rf->path, &buf, &size, err);
    if (rc == WR_OK)
        rc = replay(rf, buf, size, cb, data, err);
    free(buf);
    return rc;
}

/* ---- writing ------------------------------------------------------------------------ */

size_t wr_recfile_record_begin(struct wr_bytes *b)
{
    size_t start = b->len;
    wr_bytes_grow(b, WR_RECFILE_REC_HEAD);
    return start;
}

void wr_recfile_record_end(struct wr_bytes *b, size_t start)
{
    if (b->oom)
        return;
    uint8_t *head = b->p + start;
    size_t len = b->len - start - WR_RECFILE_REC_HEAD;
    wr_le32_put(head, (uint32_t)len);
    wr_le32_put(head + 4, crc32_of(head, 4));
    wr_le32_put(head + 8, crc32_of(head + WR_RECFILE_REC_HEAD, len));
}

static bool write_at(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            return false;
        }
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return true;
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

static int refused(const struct wr_recfile *rf, struct wr_error *err)
{
    return wr_error_set(err, WR_EIO,
                        "%s: an earlier write failed and could not be undone, so writes are "
                        "refused: check the disk, then restart the broker",
                        rf->path);
}

int wr_recfile_rewrite(struct wr_recfile *rf, const uint8_t *records, size_t len,
                       struct wr_error *err)
{
    if (rf->failed)
        return refused(rf, err);
    uint8_t head[WR_RECFILE_HEAD];
    memcpy(head, rf->fmt->magic, 4);
    wr_le32_put(head + 4, rf->fmt->version);
    int fd = open(rf->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || !write_at(fd, head, sizeof head, 0) ||
        !write_at(fd, records, len, sizeof head) || fdatasync(fd) != 0 ||
        rename(rf->tmp, rf->path) != 0) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(rf->tmp);
        }
        errno = e;
        return wr_error_sys(err, WR_EIO, "cannot write %s", fd < 0 ? rf->tmp : rf->path);
    }
    /* The old file's appends are all in the new one, which is durable already: the syncer
     * only has to let go of the old file. */
    if (rf->fd >= 0) {
        if (rf->fs)
            wr_fsync_file_retire(rf->fs, rf->fd);
        close(rf->fd);
    }
    rf->fd = fd;
    rf->size = sizeof head + len;
    int rc = rf->fs ? wr_fsync_file_add(rf->fs, fd, err) : WR_OK;
    if (rc != WR_OK)
        rf->failed = true; /* appends the group commit would never sync */
    if (sync_dir(rf->dir) != 0) {
        /* The rename may not survive a crash, and appends would go to a file that then
         * vanishes: refuse them rather than lose them. */
        rf->failed = true;
        return wr_error_sys(err, WR_EIO, "cannot fsync directory %s after replacing %s",
                            rf->dir, rf->path);
    }
    return rc;
}

int wr_recfile_append(struct wr_recfile *rf, const uint8_t *records, size_t len,
                      struct wr_error *err)
{
    if (rf->failed)
        return refused(rf, err);
    if (!write_at(rf->fd, records, len, rf->size) || (!rf->fs && fdatasync(rf->fd) != 0)) {
        int e = errno;
        if (ftruncate(rf->fd, (off_t)rf->size) != 0 || fdatasync(rf->fd) != 0)
            rf->failed = true;
        errno = e;
        return wr_error_sys(err, WR_EIO, "cannot write to %s", rf->path);
    }
    rf->size += len;
    if (rf->fs)
        wr_fsync_wrote(rf->fs);
    return WR_OK;
}

int wr_recfile_group_commit(struct wr_recfile *rf, struct wr_fsync *fs, struct wr_error *err)
{
    rf->fs = fs;
    int rc = rf->fd >= 0 ? wr_fsync_file_add(fs, rf->fd, err) : WR_OK;
    if (rc != WR_OK)
        rf->failed = true;
    return rc;
}

int wr_recfile_sync(struct wr_recfile *rf, struct wr_error *err)
{
    if (rf->failed)
        return refused(rf, err);
    if (fdatasync(rf->fd) != 0) {
        /* What the page cache could not write it may have dropped: nothing later can be
         * promised either (as the group commit does). */
        rf->failed = true;
        return wr_error_sys(err, WR_EIO, "cannot sync %s", rf->path);
    }
    return WR_OK;
}
