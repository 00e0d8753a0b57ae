"""scenarios_errors.py: the errors a well-formed client meets, through pika: channel errors
(403, 404, 405, 406), connection errors (503, 530, 540), with their exact reply texts, and
that the connection or channel that caused them is the only thing that closes."""
import pika
import pika.exceptions as pe

from context import scenario
from scenarios_basic import declare, declare_when


def fresh(conn):
    """A new channel: a channel error closes the one it happened on."""
    return conn.channel()


@scenario
def passive_declare_missing_404(t):
    conn = t.pika()
    t.expect_error(fresh(conn).queue_declare, t.n("missing"), passive=True)
    t.expect_error(fresh(conn).exchange_declare, t.n("missing"), passive=True)
    t.expect_error(fresh(conn).queue_bind, t.n("missing"), "amq.direct", "k")
    declare(t, fresh(conn), t.n("q"))
    t.expect_error(fresh(conn).queue_bind, t.n("q"), t.n("missing-ex"), "k")
    t.expect_error(fresh(conn).exchange_bind, t.n("missing"), "amq.direct", "k")
    t.expect_error(fresh(conn).basic_consume, t.n("missing"), lambda *a: None)
    t.expect_error(fresh(conn).basic_get, t.n("missing"))
    t.expect_error(fresh(conn).queue_purge, t.n("missing"))
    # The predeclared exchanges are there.
    for ex in ("amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"):
        t.expect_error(fresh(conn).exchange_declare, ex, passive=True)
    t.expect_error(fresh(conn).exchange_declare, "amq.rabbitmq.trace", passive=True)


@scenario
def publish_to_missing_exchange_404(t):
    conn = t.pika()
    ch = conn.channel()
    ch.basic_publish(t.n("missing"), "k", b"lost")
    # The error arrives asynchronously; the next synchronous call sees it.
    t.expect_error(ch.queue_declare, t.n("q"))
    ch = conn.channel()
    ch.confirm_delivery()
    t.expect_error(ch.basic_publish, t.n("missing"), "k", b"lost")
    t.ev("connection still open", conn.is_open)


@scenario
def inequivalent_queue_redeclare_406(t):
    conn = t.pika()
    q = declare(t, fresh(conn), t.n("q"), arguments={"x-max-length": 5})
    t.expect_error(fresh(conn).queue_declare, q, durable=True, arguments={"x-max-length": 5})
    t.expect_error(fresh(conn).queue_declare, q, auto_delete=True,
                   arguments={"x-max-length": 5})
    t.expect_error(fresh(conn).queue_declare, q, arguments={"x-max-length": 6})
    t.expect_error(fresh(conn).queue_declare, q)
    t.expect_error(fresh(conn).queue_declare, q, exclusive=True, arguments={"x-max-length": 5})
    declare(t, fresh(conn), q, arguments={"x-max-length": 5})
    # Passive ignores every other field.
    declare(t, fresh(conn), q, passive=True, durable=True)


@scenario
def inequivalent_exchange_redeclare_406(t):
    conn = t.pika()
    ex = t.n("ex")
    fresh(conn).exchange_declare(ex, "direct")
    t.expect_error(fresh(conn).exchange_declare, ex, "topic")
    t.expect_error(fresh(conn).exchange_declare, ex, "direct", durable=True)
    t.expect_error(fresh(conn).exchange_declare, ex, "direct", auto_delete=True)
    t.expect_error(fresh(conn).exchange_declare, ex, "direct", internal=True)
    t.expect_error(fresh(conn).exchange_declare, ex, "direct")
    t.expect_error(fresh(conn).exchange_declare, ex, "fanout", passive=True)
    t.expect_error(fresh(conn).exchange_declare, "amq.direct", "topic")
    t.expect_error(fresh(conn).exchange_declare, "amq.direct", "direct", durable=True)


@scenario
def reserved_names_403(t):
    conn = t.pika()
    t.expect_error(fresh(conn).exchange_declare, "amq.custom", "direct")
    t.expect_error(fresh(conn).queue_declare, "amq.custom")
    t.expect_error(fresh(conn).exchange_delete, "amq.direct")
    t.expect_error(fresh(conn).exchange_delete, "")
    t.expect_error(fresh(conn).exchange_declare, "", "direct")
    q = declare(t, fresh(conn), t.n("q"))
    t.expect_error(fresh(conn).queue_bind, q, "", q)
    t.expect_error(fresh(conn).queue_unbind, q, "", q)
    t.expect_error(fresh(conn).exchange_bind, "amq.fanout", "", "k")
    t.ev("connection still open", conn.is_open)


@scenario
def internal_exchange_publish_403(t):
    conn = t.pika()
    ch = conn.channel()
    ex, front = t.n("internal"), t.n("front")
    ch.exchange_declare(ex, "fanout", internal=True)
    ch.exchange_declare(front, "fanout")
    q = declare(t, ch, t.n("q"))
    ch.queue_bind(q, ex)
    ch.exchange_bind(ex, front)
    ch.confirm_delivery()
    ch.basic_publish(front, "", b"through the front")
    t.ev("published via a binding")
    t.expect_error(ch.basic_publish, ex, "", b"direct to internal")
    m, _, b = fresh(conn).basic_get(q, auto_ack=True)
    t.ev("queue got", b.decode() if m else None)


