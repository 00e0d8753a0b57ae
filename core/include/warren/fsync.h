/*
 * fsync.h: group commit for storage backends. A struct wr_fsync belongs to one storage
 * instance (a queue, a log). It counts the writes the storage makes and completes sync
 * requests on the loop thread once every write made before them is durable, as the flush
 * policy says: always (fdatasync on a worker thread, one fdatasync covering every request
 * waiting: group commit), interval (the worker syncs every interval; requests wait for the
 * next round) or never (left to the OS; requests complete on the next loop turn).
 *
 * The worker fdatasyncs every file the storage registered (its active files) in each round,
 * plus files handed over once (a segment that was rolled, an index that was trimmed), plus
 * directories whose entries changed (a file created or deleted). It wakes the loop through an
 * eventfd; completions are delivered in the order requested. Once an fdatasync fails, that
 * request and every later one complete with WR_EIO: the page cache may have dropped what it
 * could not write, so nothing later can be promised either.
 *
 * Files are registered by the storage's fd; the worker keeps duplicates of its own, so the
 * storage may close its fd right after handing it over.
 *
 * Thread: every function runs on the loop thread.
 */
#ifndef WARREN_FSYNC_H
#define WARREN_FSYNC_H

#include <stddef.h>
#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"
#include "warren/storage.h"
#include "warren/value.h"

WR_BEGIN_DECLS

struct wr_loop;
struct wr_fsync;

enum wr_fsync_policy {
    WR_FSYNC_ALWAYS = 0, /* a sync request makes the worker fdatasync now */
    WR_FSYNC_INTERVAL,   /* the worker fdatasyncs every interval while there are writes */
    WR_FSYNC_NEVER,      /* no worker; the OS writes back when it likes */
};

#define WR_FSYNC_DEFAULT_INTERVAL_MS 200

/* Reads the options `flush` ("always", "interval", "never") and `flush_interval` (a duration
 * in ms, > 0) from opts when present, leaving *policy and *interval_ms as they are otherwise.
 * WR_EINVAL naming the option for a bad value. */
WR_API int wr_fsync_options(const struct wr_table *opts, enum wr_fsync_policy *policy,
                            uint64_t *interval_ms, struct wr_error *err);

/* Creates a group-commit syncer on lp; with a policy other than never, starts its worker
 * thread and registers its eventfd with lp. The caller owns the result (wr_fsync_free).
 * WR_ENOMEM, WR_EIO. */
WR_API int wr_fsync_new(struct wr_loop *lp, enum wr_fsync_policy policy, uint64_t interval_ms,
                        struct wr_fsync **out, struct wr_error *err);

/* Syncs what is left, stops and joins the worker, and calls back every pending request
 * (WR_OK, or WR_EIO if a sync failed). Accepts NULL. */
WR_API void wr_fsync_free(struct wr_fsync *fs);

/* Registers fd (a file being written) to be synced in every round until retired. The worker
 * keeps a duplicate. WR_EIO (dup failed), WR_ENOMEM. No-op under the never policy. */
WR_API int wr_fsync_file_add(struct wr_fsync *fs, int fd, struct wr_error *err);

/* Syncs fd once more in the next round, then forgets it: a rolled segment, a trimmed index.
 * fd need not have been added. A failure to keep it (dup, memory) fails the next requests
 * with WR_EIO. No-op under the never policy. */
WR_API void wr_fsync_file_retire(struct wr_fsync *fs, int fd);

/* The directory open as dir_fd had an entry created, renamed or deleted: it is fsynced in
 * the next round. Failures as wr_fsync_file_retire. No-op under the never policy. */
WR_API void wr_fsync_dir_changed(struct wr_fsync *fs, int dir_fd);

/* Counts one write to a registered file (call after the write). No syscall, no lock; under
 * the interval policy arms the interval timer if it is not armed. */
WR_API void wr_fsync_wrote(struct wr_fsync *fs);

/* Calls cb(data, status) on the loop thread, never from inside this call, once every write
 * counted so far is durable as the policy says. WR_ENOMEM (cb will not be called). */
WR_API int wr_fsync_wait(struct wr_fsync *fs, wr_storage_sync_cb *cb, void *data);

WR_END_DECLS

#endif
