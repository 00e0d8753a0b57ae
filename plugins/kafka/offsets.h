/*
 * offsets.h: the consumer groups' committed offsets, in memory and on disk.
 *
 * Every commit and every group deletion is a record appended to
 * <data_dir>/kafka-offsets/offsets.log; the file is replayed at start and rewritten compacted
 * (the latest offset per group, topic and partition), and again while running once it is
 * mostly history. Appends reach the page cache at once and are made durable by a group commit
 * on a worker thread (warren/fsync.h): a caller answers its client from the kf_offsets_wait
 * callback. The format is described at the top of offsets.c; it is a record file, whose
 * framing and recovery rules are warren/recfile.h's.
 *
 * Thread: the loop's, like everything in the transport.
 */
#ifndef KAFKA_OFFSETS_H
#define KAFKA_OFFSETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "warren/wr.h"

/* Partition indexes at or past this are refused: a partition's offsets live in an array
 * indexed by partition, so a wild index must not size it. */
#define KF_OFFSETS_MAX_PARTITION 100000

struct kf_offset {
    bool set;                    /* false: nothing committed */
    int32_t leader_epoch;        /* -1: unknown */
    int64_t offset;
    char *metadata;              /* never NULL once set ("" for a null commit) */
};

struct kf_offsets_topic {
    char *name;
    struct kf_offset *parts;     /* indexed by partition */
    int32_t n_parts;
};

struct kf_offsets_group {
    char *id;
    struct kf_offsets_topic *topics;
    size_t n_topics, cap_topics;
};

struct kf_offsets;

/* Opens (creating it if needed) the offsets log under data_dir: replays it, rewrites it
 * compacted and starts the group-commit worker. A torn last record is dropped with a warning;
 * a damaged record followed by intact ones, a wrong magic or version stop with WR_EPROTO and
 * an error naming the file and the offsets, and nothing on disk changes. WR_EBUSY when
 * another kf_offsets holds the directory (another listener, another process); WR_EIO,
 * WR_ENOMEM. */
int kf_offsets_open(struct wr_loop *lp, const char *data_dir, struct kf_offsets **out,
                    struct wr_error *err);
/* Makes every write durable, calls back every kf_offsets_wait pending, and frees o.
 * Accepts NULL. */
void kf_offsets_close(struct kf_offsets *o);

/* The groups that hold offsets: for (i = 0; i < n; i++) kf_offsets_group_at(o, i). The
 * pointers are good until the next kf_offsets_flush. */
size_t kf_offsets_n_groups(const struct kf_offsets *o);
const struct kf_offsets_group *kf_offsets_group_at(const struct kf_offsets *o, size_t i);
/* The group called id, or NULL if it holds no offsets. */
const struct kf_offsets_group *kf_offsets_find(const struct kf_offsets *o, const char *id);
/* The committed offset of (group, topic, partition), or NULL if there is none. */
const struct kf_offset *kf_offsets_get(const struct kf_offsets *o, const char *group,
                                       const char *topic, size_t topic_len, int32_t partition);

/* Stages a commit (metadata NULL: null) or the deletion of every offset of a group; nothing
 * changes until kf_offsets_flush. partition is in [0, KF_OFFSETS_MAX_PARTITION). */
void kf_offsets_stage_commit(struct kf_offsets *o, const char *group, const char *topic,
                             size_t topic_len, int32_t partition, int64_t offset,
                             int32_t leader_epoch, const char *metadata, size_t metadata_len);
void kf_offsets_stage_delete(struct kf_offsets *o, const char *group);
/* Writes what was staged and applies it to memory. WR_EIO (disk; nothing applied, the file
 * cut back) or WR_ENOMEM; the staged records are dropped either way. */
int kf_offsets_flush(struct kf_offsets *o, struct wr_error *err);
/* Calls cb(data, status) on the loop thread once everything flushed so far is on disk
 * (status WR_OK, or WR_EIO). Never calls back from inside this call. WR_ENOMEM. */
int kf_offsets_wait(struct kf_offsets *o, wr_storage_sync_cb *cb, void *data);
/* Makes everything flushed so far durable now, blocking the loop: for a reply that has to go
 * before the group commit comes round (its connection is closing). WR_OK or WR_EIO. */
int kf_offsets_sync_now(struct kf_offsets *o);

#endif
