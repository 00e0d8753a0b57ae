/*
 * sync.c: the durability barrier behind publisher confirms. Queues whose storage syncs
 * asynchronously are put on the broker's dirty list when they take a write; a barrier asks
 * each dirty queue's storage to sync and completes when all of them have. One barrier covers
 * every write made before it, so a transport confirms a whole batch of publishes at once
 * (group commit). With nothing dirty (memory storage), the barrier completes on the next
 * loop turn.
 */
#include <stdlib.h>

#include "broker_int.h"

struct wr_sync {
    struct wr_broker *b;
    wr_storage_sync_cb *cb;
    void *data;
    uint32_t pending;     /* storage syncs not yet called back */
    int status;           /* the first failure, or WR_OK */
    bool cancelled;
    bool fired;
    struct wr_sync *next; /* on b->syncs while waiting for the deferred completion */
};

void sync_mark_dirty(struct wr_queue *q)
{
    if (q->dirty || q->deleted || !HAS_OP(q->ops, struct wr_storage_ops, sync))
        return;
    struct wr_broker *b = q->vh->broker;
    q->dirty = true;
    q->dirty_next = b->dirty;
    b->dirty = wr_queue_ref(q);
}

static void sync_free(struct wr_sync *s)
{
    struct wr_broker *b = s->b;
    free(s);
    if (--b->n_syncs == 0 && b->draining)
        wr_loop_stop(b->lp);
}

static void sync_finish(struct wr_sync *s)
{
    if (!s->cancelled)
        s->cb(s->data, s->status);
    sync_free(s);
}

static void syncs_run(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct wr_broker *b = data;
    b->syncs_deferred = false;
    struct wr_sync *s = b->syncs;
    b->syncs = NULL;
    while (s) {
        struct wr_sync *next = s->next;
        s->fired = true;
        sync_finish(s);
        s = next;
    }
}

/* Completes s from a deferred task: its callback never runs inside wr_broker_sync. */
static int sync_defer(struct wr_sync *s)
{
    struct wr_broker *b = s->b;
    if (!b->syncs_deferred) {
        if (wr_loop_defer(b->lp, syncs_run, b) != WR_OK)
            return WR_ENOMEM;
        b->syncs_deferred = true;
    }
    /* Appended: barriers complete in the order they were made (confirms stay in order). */
    struct wr_sync **p = &b->syncs;
    while (*p)
        p = &(*p)->next;
    *p = s;
    return WR_OK;
}

static void storage_synced(void *data, int status)
{
    struct wr_sync *s = data;
    if (status != WR_OK && s->status == WR_OK)
        s->status = status;
    /* Finished from a deferred task, not here: the callback may close connections and with
     * them queues, whose storage is still inside its own completion loop now. */
    if (--s->pending == 0 && sync_defer(s) != WR_OK) {
        s->fired = true;
        sync_finish(s);
    }
}

struct wr_sync *wr_broker_sync(struct wr_broker *b, wr_storage_sync_cb *cb, void *data)
{
    struct wr_sync *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    *s = (struct wr_sync){.b = b, .cb = cb, .data = data, .status = WR_OK, .pending = 1};
    b->n_syncs++;
    struct wr_queue *q = b->dirty;
    b->dirty = NULL;
    while (q) {
        struct wr_queue *next = q->dirty_next;
        q->dirty = false;
        if (!q->deleted) {
            s->pending++;
            int failed = q->log ? log_flush(q) : WR_OK; /* the barrier covers them too */
            if (failed != WR_OK)
                storage_synced(s, failed);
            else if (q->ops->sync(q->state, storage_synced, s) != WR_OK)
                storage_synced(s, WR_EIO);
        }
        wr_queue_unref(q);
        q = next;
    }
    /* The extra count held during the loop stops a synchronous callback finishing s early. */
    if (--s->pending == 0 && sync_defer(s) != WR_OK) {
        sync_free(s);
        return NULL;
    }
    return s;
}

void wr_sync_cancel(struct wr_sync *s)
{
    if (!s || s->fired)
        return;
    s->cancelled = true;
    if (s->pending)
        return; /* freed by its last storage callback */
    struct wr_sync **p = &s->b->syncs;
    while (*p && *p != s)
        p = &(*p)->next;
    if (*p)
        *p = s->next;
    sync_free(s);
}

void sync_cancel_all(struct wr_broker *b)
{
    if (b->syncs_deferred)
        wr_loop_defer_cancel(b->lp, syncs_run, b);
    b->syncs_deferred = false;
    while (b->syncs) {
        struct wr_sync *s = b->syncs;
        b->syncs = s->next;
        sync_free(s);
    }
    while (b->dirty) {
        struct wr_queue *q = b->dirty;
        b->dirty = q->dirty_next;
        q->dirty = false;
        wr_queue_unref(q);
    }
}

static void drain_timeout(struct wr_loop *lp, void *data)
{
    (void)data;
    wr_loop_stop(lp);
}

void sync_drain(struct wr_broker *b, uint64_t timeout_ms)
{
    if (!b->n_syncs)
        return;
    uint64_t timer = wr_loop_timer_add(b->lp, timeout_ms, drain_timeout, b);
    if (!timer)
        return;
    struct wr_error err = {0};
    b->draining = true;
    fsync_hurry(true);
    int rc = wr_loop_run(b->lp, &err); /* stopped by the last barrier, the timer or a signal */
    b->draining = false;
    fsync_hurry(false);
    wr_loop_timer_del(b->lp, timer);
    if (rc == WR_OK) /* one more turn writes what the last completions answered */
        rc = wr_loop_run_once(b->lp, 0, &err);
    if (rc != WR_OK)
        wr_log(WR_LOG_WARN, "server", "draining at shutdown: %s", err.msg);
    else if (b->n_syncs)
        wr_log(WR_LOG_WARN, "server", "shutdown: %zu durability barrier(s) still waiting after "
               "%llu ms; their requests go unanswered", b->n_syncs,
               (unsigned long long)timeout_ms);
}
