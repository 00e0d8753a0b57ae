/*
 * loop_test.c: the event loop as its users see it: fd readiness and mask changes, removal
 * inside callbacks, timers in deadline order and their cancellation, deferred tasks before
 * the poll, posts from other threads, signals through the signalfd, and run/stop.
 *
 * Every wait is bounded by a guard timer (run_until), never by a sleep. Criterion runs each
 * test in its own worker process, so blocking signals here touches no other test.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warren/loop.h>

static struct wr_loop *lp;

static void setup(void)
{
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_new(&lp, &err), WR_OK, "%s", err.msg);
}

static void teardown(void)
{
    wr_loop_free(lp);
    lp = NULL;
}

TestSuite(loop, .init = setup, .fini = teardown, .timeout = 30);

/* ---- helpers --------------------------------------------------------------------------- */

static void set_flag(struct wr_loop *l, void *data)
{
    (void)l;
    *(bool *)data = true;
}

/* Runs iterations until *flag turns true or ms pass (a timer is the deadline). */
static bool run_until(const bool *flag, uint64_t ms)
{
    bool expired = false;
    uint64_t guard = wr_loop_timer_add(lp, ms, set_flag, &expired);
    cr_assert_neq(guard, 0);
    while (!*flag && !expired) {
        struct wr_error err = {0};
        cr_assert_eq(wr_loop_run_once(lp, -1, &err), WR_OK, "%s", err.msg);
    }
    wr_loop_timer_del(lp, guard);
    return *flag;
}

static void make_pipe(int p[2])
{
    cr_assert_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0, "pipe: %s", strerror(errno));
}

static void put_byte(int fd)
{
    cr_assert_eq(write(fd, "x", 1), 1, "write: %s", strerror(errno));
}

struct fd_rec {
    int calls;
    int fd;
    int events;
    bool fired;
};

static void rec_cb(struct wr_loop *l, int fd, int events, void *data)
{
    (void)l;
    struct fd_rec *r = data;
    r->calls++;
    r->fd = fd;
    r->events = events;
    r->fired = true;
}

static void run_nowait(void)
{
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_run_once(lp, 0, &err), WR_OK, "%s", err.msg);
}

/* ---- fds ------------------------------------------------------------------------------- */

Test(loop, pipe_readable)
{
    int p[2];
    make_pipe(p);
    struct fd_rec r = {0};
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, rec_cb, &r, NULL), WR_OK);
    run_nowait();
    cr_assert_eq(r.calls, 0, "an empty pipe is not readable");

    put_byte(p[1]);
    cr_assert(run_until(&r.fired, 2000));
    cr_assert_eq(r.fd, p[0]);
    cr_assert_eq(r.events, WR_READABLE);

    wr_loop_fd_del(lp, p[0]);
    close(p[0]);
    close(p[1]);
}

Test(loop, hangup_is_reported_as_readable)
{
    int p[2];
    make_pipe(p);
    struct fd_rec r = {0};
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, rec_cb, &r, NULL), WR_OK);
    close(p[1]);
    cr_assert(run_until(&r.fired, 2000));
    cr_assert_eq(r.events, WR_READABLE);
    wr_loop_fd_del(lp, p[0]);
    close(p[0]);
}

