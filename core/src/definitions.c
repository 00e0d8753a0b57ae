/*
 * definitions.c: the durable topology. The durable exchanges, durable non-exclusive queues
 * and bindings between durable ends that clients declare are appended to
 * <data_dir>/definitions.log, a record file (warren/recfile.h), and fdatasync'd before the
 * declare returns; at start-up the file is replayed into the broker and rewritten compacted
 * (docs/storage.md, "Definitions").
 *
 * The file is a log of changes. A model of what it stores (each live definition kept as the
 * bytes of its record, with the names it is found by) stays in memory, so a compaction is a
 * rewrite of the model and a delete knows whether anything stored names what it deletes.
 *
 * The config's topology is declared before the store opens and is never recorded: the config
 * is declared again at every start. A stored definition that the config contradicts is
 * dropped with a warning; one that only repeats it is kept. Bindings follow RabbitMQ's rule:
 * stored when both ends are durable, whoever declared the ends.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "warren/recfile.h"
#include "broker_int.h"

#define FILE_NAME "definitions.log"
#define COMPACT_SLACK (64u << 10)

static const struct wr_recfile_format format = {
    .magic = "WRDF",
    .version = 1,
    .max_record = 64u << 20, /* no definition comes near it; a longer length is damage */
    .kind = "definitions",
    .contents = "the stored definitions",
    .subsys = "definitions",
};

enum rec_type {
    REC_EXCHANGE = 1,
    REC_EXCHANGE_DELETE,
    REC_QUEUE,
    REC_QUEUE_DELETE,
    REC_BIND,
    REC_UNBIND,
};

/* A live definition of the model. Exchanges, queues and bindings each have a map; bindings
 * with equal (vhost, source, destination, key) and other arguments share a map slot through
 * `same`. */
struct def {
    uint8_t type;                /* REC_EXCHANGE, REC_QUEUE or REC_BIND */
    uint64_t seq;                /* arrival order, which compaction keeps */
    char *key;                   /* the map's key (map.h borrows it) */
    char *vhost, *name;          /* a binding's name is its source exchange */
    bool to_exchange;            /* bindings: the destination is an exchange */
    char *dest;
    struct wr_table *args;       /* bindings: told apart by their arguments */
    struct def *same;
    uint8_t *payload;            /* the record as written */
    size_t len;
};

struct definitions {
    struct wr_recfile *rf;       /* created by the first write */
    const char *path;            /* rf's, for messages */
    uint64_t live;               /* bytes the records of the model take */
    uint64_t seq;
    bool model_lost;             /* out of memory updating the model: never compact from it */
    struct map exchanges, queues, binds;
};

/* A record's fields. Encoding borrows them; a decoded record owns them through own_*. */
struct rec {
    uint8_t type;
    const char *vhost, *name;    /* the exchange or queue; a binding's source */
    struct wr_exchange_decl ex;  /* REC_EXCHANGE */
    struct wr_queue_decl q;      /* REC_QUEUE */
    bool to_exchange;            /* REC_BIND, REC_UNBIND */
    const char *dest, *key;
    const struct wr_table *args;
    char *own_str[8];
    struct wr_table *own_tab[2];
    size_t n_str, n_tab;
};

static bool args_equal(const struct wr_table *a, const struct wr_table *b)
{
    static const struct wr_table none = {0, NULL};
    struct wr_value va = {.type = WR_V_TABLE}, vb = {.type = WR_V_TABLE};
    va.u.table = a ? a : &none;
    vb.u.table = b ? b : &none;
    return wr_value_equal(&va, &vb);
}

/* ---- records ------------------------------------------------------------------------ */

/* Names are NUL-terminated; NULL is absent (an optional dead-letter target). */
static void put_str(struct wr_bytes *o, const char *s)
{
    wr_bytes_str(o, s, s ? strlen(s) : 0);
}

