/*
 * tcp_test.c: the transports' shared TCP plumbing (tcp.h), with real sockets on 127.0.0.1:
 * a listener hands over accepted sockets set up as the transports expect, a port in use is
 * refused with the message users see, accepting pauses (and resumes) when the process is
 * out of descriptors, and a connection's events and deferred settles reach its ops.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <warren/wr.h>

#include "testutil.h"

/* One connection as a transport would embed it, counting what reached its ops. */
struct test_conn {
    struct wr_tcp_conn tc;
    char in[64];
    size_t in_len;
    int writes, reads, settles;
    bool hung_up;
};

static struct tu_broker t;
static struct wr_plugin_ctx *ctx;
static struct wr_tcp_listener *tl;
static struct test_conn *conn;  /* the last connection made, NULL once it is freed */
static int accepted;
static char accepted_peer[64];
static int accepted_fd_flags, accepted_fd_cloexec, accepted_nodelay;

static void on_write(struct wr_tcp_conn *tc)
{
    ((struct test_conn *)tc)->writes++;
}

static void on_read(struct wr_tcp_conn *tc)
{
    struct test_conn *c = (struct test_conn *)tc;
    c->reads++;
    ssize_t n = recv(tc->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len, 0);
    if (n == 0)
        c->hung_up = true;
    else if (n > 0)
        c->in_len += (size_t)n;
}

static void on_settle(struct wr_tcp_conn *tc)
{
    struct test_conn *c = (struct test_conn *)tc;
    c->settles++;
    if (c->hung_up) {
        conn = NULL;
        wr_tcp_conn_free(tc);
    }
}

static const struct wr_tcp_conn_ops test_ops = {
    .write = on_write,
    .read = on_read,
    .settle = on_settle,
};

static void on_accept(struct wr_tcp_listener *listener, int fd, const char *peer, void *data)
{
    cr_assert_eq(data, &t);
    accepted++;
    snprintf(accepted_peer, sizeof accepted_peer, "%s", peer);
    accepted_fd_flags = fcntl(fd, F_GETFL);
    accepted_fd_cloexec = fcntl(fd, F_GETFD) & FD_CLOEXEC;
    int nodelay = 0;
    socklen_t len = sizeof nodelay;
    getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
    accepted_nodelay = nodelay;
    conn = (struct test_conn *)wr_tcp_conn_new(listener, sizeof *conn, fd, peer, &test_ops);
    cr_assert_not_null(conn);
}

static void setup(void)
{
    tu_broker_init(&t);
    struct wr_error err = {0};
    const char *const dirs[] = {WR_TEST_PLUGIN_DIR, NULL};
    cr_assert_eq(wr_broker_load_plugin(t.b, "amqp091", NULL, dirs, WR_PLUGIN_TRANSPORT, &ctx,
                                       &err),
                 WR_OK, "%s", err.msg);
    cr_assert_eq(wr_tcp_listener_new(ctx, "127.0.0.1", 0, on_accept, &t, &tl, &err), WR_OK,
                 "%s", err.msg);
    conn = NULL;
    accepted = 0;
}

static void teardown(void)
{
    if (conn)
        wr_tcp_conn_free(&conn->tc);
    wr_tcp_listener_free(tl);
    tu_broker_fini(&t);
}

TestSuite(tcp, .init = setup, .fini = teardown, .timeout = 30);

/* A blocking client socket connected to the listener; the handshake completes in the
 * kernel's backlog before anything is accepted. */
static int connect_client(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0, "%s", strerror(errno));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(wr_tcp_listener_port(tl)),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0, "%s", strerror(errno));
    return fd;
}

static bool was_accepted(void *data)
{
    (void)data;
    return accepted > 0;
}

static bool conn_gone(void *data)
{
    (void)data;
    return conn == NULL;
}

static bool got_input(void *data)
{
    return conn && conn->in_len >= strlen(data);
}

Test(tcp, binds_any_free_port_and_hands_over_sockets_set_up)
{
    cr_assert_neq(wr_tcp_listener_port(tl), 0);
    int client = connect_client();
    cr_assert(tu_wait(t.lp, was_accepted, NULL, 5000), "nothing was accepted");
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    cr_assert_eq(getsockname(client, (struct sockaddr *)&local, &len), 0);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%u", ntohs(local.sin_port));
    cr_assert_str_eq(accepted_peer, want);
    cr_assert(accepted_fd_flags & O_NONBLOCK, "the accepted socket blocks");
    cr_assert(accepted_fd_cloexec, "the accepted socket is not close-on-exec");
    cr_assert(accepted_nodelay, "the accepted socket has no TCP_NODELAY");

    cr_assert_eq(wr_tcp_listener_n_conns(tl), 1);
    cr_assert_eq(wr_tcp_listener_conns(tl), &conn->tc);
    cr_assert_str_eq(conn->tc.peer, want);
    char label[96];
    snprintf(label, sizeof label, "connection %s", want);
    cr_assert_str_eq(conn->tc.label, label);
    close(client);
}