Test(loop, socketpair_writable_and_fd_mod)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct fd_rec r = {0};
    cr_assert_eq(wr_loop_fd_add(lp, sv[0], WR_WRITABLE, rec_cb, &r, NULL), WR_OK);
    cr_assert(run_until(&r.fired, 2000));
    cr_assert_eq(r.events, WR_WRITABLE, "an idle socket is writable only");

    /* Readable only: a writable socket with nothing to read is quiet. */
    cr_assert_eq(wr_loop_fd_mod(lp, sv[0], WR_READABLE, NULL), WR_OK);
    r = (struct fd_rec){0};
    run_nowait();
    cr_assert_eq(r.calls, 0);

    put_byte(sv[1]);
    cr_assert(run_until(&r.fired, 2000));
    cr_assert_eq(r.events, WR_READABLE, "not writable: that interest was dropped");

    cr_assert_eq(wr_loop_fd_mod(lp, sv[0], WR_READABLE | WR_WRITABLE, NULL), WR_OK);
    r = (struct fd_rec){0};
    cr_assert(run_until(&r.fired, 2000));
    cr_assert_eq(r.events, WR_READABLE | WR_WRITABLE);

    /* Mask 0: nothing at all, not even the pending byte or a hang-up. */
    cr_assert_eq(wr_loop_fd_mod(lp, sv[0], 0, NULL), WR_OK);
    close(sv[1]);
    r = (struct fd_rec){0};
    run_nowait();
    cr_assert_eq(r.calls, 0);

    /* And back again. */
    cr_assert_eq(wr_loop_fd_mod(lp, sv[0], WR_READABLE, NULL), WR_OK);
    cr_assert(run_until(&r.fired, 2000));
    cr_assert_eq(r.events, WR_READABLE);

    wr_loop_fd_del(lp, sv[0]);
    close(sv[0]);
}

Test(loop, fd_errors)
{
    int p[2];
    make_pipe(p);
    struct fd_rec r = {0};
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, rec_cb, &r, &err), WR_OK);
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, rec_cb, &r, &err), WR_EEXIST);
    cr_assert_eq(err.code, WR_EEXIST);
    cr_assert_eq(wr_loop_fd_mod(lp, p[1], WR_WRITABLE, &err), WR_ENOTFOUND);
    cr_assert_eq(wr_loop_fd_add(lp, -1, WR_READABLE, rec_cb, &r, &err), WR_EINVAL);

    /* epoll refuses regular files: the caller learns why. */
    FILE *f = tmpfile();
    cr_assert_not_null(f);
    cr_assert_eq(wr_loop_fd_add(lp, fileno(f), WR_READABLE, rec_cb, &r, &err), WR_EIO);
    cr_assert_eq(err.sys_errno, EPERM, "%s", err.msg);
    cr_assert_neq(strlen(err.msg), 0);
    fclose(f);

    /* A bad fd with mask 0 is caught too, though it does not go into epoll. */
    cr_assert_eq(wr_loop_fd_add(lp, 1000, 0, rec_cb, &r, &err), WR_EIO);

    wr_loop_fd_del(lp, p[0]);
    wr_loop_fd_del(lp, p[0]); /* a second del is ignored */
    wr_loop_fd_del(lp, 12345);
    close(p[0]);
    close(p[1]);
}

static void del_self_cb(struct wr_loop *l, int fd, int events, void *data)
{
    (void)events;
    int *calls = data;
    (*calls)++;
    wr_loop_fd_del(l, fd);
}

Test(loop, fd_del_inside_own_callback)
{
    int p[2];
    make_pipe(p);
    int calls = 0;
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, del_self_cb, &calls, NULL), WR_OK);
    put_byte(p[1]); /* never read: level-triggered, it would fire forever if still watched */
    for (int i = 0; i < 5; i++)
        run_nowait();
    cr_assert_eq(calls, 1);
    /* Removed for good: it can be added again. */
    struct fd_rec r = {0};
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, rec_cb, &r, NULL), WR_OK);
    cr_assert(run_until(&r.fired, 2000));
    wr_loop_fd_del(lp, p[0]);
    close(p[0]);
    close(p[1]);
}

/* Two readable pipes in one batch; whichever callback runs first removes the other and puts
 * an empty pipe under the same fd number. The other's event, already fetched, must not reach
 * anyone: not its old callback, not the new registration. */
struct swap_test {
    int a[2], b[2];
    int calls_a, calls_b, calls_new;
};

static struct swap_test sw;

static void new_cb(struct wr_loop *l, int fd, int events, void *data)
{
    (void)l;
    (void)fd;
    (void)events;
    (void)data;
    sw.calls_new++;
}

