/*
 * recfile.h: a checksummed append-only record file, the form of warren's small durable files
 * (the stored definitions, the Kafka transport's committed offsets). Its user keeps what the
 * file says in memory: the file is replayed whole at start-up, appended to as things change,
 * and rewritten compacted from memory now and then.
 *
 *     file    = magic[4]  u32 version  record*
 *     record  = u32 len  u32 len_crc  u32 crc  payload[len]
 *               len_crc: CRC-32 of len's 4 bytes; crc: CRC-32 of the payload
 *
 * Integers are little-endian and the CRC is zlib's crc32, so the file can be checked with
 * common tools. The length has a checksum of its own: a damaged length is never followed.
 *
 * What it promises about durability:
 * - An append is on disk when wr_recfile_append returns WR_OK; under group commit
 *   (wr_recfile_group_commit), once a wr_fsync_wait made after it completes with WR_OK.
 * - A rewrite is on disk, its rename included, when wr_recfile_rewrite returns WR_OK: the
 *   records go to <file>.tmp, which is fdatasync'd and renamed over the file, and then the
 *   directory is fsync'd. A crash at any point leaves the old file or the new one, whole.
 * - An append that fails is cut off again, so the file stays replayable and the caller may
 *   undo its change. When even that fails, or the directory cannot be fsync'd after a rename,
 *   the file is failed: every later write is refused until the process starts again, since
 *   the page cache may hold what the disk never will.
 * - A crash during an append can tear only the last record. Replay drops a torn last record
 *   with a warning; a record that is not intact but is followed by an intact one is damage,
 *   and replay stops with an error naming the file and both offsets. Nothing on disk changes
 *   during replay: the rewrite that follows it is what removes a torn tail.
 *
 * Thread: any, one at a time per struct wr_recfile. Every call but wr_recfile_new, the
 * framing and the getters blocks on the disk, so the loop calls them where waiting for the
 * disk is the point (start-up, a declare that must be durable), or appends under group commit.
 */
#ifndef WARREN_RECFILE_H
#define WARREN_RECFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"
#include "warren/value.h"

WR_BEGIN_DECLS

struct wr_fsync;
struct wr_recfile;

#define WR_RECFILE_HEAD 8u      /* magic, u32 version */
#define WR_RECFILE_REC_HEAD 12u /* u32 len, u32 len_crc, u32 crc */

/* What one kind of record file is, and how its messages name it. */
struct wr_recfile_format {
    const char *magic;    /* the file's first 4 bytes, "WRDF" */
    uint32_t version;     /* the version written, and the only one read */
    uint32_t max_record;  /* the longest payload: a longer length is damage */
    const char *kind;     /* "<path> is not a warren <kind> file" */
    const char *contents; /* "... or move it away to start without <contents>" */
    const char *subsys;   /* the wr_log source of replay's warnings */
};

/* A record file at dir/name; nothing is opened or created yet. fmt is kept (a static, in
 * practice), dir and name are copied. The caller owns the result (wr_recfile_free).
 * WR_ENOMEM. */
WR_API int wr_recfile_new(const char *dir, const char *name, const struct wr_recfile_format *fmt,
                          struct wr_recfile **out, struct wr_error *err);
/* Closes the file; a group-commit syncer is not touched. Accepts NULL. */
WR_API void wr_recfile_free(struct wr_recfile *rf);

/* dir/name and dir, for messages. */
WR_API const char *wr_recfile_path(const struct wr_recfile *rf);
WR_API const char *wr_recfile_dir(const struct wr_recfile *rf);
/* The bytes of the file written, header included; 0 until the first wr_recfile_rewrite. */
WR_API uint64_t wr_recfile_size(const struct wr_recfile *rf);
/* A write failed and could not be undone: every write is refused from now on. */
WR_API bool wr_recfile_failed(const struct wr_recfile *rf);

/* Creates the directory and any parent it lacks. WR_EIO naming the one that cannot be made. */
WR_API int wr_recfile_make_dir(struct wr_recfile *rf, struct wr_error *err);

/* Called by replay with each intact record's payload, in order, borrowed for the call. Returns
 * WR_OK, WR_EPROTO (intact but not understood) or WR_ENOMEM. */
typedef int wr_recfile_record_cb(void *data, const uint8_t *payload, size_t len);

/* Reads the file and calls cb for every record up to a torn last one, which is dropped with
 * a warning naming the file. WR_ENOTFOUND (err left as it is) when there is no file.
 * WR_EPROTO for a wrong magic or version, a damaged record followed by an intact one, or a
 * record cb did not understand; cb's WR_ENOMEM; WR_EIO. Each error names the file and what
 * to do, and the file is left as it is. */
WR_API int wr_recfile_replay(struct wr_recfile *rf, wr_recfile_record_cb *cb, void *data,
                             struct wr_error *err);

/* Frames a record at the end of b: begin reserves its head and returns where the record
 * starts; the caller appends the payload; end fills in the length and the checksums. Once
 * b->oom both do nothing, so the caller checks b->oom once. */
WR_API size_t wr_recfile_record_begin(struct wr_bytes *b);
WR_API void wr_recfile_record_end(struct wr_bytes *b, size_t start);

/* Replaces the file with one holding records[len] (whole records, framed as above) and makes
 * it the file appended to. The first rewrite creates the file (its directory must exist).
 * WR_EIO naming the file when the new one cannot be written (the old one is left as it was),
 * or naming the directory when it cannot be fsync'd after the rename (the file is failed). */
WR_API int wr_recfile_rewrite(struct wr_recfile *rf, const uint8_t *records, size_t len,
                              struct wr_error *err);

/* Appends records[len] (whole records) durably, as the header says. Call it once the file
 * has been rewritten (wr_recfile_size > 0). WR_EIO naming the file: nothing was appended. */
WR_API int wr_recfile_append(struct wr_recfile *rf, const uint8_t *records, size_t len,
                             struct wr_error *err);

/* From now on appends are made durable by fs's group commit rather than by an fdatasync
 * each: the file, and the one each rewrite makes, is registered with fs, and a caller waits
 * with wr_fsync_wait. fs must outlive rf's writes. Errors as wr_fsync_file_add; the file is
 * failed then, since its appends would never be synced. */
WR_API int wr_recfile_group_commit(struct wr_recfile *rf, struct wr_fsync *fs,
                                   struct wr_error *err);

/* Makes every append so far durable now, ahead of the group commit. WR_EIO naming the file;
 * a failed sync fails the file, as a failed group commit fails every later request. */
WR_API int wr_recfile_sync(struct wr_recfile *rf, struct wr_error *err);

WR_END_DECLS

#endif
