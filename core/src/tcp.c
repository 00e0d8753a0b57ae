/*
 * tcp.c: listening sockets and the connection skeleton the transports share (tcp.h).
 *
 * Accepting: the listening socket is non-blocking and level-triggered; each readable event
 * accepts a bounded batch. When the process runs out of descriptors (or the kernel out of
 * memory), the socket stays readable while every accept fails, so instead of spinning the
 * listener stops watching it and a timer resumes it a moment later.
 *
 * A connection's events run the transport's write and read ops and then its settle op, the
 * one place where it flushes, re-arms or frees itself. Output made outside an event (a
 * delivery, a completed request) asks for a deferred settle, so many small writes leave in
 * one batch before the loop sleeps.
 */
#include "warren/tcp.h"

#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "warren/loop.h"
#include "warren/plugin.h"

/* Connections accepted per readable event before the loop serves others. */
#define ACCEPT_BATCH 64
/* How long accepting pauses when the process is out of descriptors or memory. */
#define ACCEPT_PAUSE_MS 100

struct wr_tcp_listener {
    struct wr_plugin_ctx *ctx;
    struct wr_loop *lp;
    int fd;                 /* -1 once stopped */
    uint16_t port;
    wr_tcp_accept_cb *cb;
    void *data;
    uint64_t resume_timer;  /* accepting is paused until it fires (0: not paused) */
    struct wr_tcp_conn *conns;
    uint32_t n_conns;
};

/* ---- listener ------------------------------------------------------------------------- */

/* "host:port" of a socket address, "[v6]:port" for IPv6. */
static void format_addr(const struct sockaddr_storage *sa, char *out, size_t size)
{
    char host[NI_MAXHOST], port[NI_MAXSERV];
    if (getnameinfo((const struct sockaddr *)sa, sizeof *sa, host, sizeof host, port,
                    sizeof port, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, size, "?");
        return;
    }
    snprintf(out, size, sa->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Binds the first address of host that takes it. */
static int listen_on(struct wr_tcp_listener *tl, const char *host, uint16_t port,
                     struct wr_error *err)
{
    const char *name = wr_plugin_ctx_name(tl->ctx);
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return wr_error_set(err, WR_EINVAL, "%s: cannot resolve '%s': %s", name, host,
                            gai_strerror(gai));
    int rc = WR_EIO;
    for (struct addrinfo *ai = res; ai && rc != WR_OK; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = wr_error_sys(err, WR_EIO, "%s: socket", name);
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0 ||
            getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
            rc = wr_error_sys(err, WR_EIO, "%s: cannot listen on %s:%u", name, host, port);
            close(fd);
            continue;
        }
        tl->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                  : ((struct sockaddr_in *)&sa)->sin_port);
        tl->fd = fd;
        rc = WR_OK;
    }
    freeaddrinfo(res);
    return rc;
}

static void resume_accepting(struct wr_loop *lp, void *data)
{
    struct wr_tcp_listener *tl = data;
    tl->resume_timer = 0;
    wr_loop_fd_mod(lp, tl->fd, WR_READABLE, NULL);
}

static void pause_accepting(struct wr_tcp_listener *tl, int error)
{
    wr_plog(tl->ctx, WR_LOG_WARN, "accept on port %u: %s; pausing for %d ms", tl->port,
            strerror(error), ACCEPT_PAUSE_MS);
    if (wr_loop_fd_mod(tl->lp, tl->fd, 0, NULL) == WR_OK)
        tl->resume_timer = wr_loop_timer_add(tl->lp, ACCEPT_PAUSE_MS, resume_accepting, tl);
    if (!tl->resume_timer) /* no timer to resume it: keep accepting rather than stop */
        wr_loop_fd_mod(tl->lp, tl->fd, WR_READABLE, NULL);
}

static void on_accept(struct wr_loop *lp, int fd, int events, void *data)
{
    (void)lp, (void)events;
    struct wr_tcp_listener *tl = data;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int cfd = accept4(fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(tl, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                     errno != ECONNABORTED)
                wr_plog(tl->ctx, WR_LOG_WARN, "accept on port %u: %s", tl->port,
                        strerror(errno));
            return;
        }
        char peer[64];
        format_addr(&sa, peer, sizeof peer);
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        tl->cb(tl, cfd, peer, tl->data);
    }
}

int wr_tcp_listener_new(struct wr_plugin_ctx *ctx, const char *host, uint16_t port,
                        wr_tcp_accept_cb *cb, void *data, struct wr_tcp_listener **out,
                        struct wr_error *err)
{
    struct wr_tcp_listener *tl = calloc(1, sizeof *tl);
    if (!tl)
        return wr_error_set(err, WR_ENOMEM, "%s: out of memory", wr_plugin_ctx_name(ctx));
    tl->ctx = ctx;
    tl->lp = wr_plugin_ctx_loop(ctx);
    tl->fd = -1;
    tl->cb = cb;
    tl->data = data;
    int rc = listen_on(tl, host, port, err);
    if (rc == WR_OK)
        rc = wr_loop_fd_add(tl->lp, tl->fd, WR_READABLE, on_accept, tl, err);
    if (rc != WR_OK) {
        if (tl->fd >= 0)
            close(tl->fd);
        free(tl);
        return rc;
    }
    *out = tl;
    return WR_OK;
}

