/*
 * alarm_sync_test.c: the memory alarm and the durability barrier as a transport uses them.
 * The alarm rises with the publish that crosses the watermark, is reported to watchers on a
 * later loop turn (never inside wr_publish), clears within its 50 ms poll once consumers
 * drain, and a watermark of 0 turns it off. A barrier's callback runs once, on a later loop
 * turn, unless cancelled first. Every wait runs the real loop with a deadline.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "testutil.h"

static struct tu_broker t;
static struct wr_error err;

static void setup(void)
{
    tu_broker_init(&t);
    memset(&err, 0, sizeof err);
}

static void teardown(void) { tu_broker_fini(&t); }

TestSuite(alarm, .init = setup, .fini = teardown, .timeout = 30);
TestSuite(sync, .init = setup, .fini = teardown, .timeout = 30);

/* ---- memory alarm ------------------------------------------------------------------ */

/* What a watcher saw. */
struct watcher {
    int calls;
    bool last;               /* the raised flag of the last call */
    int calls_in_publish;    /* calls made while a wr_publish was running */
    struct wr_alarm_watch *w;
    bool unwatch_itself;
};

static bool publishing;

static void on_alarm(void *data, bool raised)
{
    struct watcher *s = data;
    s->calls++;
    s->last = raised;
    if (publishing)
        s->calls_in_publish++;
    if (s->unwatch_itself) {
        wr_broker_alarm_unwatch(s->w);
        s->w = NULL;
    }
}

static void watch(struct watcher *s)
{
    memset(s, 0, sizeof *s);
    s->w = wr_broker_alarm_watch(t.b, on_alarm, s);
    cr_assert_not_null(s->w);
}

/* Publishes 1 KiB messages to queue q until the alarm is up; returns how many it took. */
static int publish_until_alarm(const char *q, int max)
{
    static char body[1025];
    memset(body, 'x', sizeof body - 1);
    for (int i = 1; i <= max; i++) {
        publishing = true;
        int n = tu_publish(&t, "", q, body, NULL);
        publishing = false;
        cr_assert_eq(n, 1);
        if (wr_broker_memory_alarm(t.b))
            return i;
    }
    cr_assert_fail("no alarm after %d messages of 1 KiB", max);
    return max;
}

struct seen {
    struct watcher *s;
    int calls;
    bool raised;
};

static bool saw(void *data)
{
    struct seen *c = data;
    return c->s->calls >= c->calls && c->s->last == c->raised;
}

static bool wait_seen(struct watcher *s, int calls, bool raised, int ms)
{
    struct seen c = {s, calls, raised};
    return tu_wait(t.lp, saw, &c, ms);
}

static bool alarm_is(void *data)
{
    return wr_broker_memory_alarm(t.b) == *(bool *)data;
}

static bool wait_alarm(bool raised, int ms)
{
    return tu_wait(t.lp, alarm_is, &raised, ms);
}

Test(alarm, off_by_default)
{
    struct watcher s;
    watch(&s);
    cr_assert(!wr_broker_memory_alarm(t.b));
    tu_queue(&t, "q");
    for (int i = 0; i < 100; i++)
        tu_publish(&t, "", "q", "some bytes", NULL);
    tu_drain(t.lp, 100);
    cr_assert(!wr_broker_memory_alarm(t.b));
    cr_assert_eq(s.calls, 0);
}

Test(alarm, publish_raises_and_watchers_hear_it_later)
{
    struct watcher s;
    watch(&s);
    tu_queue(&t, "q");
    wr_broker_set_memory_high_watermark(t.b, wr_msg_bytes_live() + 20 * 1024);
    cr_assert(!wr_broker_memory_alarm(t.b));
    int n = publish_until_alarm("q", 1000);
    cr_assert_geq(n, 15, "raised after %d KiB, below the watermark", n);
    cr_assert_leq(n, 21, "raised only after %d KiB", n);
    cr_assert_geq(wr_msg_bytes_live(), 20 * 1024);
    cr_assert_eq(s.calls, 0, "the watcher ran inside wr_publish's stack");
    cr_assert(wait_seen(&s, 1, true, 1000), "the watcher never heard of the alarm");
    cr_assert_eq(s.calls, 1);
    cr_assert_eq(s.calls_in_publish, 0);
    /* More publishing while raised does not repeat the news. */
    tu_publish(&t, "", "q", "more", NULL);
    tu_drain(t.lp, 100);
    cr_assert_eq(s.calls, 1);
}

