/*
 * handlers.c: the Kafka requests warren answers itself, and the dispatcher.
 *
 * The broker is a one-node cluster: node 0 at the listener's advertised host and port is
 * the controller and the leader of every partition, with ISR [0]. A topic is a log queue of
 * vhost "/"; its partitions are the queue's.
 *
 * Produce appends each RecordBatch of a partition as it came (wr_queue_append_batch checks
 * magic and CRC and assigns the base offset), or for v0-2 the legacy message set converted
 * to one batch (msgset.c), and answers, for acks 1 and -1, once the broker's sync barrier
 * says the appends are durable. Fetch builds its response as segments: the bytes up to a
 * partition's records from memory, the records as a file range (sendfile; for v2-3 a
 * magic-1 message set converted in memory), then the rest; with less than min_bytes
 * available it waits up to max_wait_ms, re-checking whenever a topic it reads is appended to.
 *
 * Idempotent producers: InitProducerId hands out ids from a counter seeded with the wall
 * clock (milliseconds x 1024), so ids stay unique across restarts without a file. The last
 * five batches per (producer, partition) are remembered, as Kafka does, to answer a retried
 * batch with its first offset. Kafka rebuilds that state from the log at start; so does
 * this file, lazily: the first idempotent batch for a partition after start reads the
 * headers of the partition's last batches (scan_producers), so a retry of a batch stored
 * before a restart is not stored twice.
 */
#include "handlers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kafka_msgs.h"
#include "group.h"
#include "msgset.h"


#define TOPIC_NAME_MAX 249
#define SEQ_CACHE 5 /* batches remembered per producer and partition, as Kafka */
#define BATCH_HEADER 61
#define BATCH_ATTR_CONTROL 0x20 /* a transaction marker, not records */

/* How far back scan_producers reads a partition: the batches holding its last 256Ki
 * records. Its job is the batches producers may still retry, which are their last five
 * (max.in.flight) and so among the newest of the log when the broker stopped; the rest of
 * the window gives producers that were idle a while their last sequence back, so a gap is
 * still seen. Producers older than the window are new to the broker, which takes any
 * sequence from them, as Kafka does once their state expired. Only the 61-byte batch
 * headers are read, in SCAN_CHUNK reads, so this is at most 256Ki headers once per
 * partition per start, on the loop thread. */
#define SCAN_RECORDS (1u << 18)
#define SCAN_CHUNK (64u << 10)

struct seq_batch {
    int32_t first, last;
    int64_t base_offset;
};

/* What an idempotent producer last appended to one partition. */
struct producer_state {
    struct producer_state *next;
    int64_t producer_id;
    int16_t epoch;
    struct seq_batch batches[SEQ_CACHE]; /* ring; n of them valid, newest at (at - 1) */
    int n, at;
};

/* The idempotent producers of one partition, made (and filled from the log) the first
 * time an idempotent batch arrives for it. */
struct partition_producers {
    struct partition_producers *next;
    struct wr_queue *q;      /* referenced: a topic deleted and made again is another queue */
    uint32_t partition;
    struct producer_state *producers;
};

struct fetch_wait;

struct kf_handlers {
    struct kf_listener *l;
    int64_t next_producer_id;
    struct partition_producers *partitions; /* a list: few partitions take idempotent
                                             * producers on a broker */
    struct fetch_wait *fetches;             /* waiting long polls, doubly linked */
};

/* ---- helpers ----------------------------------------------------------------------------- */

#define ARRAY(a, T, n) ((T *)kf_arena_alloc((a), ((n) > 0 ? (size_t)(n) : 1) * sizeof(T)))

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t be64(const uint8_t *p)
{
    return (uint64_t)be32(p) << 32 | be32(p + 4);
}