@scenario
def unknown_exchange_type_503(t):
    conn = t.pika()
    t.expect_error(conn.channel().exchange_declare, t.n("ex"), "no-such-type")
    t.ev("connection open", conn.is_open)
    conn = t.pika()
    t.expect_error(conn.channel().exchange_declare, t.n("ex"), "no-such-type", passive=True)


@scenario
def unknown_delivery_tags_406(t):
    conn = t.pika()
    for action in (lambda ch: ch.basic_ack(99), lambda ch: ch.basic_nack(7, requeue=False),
                   lambda ch: ch.basic_reject(3), lambda ch: ch.basic_ack(99, multiple=True)):
        ch = fresh(conn)
        action(ch)
        t.expect_error(ch.queue_declare, t.n("sync"))
    ch = fresh(conn)
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q)
    ch.basic_ack(m.delivery_tag)
    ch.basic_ack(m.delivery_tag)  # twice: the tag is no longer known
    t.expect_error(ch.queue_declare, q)
    # multiple=true with tag 0 acks everything outstanding and never fails.
    ch = fresh(conn)
    ch.basic_ack(0, multiple=True)
    t.expect_error(ch.queue_declare, q)
    # Acking a no-ack delivery is an unknown tag too.
    ch = fresh(conn)
    ch.confirm_delivery()
    ch.basic_publish("", q, b"y")
    m, _, _ = ch.basic_get(q, auto_ack=True)
    ch.basic_ack(m.delivery_tag)
    t.expect_error(ch.queue_declare, q)


@scenario
def user_id_must_match_406(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    ch.basic_publish("", q, b"ok", pika.BasicProperties(user_id="guest"))
    t.ev("published as guest")
    t.expect_error(ch.basic_publish, "", q, b"forged", pika.BasicProperties(user_id="alice"))


@scenario
def tx_and_confirm_mode_errors_406(t):
    conn = t.pika()
    t.expect_error(fresh(conn).tx_commit)
    t.expect_error(fresh(conn).tx_rollback)
    ch = fresh(conn)
    ch.confirm_delivery()
    t.expect_error(ch.tx_select)
    ch = fresh(conn)
    ch.tx_select()
    t.expect_error(ch.confirm_delivery)


@scenario
def qos_prefetch_size_540(t):
    conn = t.pika()
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10, global_qos=True)
    t.ev("qos global ok")
    t.expect_error(ch.basic_qos, prefetch_size=4096)
    t.ev("connection open", conn.is_open)


@scenario
def recover_without_requeue(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    ch.basic_publish("", q, b"x")
    m, _, _ = ch.basic_get(q)
    t.expect_error(ch.basic_recover, requeue=False)
    declare_when(t, t.pika(), q, 1)  # the unacked message, requeued


@scenario
def invalid_queue_arguments_406(t):
    conn = t.pika()
    for args in ({"x-max-length": "ten"}, {"x-max-length": -1}, {"x-message-ttl": -5},
                 {"x-overflow": "explode"}, {"x-expires": 0}, {"x-dead-letter-exchange": 5},
                 {"x-max-length-bytes": "big"}, {"x-queue-type": "quantum"}):
        t.expect_error(fresh(conn).queue_declare, t.n("q"), arguments=args)


@scenario
def connection_level_errors_spare_other_connections(t):
    victim = t.pika()
    bystander = t.pika()
    bch = bystander.channel()
    bch.confirm_delivery()
    q = declare(t, bch, t.n("q"))
    t.expect_error(victim.channel().exchange_declare, t.n("ex"), "no-such-type")
    bch.basic_publish("", q, b"still fine")
    m, _, b = bch.basic_get(q, auto_ack=True)
    t.ev("bystander", bystander.is_open, b.decode() if m else None)
    # A channel error leaves the connection's other channels alone.
    conn = t.pika()
    keep, doomed = conn.channel(), conn.channel()
    t.expect_error(doomed.queue_declare, t.n("missing"), passive=True)
    t.ev("other channel open", keep.is_open, "closed channel open", doomed.is_open)
    declare(t, keep, q, passive=True)


@scenario
def login_and_vhost_errors(t):
    for vhost, user, password in (("/", "guest", "wrong"), ("/", "nobody", "x"),
                                  ("no-such-vhost", "guest", "guest"),
                                  ("other", "alice", "alice-pw")):
        try:
            t.pika(vhost=vhost, user=user, password=password)
            t.ev("connected", vhost, user)
        except pe.ProbableAuthenticationError as exc:
            t.ev("ProbableAuthenticationError", str(exc))
        except pe.ProbableAccessDeniedError as exc:
            t.ev("ProbableAccessDeniedError", str(exc))
        except pe.AMQPConnectionError as exc:
            t.error(exc)
    conn = t.pika(vhost="other")
    t.ev("guest on other", conn.is_open)
    conn = t.pika(user="alice", password="alice-pw")
    t.ev("alice on /", conn.is_open)