Test(alarm, draining_clears_within_the_poll)
{
    struct watcher s;
    watch(&s);
    struct wr_queue *q = tu_queue(&t, "q");
    wr_broker_set_memory_high_watermark(t.b, wr_msg_bytes_live() + 8 * 1024);
    int n = publish_until_alarm("q", 1000);
    cr_assert(wait_seen(&s, 1, true, 1000));
    /* Consumers take and ack every message. */
    for (int i = 0; i < n; i++) {
        struct wr_delivery d;
        cr_assert_eq(wr_queue_get(q, false, &d, &err), WR_OK);
        wr_msg_unref(d.msg);
        cr_assert_eq(wr_queue_ack(q, d.tag, &err), WR_OK);
    }
    cr_assert(wait_seen(&s, 2, false, 500), "the alarm did not clear within the 50 ms poll");
    cr_assert(!wr_broker_memory_alarm(t.b));
    cr_assert_eq(s.calls, 2);

    /* And again, cleared by a purge this time. */
    publish_until_alarm("q", 1000);
    cr_assert(wait_seen(&s, 3, true, 1000));
    cr_assert_gt(wr_queue_purge(q), 0);
    cr_assert(wait_seen(&s, 4, false, 500));
    cr_assert_eq(s.calls_in_publish, 0);
}

Test(alarm, unacked_messages_still_count)
{
    struct wr_queue *q = tu_queue(&t, "q");
    wr_broker_set_memory_high_watermark(t.b, wr_msg_bytes_live() + 8 * 1024);
    int n = publish_until_alarm("q", 1000);
    struct wr_delivery d[64];
    cr_assert_leq(n, 64);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(wr_queue_get(q, false, &d[i], &err), WR_OK);
        wr_msg_unref(d[i].msg);
    }
    cr_assert(!wait_alarm(false, 200), "delivered but unacked messages still hold memory");
    for (int i = 0; i < n; i++)
        cr_assert_eq(wr_queue_ack(q, d[i].tag, &err), WR_OK);
    cr_assert(wait_alarm(false, 500));
}

Test(alarm, watermark_below_usage_raises_at_once)
{
    struct watcher s;
    watch(&s);
    tu_queue(&t, "q");
    tu_publish(&t, "", "q", "held", NULL);
    wr_broker_set_memory_high_watermark(t.b, 1);
    cr_assert(wr_broker_memory_alarm(t.b));
    cr_assert_eq(s.calls, 0, "watchers hear it from the loop, not inside the setter");
    cr_assert(wait_seen(&s, 1, true, 1000));
}

Test(alarm, watermark_zero_turns_it_off)
{
    struct watcher s;
    watch(&s);
    tu_queue(&t, "q");
    wr_broker_set_memory_high_watermark(t.b, wr_msg_bytes_live() + 4096);
    publish_until_alarm("q", 1000);
    cr_assert(wait_seen(&s, 1, true, 1000));
    wr_broker_set_memory_high_watermark(t.b, 0);
    cr_assert(!wr_broker_memory_alarm(t.b));
    cr_assert(wait_seen(&s, 2, false, 1000));
    for (int i = 0; i < 100; i++)
        tu_publish(&t, "", "q", "more and more bytes", NULL);
    tu_drain(t.lp, 100);
    cr_assert(!wait_alarm(true, 200), "raised with the watermark off");
    cr_assert_eq(s.calls, 2);
}

Test(alarm, unwatch_stops_callbacks)
{
    struct watcher s, other;
    watch(&s);
    watch(&other);
    struct wr_queue *q = tu_queue(&t, "q");
    wr_broker_set_memory_high_watermark(t.b, wr_msg_bytes_live() + 4096);
    publish_until_alarm("q", 1000);
    cr_assert(wait_seen(&s, 1, true, 1000));
    cr_assert(wait_seen(&other, 1, true, 1000), "every watcher hears it");
    wr_broker_alarm_unwatch(s.w);
    wr_queue_purge(q);
    cr_assert(wait_seen(&other, 2, false, 1000));
    cr_assert_eq(s.calls, 1, "an unwatched callback ran");
    wr_broker_alarm_unwatch(NULL);
}

Test(alarm, watcher_may_unwatch_itself)
{
    struct watcher s, other;
    watch(&s);
    watch(&other);
    s.unwatch_itself = true;
    struct wr_queue *q = tu_queue(&t, "q");
    wr_broker_set_memory_high_watermark(t.b, wr_msg_bytes_live() + 4096);
    publish_until_alarm("q", 1000);
    cr_assert(wait_seen(&other, 1, true, 1000));
    cr_assert_eq(s.calls, 1);
    wr_queue_purge(q);
    cr_assert(wait_seen(&other, 2, false, 1000));
    cr_assert_eq(s.calls, 1);
}

/* A pending notification and live watches are freed with the broker (ASan checks). */
Test(alarm, broker_free_with_pending_news)
{
    struct watcher s;
    watch(&s);
    tu_queue(&t, "q");
    tu_publish(&t, "", "q", "held", NULL);
    wr_broker_set_memory_high_watermark(t.b, 1);
    cr_assert(wr_broker_memory_alarm(t.b));
}

