/*
 * fsync.c: group commit for storage backends (fsync.h). The loop thread counts writes and
 * queues sync requests, each tagged with the write count it waits for; one worker thread
 * per instance fdatasyncs the registered files whenever a request (policy always) or the
 * interval timer asks for more than it has made durable. Whatever was written before a round
 * starts is covered by that round, so one fdatasync serves every request queued meanwhile.
 *
 * The worker owns duplicates of the files: the storage may close or delete its own at any
 * time, and a retired file is closed by the worker after its last sync. Results come back
 * through an eventfd read on the loop thread, which completes the requests in order.
 */
#include "warren/fsync.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "warren/loop.h"
#include "broker_int.h"

struct fs_file {
    int fd;  /* the storage's fd, to find it on retire */
    int dup; /* the worker's */
};

struct fs_once {
    int dup;
    bool dir; /* fsync (a directory's entries) rather than fdatasync */
};

struct fs_waiter {
    uint64_t target;
    wr_storage_sync_cb *cb;
    void *data;
};

struct wr_fsync {
    struct wr_loop *lp;
    enum wr_fsync_policy policy;
    uint64_t interval_ms;

    /* Loop thread only. */
    uint64_t written;      /* writes counted */
    uint64_t durable;      /* writes known synced, as last heard from the worker */
    uint64_t durable_ok;   /* of those, synced before any failure */
    int status;            /* the worker's status, as last heard */
    struct fs_waiter *waiters; /* [head, n) pending, in request order */
    size_t head;
    size_t n;
    size_t cap;
    bool deferred;
    uint64_t timer;
    struct wr_fsync *live_prev, *live_next; /* every instance, for fsync_hurry */

    /* Shared with the worker, under mu. */
    pthread_t thread;
    bool started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t want;         /* the write count to make durable */
    uint64_t done;         /* the write count the last round made durable (or tried) */
    uint64_t done_ok;      /* the last round's target while no fdatasync had failed */
    int sync_status;       /* WR_OK, or WR_EIO from the first failure on (sticky) */
    bool stop;
    struct fs_file *files; /* synced every round */
    size_t nfiles;
    size_t capfiles;
    struct fs_once *once;  /* synced in the next round, then closed */
    size_t nonce;
    size_t caponce;
    int efd;

    /* Worker only. */
    int *scratch;
    size_t capscratch;
};

int wr_fsync_options(const struct wr_table *opts, enum wr_fsync_policy *policy,
                     uint64_t *interval_ms, struct wr_error *err)
{
    const char *s = NULL;
    size_t len = 0;
    int64_t v = 0;
    if (wr_table_get_str(opts, "flush", &s, &len)) {
        if (len == 6 && memcmp(s, "always", 6) == 0)
            *policy = WR_FSYNC_ALWAYS;
        else if (len == 8 && memcmp(s, "interval", 8) == 0)
            *policy = WR_FSYNC_INTERVAL;
        else if (len == 5 && memcmp(s, "never", 5) == 0)
            *policy = WR_FSYNC_NEVER;
        else
            return wr_error_set(err, WR_EINVAL, "flush must be always, interval or never, "
                                "not '%.*s'", (int)len, s);
    }
    if (wr_table_get_int(opts, "flush_interval", &v)) {
        if (v <= 0)
            return wr_error_set(err, WR_EINVAL, "flush_interval must be > 0");
        *interval_ms = (uint64_t)v;
    }
    return WR_OK;
}

/* ---- the worker ------------------------------------------------------------------------- */

