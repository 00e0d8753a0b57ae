/*
 * kafka_group_test.c: the Kafka transport's consumer-group coordinator (plugins/kafka/group.c
 * and offsets.c, compiled in), driven with request structs as the dispatcher decodes them, on
 * the real loop with short timeouts. Replies go to a fake connection layer defined here (the
 * few conn.h functions group.c calls), and each test decodes them back with the generated
 * response decoders: what a client would read.
 */
#include <criterion/criterion.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../plugins/kafka/group.c"
#include "../../plugins/kafka/offsets.c"

#include "testutil.h"

/* ---- the fake connection layer ------------------------------------------------------- */

struct kf_conn {
    const char *client_id;
};

struct kf_reply {
    struct kf_reply *next;       /* every reply of the test, to free at the end */
    int16_t version;
    bool done;
    struct wr_bytes body;
    kf_reply_abort_cb *abort_cb;
    void *abort_data;
};

static struct kf_reply *replies;

void kf_reply_send(struct kf_reply *r, const struct wr_bytes *body)
{
    cr_assert(!r->done, "a reply completed twice");
    cr_assert(!body->oom);
    uint8_t *p = wr_bytes_grow(&r->body, body->len);
    cr_assert(p || !body->len);
    if (body->len)
        memcpy(p, body->p, body->len);
    r->done = true;
    r->abort_cb = NULL;
}

void kf_reply_on_abort(struct kf_reply *r, kf_reply_abort_cb *cb, void *data)
{
    r->abort_cb = cb;
    r->abort_data = data;
}

const char *kf_conn_client_id(const struct kf_conn *c)
{
    return c->client_id;
}

const char *kf_conn_client_host(const struct kf_conn *c)
{
    (void)c;
    return "/127.0.0.1";
}

const char *kf_conn_node_host(const struct kf_conn *c)
{
    (void)c;
    return "127.0.0.1";
}

int32_t kf_conn_node_port(const struct kf_conn *c)
{
    (void)c;
    return 19092;
}

/* ---- fixture ------------------------------------------------------------------------- */

static struct wr_loop *lp;
static struct kf_groups *g;
static char dir[64];
static struct kf_arena arena;    /* decoded responses */
static char *kept[256];          /* strings copied out of responses */
static size_t n_kept;

static struct kf_conn ca = {"alpha"}, cb = {"bravo"}, cc = {"charlie"};

static void open_groups(void)
{
    struct wr_error err = {0};
    cr_assert_eq(kf_groups_new(NULL, lp, dir, &g, &err), WR_OK, "%s", err.msg);
    kf_groups_set_session_limits(g, 10, 600000);
    kf_groups_set_initial_rebalance_delay(g, 0); /* the delay's own tests set one */
}

static void setup(void)
{
    snprintf(dir, sizeof dir, "/tmp/kafka_group_test.XXXXXX");
    cr_assert(mkdtemp(dir));
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_new(&lp, &err), WR_OK);
    open_groups();
}

static void teardown(void)
{
    kf_groups_free(g);
    g = NULL;
    while (replies) {
        struct kf_reply *r = replies;
        replies = r->next;
        wr_bytes_free(&r->body);
        free(r);
    }
    kf_arena_free(&arena);
    for (size_t i = 0; i < n_kept; i++)
        free(kept[i]);
    n_kept = 0;
    wr_loop_free(lp);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(kafka_group, .init = setup, .fini = teardown, .timeout = 30);

static struct kf_reply *reply_new(int16_t version)
{
    struct kf_reply *r = calloc(1, sizeof *r);
    cr_assert(r);
    r->version = version;
    r->next = replies;
    replies = r;
    return r;
}

static bool reply_done(void *data)
{
    return ((struct kf_reply *)data)->done;
}

/* Waits (the loop running) until r is answered, at most 3 s. */
static void wait_done(struct kf_reply *r)
{
    cr_assert(tu_wait(lp, reply_done, r, 3000), "no reply within 3 s");
}

static struct kf_in reply_in(const struct kf_reply *r)
{
    return (struct kf_in){r->body.p, r->body.p + r->body.len, false};
}

/* A NUL-terminated copy of s, freed at teardown. */
static const char *keep(struct kf_str s)
{
    cr_assert(s.ptr);
    cr_assert(n_kept < 256);
    char *p = malloc((size_t)s.len + 1);
    memcpy(p, s.ptr, (size_t)s.len);
    p[s.len] = '\0';
    return kept[n_kept++] = p;
}

static bool str_eq(struct kf_str s, const char *c)
{
    return s.ptr && strlen(c) == (size_t)s.len && memcmp(s.ptr, c, (size_t)s.len) == 0;
}

/* ---- requests ------------------------------------------------------------------------ */

static struct kf_reply *join(struct kf_conn *c, int16_t v, const char *group,
                             const char *member_id, const char *instance, int32_t session_ms,
                             const char *metadata)
{
    struct kf_join_group_request req;
    kf_join_group_request_init(&req);
    struct kf_join_group_request_join_group_request_protocol protos[2] = {
        {kf_str_c("range"), kf_str_c(metadata)},
        {kf_str_c("roundrobin"), kf_str_c("rr")},
    };
    req.group_id = kf_str_c(group);
    req.session_timeout_ms = session_ms;
    req.rebalance_timeout_ms = v >= 1 ? 1500 : -1;
    req.member_id = kf_str_c(member_id ? member_id : "");
    req.group_instance_id = kf_str_c(instance);
    req.protocol_type = kf_str_c("consumer");
    req.protocols = protos;
    req.n_protocols = 2;
    struct kf_reply *r = reply_new(v);
    kf_group_join_group(g, c, r, v, &req);
    return r;
}

static struct kf_join_group_response join_result(struct kf_reply *r)
{
    wait_done(r);
    struct kf_join_group_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_join_group_response_decode(&in, r->version, &arena, &rsp), WR_OK);
    return rsp;
}

/* The metadata the leader got for member id, or NULL if it is not in the list. */
static const char *member_meta(const struct kf_join_group_response *rsp, const char *id)
{
    for (int32_t i = 0; i < rsp->n_members; i++)
        if (str_eq(rsp->members[i].member_id, id))
            return keep(rsp->members[i].metadata);
    return NULL;
}

struct assign {
    const char *member_id, *assignment;
};