static void rec_encode(struct wr_bytes *o, const struct rec *r)
{
    wr_bytes_u8(o, r->type);
    put_str(o, r->vhost);
    put_str(o, r->name);
    switch (r->type) {
    case REC_EXCHANGE:
        put_str(o, r->ex.type);
        wr_bytes_u8(o, (uint8_t)(r->ex.auto_delete | r->ex.internal << 1));
        wr_table_encode(o, r->ex.args);
        break;
    case REC_QUEUE:
        put_str(o, r->q.storage);
        wr_bytes_u8(o, r->q.auto_delete);
        wr_bytes_u64(o, (uint64_t)r->q.max_length);
        wr_bytes_u64(o, (uint64_t)r->q.max_length_bytes);
        wr_bytes_u8(o, (uint8_t)r->q.overflow);
        wr_bytes_u32(o, r->q.partitions);
        wr_bytes_u64(o, (uint64_t)r->q.message_ttl_ms);
        wr_bytes_u64(o, (uint64_t)r->q.expires_ms);
        put_str(o, r->q.dead_letter_exchange);
        put_str(o, r->q.dead_letter_routing_key);
        wr_bytes_u8(o, r->q.max_priority);
        wr_table_encode(o, r->q.args);
        wr_table_encode(o, r->q.options);
        break;
    case REC_BIND:
    case REC_UNBIND:
        wr_bytes_u8(o, r->to_exchange);
        put_str(o, r->dest);
        put_str(o, r->key);
        wr_table_encode(o, r->args);
        break;
    default: /* the deletes: vhost and name only */
        break;
    }
}

struct cursor {
    struct wr_reader in;
    bool oom;                    /* a failure is WR_ENOMEM rather than WR_EPROTO */
};

/* Ends the read for lack of memory: in.err stops every later read. */
static void out_of_memory(struct cursor *c)
{
    c->oom = true;
    c->in.err = true;
}

/* A string the record owns; NULL when absent (then the caller checks may_be_absent). */
static const char *get_str(struct cursor *c, struct rec *r, bool may_be_absent)
{
    struct wr_str in = wr_read_str(&c->in);
    if (!in.ptr) {
        if (!may_be_absent)
            c->in.err = true;
        return NULL;
    }
    if (memchr(in.ptr, 0, in.len) || r->n_str == sizeof r->own_str / sizeof r->own_str[0]) {
        c->in.err = true; /* a name never holds NUL */
        return NULL;
    }
    char *s = malloc(in.len + 1);
    if (!s) {
        out_of_memory(c);
        return NULL;
    }
    memcpy(s, in.ptr, in.len);
    s[in.len] = '\0';
    r->own_str[r->n_str++] = s;
    return s;
}

static const struct wr_table *get_table(struct cursor *c, struct rec *r)
{
    struct wr_table *t = NULL;
    if (wr_read_table(&c->in, &t) == WR_ENOMEM)
        out_of_memory(c);
    if (t && r->n_tab == sizeof r->own_tab / sizeof r->own_tab[0]) {
        wr_table_free(t);
        c->in.err = true;
        return NULL;
    }
    if (t)
        r->own_tab[r->n_tab++] = t;
    return t;
}

static void rec_free(struct rec *r)
{
    for (size_t i = 0; i < r->n_str; i++)
        free(r->own_str[i]);
    for (size_t i = 0; i < r->n_tab; i++)
        wr_table_free(r->own_tab[i]);
    r->n_str = r->n_tab = 0;
}

/* Decodes a payload into r (rec_free releases it). WR_EPROTO for anything malformed, or
 * WR_ENOMEM. */
static int rec_decode(const uint8_t *p, size_t len, struct rec *r)
{
    struct cursor c = {{p, p + len, false}, false};
    *r = (struct rec){.type = wr_read_u8(&c.in)};
    r->vhost = get_str(&c, r, false);
    r->name = get_str(&c, r, false);
    switch (r->type) {
    case REC_EXCHANGE:
        r->ex.name = r->name;
        r->ex.type = get_str(&c, r, false);
        r->ex.durable = true;
        uint8_t flags = wr_read_u8(&c.in);
        r->ex.auto_delete = flags & 1;
        r->ex.internal = flags & 2;
        r->ex.args = get_table(&c, r);
        break;
    case REC_QUEUE:
        wr_queue_decl_init(&r->q, r->name);
        r->q.durable = true;
        r->q.storage = get_str(&c, r, false);
        r->q.auto_delete = wr_read_u8(&c.in) != 0;
        r->q.max_length = (int64_t)wr_read_u64(&c.in);
        r->q.max_length_bytes = (int64_t)wr_read_u64(&c.in);
        uint8_t overflow = wr_read_u8(&c.in);
        if (overflow > WR_OVERFLOW_REJECT_PUBLISH)
            c.in.err = true;
        r->q.overflow = (enum wr_overflow)overflow;
        r->q.partitions = wr_read_u32(&c.in);
        r->q.message_ttl_ms = (int64_t)wr_read_u64(&c.in);
        r->q.expires_ms = (int64_t)wr_read_u64(&c.in);
        r->q.dead_letter_exchange = get_str(&c, r, true);
        r->q.dead_letter_routing_key = get_str(&c, r, true);
        r->q.max_priority = wr_read_u8(&c.in);
        r->q.args = get_table(&c, r);
        r->q.options = get_table(&c, r);
        break;
    case REC_BIND:
    case REC_UNBIND:
        r->to_exchange = wr_read_u8(&c.in) != 0;
        r->dest = get_str(&c, r, false);
        r->key = get_str(&c, r, false);
        r->args = get_table(&c, r);
        break;
    case REC_EXCHANGE_DELETE:
    case REC_QUEUE_DELETE:
        break;
    default:
        c.in.err = true;
        break;
    }
    if (c.in.p != c.in.end)
        c.in.err = true; /* trailing bytes */
    if (c.in.err)
        rec_free(r);
    return c.oom ? WR_ENOMEM : c.in.err ? WR_EPROTO : WR_OK;
}

