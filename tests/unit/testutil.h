/*
 * testutil.h: what the unit tests share: a broker with the built-in plugins loaded from
 * build/plugins, message builders, a bounded wait on a condition (never sleep-and-hope), and
 * running the `warren` executable with a deadline.
 *
 * Every helper fails the current Criterion test (cr_assert) when setup fails.
 */
#ifndef WARREN_TESTUTIL_H
#define WARREN_TESTUTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <warren/wr.h>

struct tu_broker {
    struct wr_loop *lp;
    struct wr_broker *b;
    struct wr_vhost *vh;  /* vhost "/" with the predeclared exchanges */
    char data_dir[256];   /* a fresh temporary directory, removed by tu_broker_fini */
};

/* A loop, a broker, the plugins direct, fanout, topic, headers and memory loaded from
 * WR_TEST_PLUGIN_DIR, and vhost "/". */
void tu_broker_init(struct tu_broker *t);
/* Frees everything tu_broker_init made. */
void tu_broker_fini(struct tu_broker *t);

/* A message with that routing key and body (NULL: empty) and headers (NULL: none). The
 * caller owns the reference. */
struct wr_msg *tu_msg(const char *routing_key, const char *body, const struct wr_table *headers);

/* Publishes a new message to the exchange named ex_name in t's vhost; returns wr_publish's
 * result (queues stored in). */
int tu_publish(struct tu_broker *t, const char *ex_name, const char *routing_key,
               const char *body, const struct wr_table *headers);

/* Declares a memory queue called name in t's vhost (asserting success). */
struct wr_queue *tu_queue(struct tu_broker *t, const char *name);

/* Declares an exchange of type in t's vhost (asserting success). */
struct wr_exchange *tu_exchange(struct tu_broker *t, const char *name, const char *type);

/* Binds / unbinds q to ex with key and args (NULL: none), asserting success. */
void tu_bind(struct wr_exchange *ex, struct wr_queue *q, const char *key,
             const struct wr_table *args);
void tu_unbind(struct wr_exchange *ex, struct wr_queue *q, const char *key,
               const struct wr_table *args);

/* The names of the queues a message with routing key rk and headers (NULL: none) reaches
 * from ex, sorted and joined with commas ("" for none). Valid until the next call. */
const char *tu_routed(struct wr_exchange *ex, const char *rk, const struct wr_table *headers);

/* Runs loop iterations until cond(data) is true or timeout_ms passes; returns cond's last
 * value. */
bool tu_wait(struct wr_loop *lp, bool (*cond)(void *data), void *data, int timeout_ms);

/* Runs deferred work until the loop is idle (no task pending), at most timeout_ms. */
void tu_drain(struct wr_loop *lp, int timeout_ms);

/* Takes the next ready message of q with basic.get semantics (no_ack) and returns its body
 * as a malloc'd NUL-terminated string, or NULL if q is empty. */
char *tu_get_body(struct wr_queue *q);

/* Writes text to a new file in a fresh temporary directory; returns its malloc'd path. */
char *tu_write_temp(const char *name, const char *text);
/* Deletes a file made by tu_write_temp and its directory, and frees path. */
void tu_remove_temp(char *path);

/* Runs argv (argv[0] a path) with stdout+stderr captured into a malloc'd string (*out),
 * killing it after timeout_ms. Returns its exit status (>= 0), 128+signal if killed by a
 * signal, or -1 on timeout. */
int tu_run(const char *const *argv, char **out, int timeout_ms);

/* Starts argv in the background with stdout+stderr going to log_path; returns its pid. */
pid_t tu_spawn(const char *const *argv, const char *log_path);
/* Waits for pid to exit, at most timeout_ms; returns its status as tu_run does. */
int tu_wait_exit(pid_t pid, int timeout_ms);
/* Reads a whole file into a malloc'd string (NULL if it cannot). */
char *tu_read_file(const char *path);

#endif