static void replace_other(struct wr_loop *l, int other)
{
    wr_loop_fd_del(l, other);
    int q[2];
    make_pipe(q);
    cr_assert_eq(dup3(q[0], other, O_CLOEXEC), other);
    close(q[0]);
    close(q[1]); /* the new fd sees a hang-up: an event it would report if dispatched */
    cr_assert_eq(wr_loop_fd_add(l, other, WR_READABLE, new_cb, NULL, NULL), WR_OK);
}

static void swap_a(struct wr_loop *l, int fd, int events, void *data)
{
    char c;
    (void)events;
    cr_assert_eq(read(fd, &c, 1), 1);
    (void)data;
    sw.calls_a++;
    replace_other(l, sw.b[0]);
}

static void swap_b(struct wr_loop *l, int fd, int events, void *data)
{
    char c;
    (void)events;
    cr_assert_eq(read(fd, &c, 1), 1);
    (void)data;
    sw.calls_b++;
    replace_other(l, sw.a[0]);
}

Test(loop, fd_del_of_another_fd_in_the_same_batch)
{
    make_pipe(sw.a);
    make_pipe(sw.b);
    cr_assert_eq(wr_loop_fd_add(lp, sw.a[0], WR_READABLE, swap_a, NULL, NULL), WR_OK);
    cr_assert_eq(wr_loop_fd_add(lp, sw.b[0], WR_READABLE, swap_b, NULL, NULL), WR_OK);
    put_byte(sw.a[1]);
    put_byte(sw.b[1]);
    run_nowait();
    cr_assert_eq(sw.calls_a + sw.calls_b, 1, "a=%d b=%d", sw.calls_a, sw.calls_b);
    cr_assert_eq(sw.calls_new, 0, "a stale event reached the new registration");

    /* The replacement is live from the next poll on. */
    run_nowait();
    cr_assert_eq(sw.calls_new, 1);

    int replaced = sw.calls_a ? sw.b[0] : sw.a[0];
    int survivor = sw.calls_a ? sw.a[0] : sw.b[0];
    wr_loop_fd_del(lp, replaced);
    wr_loop_fd_del(lp, survivor);
    close(sw.a[0]);
    close(sw.a[1]);
    close(sw.b[0]);
    close(sw.b[1]);
}

/* Two writable sockets in one batch; whichever callback runs first drops the other's write
 * interest. The other's event, already fetched, must not report WR_WRITABLE any more. */
static int wr_socks[2];
static int wr_calls;

static void drop_other_write(struct wr_loop *l, int fd, int events, void *data)
{
    (void)events;
    (void)data;
    wr_calls++;
    int other = fd == wr_socks[0] ? wr_socks[1] : wr_socks[0];
    cr_assert_eq(wr_loop_fd_mod(l, other, WR_READABLE, NULL), WR_OK);
}

Test(loop, fd_mod_inside_a_callback_applies_to_the_same_batch)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    wr_socks[0] = sv[0];
    wr_socks[1] = sv[1];
    cr_assert_eq(wr_loop_fd_add(lp, sv[0], WR_WRITABLE, drop_other_write, NULL, NULL), WR_OK);
    cr_assert_eq(wr_loop_fd_add(lp, sv[1], WR_WRITABLE, drop_other_write, NULL, NULL), WR_OK);
    run_nowait();
    cr_assert_eq(wr_calls, 1);
    wr_loop_fd_del(lp, sv[0]);
    wr_loop_fd_del(lp, sv[1]);
    close(sv[0]);
    close(sv[1]);
}

/* ---- timers ---------------------------------------------------------------------------- */

struct order {
    int seen[16];
    int n;
};

static struct order ord;

static void order_cb(struct wr_loop *l, void *data)
{
    (void)l;
    ord.seen[ord.n++] = (int)(intptr_t)data;
}

