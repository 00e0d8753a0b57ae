/*
 * compact.h: log compaction (Kafka's cleanup.policy=compact): the sealed segments of a
 * partition are rewritten keeping, for each key, only the record with the highest offset
 * among them. Survivors keep their offsets, so a compacted log has gaps that readers step
 * over.
 */
#ifndef LOG_COMPACT_H
#define LOG_COMPACT_H

#include <stddef.h>
#include <stdint.h>

#include <warren/wr.h>

#include "segment.h"

struct lc_target {
    const char *dir;            /* the partition's directory */
    int dir_fd;
    struct ls_seg *segs;        /* its sealed segments, oldest first */
    size_t nsegs;
    uint64_t *total;            /* the partition's bytes, kept up to date */
};

/* Compacts t's segments. A segment with nothing to drop is left alone; another is written
 * to `<base>.log.cleaned`, synced and renamed over its .log, and its indexes rebuilt. Runs on
 * the loop thread. WR_EIO naming the file, WR_ENOMEM; a failure leaves the segment as it
 * was. */
int lc_compact(struct lc_target *t, struct ls_reader *r, struct wr_fsync *fs,
               uint32_t interval, const struct wr_plugin_ctx *ctx, struct wr_error *err);

#endif