Test(tcp, connection_events_reach_the_ops_and_a_hang_up_frees_it)
{
    int client = connect_client();
    cr_assert(tu_wait(t.lp, was_accepted, NULL, 5000), "nothing was accepted");
    cr_assert_eq(send(client, "hello", 5, 0), 5);
    cr_assert(tu_wait(t.lp, got_input, "hello", 5000), "the read op saw no input");
    cr_assert_str_eq(conn->in, "hello");
    cr_assert_geq(conn->settles, conn->reads, "an event ended without a settle");

    /* Write interest armed: the write op runs; disarmed: it stops. */
    wr_tcp_conn_watch(&conn->tc, WR_READABLE | WR_WRITABLE);
    cr_assert_eq(wr_loop_run_once(t.lp, 1000, NULL), WR_OK);
    cr_assert_geq(conn->writes, 1);
    wr_tcp_conn_watch(&conn->tc, WR_READABLE);
    cr_assert_eq(wr_loop_run_once(t.lp, 0, NULL), WR_OK);
    int writes = conn->writes;
    cr_assert_eq(wr_loop_run_once(t.lp, 50, NULL), WR_OK);
    cr_assert_eq(conn->writes, writes);

    close(client);
    cr_assert(tu_wait(t.lp, conn_gone, NULL, 5000), "the hang-up did not reach the ops");
    cr_assert_eq(wr_tcp_listener_n_conns(tl), 0);
    cr_assert_null(wr_tcp_listener_conns(tl));
}

Test(tcp, deferred_settles_run_once_after_the_dispatch)
{
    int client = connect_client();
    cr_assert(tu_wait(t.lp, was_accepted, NULL, 5000), "nothing was accepted");
    int settles = conn->settles;
    cr_assert_eq(wr_tcp_conn_defer(&conn->tc), WR_OK);
    cr_assert_eq(wr_tcp_conn_defer(&conn->tc), WR_OK);
    cr_assert_eq(conn->settles, settles, "a deferred settle ran at once");
    tu_drain(t.lp, 1000);
    cr_assert_eq(conn->settles, settles + 1);

    /* Inside an event (or a stretch the transport settles itself) nothing is deferred. */
    conn->tc.in_event = true;
    cr_assert_eq(wr_tcp_conn_defer(&conn->tc), WR_OK);
    conn->tc.in_event = false;
    tu_drain(t.lp, 1000);
    cr_assert_eq(conn->settles, settles + 1);

    /* A connection freed with a settle pending never hears of it. */
    cr_assert_eq(wr_tcp_conn_defer(&conn->tc), WR_OK);
    wr_tcp_conn_free(&conn->tc);
    conn = NULL;
    tu_drain(t.lp, 1000);
    close(client);
}

Test(tcp, a_port_in_use_is_refused_with_the_plugins_name)
{
    struct wr_tcp_listener *other = NULL;
    struct wr_error err = {0};
    uint16_t port = wr_tcp_listener_port(tl);
    cr_assert_eq(wr_tcp_listener_new(ctx, "127.0.0.1", port, on_accept, &t, &other, &err),
                 WR_EIO);
    cr_assert_null(other);
    char want[128];
    snprintf(want, sizeof want, "amqp091: cannot listen on 127.0.0.1:%u: %s", port,
             strerror(EADDRINUSE));
    cr_assert_str_eq(err.msg, want);
    cr_assert_eq(err.sys_errno, EADDRINUSE);
}

Test(tcp, stopping_refuses_new_connections_and_keeps_the_old)
{
    int client = connect_client();
    cr_assert(tu_wait(t.lp, was_accepted, NULL, 5000), "nothing was accepted");
    uint16_t port = wr_tcp_listener_port(tl);
    wr_tcp_listener_stop(tl);
    wr_tcp_listener_stop(tl);
    cr_assert_eq(wr_tcp_listener_port(tl), port);
    cr_assert_eq(wr_tcp_listener_n_conns(tl), 1);
    int late = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_neq(connect(late, (struct sockaddr *)&sa, sizeof sa), 0);
    cr_assert_eq(errno, ECONNREFUSED);
    close(late);
    close(client);
    cr_assert(tu_wait(t.lp, conn_gone, NULL, 5000), "the old connection lost its events");
}

/* Out of descriptors, accept fails while the socket stays readable: the listener stops
 * watching it for a moment instead of spinning, then accepts what waited. */
Test(tcp, accepting_pauses_when_descriptors_run_out)
{
    int client = connect_client();
    struct rlimit old;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
    /* The lowest free descriptor is the next one accept4 would get: make it one too many. */
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    cr_assert_geq(probe, 0);
    close(probe);
    struct rlimit low = {.rlim_cur = (rlim_t)probe, .rlim_max = old.rlim_max};
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &low), 0, "%s", strerror(errno));
    int rc = wr_loop_run_once(t.lp, 2000, NULL); /* the accept fails with EMFILE */
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
    cr_assert_eq(rc, WR_OK);
    cr_assert_eq(accepted, 0, "accepted past RLIMIT_NOFILE");

    uint64_t paused_at = wr_loop_now_ms(t.lp);
    cr_assert(tu_wait(t.lp, was_accepted, NULL, 5000), "accepting never resumed");
    uint64_t waited = wr_loop_now_ms(t.lp) - paused_at;
    cr_assert_geq(waited, 50, "accepted again after %llu ms: no pause",
                  (unsigned long long)waited);
    cr_assert_eq(wr_tcp_listener_n_conns(tl), 1);
    close(client);
}