Test(loop, timers_fire_in_deadline_order)
{
    bool done = false;
    cr_assert_neq(wr_loop_timer_add(lp, 30, order_cb, (void *)3), 0);
    cr_assert_neq(wr_loop_timer_add(lp, 10, order_cb, (void *)1), 0);
    cr_assert_neq(wr_loop_timer_add(lp, 20, order_cb, (void *)2), 0);
    cr_assert_neq(wr_loop_timer_add(lp, 40, set_flag, &done), 0);
    uint64_t start = wr_loop_now_ms(lp);
    cr_assert(run_until(&done, 5000));
    cr_assert_geq(wr_loop_now_ms(lp) - start, 40, "a timer fired early");
    cr_assert_eq(ord.n, 3);
    cr_assert_eq(ord.seen[0], 1);
    cr_assert_eq(ord.seen[1], 2);
    cr_assert_eq(ord.seen[2], 3);
}

Test(loop, equal_deadlines_fire_in_the_order_added)
{
    for (intptr_t i = 1; i <= 5; i++)
        cr_assert_neq(wr_loop_timer_add(lp, 0, order_cb, (void *)i), 0);
    run_nowait();
    cr_assert_eq(ord.n, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(ord.seen[i], i + 1);
}

Test(loop, timer_del_before_firing)
{
    bool done = false;
    uint64_t t1 = wr_loop_timer_add(lp, 5, order_cb, (void *)1);
    uint64_t t2 = wr_loop_timer_add(lp, 10, order_cb, (void *)2);
    cr_assert(t1 != 0 && t2 != 0 && t1 != t2);
    wr_loop_timer_del(lp, t1);
    wr_loop_timer_del(lp, t1);            /* twice: ignored */
    wr_loop_timer_del(lp, 0xdeadbeef);    /* unknown: ignored */
    wr_loop_timer_add(lp, 30, set_flag, &done);
    cr_assert(run_until(&done, 5000));
    cr_assert_eq(ord.n, 1);
    cr_assert_eq(ord.seen[0], 2);
    wr_loop_timer_del(lp, t2);            /* fired: ignored */
}

static uint64_t victim;

static void del_victim_cb(struct wr_loop *l, void *data)
{
    order_cb(l, data);
    wr_loop_timer_del(l, victim);
}

Test(loop, timer_del_inside_another_timers_callback)
{
    /* Both due in the same pass; the first cancels the second. */
    cr_assert_neq(wr_loop_timer_add(lp, 0, del_victim_cb, (void *)1), 0);
    victim = wr_loop_timer_add(lp, 0, order_cb, (void *)2);
    cr_assert_neq(victim, 0);
    cr_assert_neq(wr_loop_timer_add(lp, 0, order_cb, (void *)3), 0);
    bool done = false;
    wr_loop_timer_add(lp, 20, set_flag, &done);
    cr_assert(run_until(&done, 5000));
    cr_assert_eq(ord.n, 2);
    cr_assert_eq(ord.seen[0], 1);
    cr_assert_eq(ord.seen[1], 3);
}

static uint64_t self_id, reborn_id;

static void del_self_timer_cb(struct wr_loop *l, void *data)
{
    order_cb(l, data);
    wr_loop_timer_del(l, self_id);
    /* The new timer may take the freed slot; the stale id must not reach it. */
    reborn_id = wr_loop_timer_add(l, 0, order_cb, (void *)2);
    wr_loop_timer_del(l, self_id);
}

Test(loop, timer_del_of_itself)
{
    self_id = wr_loop_timer_add(lp, 0, del_self_timer_cb, (void *)1);
    cr_assert_neq(self_id, 0);
    bool done = false;
    wr_loop_timer_add(lp, 20, set_flag, &done);
    cr_assert(run_until(&done, 5000));
    cr_assert_neq(reborn_id, 0);
    cr_assert_neq(reborn_id, self_id);
    cr_assert_eq(ord.n, 2);
    cr_assert_eq(ord.seen[0], 1);
    cr_assert_eq(ord.seen[1], 2);
}

static void readd_zero_cb(struct wr_loop *l, void *data)
{
    int *n = data;
    (*n)++;
    wr_loop_timer_add(l, 0, readd_zero_cb, data);
}

Test(loop, a_timer_that_re_adds_itself_does_not_hold_the_loop)
{
    int n = 0;
    wr_loop_timer_add(lp, 0, readd_zero_cb, &n);
    run_nowait();
    cr_assert_eq(n, 1, "a timer added during the pass waits for the next one");
    run_nowait();
    cr_assert_eq(n, 2);
}

#define MANY 10000

/* A timer's deadline as the test can know it: the clock before and after the add. */
struct many_timer {
    uint64_t lo, hi;
    int fired;
};

static struct many_timer many[MANY];
static int many_fired;
static uint64_t many_max_lo;
static int many_bad;

static void many_cb(struct wr_loop *l, void *data)
{
    struct many_timer *t = data;
    uint64_t now = wr_loop_now_ms(l);
    /* Never early, and never before a timer already fired whose deadline is surely earlier. */
    if (now < t->lo || t->hi < many_max_lo)
        many_bad++;
    if (t->lo > many_max_lo)
        many_max_lo = t->lo;
    t->fired++;
    many_fired++;
}

Test(loop, ten_thousand_random_timers_fire_in_order)
{
    srand(42);
    for (int i = 0; i < MANY; i++) {
        uint64_t ms = (uint64_t)(rand() % 200);
        many[i].lo = wr_loop_now_ms(lp) + ms;
        cr_assert_neq(wr_loop_timer_add(lp, ms, many_cb, &many[i]), 0);
        many[i].hi = wr_loop_now_ms(lp) + ms;
    }
    bool expired = false;
    wr_loop_timer_add(lp, 10000, set_flag, &expired);
    while (many_fired < MANY && !expired)
        cr_assert_eq(wr_loop_run_once(lp, -1, NULL), WR_OK);
    cr_assert_eq(many_fired, MANY);
    cr_assert_eq(many_bad, 0, "%d timers fired out of order or early", many_bad);
    for (int i = 0; i < MANY; i++)
        cr_assert_eq(many[i].fired, 1);
}

/* ---- deferred tasks -------------------------------------------------------------------- */

static void order_task(struct wr_loop *l, void *data)
{
    order_cb(l, data);
}

Test(loop, defer_runs_in_fifo_order)
{
    for (intptr_t i = 1; i <= 4; i++)
        cr_assert_eq(wr_loop_defer(lp, order_task, (void *)i), WR_OK);
    cr_assert_eq(ord.n, 0, "nothing runs inside wr_loop_defer");
    run_nowait();
    cr_assert_eq(ord.n, 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ord.seen[i], i + 1);
    run_nowait();
    cr_assert_eq(ord.n, 4, "each task runs once");
}

static void cancel_later_task(struct wr_loop *l, void *data)
{
    order_cb(l, data);
    wr_loop_defer_cancel(l, order_task, (void *)3);
}

Test(loop, defer_cancel)
{
    cr_assert_eq(wr_loop_defer(lp, order_task, (void *)1), WR_OK);
    cr_assert_eq(wr_loop_defer(lp, order_task, (void *)2), WR_OK);
    cr_assert_eq(wr_loop_defer(lp, order_task, (void *)1), WR_OK);
    wr_loop_defer_cancel(lp, order_task, (void *)1); /* both of them */
    wr_loop_defer_cancel(lp, order_task, (void *)9); /* none: ignored */
    /* From inside a task: a later task of the same round is cancelled too. */
    cr_assert_eq(wr_loop_defer(lp, cancel_later_task, (void *)4), WR_OK);
    cr_assert_eq(wr_loop_defer(lp, order_task, (void *)3), WR_OK);
    cr_assert_eq(wr_loop_defer(lp, order_task, (void *)5), WR_OK);
    run_nowait();
    cr_assert_eq(ord.n, 3);
    cr_assert_eq(ord.seen[0], 2);
    cr_assert_eq(ord.seen[1], 4);
    cr_assert_eq(ord.seen[2], 5);
}

static void write_task(struct wr_loop *l, void *data)
{
    (void)l;
    put_byte(*(int *)data);
}

Test(loop, defer_runs_before_the_loop_sleeps)
{
    /* The task makes the pipe readable. If it ran after the poll, run_once(-1) would block
     * (here: until the guard timer) instead of returning with the pipe's event. */
    int p[2];
    make_pipe(p);
    struct fd_rec r = {0};
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, rec_cb, &r, NULL), WR_OK);
    cr_assert_eq(wr_loop_defer(lp, write_task, &p[1]), WR_OK);
    bool expired = false;
    uint64_t guard = wr_loop_timer_add(lp, 5000, set_flag, &expired);
    cr_assert_eq(wr_loop_run_once(lp, -1, NULL), WR_OK);
    cr_assert_eq(r.calls, 1);
    cr_assert(!expired);
    wr_loop_timer_del(lp, guard);
    wr_loop_fd_del(lp, p[0]);
    close(p[0]);
    close(p[1]);
}