/* A topic name as a C string; false when it is not a valid Kafka topic name. */
static bool topic_name(struct kf_str s, char out[TOPIC_NAME_MAX + 1])
{
    if (!s.ptr || s.len < 1 || s.len > TOPIC_NAME_MAX)
        return false;
    for (int32_t i = 0; i < s.len; i++) {
        char ch = s.ptr[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return false;
    }
    memcpy(out, s.ptr, (size_t)s.len);
    out[s.len] = 0;
    return strcmp(out, ".") && strcmp(out, "..");
}

/* A copy of s in the arena, so a response outlives the request's bytes. */
static struct kf_str arena_str(struct kf_arena *a, struct kf_str s)
{
    if (!s.ptr)
        return s;
    char *p = kf_arena_alloc(a, (size_t)s.len + 1);
    if (!p)
        return (struct kf_str){"", 0};
    memcpy(p, s.ptr, (size_t)s.len);
    return (struct kf_str){p, s.len};
}

static struct wr_queue *find_topic(struct kf_conn *c, const char *name)
{
    struct wr_vhost *vh = kf_conn_vhost(c);
    struct wr_queue *q = vh ? wr_queue_find(vh, name) : NULL;
    return q && wr_queue_is_log(q) ? q : NULL;
}

static void send_encoded(struct kf_reply *r, struct wr_bytes *out)
{
    kf_reply_send(r, out);
    wr_bytes_free(out);
}

/* Topic configs Kafka clients set, mapped to the log storage's options. */
struct config_map {
    const char *kafka, *option;
    bool number;
    const char *fallback; /* what DescribeConfigs shows: the storage's default */
};

static const struct config_map configs[] = {
    {"retention.ms", "retention_ms", true, "604800000"},
    {"retention.bytes", "retention_bytes", true, "-1"},
    {"segment.bytes", "segment_bytes", true, "1073741824"},
    {"segment.ms", "segment_ms", true, "604800000"},
    {"cleanup.policy", "cleanup_policy", false, "delete"},
};

/* Adds a Kafka topic config to the storage options; an unknown name is ignored (the
 * storage has no equivalent). Returns false for a value it cannot take. */
static bool config_add(struct wr_table *opts, struct kf_str name, struct kf_str value)
{
    for (size_t i = 0; i < sizeof configs / sizeof *configs; i++) {
        const struct config_map *m = &configs[i];
        if (!name.ptr || (size_t)name.len != strlen(m->kafka) ||
            memcmp(name.ptr, m->kafka, (size_t)name.len))
            continue;
        if (!value.ptr)
            return true;
        char text[64];
        if (value.len <= 0 || (size_t)value.len >= sizeof text)
            return false;
        memcpy(text, value.ptr, (size_t)value.len);
        text[value.len] = 0;
        struct wr_value v;
        if (m->number) {
            char *end = NULL;
            long long n = strtoll(text, &end, 10);
            if (*end || n < -1)
                return false;
            v = wr_value_i64(n < 0 ? 0 : n); /* Kafka's -1 (unlimited) is the storage's 0 */
        } else {
            if (strcmp(text, "delete") && strcmp(text, "compact") &&
                strcmp(text, "compact,delete") && strcmp(text, "delete,compact"))
                return false;
            v = wr_value_str(strcmp(text, "delete,compact") ? text : "compact,delete");
        }
        return wr_table_set(opts, m->option, &v) == WR_OK;
    }
    return true;
}

/* Creates a topic (or checks that it could be); returns a Kafka error code and fills why. */
static int16_t create_topic(struct kf_conn *c, const char *name, int32_t partitions,
                            const struct wr_table *opts, bool validate_only, char *why,
                            size_t why_size)
{
    struct wr_vhost *vh = kf_conn_vhost(c);
    const char *storage = vh ? wr_vhost_storage(vh, WR_ROLE_STREAM) : NULL;
    if (!storage) {
        snprintf(why, why_size, "no log storage is loaded");
        return KF_ERR_UNKNOWN_SERVER_ERROR;
    }
    if (wr_queue_find(vh, name)) {
        snprintf(why, why_size, "Topic '%s' already exists.", name);
        return KF_ERR_TOPIC_ALREADY_EXISTS;
    }
    if (partitions < 1 || partitions > 100000) {
        snprintf(why, why_size, "Number of partitions must be between 1 and 100000.");
        return KF_ERR_INVALID_PARTITIONS;
    }
    if (validate_only)
        return KF_ERR_NONE;
    struct wr_queue_decl d;
    wr_queue_decl_init(&d, name);
    d.storage = storage;
    d.durable = true;
    d.partitions = (uint32_t)partitions;
    d.options = opts;
    struct wr_error err = {0};
    struct wr_queue *q = NULL;
    if (wr_queue_declare(vh, &d, &q, &err) != WR_OK) {
        snprintf(why, why_size, "%s", err.msg);
        kf_conn_log(c, WR_LOG_WARN, "cannot create topic '%s': %s", name, err.msg);
        return err.code == WR_EINVAL ? KF_ERR_INVALID_CONFIG : KF_ERR_UNKNOWN_SERVER_ERROR;
    }
    kf_conn_log(c, WR_LOG_INFO, "created topic '%s' with %d partition(s)", name, partitions);
    return KF_ERR_NONE;
}

/* ---- ApiVersions ------------------------------------------------------------------------- */

bool kf_api_supported(int16_t api_key, int16_t version)
{
    for (int i = 0; i < KF_N_APIS; i++)
        if (kf_api_ranges[i].api_key == api_key)
            return version >= kf_api_ranges[i].min && version <= kf_api_ranges[i].max;
    return false;
}

static void api_versions_answer(struct kf_reply *r, int16_t version, int16_t error)
{
    struct kf_api_versions_response_api_version keys[KF_N_APIS];
    for (int i = 0; i < KF_N_APIS; i++)
        keys[i] = (struct kf_api_versions_response_api_version){
            kf_api_ranges[i].api_key, kf_api_ranges[i].min, kf_api_ranges[i].max};
    struct kf_api_versions_response m;
    kf_api_versions_response_init(&m);
    m.error_code = error;
    m.api_keys = keys;
    m.n_api_keys = KF_N_APIS;
    struct wr_bytes out = {0};
    kf_api_versions_response_encode(&out, version, &m);
    send_encoded(r, &out);
}

void kf_api_versions_unsupported(struct kf_reply *r)
{
    api_versions_answer(r, 0, KF_ERR_UNSUPPORTED_VERSION);
}

/* ---- Metadata ---------------------------------------------------------------------------- */

static bool metadata_topic(struct kf_conn *c, struct kf_arena *a, int16_t v, struct wr_queue *q,
                           struct kf_str name, int16_t error,
                           struct kf_metadata_response_metadata_response_topic *t)
{
    kf_metadata_response_metadata_response_topic_init(t);
    t->error_code = error;
    t->name = arena_str(a, name);
    (void)c, (void)v;
    if (!q)
        return true;
    uint32_t n = wr_queue_partitions(q);
    t->partitions = ARRAY(a, struct kf_metadata_response_metadata_response_partition, n);
    int32_t *zero = ARRAY(a, int32_t, 1);
    if (!t->partitions || !zero)
        return false;
    t->n_partitions = (int32_t)n;
    for (uint32_t i = 0; i < n; i++) {
        struct kf_metadata_response_metadata_response_partition *p = &t->partitions[i];
        kf_metadata_response_metadata_response_partition_init(p);
        p->partition_index = (int32_t)i;
        p->leader_id = 0;
        p->replica_nodes = p->isr_nodes = zero;
        p->n_replica_nodes = p->n_isr_nodes = 1;
    }
    return true;
}

/* Every topic of a vhost: counted first, then collected. */
struct all_topics {
    struct wr_queue **topics;
    size_t n, cap;
};

static void count_topic(struct wr_queue *q, void *data)
{
    ((struct all_topics *)data)->cap += wr_queue_is_log(q);
}

static void add_topic(struct wr_queue *q, void *data)
{
    struct all_topics *all = data;
    if (wr_queue_is_log(q) && all->n < all->cap)
        all->topics[all->n++] = q;
}

static int metadata(struct kf_conn *c, struct kf_reply *r, int16_t v,
                    const struct kf_metadata_request *req, struct kf_arena *a)
{
    struct kf_listener *l = kf_conn_listener(c);
    struct kf_metadata_response m;
    kf_metadata_response_init(&m);
    struct kf_metadata_response_metadata_response_broker broker;
    kf_metadata_response_metadata_response_broker_init(&broker);
    broker.node_id = 0;
    broker.host = kf_str_c(kf_conn_node_host(c));
    broker.port = kf_conn_node_port(c);
    m.brokers = &broker;
    m.n_brokers = 1;
    m.cluster_id = kf_str_c("warren");
    m.controller_id = 0;
    /* A null list (v1+), or an empty one in v0, asks for every topic: every log queue. */
    if (v == 0 ? req->n_topics <= 0 : req->n_topics < 0) {
        struct all_topics all = {NULL, 0, 0};
        wr_vhost_each_queue(kf_conn_vhost(c), count_topic, &all);
        all.topics = ARRAY(a, struct wr_queue *, all.cap);
        if (!all.topics && all.cap)
            return WR_ENOMEM;
        wr_vhost_each_queue(kf_conn_vhost(c), add_topic, &all);
        m.topics = ARRAY(a, struct kf_metadata_response_metadata_response_topic, all.n);
        if (!m.topics && all.n)
            return WR_ENOMEM;
        for (size_t i = 0; i < all.n; i++)
            if (!metadata_topic(c, a, v, all.topics[i], kf_str_c(wr_queue_name(all.topics[i])),
                                KF_ERR_NONE, &m.topics[i]))
                return WR_ENOMEM;
        m.n_topics = (int32_t)all.n;
        struct wr_bytes out = {0};
        kf_metadata_response_encode(&out, v, &m);
        send_encoded(r, &out);
        return WR_OK;
    }
    int32_t n = req->n_topics > 0 ? req->n_topics : 0;
    m.topics = ARRAY(a, struct kf_metadata_response_metadata_response_topic, n);
    if (!m.topics && n)
        return WR_ENOMEM;
    bool may_create = l->auto_create_topics && (v < 4 || req->allow_auto_topic_creation);
    for (int32_t i = 0; i < n; i++) {
        char name[TOPIC_NAME_MAX + 1];
        struct kf_str s = req->topics[i].name;
        struct wr_queue *q = NULL;
        int16_t error = KF_ERR_NONE;
        if (!topic_name(s, name)) {
            error = KF_ERR_INVALID_TOPIC_EXCEPTION;
        } else if (!(q = find_topic(c, name))) {
            char why[WR_ERROR_MSG_MAX];
            error = KF_ERR_UNKNOWN_TOPIC_OR_PARTITION;
            if (may_create && !wr_queue_find(kf_conn_vhost(c), name) &&
                create_topic(c, name, l->default_partitions, NULL, false, why, sizeof why) ==
                    KF_ERR_NONE)
                q = find_topic(c, name);
            if (q)
                error = KF_ERR_NONE;
        }
        if (!metadata_topic(c, a, v, q, s.ptr ? s : kf_str_c(""), error, &m.topics[i]))
            return WR_ENOMEM;
    }
    m.n_topics = n;
    struct wr_bytes out = {0};
    kf_metadata_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

/* ---- topic administration ---------------------------------------------------------------- */

static int create_topics(struct kf_conn *c, struct kf_reply *r, int16_t v,
                         const struct kf_create_topics_request *req, struct kf_arena *a)
{
    struct kf_listener *l = kf_conn_listener(c);
    struct kf_create_topics_response m;
    kf_create_topics_response_init(&m);
    int32_t n = req->n_topics > 0 ? req->n_topics : 0;
    m.topics = ARRAY(a, struct kf_create_topics_response_creatable_topic_result, n);
    if (!m.topics)
        return WR_ENOMEM;
    m.n_topics = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kf_create_topics_request_creatable_topic *t = &req->topics[i];
        struct kf_create_topics_response_creatable_topic_result *res = &m.topics[i];
        kf_create_topics_response_creatable_topic_result_init(res);
        res->name = arena_str(a, t->name);
        char name[TOPIC_NAME_MAX + 1], why[WR_ERROR_MSG_MAX] = "";
        struct wr_table *opts = wr_table_new();
        if (!opts)
            return WR_ENOMEM;
        int32_t partitions = t->num_partitions == -1 ? l->default_partitions : t->num_partitions;
        if (!topic_name(t->name, name)) {
            res->error_code = KF_ERR_INVALID_TOPIC_EXCEPTION;
            snprintf(why, sizeof why, "Topic name is not valid.");
        } else if (t->replication_factor != -1 && t->replication_factor != 1) {
            res->error_code = KF_ERR_INVALID_REPLICATION_FACTOR;
            snprintf(why, sizeof why, "Replication factor: %d larger than available brokers: 1.",
                     t->replication_factor);
        } else if (t->n_assignments > 0) {
            res->error_code = KF_ERR_INVALID_REPLICA_ASSIGNMENT;
            snprintf(why, sizeof why, "warren does not take replica assignments.");
        } else {
            for (int32_t k = 0; k < t->n_configs && !res->error_code; k++)
                if (!config_add(opts, t->configs[k].name, t->configs[k].value)) {
                    res->error_code = KF_ERR_INVALID_CONFIG;
                    snprintf(why, sizeof why, "Invalid value for config %.*s.",
                             t->configs[k].name.len, t->configs[k].name.ptr);
                }
            if (!res->error_code)
                res->error_code =
                    create_topic(c, name, partitions, opts, req->validate_only, why, sizeof why);
        }
        wr_table_free(opts);
        if (res->error_code)
            res->error_message = arena_str(a, kf_str_c(why));
    }
    struct wr_bytes out = {0};
    kf_create_topics_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

static int delete_topics(struct kf_conn *c, struct kf_reply *r, int16_t v,
                         const struct kf_delete_topics_request *req, struct kf_arena *a)
{
    struct kf_delete_topics_response m;
    kf_delete_topics_response_init(&m);
    int32_t n = req->n_topic_names > 0 ? req->n_topic_names : 0;
    m.responses = ARRAY(a, struct kf_delete_topics_response_deletable_topic_result, n);
    if (!m.responses)
        return WR_ENOMEM;
    m.n_responses = n;
    for (int32_t i = 0; i < n; i++) {
        struct kf_delete_topics_response_deletable_topic_result *res = &m.responses[i];
        kf_delete_topics_response_deletable_topic_result_init(res);
        res->name = arena_str(a, req->topic_names[i]);
        char name[TOPIC_NAME_MAX + 1];
        struct wr_queue *q = topic_name(req->topic_names[i], name) ? find_topic(c, name) : NULL;
        struct wr_error err = {0};
        if (!q) {
            res->error_code = KF_ERR_UNKNOWN_TOPIC_OR_PARTITION;
        } else if (wr_queue_delete(q, false, false, NULL, &err) != WR_OK) {
            kf_conn_log(c, WR_LOG_WARN, "cannot delete topic '%s': %s", name, err.msg);
            res->error_code = KF_ERR_UNKNOWN_SERVER_ERROR;
        } else {
            kf_conn_log(c, WR_LOG_INFO, "deleted topic '%s'", name);
        }
    }
    struct wr_bytes out = {0};
    kf_delete_topics_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

/* Appends to an error message; what does not fit is cut. */
static void why_add(char *why, size_t size, const char *fmt, ...) WR_PRINTF(3, 4);
static void why_add(char *why, size_t size, const char *fmt, ...)
{
    size_t used = strlen(why);
    if (used + 1 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why + used, size - used, fmt, ap);
    va_end(ap);
}

/* Checks the replica assignments a CreatePartitions request gives for the new partitions
 * with Kafka's checks, order and messages. Node 0 is the only broker, so every partition
 * has one replica and the only valid assignment is [0]. Returns a Kafka error code. */
static int16_t
check_assignments(const struct kf_create_partitions_request_create_partitions_topic *t,
                  uint32_t have, char *why, size_t why_size)
{
    const struct kf_create_partitions_request_create_partitions_assignment *as = t->assignments;
    int32_t n = t->n_assignments;
    if (n < 0) /* null: the broker places them */
        return KF_ERR_NONE;
    int32_t unknown[16]; /* each named once, as Kafka's set; a longer list is cut */
    int n_unknown = 0;
    for (int32_t i = 0; i < n; i++)
        for (int32_t k = 0; k < as[i].n_broker_ids; k++) {
            int32_t id = as[i].broker_ids[k];
            bool seen = id == 0;
            for (int j = 0; j < n_unknown && !seen; j++)
                seen = unknown[j] == id;
            if (!seen && n_unknown < (int)(sizeof unknown / sizeof *unknown))
                unknown[n_unknown++] = id;
        }
    if (n_unknown) {
        snprintf(why, why_size, "Unknown broker(s) in replica assignment: ");
        for (int j = 0; j < n_unknown; j++)
            why_add(why, why_size, "%s%d", j ? ", " : "", unknown[j]);
        why_add(why, why_size, ".");
        return KF_ERR_INVALID_REPLICA_ASSIGNMENT;
    }
    int64_t increase = (int64_t)t->count - have;
    if (n != increase) {
        snprintf(why, why_size, "Increasing the number of partitions by %lld but %d "
                 "assignments provided.", (long long)increase, n);
        return KF_ERR_INVALID_REPLICA_ASSIGNMENT;
    }
    for (int32_t i = 0; i < n; i++) {
        if (as[i].n_broker_ids < 2)
            continue; /* only node 0 is left: two or more name it twice */
        snprintf(why, why_size, "Duplicate brokers not allowed in replica assignment: ");
        for (int32_t k = 0; k < as[i].n_broker_ids && strlen(why) + 1 < why_size; k++)
            why_add(why, why_size, "%s0", k ? ", " : "");
        why_add(why, why_size, " for partition id %u.", have + (uint32_t)i);
        return KF_ERR_INVALID_REPLICA_ASSIGNMENT;
    }
    /* Left: empty lists, a replication factor of 0 against partition 0's 1. */
    char ids[WR_ERROR_MSG_MAX] = "", factors[WR_ERROR_MSG_MAX] = "";
    for (int32_t i = 0; i < n; i++)
        if (as[i].n_broker_ids == 0) {
            why_add(ids, sizeof ids, "%s%u", ids[0] ? ", " : "", have + (uint32_t)i);
            why_add(factors, sizeof factors, "%s0", factors[0] ? ", " : "");
        }
    if (!ids[0])
        return KF_ERR_NONE;
    snprintf(why, why_size, "Inconsistent replication factor between partitions, partition 0 "
             "has 1 while partitions [%.160s] have replication factors [%.160s], respectively.",
             ids, factors);
    return KF_ERR_INVALID_REPLICA_ASSIGNMENT;
}

/* Grows a topic (or checks that it could); returns a Kafka error code and fills why. */
static int16_t grow_topic(struct kf_conn *c, struct wr_queue *q,
                          const struct kf_create_partitions_request_create_partitions_topic *t,
                          bool validate_only, char *why, size_t why_size)
{
    uint32_t have = wr_queue_partitions(q);
    if (t->count < (int64_t)have) {
        snprintf(why, why_size, "Topic currently has %u partitions, which is higher than the "
                 "requested %d.", have, t->count);
        return KF_ERR_INVALID_PARTITIONS;
    }
    if (t->count == (int64_t)have) {
        snprintf(why, why_size, "Topic already has %u partitions.", have);
        return KF_ERR_INVALID_PARTITIONS;
    }
    int16_t error = check_assignments(t, have, why, why_size);
    if (!error && t->count > 100000) {
        snprintf(why, why_size, "Number of partitions must be between 1 and 100000.");
        error = KF_ERR_INVALID_PARTITIONS;
    }
    if (error || validate_only)
        return error;
    struct wr_error err = {0};
    if (wr_queue_add_partitions(q, (uint32_t)t->count, &err) != WR_OK) {
        snprintf(why, why_size, "%s", err.msg);
        kf_conn_log(c, WR_LOG_WARN, "cannot add partitions to topic '%s': %s",
                    wr_queue_name(q), err.msg);
        return err.code == WR_EINVAL ? KF_ERR_INVALID_PARTITIONS : KF_ERR_UNKNOWN_SERVER_ERROR;
    }
    kf_conn_log(c, WR_LOG_INFO, "topic '%s' grew from %u to %d partitions", wr_queue_name(q),
                have, t->count);
    return KF_ERR_NONE;
}

static int create_partitions(struct kf_conn *c, struct kf_reply *r, int16_t v,
                             const struct kf_create_partitions_request *req, struct kf_arena *a)
{
    struct kf_create_partitions_response m;
    kf_create_partitions_response_init(&m);
    int32_t n = req->n_topics > 0 ? req->n_topics : 0;
    m.results = ARRAY(a, struct kf_create_partitions_response_create_partitions_topic_result, n);
    if (!m.results)
        return WR_ENOMEM;
    m.n_results = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kf_create_partitions_request_create_partitions_topic *t = &req->topics[i];
        struct kf_create_partitions_response_create_partitions_topic_result *res = &m.results[i];
        kf_create_partitions_response_create_partitions_topic_result_init(res);
        res->name = arena_str(a, t->name);
        char name[TOPIC_NAME_MAX + 1], why[WR_ERROR_MSG_MAX] = "";
        struct wr_queue *q = topic_name(t->name, name) ? find_topic(c, name) : NULL;
        if (!q) {
            res->error_code = KF_ERR_UNKNOWN_TOPIC_OR_PARTITION;
            snprintf(why, sizeof why, "The topic '%.*s' does not exist.",
                     t->name.ptr ? (int)t->name.len : 0, t->name.ptr ? t->name.ptr : "");
        } else {
            res->error_code = grow_topic(c, q, t, req->validate_only, why, sizeof why);
        }
        if (res->error_code)
            res->error_message = arena_str(a, kf_str_c(why));
    }
    struct wr_bytes out = {0};
    kf_create_partitions_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

static bool key_wanted(const struct kf_describe_configs_request_describe_configs_resource *res,
                       const char *key)
{
    if (!res->configuration_keys)
        return true;
    for (int32_t i = 0; i < res->n_configuration_keys; i++) {
        struct kf_str k = res->configuration_keys[i];
        if (k.ptr && (size_t)k.len == strlen(key) && !memcmp(k.ptr, key, (size_t)k.len))
            return true;
    }
    return false;
}

static int describe_configs(struct kf_conn *c, struct kf_reply *r, int16_t v,
                            const struct kf_describe_configs_request *req, struct kf_arena *a)
{
    enum { RESOURCE_TOPIC = 2, SOURCE_TOPIC = 1, SOURCE_DEFAULT = 5 };
    struct kf_describe_configs_response m;
    kf_describe_configs_response_init(&m);
    int32_t n = req->n_resources > 0 ? req->n_resources : 0;
    m.results = ARRAY(a, struct kf_describe_configs_response_describe_configs_result, n);
    if (!m.results)
        return WR_ENOMEM;
    m.n_results = n;
    const size_t n_configs = sizeof configs / sizeof *configs;
    for (int32_t i = 0; i < n; i++) {
        const struct kf_describe_configs_request_describe_configs_resource *res =
            &req->resources[i];
        struct kf_describe_configs_response_describe_configs_result *out = &m.results[i];
        kf_describe_configs_response_describe_configs_result_init(out);
        out->resource_type = res->resource_type;
        out->resource_name = arena_str(a, res->resource_name);
        if (res->resource_type != RESOURCE_TOPIC)
            continue; /* the broker's own configs: none to show */
        char name[TOPIC_NAME_MAX + 1];
        struct wr_queue *q = topic_name(res->resource_name, name) ? find_topic(c, name) : NULL;
        if (!q) {
            out->error_code = KF_ERR_UNKNOWN_TOPIC_OR_PARTITION;
            out->error_message = kf_str_c("Topic does not exist.");
            continue;
        }
        out->configs =
            ARRAY(a, struct kf_describe_configs_response_describe_configs_resource_result,
                  n_configs);
        if (!out->configs)
            return WR_ENOMEM;
        for (size_t k = 0; k < n_configs; k++) {
            if (!key_wanted(res, configs[k].kafka))
                continue;
            struct kf_describe_configs_response_describe_configs_resource_result *cfg =
                &out->configs[out->n_configs++];
            kf_describe_configs_response_describe_configs_resource_result_init(cfg);
            cfg->name = kf_str_c(configs[k].kafka);
            cfg->read_only = true;
            /* The topic's own setting where it has one (its storage options), else the
             * storage's default. 0 is the storage's "no limit", Kafka's -1. */
            const struct wr_value *set = wr_table_get(wr_queue_options(q), configs[k].option);
            char text[32];
            if (set && wr_value_is_int(set))
                snprintf(text, sizeof text, "%lld", set->u.i ? (long long)set->u.i : -1LL);
            if (set && (wr_value_is_int(set) || set->type == WR_V_STR)) {
                cfg->value = arena_str(a, wr_value_is_int(set)
                                              ? kf_str_c(text)
                                              : (struct kf_str){set->u.s.ptr,
                                                                (int32_t)set->u.s.len});
                cfg->config_source = SOURCE_TOPIC;
            } else {
                cfg->value = kf_str_c(configs[k].fallback);
                cfg->is_default = true;
                cfg->config_source = SOURCE_DEFAULT;
            }
        }
    }
    struct wr_bytes out = {0};
    kf_describe_configs_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

/* ---- idempotent producers ---------------------------------------------------------------- */

static int init_producer_id(struct kf_conn *c, struct kf_reply *r, int16_t v,
                            const struct kf_init_producer_id_request *req)
{
    struct kf_handlers *h = kf_conn_listener(c)->handlers;
    struct kf_init_producer_id_response m;
    kf_init_producer_id_response_init(&m);
    if (req->transactional_id.ptr) {
        m.error_code = KF_ERR_INVALID_REQUEST; /* no transactions (see docs/kafka.md) */
    } else {
        m.producer_id = h->next_producer_id++;
        m.producer_epoch = 0;
    }
    struct wr_bytes out = {0};
    kf_init_producer_id_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

/* The producer fields of a RecordBatch v2 header (p holds its first BATCH_HEADER bytes). */
struct batch_seq {
    int64_t producer_id;
    int16_t epoch;
    int32_t first, last;   /* the sequences of its first and last record */
    bool idempotent;
    bool control;
};

static void batch_seq_read(const uint8_t *p, struct batch_seq *b)
{
    b->producer_id = (int64_t)be64(p + 43);
    b->epoch = (int16_t)(p[51] << 8 | p[52]);
    b->first = (int32_t)be32(p + 53);
    int64_t last = (int64_t)b->first + be32(p + 23); /* lastOffsetDelta */
    if (last > INT32_MAX) /* sequences wrap after INT32_MAX */
        last -= (int64_t)INT32_MAX + 1;
    b->last = (int32_t)last;
    b->idempotent = b->producer_id >= 0 && b->first >= 0;
    b->control = (p[22] & BATCH_ATTR_CONTROL) != 0;
}

static struct producer_state *producer_find(struct partition_producers *pp, int64_t pid)
{
    for (struct producer_state *p = pp->producers; p; p = p->next)
        if (p->producer_id == pid)
            return p;
    return NULL;
}

/* Checks a batch's sequence. Returns KF_ERR_NONE to append it, an error, or -2 (a duplicate:
 * *dup_offset is where it went the first time). */
static int check_sequence(struct producer_state *p, const struct batch_seq *b,
                          int64_t *dup_offset)
{
    if (!p || b->epoch > p->epoch)
        return KF_ERR_NONE;
    if (b->epoch < p->epoch)
        return KF_ERR_INVALID_PRODUCER_EPOCH;
    for (int i = 0; i < p->n; i++) {
        const struct seq_batch *s = &p->batches[i];
        if (s->first == b->first && s->last == b->last) {
            *dup_offset = s->base_offset;
            return -2;
        }
    }
    int32_t newest = p->batches[(p->at + SEQ_CACHE - 1) % SEQ_CACHE].last;
    int32_t next = newest == INT32_MAX ? 0 : newest + 1;
    return b->first == next ? KF_ERR_NONE : KF_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER;
}

static void remember_sequence(struct partition_producers *pp, struct producer_state *p,
                              const struct batch_seq *b, int64_t base_offset)
{
    if (!p) {
        if (!(p = calloc(1, sizeof *p)))
            return; /* out of memory: a retry of this batch would be appended twice */
        p->producer_id = b->producer_id;
        p->epoch = b->epoch;
        p->next = pp->producers;
        pp->producers = p;
    }
    if (b->epoch != p->epoch)
        p->n = p->at = 0;
    p->epoch = b->epoch;
    p->batches[p->at] = (struct seq_batch){b->first, b->last, base_offset};
    p->at = (p->at + 1) % SEQ_CACHE;
    if (p->n < SEQ_CACHE)
        p->n++;
}

static void partition_producers_free(struct partition_producers *pp)
{
    while (pp->producers) {
        struct producer_state *p = pp->producers;
        pp->producers = p->next;
        free(p);
    }
    wr_queue_unref(pp->q);
    free(pp);
}

/* Remembers the idempotent batches among those holding the last SCAN_RECORDS records of
 * the partition, oldest first, as if they had just been appended. Reads their headers only:
 * wr_queue_read names whole batches as a file range, and each header says how long its
 * batch is. Returns WR_OK or the error that cut the scan short. */
static int scan_producers(struct partition_producers *pp, struct wr_error *err)
{
    uint64_t earliest = 0, latest = 0;
    int rc = wr_queue_offsets(pp->q, pp->partition, &earliest, &latest);
    uint64_t next = latest - earliest > SCAN_RECORDS ? latest - SCAN_RECORDS : earliest;
    uint8_t *buf = rc == WR_OK && next < latest ? malloc(SCAN_CHUNK) : NULL;
    if (rc == WR_OK && next < latest && !buf)
        rc = wr_error_set(err, WR_ENOMEM, "out of memory");
    while (rc == WR_OK && next < latest) {
        struct wr_log_slice s = {.fd = -1};
        rc = wr_queue_read(pp->q, pp->partition, next, SCAN_CHUNK, &s, err);
        uint64_t pos = 0, at = 0, have = 0, before = next; /* buf holds [at, at + have) */
        while (rc == WR_OK && pos + BATCH_HEADER <= s.length) {
            if (pos < at || pos + BATCH_HEADER > at + have) {
                uint64_t want = s.length - pos < SCAN_CHUNK ? s.length - pos : SCAN_CHUNK;
                ssize_t got = pread(s.fd, buf, want, (off_t)(s.file_offset + pos));
                if (got < BATCH_HEADER) {
                    rc = wr_error_sys(err, WR_EIO, "cannot read a batch header");
                    break;
                }
                at = pos;
                have = (uint64_t)got;
            }
            const uint8_t *p = buf + (pos - at);
            uint64_t len = 12 + (uint64_t)be32(p + 8);
            if (len < BATCH_HEADER) {
                rc = wr_error_set(err, WR_EPROTO, "a stored batch is shorter than its header");
                break;
            }
            struct batch_seq b;
            batch_seq_read(p, &b);
            if (b.idempotent && !b.control)
                remember_sequence(pp, producer_find(pp, b.producer_id), &b, (int64_t)be64(p));
            next = be64(p) + be32(p + 23) + 1;
            pos += len;
        }
        if (s.fd >= 0)
            close(s.fd);
        if (rc == WR_OK && next <= before)
            break; /* the storage gave nothing from next on: nothing more to learn */
    }
    free(buf);
    return rc;
}

/* The idempotent producers of q's partition, filled from its log when first asked for;
 * NULL out of memory. Those of deleted topics are dropped on the way. */
static struct partition_producers *producers_of(struct kf_conn *c, struct wr_queue *q,
                                                const char *topic, uint32_t partition)
{
    struct kf_handlers *h = kf_conn_listener(c)->handlers;
    for (struct partition_producers **at = &h->partitions; *at;) {
        struct partition_producers *pp = *at;
        if (wr_queue_is_deleted(pp->q)) {
            *at = pp->next;
            partition_producers_free(pp);
        } else if (pp->q == q && pp->partition == partition) {
            return pp;
        } else {
            at = &pp->next;
        }
    }
    struct partition_producers *pp = calloc(1, sizeof *pp);
    if (!pp)
        return NULL;
    pp->q = wr_queue_ref(q);
    pp->partition = partition;
    struct wr_error err = {0};
    if (scan_producers(pp, &err) != WR_OK)
        kf_conn_log(c, WR_LOG_WARN, "%s-%u: the idempotent producers' state is rebuilt from "
                    "part of the log only (%s): a retry of a batch stored before the broker "
                    "started may be stored twice", topic, partition, err.msg);
    pp->next = h->partitions;
    h->partitions = pp;
    return pp;
}

/* ---- Produce ----------------------------------------------------------------------------- */

struct produce_wait {
    struct kf_reply *r;
    struct wr_sync *sync;
    struct kf_arena arena; /* holds the response */
    struct kf_produce_response m;
};

static void produce_answer(struct produce_wait *w, int16_t error)
{
    for (int32_t i = 0; i < w->m.n_responses; i++) {
        struct kf_produce_response_topic_produce_response *t = &w->m.responses[i];
        for (int32_t k = 0; k < t->n_partition_responses; k++)
            if (error && !t->partition_responses[k].error_code) {
                t->partition_responses[k].error_code = error;
                t->partition_responses[k].base_offset = -1;
            }
    }
    struct wr_bytes out = {0};
    kf_produce_response_encode(&out, kf_reply_version(w->r), &w->m);
    send_encoded(w->r, &out);
    kf_arena_free(&w->arena);
    free(w);
}

static void on_produce_synced(void *data, int status)
{
    produce_answer(data, status == WR_OK ? KF_ERR_NONE : KF_ERR_KAFKA_STORAGE_ERROR);
}

static void on_produce_abort(struct kf_reply *r, void *data)
{
    (void)r;
    struct produce_wait *w = data;
    wr_sync_cancel(w->sync);
    /* not known durable: the client retries elsewhere (or here, after a restart) */
    produce_answer(w, KF_ERR_NOT_LEADER_OR_FOLLOWER);
}

/* Appends one partition's records (one or more batches); returns a Kafka error code. */
static int16_t produce_partition(struct kf_conn *c, struct wr_queue *q, const char *topic,
                                 uint32_t partition, struct kf_str records, int64_t *base,
                                 bool *appended)
{
    uint8_t *p = (uint8_t *)records.ptr; /* the connection's input buffer: ours to change */
    size_t left = records.ptr ? (size_t)records.len : 0;
    if (!left)
        return KF_ERR_CORRUPT_MESSAGE;
    *base = -1;
    while (left) {
        if (left < 17)
            return KF_ERR_CORRUPT_MESSAGE;
        if (p[16] != 2)
            return KF_ERR_UNSUPPORTED_FOR_MESSAGE_FORMAT;
        size_t len = 12 + (size_t)be32(p + 8);
        if (len < BATCH_HEADER || len > left)
            return KF_ERR_CORRUPT_MESSAGE;
        struct batch_seq seq;
        batch_seq_read(p, &seq);
        /* NULL out of memory: the batch goes in unchecked, as a plain producer's */
        struct partition_producers *pp =
            seq.idempotent ? producers_of(c, q, topic, partition) : NULL;
        struct producer_state *ps = pp ? producer_find(pp, seq.producer_id) : NULL;
        int64_t offset = -1;
        if (pp) {
            int rc = check_sequence(ps, &seq, &offset);
            if (rc > 0)
                return (int16_t)rc;
        }
        if (offset < 0) {
            uint64_t assigned = 0;
            struct wr_error err = {0};
            int rc = wr_queue_append_batch(q, partition, p, len, &assigned, &err);
            if (rc == WR_EPROTO)
                return KF_ERR_CORRUPT_MESSAGE;
            if (rc != WR_OK) {
                kf_conn_log(c, WR_LOG_WARN, "append to %s-%u: %s", topic, partition, err.msg);
                return KF_ERR_KAFKA_STORAGE_ERROR;
            }
            offset = (int64_t)assigned;
            *appended = true;
            if (pp)
                remember_sequence(pp, ps, &seq, offset);
        }
        if (*base < 0)
            *base = offset;
        p += len;
        left -= len;
    }
    return KF_ERR_NONE;
}

static int16_t msgset_error(enum kf_msgset_status status)
{
    return status == KF_MSGSET_OK ? KF_ERR_NONE
           : status == KF_MSGSET_COMPRESSED ? KF_ERR_UNSUPPORTED_COMPRESSION_TYPE
                                            : KF_ERR_CORRUPT_MESSAGE;
}

/* Produce v0-2: the message set becomes one uncompressed RecordBatch, appended as above. */
static int16_t produce_msgset(struct kf_conn *c, struct wr_queue *q, const char *topic,
                              uint32_t partition, struct kf_str records, int64_t *base,
                              bool *appended)
{
    struct wr_bytes batch = {0};
    int16_t error = records.ptr ? msgset_error(kf_msgset_to_batch(
                                      (const uint8_t *)records.ptr, (size_t)records.len, &batch))
                                : KF_ERR_CORRUPT_MESSAGE;
    if (!error && batch.oom)
        error = KF_ERR_KAFKA_STORAGE_ERROR;
    if (!error)
        error = produce_partition(c, q, topic, partition,
                                  (struct kf_str){(const char *)batch.p, (int32_t)batch.len},
                                  base, appended);
    wr_bytes_free(&batch);
    return error;
}

static int produce(struct kf_conn *c, struct kf_reply *r, int16_t v,
                   const struct kf_produce_request *req, struct kf_arena *a)
{
    struct produce_wait *w = calloc(1, sizeof *w);
    if (!w)
        return WR_ENOMEM;
    w->r = r;
    w->arena = *a; /* the response lives in the request's arena, which we keep */
    a->blocks = NULL;
    struct kf_produce_response *m = &w->m;
    kf_produce_response_init(m);
    int32_t n = req->n_topic_data > 0 ? req->n_topic_data : 0;
    m->responses = ARRAY(&w->arena, struct kf_produce_response_topic_produce_response, n);
    bool appended = false;
    for (int32_t i = 0; m->responses && i < n; i++) {
        const struct kf_produce_request_topic_produce_data *td = &req->topic_data[i];
        struct kf_produce_response_topic_produce_response *tr = &m->responses[i];
        kf_produce_response_topic_produce_response_init(tr);
        tr->name = arena_str(&w->arena, td->name);
        int32_t np = td->n_partition_data > 0 ? td->n_partition_data : 0;
        tr->partition_responses =
            ARRAY(&w->arena, struct kf_produce_response_partition_produce_response, np);
        if (!tr->partition_responses)
            break;
        tr->n_partition_responses = np;
        char name[TOPIC_NAME_MAX + 1];
        struct wr_queue *q = topic_name(td->name, name) ? find_topic(c, name) : NULL;
        for (int32_t k = 0; k < np; k++) {
            const struct kf_produce_request_partition_produce_data *pd = &td->partition_data[k];
            struct kf_produce_response_partition_produce_response *pr =
                &tr->partition_responses[k];
            kf_produce_response_partition_produce_response_init(pr);
            pr->index = pd->index;
            pr->base_offset = -1;
            if (!q || pd->index < 0 || (uint32_t)pd->index >= wr_queue_partitions(q))
                pr->error_code = KF_ERR_UNKNOWN_TOPIC_OR_PARTITION;
            else if (v < 3)
                pr->error_code = produce_msgset(c, q, name, (uint32_t)pd->index, pd->records,
                                                &pr->base_offset, &appended);
            else
                pr->error_code = produce_partition(c, q, name, (uint32_t)pd->index, pd->records,
                                                   &pr->base_offset, &appended);
            uint64_t earliest = 0, latest = 0;
            if (q && pr->error_code != KF_ERR_UNKNOWN_TOPIC_OR_PARTITION &&
                wr_queue_offsets(q, (uint32_t)pd->index, &earliest, &latest) == WR_OK)
                pr->log_start_offset = (int64_t)earliest;
        }
        m->n_responses = i + 1;
    }
    if (!m->responses || m->n_responses < n) {
        kf_arena_free(&w->arena);
        free(w);
        return WR_ENOMEM;
    }
    if (req->acks == 0) {
        kf_reply_none(r);
        kf_arena_free(&w->arena);
        free(w);
        return WR_OK;
    }
    /* acks=1 is the leader's own append, as in Kafka (the flush policy still syncs it soon);
     * acks=-1 waits until the flush policy has made it durable. */
    if (!appended || req->acks == 1) {
        produce_answer(w, KF_ERR_NONE);
        return WR_OK;
    }
    if ((w->sync = wr_broker_sync(kf_conn_broker(c), on_produce_synced, w))) {
        kf_reply_on_abort(r, on_produce_abort, w);
        return WR_OK;
    }
    produce_answer(w, KF_ERR_KAFKA_STORAGE_ERROR); /* no sync barrier: out of memory */
    return WR_OK;
}

/* ---- Fetch ------------------------------------------------------------------------------- */

struct fetch_part {
    uint32_t index;
    int64_t offset;
    int32_t max_bytes;
};

struct fetch_topic {
    char name[TOPIC_NAME_MAX + 1];
    bool valid;
    struct fetch_part *parts;
    int32_t n_parts;
    struct wr_queue *q;            /* referenced while waiting */
    struct wr_queue_watch *watch;
};

struct fetch_wait {
    struct kf_handlers *h;
    struct fetch_wait *next, *prev;
    struct kf_reply *r;        /* freed once answered */
    struct wr_loop *lp;
    int16_t version;
    int32_t min_bytes, max_bytes;
    uint64_t timer;
    bool waiting;
    struct fetch_topic *topics;
    int32_t n_topics;
};

struct part_result {
    int16_t error;
    int64_t high_watermark, log_start;
    struct wr_log_slice slice;
    struct wr_bytes legacy;    /* Fetch v2-3: the records as a magic-1 message set */
};

static void fetch_free(struct fetch_wait *w)
{
    for (int32_t i = 0; i < w->n_topics; i++) {
        if (w->topics[i].watch)
            wr_queue_unwatch(w->topics[i].watch);
        if (w->topics[i].q)
            wr_queue_unref(w->topics[i].q);
        free(w->topics[i].parts);
    }
    if (w->timer)
        wr_loop_timer_del(w->lp, w->timer);
    free(w->topics);
    free(w);
}

static void put_i16(struct wr_bytes *o, int16_t v) { kf_write_i16(o, v); }

/* Fetch v2-3: the slice's batches become a magic-1 message set in memory (no sendfile),
 * from the offset asked for on; the slice is consumed. */
static void fetch_legacy(struct part_result *pr, uint64_t from)
{
    size_t len = (size_t)pr->slice.length, got = 0;
    uint8_t *p = malloc(len);
    while (p && got < len) {
        ssize_t n = pread(pr->slice.fd, p + got, len - got,
                          (off_t)(pr->slice.file_offset + got));
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(pr->slice.fd);
    pr->slice = (struct wr_log_slice){.fd = -1};
    if (got < len)
        pr->error = KF_ERR_KAFKA_STORAGE_ERROR;
    else
        pr->error = msgset_error(kf_msgset_from_batches(p, len, from, &pr->legacy));
    if (pr->legacy.oom)
        pr->error = KF_ERR_KAFKA_STORAGE_ERROR;
    free(p);
}

/* Reads every partition; answers and returns true when there is enough (or final). */
static bool fetch_try(struct fetch_wait *w, struct kf_conn *c, bool final)
{
    int32_t total_parts = 0;
    for (int32_t i = 0; i < w->n_topics; i++)
        total_parts += w->topics[i].n_parts;
    struct part_result *res = calloc(total_parts ? (size_t)total_parts : 1, sizeof *res);
    if (!res)
        final = true;
    int64_t budget = w->max_bytes, available = 0;
    bool error = false;
    for (int32_t i = 0, at = 0; res && i < w->n_topics; i++) {
        struct fetch_topic *t = &w->topics[i];
        struct wr_queue *q = t->valid ? find_topic(c, t->name) : NULL;
        for (int32_t k = 0; k < t->n_parts; k++, at++) {
            struct part_result *pr = &res[at];
            struct fetch_part *fp = &t->parts[k];
            pr->slice.fd = -1;
            pr->high_watermark = pr->log_start = -1;
            uint64_t earliest = 0, latest = 0;
            if (!q || wr_queue_offsets(q, fp->index, &earliest, &latest) != WR_OK) {
                pr->error = KF_ERR_UNKNOWN_TOPIC_OR_PARTITION;
                error = true;
                continue;
            }
            pr->high_watermark = (int64_t)latest;
            pr->log_start = (int64_t)earliest;
            if (fp->offset < 0 || (uint64_t)fp->offset < earliest ||
                (uint64_t)fp->offset > latest) {
                pr->error = KF_ERR_OFFSET_OUT_OF_RANGE;
                error = true;
                continue;
            }
            if (budget <= 0 || (uint64_t)fp->offset == latest || fp->max_bytes <= 0)
                continue;
            size_t max = (size_t)(fp->max_bytes < budget ? fp->max_bytes : budget);
            int rc = wr_queue_read(q, fp->index, (uint64_t)fp->offset, max, &pr->slice, NULL);
            if (rc == WR_ENOTFOUND) {
                pr->error = KF_ERR_OFFSET_OUT_OF_RANGE;
                error = true;
            } else if (rc != WR_OK) {
                pr->error = KF_ERR_KAFKA_STORAGE_ERROR;
                error = true;
            }
            budget -= (int64_t)pr->slice.length;
            available += (int64_t)pr->slice.length;
            if (w->version < 4 && pr->slice.length)
                fetch_legacy(pr, (uint64_t)fp->offset);
        }
    }
    if (!final && !error && available < w->min_bytes) {
        for (int32_t i = 0; i < total_parts; i++) {
            if (res[i].slice.fd >= 0)
                close(res[i].slice.fd);
            wr_bytes_free(&res[i].legacy);
        }
        free(res);
        return false;
    }
    struct kf_reply *r = w->r;
    int16_t v = w->version;
    struct wr_bytes o = {0};
    kf_write_i32(&o, 0); /* throttle_time_ms */
    if (v >= 7) {
        put_i16(&o, res ? KF_ERR_NONE : KF_ERR_UNKNOWN_SERVER_ERROR);
        kf_write_i32(&o, 0); /* session_id: no incremental fetch sessions */
    }
    kf_write_i32(&o, res ? w->n_topics : 0);
    for (int32_t i = 0, at = 0; res && i < w->n_topics; i++) {
        struct fetch_topic *t = &w->topics[i];
        kf_write_string(&o, kf_str_c(t->name), false);
        kf_write_i32(&o, t->n_parts);
        for (int32_t k = 0; k < t->n_parts; k++, at++) {
            struct part_result *pr = &res[at];
            kf_write_i32(&o, (int32_t)t->parts[k].index);
            put_i16(&o, pr->error);
            kf_write_i64(&o, pr->high_watermark);
            if (v < 4) { /* an empty set is 0 bytes, not null */
                kf_write_bytes(&o, (struct kf_str){pr->legacy.p ? (const char *)pr->legacy.p
                                                                : "",
                                                   (int32_t)pr->legacy.len}, false);
                wr_bytes_free(&pr->legacy);
                if (pr->slice.fd >= 0)
                    close(pr->slice.fd);
                continue;
            }
            kf_write_i64(&o, pr->high_watermark); /* last_stable_offset: no transactions */
            if (v >= 5)
                kf_write_i64(&o, pr->log_start);
            kf_write_i32(&o, 0); /* aborted_transactions: none */
            if (v >= 11)
                kf_write_i32(&o, -1); /* preferred_read_replica */
            kf_write_i32(&o, (int32_t)pr->slice.length);
            if (pr->slice.length) {
                kf_reply_add(r, o.p, o.len);
                o.len = 0;
                kf_reply_add_file(r, pr->slice.fd, pr->slice.file_offset, pr->slice.length);
            } else if (pr->slice.fd >= 0) {
                close(pr->slice.fd);
            }
        }
    }
    free(res);
    if (o.oom) {
        wr_bytes_free(&o);
        o = (struct wr_bytes){0};
        o.oom = true;
    }
    kf_reply_send(r, &o); /* the rest, and completes the reply */
    wr_bytes_free(&o);
    return true;
}

static void fetch_done(struct fetch_wait *w)
{
    struct kf_handlers *h = w->h;
    if (w->waiting) {
        if (w->prev)
            w->prev->next = w->next;
        else
            h->fetches = w->next;
        if (w->next)
            w->next->prev = w->prev;
    }
    fetch_free(w);
}

static void on_fetch_timeout(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct fetch_wait *w = data;
    w->timer = 0;
    struct kf_conn *c = kf_reply_conn(w->r);
    fetch_try(w, c, true);
    fetch_done(w);
}

static void on_fetch_watch(struct wr_queue *q, void *data)
{
    (void)q;
    struct fetch_wait *w = data;
    if (fetch_try(w, kf_reply_conn(w->r), false))
        fetch_done(w);
}

static void on_fetch_abort(struct kf_reply *r, void *data)
{
    struct fetch_wait *w = data;
    struct kf_conn *c = kf_reply_conn(r);
    if (c)
        fetch_try(w, c, true);
    else
        kf_reply_none(r); /* the connection is gone: only frees the reply */
    fetch_done(w);
}

static int fetch(struct kf_conn *c, struct kf_reply *r, int16_t v,
                 const struct kf_fetch_request *req)
{
    struct fetch_wait *w = calloc(1, sizeof *w);
    int32_t n = req->n_topics > 0 ? req->n_topics : 0;
    if (!w || !(w->topics = calloc(n ? (size_t)n : 1, sizeof *w->topics))) {
        free(w);
        return WR_ENOMEM;
    }
    w->h = kf_conn_listener(c)->handlers;
    w->r = r;
    w->lp = kf_conn_loop(c);
    w->version = v;
    w->min_bytes = req->min_bytes;
    w->max_bytes = req->max_bytes;
    w->n_topics = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kf_fetch_request_fetch_topic *ft = &req->topics[i];
        struct fetch_topic *t = &w->topics[i];
        t->valid = topic_name(ft->topic, t->name);
        if (!t->valid)
            snprintf(t->name, sizeof t->name, "%.*s", ft->topic.ptr ? ft->topic.len : 0,
                     ft->topic.ptr ? ft->topic.ptr : "");
        int32_t np = ft->n_partitions > 0 ? ft->n_partitions : 0;
        if (!(t->parts = calloc(np ? (size_t)np : 1, sizeof *t->parts))) {
            fetch_free(w);
            return WR_ENOMEM;
        }
        t->n_parts = np;
        for (int32_t k = 0; k < np; k++)
            t->parts[k] = (struct fetch_part){(uint32_t)ft->partitions[k].partition,
                                              ft->partitions[k].fetch_offset,
                                              ft->partitions[k].partition_max_bytes};
    }
    if (fetch_try(w, c, req->max_wait_ms <= 0)) {
        fetch_free(w);
        return WR_OK;
    }
    /* Long poll: wake on appends to any topic read, or at max_wait_ms. */
    bool ok = true;
    for (int32_t i = 0; ok && i < n; i++) {
        struct fetch_topic *t = &w->topics[i];
        struct wr_queue *q = t->valid ? find_topic(c, t->name) : NULL;
        if (!q)
            continue;
        for (int32_t j = 0; j < i && q; j++)
            if (w->topics[j].q == q)
                q = NULL; /* already watched */
        if (!q)
            continue;
        t->q = wr_queue_ref(q);
        ok = (t->watch = wr_queue_watch(q, on_fetch_watch, w)) != NULL;
    }
    if (ok)
        w->timer = wr_loop_timer_add(kf_conn_loop(c), (uint64_t)req->max_wait_ms,
                                     on_fetch_timeout, w);
    if (!ok || !w->timer) {
        fetch_try(w, c, true);
        fetch_free(w);
        return WR_OK;
    }
    w->waiting = true;
    w->next = w->h->fetches;
    if (w->next)
        w->next->prev = w;
    w->h->fetches = w;
    kf_reply_on_abort(r, on_fetch_abort, w);
    return WR_OK;
}

/* ---- ListOffsets ------------------------------------------------------------------------- */

static int list_offsets(struct kf_conn *c, struct kf_reply *r, int16_t v,
                        const struct kf_list_offsets_request *req, struct kf_arena *a)
{
    struct kf_list_offsets_response m;
    kf_list_offsets_response_init(&m);
    int32_t n = req->n_topics > 0 ? req->n_topics : 0;
    m.topics = ARRAY(a, struct kf_list_offsets_response_list_offsets_topic_response, n);
    if (!m.topics)
        return WR_ENOMEM;
    m.n_topics = n;
    for (int32_t i = 0; i < n; i++) {
        const struct kf_list_offsets_request_list_offsets_topic *t = &req->topics[i];
        struct kf_list_offsets_response_list_offsets_topic_response *tr = &m.topics[i];
        kf_list_offsets_response_list_offsets_topic_response_init(tr);
        tr->name = arena_str(a, t->name);
        int32_t np = t->n_partitions > 0 ? t->n_partitions : 0;
        tr->partitions =
            ARRAY(a, struct kf_list_offsets_response_list_offsets_partition_response, np);
        if (!tr->partitions)
            return WR_ENOMEM;
        tr->n_partitions = np;
        char name[TOPIC_NAME_MAX + 1];
        struct wr_queue *q = topic_name(t->name, name) ? find_topic(c, name) : NULL;
        for (int32_t k = 0; k < np; k++) {
            struct kf_list_offsets_response_list_offsets_partition_response *pr =
                &tr->partitions[k];
            kf_list_offsets_response_list_offsets_partition_response_init(pr);
            uint32_t index = (uint32_t)t->partitions[k].partition_index;
            int64_t ts = t->partitions[k].timestamp;
            pr->partition_index = t->partitions[k].partition_index;
            uint64_t earliest = 0, latest = 0, offset = 0;
            int64_t found = -1;
            if (!q || wr_queue_offsets(q, index, &earliest, &latest) != WR_OK)
                pr->error_code = KF_ERR_UNKNOWN_TOPIC_OR_PARTITION;
            else if (ts == -1)
                pr->offset = (int64_t)latest;
            else if (ts == -2)
                pr->offset = (int64_t)earliest;
            else if (wr_queue_offset_for_time(q, index, ts, &offset, &found) == WR_OK)
                pr->offset = (int64_t)offset, pr->timestamp = found;
        }
    }
    struct wr_bytes out = {0};
    kf_list_offsets_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

/* ---- SASL -------------------------------------------------------------------------------- */

static int sasl_handshake(struct kf_conn *c, struct kf_reply *r, int16_t v,
                          const struct kf_sasl_handshake_request *req)
{
    struct kf_listener *l = kf_conn_listener(c);
    struct kf_str plain = kf_str_c("PLAIN");
    struct kf_sasl_handshake_response m;
    kf_sasl_handshake_response_init(&m);
    if (!l->sasl_plain || kf_conn_authenticated(c)) {
        m.error_code = KF_ERR_ILLEGAL_SASL_STATE;
    } else {
        m.mechanisms = &plain;
        m.n_mechanisms = 1;
        if (req->mechanism.len != 5 || memcmp(req->mechanism.ptr, "PLAIN", 5))
            m.error_code = KF_ERR_UNSUPPORTED_SASL_MECHANISM;
        else if (v == 0)
            kf_conn_expect_sasl_token(c);
    }
    struct wr_bytes out = {0};
    kf_sasl_handshake_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

/* PLAIN: authzid NUL authcid NUL password. */
static bool plain_check(struct kf_conn *c, const uint8_t *p, size_t len)
{
    char buf[1024];
    if (len >= sizeof buf)
        return false;
    memcpy(buf, p, len);
    buf[len] = 0;
    const char *user = memchr(buf, 0, len);
    if (!user)
        return false;
    user++;
    const char *pass = memchr(user, 0, len - (size_t)(user - buf));
    if (!pass)
        return false;
    pass++;
    struct wr_broker *b = kf_conn_broker(c);
    if (!wr_broker_authenticate(b, user, pass) || !wr_broker_user_may_access(b, user, "/")) {
        kf_conn_log(c, WR_LOG_WARN, "SASL PLAIN authentication failed for user '%s'", user);
        return false;
    }
    kf_conn_set_user(c, user);
    kf_conn_log(c, WR_LOG_INFO, "authenticated as '%s'", user);
    return true;
}

static int sasl_authenticate(struct kf_conn *c, struct kf_reply *r, int16_t v,
                             const struct kf_sasl_authenticate_request *req)
{
    struct kf_sasl_authenticate_response m;
    kf_sasl_authenticate_response_init(&m);
    m.auth_bytes = (struct kf_str){"", 0};
    if (!kf_conn_listener(c)->sasl_plain || kf_conn_authenticated(c)) {
        m.error_code = KF_ERR_ILLEGAL_SASL_STATE;
        m.error_message = kf_str_c("SASL is not expected now on this connection.");
    } else if (!plain_check(c, (const uint8_t *)req->auth_bytes.ptr,
                            req->auth_bytes.ptr ? (size_t)req->auth_bytes.len : 0)) {
        m.error_code = KF_ERR_SASL_AUTHENTICATION_FAILED;
        m.error_message =
            kf_str_c("Authentication failed: Invalid username or password");
    }
    struct wr_bytes out = {0};
    kf_sasl_authenticate_response_encode(&out, v, &m);
    send_encoded(r, &out);
    return WR_OK;
}

int kf_sasl_raw(struct kf_conn *c, struct kf_reply *r, const uint8_t *p, size_t len)
{
    if (!plain_check(c, p, len))
        return WR_EPERM;
    struct wr_bytes empty = {0};
    kf_reply_send(r, &empty);
    return WR_OK;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

#define DECODE(api)                                                                          \
    struct kf_##api##_request req;                                                           \
    if (kf_##api##_request_decode(in, v, a, &req) != WR_OK)                                  \
        return WR_EPROTO

#define GROUP(api)                                                                           \
    do {                                                                                     \
        DECODE(api);                                                                         \
        kf_group_##api(l->groups, c, r, v, &req);                                            \
        return WR_OK;                                                                        \
    } while (0)

int kf_dispatch(struct kf_conn *c, struct kf_reply *r, const struct kf_request_header *hdr,
                struct kf_in *in, struct kf_arena *a)
{
    struct kf_listener *l = kf_conn_listener(c);
    int16_t v = hdr->api_version;
    int16_t key = hdr->api_key;
    if (!kf_conn_authenticated(c) && key != KF_API_API_VERSIONS &&
        key != KF_API_SASL_HANDSHAKE && key != KF_API_SASL_AUTHENTICATE)
        return WR_EPERM;
    switch (key) {
    case KF_API_API_VERSIONS: {
        DECODE(api_versions);
        api_versions_answer(r, v, KF_ERR_NONE);
        return WR_OK;
    }
    case KF_API_METADATA: {
        DECODE(metadata);
        return metadata(c, r, v, &req, a);
    }
    case KF_API_PRODUCE: {
        DECODE(produce);
        return produce(c, r, v, &req, a);
    }
    case KF_API_FETCH: {
        DECODE(fetch);
        return fetch(c, r, v, &req);
    }
    case KF_API_LIST_OFFSETS: {
        DECODE(list_offsets);
        return list_offsets(c, r, v, &req, a);
    }
    case KF_API_INIT_PRODUCER_ID: {
        DECODE(init_producer_id);
        return init_producer_id(c, r, v, &req);
    }
    case KF_API_CREATE_TOPICS: {
        DECODE(create_topics);
        return create_topics(c, r, v, &req, a);
    }
    case KF_API_DELETE_TOPICS: {
        DECODE(delete_topics);
        return delete_topics(c, r, v, &req, a);
    }
    case KF_API_CREATE_PARTITIONS: {
        DECODE(create_partitions);
        return create_partitions(c, r, v, &req, a);
    }
    case KF_API_DESCRIBE_CONFIGS: {
        DECODE(describe_configs);
        return describe_configs(c, r, v, &req, a);
    }
    case KF_API_SASL_HANDSHAKE: {
        DECODE(sasl_handshake);
        return sasl_handshake(c, r, v, &req);
    }
    case KF_API_SASL_AUTHENTICATE: {
        DECODE(sasl_authenticate);
        return sasl_authenticate(c, r, v, &req);
    }
    case KF_API_FIND_COORDINATOR: GROUP(find_coordinator);
    case KF_API_JOIN_GROUP: GROUP(join_group);
    case KF_API_SYNC_GROUP: GROUP(sync_group);
    case KF_API_HEARTBEAT: GROUP(heartbeat);
    case KF_API_LEAVE_GROUP: GROUP(leave_group);
    case KF_API_OFFSET_COMMIT: GROUP(offset_commit);
    case KF_API_OFFSET_FETCH: GROUP(offset_fetch);
    case KF_API_DESCRIBE_GROUPS: GROUP(describe_groups);
    case KF_API_LIST_GROUPS: GROUP(list_groups);
    case KF_API_DELETE_GROUPS: GROUP(delete_groups);
    default:
        return WR_EPROTO;
    }
}

/* ---- life cycle -------------------------------------------------------------------------- */

struct kf_handlers *kf_handlers_new(struct kf_listener *l)
{
    struct kf_handlers *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->l = l;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    h->next_producer_id = ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000) * 1024;
    return h;
}

void kf_handlers_free(struct kf_handlers *h)
{
    if (!h)
        return;
    while (h->partitions) {
        struct partition_producers *pp = h->partitions;
        h->partitions = pp->next;
        partition_producers_free(pp);
    }
    free(h);
}
