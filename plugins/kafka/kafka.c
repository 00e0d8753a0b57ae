/*
 * kafka.c: the `kafka` transport plugin: its descriptor and options, and the listening
 * socket. One start() makes one listener, with its group coordinator (group.c) and its
 * handlers' state (handlers.c); conn.c does everything a connection does.
 *
 * Accepting is as in the amqp091 transport: a non-blocking, level-triggered socket, a
 * bounded batch of accepts per event, and a pause when the process is out of descriptors.
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

#include "group.h"
#include "handlers.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100
#define DEFAULT_MAX_REQUEST_SIZE (100u << 20)

struct listener {
    struct kf_listener l; /* first: conn.h's view */
    uint64_t resume_timer;
};

static const struct wr_option kafka_options[] = {
    {"auto_create_topics", WR_OPT_BOOL, false,
     "create a topic (a log queue) when a client asks for an unknown one; default true"},
    {"default_partitions", WR_OPT_INT, false,
     "partitions of an auto-created topic; default 1"},
    {"max_request_size", WR_OPT_SIZE, false,
     "a larger request closes its connection; default 100MiB"},
    {"advertised_host", WR_OPT_STRING, false,
     "the host clients are told to connect to (Metadata); default the listener's host"},
    {"sasl", WR_OPT_STRING, false, "plain: clients authenticate with SASL PLAIN; default none"},
    {NULL, 0, false, NULL},
};

static int read_options(struct kf_listener *l, const char *host, const struct wr_table *opts,
                        struct wr_error *err)
{
    bool auto_create = true;
    int64_t partitions = 1, max_request = DEFAULT_MAX_REQUEST_SIZE;
    const char *s = NULL;
    size_t n = 0;
    wr_table_get_bool(opts, "auto_create_topics", &auto_create);
    wr_table_get_int(opts, "default_partitions", &partitions);
    wr_table_get_int(opts, "max_request_size", &max_request);
    if (partitions < 1 || partitions > 100000)
        return wr_error_set(err, WR_EINVAL,
                            "kafka: option default_partitions = %lld is out of range (1 to "
                            "100000)",
                            (long long)partitions);
    if (max_request < 1024 || max_request > INT32_MAX)
        return wr_error_set(err, WR_EINVAL,
                            "kafka: option max_request_size = %lld is out of range (1KiB to "
                            "2GiB)",
                            (long long)max_request);
    if (wr_table_get_str(opts, "sasl", &s, &n)) {
        if (n == 5 && !strncmp(s, "plain", 5))
            l->sasl_plain = true;
        else if (!(n == 4 && !strncmp(s, "none", 4)))
            return wr_error_set(err, WR_EINVAL, "kafka: option sasl = '%.*s': expected plain "
                                "or none", (int)n, s);
    }
    if (!wr_table_get_str(opts, "advertised_host", &s, &n)) {
        s = host;
        n = strlen(host);
    }
    if (n == 0 || n >= sizeof l->host)
        return wr_error_set(err, WR_EINVAL, "kafka: advertised host '%.*s' is empty or too long",
                            (int)n, s);
    memcpy(l->host, s, n);
    l->host[n] = 0;
    l->auto_create_topics = auto_create;
    l->default_partitions = (int32_t)partitions;
    l->max_request_size = (uint32_t)max_request;
    return WR_OK;
}

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

static int listen_on(struct kf_listener *l, const char *host, uint16_t port,
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
        return wr_error_set(err, WR_EINVAL, "kafka: cannot resolve '%s': %s", host,
                            gai_strerror(gai));
    int rc = WR_EIO;
    for (struct addrinfo *ai = res; ai && rc != WR_OK; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            rc = wr_error_sys(err, WR_EIO, "kafka: socket");
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0 ||
            getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
            rc = wr_error_sys(err, WR_EIO, "kafka: cannot listen on %s:%u", host, port);
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

static void resume_accepting(struct wr_loop *lp, void *data)
{
    struct listener *ls = data;
    ls->resume_timer = 0;
    wr_loop_fd_mod(lp, ls->l.fd, WR_READABLE, NULL);
}

static void pause_accepting(struct listener *ls, int error)
{
    struct kf_listener *l = &ls->l;
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
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int cfd = accept4(fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                pause_accepting(ls, errno);
            else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
                     errno != ECONNABORTED)
                wr_plog(ls->l.ctx, WR_LOG_WARN, "accept on port %u: %s", ls->l.port,
                        strerror(errno));
            return;
        }
        char peer[64];
        format_addr(&sa, peer, sizeof peer);
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        kf_conn_accept(&ls->l, cfd, peer);
    }
}

static void listener_free(struct listener *ls, bool registered)
{
    struct kf_listener *l = &ls->l;
    if (ls->resume_timer)
        wr_loop_timer_del(l->loop, ls->resume_timer);
    if (registered)
        wr_loop_fd_del(l->loop, l->fd);
    if (l->fd >= 0)
        close(l->fd);
    kf_handlers_free(l->handlers);
    kf_groups_free(l->groups);
    free(ls);
}

static void kafka_stop(void *state)
{
    struct listener *ls = state;
    struct kf_listener *l = &ls->l;
    l->stopping = true;
    if (l->n_conns)
        wr_plog(l->ctx, WR_LOG_INFO, "closing %u connection(s) on port %u", l->n_conns,
                l->port);
    wr_loop_fd_del(l->loop, l->fd);
    close(l->fd);
    l->fd = -1;
    kf_conn_close_all(l);
    listener_free(ls, false);
}

static int kafka_start(struct wr_plugin_ctx *ctx, const struct wr_listener_args *args,
                       void **state, struct wr_error *err)
{
    struct listener *ls = calloc(1, sizeof *ls);
    if (!ls)
        return wr_error_set(err, WR_ENOMEM, "kafka: out of memory");
    struct kf_listener *l = &ls->l;
    l->ctx = ctx;
    l->broker = wr_plugin_ctx_broker(ctx);
    l->loop = wr_plugin_ctx_loop(ctx);
    l->fd = -1;
    const char *host = args->host ? args->host : "127.0.0.1";
    int rc = read_options(l, host, args->options, err);
    if (rc == WR_OK)
        rc = listen_on(l, host, args->port, err);
    if (rc == WR_OK && !(l->handlers = kf_handlers_new(l)))
        rc = wr_error_set(err, WR_ENOMEM, "kafka: out of memory");
    if (rc == WR_OK)
        rc = kf_groups_new(l->broker, l->loop, wr_plugin_ctx_data_dir(ctx), &l->groups, err);
    if (rc == WR_OK)
        rc = wr_loop_fd_add(l->loop, l->fd, WR_READABLE, on_accept, ls, err);
    if (rc != WR_OK) {
        listener_free(ls, false);
        return rc;
    }
    wr_plog(ctx, WR_LOG_INFO,
            "listening on %s:%u (advertised %s, auto_create_topics %s, default_partitions %d, "
            "max_request_size %u, sasl %s)",
            host, l->port, l->host, l->auto_create_topics ? "true" : "false",
            l->default_partitions, l->max_request_size, l->sasl_plain ? "plain" : "none");
    *state = ls;
    return WR_OK;
}

static uint16_t kafka_port(void *state)
{
    return ((struct listener *)state)->l.port;
}

static const struct wr_transport_ops kafka_ops = {
    .size = sizeof(struct wr_transport_ops),
    .start = kafka_start,
    .stop = kafka_stop,
    .port = kafka_port,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_TRANSPORT, .name = "kafka", .version = WR_VERSION_STRING,
                 .options = kafka_options, .ops = &kafka_ops);