static void defer_more_task(struct wr_loop *l, void *data)
{
    order_cb(l, data);
    if ((intptr_t)data < 3)
        cr_assert_eq(wr_loop_defer(l, defer_more_task, (void *)((intptr_t)data + 1)), WR_OK);
}

Test(loop, defer_from_inside_a_deferred_task)
{
    cr_assert_eq(wr_loop_defer(lp, defer_more_task, (void *)1), WR_OK);
    cr_assert_eq(wr_loop_defer(lp, order_task, (void *)10), WR_OK);
    run_nowait();
    /* Round one: 1, 10; round two: 2; round three: 3. All before the poll. */
    cr_assert_eq(ord.n, 4);
    cr_assert_eq(ord.seen[0], 1);
    cr_assert_eq(ord.seen[1], 10);
    cr_assert_eq(ord.seen[2], 2);
    cr_assert_eq(ord.seen[3], 3);
}

static bool keep_going = true;

static void forever_task(struct wr_loop *l, void *data)
{
    (*(int *)data)++;
    if (keep_going)
        wr_loop_defer(l, forever_task, data);
}

Test(loop, a_self_rescheduling_task_does_not_block_the_poll)
{
    int p[2];
    make_pipe(p);
    struct fd_rec r = {0};
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, rec_cb, &r, NULL), WR_OK);
    put_byte(p[1]);
    int runs = 0;
    cr_assert_eq(wr_loop_defer(lp, forever_task, &runs), WR_OK);
    /* Returns (polling without sleeping) and still serves the fd. */
    cr_assert_eq(wr_loop_run_once(lp, -1, NULL), WR_OK);
    cr_assert_gt(runs, 1);
    cr_assert_eq(r.calls, 1);
    keep_going = false;
    run_nowait();
    int after = runs;
    run_nowait();
    cr_assert_eq(runs, after);
    wr_loop_fd_del(lp, p[0]);
    close(p[0]);
    close(p[1]);
}