/* ---- the model ---------------------------------------------------------------------- */

/* A map key no two different tuples share whatever bytes the names hold: every part but
 * the last after its length. Bindings add their source, kind, destination and key. */
static char *key_make(const char *vhost, const char *name, const char *dest, bool to_exchange,
                      const char *key)
{
    const char *fmt = dest ? "%zu:%s%zu:%s%c%zu:%s%s" : "%zu:%s%s";
    size_t vl = strlen(vhost), nl = strlen(name), dl = dest ? strlen(dest) : 0;
    int n = dest ? snprintf(NULL, 0, fmt, vl, vhost, nl, name, to_exchange ? 'e' : 'q', dl,
                            dest, key)
                 : snprintf(NULL, 0, fmt, vl, vhost, name);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && dest)
        snprintf(s, (size_t)n + 1, fmt, vl, vhost, nl, name, to_exchange ? 'e' : 'q', dl, dest,
                 key);
    else if (s)
        snprintf(s, (size_t)n + 1, fmt, vl, vhost, name);
    return s;
}

static void def_free(struct def *df)
{
    free(df->key);
    free(df->vhost);
    free(df->name);
    free(df->dest);
    wr_table_free(df->args);
    free(df->payload);
    free(df);
}

/* A definition for r, whose record is payload[len]; NULL out of memory. */
static struct def *def_new(struct definitions *d, uint8_t type, const struct rec *r,
                           const uint8_t *payload, size_t len)
{
    struct def *df = calloc(1, sizeof *df);
    if (!df)
        return NULL;
    df->type = type;
    df->seq = ++d->seq;
    df->to_exchange = r->to_exchange;
    df->len = len;
    bool bind = type == REC_BIND;
    df->key = key_make(r->vhost, r->name, bind ? r->dest : NULL, r->to_exchange, r->key);
    df->vhost = strdup(r->vhost);
    df->name = strdup(r->name);
    df->dest = bind ? strdup(r->dest) : NULL;
    df->args = bind ? wr_table_dup(r->args) : NULL;
    df->payload = malloc(len ? len : 1);
    if (!df->key || !df->vhost || !df->name || (bind && (!df->dest || !df->args)) ||
        !df->payload) {
        def_free(df);
        return NULL;
    }
    memcpy(df->payload, payload, len);
    return df;
}

static struct map *model_map(struct definitions *d, uint8_t type)
{
    return type == REC_EXCHANGE ? &d->exchanges : type == REC_QUEUE ? &d->queues : &d->binds;
}

/* The exchange or queue (type) called name in vhost, or NULL. Out of memory, the model
 * can no longer be trusted: model_lost. */
static struct def *model_find(struct definitions *d, uint8_t type, const char *vhost,
                              const char *name)
{
    char *key = key_make(vhost, name, NULL, false, NULL);
    struct def *df = key ? map_get(model_map(d, type), key) : NULL;
    d->model_lost |= !key;
    free(key);
    return df;
}

/* The stored binding equal to r's, or NULL (model_lost out of memory). */
static struct def *model_find_bind(struct definitions *d, const struct rec *r)
{
    char *key = key_make(r->vhost, r->name, r->dest, r->to_exchange, r->key);
    struct def *df = key ? map_get(&d->binds, key) : NULL;
    d->model_lost |= !key;
    free(key);
    while (df && !args_equal(df->args, r->args))
        df = df->same;
    return df;
}

