/*
 * group.h: the consumer-group coordinator of the Kafka transport (Kafka's classic group
 * protocol, as a single broker that coordinates every group): FindCoordinator, JoinGroup,
 * SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups
 * and DeleteGroups.
 *
 * Each kf_group_* entry point answers its reply slot with the response encoded at `version`
 * (the dispatcher has checked it is a served one), now or later: a JoinGroup waits for the
 * rebalance to complete, a follower's SyncGroup for the leader's, an OffsetCommit or a
 * DeleteGroups for the group commit of the offsets file (offsets.h). A waiting reply whose
 * connection goes away is answered then (kf_reply_on_abort). The request struct is borrowed
 * for the call only.
 *
 * Thread: the loop's.
 */
#ifndef KAFKA_GROUP_H
#define KAFKA_GROUP_H

#include <stdint.h>

#include "warren/wr.h"

#include "conn.h"
#include "kafka_msgs.h"

struct kf_groups;

/* The coordinator's state, with the committed offsets of <data_dir>/kafka-offsets/ loaded
 * (groups that hold offsets come back Empty). Errors as kf_offsets_open: WR_EPROTO for a
 * damaged file (the message names it and what to do), WR_EBUSY (the directory is another
 * coordinator's), WR_EIO, WR_ENOMEM. */
int kf_groups_new(struct wr_broker *b, struct wr_loop *lp, const char *data_dir,
                  struct kf_groups **out, struct wr_error *err);
/* Answers every waiting JoinGroup and SyncGroup with COORDINATOR_NOT_AVAILABLE (the clients
 * find the coordinator again and rejoin), makes the committed offsets durable and answers the
 * commits waiting for that, cancels the timers and frees g. Accepts NULL. */
void kf_groups_free(struct kf_groups *g);

/* The session timeouts a JoinGroup may ask for, in ms (Kafka's group.min.session.timeout.ms
 * and group.max.session.timeout.ms; 6000 and 1800000 unless set); others get
 * INVALID_SESSION_TIMEOUT. */
void kf_groups_set_session_limits(struct kf_groups *g, int32_t min_ms, int32_t max_ms);

/* How long the first rebalance of an Empty group keeps its join phase open for more members,
 * in ms (Kafka's group.initial.rebalance.delay.ms; 3000 unless set; 0: not at all). Each
 * window that saw a new member is followed by another, while the first member's rebalance
 * timeout lasts. */
void kf_groups_set_initial_rebalance_delay(struct kf_groups *g, int32_t ms);

void kf_group_find_coordinator(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                               int16_t version, const struct kf_find_coordinator_request *req);
void kf_group_join_group(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                         int16_t version, const struct kf_join_group_request *req);
void kf_group_sync_group(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                         int16_t version, const struct kf_sync_group_request *req);
void kf_group_heartbeat(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                        int16_t version, const struct kf_heartbeat_request *req);
void kf_group_leave_group(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                          int16_t version, const struct kf_leave_group_request *req);
void kf_group_offset_commit(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                            int16_t version, const struct kf_offset_commit_request *req);
void kf_group_offset_fetch(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                           int16_t version, const struct kf_offset_fetch_request *req);
void kf_group_describe_groups(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                              int16_t version, const struct kf_describe_groups_request *req);
void kf_group_list_groups(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                          int16_t version, const struct kf_list_groups_request *req);
void kf_group_delete_groups(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                            int16_t version, const struct kf_delete_groups_request *req);

#endif
