/*
 * alarm.c: the memory alarm. When the bytes held by live messages reach the high watermark
 * the alarm is raised and watchers (transports) are told, so that AMQP connections that
 * publish get connection.blocked and stop being read, as RabbitMQ does; it clears once
 * consumers have drained the memory below the watermark. Raising is checked after every
 * publish; clearing (memory is freed all over the core) by a timer every 50 ms.
 */
#include <stdlib.h>

#include "broker_int.h"

#define ALARM_POLL_MS 50

struct wr_alarm_watch {
    struct wr_broker *b;
    wr_alarm_cb *cb;
    void *data;
    struct wr_alarm_watch *next;
};

static void alarm_notify(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct wr_broker *b = data;
    b->alarm_deferred = false;
    /* A watcher may unwatch itself from its callback: take next first. */
    for (struct wr_alarm_watch *w = b->watches, *next; w; w = next) {
        next = w->next;
        w->cb(w->data, b->mem_alarm);
    }
}

static void alarm_set(struct wr_broker *b, bool raised)
{
    if (b->mem_alarm == raised)
        return;
    b->mem_alarm = raised;
    wr_log(raised ? WR_LOG_WARN : WR_LOG_INFO, "broker",
           raised ? "memory alarm raised: messages hold %zu bytes, the high watermark is %llu; "
                    "publishers are blocked"
                  : "memory alarm cleared: messages hold %zu bytes, below %llu",
           wr_msg_bytes_live(), (unsigned long long)b->mem_high);
    if (!b->alarm_deferred && wr_loop_defer(b->lp, alarm_notify, b) == WR_OK)
        b->alarm_deferred = true;
}

static void alarm_poll(struct wr_loop *lp, void *data)
{
    struct wr_broker *b = data;
    b->mem_timer = 0;
    if (!b->mem_high)
        return;
    alarm_set(b, wr_msg_bytes_live() >= b->mem_high);
    b->mem_timer = wr_loop_timer_add(lp, ALARM_POLL_MS, alarm_poll, b);
}

void alarm_check(struct wr_broker *b)
{
    if (b->mem_high && !b->mem_alarm && wr_msg_bytes_live() >= b->mem_high)
        alarm_set(b, true);
}

void wr_broker_set_memory_high_watermark(struct wr_broker *b, uint64_t bytes)
{
    b->mem_high = bytes;
    if (bytes && !b->mem_timer)
        b->mem_timer = wr_loop_timer_add(b->lp, ALARM_POLL_MS, alarm_poll, b);
    if (!bytes)
        alarm_set(b, false);
    else
        alarm_set(b, wr_msg_bytes_live() >= bytes);
}

bool wr_broker_memory_alarm(const struct wr_broker *b)
{
    return b->mem_alarm;
}

struct wr_alarm_watch *wr_broker_alarm_watch(struct wr_broker *b, wr_alarm_cb *cb, void *data)
{
    struct wr_alarm_watch *w = malloc(sizeof *w);
    if (!w)
        return NULL;
    *w = (struct wr_alarm_watch){b, cb, data, b->watches};
    b->watches = w;
    return w;
}

void wr_broker_alarm_unwatch(struct wr_alarm_watch *w)
{
    if (!w)
        return;
    struct wr_alarm_watch **p = &w->b->watches;
    while (*p && *p != w)
        p = &(*p)->next;
    if (*p)
        *p = w->next;
    free(w);
}

void alarm_fini(struct wr_broker *b)
{
    if (b->mem_timer)
        wr_loop_timer_del(b->lp, b->mem_timer);
    b->mem_timer = 0;
    if (b->alarm_deferred)
        wr_loop_defer_cancel(b->lp, alarm_notify, b);
    b->alarm_deferred = false;
    while (b->watches)
        wr_broker_alarm_unwatch(b->watches);
}
