/*
 * loop.c: the event loop, one thread's epoll plus the four things it multiplexes: file
 * descriptors, one-shot timers, deferred tasks and signals, and the one door other threads
 * may use, wr_loop_post().
 *
 * - fds live in a table indexed by fd number (grown on demand). Each registration carries a
 *   generation that goes into epoll's user data, so an event already fetched in a batch for
 *   an fd that a callback then removed (or removed and re-added) is recognised as stale and
 *   skipped. An fd whose mask is 0 is kept out of epoll, which would otherwise keep reporting
 *   hang-ups nobody asked for.
 * - timers sit in a binary min-heap keyed by (deadline, sequence) on CLOCK_MONOTONIC, with
 *   their nodes in a pool. An id is (slot generation << 32 | slot), so a fired or cancelled
 *   id goes stale by itself and wr_loop_timer_del can ignore it without a lookup table.
 * - deferred tasks are a FIFO ring run before the loop sleeps (ae's before-sleep hook).
 * - posted tasks are a mutex-protected array that the loop swaps with its own; an eventfd
 *   wakes the loop, written only when the array turns non-empty.
 * - signals are blocked in the calling thread and read from one signalfd whose mask follows
 *   the set of signals watched.
 *
 * Nothing on the steady-state dispatch path allocates: every array grows only to its high
 * water mark and is reused.
 */
#include "warren/loop.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256
/* Rounds of deferred tasks run before a poll; more means a task keeps rescheduling itself,
 * and the loop then polls without sleeping instead of starving the fds. */
#define LOOP_DEFER_ROUNDS 8
#define TIMER_NONE UINT32_MAX

struct fd_slot {
    wr_fd_cb *cb;
    void *data;
    int mask;
    uint32_t gen;  /* bumped by every del: events of older registrations are stale */
    bool used;
    bool in_epoll; /* false while mask is 0 */
};

struct timer {
    uint64_t deadline; /* ms on the monotonic clock */
    uint64_t seq;      /* breaks ties in deadline order: the order they were added */
    wr_timer_cb *cb;
    void *data;
    uint32_t gen;      /* the high half of the id; never 0 */
    uint32_t pos;      /* index in the heap, or the next free slot while free */
    bool active;
};

struct task {
    wr_task_cb *cb;
    void *data;
};

struct task_vec {
    struct task *v;
    size_t n, cap;
};

struct sig_watch {
    int signo;
    wr_signal_cb *cb;   /* NULL: removed during dispatch, swept afterwards */
    void *data;
};

struct wr_loop {
    int epfd;
    int evfd;
    int sigfd;          /* -1 until the first wr_loop_signal_add */
    bool stop;

    struct fd_slot *fds;
    size_t nfds;        /* slots allocated */

    struct timer *tpool;
    uint32_t tcap;      /* slots in tpool and heap */
    uint32_t tfree;     /* head of the free list, TIMER_NONE when empty */
    uint32_t *heap;     /* indexes into tpool */
    uint32_t heap_n;
    uint64_t timer_seq;

    struct task *defer; /* a ring: defer_cap is a power of two */
    size_t defer_head, defer_n, defer_cap;

    pthread_mutex_t post_mu;
    struct task_vec post_in;  /* guarded by post_mu */
    bool post_woken;          /* guarded by post_mu: the eventfd was written, not yet seen */
    struct task_vec post_run; /* the loop's: swapped with post_in, then run */
    bool post_ready;          /* the eventfd fired this iteration */

    struct sig_watch *sigw;
    size_t sigw_n, sigw_cap;
    sigset_t sigmask;         /* signals the signalfd watches */
    bool sig_dispatching;
    bool sig_dead;            /* some sigw entries are marked removed */

    struct epoll_event events[LOOP_MAX_EVENTS];
};

/* ---- fds ----------------------------------------------------------------------------- */

static uint32_t epoll_bits(int mask)
{
    return ((mask & WR_READABLE) ? EPOLLIN : 0) | ((mask & WR_WRITABLE) ? EPOLLOUT : 0);
}

static int epoll_set(struct wr_loop *lp, int op, int fd, const struct fd_slot *s)
{
    struct epoll_event ev = {.events = epoll_bits(s->mask),
                             .data.u64 = (uint64_t)s->gen << 32 | (uint32_t)fd};
    return epoll_ctl(lp->epfd, op, fd, &ev);
}