uint16_t wr_tcp_listener_port(const struct wr_tcp_listener *tl) { return tl->port; }
struct wr_tcp_conn *wr_tcp_listener_conns(const struct wr_tcp_listener *tl)
{
    return tl->conns;
}
uint32_t wr_tcp_listener_n_conns(const struct wr_tcp_listener *tl) { return tl->n_conns; }

void wr_tcp_listener_stop(struct wr_tcp_listener *tl)
{
    if (tl->fd < 0)
        return;
    if (tl->n_conns)
        wr_plog(tl->ctx, WR_LOG_INFO, "closing %u connection(s) on port %u", tl->n_conns,
                tl->port);
    if (tl->resume_timer)
        wr_loop_timer_del(tl->lp, tl->resume_timer);
    tl->resume_timer = 0;
    wr_loop_fd_del(tl->lp, tl->fd);
    close(tl->fd);
    tl->fd = -1;
}

void wr_tcp_listener_free(struct wr_tcp_listener *tl)
{
    if (!tl)
        return;
    assert(!tl->conns);
    wr_tcp_listener_stop(tl);
    free(tl);
}

/* ---- connection ----------------------------------------------------------------------- */

static void on_io(struct wr_loop *lp, int fd, int events, void *data)
{
    (void)lp, (void)fd;
    struct wr_tcp_conn *tc = data;
    tc->in_event = true;
    if (events & WR_WRITABLE)
        tc->ops->write(tc);
    if (events & WR_READABLE)
        tc->ops->read(tc);
    tc->in_event = false;
    tc->ops->settle(tc);
}

static void on_deferred_settle(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct wr_tcp_conn *tc = data;
    tc->settle_queued = false;
    tc->ops->settle(tc);
}

struct wr_tcp_conn *wr_tcp_conn_new(struct wr_tcp_listener *tl, size_t size, int fd,
                                    const char *peer, const struct wr_tcp_conn_ops *ops)
{
    assert(size >= sizeof(struct wr_tcp_conn));
    struct wr_tcp_conn *tc = calloc(1, size);
    struct wr_error err = {0};
    if (!tc) {
        wr_plog(tl->ctx, WR_LOG_ERROR, "connection %s: out of memory; closing", peer);
        close(fd);
        return NULL;
    }
    tc->tl = tl;
    tc->fd = fd;
    tc->ops = ops;
    tc->mask = WR_READABLE;
    snprintf(tc->peer, sizeof tc->peer, "%s", peer);
    snprintf(tc->label, sizeof tc->label, "connection %s", tc->peer);
    if (wr_loop_fd_add(tl->lp, fd, WR_READABLE, on_io, tc, &err) != WR_OK) {
        wr_plog(tl->ctx, WR_LOG_ERROR, "connection %s: %s; closing", peer, err.msg);
        close(fd);
        free(tc);
        return NULL;
    }
    tc->next = tl->conns;
    if (tl->conns)
        tl->conns->prev = tc;
    tl->conns = tc;
    tl->n_conns++;
    return tc;
}

void wr_tcp_conn_free(struct wr_tcp_conn *tc)
{
    if (!tc)
        return;
    struct wr_tcp_listener *tl = tc->tl;
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        tl->conns = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
    tl->n_conns--;
    if (tc->settle_queued)
        wr_loop_defer_cancel(tl->lp, on_deferred_settle, tc);
    wr_loop_fd_del(tl->lp, tc->fd);
    close(tc->fd);
    free(tc);
}

void wr_tcp_conn_watch(struct wr_tcp_conn *tc, int mask)
{
    if (mask != tc->mask && wr_loop_fd_mod(tc->tl->lp, tc->fd, mask, NULL) == WR_OK)
        tc->mask = mask;
}

int wr_tcp_conn_defer(struct wr_tcp_conn *tc)
{
    if (tc->in_event || tc->settle_queued)
        return WR_OK;
    if (wr_loop_defer(tc->tl->lp, on_deferred_settle, tc) != WR_OK)
        return WR_ENOMEM;
    tc->settle_queued = true;
    return WR_OK;
}

void wr_tcp_conn_vlog(const struct wr_tcp_conn *tc, enum wr_log_level level, const char *fmt,
                      va_list ap)
{
    if (!wr_log_enabled(level))
        return;
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    wr_plog(tc->tl->ctx, level, "%s: %s", tc->label, text);
}