static struct kf_reply *sync_group(struct kf_conn *c, int16_t v, const char *group,
                                   int32_t generation, const char *member_id,
                                   const char *instance, const struct assign *as, int32_t n)
{
    struct kf_sync_group_request req;
    kf_sync_group_request_init(&req);
    struct kf_sync_group_request_sync_group_request_assignment list[4];
    cr_assert(n <= 4);
    for (int32_t i = 0; i < n; i++) {
        list[i].member_id = kf_str_c(as[i].member_id);
        list[i].assignment = kf_str_c(as[i].assignment);
    }
    req.group_id = kf_str_c(group);
    req.generation_id = generation;
    req.member_id = kf_str_c(member_id);
    req.group_instance_id = kf_str_c(instance);
    req.assignments = list;
    req.n_assignments = n;
    struct kf_reply *r = reply_new(v);
    kf_group_sync_group(g, c, r, v, &req);
    return r;
}

static struct kf_sync_group_response sync_result(struct kf_reply *r)
{
    wait_done(r);
    struct kf_sync_group_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_sync_group_response_decode(&in, r->version, &arena, &rsp), WR_OK);
    return rsp;
}

static int16_t heartbeat(int16_t v, const char *group, int32_t generation, const char *member_id,
                         const char *instance)
{
    struct kf_heartbeat_request req;
    kf_heartbeat_request_init(&req);
    req.group_id = kf_str_c(group);
    req.generation_id = generation;
    req.member_id = kf_str_c(member_id);
    req.group_instance_id = kf_str_c(instance);
    struct kf_reply *r = reply_new(v);
    kf_group_heartbeat(g, &ca, r, v, &req);
    cr_assert(r->done, "a heartbeat is answered at once");
    struct kf_heartbeat_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_heartbeat_response_decode(&in, v, &arena, &rsp), WR_OK);
    return rsp.error_code;
}

static int16_t leave(const char *group, const char *member_id)
{
    struct kf_leave_group_request req;
    kf_leave_group_request_init(&req);
    req.group_id = kf_str_c(group);
    req.member_id = kf_str_c(member_id);
    struct kf_reply *r = reply_new(0);
    kf_group_leave_group(g, &ca, r, 0, &req);
    cr_assert(r->done);
    struct kf_leave_group_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_leave_group_response_decode(&in, 0, &arena, &rsp), WR_OK);
    return rsp.error_code;
}

/* Commits offset+p for partitions 0..n-1 of topic; returns the first partition's error. */
static int16_t commit(int16_t v, const char *group, int32_t generation, const char *member_id,
                      const char *topic, int64_t offset, int32_t n)
{
    struct kf_offset_commit_request req;
    kf_offset_commit_request_init(&req);
    struct kf_offset_commit_request_offset_commit_request_partition parts[8];
    cr_assert(n <= 8);
    for (int32_t p = 0; p < n; p++) {
        parts[p].partition_index = p;
        parts[p].committed_offset = offset + p;
        parts[p].committed_leader_epoch = -1;
        parts[p].committed_metadata = kf_str_c(p == 0 ? "meta-0" : NULL);
    }
    struct kf_offset_commit_request_offset_commit_request_topic t = {kf_str_c(topic), parts, n};
    req.group_id = kf_str_c(group);
    req.generation_id_or_member_epoch = generation;
    req.member_id = kf_str_c(member_id);
    req.topics = &t;
    req.n_topics = 1;
    struct kf_reply *r = reply_new(v);
    kf_group_offset_commit(g, &ca, r, v, &req);
    wait_done(r);
    struct kf_offset_commit_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_offset_commit_response_decode(&in, v, &arena, &rsp), WR_OK);
    cr_assert_eq(rsp.n_topics, 1);
    cr_assert_eq(rsp.topics[0].n_partitions, n);
    for (int32_t p = 1; p < n; p++)
        cr_assert_eq(rsp.topics[0].partitions[p].error_code,
                     rsp.topics[0].partitions[0].error_code);
    return rsp.topics[0].partitions[0].error_code;
}

/* The committed offset of partition p of topic (-1: none), and its metadata into *meta. */
static int64_t fetch(int16_t v, const char *group, const char *topic, int32_t p,
                     const char **meta)
{
    struct kf_offset_fetch_request req;
    kf_offset_fetch_request_init(&req);
    struct kf_offset_fetch_request_offset_fetch_request_topic t = {kf_str_c(topic), &p, 1};
    req.group_id = kf_str_c(group);
    req.topics = &t;
    req.n_topics = 1;
    struct kf_reply *r = reply_new(v);
    kf_group_offset_fetch(g, &ca, r, v, &req);
    cr_assert(r->done);
    struct kf_offset_fetch_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_offset_fetch_response_decode(&in, v, &arena, &rsp), WR_OK);
    cr_assert_eq(rsp.error_code, 0);
    cr_assert_eq(rsp.n_topics, 1);
    cr_assert_eq(rsp.topics[0].n_partitions, 1);
    cr_assert_eq(rsp.topics[0].partitions[0].partition_index, p);
    cr_assert_eq(rsp.topics[0].partitions[0].error_code, 0);
    if (meta)
        *meta = keep(rsp.topics[0].partitions[0].metadata);
    return rsp.topics[0].partitions[0].committed_offset;
}

static struct kf_describe_groups_response_described_group describe(const char *group)
{
    struct kf_describe_groups_request req;
    kf_describe_groups_request_init(&req);
    struct kf_str id = kf_str_c(group);
    req.groups = &id;
    req.n_groups = 1;
    struct kf_reply *r = reply_new(4);
    kf_group_describe_groups(g, &ca, r, 4, &req);
    cr_assert(r->done);
    struct kf_describe_groups_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_describe_groups_response_decode(&in, 4, &arena, &rsp), WR_OK);
    cr_assert_eq(rsp.n_groups, 1);
    return rsp.groups[0];
}

static int16_t delete_group(const char *group)
{
    struct kf_delete_groups_request req;
    kf_delete_groups_request_init(&req);
    struct kf_str id = kf_str_c(group);
    req.groups_names = &id;
    req.n_groups_names = 1;
    struct kf_reply *r = reply_new(1);
    kf_group_delete_groups(g, &ca, r, 1, &req);
    wait_done(r);
    struct kf_delete_groups_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_delete_groups_response_decode(&in, 1, &arena, &rsp), WR_OK);
    cr_assert_eq(rsp.n_results, 1);
    cr_assert(str_eq(rsp.results[0].group_id, group));
    return rsp.results[0].error_code;
}

