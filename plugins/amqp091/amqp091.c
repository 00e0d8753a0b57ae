/*
 * amqp091.c: the `amqp091` transport plugin: its descriptor and options, the listening
 * socket, and the broker's memory alarm relayed to every connection. One start() makes one
 * listener; conn.c does everything a connection does.
 *
 * Accepting: the listening socket is non-blocking and level-triggered; each readable event
 * accepts a bounded batch so one busy listener cannot starve the loop. When the process runs
 * out of file descriptors, accepting pauses for a moment instead of spinning on an event that
 * stays ready.
 */
#include "conn.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEFAULT_CHANNEL_MAX 2047
#define DEFAULT_FRAME_MAX (128u * 1024)
#define DEFAULT_HEARTBEAT_MS 60000
/* Connections accepted per readable event before the loop serves others. */
#define ACCEPT_BATCH 64
/* How long accepting pauses when the process is out of descriptors or memory. */
#define ACCEPT_PAUSE_MS 100
/* frame_max above this is refused: frames are buffered whole. */
#define FRAME_MAX_LIMIT (1u << 30)

struct listener {
    struct amqp_listener l; /* first: conn.h's view */
    uint64_t resume_timer;  /* accepting is paused until it fires (0: not paused) */
};

static const struct wr_option amqp_options[] = {
    {"channel_max", WR_OPT_INT, false,
     "highest channel number offered in connection.tune (default 2047; 0: 65535)"},
    {"frame_max", WR_OPT_SIZE, false,
     "largest frame offered in connection.tune (default 128KiB, at least 8KiB)"},
    {"heartbeat", WR_OPT_DURATION, false,
     "heartbeat interval offered in connection.tune, whole seconds (default 60s; 0: off)"},
    {"max_connections", WR_OPT_INT, false,
     "connections accepted at once; more are closed on arrival (default 0: no limit)"},
    {NULL, 0, false, NULL},
};

/* An integer option in [min, max], or def when absent. */
static int option(const struct wr_table *opts, const char *name, int64_t def, int64_t min,
                  int64_t max, int64_t *out, struct wr_error *err)
{
    int64_t v = def;
    if (wr_table_get(opts, name) && !wr_table_get_int(opts, name, &v))
        return wr_error_set(err, WR_EINVAL, "amqp091: option %s: expected an integer", name);
    if (v < min || v > max)
        return wr_error_set(err, WR_EINVAL,
                            "amqp091: option %s = %lld is out of range (%lld to %lld)", name,
                            (long long)v, (long long)min, (long long)max);
    *out = v;
    return WR_OK;
}

static int read_options(struct amqp_listener *l, const struct wr_table *opts,
                        struct wr_error *err)
{
    int64_t channel_max = 0, frame_max = 0, heartbeat_ms = 0, max_connections = 0;
    int rc = option(opts, "channel_max", DEFAULT_CHANNEL_MAX, 0, UINT16_MAX, &channel_max,
                    err);
    if (rc == WR_OK)
        rc = option(opts, "frame_max", DEFAULT_FRAME_MAX, 0, FRAME_MAX_LIMIT, &frame_max, err);
    if (rc == WR_OK && frame_max < AMQP_FRAME_MIN_SIZE)
        rc = wr_error_set(err, WR_EINVAL,
                          "amqp091: option frame_max = %lld bytes is below AMQP's minimum frame "
                          "size, %d bytes (8KiB)",
                          (long long)frame_max, AMQP_FRAME_MIN_SIZE);
    if (rc == WR_OK)
        rc = option(opts, "heartbeat", DEFAULT_HEARTBEAT_MS, 0, UINT16_MAX * 1000LL,
                    &heartbeat_ms, err);
    if (rc == WR_OK && heartbeat_ms % 1000)
        rc = wr_error_set(err, WR_EINVAL,
                          "amqp091: option heartbeat = %lldms: AMQP counts heartbeats in whole "
                          "seconds",
                          (long long)heartbeat_ms);
    if (rc == WR_OK)
        rc = option(opts, "max_connections", 0, 0, UINT32_MAX, &max_connections, err);
    if (rc != WR_OK)
        return rc;
    l->channel_max = (uint16_t)channel_max;
    l->frame_max = (uint32_t)frame_max;
    l->heartbeat_s = (uint16_t)(heartbeat_ms / 1000);
    l->max_connections = (uint32_t)max_connections;
    return WR_OK;
}

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

static int listen_on(struct amqp_listener *l, const char *host, uint16_t port,
                     struct wr_error *err)
{
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0)
        return wr_error_set(err, WR_EINVAL, "amqp091: cannot resolve '%s': %s", host,
                            gai_strerror(gai));
    int rc = WR_EIO;
    for (struct addrinfo *ai = res; ai && rc != WR_OK; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = wr_error_sys(err, WR_EIO, "amqp091: socket");
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
            rc = wr_error_sys(err, WR_EIO, "amqp091: cannot listen on %s:%u", host, port);
            close(fd);
            continue;
        }
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
            rc = wr_error_sys(err, WR_EIO, "amqp091: getsockname");
            close(fd);
            continue;
        }
        l->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                                 : ((struct sockaddr_in *)&sa)->sin_port);
        l->fd = fd;
        rc = WR_OK;
    }
    freeaddrinfo(res);
    return rc;
}

