/*
 * group.c: the consumer-group coordinator (group.h). warren is one broker, so it coordinates
 * every group: FindCoordinator always names node 0, the listener itself.
 *
 * A group follows Kafka's classic protocol: Empty -> PreparingRebalance when a member joins
 * or leaves -> CompletingRebalance once every member has rejoined (or the longest rebalance
 * timeout has passed: the dynamic members that did not rejoin are dropped) -> Stable once the
 * leader's SyncGroup hands out the assignments. A rebalance that starts Empty waits out the
 * initial rebalance delay instead, longer while new members keep coming. The leader is the
 * first member, and it alone gets every member's metadata; the protocol is chosen by the
 * members' votes. Each completed rebalance is a new generation. A member that sends nothing for its
 * session timeout is dropped, which starts a rebalance. From JoinGroup v4 a member without an
 * id first gets one with MEMBER_ID_REQUIRED and joins with it (KIP-394). A static member
 * (group.instance.id, KIP-345) that rejoins takes its old slot under a new member id, and in
 * a Stable group whose protocol it does not change it gets its old assignment back without a
 * rebalance.
 *
 * Committed offsets live in offsets.c; a group exists while it has members or offsets, so a
 * group that only ever committed (assign() mode, generation -1) is listed as Empty.
 */
#include "group.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "offsets.h"

#define METADATA_MAX 4096        /* Kafka's offset.metadata.max.bytes */


enum group_state { EMPTY, PREPARING, COMPLETING, STABLE };

static const char *const state_names[] = {"Empty", "PreparingRebalance", "CompletingRebalance",
                                          "Stable"};

struct protocol {
    char *name;
    uint8_t *meta;
    int32_t len;
};

struct member {
    struct group *grp;
    char *id;
    char *instance_id;           /* static membership, or NULL */
    char *client_id, *client_host;
    struct protocol *protos;     /* in the member's order of preference */
    int32_t n_protos;
    int32_t session_ms, rebalance_ms;
    bool awaiting_join, awaiting_sync;
    struct kf_reply *join_r, *sync_r; /* NULL while awaiting once the connection went away */
    int16_t join_v, sync_v;
    uint8_t *assignment;
    int32_t assignment_len;
    uint64_t session_timer;
};

/* A member id handed out with MEMBER_ID_REQUIRED, until a JoinGroup brings it back. */
struct pending {
    struct group *grp;
    char *id;
    uint64_t timer;
};

struct group {
    struct kf_groups *g;
    struct group *next;
    char *id;
    enum group_state state;
    int32_t generation;
    char *protocol_type;         /* NULL while the group has no member */
    char *protocol;              /* the selected protocol; NULL outside a generation */
    struct member **members;     /* in join order: members[0] is the leader */
    size_t n_members, cap_members;
    struct pending **pending;
    size_t n_pending, cap_pending;
    uint64_t rebalance_timer;
    /* The initial rebalance delay: a join phase begun Empty ends only when its timer fires,
     * and goes on for another window while new members keep coming. */
    bool held;
    bool member_added;           /* a new member joined in the current window */
    int32_t hold_left_ms;        /* of the rebalance timeout, after the current window */
};

struct kf_groups {
    struct wr_loop *lp;
    struct kf_offsets *offsets;
    struct group *groups;
    int32_t min_session_ms, max_session_ms;
    int32_t initial_delay_ms;    /* group.initial.rebalance.delay.ms */
};

/* A reply waiting for the offsets file's group commit, with its body for either outcome. */
struct offsets_wait {
    struct kf_offsets *o;
    struct kf_reply *r;          /* NULL once answered early (its connection went away) */
    struct wr_bytes ok, failed;
};

/* ---- strings -------------------------------------------------------------------------- */

/* A name we keep as a C string: present, not empty, no NUL inside. */
static bool name_ok(struct kf_str s)
{
    return s.ptr && s.len > 0 && !memchr(s.ptr, '\0', (size_t)s.len);
}

/* s equals c; a null s equals only a NULL c. */
static bool str_is(struct kf_str s, const char *c)
{
    if (!s.ptr || !c)
        return !s.ptr && !c;
    return strlen(c) == (size_t)s.len && memcmp(s.ptr, c, (size_t)s.len) == 0;
}

/* A C-string copy of a present s (any NUL inside ends it early, harmlessly). */
static char *str_dup(struct kf_str s)
{
    char *p = malloc((size_t)s.len + 1);
    if (p) {
        if (s.len)
            memcpy(p, s.ptr, (size_t)s.len);
        p[s.len] = '\0';
    }
    return p;
}

static struct kf_str bytes_of(const uint8_t *p, int32_t len)
{
    return (struct kf_str){p ? (const char *)p : "", len};
}

/* "<client_id>-<uuid v4>", as Kafka names members. */
static char *member_id_new(const char *client_id)
{
    static uint64_t counter;
    uint8_t u[16];
    if (getrandom(u, sizeof u, GRND_NONBLOCK) != (ssize_t)sizeof u) {
        /* No entropy yet (early boot): unique is what matters, not unpredictable. */
        uint64_t x = ++counter * UINT64_C(0x9E3779B97F4A7C15) ^ (uint64_t)(uintptr_t)u;
        for (int i = 0; i < 16; i++, x = x * UINT64_C(6364136223846793005) + 1)
            u[i] = (uint8_t)(x >> 56);
    }
    u[6] = (uint8_t)((u[6] & 0x0F) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3F) | 0x80);
    size_t n = strlen(client_id) + 38;
    char *id = malloc(n);
    if (!id)
        return NULL;
    int at = snprintf(id, n, "%s-", client_id);
    for (int i = 0; i < 16; i++)
        at += snprintf(id + at, n - (size_t)at, "%02x%s", u[i],
                       i == 3 || i == 5 || i == 7 || i == 9 ? "-" : "");
    return id;
}

/* ---- replies -------------------------------------------------------------------------- */

static void send_body(struct kf_reply *r, struct wr_bytes *out)
{
    kf_reply_send(r, out);
    wr_bytes_free(out);
}

static void join_error(struct kf_reply *r, int16_t v, int16_t error, const char *member_id)
{
    struct kf_join_group_response rsp;
    kf_join_group_response_init(&rsp);
    rsp.error_code = error;
    rsp.member_id = kf_str_c(member_id ? member_id : "");
    struct wr_bytes out = {0};
    kf_join_group_response_encode(&out, v, &rsp);
    send_body(r, &out);
}

static void sync_answer(struct kf_reply *r, int16_t v, int16_t error, const uint8_t *p,
                        int32_t len)
{
    struct kf_sync_group_response rsp;
    kf_sync_group_response_init(&rsp);
    rsp.error_code = error;
    rsp.assignment = bytes_of(p, len);
    struct wr_bytes out = {0};
    kf_sync_group_response_encode(&out, v, &rsp);
    send_body(r, &out);
}

/* Answers a member's waiting JoinGroup and SyncGroup, if any, with error. */
static void member_answer_waits(struct member *m, int16_t error)
{
    if (m->join_r)
        join_error(m->join_r, m->join_v, error, m->id);
    if (m->sync_r)
        sync_answer(m->sync_r, m->sync_v, error, NULL, 0);
    m->join_r = m->sync_r = NULL;
    m->awaiting_join = m->awaiting_sync = false;
}

/* The connection of a waiting JoinGroup went away: answer it now (at a graceful stop the
 * client still reads it). The member still counts as rejoined, as in Kafka. */
static void join_aborted(struct kf_reply *r, void *data)
{
    struct member *m = data;
    m->join_r = NULL;
    join_error(r, m->join_v, KF_ERR_COORDINATOR_NOT_AVAILABLE, m->id);
}

static void sync_aborted(struct kf_reply *r, void *data)
{
    struct member *m = data;
    m->sync_r = NULL;
    sync_answer(r, m->sync_v, KF_ERR_COORDINATOR_NOT_AVAILABLE, NULL, 0);
}