/* ---- the tests ----------------------------------------------------------------------- */

Test(kafka_group, find_coordinator_names_the_listener)
{
    struct kf_find_coordinator_request req;
    kf_find_coordinator_request_init(&req);
    req.key = kf_str_c("g");
    struct kf_reply *r = reply_new(2);
    kf_group_find_coordinator(g, &ca, r, 2, &req);
    cr_assert(r->done);
    struct kf_find_coordinator_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_find_coordinator_response_decode(&in, 2, &arena, &rsp), WR_OK);
    cr_assert_eq(rsp.error_code, 0);
    cr_assert_eq(rsp.node_id, 0);
    cr_assert(str_eq(rsp.host, "127.0.0.1"));
    cr_assert_eq(rsp.port, 19092);
}

/* kafka-go's versions: JoinGroup 1, SyncGroup 0, Heartbeat 0, LeaveGroup 0. */
Test(kafka_group, three_members_one_late_one_leaving)
{
    /* alpha alone: generation 1, its own leader. */
    struct kf_join_group_response a = join_result(join(&ca, 1, "g", NULL, NULL, 10000, "ma"));
    cr_assert_eq(a.error_code, 0);
    const char *ida = keep(a.member_id);
    cr_assert_eq(strncmp(ida, "alpha-", 6), 0, "member id %s", ida);
    cr_assert(str_eq(a.leader, ida));
    cr_assert(str_eq(a.protocol_name, "range"));
    cr_assert_eq(a.n_members, 1);
    int32_t gen1 = a.generation_id;
    struct assign as1[] = {{ida, "a1"}};
    struct kf_sync_group_response s = sync_result(sync_group(&ca, 0, "g", gen1, ida, NULL,
                                                             as1, 1));
    cr_assert_eq(s.error_code, 0);
    cr_assert(str_eq(s.assignment, "a1"));
    cr_assert_eq(heartbeat(0, "g", gen1, ida, NULL), 0);

    /* bravo joins: alpha learns it from its heartbeat and rejoins. */
    struct kf_reply *jb = join(&cb, 1, "g", NULL, NULL, 10000, "mb");
    cr_assert(!jb->done, "the join waits for alpha");
    cr_assert_eq(heartbeat(0, "g", gen1, ida, NULL), KF_ERR_REBALANCE_IN_PROGRESS);
    a = join_result(join(&ca, 1, "g", ida, NULL, 10000, "ma"));
    struct kf_join_group_response b = join_result(jb);
    cr_assert_eq(a.error_code, 0);
    cr_assert_eq(b.error_code, 0);
    const char *idb = keep(b.member_id);
    int32_t gen2 = a.generation_id;
    cr_assert_gt(gen2, gen1);
    cr_assert_eq(b.generation_id, gen2);
    cr_assert(str_eq(a.leader, ida) && str_eq(b.leader, ida));
    cr_assert_eq(a.n_members, 2);
    cr_assert_eq(b.n_members, 0, "only the leader gets the members");
    cr_assert_str_eq(member_meta(&a, ida), "ma");
    cr_assert_str_eq(member_meta(&a, idb), "mb");

    /* The follower's SyncGroup waits for the leader's. */
    struct kf_reply *sb = sync_group(&cb, 0, "g", gen2, idb, NULL, NULL, 0);
    cr_assert(!sb->done);
    struct assign as2[] = {{ida, "a2"}, {idb, "b2"}};
    s = sync_result(sync_group(&ca, 0, "g", gen2, ida, NULL, as2, 2));
    cr_assert(str_eq(s.assignment, "a2"));
    s = sync_result(sb);
    cr_assert_eq(s.error_code, 0);
    cr_assert(str_eq(s.assignment, "b2"));

    /* charlie joins late. */
    struct kf_reply *jc = join(&cc, 1, "g", NULL, NULL, 10000, "mc");
    cr_assert_eq(heartbeat(0, "g", gen2, ida, NULL), KF_ERR_REBALANCE_IN_PROGRESS);
    cr_assert_eq(heartbeat(0, "g", gen2, idb, NULL), KF_ERR_REBALANCE_IN_PROGRESS);
    struct kf_reply *ja = join(&ca, 1, "g", ida, NULL, 10000, "ma");
    cr_assert(!ja->done && !jc->done, "bravo has not rejoined yet");
    struct kf_reply *jb3 = join(&cb, 1, "g", idb, NULL, 10000, "mb");
    a = join_result(ja);
    b = join_result(jb3);
    struct kf_join_group_response c = join_result(jc);
    const char *idc = keep(c.member_id);
    int32_t gen3 = a.generation_id;
    cr_assert_gt(gen3, gen2);
    cr_assert(b.generation_id == gen3 && c.generation_id == gen3);
    cr_assert_eq(a.n_members, 3);
    cr_assert_str_eq(member_meta(&a, idc), "mc");
    struct kf_reply *sc = sync_group(&cc, 0, "g", gen3, idc, NULL, NULL, 0);
    sb = sync_group(&cb, 0, "g", gen3, idb, NULL, NULL, 0);
    struct assign as3[] = {{ida, "a3"}, {idb, "b3"}, {idc, "c3"}};
    cr_assert(str_eq(sync_result(sync_group(&ca, 0, "g", gen3, ida, NULL, as3, 3)).assignment,
                     "a3"));
    cr_assert(str_eq(sync_result(sb).assignment, "b3"));
    cr_assert(str_eq(sync_result(sc).assignment, "c3"));
    cr_assert_str_eq(keep(describe("g").group_state), "Stable");

    /* bravo leaves: the other two rebalance without it. */
    cr_assert_eq(leave("g", idb), 0);
    cr_assert_eq(heartbeat(0, "g", gen3, idb, NULL), KF_ERR_UNKNOWN_MEMBER_ID);
    cr_assert_eq(heartbeat(0, "g", gen3, idc, NULL), KF_ERR_REBALANCE_IN_PROGRESS);
    jc = join(&cc, 1, "g", idc, NULL, 10000, "mc");
    a = join_result(join(&ca, 1, "g", ida, NULL, 10000, "ma"));
    c = join_result(jc);
    int32_t gen4 = a.generation_id;
    cr_assert_gt(gen4, gen3);
    cr_assert_eq(c.generation_id, gen4);
    cr_assert_eq(a.n_members, 2);
    cr_assert_null(member_meta(&a, idb));
    cr_assert_not_null(member_meta(&a, idc));
    sc = sync_group(&cc, 0, "g", gen4, idc, NULL, NULL, 0);
    struct assign as4[] = {{ida, "a4"}, {idc, "c4"}};
    cr_assert(str_eq(sync_result(sync_group(&ca, 0, "g", gen4, ida, NULL, as4, 2)).assignment,
                     "a4"));
    cr_assert(str_eq(sync_result(sc).assignment, "c4"));
    cr_assert_eq(heartbeat(0, "g", gen3, ida, NULL), KF_ERR_ILLEGAL_GENERATION);
    cr_assert_eq(heartbeat(0, "g", gen4, ida, NULL), 0);
}