static void on_accept(struct wr_loop *lp, int fd, int events, void *data);

static void resume_accepting(struct wr_loop *lp, void *data)
{
    struct listener *ls = data;
    ls->resume_timer = 0;
    wr_loop_fd_mod(lp, ls->l.fd, WR_READABLE, NULL);
}

static void pause_accepting(struct listener *ls, int error)
{
    struct amqp_listener *l = &ls->l;
    wr_plog(l->ctx, WR_LOG_WARN, "accept on port %u: %s; pausing for %d ms", l->port,
            strerror(error), ACCEPT_PAUSE_MS);
    if (wr_loop_fd_mod(l->loop, l->fd, 0, NULL) == WR_OK)
        ls->resume_timer = wr_loop_timer_add(l->loop, ACCEPT_PAUSE_MS, resume_accepting, ls);
    if (!ls->resume_timer)
        wr_loop_fd_mod(l->loop, l->fd, WR_READABLE, NULL);
}

static void on_accept(struct wr_loop *lp, int fd, int events, void *data)
{
    (void)lp, (void)events;
    struct listener *ls = data;
    struct amqp_listener *l = &ls->l;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int cfd = accept4(fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(ls, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                     errno != ECONNABORTED)
                wr_plog(l->ctx, WR_LOG_WARN, "accept on port %u: %s", l->port,
                        strerror(errno));
            return;
        }
        char peer[64];
        format_addr(&sa, peer, sizeof peer);
        if (l->max_connections && l->n_conns >= l->max_connections) {
            wr_plog(l->ctx, WR_LOG_WARN,
                    "refusing connection from %s: max_connections (%u) reached", peer,
                    l->max_connections);
            close(cfd);
            continue;
        }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_accept(l, cfd, peer);
    }
}

static void on_alarm(void *data, bool raised)
{
    struct amqp_listener *l = data;
    wr_plog(l->ctx, WR_LOG_WARN, "memory alarm %s on port %u", raised ? "raised" : "cleared",
            l->port);
    for (struct amqp_conn *c = l->conns, *next; c; c = next) {
        next = c->next;
        conn_alarm(c, raised);
    }
}

/* Frees a listener whose socket may or may not be open and registered. */
static void listener_free(struct listener *ls, bool registered)
{
    struct amqp_listener *l = &ls->l;
    if (ls->resume_timer)
        wr_loop_timer_del(l->loop, ls->resume_timer);
    if (registered)
        wr_loop_fd_del(l->loop, l->fd);
    if (l->fd >= 0)
        close(l->fd);
    if (l->alarm)
        wr_broker_alarm_unwatch(l->alarm);
    free(ls);
}

static void amqp_stop(void *state)
{
    struct listener *ls = state;
    struct amqp_listener *l = &ls->l;
    l->stopping = true;
    if (l->n_conns)
        wr_plog(l->ctx, WR_LOG_INFO, "closing %u connection(s) on port %u", l->n_conns,
                l->port);
    wr_loop_fd_del(l->loop, l->fd);
    close(l->fd);
    l->fd = -1;
    conn_close_all(l);
    listener_free(ls, false);
}

static int amqp_start(struct wr_plugin_ctx *ctx, const struct wr_listener_args *args,
                      void **state, struct wr_error *err)
{
    struct listener *ls = calloc(1, sizeof *ls);
    if (!ls)
        return wr_error_set(err, WR_ENOMEM, "amqp091: out of memory");
    struct amqp_listener *l = &ls->l;
    l->ctx = ctx;
    l->broker = wr_plugin_ctx_broker(ctx);
    l->loop = wr_plugin_ctx_loop(ctx);
    l->fd = -1;
    const char *host = args->host ? args->host : "127.0.0.1";
    int rc = read_options(l, args->options, err);
    if (rc == WR_OK)
        rc = listen_on(l, host, args->port, err);
    if (rc == WR_OK)
        rc = wr_loop_fd_add(l->loop, l->fd, WR_READABLE, on_accept, ls, err);
    if (rc != WR_OK) {
        listener_free(ls, false);
        return rc;
    }
    if (!(l->alarm = wr_broker_alarm_watch(l->broker, on_alarm, l))) {
        listener_free(ls, true);
        return wr_error_set(err, WR_ENOMEM, "amqp091: out of memory");
    }
    char limit[32] = "no limit";
    if (l->max_connections)
        snprintf(limit, sizeof limit, "%u", l->max_connections);
    wr_plog(ctx, WR_LOG_INFO,
            "listening on %s:%u (channel_max %u, frame_max %u, heartbeat %us, "
            "max_connections %s)",
            host, l->port, l->channel_max, l->frame_max, l->heartbeat_s, limit);
    *state = ls;
    return WR_OK;
}

static uint16_t amqp_port(void *state)
{
    return ((struct listener *)state)->l.port;
}

static const struct wr_transport_ops amqp_ops = {
    .size = sizeof(struct wr_transport_ops),
    .start = amqp_start,
    .stop = amqp_stop,
    .port = amqp_port,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_TRANSPORT, .name = "amqp091", .version = WR_VERSION_STRING,
                 .options = amqp_options, .ops = &amqp_ops);