static void member_wait_join(struct member *m, struct kf_reply *r, int16_t v)
{
    if (m->join_r) /* a second JoinGroup replaces the first, which is told to retry */
        join_error(m->join_r, m->join_v, KF_ERR_REBALANCE_IN_PROGRESS, m->id);
    m->awaiting_join = true;
    m->join_r = r;
    m->join_v = v;
    kf_reply_on_abort(r, join_aborted, m);
}

static void member_wait_sync(struct member *m, struct kf_reply *r, int16_t v)
{
    if (m->sync_r)
        sync_answer(m->sync_r, m->sync_v, KF_ERR_REBALANCE_IN_PROGRESS, NULL, 0);
    m->awaiting_sync = true;
    m->sync_r = r;
    m->sync_v = v;
    kf_reply_on_abort(r, sync_aborted, m);
}

/* ---- members -------------------------------------------------------------------------- */

static void protocols_free(struct protocol *p, int32_t n)
{
    for (int32_t i = 0; i < n; i++) {
        free(p[i].name);
        free(p[i].meta);
    }
    free(p);
}

/* Replaces m's protocols with the request's. WR_ENOMEM leaves them as they were. */
static int member_set_protocols(struct member *m, const struct kf_join_group_request *req)
{
    struct protocol *p = calloc((size_t)req->n_protocols, sizeof *p);
    if (!p)
        return WR_ENOMEM;
    for (int32_t i = 0; i < req->n_protocols; i++) {
        const struct kf_join_group_request_join_group_request_protocol *rp = &req->protocols[i];
        p[i].name = str_dup(rp->name);
        p[i].len = rp->metadata.ptr ? rp->metadata.len : 0;
        p[i].meta = malloc(p[i].len ? (size_t)p[i].len : 1);
        if (!p[i].name || !p[i].meta) {
            protocols_free(p, i + 1);
            return WR_ENOMEM;
        }
        if (p[i].len)
            memcpy(p[i].meta, rp->metadata.ptr, (size_t)p[i].len);
    }
    protocols_free(m->protos, m->n_protos);
    m->protos = p;
    m->n_protos = req->n_protocols;
    return WR_OK;
}

static const struct protocol *member_protocol(const struct member *m, const char *name)
{
    for (int32_t i = 0; name && i < m->n_protos; i++)
        if (strcmp(m->protos[i].name, name) == 0)
            return &m->protos[i];
    return NULL;
}

static bool protocols_same(const struct member *m, const struct kf_join_group_request *req)
{
    if (m->n_protos != req->n_protocols)
        return false;
    for (int32_t i = 0; i < m->n_protos; i++) {
        const struct kf_join_group_request_join_group_request_protocol *rp = &req->protocols[i];
        int32_t len = rp->metadata.ptr ? rp->metadata.len : 0;
        if (!str_is(rp->name, m->protos[i].name) || len != m->protos[i].len ||
            (len && memcmp(rp->metadata.ptr, m->protos[i].meta, (size_t)len) != 0))
            return false;
    }
    return true;
}

static void session_expired(struct wr_loop *lp, void *data);

/* (Re)starts m's session timer: any sign of life from the member. */
static void member_touch(struct member *m)
{
    struct wr_loop *lp = m->grp->g->lp;
    wr_loop_timer_del(lp, m->session_timer);
    m->session_timer = wr_loop_timer_add(lp, (uint64_t)m->session_ms, session_expired, m);
}

/* Frees m; its waiting replies were answered. */
static void member_free(struct member *m)
{
    wr_loop_timer_del(m->grp->g->lp, m->session_timer);
    protocols_free(m->protos, m->n_protos);
    free(m->id);
    free(m->instance_id);
    free(m->client_id);
    free(m->client_host);
    free(m->assignment);
    free(m);
}

static struct member *member_find(const struct group *grp, struct kf_str id)
{
    for (size_t i = 0; id.ptr && i < grp->n_members; i++)
        if (str_is(id, grp->members[i]->id))
            return grp->members[i];
    return NULL;
}

static struct member *member_by_instance(const struct group *grp, struct kf_str instance)
{
    for (size_t i = 0; instance.ptr && i < grp->n_members; i++)
        if (grp->members[i]->instance_id && str_is(instance, grp->members[i]->instance_id))
            return grp->members[i];
    return NULL;
}

/* A request naming a static member's instance with another member id comes from a fenced
 * (replaced) incarnation of it. */
static bool instance_fenced(const struct group *grp, struct kf_str instance, struct kf_str id)
{
    const struct member *s = member_by_instance(grp, instance);
    return s && !str_is(id, s->id);
}

/* Takes m out of the group: answers what it waits for with error and frees it. No state
 * change: the caller decides what follows. */
static void member_detach(struct group *grp, struct member *m, int16_t error)
{
    member_answer_waits(m, error);
    for (size_t i = 0; i < grp->n_members; i++) {
        if (grp->members[i] == m) {
            memmove(&grp->members[i], &grp->members[i + 1],
                    (grp->n_members - i - 1) * sizeof *grp->members);
            grp->n_members--;
            break;
        }
    }
    member_free(m);
}

/* ---- the rebalance -------------------------------------------------------------------- */

/* One code point of the UTF-8 string at *p, which moves past it. A byte that starts no valid
 * sequence is U+FFFD on its own. */