Test(kafka_group, a_member_that_does_not_rejoin_is_dropped_after_the_rebalance_timeout)
{
    struct kf_join_group_response a = join_result(join(&ca, 1, "g", NULL, NULL, 10000, "ma"));
    const char *ida = keep(a.member_id);
    struct kf_reply *jb = join(&cb, 1, "g", NULL, NULL, 10000, "mb");
    /* alpha never rejoins: after the rebalance timeout (1.5 s) bravo goes on alone. */
    struct kf_join_group_response b = join_result(jb);
    cr_assert_eq(b.error_code, 0);
    const char *idb = keep(b.member_id);
    cr_assert(str_eq(b.leader, idb));
    cr_assert_eq(b.n_members, 1);
    cr_assert_eq(heartbeat(0, "g", b.generation_id, ida, NULL), KF_ERR_UNKNOWN_MEMBER_ID);
}

static bool one_member(void *data)
{
    (void)data;
    struct group *grp = group_find(g, kf_str_c("g"));
    return grp && grp->n_members == 1;
}

Test(kafka_group, session_expiry_removes_a_silent_member)
{
    struct kf_reply *ja = join(&ca, 1, "g", NULL, NULL, 300, "ma");
    struct kf_join_group_response a = join_result(ja);
    const char *ida = keep(a.member_id);
    struct kf_reply *jb = join(&cb, 1, "g", NULL, NULL, 300, "mb");
    a = join_result(join(&ca, 1, "g", ida, NULL, 300, "ma"));
    struct kf_join_group_response b = join_result(jb);
    const char *idb = keep(b.member_id);
    int32_t gen = a.generation_id;
    struct kf_reply *sb = sync_group(&cb, 0, "g", gen, idb, NULL, NULL, 0);
    struct assign as[] = {{ida, "a"}, {idb, "b"}};
    sync_result(sync_group(&ca, 0, "g", gen, ida, NULL, as, 2));
    sync_result(sb);
    /* alpha keeps heartbeating, bravo falls silent. */
    uint64_t deadline = wr_loop_now_ms(lp) + 3000;
    int16_t e = 0;
    while (e == 0 && wr_loop_now_ms(lp) < deadline) {
        struct wr_error err = {0};
        wr_loop_run_once(lp, 50, &err);
        e = heartbeat(0, "g", gen, ida, NULL);
    }
    cr_assert_eq(e, KF_ERR_REBALANCE_IN_PROGRESS, "bravo's expiry starts a rebalance");
    cr_assert(one_member(NULL));
    a = join_result(join(&ca, 1, "g", ida, NULL, 300, "ma"));
    cr_assert_eq(a.n_members, 1);
    cr_assert_gt(a.generation_id, gen);
    cr_assert_eq(heartbeat(0, "g", a.generation_id, idb, NULL), KF_ERR_UNKNOWN_MEMBER_ID);
}

Test(kafka_group, member_id_required_from_join_group_v4)
{
    struct kf_join_group_response a = join_result(join(&ca, 4, "g", NULL, NULL, 10000, "ma"));
    cr_assert_eq(a.error_code, KF_ERR_MEMBER_ID_REQUIRED);
    cr_assert_eq(a.generation_id, -1);
    const char *ida = keep(a.member_id);
    cr_assert_eq(strncmp(ida, "alpha-", 6), 0);
    cr_assert_eq(strlen(ida), 6 + 36, "a uuid follows the client id: %s", ida);
    cr_assert_str_eq(keep(describe("g").group_state), "Empty");
    a = join_result(join(&ca, 4, "g", ida, NULL, 10000, "ma"));
    cr_assert_eq(a.error_code, 0);
    cr_assert(str_eq(a.member_id, ida));
    cr_assert(str_eq(a.leader, ida));
    cr_assert_eq(a.generation_id, 1);
    /* A made-up id is refused; v3 and below join in one step. */
    cr_assert_eq(join_result(join(&cb, 4, "g", "bravo-made-up", NULL, 10000, "mb")).error_code,
                 KF_ERR_UNKNOWN_MEMBER_ID);
    struct kf_reply *jb = join(&cb, 3, "g", NULL, NULL, 10000, "mb");
    cr_assert(!jb->done, "a v3 join enters the rebalance at once");
}

Test(kafka_group, heartbeat_errors)
{
    struct kf_join_group_response a = join_result(join(&ca, 2, "g", NULL, NULL, 10000, "ma"));
    const char *ida = keep(a.member_id);
    int32_t gen = a.generation_id;
    cr_assert_eq(heartbeat(3, "g", gen, ida, NULL), 0, "CompletingRebalance: fine");
    struct assign as[] = {{ida, "a"}};
    sync_result(sync_group(&ca, 3, "g", gen, ida, NULL, as, 1));
    cr_assert_eq(heartbeat(3, "g", gen, ida, NULL), 0);
    cr_assert_eq(heartbeat(3, "g", gen + 1, ida, NULL), KF_ERR_ILLEGAL_GENERATION);
    cr_assert_eq(heartbeat(3, "g", gen, "nobody", NULL), KF_ERR_UNKNOWN_MEMBER_ID);
    cr_assert_eq(heartbeat(3, "other", gen, ida, NULL), KF_ERR_UNKNOWN_MEMBER_ID);
    join(&cb, 2, "g", NULL, NULL, 10000, "mb");
    cr_assert_eq(heartbeat(3, "g", gen, ida, NULL), KF_ERR_REBALANCE_IN_PROGRESS);
    cr_assert_eq(sync_result(sync_group(&ca, 3, "g", gen, ida, NULL, NULL, 0)).error_code,
                 KF_ERR_REBALANCE_IN_PROGRESS);
}