/* ---- durability barrier ------------------------------------------------------------ */

struct barrier {
    int calls;
    int status;
    int order;               /* when it completed, among all barriers */
    bool inside;             /* set while wr_broker_sync runs */
    bool ran_inside;
};

static int completions;

static void on_synced(void *data, int status)
{
    struct barrier *s = data;
    s->calls++;
    s->status = status;
    s->order = ++completions;
    if (s->inside)
        s->ran_inside = true;
}

static bool called(void *data)
{
    return ((struct barrier *)data)->calls > 0;
}

Test(sync, callback_runs_later_with_ok)
{
    tu_queue(&t, "q");
    tu_publish(&t, "", "q", "a", NULL);
    struct barrier s = {.status = -99, .inside = true};
    struct wr_sync *h = wr_broker_sync(t.b, on_synced, &s);
    s.inside = false;
    cr_assert_not_null(h);
    cr_assert_eq(s.calls, 0, "the callback ran inside wr_broker_sync");
    cr_assert(tu_wait(t.lp, called, &s, 1000));
    cr_assert(!s.ran_inside);
    cr_assert_eq(s.status, WR_OK);
    tu_drain(t.lp, 100);
    cr_assert_eq(s.calls, 1);
}

Test(sync, with_nothing_written)
{
    struct barrier s = {0};
    cr_assert_not_null(wr_broker_sync(t.b, on_synced, &s));
    cr_assert(tu_wait(t.lp, called, &s, 1000));
    cr_assert_eq(s.status, WR_OK);
}

Test(sync, cancel_prevents_the_callback)
{
    struct barrier s = {0};
    struct wr_sync *h = wr_broker_sync(t.b, on_synced, &s);
    cr_assert_not_null(h);
    wr_sync_cancel(h);
    cr_assert(!tu_wait(t.lp, called, &s, 100), "a cancelled barrier called back");
    wr_sync_cancel(NULL);
}

Test(sync, many_barriers_each_fire_once)
{
    enum { N = 200 };
    static struct barrier s[N];
    struct wr_sync *h[N];
    tu_queue(&t, "q");
    for (int i = 0; i < N; i++) {
        tu_publish(&t, "", "q", "x", NULL);
        h[i] = wr_broker_sync(t.b, on_synced, &s[i]);
        cr_assert_not_null(h[i]);
    }
    for (int i = 1; i < N; i += 3)
        wr_sync_cancel(h[i]);
    tu_drain(t.lp, 500);
    for (int i = 0; i < N; i++) {
        int want = i % 3 == 1 ? 0 : 1;
        cr_assert_eq(s[i].calls, want, "barrier %d called %d times", i, s[i].calls);
        if (want)
            cr_assert_eq(s[i].status, WR_OK);
    }
}

/* A transport confirms publishes in sequence: barriers made one after another complete in
 * that order. */
Test(sync, barriers_complete_in_the_order_made)
{
    struct barrier s[3] = {{0}};
    for (int i = 0; i < 3; i++)
        cr_assert_not_null(wr_broker_sync(t.b, on_synced, &s[i]));
    cr_assert(tu_wait(t.lp, called, &s[0], 1000));
    tu_drain(t.lp, 100);
    cr_assert(s[0].order < s[1].order && s[1].order < s[2].order,
              "completed in the order %d, %d, %d", s[0].order, s[1].order, s[2].order);
}

/* A barrier made from a barrier's callback completes on a later turn. */
static struct barrier chained;

static void on_synced_then_chain(void *data, int status)
{
    on_synced(data, status);
    chained.inside = true;
    cr_assert_not_null(wr_broker_sync(t.b, on_synced, &chained));
    chained.inside = false;
}

Test(sync, barrier_from_a_callback)
{
    struct barrier first = {0};
    cr_assert_not_null(wr_broker_sync(t.b, on_synced_then_chain, &first));
    cr_assert(tu_wait(t.lp, called, &first, 1000));
    cr_assert(tu_wait(t.lp, called, &chained, 1000), "the chained barrier never completed");
    cr_assert(!chained.ran_inside);
    cr_assert_eq(chained.calls, 1);
}

/* Barriers still pending when the broker goes are freed without calling back. */
Test(sync, pending_barriers_freed_with_the_broker)
{
    static struct barrier s[4];
    for (int i = 0; i < 4; i++)
        cr_assert_not_null(wr_broker_sync(t.b, on_synced, &s[i]));
    tu_broker_fini(&t);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(s[i].calls, 0);
    tu_broker_init(&t); /* for the fixture's teardown */
}