static int fds_reserve(struct wr_loop *lp, int fd)
{
    if ((size_t)fd < lp->nfds)
        return WR_OK;
    size_t n = lp->nfds ? lp->nfds : 64;
    while (n <= (size_t)fd)
        n *= 2;
    struct fd_slot *fds = realloc(lp->fds, n * sizeof(*fds));
    if (!fds)
        return WR_ENOMEM;
    memset(fds + lp->nfds, 0, (n - lp->nfds) * sizeof(*fds));
    lp->fds = fds;
    lp->nfds = n;
    return WR_OK;
}

int wr_loop_fd_add(struct wr_loop *lp, int fd, int events, wr_fd_cb *cb, void *data,
                   struct wr_error *err)
{
    if (fd < 0 || !cb || (events & ~(WR_READABLE | WR_WRITABLE)))
        return wr_error_set(err, WR_EINVAL, "fd_add: invalid fd %d, callback or events 0x%x",
                            fd, (unsigned)events);
    if (fds_reserve(lp, fd) != WR_OK)
        return wr_error_set(err, WR_ENOMEM, "fd_add: out of memory for fd %d", fd);
    struct fd_slot *s = &lp->fds[fd];
    if (s->used)
        return wr_error_set(err, WR_EEXIST, "fd_add: fd %d is already watched", fd);
    s->cb = cb;
    s->data = data;
    s->mask = events;
    if (events ? epoll_set(lp, EPOLL_CTL_ADD, fd, s) < 0 : fcntl(fd, F_GETFD) < 0)
        return wr_error_sys(err, WR_EIO, "fd_add: cannot watch fd %d", fd);
    s->in_epoll = events != 0;
    s->used = true;
    return WR_OK;
}

int wr_loop_fd_mod(struct wr_loop *lp, int fd, int events, struct wr_error *err)
{
    if (fd < 0 || (size_t)fd >= lp->nfds || !lp->fds[fd].used)
        return wr_error_set(err, WR_ENOTFOUND, "fd_mod: fd %d is not watched", fd);
    if (events & ~(WR_READABLE | WR_WRITABLE))
        return wr_error_set(err, WR_EINVAL, "fd_mod: invalid events 0x%x", (unsigned)events);
    struct fd_slot *s = &lp->fds[fd];
    int old = s->mask;
    s->mask = events;
    int rc = 0;
    if (events && !s->in_epoll)
        rc = epoll_set(lp, EPOLL_CTL_ADD, fd, s);
    else if (!events && s->in_epoll)
        rc = epoll_set(lp, EPOLL_CTL_DEL, fd, s);
    else if (events && events != old)
        rc = epoll_set(lp, EPOLL_CTL_MOD, fd, s);
    if (rc < 0) {
        s->mask = old;
        return wr_error_sys(err, WR_EIO, "fd_mod: epoll_ctl(fd %d)", fd);
    }
    s->in_epoll = events != 0;
    return WR_OK;
}

void wr_loop_fd_del(struct wr_loop *lp, int fd)
{
    if (fd < 0 || (size_t)fd >= lp->nfds || !lp->fds[fd].used)
        return;
    struct fd_slot *s = &lp->fds[fd];
    /* Fails with EBADF when the owner closed fd first; the kernel then dropped it already
     * (unless the file was dup'ed: owners delete before they close). */
    if (s->in_epoll)
        (void)epoll_ctl(lp->epfd, EPOLL_CTL_DEL, fd, NULL);
    s->used = false;
    s->in_epoll = false;
    s->cb = NULL;
    s->data = NULL;
    s->gen++;
}

static void dispatch_fd(struct wr_loop *lp, const struct epoll_event *ev)
{
    int fd = (int)(uint32_t)ev->data.u64;
    uint32_t gen = (uint32_t)(ev->data.u64 >> 32);
    if ((size_t)fd >= lp->nfds)
        return;
    /* An earlier callback of this batch may have removed or replaced the registration. */
    struct fd_slot *s = &lp->fds[fd];
    if (!s->used || s->gen != gen)
        return;
    int events = 0;
    if ((ev->events & EPOLLIN) && (s->mask & WR_READABLE))
        events |= WR_READABLE;
    if (ev->events & (EPOLLERR | EPOLLHUP))
        events |= WR_READABLE;
    if ((ev->events & EPOLLOUT) && (s->mask & WR_WRITABLE))
        events |= WR_WRITABLE;
    if (events)
        s->cb(lp, fd, events, s->data);
}

/* ---- timers -------------------------------------------------------------------------- */