Test(kafka_group, protocols_must_overlap)
{
    struct kf_join_group_response a = join_result(join(&ca, 1, "g", NULL, NULL, 10000, "ma"));
    cr_assert_eq(a.error_code, 0);
    struct kf_join_group_request req;
    kf_join_group_request_init(&req);
    struct kf_join_group_request_join_group_request_protocol p = {kf_str_c("sticky"),
                                                                  kf_str_c("x")};
    req.group_id = kf_str_c("g");
    req.session_timeout_ms = 10000;
    req.member_id = kf_str_c("");
    req.protocol_type = kf_str_c("consumer");
    req.protocols = &p;
    req.n_protocols = 1;
    struct kf_reply *r = reply_new(1);
    kf_group_join_group(g, &cb, r, 1, &req);
    cr_assert_eq(join_result(r).error_code, KF_ERR_INCONSISTENT_GROUP_PROTOCOL);
    cr_assert_eq(join_result(join(&cb, 1, "g", NULL, NULL, 5, "mb")).error_code,
                 KF_ERR_INVALID_SESSION_TIMEOUT);
}

Test(kafka_group, offsets_commit_fetch_and_survive_a_restart)
{
    /* assign() mode: generation -1, no member. */
    cr_assert_eq(commit(2, "og", -1, "", "orders", 100, 3), 0);
    const char *meta = NULL;
    cr_assert_eq(fetch(1, "og", "orders", 0, &meta), 100);
    cr_assert_str_eq(meta, "meta-0");
    cr_assert_eq(fetch(1, "og", "orders", 2, &meta), 102);
    cr_assert_str_eq(meta, "", "a null metadata reads back empty, as in Kafka");
    cr_assert_eq(fetch(5, "og", "orders", 7, NULL), -1);
    cr_assert_eq(fetch(5, "og", "nothing", 0, NULL), -1);
    cr_assert_eq(fetch(5, "nogroup", "orders", 0, NULL), -1);
    cr_assert_eq(commit(7, "og", -1, "", "orders", 200, 1), 0);
    cr_assert_str_eq(keep(describe("og").group_state), "Empty");

    /* A group with members checks member and generation. */
    struct kf_join_group_response a = join_result(join(&ca, 1, "g", NULL, NULL, 10000, "ma"));
    const char *ida = keep(a.member_id);
    int32_t gen = a.generation_id;
    cr_assert_eq(commit(2, "g", gen, ida, "t", 1, 1), KF_ERR_REBALANCE_IN_PROGRESS,
                 "CompletingRebalance: no commits");
    struct assign as[] = {{ida, "a"}};
    sync_result(sync_group(&ca, 0, "g", gen, ida, NULL, as, 1));
    cr_assert_eq(commit(2, "g", gen, ida, "t", 5, 1), 0);
    cr_assert_eq(commit(2, "g", gen + 1, ida, "t", 6, 1), KF_ERR_ILLEGAL_GENERATION);
    cr_assert_eq(commit(2, "g", gen, "nobody", "t", 6, 1), KF_ERR_UNKNOWN_MEMBER_ID);
    cr_assert_eq(commit(2, "nog", 3, "nobody", "t", 6, 1), KF_ERR_ILLEGAL_GENERATION);
    cr_assert_eq(fetch(3, "g", "t", 0, NULL), 5);

    /* Graceful stop and start on the same directory. */
    kf_groups_free(g);
    g = NULL;
    open_groups();
    cr_assert_eq(fetch(1, "og", "orders", 0, &meta), 200);
    cr_assert_str_eq(meta, "meta-0");
    cr_assert_eq(fetch(1, "og", "orders", 1, NULL), 101);
    cr_assert_eq(fetch(1, "og", "orders", 2, NULL), 102);
    cr_assert_eq(fetch(4, "g", "t", 0, NULL), 5);
    cr_assert_str_eq(keep(describe("g").group_state), "Empty", "members do not survive");

    /* Only an empty group can be deleted, and its offsets go with it, for good. */
    cr_assert_eq(delete_group("og"), 0);
    cr_assert_eq(delete_group("og"), KF_ERR_GROUP_ID_NOT_FOUND);
    cr_assert_eq(fetch(1, "og", "orders", 0, NULL), -1);
    kf_groups_free(g);
    g = NULL;
    open_groups();
    cr_assert_eq(fetch(1, "og", "orders", 0, NULL), -1);
    cr_assert_eq(fetch(1, "g", "t", 0, NULL), 5);
}

Test(kafka_group, list_describe_delete)
{
    struct kf_join_group_response a = join_result(join(&ca, 1, "live", NULL, NULL, 10000, "ma"));
    const char *ida = keep(a.member_id);
    cr_assert_eq(commit(2, "quiet", -1, "", "t", 1, 1), 0);
    struct kf_list_groups_request lreq;
    kf_list_groups_request_init(&lreq);
    struct kf_reply *r = reply_new(2);
    kf_group_list_groups(g, &ca, r, 2, &lreq);
    struct kf_list_groups_response list;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_list_groups_response_decode(&in, 2, &arena, &list), WR_OK);
    cr_assert_eq(list.error_code, 0);
    cr_assert_eq(list.n_groups, 2);
    bool seen_live = false, seen_quiet = false;
    for (int32_t i = 0; i < list.n_groups; i++) {
        if (str_eq(list.groups[i].group_id, "live"))
            seen_live = str_eq(list.groups[i].protocol_type, "consumer");
        if (str_eq(list.groups[i].group_id, "quiet"))
            seen_quiet = str_eq(list.groups[i].protocol_type, "");
    }
    cr_assert(seen_live && seen_quiet);

    struct assign as[] = {{ida, "the-assignment"}};
    sync_result(sync_group(&ca, 0, "live", a.generation_id, ida, NULL, as, 1));
    struct kf_describe_groups_response_described_group d = describe("live");
    cr_assert_eq(d.error_code, 0);
    cr_assert(str_eq(d.group_state, "Stable"));
    cr_assert(str_eq(d.protocol_type, "consumer"));
    cr_assert(str_eq(d.protocol_data, "range"));
    cr_assert_eq(d.n_members, 1);
    cr_assert(str_eq(d.members[0].member_id, ida));
    cr_assert(str_eq(d.members[0].client_id, "alpha"));
    cr_assert(str_eq(d.members[0].client_host, "/127.0.0.1"));
    cr_assert(str_eq(d.members[0].member_metadata, "ma"));
    cr_assert(str_eq(d.members[0].member_assignment, "the-assignment"));
    cr_assert(str_eq(describe("unknown").group_state, "Dead"));

    cr_assert_eq(delete_group("live"), KF_ERR_NON_EMPTY_GROUP);
    cr_assert_eq(leave("live", ida), 0);
    cr_assert_eq(leave("live", ida), KF_ERR_UNKNOWN_MEMBER_ID);
    cr_assert(str_eq(describe("live").group_state, "Dead"),
                 "a group without members or offsets is gone");
    cr_assert_eq(delete_group("quiet"), 0);
    cr_assert_eq(delete_group(""), KF_ERR_INVALID_GROUP_ID);
}

