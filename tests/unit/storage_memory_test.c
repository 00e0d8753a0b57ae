/*
 * storage_memory_test.c: the `memory` storage backend, loaded through the real plugin
 * loader and driven through its ops table as the broker drives it: the queue model's tests
 * (storage_queue_model.h: FIFO delivery, ack, requeue, purge, counts, the max-length limits
 * under drop-head and reject-publish, priority queues), and what only a queue held in memory
 * does.
 */
#include <criterion/criterion.h>

#include "storage_testutil.h"

#define QUEUE_MODEL_SUITE storage_memory
#include "storage_queue_model.h"

static void setup(void)
{
    queue_model_setup("memory");
    cr_assert_null(ops->sync, "memory is durable on return: no sync op");
}

TestSuite(storage_memory, .init = setup, .fini = storage_teardown, .timeout = 60);

/* The storage keeps the message itself, not a copy: there is no journal to read it back. */
Test(storage_memory, enqueue_takes_its_own_reference)
{
    void *q = open_plain();
    struct wr_msg *msg = make_msg("kept");
    cr_assert_eq(ops->enqueue(q, msg, NULL), WR_OK);
    cr_assert_eq(msg->refs, 2);
    uint64_t t = take(q, "kept", false);
    cr_assert_eq(ops->ack(q, t), WR_OK);
    cr_assert_eq(msg->refs, 1, "ack releases the storage's reference");
    cr_assert(body_is(msg, "kept"));
    wr_msg_unref(msg);
    ops->close(q);
}