/* ---- posted tasks ---------------------------------------------------------------------- */

static pthread_t loop_thread, task_thread;
static bool posted_done;

static void posted_task(struct wr_loop *l, void *data)
{
    (void)l;
    (void)data;
    task_thread = pthread_self();
    posted_done = true;
}

static void *post_one(void *arg)
{
    (void)arg;
    cr_assert_eq(wr_loop_post(lp, posted_task, NULL), WR_OK);
    return NULL;
}

Test(loop, post_from_another_thread_wakes_a_blocked_loop)
{
    loop_thread = pthread_self();
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, post_one, NULL), 0);
    /* run_once(-1) has nothing but the guard timer to wake it, unless the post does. */
    cr_assert(run_until(&posted_done, 5000));
    cr_assert(pthread_equal(task_thread, loop_thread), "posted task ran off the loop thread");
    pthread_join(th, NULL);
}

#define POSTERS 4
#define POSTS 1000

static int post_hits[POSTERS * POSTS];
static int post_total;
static bool post_all;

static void count_task(struct wr_loop *l, void *data)
{
    (void)l;
    post_hits[(intptr_t)data]++;
    if (++post_total == POSTERS * POSTS)
        post_all = true;
}

static void *post_many(void *arg)
{
    intptr_t base = (intptr_t)arg * POSTS;
    for (intptr_t i = 0; i < POSTS; i++)
        if (wr_loop_post(lp, count_task, (void *)(base + i)) != WR_OK)
            return (void *)1;
    return NULL;
}