Test(kafka_group, leave_group_v3_batch)
{
    struct kf_join_group_response a = join_result(join(&ca, 5, "g", NULL, "inst-a", 10000,
                                                       "ma"));
    const char *ida = keep(a.member_id);
    struct kf_leave_group_request req;
    kf_leave_group_request_init(&req);
    struct kf_leave_group_request_member_identity who[2] = {
        {kf_str_c(""), kf_str_c("inst-a")},
        {kf_str_c("ghost"), kf_str_c(NULL)},
    };
    req.group_id = kf_str_c("g");
    req.members = who;
    req.n_members = 2;
    struct kf_reply *r = reply_new(3);
    kf_group_leave_group(g, &ca, r, 3, &req);
    struct kf_leave_group_response rsp;
    struct kf_in in = reply_in(r);
    cr_assert_eq(kf_leave_group_response_decode(&in, 3, &arena, &rsp), WR_OK);
    cr_assert_eq(rsp.error_code, 0);
    cr_assert_eq(rsp.n_members, 2);
    cr_assert_eq(rsp.members[0].error_code, 0);
    cr_assert(str_eq(rsp.members[0].group_instance_id, "inst-a"));
    cr_assert_eq(rsp.members[1].error_code, KF_ERR_UNKNOWN_MEMBER_ID);
    cr_assert_eq(heartbeat(0, "g", a.generation_id, ida, NULL), KF_ERR_UNKNOWN_MEMBER_ID);
}

Test(kafka_group, static_member_rejoins_into_its_slot)
{
    struct kf_join_group_response a = join_result(join(&ca, 5, "g", NULL, "inst-a", 10000,
                                                       "ma"));
    const char *ida = keep(a.member_id);
    struct kf_reply *jb = join(&cb, 5, "g", NULL, "inst-b", 10000, "mb");
    a = join_result(join(&ca, 5, "g", ida, "inst-a", 10000, "ma"));
    struct kf_join_group_response b = join_result(jb);
    const char *idb = keep(b.member_id);
    int32_t gen = a.generation_id;
    cr_assert_eq(a.n_members, 2);
    struct kf_reply *sb = sync_group(&cb, 3, "g", gen, idb, "inst-b", NULL, 0);
    struct assign as[] = {{ida, "a"}, {idb, "b"}};
    sync_result(sync_group(&ca, 3, "g", gen, ida, "inst-a", as, 2));
    cr_assert(str_eq(sync_result(sb).assignment, "b"));

    /* bravo restarts: a join with no member id but its instance id. No rebalance. */
    b = join_result(join(&cb, 5, "g", NULL, "inst-b", 10000, "mb"));
    cr_assert_eq(b.error_code, 0);
    const char *idb2 = keep(b.member_id);
    cr_assert_str_neq(idb2, idb);
    cr_assert_eq(b.generation_id, gen, "same generation: no rebalance");
    cr_assert(str_eq(b.leader, ida));
    cr_assert_eq(heartbeat(3, "g", gen, ida, "inst-a"), 0, "alpha is not disturbed");
    cr_assert(str_eq(sync_result(sync_group(&cb, 3, "g", gen, idb2, "inst-b", NULL, 0))
                         .assignment, "b"), "its old assignment comes back");
    cr_assert_eq(heartbeat(3, "g", gen, idb, "inst-b"), KF_ERR_FENCED_INSTANCE_ID);
    cr_assert_eq(heartbeat(3, "g", gen, idb2, "inst-b"), 0);

    /* The leader restarts too: it gets the old leader id back, so it does not assign. */
    a = join_result(join(&ca, 5, "g", NULL, "inst-a", 10000, "ma"));
    cr_assert_eq(a.error_code, 0);
    cr_assert(str_eq(a.leader, ida));
    cr_assert(!str_eq(a.member_id, ida));
    cr_assert_eq(a.n_members, 0);
    struct kf_describe_groups_response_described_group d = describe("g");
    cr_assert_eq(d.n_members, 2);
    cr_assert(str_eq(d.members[0].group_instance_id, "inst-a"), "its slot: first, the leader");
    cr_assert(str_eq(d.members[0].member_id, keep(a.member_id)));
}

Test(kafka_group, stop_answers_waiting_joins)
{
    struct kf_join_group_response a = join_result(join(&ca, 1, "g", NULL, NULL, 10000, "ma"));
    keep(a.member_id);
    struct kf_reply *jb = join(&cb, 1, "g", NULL, NULL, 10000, "mb");
    cr_assert(!jb->done);
    kf_groups_free(g);
    g = NULL;
    cr_assert(jb->done);
    struct kf_join_group_response b;
    struct kf_in in = reply_in(jb);
    cr_assert_eq(kf_join_group_response_decode(&in, 1, &arena, &b), WR_OK);
    cr_assert_eq(b.error_code, KF_ERR_COORDINATOR_NOT_AVAILABLE);
}

Test(kafka_group, a_closing_connection_gets_its_join_answered)
{
    join_result(join(&ca, 1, "g", NULL, NULL, 10000, "ma"));
    struct kf_reply *jb = join(&cb, 1, "g", NULL, NULL, 10000, "mb");
    cr_assert_not_null(jb->abort_cb);
    jb->abort_cb(jb, jb->abort_data);
    cr_assert(jb->done);
}