static bool timer_before(const struct wr_loop *lp, uint32_t a, uint32_t b)
{
    const struct timer *ta = &lp->tpool[a], *tb = &lp->tpool[b];
    return ta->deadline < tb->deadline || (ta->deadline == tb->deadline && ta->seq < tb->seq);
}

static void heap_set(struct wr_loop *lp, uint32_t pos, uint32_t idx)
{
    lp->heap[pos] = idx;
    lp->tpool[idx].pos = pos;
}

static void heap_up(struct wr_loop *lp, uint32_t pos)
{
    uint32_t idx = lp->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!timer_before(lp, idx, lp->heap[parent]))
            break;
        heap_set(lp, pos, lp->heap[parent]);
        pos = parent;
    }
    heap_set(lp, pos, idx);
}

static void heap_down(struct wr_loop *lp, uint32_t pos)
{
    uint32_t idx = lp->heap[pos];
    for (;;) {
        uint32_t child = 2 * pos + 1;
        if (child >= lp->heap_n)
            break;
        if (child + 1 < lp->heap_n && timer_before(lp, lp->heap[child + 1], lp->heap[child]))
            child++;
        if (!timer_before(lp, lp->heap[child], idx))
            break;
        heap_set(lp, pos, lp->heap[child]);
        pos = child;
    }
    heap_set(lp, pos, idx);
}

/* Takes the timer in tpool[idx] out of the heap and returns its slot to the free list; its
 * id goes stale. */
static void timer_remove(struct wr_loop *lp, uint32_t idx)
{
    struct timer *t = &lp->tpool[idx];
    uint32_t pos = t->pos;
    uint32_t last = lp->heap[--lp->heap_n];
    if (pos < lp->heap_n) {
        heap_set(lp, pos, last);
        heap_up(lp, pos);
        heap_down(lp, lp->tpool[last].pos);
    }
    t->active = false;
    t->cb = NULL;
    t->data = NULL;
    if (++t->gen == 0)
        t->gen = 1;
    t->pos = lp->tfree;
    lp->tfree = idx;
}

static int timers_grow(struct wr_loop *lp)
{
    uint32_t cap = lp->tcap ? lp->tcap * 2 : 64;
    if (cap <= lp->tcap)
        return WR_ENOMEM;
    struct timer *pool = realloc(lp->tpool, (size_t)cap * sizeof(*pool));
    if (!pool)
        return WR_ENOMEM;
    lp->tpool = pool;
    uint32_t *heap = realloc(lp->heap, (size_t)cap * sizeof(*heap));
    if (!heap)
        return WR_ENOMEM; /* the larger pool is kept; tcap stays, so it is simply unused */
    lp->heap = heap;
    for (uint32_t i = cap; i-- > lp->tcap;) {
        pool[i] = (struct timer){.gen = 1, .pos = lp->tfree};
        lp->tfree = i;
    }
    lp->tcap = cap;
    return WR_OK;
}

uint64_t wr_loop_timer_add(struct wr_loop *lp, uint64_t ms, wr_timer_cb *cb, void *data)
{
    if (!cb || (lp->tfree == TIMER_NONE && timers_grow(lp) != WR_OK))
        return 0;
    uint32_t idx = lp->tfree;
    struct timer *t = &lp->tpool[idx];
    lp->tfree = t->pos;
    uint64_t now = wr_loop_now_ms(lp);
    t->deadline = ms > UINT64_MAX - now ? UINT64_MAX : now + ms;
    t->seq = ++lp->timer_seq;
    t->cb = cb;
    t->data = data;
    t->active = true;
    t->pos = lp->heap_n++;
    lp->heap[t->pos] = idx;
    heap_up(lp, t->pos);
    return (uint64_t)t->gen << 32 | idx;
}

void wr_loop_timer_del(struct wr_loop *lp, uint64_t id)
{
    uint32_t idx = (uint32_t)id;
    if (idx >= lp->tcap || !lp->tpool[idx].active || lp->tpool[idx].gen != (uint32_t)(id >> 32))
        return;
    timer_remove(lp, idx);
}

/* Fires the timers due now, earliest first. The heap is consulted afresh after each callback,
 * so a callback may delete any timer (itself included: its id is already stale) without a
 * mark-and-sweep. Timers added during the pass wait for the next one, so a timer that
 * re-adds itself with 0 ms cannot hold the loop here. */