static void *fs_main(void *arg)
{
    struct wr_fsync *fs = arg;
    pthread_mutex_lock(&fs->mu);
    for (;;) {
        while (!fs->stop && fs->want <= fs->done)
            pthread_cond_wait(&fs->cv, &fs->mu);
        if (fs->want <= fs->done)
            break; /* stopping, and wr_fsync_free asked for nothing more */
        uint64_t target = fs->want;
        bool ok = true;
        if (fs->nfiles > fs->capscratch) {
            int *grown = realloc(fs->scratch, fs->nfiles * sizeof *grown);
            if (grown) {
                fs->scratch = grown;
                fs->capscratch = fs->nfiles;
            }
        }
        size_t nfiles = fs->nfiles <= fs->capscratch ? fs->nfiles : 0;
        if (nfiles < fs->nfiles)
            ok = false; /* out of memory: this round cannot cover the files */
        for (size_t i = 0; i < nfiles; i++)
            fs->scratch[i] = fs->files[i].dup;
        struct fs_once *once = fs->once;
        size_t nonce = fs->nonce;
        fs->once = NULL;
        fs->nonce = fs->caponce = 0;
        pthread_mutex_unlock(&fs->mu);

        /* Only this thread closes the duplicates, so the snapshot stays valid unlocked. */
        for (size_t i = 0; i < nfiles; i++)
            if (fdatasync(fs->scratch[i]) != 0)
                ok = false;
        for (size_t i = 0; i < nonce; i++) {
            if ((once[i].dir ? fsync(once[i].dup) : fdatasync(once[i].dup)) != 0)
                ok = false;
            close(once[i].dup);
        }
        free(once);

        pthread_mutex_lock(&fs->mu);
        fs->done = target;
        if (!ok)
            fs->sync_status = WR_EIO;
        if (fs->sync_status == WR_OK)
            fs->done_ok = target;
        uint64_t one = 1;
        ssize_t w = write(fs->efd, &one, sizeof one);
        (void)w; /* a full counter wakes the loop all the same */
    }
    pthread_mutex_unlock(&fs->mu);
    return NULL;
}

/* Asks the worker to make everything written so far durable. */
static void fs_request(struct wr_fsync *fs)
{
    pthread_mutex_lock(&fs->mu);
    if (fs->written > fs->want) {
        fs->want = fs->written;
        pthread_cond_signal(&fs->cv);
    }
    pthread_mutex_unlock(&fs->mu);
}

/* ---- completions on the loop thread ----------------------------------------------------- */

static void fs_complete(struct wr_fsync *fs)
{
    /* A callback may queue a new request: re-read the array each time. */
    while (fs->head < fs->n && fs->waiters[fs->head].target <= fs->durable) {
        struct fs_waiter w = fs->waiters[fs->head++];
        w.cb(w.data, w.target <= fs->durable_ok ? WR_OK : fs->status);
    }
    if (fs->head == fs->n)
        fs->head = fs->n = 0;
}

static void fs_hear(struct wr_fsync *fs)
{
    pthread_mutex_lock(&fs->mu);
    fs->durable = fs->done;
    fs->durable_ok = fs->done_ok;
    fs->status = fs->sync_status;
    pthread_mutex_unlock(&fs->mu);
}

static void fs_on_event(struct wr_loop *lp, int fd, int events, void *data)
{
    (void)lp;
    (void)events;
    uint64_t count;
    ssize_t got = read(fd, &count, sizeof count);
    (void)got; /* nothing to read: a spurious wake-up, harmless */
    struct wr_fsync *fs = data;
    fs_hear(fs);
    fs_complete(fs);
}

static void fs_deferred(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct wr_fsync *fs = data;
    fs->deferred = false;
    fs_complete(fs);
}

static void fs_tick(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct wr_fsync *fs = data;
    fs->timer = 0;
    fs_request(fs);
}

/* ---- hurrying at shutdown --------------------------------------------------------------- */

/* Loop thread only, as every instance is used on it. */
static struct wr_fsync *live;
static bool hurrying;

static void live_add(struct wr_fsync *fs)
{
    fs->live_next = live;
    if (live)
        live->live_prev = fs;
    live = fs;
}

static void live_remove(struct wr_fsync *fs)
{
    if (fs->live_prev)
        fs->live_prev->live_next = fs->live_next;
    else if (live == fs)
        live = fs->live_next;
    if (fs->live_next)
        fs->live_next->live_prev = fs->live_prev;
}