/* ---- protocol selection and the initial rebalance delay ------------------------------ */

/* A JoinGroup v1 (rebalance timeout 1.5 s) offering protocols in this order of preference,
 * each with metadata "<client id>:<protocol>". */
static struct kf_reply *join_offering(struct kf_conn *c, const char *group,
                                      const char *const *names, int32_t n)
{
    struct kf_join_group_request_join_group_request_protocol protos[4];
    char meta[4][32];
    cr_assert(n <= 4);
    for (int32_t i = 0; i < n; i++) {
        snprintf(meta[i], sizeof meta[i], "%s:%s", c->client_id, names[i]);
        protos[i].name = kf_str_c(names[i]);
        protos[i].metadata = kf_str_c(meta[i]);
    }
    struct kf_join_group_request req;
    kf_join_group_request_init(&req);
    req.group_id = kf_str_c(group);
    req.session_timeout_ms = 10000;
    req.rebalance_timeout_ms = 1500;
    req.member_id = kf_str_c("");
    req.protocol_type = kf_str_c("consumer");
    req.protocols = protos;
    req.n_protocols = n;
    struct kf_reply *r = reply_new(1);
    kf_group_join_group(g, c, r, 1, &req);
    return r;
}

static bool never(void *data)
{
    (void)data;
    return false;
}

/* Runs the loop for ms: what the group does meanwhile is up to its timers. */
static void run_loop_for(int ms)
{
    cr_assert(!tu_wait(lp, never, NULL, ms));
}

Test(kafka_group, the_protocol_is_chosen_by_the_members_votes)
{
    kf_groups_set_initial_rebalance_delay(g, 50); /* the three join one generation */
    const char *a_prefs[] = {"range", "roundrobin"};
    const char *b_prefs[] = {"roundrobin", "range"};
    const char *c_prefs[] = {"sticky", "roundrobin", "range"};
    struct kf_reply *ja = join_offering(&ca, "g", a_prefs, 2);
    struct kf_reply *jb = join_offering(&cb, "g", b_prefs, 2);
    struct kf_reply *jc = join_offering(&cc, "g", c_prefs, 3);
    struct kf_join_group_response a = join_result(ja), b = join_result(jb),
                                  c = join_result(jc);
    /* sticky is not a candidate (alpha and bravo lack it); bravo and charlie vote roundrobin,
     * alpha, the leader, range. */
    cr_assert_eq(a.n_members, 3);
    cr_assert(str_eq(a.leader, keep(a.member_id)));
    cr_assert(str_eq(a.protocol_name, "roundrobin"), "%s", keep(a.protocol_name));
    cr_assert(str_eq(b.protocol_name, "roundrobin") && str_eq(c.protocol_name, "roundrobin"));
    cr_assert_str_eq(member_meta(&a, keep(a.member_id)), "alpha:roundrobin");
    cr_assert_str_eq(member_meta(&a, keep(b.member_id)), "bravo:roundrobin");
    cr_assert_str_eq(member_meta(&a, keep(c.member_id)), "charlie:roundrobin");
}

/* One vote each: Kafka keeps the first of the tied protocols in the order java.util.HashMap
 * iterates them, by the names' String.hashCode: range before roundrobin, sticky before range.
 * Neither the leader's preference nor the alphabet decides. */
Test(kafka_group, a_tied_vote_goes_as_on_kafka)
{
    kf_groups_set_initial_rebalance_delay(g, 50);
    const char *rr_first[] = {"roundrobin", "range"}, *range_first[] = {"range", "roundrobin"};
    struct kf_reply *ja = join_offering(&ca, "g1", rr_first, 2);
    struct kf_reply *jb = join_offering(&cb, "g1", range_first, 2);
    const char *range_sticky[] = {"range", "sticky"}, *sticky_range[] = {"sticky", "range"};
    struct kf_reply *jc = join_offering(&cc, "g2", range_sticky, 2);
    struct kf_reply *ja2 = join_offering(&ca, "g2", sticky_range, 2);
    struct kf_join_group_response a = join_result(ja), c = join_result(jc);
    cr_assert_eq(a.n_members, 2);
    cr_assert(str_eq(a.protocol_name, "range"), "%s", keep(a.protocol_name));
    cr_assert(str_eq(join_result(jb).protocol_name, "range"));
    cr_assert_eq(c.n_members, 2);
    cr_assert(str_eq(c.protocol_name, "sticky"), "%s", keep(c.protocol_name));
    cr_assert(str_eq(join_result(ja2).protocol_name, "sticky"));
}

Test(kafka_group, the_initial_delay_gathers_members_into_one_generation)
{
    kf_groups_set_initial_rebalance_delay(g, 300);
    uint64_t t0 = wr_loop_now_ms(lp);
    struct kf_reply *ja = join(&ca, 1, "g", NULL, NULL, 10000, "ma");
    struct kf_reply *jb = join(&cb, 1, "g", NULL, NULL, 10000, "mb");
    cr_assert_str_eq(keep(describe("g").group_state), "PreparingRebalance");
    /* bravo came in the first window, so a second one follows: nothing before 600 ms. */
    run_loop_for(450);
    cr_assert(!ja->done && !jb->done, "answered before the delay was over");
    struct kf_join_group_response a = join_result(ja), b = join_result(jb);
    cr_assert_geq(wr_loop_now_ms(lp) - t0, 600);
    cr_assert_eq(a.error_code, 0);
    cr_assert_eq(b.error_code, 0);
    cr_assert_eq(a.generation_id, b.generation_id);
    cr_assert_eq(a.n_members, 2);
    cr_assert_str_eq(member_meta(&a, keep(a.member_id)), "ma");
    cr_assert_str_eq(member_meta(&a, keep(b.member_id)), "mb");
    cr_assert(str_eq(b.leader, keep(a.member_id)));
}

/* The KIP-394 way in (v4: a member id first, then the join with it) counts as a new member
 * too, and a window without one ends the join phase. */