static uint32_t utf8_next(const unsigned char **p)
{
    static const uint32_t least[] = {0, 0x80, 0x800, 0x10000}; /* refuses overlong forms */
    const unsigned char *s = *p;
    int extra = s[0] >= 0xF0 ? 3 : s[0] >= 0xE0 ? 2 : s[0] >= 0xC0 ? 1 : 0;
    *p = s + 1;
    if (s[0] < 0x80)
        return s[0];
    if (s[0] < 0xC0 || s[0] >= 0xF8)
        return 0xFFFD;
    uint32_t cp = s[0] & (0x3Fu >> extra);
    for (int i = 1; i <= extra; i++) {
        if ((s[i] & 0xC0) != 0x80) /* also stops at the NUL */
            return 0xFFFD;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    if (cp < least[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0xFFFD;
    *p = s + 1 + extra;
    return cp;
}

/* The bucket java.util.HashMap files name under in a table of `buckets` (a power of two):
 * String.hashCode over the name's UTF-16 units, spread as HashMap.hash spreads it. */
static uint32_t java_bucket(const char *name, uint32_t buckets)
{
    uint32_t h = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p;) {
        uint32_t cp = utf8_next(&p);
        if (cp >= 0x10000) { /* two UTF-16 units: a surrogate pair */
            h = 31 * h + (0xD800 + ((cp - 0x10000) >> 10));
            cp = 0xDC00 + (cp & 0x3FF);
        }
        h = 31 * h + cp;
    }
    return (h ^ h >> 16) & (buckets - 1);
}

/* Kafka's rule (ClassicGroup.selectProtocol): the candidates are the protocols every member
 * supports, each member votes for the first candidate in its own order, and the most votes
 * win. Kafka counts the votes in a java.util.HashMap and keeps the first of the tied
 * protocols in that map's iteration order, so a tie goes the same way here: the lower
 * HashMap bucket, then the protocol voted for first (in Kafka, whichever member its members
 * map yields first). The leader's first protocol if none is common (JoinGroup keeps that from
 * happening); NULL out of memory. */
static const char *select_protocol(const struct group *grp)
{
    /* Every candidate is one of any member's protocols: tally against the leader's. */
    const struct member *leader = grp->members[0];
    struct tally {
        bool candidate;
        size_t votes, first_vote;   /* first_vote: the order its first vote came in */
    } *t = calloc((size_t)leader->n_protos, sizeof *t);
    if (!t)
        return NULL;
    for (int32_t i = 0; i < leader->n_protos; i++) {
        size_t k = 1;
        while (k < grp->n_members && member_protocol(grp->members[k], leader->protos[i].name))
            k++;
        t[i].candidate = k == grp->n_members &&
                         member_protocol(leader, leader->protos[i].name) == &leader->protos[i];
    }
    size_t n_voted = 0;
    for (size_t k = 0; k < grp->n_members; k++) {
        const struct member *m = grp->members[k];
        for (int32_t j = 0; j < m->n_protos; j++) {
            const struct protocol *p = member_protocol(leader, m->protos[j].name);
            if (p && t[p - leader->protos].candidate) {
                struct tally *v = &t[p - leader->protos];
                if (v->votes++ == 0)
                    v->first_vote = n_voted++;
                break;
            }
        }
    }
    uint32_t buckets = 16; /* HashMap's default, doubled past a load of 3/4 */
    while (n_voted > buckets / 4 * 3)
        buckets *= 2;
    int32_t best = -1;
    uint32_t best_bucket = 0;
    for (int32_t i = 0; i < leader->n_protos; i++) {
        if (!t[i].votes)
            continue;
        uint32_t bucket = java_bucket(leader->protos[i].name, buckets);
        if (best < 0 || t[i].votes > t[best].votes ||
            (t[i].votes == t[best].votes &&
             (bucket < best_bucket ||
              (bucket == best_bucket && t[i].first_vote < t[best].first_vote)))) {
            best = i;
            best_bucket = bucket;
        }
    }
    free(t);
    return leader->protos[best >= 0 ? best : 0].name;
}

/* Could the request's member join beside the other members (all but self)? */
static bool protocols_fit(const struct group *grp, const struct member *self,
                          const struct kf_join_group_request *req)
{
    bool alone = grp->n_members == 0 || (grp->n_members == 1 && grp->members[0] == self);
    if (alone)
        return true;
    if (!str_is(req->protocol_type, grp->protocol_type))
        return false;
    for (int32_t i = 0; i < req->n_protocols; i++) {
        char *name = str_dup(req->protocols[i].name);
        size_t k = 0;
        while (name && k < grp->n_members &&
               (grp->members[k] == self || member_protocol(grp->members[k], name)))
            k++;
        free(name);
        if (k == grp->n_members)
            return true;
    }
    return false;
}

static void send_join_result(struct group *grp, struct member *m, struct kf_reply *r,
                             int16_t v, const char *leader_id, bool with_members)
{
    struct kf_join_group_response rsp;
    kf_join_group_response_init(&rsp);
    rsp.generation_id = grp->generation;
    rsp.protocol_name = kf_str_c(grp->protocol ? grp->protocol : "");
    rsp.leader = kf_str_c(leader_id);
    rsp.member_id = kf_str_c(m->id);
    struct kf_join_group_response_join_group_response_member *list = NULL;
    if (with_members) {
        list = calloc(grp->n_members ? grp->n_members : 1, sizeof *list);
        if (!list) {
            join_error(r, v, KF_ERR_UNKNOWN_SERVER_ERROR, m->id);
            return;
        }
        for (size_t i = 0; i < grp->n_members; i++) {
            const struct member *o = grp->members[i];
            const struct protocol *p = member_protocol(o, grp->protocol);
            list[i].member_id = kf_str_c(o->id);
            list[i].group_instance_id = kf_str_c(o->instance_id);
            list[i].metadata = p ? bytes_of(p->meta, p->len) : bytes_of(NULL, 0);
        }
        rsp.members = list;
        rsp.n_members = (int32_t)grp->n_members;
    }
    struct wr_bytes out = {0};
    kf_join_group_response_encode(&out, v, &rsp);
    free(list);
    send_body(r, &out);
}

/* Ends the join phase: a new generation for the members that rejoined. */
static void join_complete(struct group *grp)
{
    struct kf_groups *g = grp->g;
    wr_loop_timer_del(g->lp, grp->rebalance_timer);
    grp->rebalance_timer = 0;
    grp->held = false;
    for (size_t i = 0; i < grp->n_members;) {
        struct member *m = grp->members[i];
        if (!m->awaiting_join && !m->instance_id) {
            wr_log(WR_LOG_INFO, "kafka", "group '%s': member %s did not rejoin in time and is "
                   "removed", grp->id, m->id);
            member_detach(grp, m, KF_ERR_UNKNOWN_MEMBER_ID);
        } else {
            i++;
        }
    }
    /* A static member that did not rejoin keeps its slot but cannot lead this generation. */
    for (size_t i = 1; i < grp->n_members && !grp->members[0]->awaiting_join; i++) {
        if (grp->members[i]->awaiting_join) {
            struct member *lead = grp->members[i];
            memmove(&grp->members[1], &grp->members[0], i * sizeof *grp->members);
            grp->members[0] = lead;
        }
    }
    grp->generation++;
    free(grp->protocol);
    grp->protocol = NULL;
    if (grp->n_members == 0) {
        grp->state = EMPTY;
        free(grp->protocol_type);
        grp->protocol_type = NULL;
        return;
    }
    const char *selected = select_protocol(grp);
    grp->protocol = selected ? strdup(selected) : NULL;
    grp->state = COMPLETING;
    struct member *leader = grp->members[0];
    for (size_t i = 0; i < grp->n_members; i++) {
        struct member *m = grp->members[i];
        if (!m->awaiting_join)
            continue;
        m->awaiting_join = false;
        if (m->join_r) {
            struct kf_reply *r = m->join_r;
            m->join_r = NULL;
            if (grp->protocol)
                send_join_result(grp, m, r, m->join_v, leader->id, m == leader);
            else
                join_error(r, m->join_v, KF_ERR_UNKNOWN_SERVER_ERROR, m->id);
        }
        member_touch(m);
    }
}

static void try_complete_join(struct group *grp)
{
    if (grp->state != PREPARING || grp->held || grp->n_pending > 0)
        return;
    for (size_t i = 0; i < grp->n_members; i++)
        if (!grp->members[i]->awaiting_join)
            return;
    join_complete(grp);
}

static void group_maybe_drop(struct group *grp);

static void rebalance_expired(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct group *grp = data;
    grp->rebalance_timer = 0;
    join_complete(grp);
    group_maybe_drop(grp);
}

/* The end of a window of the initial rebalance delay: another window if a new member came
 * in this one and the rebalance timeout leaves time, as Kafka's InitialDelayedJoin does. */
static void initial_delay_expired(struct wr_loop *lp, void *data)
{
    struct group *grp = data;
    grp->rebalance_timer = 0;
    if (grp->member_added && grp->hold_left_ms > 0) {
        int32_t window = grp->g->initial_delay_ms < grp->hold_left_ms ? grp->g->initial_delay_ms
                                                                      : grp->hold_left_ms;
        grp->member_added = false;
        grp->hold_left_ms -= window;
        grp->rebalance_timer = wr_loop_timer_add(lp, (uint64_t)window, initial_delay_expired,
                                                 grp);
        return;
    }
    join_complete(grp);
    group_maybe_drop(grp);
}

/* Starts a rebalance: every member must rejoin within the longest rebalance timeout. One that
 * starts Empty first holds the join phase open for the initial rebalance delay, so consumers
 * started together land in one generation instead of one each. */
static void prepare_rebalance(struct group *grp)
{
    struct kf_groups *g = grp->g;
    bool initial = grp->state == EMPTY && g->initial_delay_ms > 0;
    if (grp->state == COMPLETING) {
        /* The leader's assignment for this generation will never come: the waiting
         * followers rejoin instead. */
        for (size_t i = 0; i < grp->n_members; i++) {
            struct member *m = grp->members[i];
            if (m->sync_r)
                sync_answer(m->sync_r, m->sync_v, KF_ERR_REBALANCE_IN_PROGRESS, NULL, 0);
            m->sync_r = NULL;
            m->awaiting_sync = false;
        }
    }
    grp->state = PREPARING;
    int32_t ms = 0;
    for (size_t i = 0; i < grp->n_members; i++)
        if (grp->members[i]->rebalance_ms > ms)
            ms = grp->members[i]->rebalance_ms;
    wr_loop_timer_del(g->lp, grp->rebalance_timer);
    if (initial) {
        grp->held = true;
        grp->member_added = false;
        grp->hold_left_ms = ms > g->initial_delay_ms ? ms - g->initial_delay_ms : 0;
        grp->rebalance_timer = wr_loop_timer_add(g->lp, (uint64_t)g->initial_delay_ms,
                                                 initial_delay_expired, grp);
        return;
    }
    grp->rebalance_timer = wr_loop_timer_add(g->lp, (uint64_t)ms, rebalance_expired, grp);
    try_complete_join(grp);
}

/* m leaves (LeaveGroup, session expiry): the others rebalance without it. */
static void member_remove(struct group *grp, struct member *m)
{
    member_detach(grp, m, KF_ERR_UNKNOWN_MEMBER_ID);
    if (grp->state == STABLE || grp->state == COMPLETING)
        prepare_rebalance(grp);
    else
        try_complete_join(grp);
}

static void session_expired(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct member *m = data;
    m->session_timer = 0;
    if (m->awaiting_join || m->awaiting_sync) {
        /* It is waiting for us, not silent (Kafka's shouldKeepAlive). */
        member_touch(m);
        return;
    }
    struct group *grp = m->grp;
    wr_log(WR_LOG_INFO, "kafka", "group '%s': member %s sent no heartbeat for %d ms and is "
           "removed", grp->id, m->id, m->session_ms);
    member_remove(grp, m);
    group_maybe_drop(grp);
}

/* ---- groups --------------------------------------------------------------------------- */

static struct group *group_find(const struct kf_groups *g, struct kf_str id)
{
    for (struct group *grp = g->groups; grp; grp = grp->next)
        if (str_is(id, grp->id))
            return grp;
    return NULL;
}

static struct group *group_new(struct kf_groups *g, const char *id)
{
    struct group *grp = calloc(1, sizeof *grp);
    if (!grp || !(grp->id = strdup(id))) {
        free(grp);
        return NULL;
    }
    grp->g = g;
    grp->state = EMPTY;
    grp->next = g->groups;
    g->groups = grp;
    return grp;
}

static void pending_free(struct pending *p)
{
    wr_loop_timer_del(p->grp->g->lp, p->timer);
    free(p->id);
    free(p);
}

/* Frees grp, unlinked, whose members' replies were answered. */
static void group_free(struct group *grp)
{
    wr_loop_timer_del(grp->g->lp, grp->rebalance_timer);
    for (size_t i = 0; i < grp->n_members; i++)
        member_free(grp->members[i]);
    for (size_t i = 0; i < grp->n_pending; i++)
        pending_free(grp->pending[i]);
    free(grp->members);
    free(grp->pending);
    free(grp->protocol_type);
    free(grp->protocol);
    free(grp->id);
    free(grp);
}

static void group_unlink(struct group *grp)
{
    struct group **at = &grp->g->groups;
    while (*at != grp)
        at = &(*at)->next;
    *at = grp->next;
}

/* A group with no member, no member id handed out and no offsets is gone. */
static void group_maybe_drop(struct group *grp)
{
    if (grp->state != EMPTY || grp->n_members || grp->n_pending ||
        kf_offsets_find(grp->g->offsets, grp->id))
        return;
    group_unlink(grp);
    group_free(grp);
}

static void pending_expired(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct pending *p = data;
    struct group *grp = p->grp;
    p->timer = 0;
    for (size_t i = 0; i < grp->n_pending; i++) {
        if (grp->pending[i] == p) {
            grp->pending[i] = grp->pending[--grp->n_pending];
            break;
        }
    }
    pending_free(p);
    try_complete_join(grp);
    group_maybe_drop(grp);
}

static size_t pending_index(const struct group *grp, struct kf_str id)
{
    for (size_t i = 0; i < grp->n_pending; i++)
        if (str_is(id, grp->pending[i]->id))
            return i;
    return grp->n_pending;
}

/* Hands out id (taken over) with MEMBER_ID_REQUIRED; it lapses after session_ms. */
static int pending_add(struct group *grp, char *id, int32_t session_ms)
{
    if (grp->n_pending == grp->cap_pending) {
        size_t cap = grp->cap_pending ? 2 * grp->cap_pending : 4;
        void *p = realloc(grp->pending, cap * sizeof *grp->pending);
        if (!p)
            return WR_ENOMEM;
        grp->pending = p;
        grp->cap_pending = cap;
    }
    struct pending *p = calloc(1, sizeof *p);
    if (!p)
        return WR_ENOMEM;
    p->grp = grp;
    p->id = id;
    p->timer = wr_loop_timer_add(grp->g->lp, (uint64_t)session_ms, pending_expired, p);
    grp->pending[grp->n_pending++] = p;
    return WR_OK;
}

/* ---- FindCoordinator ------------------------------------------------------------------ */

void kf_group_find_coordinator(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                               int16_t version, const struct kf_find_coordinator_request *req)
{
    (void)g;
    struct kf_find_coordinator_response rsp;
    kf_find_coordinator_response_init(&rsp);
    if (req->key_type == 0) {
        rsp.node_id = 0;
        rsp.host = kf_str_c(kf_conn_node_host(c));
        rsp.port = kf_conn_node_port(c);
    } else {
        /* There is no transaction coordinator (key type 1) in warren. */
        rsp.error_code = req->key_type == 1 ? KF_ERR_COORDINATOR_NOT_AVAILABLE
                                             : KF_ERR_INVALID_REQUEST;
        rsp.error_message = kf_str_c(req->key_type == 1 ? "warren has no transactions"
                                                         : "unknown coordinator key type");
        rsp.node_id = -1;
        rsp.host = kf_str_c("");
        rsp.port = -1;
    }
    struct wr_bytes out = {0};
    kf_find_coordinator_response_encode(&out, version, &rsp);
    send_body(r, &out);
}

/* ---- JoinGroup ------------------------------------------------------------------------ */

/* A new member of grp from the request, waiting for the join; NULL out of memory. */
static struct member *member_add(struct group *grp, struct kf_conn *c, char *id,
                                 const struct kf_join_group_request *req)
{
    if (grp->n_members == grp->cap_members) {
        size_t cap = grp->cap_members ? 2 * grp->cap_members : 4;
        void *p = realloc(grp->members, cap * sizeof *grp->members);
        if (!p)
            return NULL;
        grp->members = p;
        grp->cap_members = cap;
    }
    struct member *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->grp = grp;
    m->id = id;
    m->client_id = strdup(kf_conn_client_id(c));
    m->client_host = strdup(kf_conn_client_host(c));
    m->instance_id = req->group_instance_id.ptr ? str_dup(req->group_instance_id) : NULL;
    if (!grp->protocol_type)
        grp->protocol_type = str_dup(req->protocol_type);
    if (!m->client_id || !m->client_host || (req->group_instance_id.ptr && !m->instance_id) ||
        !grp->protocol_type || member_set_protocols(m, req) != WR_OK) {
        m->id = NULL; /* the caller's still */
        member_free(m);
        return NULL;
    }
    m->session_ms = req->session_timeout_ms;
    m->rebalance_ms = req->rebalance_timeout_ms > 0 ? req->rebalance_timeout_ms
                                                    : req->session_timeout_ms;
    grp->members[grp->n_members++] = m;
    return m;
}

/* Adds a member with id (taken over) and starts or joins the rebalance. */
static void join_new_member(struct group *grp, struct kf_conn *c, struct kf_reply *r,
                            int16_t v, char *id, const struct kf_join_group_request *req)
{
    struct member *m = member_add(grp, c, id, req);
    if (!m) {
        join_error(r, v, KF_ERR_UNKNOWN_SERVER_ERROR, id);
        free(id);
        return;
    }
    member_wait_join(m, r, v);
    if (grp->state == PREPARING) {
        if (grp->held)
            grp->member_added = true;
        try_complete_join(grp);
    } else {
        prepare_rebalance(grp);
    }
}

/* A static member joins again without its member id (a restarted instance): it takes its
 * old slot under new_id and fences the old id out. */
static void join_static_again(struct group *grp, struct member *m, struct kf_reply *r,
                              int16_t v, char *new_id, const struct kf_join_group_request *req)
{
    char *old_leader = strdup(grp->members[0]->id);
    if (!old_leader) {
        join_error(r, v, KF_ERR_UNKNOWN_SERVER_ERROR, new_id);
        free(new_id);
        return;
    }
    member_answer_waits(m, KF_ERR_FENCED_INSTANCE_ID);
    free(m->id);
    m->id = new_id;
    m->session_ms = req->session_timeout_ms;
    m->rebalance_ms = req->rebalance_timeout_ms > 0 ? req->rebalance_timeout_ms
                                                    : req->session_timeout_ms;
    bool same = protocols_same(m, req);
    if (!same && member_set_protocols(m, req) != WR_OK) {
        join_error(r, v, KF_ERR_UNKNOWN_SERVER_ERROR, new_id);
        free(old_leader);
        return;
    }
    member_touch(m);
    const char *selected = grp->state == STABLE ? select_protocol(grp) : NULL;
    if (selected && grp->protocol && strcmp(selected, grp->protocol) == 0) {
        /* Nothing the group agreed on changes: no rebalance. The old leader's id goes back,
         * so that a returning leader does not compute an assignment a Stable group would
         * never hand out; its SyncGroup gets its old assignment. */
        send_join_result(grp, m, r, v, old_leader, false);
    } else {
        member_wait_join(m, r, v);
        if (grp->state == PREPARING)
            try_complete_join(grp);
        else
            prepare_rebalance(grp);
    }
    free(old_leader);
}

static void join_unknown_member(struct group *grp, struct kf_conn *c, struct kf_reply *r,
                                int16_t v, const struct kf_join_group_request *req)
{
    char *id = member_id_new(kf_conn_client_id(c));
    if (!id) {
        join_error(r, v, KF_ERR_UNKNOWN_SERVER_ERROR, "");
        return;
    }
    struct member *m = member_by_instance(grp, req->group_instance_id);
    if (m) {
        join_static_again(grp, m, r, v, id, req);
    } else if (v >= 4 && !req->group_instance_id.ptr) {
        /* KIP-394: the id goes back first, so a client that times out and retries the join
         * comes back as the same member instead of leaving a ghost behind. */
        join_error(r, v, KF_ERR_MEMBER_ID_REQUIRED, id);
        if (pending_add(grp, id, req->session_timeout_ms) != WR_OK)
            free(id);
    } else {
        join_new_member(grp, c, r, v, id, req);
    }
}

static void join_known_member(struct group *grp, struct kf_conn *c, struct kf_reply *r,
                              int16_t v, const struct kf_join_group_request *req)
{
    size_t pi = pending_index(grp, req->member_id);
    if (pi < grp->n_pending) {
        struct pending *p = grp->pending[pi];
        grp->pending[pi] = grp->pending[--grp->n_pending];
        char *id = p->id;
        p->id = NULL;
        pending_free(p);
        join_new_member(grp, c, r, v, id, req);
        return;
    }
    struct member *m = member_find(grp, req->member_id);
    if (!m) {
        join_error(r, v, KF_ERR_UNKNOWN_MEMBER_ID, "");
        return;
    }
    if (instance_fenced(grp, req->group_instance_id, req->member_id)) {
        join_error(r, v, KF_ERR_FENCED_INSTANCE_ID, m->id);
        return;
    }
    m->session_ms = req->session_timeout_ms;
    m->rebalance_ms = req->rebalance_timeout_ms > 0 ? req->rebalance_timeout_ms
                                                    : req->session_timeout_ms;
    bool same = protocols_same(m, req);
    if (!same && member_set_protocols(m, req) != WR_OK) {
        join_error(r, v, KF_ERR_UNKNOWN_SERVER_ERROR, m->id);
        return;
    }
    member_touch(m);
    bool leader = grp->members[0] == m;
    if (grp->state == PREPARING) {
        member_wait_join(m, r, v);
        try_complete_join(grp);
    } else if (same && (grp->state == COMPLETING || (grp->state == STABLE && !leader))) {
        /* A retried join (its response was lost): the current generation again. */
        send_join_result(grp, m, r, v, grp->members[0]->id, leader);
    } else {
        member_wait_join(m, r, v);
        prepare_rebalance(grp);
    }
}

void kf_group_join_group(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                         int16_t version, const struct kf_join_group_request *req)
{
    bool unknown = !req->member_id.ptr || req->member_id.len == 0;
    int16_t error = KF_ERR_NONE;
    struct group *grp = NULL;
    if (!name_ok(req->group_id))
        error = KF_ERR_INVALID_GROUP_ID;
    else if (req->session_timeout_ms < g->min_session_ms ||
             req->session_timeout_ms > g->max_session_ms)
        error = KF_ERR_INVALID_SESSION_TIMEOUT;
    else if (!name_ok(req->protocol_type) || req->n_protocols <= 0)
        error = KF_ERR_INCONSISTENT_GROUP_PROTOCOL;
    for (int32_t i = 0; !error && i < req->n_protocols; i++)
        if (!name_ok(req->protocols[i].name))
            error = KF_ERR_INCONSISTENT_GROUP_PROTOCOL;
    if (!error && !(grp = group_find(g, req->group_id))) {
        char *id = unknown ? str_dup(req->group_id) : NULL;
        if (!unknown)
            error = KF_ERR_UNKNOWN_MEMBER_ID;
        else if (!id || !(grp = group_new(g, id)))
            error = KF_ERR_UNKNOWN_SERVER_ERROR;
        free(id);
    }
    if (!error && !protocols_fit(grp, unknown ? member_by_instance(grp, req->group_instance_id)
                                               : member_find(grp, req->member_id), req))
        error = KF_ERR_INCONSISTENT_GROUP_PROTOCOL;
    if (error) {
        char *id = req->member_id.ptr ? str_dup(req->member_id) : NULL;
        join_error(r, version, error, id);
        free(id);
    } else if (unknown) {
        join_unknown_member(grp, c, r, version, req);
    } else {
        join_known_member(grp, c, r, version, req);
    }
    if (grp)
        group_maybe_drop(grp);
}

/* ---- SyncGroup ------------------------------------------------------------------------ */

/* The leader's assignments: each member gets its own, or nothing if the leader named none. */
static void sync_assign(struct group *grp, const struct kf_sync_group_request *req)
{
    for (size_t i = 0; i < grp->n_members; i++) {
        struct member *m = grp->members[i];
        free(m->assignment);
        m->assignment = NULL;
        m->assignment_len = 0;
        for (int32_t k = 0; k < req->n_assignments; k++) {
            const struct kf_sync_group_request_sync_group_request_assignment *a =
                &req->assignments[k];
            if (!str_is(a->member_id, m->id) || !a->assignment.ptr || a->assignment.len <= 0)
                continue;
            m->assignment = malloc((size_t)a->assignment.len);
            if (m->assignment) {
                memcpy(m->assignment, a->assignment.ptr, (size_t)a->assignment.len);
                m->assignment_len = a->assignment.len;
            }
            break;
        }
    }
}

void kf_group_sync_group(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                         int16_t version, const struct kf_sync_group_request *req)
{
    (void)c;
    struct group *grp = group_find(g, req->group_id);
    struct member *m = grp ? member_find(grp, req->member_id) : NULL;
    int16_t error = KF_ERR_NONE;
    if (grp && instance_fenced(grp, req->group_instance_id, req->member_id))
        error = KF_ERR_FENCED_INSTANCE_ID;
    else if (!m)
        error = KF_ERR_UNKNOWN_MEMBER_ID;
    else if (req->generation_id != grp->generation)
        error = KF_ERR_ILLEGAL_GENERATION;
    else if (grp->state == PREPARING)
        error = KF_ERR_REBALANCE_IN_PROGRESS;
    if (error) {
        sync_answer(r, version, error, NULL, 0);
        return;
    }
    member_touch(m);
    if (grp->state == STABLE) {
        sync_answer(r, version, KF_ERR_NONE, m->assignment, m->assignment_len);
        return;
    }
    member_wait_sync(m, r, version);
    if (m != grp->members[0])
        return;
    sync_assign(grp, req);
    grp->state = STABLE;
    for (size_t i = 0; i < grp->n_members; i++) {
        struct member *o = grp->members[i];
        if (!o->awaiting_sync)
            continue;
        o->awaiting_sync = false;
        if (o->sync_r)
            sync_answer(o->sync_r, o->sync_v, KF_ERR_NONE, o->assignment, o->assignment_len);
        o->sync_r = NULL;
    }
}

/* ---- Heartbeat ------------------------------------------------------------------------ */

void kf_group_heartbeat(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                        int16_t version, const struct kf_heartbeat_request *req)
{
    (void)c;
    struct group *grp = group_find(g, req->group_id);
    struct member *m = grp ? member_find(grp, req->member_id) : NULL;
    struct kf_heartbeat_response rsp;
    kf_heartbeat_response_init(&rsp);
    if (grp && instance_fenced(grp, req->group_instance_id, req->member_id)) {
        rsp.error_code = KF_ERR_FENCED_INSTANCE_ID;
    } else if (!m) {
        rsp.error_code = KF_ERR_UNKNOWN_MEMBER_ID;
    } else if (req->generation_id != grp->generation) {
        rsp.error_code = KF_ERR_ILLEGAL_GENERATION;
    } else {
        member_touch(m);
        rsp.error_code = grp->state == PREPARING ? KF_ERR_REBALANCE_IN_PROGRESS : KF_ERR_NONE;
    }
    struct wr_bytes out = {0};
    kf_heartbeat_response_encode(&out, version, &rsp);
    send_body(r, &out);
}

/* ---- LeaveGroup ----------------------------------------------------------------------- */

static int16_t leave_one(struct group *grp, struct kf_str member_id, struct kf_str instance)
{
    struct member *m;
    if (instance.ptr) {
        m = member_by_instance(grp, instance);
        if (!m)
            return KF_ERR_UNKNOWN_MEMBER_ID;
        if (member_id.ptr && member_id.len > 0 && !str_is(member_id, m->id))
            return KF_ERR_FENCED_INSTANCE_ID;
    } else {
        size_t pi = pending_index(grp, member_id);
        if (pi < grp->n_pending) {
            pending_free(grp->pending[pi]);
            grp->pending[pi] = grp->pending[--grp->n_pending];
            try_complete_join(grp);
            return KF_ERR_NONE;
        }
        if (!(m = member_find(grp, member_id)))
            return KF_ERR_UNKNOWN_MEMBER_ID;
    }
    wr_log(WR_LOG_DEBUG, "kafka", "group '%s': member %s leaves", grp->id, m->id);
    member_remove(grp, m);
    return KF_ERR_NONE;
}

void kf_group_leave_group(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                          int16_t version, const struct kf_leave_group_request *req)
{
    (void)c;
    struct kf_leave_group_request_member_identity single = {req->member_id, kf_str_c(NULL)};
    const struct kf_leave_group_request_member_identity *who = version >= 3 ? req->members
                                                                            : &single;
    int32_t n = version >= 3 ? (req->n_members > 0 ? req->n_members : 0) : 1;
    struct kf_leave_group_response rsp;
    kf_leave_group_response_init(&rsp);
    struct kf_leave_group_response_member_response *res = calloc(n ? (size_t)n : 1,
                                                                  sizeof *res);
    struct group *grp = group_find(g, req->group_id);
    if (!res) {
        rsp.error_code = KF_ERR_UNKNOWN_SERVER_ERROR;
    } else {
        for (int32_t i = 0; i < n; i++) {
            res[i].member_id = who[i].member_id;
            res[i].group_instance_id = who[i].group_instance_id;
            res[i].error_code = grp ? leave_one(grp, who[i].member_id,
                                                who[i].group_instance_id)
                                    : KF_ERR_UNKNOWN_MEMBER_ID;
        }
        rsp.members = res;
        rsp.n_members = n;
        if (version < 3)
            rsp.error_code = res[0].error_code;
    }
    struct wr_bytes out = {0};
    kf_leave_group_response_encode(&out, version, &rsp);
    free(res);
    send_body(r, &out);
    if (grp)
        group_maybe_drop(grp);
}

/* ---- offsets: waiting for the group commit -------------------------------------------- */

static void offsets_synced(void *data, int status)
{
    struct offsets_wait *w = data;
    if (w->r)
        kf_reply_send(w->r, status == WR_OK ? &w->ok : &w->failed);
    wr_bytes_free(&w->ok);
    wr_bytes_free(&w->failed);
    free(w);
}

/* The connection goes away before the group commit: sync now, so the answer is true. */
static void offsets_aborted(struct kf_reply *r, void *data)
{
    struct offsets_wait *w = data;
    w->r = NULL;
    kf_reply_send(r, kf_offsets_sync_now(w->o) == WR_OK ? &w->ok : &w->failed);
}

/* Answers r with ok once the offsets flushed so far are durable, with failed if they cannot
 * be made so. Takes both bodies over. */
static void answer_when_durable(struct kf_groups *g, struct kf_reply *r, struct wr_bytes *ok,
                                struct wr_bytes *failed)
{
    struct offsets_wait *w = calloc(1, sizeof *w);
    if (w) {
        w->o = g->offsets;
        w->r = r;
        w->ok = *ok;
        w->failed = *failed;
        if (kf_offsets_wait(g->offsets, offsets_synced, w) == WR_OK) {
            kf_reply_on_abort(r, offsets_aborted, w);
            return;
        }
        free(w);
    }
    kf_reply_send(r, kf_offsets_sync_now(g->offsets) == WR_OK ? ok : failed);
    wr_bytes_free(ok);
    wr_bytes_free(failed);
}

/* ---- OffsetCommit --------------------------------------------------------------------- */

/* Whether the group lets this request commit (Kafka's rules): KF_ERR_NONE or the error of
 * every partition. */
static int16_t commit_allowed(struct group *grp, const struct kf_offset_commit_request *req)
{
    int32_t gen = req->generation_id_or_member_epoch;
    if (!grp)
        return gen < 0 ? KF_ERR_NONE : KF_ERR_ILLEGAL_GENERATION;
    if (instance_fenced(grp, req->group_instance_id, req->member_id))
        return KF_ERR_FENCED_INSTANCE_ID;
    if (gen < 0 && grp->state == EMPTY)
        return KF_ERR_NONE; /* the group only stores offsets (assign() mode) */
    if (grp->state == COMPLETING)
        return KF_ERR_REBALANCE_IN_PROGRESS;
    struct member *m = member_find(grp, req->member_id);
    if (!m)
        return KF_ERR_UNKNOWN_MEMBER_ID;
    if (gen != grp->generation)
        return KF_ERR_ILLEGAL_GENERATION;
    member_touch(m);
    return KF_ERR_NONE;
}

/* Encodes rsp with staged_error for every partition without an error of its own. */
static void commit_encode(struct wr_bytes *out, int16_t v, struct kf_offset_commit_response *rsp,
                          int16_t staged_error)
{
    for (int32_t t = 0; t < rsp->n_topics; t++) {
        struct kf_offset_commit_response_offset_commit_response_topic *rt = &rsp->topics[t];
        for (int32_t p = 0; p < rt->n_partitions; p++)
            if (rt->partitions[p].error_code == KF_ERR_NONE)
                rt->partitions[p].error_code = staged_error;
    }
    kf_offset_commit_response_encode(out, v, rsp);
}

void kf_group_offset_commit(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                            int16_t version, const struct kf_offset_commit_request *req)
{
    (void)c;
    struct kf_offset_commit_response rsp;
    kf_offset_commit_response_init(&rsp);
    struct kf_arena a = {0};
    bool ok_name = name_ok(req->group_id);
    struct group *grp = ok_name ? group_find(g, req->group_id) : NULL;
    int16_t group_error = ok_name ? commit_allowed(grp, req) : KF_ERR_INVALID_GROUP_ID;
    char *gid = ok_name ? str_dup(req->group_id) : NULL;
    if (ok_name && !gid)
        group_error = KF_ERR_UNKNOWN_SERVER_ERROR;
    int32_t nt = req->n_topics > 0 ? req->n_topics : 0;
    rsp.topics = kf_arena_alloc(&a, (size_t)nt * sizeof *rsp.topics + 1);
    bool staged = false, oom = !rsp.topics;
    for (int32_t t = 0; !oom && t < nt; t++) {
        const struct kf_offset_commit_request_offset_commit_request_topic *qt = &req->topics[t];
        struct kf_offset_commit_response_offset_commit_response_topic *rt = &rsp.topics[t];
        int32_t np = qt->n_partitions > 0 ? qt->n_partitions : 0;
        rt->name = qt->name;
        rt->partitions = kf_arena_alloc(&a, (size_t)np * sizeof *rt->partitions + 1);
        if (!rt->partitions) {
            oom = true;
            break;
        }
        rt->n_partitions = np;
        rsp.n_topics = t + 1;
        for (int32_t p = 0; p < np; p++) {
            const struct kf_offset_commit_request_offset_commit_request_partition *qp =
                &qt->partitions[p];
            int16_t e = group_error;
            if (!e && (!name_ok(qt->name) || qp->partition_index < 0 ||
                       qp->partition_index >= KF_OFFSETS_MAX_PARTITION))
                e = KF_ERR_UNKNOWN_TOPIC_OR_PARTITION;
            else if (!e && qp->committed_metadata.ptr &&
                     qp->committed_metadata.len > METADATA_MAX)
                e = KF_ERR_OFFSET_METADATA_TOO_LARGE;
            rt->partitions[p].partition_index = qp->partition_index;
            rt->partitions[p].error_code = e;
            if (e)
                continue;
            kf_offsets_stage_commit(g->offsets, gid, qt->name.ptr, (size_t)qt->name.len,
                                    qp->partition_index, qp->committed_offset,
                                    qp->committed_leader_epoch, qp->committed_metadata.ptr,
                                    qp->committed_metadata.ptr
                                        ? (size_t)qp->committed_metadata.len : 0);
            staged = true;
        }
    }
    struct wr_error err = {0};
    int rc = staged ? kf_offsets_flush(g->offsets, &err) : WR_OK;
    if (rc != WR_OK)
        wr_log(WR_LOG_ERROR, "kafka", "group '%s': offsets not committed: %s", gid, err.msg);
    if (staged && rc == WR_OK && !grp)
        group_new(g, gid); /* a group that only commits is listed, as Kafka lists it */
    struct wr_bytes ok = {0}, failed = {0};
    if (oom) {
        kf_offset_commit_response_init(&rsp);
        kf_offset_commit_response_encode(&ok, version, &rsp);
    } else {
        commit_encode(&ok, version, &rsp, rc == WR_OK ? KF_ERR_NONE : KF_ERR_KAFKA_STORAGE_ERROR);
        if (staged && rc == WR_OK)
            commit_encode(&failed, version, &rsp, KF_ERR_KAFKA_STORAGE_ERROR);
    }
    kf_arena_free(&a);
    free(gid);
    if (staged && rc == WR_OK) {
        answer_when_durable(g, r, &ok, &failed);
        return;
    }
    send_body(r, &ok);
}

/* ---- OffsetFetch ---------------------------------------------------------------------- */

static void fetch_fill(struct kf_offset_fetch_response_offset_fetch_response_partition *rp,
                       int32_t index, const struct kf_offset *off, int16_t error)
{
    rp->partition_index = index;
    rp->committed_offset = off ? off->offset : -1;
    rp->committed_leader_epoch = off ? off->leader_epoch : -1;
    rp->metadata = kf_str_c(off ? off->metadata : "");
    rp->error_code = error;
}

void kf_group_offset_fetch(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                           int16_t version, const struct kf_offset_fetch_request *req)
{
    (void)c;
    struct kf_offset_fetch_response rsp;
    kf_offset_fetch_response_init(&rsp);
    struct kf_arena a = {0};
    int16_t error = name_ok(req->group_id) ? KF_ERR_NONE : KF_ERR_INVALID_GROUP_ID;
    char *gid = error ? NULL : str_dup(req->group_id);
    if (!error && !gid)
        error = KF_ERR_UNKNOWN_SERVER_ERROR;
    rsp.error_code = error;
    bool oom = false;
    if (req->n_topics < 0) {
        /* All the group's offsets (v2+). */
        const struct kf_offsets_group *og = gid ? kf_offsets_find(g->offsets, gid) : NULL;
        size_t nt = og ? og->n_topics : 0;
        rsp.topics = kf_arena_alloc(&a, nt * sizeof *rsp.topics + 1);
        oom = !rsp.topics;
        for (size_t t = 0; !oom && t < nt; t++) {
            const struct kf_offsets_topic *ot = &og->topics[t];
            struct kf_offset_fetch_response_offset_fetch_response_topic *rt = &rsp.topics[t];
            rt->name = kf_str_c(ot->name);
            rt->partitions = kf_arena_alloc(&a, (size_t)ot->n_parts * sizeof *rt->partitions + 1);
            if (!(oom = !rt->partitions)) {
                for (int32_t p = 0; p < ot->n_parts; p++)
                    if (ot->parts[p].set)
                        fetch_fill(&rt->partitions[rt->n_partitions++], p, &ot->parts[p], 0);
                rsp.n_topics = (int32_t)t + 1;
            }
        }
    } else {
        rsp.topics = kf_arena_alloc(&a, (size_t)req->n_topics * sizeof *rsp.topics + 1);
        oom = !rsp.topics;
        for (int32_t t = 0; !oom && t < req->n_topics; t++) {
            const struct kf_offset_fetch_request_offset_fetch_request_topic *qt = &req->topics[t];
            struct kf_offset_fetch_response_offset_fetch_response_topic *rt = &rsp.topics[t];
            int32_t np = qt->n_partition_indexes > 0 ? qt->n_partition_indexes : 0;
            rt->name = qt->name;
            rt->partitions = kf_arena_alloc(&a, (size_t)np * sizeof *rt->partitions + 1);
            if ((oom = !rt->partitions))
                break;
            for (int32_t p = 0; p < np; p++) {
                int32_t index = qt->partition_indexes[p];
                const struct kf_offset *off =
                    gid && qt->name.ptr ? kf_offsets_get(g->offsets, gid, qt->name.ptr,
                                                         (size_t)qt->name.len, index)
                                        : NULL;
                fetch_fill(&rt->partitions[p], index, off, error);
            }
            rt->n_partitions = np;
            rsp.n_topics = t + 1;
        }
    }
    if (oom) {
        kf_offset_fetch_response_init(&rsp);
        rsp.error_code = KF_ERR_UNKNOWN_SERVER_ERROR;
    }
    struct wr_bytes out = {0};
    kf_offset_fetch_response_encode(&out, version, &rsp);
    kf_arena_free(&a);
    free(gid);
    send_body(r, &out);
}

/* ---- DescribeGroups, ListGroups, DeleteGroups ----------------------------------------- */

static int describe_one(struct kf_groups *g, struct kf_arena *a, struct kf_str id,
                        struct kf_describe_groups_response_described_group *d)
{
    d->group_id = id;
    d->authorized_operations = INT32_MIN;
    d->protocol_type = kf_str_c("");
    d->protocol_data = kf_str_c("");
    const struct group *grp = name_ok(id) ? group_find(g, id) : NULL;
    if (!name_ok(id)) {
        d->error_code = KF_ERR_INVALID_GROUP_ID;
        d->group_state = kf_str_c("");
        return WR_OK;
    }
    if (!grp) {
        d->group_state = kf_str_c("Dead"); /* as Kafka describes a group it does not know */
        return WR_OK;
    }
    d->group_state = kf_str_c(state_names[grp->state]);
    d->protocol_type = kf_str_c(grp->protocol_type ? grp->protocol_type : "");
    bool stable = grp->state == STABLE;
    if (stable)
        d->protocol_data = kf_str_c(grp->protocol ? grp->protocol : "");
    d->members = kf_arena_alloc(a, grp->n_members * sizeof *d->members + 1);
    if (!d->members)
        return WR_ENOMEM;
    for (size_t i = 0; i < grp->n_members; i++) {
        const struct member *m = grp->members[i];
        struct kf_describe_groups_response_described_group_member *dm = &d->members[i];
        const struct protocol *p = stable ? member_protocol(m, grp->protocol) : NULL;
        dm->member_id = kf_str_c(m->id);
        dm->group_instance_id = kf_str_c(m->instance_id);
        dm->client_id = kf_str_c(m->client_id);
        dm->client_host = kf_str_c(m->client_host);
        dm->member_metadata = p ? bytes_of(p->meta, p->len) : bytes_of(NULL, 0);
        dm->member_assignment = stable ? bytes_of(m->assignment, m->assignment_len)
                                       : bytes_of(NULL, 0);
    }
    d->n_members = (int32_t)grp->n_members;
    return WR_OK;
}

void kf_group_describe_groups(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                              int16_t version, const struct kf_describe_groups_request *req)
{
    (void)c;
    struct kf_describe_groups_response rsp;
    kf_describe_groups_response_init(&rsp);
    struct kf_arena a = {0};
    int32_t n = req->n_groups > 0 ? req->n_groups : 0;
    rsp.groups = kf_arena_alloc(&a, (size_t)n * sizeof *rsp.groups + 1);
    bool oom = !rsp.groups;
    for (int32_t i = 0; !oom && i < n; i++)
        oom = describe_one(g, &a, req->groups[i], &rsp.groups[i]) != WR_OK;
    rsp.n_groups = oom ? 0 : n;
    struct wr_bytes out = {0};
    kf_describe_groups_response_encode(&out, version, &rsp);
    kf_arena_free(&a);
    send_body(r, &out);
}

void kf_group_list_groups(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                          int16_t version, const struct kf_list_groups_request *req)
{
    (void)c;
    (void)req;
    struct kf_list_groups_response rsp;
    kf_list_groups_response_init(&rsp);
    size_t n = 0;
    for (const struct group *grp = g->groups; grp; grp = grp->next)
        n++;
    rsp.groups = calloc(n ? n : 1, sizeof *rsp.groups);
    if (!rsp.groups) {
        rsp.error_code = KF_ERR_UNKNOWN_SERVER_ERROR;
    } else {
        for (const struct group *grp = g->groups; grp; grp = grp->next, rsp.n_groups++) {
            rsp.groups[rsp.n_groups].group_id = kf_str_c(grp->id);
            rsp.groups[rsp.n_groups].protocol_type =
                kf_str_c(grp->protocol_type ? grp->protocol_type : "");
        }
    }
    struct wr_bytes out = {0};
    kf_list_groups_response_encode(&out, version, &rsp);
    free(rsp.groups);
    send_body(r, &out);
}

void kf_group_delete_groups(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
                            int16_t version, const struct kf_delete_groups_request *req)
{
    (void)c;
    struct kf_delete_groups_response rsp;
    kf_delete_groups_response_init(&rsp);
    int32_t n = req->n_groups_names > 0 ? req->n_groups_names : 0;
    rsp.results = calloc(n ? (size_t)n : 1, sizeof *rsp.results);
    bool wrote = false;
    for (int32_t i = 0; rsp.results && i < n; i++) {
        struct kf_str id = req->groups_names[i];
        struct group *grp = name_ok(id) ? group_find(g, id) : NULL;
        rsp.results[i].group_id = id;
        if (!name_ok(id)) {
            rsp.results[i].error_code = KF_ERR_INVALID_GROUP_ID;
        } else if (!grp) {
            rsp.results[i].error_code = KF_ERR_GROUP_ID_NOT_FOUND;
        } else if (grp->state != EMPTY || grp->n_members || grp->n_pending) {
            rsp.results[i].error_code = KF_ERR_NON_EMPTY_GROUP;
        } else {
            kf_offsets_stage_delete(g->offsets, grp->id);
            struct wr_error err = {0};
            if (kf_offsets_flush(g->offsets, &err) != WR_OK) {
                wr_log(WR_LOG_ERROR, "kafka", "group '%s' not deleted: %s", grp->id, err.msg);
                rsp.results[i].error_code = KF_ERR_KAFKA_STORAGE_ERROR;
                continue;
            }
            wrote = true;
            group_unlink(grp);
            group_free(grp);
        }
    }
    rsp.n_results = rsp.results ? n : 0;
    struct wr_bytes ok = {0}, failed = {0};
    kf_delete_groups_response_encode(&ok, version, &rsp);
    if (wrote) {
        for (int32_t i = 0; i < rsp.n_results; i++)
            if (rsp.results[i].error_code == KF_ERR_NONE)
                rsp.results[i].error_code = KF_ERR_KAFKA_STORAGE_ERROR;
        kf_delete_groups_response_encode(&failed, version, &rsp);
    }
    free(rsp.results);
    if (wrote) {
        answer_when_durable(g, r, &ok, &failed);
        return;
    }
    send_body(r, &ok);
}

/* ---- life cycle ----------------------------------------------------------------------- */

int kf_groups_new(struct wr_broker *b, struct wr_loop *lp, const char *data_dir,
                  struct kf_groups **out, struct wr_error *err)
{
    struct kf_groups *g = calloc(1, sizeof *g);
    if (!g)
        return wr_error_set(err, WR_ENOMEM, "out of memory starting the group coordinator");
    (void)b; /* offsets live in the transport's own file, not in broker queues */
    g->lp = lp;
    g->min_session_ms = 6000;
    g->max_session_ms = 1800000;
    g->initial_delay_ms = 3000;
    int rc = kf_offsets_open(lp, data_dir, &g->offsets, err);
    for (size_t i = 0; rc == WR_OK && i < kf_offsets_n_groups(g->offsets); i++)
        if (!group_new(g, kf_offsets_group_at(g->offsets, i)->id))
            rc = wr_error_set(err, WR_ENOMEM, "out of memory loading the consumer groups");
    if (rc != WR_OK) {
        kf_groups_free(g);
        return rc;
    }
    *out = g;
    return WR_OK;
}

void kf_groups_set_session_limits(struct kf_groups *g, int32_t min_ms, int32_t max_ms)
{
    g->min_session_ms = min_ms;
    g->max_session_ms = max_ms;
}

void kf_groups_set_initial_rebalance_delay(struct kf_groups *g, int32_t ms)
{
    g->initial_delay_ms = ms;
}

void kf_groups_free(struct kf_groups *g)
{
    if (!g)
        return;
    while (g->groups) {
        struct group *grp = g->groups;
        g->groups = grp->next;
        for (size_t i = 0; i < grp->n_members; i++)
            member_answer_waits(grp->members[i], KF_ERR_COORDINATOR_NOT_AVAILABLE);
        group_free(grp);
    }
    kf_offsets_close(g->offsets);
    free(g);
}