void fsync_hurry(bool on)
{
    hurrying = on;
    for (struct wr_fsync *fs = on ? live : NULL; fs; fs = fs->live_next) {
        if (fs->timer) { /* an interval round is due: run it now */
            wr_loop_timer_del(fs->lp, fs->timer);
            fs->timer = 0;
            fs_request(fs);
        }
    }
}

/* ---- the API ---------------------------------------------------------------------------- */

/* Starts the worker with every signal blocked: the loop takes SIGTERM and friends through a
 * signalfd, which only works while no thread lets them through, and a worker made before
 * the loop blocks them would inherit an open mask and die of the first SIGTERM. */
static int start_worker(struct wr_fsync *fs)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&fs->thread, NULL, fs_main, fs);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int wr_fsync_new(struct wr_loop *lp, enum wr_fsync_policy policy, uint64_t interval_ms,
                 struct wr_fsync **out, struct wr_error *err)
{
    *out = NULL;
    struct wr_fsync *fs = calloc(1, sizeof *fs);
    if (!fs)
        return wr_error_set(err, WR_ENOMEM, "out of memory");
    fs->lp = lp;
    fs->policy = policy;
    fs->interval_ms = interval_ms ? interval_ms : WR_FSYNC_DEFAULT_INTERVAL_MS;
    fs->efd = -1;
    pthread_mutex_init(&fs->mu, NULL);
    pthread_cond_init(&fs->cv, NULL);
    if (policy == WR_FSYNC_NEVER) {
        *out = fs;
        return WR_OK;
    }
    int rc = WR_OK;
    fs->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fs->efd < 0)
        rc = wr_error_sys(err, WR_EIO, "cannot create an eventfd for syncing");
    if (rc == WR_OK)
        rc = wr_loop_fd_add(lp, fs->efd, WR_READABLE, fs_on_event, fs, err);
    if (rc == WR_OK && start_worker(fs) != 0) {
        wr_loop_fd_del(lp, fs->efd);
        rc = wr_error_set(err, WR_EIO, "cannot start the sync thread");
    }
    if (rc != WR_OK) {
        if (fs->efd >= 0)
            close(fs->efd);
        pthread_mutex_destroy(&fs->mu);
        pthread_cond_destroy(&fs->cv);
        free(fs);
        return rc;
    }
    fs->started = true;
    live_add(fs);
    *out = fs;
    return WR_OK;
}

void wr_fsync_free(struct wr_fsync *fs)
{
    if (!fs)
        return;
    if (fs->timer)
        wr_loop_timer_del(fs->lp, fs->timer);
    if (fs->deferred)
        wr_loop_defer_cancel(fs->lp, fs_deferred, fs);
    if (fs->started) {
        live_remove(fs);
        /* One last round, even with nothing new written: retired files and changed
         * directories may still wait for theirs. */
        pthread_mutex_lock(&fs->mu);
        fs->want = (fs->written > fs->done ? fs->written : fs->done + 1);
        fs->stop = true;
        pthread_cond_signal(&fs->cv);
        pthread_mutex_unlock(&fs->mu);
        pthread_join(fs->thread, NULL);
        wr_loop_fd_del(fs->lp, fs->efd);
        close(fs->efd);
        fs_hear(fs);
    } else {
        fs->durable = fs->durable_ok = fs->written;
    }
    fs_complete(fs);
    /* Anything still pending waited for writes counted after the last round: none can be,
     * but a callback that wrote while being completed is told the truth. */
    while (fs->head < fs->n) {
        struct fs_waiter w = fs->waiters[fs->head++];
        w.cb(w.data, WR_EIO);
    }
    for (size_t i = 0; i < fs->nfiles; i++)
        close(fs->files[i].dup);
    for (size_t i = 0; i < fs->nonce; i++)
        close(fs->once[i].dup);
    free(fs->files);
    free(fs->once);
    free(fs->scratch);
    free(fs->waiters);
    pthread_mutex_destroy(&fs->mu);
    pthread_cond_destroy(&fs->cv);
    free(fs);
}