Test(kafka_group, the_initial_delay_waits_for_members_that_first_get_an_id)
{
    kf_groups_set_initial_rebalance_delay(g, 200);
    struct kf_join_group_response first = join_result(join(&ca, 4, "g", NULL, NULL, 10000,
                                                           "ma"));
    cr_assert_eq(first.error_code, KF_ERR_MEMBER_ID_REQUIRED);
    uint64_t t0 = wr_loop_now_ms(lp);
    struct kf_reply *ja = join(&ca, 4, "g", keep(first.member_id), NULL, 10000, "ma");
    run_loop_for(100);
    first = join_result(join(&cb, 4, "g", NULL, NULL, 10000, "mb"));
    struct kf_reply *jb = join(&cb, 4, "g", keep(first.member_id), NULL, 10000, "mb");
    struct kf_join_group_response a = join_result(ja), b = join_result(jb);
    cr_assert_geq(wr_loop_now_ms(lp) - t0, 400, "two windows: bravo came in the first");
    cr_assert_eq(a.generation_id, b.generation_id);
    cr_assert_eq(a.n_members, 2);
}

/* However many keep coming, the join phase ends by the rebalance timeout (1.5 s). */
Test(kafka_group, the_initial_delay_stops_at_the_rebalance_timeout)
{
    kf_groups_set_initial_rebalance_delay(g, 1000);
    uint64_t t0 = wr_loop_now_ms(lp);
    struct kf_reply *ja = join(&ca, 1, "g", NULL, NULL, 10000, "ma");
    struct kf_reply *jb = join(&cb, 1, "g", NULL, NULL, 10000, "mb");
    struct kf_join_group_response a = join_result(ja);
    uint64_t took = wr_loop_now_ms(lp) - t0;
    cr_assert_geq(took, 1500);
    cr_assert_lt(took, 2000, "a second full window would end at 2 s, took %llu ms",
                 (unsigned long long)took);
    cr_assert_eq(a.n_members, 2);
    cr_assert_eq(join_result(jb).generation_id, a.generation_id);
}

/* Only a rebalance that starts Empty waits: a member joining a Stable group is answered as
 * soon as everyone has rejoined. */
Test(kafka_group, later_rebalances_do_not_wait_the_delay)
{
    kf_groups_set_initial_rebalance_delay(g, 200);
    uint64_t t0 = wr_loop_now_ms(lp);
    struct kf_reply *ja = join(&ca, 1, "g", NULL, NULL, 10000, "ma");
    run_loop_for(100);
    cr_assert(!ja->done, "a lone member waits the delay too");
    struct kf_join_group_response a = join_result(ja);
    cr_assert_geq(wr_loop_now_ms(lp) - t0, 200);
    const char *ida = keep(a.member_id);
    struct assign as[] = {{ida, "a1"}};
    sync_result(sync_group(&ca, 0, "g", a.generation_id, ida, NULL, as, 1));
    struct kf_reply *jb = join(&cb, 1, "g", NULL, NULL, 10000, "mb");
    ja = join(&ca, 1, "g", ida, NULL, 10000, "ma");
    cr_assert(ja->done && jb->done, "answered without running the loop");
    cr_assert_eq(join_result(ja).n_members, 2);
}

/* ---- the offsets file ---------------------------------------------------------------- */

static char *offsets_path(void)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/kafka-offsets/offsets.log", dir);
    return path;
}

static void append_bytes(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_APPEND);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, p, n), (ssize_t)n);
    close(fd);
}

Test(kafka_group, a_torn_last_record_is_dropped)
{
    cr_assert_eq(commit(2, "og", -1, "", "t", 10, 2), 0);
    kf_groups_free(g);
    g = NULL;
    /* Half a record: a length, its CRC, and nothing else. */
    uint8_t torn[6] = {40, 0, 0, 0, 1, 2};
    append_bytes(offsets_path(), torn, sizeof torn);
    open_groups();
    cr_assert_eq(fetch(1, "og", "t", 0, NULL), 10);
    cr_assert_eq(fetch(1, "og", "t", 1, NULL), 11);
    cr_assert_eq(commit(2, "og", -1, "", "t", 20, 1), 0);
    kf_groups_free(g);
    g = NULL;
    open_groups();
    cr_assert_eq(fetch(1, "og", "t", 0, NULL), 20, "the file was cut and appended to cleanly");
}

Test(kafka_group, damage_in_the_middle_stops_the_start)
{
    cr_assert_eq(commit(2, "og", -1, "", "t", 10, 3), 0);
    kf_groups_free(g);
    g = NULL;
    /* Flip a byte in the first record's payload: the records after it are intact. */
    int fd = open(offsets_path(), O_RDWR);
    cr_assert_geq(fd, 0);
    uint8_t byte;
    cr_assert_eq(pread(fd, &byte, 1, FILE_HEAD + REC_HEAD + 3), 1);
    byte ^= 0xFF;
    cr_assert_eq(pwrite(fd, &byte, 1, FILE_HEAD + REC_HEAD + 3), 1);
    close(fd);
    struct stat before;
    cr_assert_eq(stat(offsets_path(), &before), 0);
    struct wr_error err = {0};
    cr_assert_eq(kf_groups_new(NULL, lp, dir, &g, &err), WR_EPROTO);
    cr_assert_null(g);
    cr_assert_not_null(strstr(err.msg, "damaged record at offset 8"), "%s", err.msg);
    struct stat after;
    cr_assert_eq(stat(offsets_path(), &after), 0);
    cr_assert_eq(after.st_size, before.st_size, "the file is left as it is");
}

Test(kafka_group, a_foreign_file_stops_the_start)
{
    kf_groups_free(g);
    g = NULL;
    int fd = open(offsets_path(), O_WRONLY | O_TRUNC);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, "NOPE\1\0\0\0", 8), 8);
    close(fd);
    struct wr_error err = {0};
    cr_assert_eq(kf_groups_new(NULL, lp, dir, &g, &err), WR_EPROTO);
    cr_assert_not_null(strstr(err.msg, "not a warren offsets file"), "%s", err.msg);
}

Test(kafka_group, a_second_coordinator_on_the_same_dir_is_refused)
{
    struct kf_groups *other = NULL;
    struct wr_error err = {0};
    cr_assert_eq(kf_groups_new(NULL, lp, dir, &other, &err), WR_EBUSY);
    cr_assert_null(other);
    cr_assert_not_null(strstr(err.msg, "in use"), "%s", err.msg);
}