static void model_drop(struct definitions *d, struct def *df)
{
    struct map *m = model_map(d, df->type);
    struct def *head = map_get(m, df->key);
    if (head == df) {
        map_del(m, df->key);
        if (df->same)
            map_put(m, df->same->key, df->same); /* into the slot just freed: never grows */
    } else {
        while (head && head->same != df)
            head = head->same;
        if (head)
            head->same = df->same;
    }
    d->live -= WR_RECFILE_REC_HEAD + df->len;
    def_free(df);
}

/* Does a stored binding start at or lead to the exchange (or the queue) vhost/name? */
static bool bind_touches(const struct def *df, const char *vhost, const char *name,
                         bool exchange)
{
    if (strcmp(df->vhost, vhost) != 0)
        return false;
    if (exchange && strcmp(df->name, name) == 0)
        return true;
    return df->to_exchange == exchange && strcmp(df->dest, name) == 0;
}

/* With drop, drops every stored binding that touches vhost/name (collected first, since
 * dropping edits the map) and returns how many, or -1 out of memory; without, returns 1 if
 * there is one, else 0. */
static long model_binds_touching(struct definitions *d, const char *vhost, const char *name,
                                 bool exchange, bool drop)
{
    size_t n = 0, cap = 0;
    struct def **hits = NULL;
    for (size_t i = 0; i < d->binds.cap; i++) {
        if (!d->binds.slots[i].key)
            continue;
        for (struct def *df = d->binds.slots[i].val; df; df = df->same) {
            if (!bind_touches(df, vhost, name, exchange))
                continue;
            if (!drop)
                return 1;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                struct def **more = realloc(hits, cap * sizeof *hits);
                if (!more) {
                    free(hits);
                    return -1;
                }
                hits = more;
            }
            hits[n++] = df;
        }
    }
    for (size_t i = 0; i < n; i++)
        model_drop(d, hits[i]);
    free(hits);
    return (long)n;
}

/* Applies a record to the model. WR_ENOMEM leaves the model short of it. */
static int model_apply(struct definitions *d, const struct rec *r, const uint8_t *payload,
                       size_t len)
{
    struct def *df = NULL;
    switch (r->type) {
    case REC_EXCHANGE:
    case REC_QUEUE: {
        struct map *m = model_map(d, r->type);
        if (!(df = def_new(d, r->type, r, payload, len)))
            return WR_ENOMEM;
        struct def *old = map_get(m, df->key);
        if (map_put(m, df->key, df) != 0) {
            def_free(df);
            return WR_ENOMEM;
        }
        if (old) {
            d->live -= WR_RECFILE_REC_HEAD + old->len;
            def_free(old);
        }
        d->live += WR_RECFILE_REC_HEAD + len;
        return WR_OK;
    }
    case REC_EXCHANGE_DELETE:
    case REC_QUEUE_DELETE: {
        bool exchange = r->type == REC_EXCHANGE_DELETE;
        if ((df = model_find(d, exchange ? REC_EXCHANGE : REC_QUEUE, r->vhost, r->name)))
            model_drop(d, df);
        return model_binds_touching(d, r->vhost, r->name, exchange, true) < 0 ? WR_ENOMEM
                                                                               : WR_OK;
    }
    case REC_BIND: {
        if (model_find_bind(d, r))
            return WR_OK;
        if (!(df = def_new(d, REC_BIND, r, payload, len)))
            return WR_ENOMEM;
        df->same = map_get(&d->binds, df->key);
        if (map_put(&d->binds, df->key, df) != 0) {
            def_free(df);
            return WR_ENOMEM;
        }
        d->live += WR_RECFILE_REC_HEAD + len;
        return WR_OK;
    }
    case REC_UNBIND:
        if ((df = model_find_bind(d, r)))
            model_drop(d, df);
        return WR_OK;
    default:
        return WR_EPROTO;
    }
}

static void model_free(struct definitions *d)
{
    struct map *maps[] = {&d->exchanges, &d->queues, &d->binds};
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; i < maps[k]->cap; i++) {
            struct def *df = maps[k]->slots[i].key ? maps[k]->slots[i].val : NULL;
            while (df) {
                struct def *next = df->same;
                def_free(df);
                df = next;
            }
        }
        map_fini(maps[k]);
    }
}