Test(loop, posts_from_four_threads_arrive_exactly_once)
{
    pthread_t th[POSTERS];
    for (intptr_t t = 0; t < POSTERS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, post_many, (void *)t), 0);
    cr_assert(run_until(&post_all, 10000), "only %d of %d posts arrived", post_total,
              POSTERS * POSTS);
    for (int t = 0; t < POSTERS; t++) {
        void *ret;
        pthread_join(th[t], &ret);
        cr_assert_null(ret, "wr_loop_post failed");
    }
    run_nowait();
    cr_assert_eq(post_total, POSTERS * POSTS);
    for (int i = 0; i < POSTERS * POSTS; i++)
        cr_assert_eq(post_hits[i], 1, "post %d arrived %d times", i, post_hits[i]);
}

static int dropped_runs;

static void never_task(struct wr_loop *l, void *data)
{
    (void)l;
    (void)data;
    dropped_runs++;
}

Test(loop, free_drops_pending_tasks_without_running_them)
{
    cr_assert_eq(wr_loop_defer(lp, never_task, NULL), WR_OK);
    cr_assert_eq(wr_loop_post(lp, never_task, NULL), WR_OK);
    cr_assert_neq(wr_loop_timer_add(lp, 0, never_task, NULL), 0);
    wr_loop_free(lp);
    lp = NULL;
    cr_assert_eq(dropped_runs, 0);
}

/* ---- signals --------------------------------------------------------------------------- */

struct sig_rec {
    int order[8];
    int n;
    int signo;
    bool fired;
};

static struct sig_rec sr;

static void sig_a(struct wr_loop *l, int signo, void *data)
{
    (void)l;
    sr.order[sr.n++] = (int)(intptr_t)data;
    sr.signo = signo;
    sr.fired = true;
}

static void block(int signo)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    cr_assert_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
}

static bool pending(int signo)
{
    sigset_t set;
    sigpending(&set);
    return sigismember(&set, signo);
}