int wr_fsync_file_add(struct wr_fsync *fs, int fd, struct wr_error *err)
{
    if (fs->policy == WR_FSYNC_NEVER)
        return WR_OK;
    int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
        return wr_error_sys(err, WR_EIO, "cannot duplicate a file descriptor for syncing");
    pthread_mutex_lock(&fs->mu);
    if (fs->nfiles == fs->capfiles) {
        size_t cap = fs->capfiles ? fs->capfiles * 2 : 4;
        struct fs_file *grown = realloc(fs->files, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&fs->mu);
            close(dup_fd);
            return wr_error_set(err, WR_ENOMEM, "out of memory");
        }
        fs->files = grown;
        fs->capfiles = cap;
    }
    fs->files[fs->nfiles++] = (struct fs_file){fd, dup_fd};
    pthread_mutex_unlock(&fs->mu);
    return WR_OK;
}

/* Queues dup for one sync; called under mu. A failure fails later requests instead. */
static void fs_once_locked(struct wr_fsync *fs, int dup, bool dir)
{
    if (dup >= 0 && fs->nonce == fs->caponce) {
        size_t cap = fs->caponce ? fs->caponce * 2 : 4;
        struct fs_once *grown = realloc(fs->once, cap * sizeof *grown);
        if (grown) {
            fs->once = grown;
            fs->caponce = cap;
        }
    }
    if (dup >= 0 && fs->nonce < fs->caponce) {
        fs->once[fs->nonce++] = (struct fs_once){dup, dir};
        return;
    }
    if (dup >= 0)
        close(dup);
    fs->sync_status = WR_EIO;
}

void wr_fsync_file_retire(struct wr_fsync *fs, int fd)
{
    if (fs->policy == WR_FSYNC_NEVER)
        return;
    pthread_mutex_lock(&fs->mu);
    int dup = -1;
    for (size_t i = 0; i < fs->nfiles; i++) {
        if (fs->files[i].fd == fd) {
            dup = fs->files[i].dup;
            fs->files[i] = fs->files[--fs->nfiles];
            break;
        }
    }
    if (dup < 0)
        dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    fs_once_locked(fs, dup, false);
    pthread_mutex_unlock(&fs->mu);
}

void wr_fsync_dir_changed(struct wr_fsync *fs, int dir_fd)
{
    if (fs->policy == WR_FSYNC_NEVER)
        return;
    int dup = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    pthread_mutex_lock(&fs->mu);
    fs_once_locked(fs, dup, true);
    pthread_mutex_unlock(&fs->mu);
}

void wr_fsync_wrote(struct wr_fsync *fs)
{
    fs->written++;
    if (fs->policy == WR_FSYNC_NEVER)
        fs->durable = fs->durable_ok = fs->written;
    else if (fs->policy == WR_FSYNC_INTERVAL && !fs->timer)
        fs->timer = wr_loop_timer_add(fs->lp, fs->interval_ms, fs_tick, fs);
}

int wr_fsync_wait(struct wr_fsync *fs, wr_storage_sync_cb *cb, void *data)
{
    if (fs->n == fs->cap && fs->head > 0) {
        memmove(fs->waiters, fs->waiters + fs->head, (fs->n - fs->head) * sizeof *fs->waiters);
        fs->n -= fs->head;
        fs->head = 0;
    }
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 8;
        struct fs_waiter *grown = realloc(fs->waiters, cap * sizeof *grown);
        if (!grown)
            return WR_ENOMEM;
        fs->waiters = grown;
        fs->cap = cap;
    }
    if (fs->written <= fs->durable) {
        if (!fs->deferred) {
            if (wr_loop_defer(fs->lp, fs_deferred, fs) != WR_OK)
                return WR_ENOMEM;
            fs->deferred = true;
        }
    } else if (fs->policy == WR_FSYNC_ALWAYS || hurrying) {
        fs_request(fs);
    } else if (!fs->timer) { /* interval: the next tick covers it */
        fs->timer = wr_loop_timer_add(fs->lp, fs->interval_ms, fs_tick, fs);
        if (!fs->timer)
            return WR_ENOMEM;
    }
    fs->waiters[fs->n++] = (struct fs_waiter){fs->written, cb, data};
    return WR_OK;
}