static int def_order(const void *a, const void *b)
{
    const struct def *x = *(const struct def *const *)a, *y = *(const struct def *const *)b;
    if (x->type != y->type)
        return x->type < y->type ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Every stored definition: exchanges, then queues, then bindings, each in arrival order,
 * in an array the caller frees (NULL when there are none, or out of memory: *oom). */
static struct def **model_sorted(struct definitions *d, size_t *n, bool *oom)
{
    size_t total = 0;
    struct map *maps[] = {&d->exchanges, &d->queues, &d->binds};
    for (size_t k = 0; k < 3; k++)
        for (size_t i = 0; i < maps[k]->cap; i++)
            for (struct def *df = maps[k]->slots[i].key ? maps[k]->slots[i].val : NULL; df;
                 df = df->same)
                total++;
    *n = 0;
    *oom = false;
    if (!total)
        return NULL;
    struct def **all = malloc(total * sizeof *all);
    if (!all) {
        *oom = true;
        return NULL;
    }
    for (size_t k = 0; k < 3; k++)
        for (size_t i = 0; i < maps[k]->cap; i++)
            for (struct def *df = maps[k]->slots[i].key ? maps[k]->slots[i].val : NULL; df;
                 df = df->same)
                all[(*n)++] = df;
    qsort(all, total, sizeof *all, def_order);
    return all;
}

/* ---- the file ----------------------------------------------------------------------- */

/* Writes the model to a new file that replaces the old one, which becomes the file appended
 * to. */
static int compact(struct definitions *d, struct wr_error *err)
{
    size_t n;
    bool oom;
    struct def **all = model_sorted(d, &n, &oom);
    struct wr_bytes out = {0};
    for (size_t i = 0; i < n && !out.oom; i++) {
        size_t start = wr_recfile_record_begin(&out);
        wr_bytes_put(&out, all[i]->payload, all[i]->len);
        wr_recfile_record_end(&out, start);
    }
    free(all);
    int rc = oom || out.oom ? wr_error_set(err, WR_ENOMEM, "%s: out of memory compacting", d->path)
                            : wr_recfile_rewrite(d->rf, out.p, out.len, err);
    wr_bytes_free(&out);
    return rc;
}

/* What a record does, for messages: "queue 'q' in vhost '/'", "deletion of ...". */
static void rec_describe(const struct rec *r, char *out, size_t len)
{
    const char *change = r->type == REC_EXCHANGE_DELETE || r->type == REC_QUEUE_DELETE
                             ? "deletion of "
                             : r->type == REC_UNBIND ? "removal of " : "";
    switch (r->type) {
    case REC_EXCHANGE:
    case REC_EXCHANGE_DELETE:
        snprintf(out, len, "%sexchange '%s' in vhost '%s'", change, r->name, r->vhost);
        break;
    case REC_QUEUE:
    case REC_QUEUE_DELETE:
        snprintf(out, len, "%squeue '%s' in vhost '%s'", change, r->name, r->vhost);
        break;
    default:
        snprintf(out, len, "%sbinding of exchange '%s' to %s '%s' in vhost '%s'", change,
                 r->name, r->to_exchange ? "exchange" : "queue", r->dest, r->vhost);
        break;
    }
}

/* Appends r and makes it durable, then applies it to the model. On failure the file is cut
 * back to where it was, so the caller can undo its change and the file stays replayable. */
static int append(struct definitions *d, const struct rec *r, struct wr_error *err)
{
    char what[1200];
    rec_describe(r, what, sizeof what);
    if (wr_recfile_failed(d->rf))
        return wr_error_set(err, WR_EIO,
                            "%s: an earlier write failed and could not be undone, so the change "
                            "to %s is refused: check the disk, then restart the broker",
                            d->path, what);
    struct wr_bytes rec = {0};
    size_t start = wr_recfile_record_begin(&rec);
    rec_encode(&rec, r);
    if (rec.oom || rec.len - WR_RECFILE_REC_HEAD > format.max_record) {
        int rc = rec.oom ? WR_ENOMEM : WR_ELIMIT;
        wr_bytes_free(&rec);
        return wr_error_set(err, rc, "%s: cannot record %s: %s", d->path, what,
                            rc == WR_ENOMEM ? "out of memory" : "its arguments are too large");
    }
    wr_recfile_record_end(&rec, start);
    struct wr_error werr = {0};
    int rc = WR_OK;
    if (!wr_recfile_size(d->rf) && (rc = wr_recfile_make_dir(d->rf, &werr)) == WR_OK)
        rc = compact(d, &werr);
    if (rc == WR_OK)
        rc = wr_recfile_append(d->rf, rec.p, rec.len, &werr);
    if (rc != WR_OK) {
        wr_bytes_free(&rec);
        wr_log(WR_LOG_ERROR, "definitions", "cannot write %s: %s", what, werr.msg);
        errno = werr.sys_errno ? werr.sys_errno : EIO;
        return wr_error_sys(err, WR_EIO,
                            "cannot write %s to %s, so the change is refused rather than left "
                            "non-durable (free disk space or fix the permissions of %s)",
                            what, d->path, wr_recfile_dir(d->rf));
    }
    size_t len = rec.len - WR_RECFILE_REC_HEAD;
    if (!d->model_lost && model_apply(d, r, rec.p + WR_RECFILE_REC_HEAD, len) != WR_OK) {
        d->model_lost = true;
        wr_log(WR_LOG_WARN, "definitions",
               "out of memory tracking %s: %s is no longer compacted until a restart", what,
               d->path);
    }
    wr_bytes_free(&rec);
    /* A long-running broker with churn would grow the log forever: rewrite it once most of
     * it is history. */
    if (!d->model_lost &&
        wr_recfile_size(d->rf) > 2 * (WR_RECFILE_HEAD + d->live) + COMPACT_SLACK) {
        struct wr_error cerr = {0};
        if (compact(d, &cerr) != WR_OK)
            wr_log(WR_LOG_WARN, "definitions", "compaction failed: %s", cerr.msg);
    }
    return WR_OK;
}

/* ---- start-up ----------------------------------------------------------------------- */

/* Replays one record of the file into the model (wr_recfile_record_cb). */
static int replay_record(void *data, const uint8_t *payload, size_t len)
{
    struct rec r;
    int rc = rec_decode(payload, len, &r);
    if (rc == WR_OK) {
        rc = model_apply(data, &r, payload, len);
        rec_free(&r);
    }
    return rc;
}

/* A stored definition the config contradicts: the config wins. */
static void conflict(struct definitions *d, struct def *df, const char *what, bool *dropped)
{
    *dropped = true;
    wr_log(WR_LOG_WARN, "definitions",
           "%s in vhost '%s' is declared by the config with other properties than %s "
           "stores; the config's is kept and the stored one is dropped",
           what, df->vhost, d->path);
    model_drop(d, df);
}

static int restore_exchange(struct wr_broker *b, struct definitions *d, struct def *df,
                            struct wr_vhost *vh, const struct rec *r, bool *dropped,
                            struct wr_error *err)
{
    char what[600];
    snprintf(what, sizeof what, "exchange '%s'", r->name);
    struct wr_exchange *ex = wr_exchange_find(vh, r->name);
    if (ex) {
        if (strcmp(wr_exchange_type(ex), r->ex.type) != 0 || !ex->durable ||
            ex->auto_delete != r->ex.auto_delete || ex->internal != r->ex.internal ||
            !args_equal(ex->args, r->ex.args))
            conflict(d, df, what, dropped);
        return WR_OK;
    }
    if (!wr_broker_plugin(b, r->ex.type, WR_PLUGIN_EXCHANGE))
        return wr_error_set(err, WR_ENOTFOUND,
                            "%s: %s in vhost '%s' has type '%s', but no exchange plugin '%s' "
                            "is loaded: list it under `plugins:` in the config",
                            d->path, what, r->vhost, r->ex.type, r->ex.type);
    int rc = wr_exchange_declare(vh, &r->ex, NULL, err);
    if (rc != WR_OK)
        wr_error_wrap(err, "%s: cannot restore %s in vhost '%s'", d->path, what, r->vhost);
    return rc;
}

static int restore_queue(struct wr_broker *b, struct definitions *d, struct def *df,
                         struct wr_vhost *vh, const struct rec *r, bool *dropped,
                         struct wr_error *err)
{
    char what[600];
    snprintf(what, sizeof what, "queue '%s'", r->name);
    struct wr_queue *q = wr_queue_find(vh, r->name);
    if (q) {
        if (wr_queue_declare(vh, &r->q, NULL, NULL) != WR_OK || !args_equal(q->args, r->q.args) ||
            !args_equal(q->options, r->q.options))
            conflict(d, df, what, dropped);
        return WR_OK;
    }
    if (!wr_broker_plugin(b, r->q.storage, WR_PLUGIN_STORAGE))
        return wr_error_set(err, WR_ENOTFOUND,
                            "%s: %s in vhost '%s' has storage '%s', but no storage plugin '%s' "
                            "is loaded: list it under `plugins:` in the config",
                            d->path, what, r->vhost, r->q.storage, r->q.storage);
    int rc = wr_queue_declare(vh, &r->q, NULL, err);
    if (rc != WR_OK)
        wr_error_wrap(err, "%s: cannot restore %s in vhost '%s'", d->path, what, r->vhost);
    return rc;
}

static int restore_bind(struct definitions *d, struct def *df, struct wr_vhost *vh,
                        const struct rec *r, bool *dropped, struct wr_error *err)
{
    char what[1200];
    rec_describe(r, what, sizeof what);
    struct wr_exchange *src = wr_exchange_find(vh, r->name);
    struct wr_exchange *dst = r->to_exchange ? wr_exchange_find(vh, r->dest) : NULL;
    struct wr_queue *q = r->to_exchange ? NULL : wr_queue_find(vh, r->dest);
    if (!src || (!dst && !q)) {
        /* Its end came from the config, which no longer declares it. */
        wr_log(WR_LOG_WARN, "definitions", "%s: the %s is dropped: its %s is gone",
               d->path, what, src ? "destination" : "source");
        *dropped = true;
        model_drop(d, df);
        return WR_OK;
    }
    int rc = q ? wr_bind_queue(src, q, r->key, r->args, err)
               : wr_bind_exchange(src, dst, r->key, r->args, err);
    if (rc != WR_OK)
        wr_error_wrap(err, "%s: cannot restore the %s", d->path, what);
    return rc;
}

/* Declares the model's definitions in the broker: exchanges, queues (a durable storage
 * reopens its data), then bindings. */
static int restore(struct wr_broker *b, struct definitions *d, struct wr_error *err)
{
    size_t n, counts[3] = {0}, absent = 0;
    bool oom;
    struct def **all = model_sorted(d, &n, &oom);
    if (oom)
        return wr_error_set(err, WR_ENOMEM, "out of memory restoring %s", d->path);
    const char *absent_vhost = NULL;
    int rc = WR_OK;
    for (size_t i = 0; rc == WR_OK && i < n; i++) {
        struct def *df = all[i];
        struct wr_vhost *vh = wr_vhost_find(b, df->vhost);
        if (!vh) {
            if (!absent++)
                absent_vhost = df->vhost;
            continue;
        }
        struct rec r;
        if ((rc = rec_decode(df->payload, df->len, &r)) != WR_OK) {
            rc = wr_error_set(err, rc, "%s: out of memory restoring", d->path);
            break;
        }
        uint8_t type = df->type; /* dropping frees df */
        bool dropped = false;
        if (type == REC_EXCHANGE)
            rc = restore_exchange(b, d, df, vh, &r, &dropped, err);
        else if (type == REC_QUEUE)
            rc = restore_queue(b, d, df, vh, &r, &dropped, err);
        else
            rc = restore_bind(d, df, vh, &r, &dropped, err);
        if (!dropped)
            counts[type == REC_EXCHANGE ? 0 : type == REC_QUEUE ? 1 : 2]++;
        rec_free(&r);
    }
    if (rc == WR_OK && absent)
        wr_log(WR_LOG_WARN, "definitions",
               "%s: %zu stored definitions belong to vhosts the config does not declare "
               "(first: '%s'); they are kept, and restored once the vhost is back",
               d->path, absent, absent_vhost);
    if (rc == WR_OK)
        wr_log(WR_LOG_INFO, "definitions",
               "restored %zu exchanges, %zu queues and %zu bindings from %s", counts[0],
               counts[1], counts[2], d->path);
    free(all);
    return rc;
}

static void defs_free(struct definitions *d)
{
    if (!d)
        return;
    model_free(d);
    wr_recfile_free(d->rf);
    free(d);
}

int definitions_open(struct wr_broker *b, struct wr_error *err)
{
    struct definitions *d = calloc(1, sizeof *d);
    if (!d)
        return wr_error_set(err, WR_ENOMEM, "out of memory opening the definitions");
    int rc = wr_recfile_new(b->data_dir, FILE_NAME, &format, &d->rf, err);
    if (rc != WR_OK) {
        free(d);
        return rc;
    }
    d->path = wr_recfile_path(d->rf);
    rc = wr_recfile_replay(d->rf, replay_record, d, err);
    if (rc == WR_ENOTFOUND) {
        b->defs = d; /* created by the first durable declare */
        return WR_OK;
    }
    if (rc == WR_OK)
        rc = restore(b, d, err);
    if (rc == WR_OK)
        rc = compact(d, err);
    if (rc != WR_OK) {
        defs_free(d);
        return rc;
    }
    b->defs = d;
    return WR_OK;
}

void definitions_close(struct wr_broker *b)
{
    defs_free(b->defs);
    b->defs = NULL;
}

/* ---- hooks -------------------------------------------------------------------------- */

static bool queue_is_stored_kind(const struct wr_queue *q)
{
    return q->durable && !q->exclusive;
}

int definitions_exchange_declared(struct wr_exchange *ex, struct wr_error *err)
{
    struct definitions *d = ex->vh->broker->defs;
    if (!d || !ex->durable || ex->predeclared)
        return WR_OK;
    struct rec r = {.type = REC_EXCHANGE, .vhost = ex->vh->name, .name = ex->name};
    r.ex = (struct wr_exchange_decl){ex->name, wr_exchange_type(ex), true, ex->auto_delete,
                                     ex->internal, ex->args};
    return append(d, &r, err);
}

/* Is a delete of vhost/name worth a record: is it, or a binding of it, stored? When the
 * model was lost, every durable one is. */
static bool delete_matters(struct definitions *d, uint8_t type, const char *vhost,
                           const char *name)
{
    return model_find(d, type, vhost, name) ||
           model_binds_touching(d, vhost, name, type == REC_EXCHANGE, false) != 0 ||
           d->model_lost;
}

int definitions_exchange_deleted(struct wr_exchange *ex, struct wr_error *err)
{
    struct definitions *d = ex->vh->broker->defs;
    if (!d || !ex->durable || ex->predeclared ||
        !delete_matters(d, REC_EXCHANGE, ex->vh->name, ex->name))
        return WR_OK;
    struct rec r = {.type = REC_EXCHANGE_DELETE, .vhost = ex->vh->name, .name = ex->name};
    return append(d, &r, err);
}

int definitions_queue_declared(struct wr_queue *q, struct wr_error *err)
{
    struct definitions *d = q->vh->broker->defs;
    if (!d || !queue_is_stored_kind(q))
        return WR_OK;
    struct rec r = {.type = REC_QUEUE, .vhost = q->vh->name, .name = q->name};
    wr_queue_decl_init(&r.q, q->name);
    r.q.storage = q->storage;
    r.q.durable = true;
    r.q.auto_delete = q->auto_delete;
    r.q.max_length = q->max_length;
    r.q.max_length_bytes = q->max_length_bytes;
    r.q.overflow = q->overflow;
    r.q.partitions = q->partitions;
    r.q.message_ttl_ms = q->message_ttl_ms;
    r.q.expires_ms = q->expires_ms;
    r.q.dead_letter_exchange = q->dlx;
    r.q.dead_letter_routing_key = q->dlrk;
    r.q.max_priority = q->max_priority;
    r.q.args = q->args;
    r.q.options = q->options;
    return append(d, &r, err);
}

int definitions_queue_deleted(struct wr_queue *q, struct wr_error *err)
{
    struct definitions *d = q->vh->broker->defs;
    if (!d || !queue_is_stored_kind(q) || !delete_matters(d, REC_QUEUE, q->vh->name, q->name))
        return WR_OK;
    struct rec r = {.type = REC_QUEUE_DELETE, .vhost = q->vh->name, .name = q->name};
    return append(d, &r, err);
}

static void bind_rec(const struct binding *bd, uint8_t type, struct rec *r)
{
    *r = (struct rec){.type = type,
                      .vhost = bd->src->vh->name,
                      .name = bd->src->name,
                      .to_exchange = bd->dst != NULL,
                      .dest = bd->dst ? bd->dst->name : bd->q->name,
                      .key = bd->key,
                      .args = bd->args};
}

int definitions_bound(const struct binding *bd, struct wr_error *err)
{
    struct definitions *d = bd->src->vh->broker->defs;
    if (!d || !bd->src->durable || (bd->q ? !queue_is_stored_kind(bd->q) : !bd->dst->durable))
        return WR_OK;
    struct rec r;
    bind_rec(bd, REC_BIND, &r);
    return append(d, &r, err);
}

int definitions_unbound(const struct binding *bd, struct wr_error *err)
{
    struct definitions *d = bd->src->vh->broker->defs;
    struct rec r;
    bind_rec(bd, REC_UNBIND, &r);
    if (!d || !bd->src->durable || (bd->q ? !queue_is_stored_kind(bd->q) : !bd->dst->durable) ||
        (!model_find_bind(d, &r) && !d->model_lost))
        return WR_OK;
    return append(d, &r, err);
}