Test(loop, raise_sighup_reaches_its_callback)
{
    block(SIGHUP);
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_signal_add(lp, SIGHUP, sig_a, (void *)1, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(raise(SIGHUP), 0);
    cr_assert(run_until(&sr.fired, 5000));
    cr_assert_eq(sr.signo, SIGHUP);
    cr_assert_eq(sr.n, 1);
    cr_assert(!pending(SIGHUP), "the signalfd consumed it");
}

Test(loop, kill_sigusr1_two_callbacks_in_order)
{
    block(SIGUSR1);
    cr_assert_eq(wr_loop_signal_add(lp, SIGUSR1, sig_a, (void *)1, NULL), WR_OK);
    cr_assert_eq(wr_loop_signal_add(lp, SIGUSR1, sig_a, (void *)2, NULL), WR_OK);
    cr_assert_eq(kill(getpid(), SIGUSR1), 0);
    cr_assert(run_until(&sr.fired, 5000));
    cr_assert_eq(sr.n, 2);
    cr_assert_eq(sr.order[0], 1);
    cr_assert_eq(sr.order[1], 2);
    cr_assert_eq(sr.signo, SIGUSR1);
}

Test(loop, signal_del)
{
    block(SIGUSR2);
    cr_assert_eq(wr_loop_signal_add(lp, SIGUSR2, sig_a, (void *)1, NULL), WR_OK);
    cr_assert_eq(wr_loop_signal_add(lp, SIGUSR2, sig_a, (void *)2, NULL), WR_OK);
    wr_loop_signal_del(lp, SIGUSR2, sig_a, (void *)1);
    wr_loop_signal_del(lp, SIGUSR2, sig_a, (void *)99); /* not registered: ignored */
    cr_assert_eq(raise(SIGUSR2), 0);
    cr_assert(run_until(&sr.fired, 5000));
    cr_assert_eq(sr.n, 1);
    cr_assert_eq(sr.order[0], 2);

    /* With its last watcher gone the signal is no longer read; it stays blocked, pending. */
    wr_loop_signal_del(lp, SIGUSR2, sig_a, (void *)2);
    sr = (struct sig_rec){0};
    cr_assert_eq(raise(SIGUSR2), 0);
    run_nowait();
    cr_assert_eq(sr.n, 0);
    cr_assert(pending(SIGUSR2));
}

static void sig_del_self(struct wr_loop *l, int signo, void *data)
{
    sig_a(l, signo, data);
    wr_loop_signal_del(l, signo, sig_del_self, data);
}

Test(loop, signal_del_inside_a_callback)
{
    block(SIGHUP);
    cr_assert_eq(wr_loop_signal_add(lp, SIGHUP, sig_del_self, (void *)1, NULL), WR_OK);
    cr_assert_eq(wr_loop_signal_add(lp, SIGHUP, sig_a, (void *)2, NULL), WR_OK);
    cr_assert_eq(wr_loop_signal_add(lp, SIGHUP, sig_a, (void *)3, NULL), WR_OK);
    cr_assert_eq(raise(SIGHUP), 0);
    cr_assert(run_until(&sr.fired, 5000));
    /* The callbacks after the removed one still run, each once, in order. */
    cr_assert_eq(sr.n, 3);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sr.order[i], i + 1);
    sr = (struct sig_rec){0};
    cr_assert_eq(raise(SIGHUP), 0);
    cr_assert(run_until(&sr.fired, 5000));
    cr_assert_eq(sr.n, 2);
    cr_assert_eq(sr.order[0], 2);
    cr_assert_eq(sr.order[1], 3);
}

Test(loop, signal_add_refuses_sigkill)
{
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_signal_add(lp, SIGKILL, sig_a, NULL, &err), WR_EINVAL);
    cr_assert_eq(wr_loop_signal_add(lp, 0, sig_a, NULL, &err), WR_EINVAL);
}

/* ---- run / stop ------------------------------------------------------------------------ */

static void stop_cb(struct wr_loop *l, void *data)
{
    (*(int *)data)++;
    wr_loop_stop(l);
}

Test(loop, run_returns_after_stop_from_a_timer)
{
    int stops = 0;
    cr_assert_neq(wr_loop_timer_add(lp, 10, stop_cb, &stops), 0);
    struct wr_error err = {0};
    cr_assert_eq(wr_loop_run(lp, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(stops, 1);

    /* Again, from a deferred task; the loop is reusable after a stop. */
    cr_assert_eq(wr_loop_defer(lp, stop_cb, &stops), WR_OK);
    cr_assert_eq(wr_loop_run(lp, &err), WR_OK, "%s", err.msg);
    cr_assert_eq(stops, 2);
}

static void stop_fd_cb(struct wr_loop *l, int fd, int events, void *data)
{
    (void)events;
    char c;
    cr_assert_eq(read(fd, &c, 1), 1);
    stop_cb(l, data);
}

Test(loop, run_returns_after_stop_from_an_fd_callback)
{
    int p[2];
    make_pipe(p);
    int stops = 0;
    cr_assert_eq(wr_loop_fd_add(lp, p[0], WR_READABLE, stop_fd_cb, &stops, NULL), WR_OK);
    put_byte(p[1]);
    cr_assert_eq(wr_loop_run(lp, NULL), WR_OK);
    cr_assert_eq(stops, 1);
    wr_loop_fd_del(lp, p[0]);
    close(p[0]);
    close(p[1]);
}

Test(loop, now_ms_is_monotonic)
{
    uint64_t a = wr_loop_now_ms(lp);
    uint64_t b = wr_loop_now_ms(lp);
    cr_assert_geq(b, a);
    cr_assert_gt(a, 0);
}