static void run_timers(struct wr_loop *lp)
{
    if (lp->heap_n == 0)
        return;
    uint64_t now = wr_loop_now_ms(lp);
    uint64_t last_seq = lp->timer_seq;
    while (lp->heap_n > 0) {
        uint32_t idx = lp->heap[0];
        struct timer *t = &lp->tpool[idx];
        if (t->deadline > now || t->seq > last_seq)
            break;
        wr_timer_cb *cb = t->cb;
        void *data = t->data;
        timer_remove(lp, idx);
        cb(lp, data);
    }
}

/* Milliseconds until the next timer (rounded up, capped at INT_MAX), or -1 with none. */
static int timers_timeout(const struct wr_loop *lp)
{
    if (lp->heap_n == 0)
        return -1;
    uint64_t deadline = lp->tpool[lp->heap[0]].deadline;
    uint64_t now = wr_loop_now_ms(lp);
    if (deadline <= now)
        return 0;
    return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

uint64_t wr_loop_now_ms(const struct wr_loop *lp)
{
    (void)lp;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- deferred tasks ------------------------------------------------------------------ */

int wr_loop_defer(struct wr_loop *lp, wr_task_cb *cb, void *data)
{
    if (!cb)
        return WR_EINVAL;
    if (lp->defer_n == lp->defer_cap) {
        size_t cap = lp->defer_cap ? lp->defer_cap * 2 : 64;
        struct task *ring = malloc(cap * sizeof(*ring));
        if (!ring)
            return WR_ENOMEM;
        for (size_t i = 0; i < lp->defer_n; i++)
            ring[i] = lp->defer[(lp->defer_head + i) & (lp->defer_cap - 1)];
        free(lp->defer);
        lp->defer = ring;
        lp->defer_head = 0;
        lp->defer_cap = cap;
    }
    lp->defer[(lp->defer_head + lp->defer_n) & (lp->defer_cap - 1)] = (struct task){cb, data};
    lp->defer_n++;
    return WR_OK;
}

/* A cancelled task keeps its place in the ring and does nothing: removing from the middle of
 * a ring would cost a shift, and cancels are rare (an owner being freed). */
static void task_cancelled(struct wr_loop *lp, void *data)
{
    (void)lp, (void)data;
}

void wr_loop_defer_cancel(struct wr_loop *lp, wr_task_cb *cb, void *data)
{
    for (size_t i = 0; i < lp->defer_n; i++) {
        struct task *t = &lp->defer[(lp->defer_head + i) & (lp->defer_cap - 1)];
        if (t->cb == cb && t->data == data)
            t->cb = task_cancelled;
    }
}

/* Runs deferred tasks round by round: a round is what was queued when it began, so tasks
 * deferred by tasks run in the next round, still before the poll. */
static void run_deferred(struct wr_loop *lp)
{
    for (int round = 0; round < LOOP_DEFER_ROUNDS && lp->defer_n > 0; round++) {
        for (size_t k = lp->defer_n; k > 0 && lp->defer_n > 0; k--) {
            struct task t = lp->defer[lp->defer_head];
            lp->defer_head = (lp->defer_head + 1) & (lp->defer_cap - 1);
            lp->defer_n--;
            t.cb(lp, t.data);
        }
    }
}

/* ---- posted tasks -------------------------------------------------------------------- */

int wr_loop_post(struct wr_loop *lp, wr_task_cb *cb, void *data)
{
    if (!cb)
        return WR_EINVAL;
    pthread_mutex_lock(&lp->post_mu);
    struct task_vec *in = &lp->post_in;
    if (in->n == in->cap) {
        size_t cap = in->cap ? in->cap * 2 : 64;
        struct task *v = realloc(in->v, cap * sizeof(*v));
        if (!v) {
            pthread_mutex_unlock(&lp->post_mu);
            return WR_ENOMEM;
        }
        in->v = v;
        in->cap = cap;
    }
    in->v[in->n++] = (struct task){cb, data};
    bool wake = !lp->post_woken;
    lp->post_woken = true;
    pthread_mutex_unlock(&lp->post_mu);
    if (wake) {
        uint64_t one = 1;
        /* Cannot fail short of the counter overflowing, and the loop resets it to 0. */
        ssize_t n = write(lp->evfd, &one, sizeof(one));
        if (n != (ssize_t)sizeof(one))
            return WR_EIO;
    }
    return WR_OK;
}

static void on_eventfd(struct wr_loop *lp, int fd, int events, void *data)
{
    (void)events;
    (void)data;
    uint64_t count;
    ssize_t n = read(fd, &count, sizeof(count));
    (void)n; /* EAGAIN: already drained; the flag below is what matters */
    lp->post_ready = true;
}

/* The eventfd is read before the lock is taken, so a post that lands after the swap finds
 * post_woken cleared and writes it again: no wake-up is lost. */
static void run_posted(struct wr_loop *lp)
{
    if (!lp->post_ready)
        return;
    lp->post_ready = false;
    pthread_mutex_lock(&lp->post_mu);
    struct task_vec tmp = lp->post_in;
    lp->post_in = lp->post_run;
    lp->post_run = tmp;
    lp->post_woken = false;
    pthread_mutex_unlock(&lp->post_mu);
    for (size_t i = 0; i < lp->post_run.n; i++)
        lp->post_run.v[i].cb(lp, lp->post_run.v[i].data);
    lp->post_run.n = 0;
}

/* ---- signals ------------------------------------------------------------------------- */

static bool signal_watched(const struct wr_loop *lp, int signo)
{
    for (size_t i = 0; i < lp->sigw_n; i++)
        if (lp->sigw[i].signo == signo && lp->sigw[i].cb)
            return true;
    return false;
}

static void sig_sweep(struct wr_loop *lp)
{
    size_t j = 0;
    for (size_t i = 0; i < lp->sigw_n; i++)
        if (lp->sigw[i].cb)
            lp->sigw[j++] = lp->sigw[i];
    lp->sigw_n = j;
    lp->sig_dead = false;
}

static void on_signalfd(struct wr_loop *lp, int fd, int events, void *data)
{
    (void)events;
    (void)data;
    struct signalfd_siginfo si[16];
    for (;;) {
        ssize_t n = read(fd, si, sizeof(si));
        if (n <= 0)
            break;
        lp->sig_dispatching = true;
        for (size_t k = 0; k < (size_t)n / sizeof(si[0]); k++) {
            int signo = (int)si[k].ssi_signo;
            /* Watchers added by a callback wait for the next signal. */
            size_t count = lp->sigw_n;
            for (size_t i = 0; i < count; i++) {
                struct sig_watch w = lp->sigw[i];
                if (w.signo == signo && w.cb)
                    w.cb(lp, signo, w.data);
            }
        }
        lp->sig_dispatching = false;
        if (lp->sig_dead)
            sig_sweep(lp);
        if ((size_t)n < sizeof(si))
            break;
    }
}

int wr_loop_signal_add(struct wr_loop *lp, int signo, wr_signal_cb *cb, void *data,
                       struct wr_error *err)
{
    if (!cb || signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP)
        return wr_error_set(err, WR_EINVAL, "signal_add: cannot watch signal %d", signo);
    if (lp->sigw_n == lp->sigw_cap) {
        size_t cap = lp->sigw_cap ? lp->sigw_cap * 2 : 8;
        struct sig_watch *w = realloc(lp->sigw, cap * sizeof(*w));
        if (!w)
            return wr_error_set(err, WR_ENOMEM, "signal_add: out of memory");
        lp->sigw = w;
        lp->sigw_cap = cap;
    }
    if (!sigismember(&lp->sigmask, signo)) {
        sigset_t one, mask = lp->sigmask;
        sigemptyset(&one);
        sigaddset(&one, signo);
        sigaddset(&mask, signo);
        /* Blocked first, so that from here on the signal waits for the signalfd instead of
         * running its default action. */
        int rc = pthread_sigmask(SIG_BLOCK, &one, NULL);
        if (rc != 0) {
            errno = rc;
            return wr_error_sys(err, WR_EIO, "signal_add: cannot block signal %d", signo);
        }
        int fd = signalfd(lp->sigfd, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (fd < 0)
            return wr_error_sys(err, WR_EIO, "signal_add: signalfd for signal %d", signo);
        if (lp->sigfd < 0) {
            int rc2 = wr_loop_fd_add(lp, fd, WR_READABLE, on_signalfd, NULL, err);
            if (rc2 != WR_OK) {
                close(fd);
                return rc2;
            }
            lp->sigfd = fd;
        }
        lp->sigmask = mask;
    }
    lp->sigw[lp->sigw_n++] = (struct sig_watch){signo, cb, data};
    return WR_OK;
}

/* When the last watcher of a signal goes, the signalfd stops reading it, but the signal
 * stays blocked in the thread that added it: its default action (terminating, for most)
 * would otherwise be back for a signal this process was consuming a moment ago, and an
 * instance already pending would fire at once. Whoever wants it back unblocks it. */
void wr_loop_signal_del(struct wr_loop *lp, int signo, wr_signal_cb *cb, void *data)
{
    size_t i;
    for (i = 0; i < lp->sigw_n; i++) {
        struct sig_watch *w = &lp->sigw[i];
        if (w->signo == signo && w->cb == cb && w->data == data)
            break;
    }
    if (i == lp->sigw_n)
        return;
    if (lp->sig_dispatching) {
        lp->sigw[i].cb = NULL;
        lp->sig_dead = true;
    } else {
        memmove(&lp->sigw[i], &lp->sigw[i + 1], (lp->sigw_n - i - 1) * sizeof(lp->sigw[0]));
        lp->sigw_n--;
    }
    if (!signal_watched(lp, signo)) {
        sigset_t mask = lp->sigmask;
        sigdelset(&mask, signo);
        /* Only fails for a bad fd or mask, neither of which can happen here. */
        if (signalfd(lp->sigfd, &mask, SFD_NONBLOCK | SFD_CLOEXEC) >= 0)
            lp->sigmask = mask;
    }
}

/* ---- the loop ------------------------------------------------------------------------ */

int wr_loop_new(struct wr_loop **out, struct wr_error *err)
{
    struct wr_loop *lp = calloc(1, sizeof(*lp));
    if (!lp)
        return wr_error_set(err, WR_ENOMEM, "loop: out of memory");
    lp->epfd = lp->evfd = lp->sigfd = -1;
    lp->tfree = TIMER_NONE;
    sigemptyset(&lp->sigmask);
    int rc = pthread_mutex_init(&lp->post_mu, NULL);
    if (rc != 0) {
        free(lp);
        errno = rc;
        return wr_error_sys(err, WR_EIO, "loop: pthread_mutex_init");
    }
    lp->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (lp->epfd < 0) {
        rc = wr_error_sys(err, WR_EIO, "loop: epoll_create1");
        goto fail;
    }
    lp->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lp->evfd < 0) {
        rc = wr_error_sys(err, WR_EIO, "loop: eventfd");
        goto fail;
    }
    rc = wr_loop_fd_add(lp, lp->evfd, WR_READABLE, on_eventfd, NULL, err);
    if (rc != WR_OK)
        goto fail;
    *out = lp;
    return WR_OK;
fail:
    wr_loop_free(lp);
    return rc;
}

void wr_loop_free(struct wr_loop *lp)
{
    if (!lp)
        return;
    if (lp->sigfd >= 0)
        close(lp->sigfd);
    if (lp->evfd >= 0)
        close(lp->evfd);
    if (lp->epfd >= 0)
        close(lp->epfd);
    pthread_mutex_destroy(&lp->post_mu);
    free(lp->post_in.v);
    free(lp->post_run.v);
    free(lp->defer);
    free(lp->sigw);
    free(lp->tpool);
    free(lp->heap);
    free(lp->fds);
    free(lp);
}

int wr_loop_run_once(struct wr_loop *lp, int timeout_ms, struct wr_error *err)
{
    run_deferred(lp);

    int timeout = timers_timeout(lp);
    if (timeout < 0 || (timeout_ms >= 0 && timeout_ms < timeout))
        timeout = timeout_ms;
    if (lp->defer_n > 0 || lp->stop)
        timeout = 0;

    int n = epoll_wait(lp->epfd, lp->events, LOOP_MAX_EVENTS, timeout);
    if (n < 0) {
        if (errno != EINTR)
            return wr_error_sys(err, WR_EIO, "loop: epoll_wait");
        n = 0; /* a signal handler ran; timers may still be due */
    }
    for (int i = 0; i < n; i++)
        dispatch_fd(lp, &lp->events[i]);
    run_timers(lp);
    run_posted(lp);
    return WR_OK;
}

/* A wr_loop_stop() made while the loop is not running makes the next wr_loop_run() return at
 * once; the flag is cleared when wr_loop_run() returns. */
int wr_loop_run(struct wr_loop *lp, struct wr_error *err)
{
    int rc = WR_OK;
    while (!lp->stop && rc == WR_OK)
        rc = wr_loop_run_once(lp, -1, err);
    lp->stop = false;
    return rc;
}

void wr_loop_stop(struct wr_loop *lp)
{
    lp->stop = true;
}
