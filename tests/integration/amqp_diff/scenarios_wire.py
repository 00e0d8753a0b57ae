"""scenarios_wire.py: what a client library would never send, over raw sockets: wrong protocol
headers, garbage, oversized and malformed frames, frames out of order or on the wrong channel,
bad handshakes, and every field-table tag. Also: other clients carry on while bad ones are
cut off, and the broker closes connections with 320 when it shuts down (run last)."""
import socket
import struct
import time

import pika

import wire
from context import scenario

OPEN_OK = "connection.open-ok"


def opened(t, channel=1, **kw):
    """A raw connection, handshaken, with `channel` open."""
    c = t.raw(**kw)
    reply = c.open_channel(channel)
    if reply.name != "channel.open-ok":
        raise AssertionError("channel.open: %r" % (reply,))
    return c


def reply_to_header(t, header):
    c = t.raw(handshake=False)
    c.send(header)
    t.ev("header", header.decode("latin-1"), "reply", c.read_bytes(8, 3).decode("latin-1"))
    t.raw_close(c)


@scenario
def protocol_header_mismatch(t):
    for header in (b"AMQP\x00\x00\x09\x02", b"AMQP\x00\x00\x08\x00", b"AMQP\x00\x01\x00\x00",
                   b"AMQP\x03\x01\x00\x00", b"HTTP/1.1", b"garbage!"):
        reply_to_header(t, header)


@scenario
def protocol_header_0_9_accepted(t):
    # RabbitMQ takes the AMQP 0-9 header as 0-9-1.
    c = t.raw(handshake=False)
    reply = c.handshake(header=b"AMQP\x01\x01\x00\x09")
    t.ev("handshake", reply.name if isinstance(reply, wire.Method) else reply)


@scenario
def connection_start_and_tune(t):
    c = t.raw(handshake=False)
    c.send(wire.PROTOCOL_HEADER)
    start = c.read_method()
    a = start.args
    # product, version, platform, copyright, information and cluster_name name the
    # implementation; what clients act on is the version, the mechanisms and capabilities.
    t.ev("connection.start", a["version_major"], a["version_minor"],
         sorted(a["mechanisms"].decode().split()), a["locales"].decode(),
         a["server_properties"].get("capabilities"))
    c.send_method(0, "connection.start-ok", client_properties={}, mechanism="PLAIN",
                  response=b"\0guest\0guest", locale="en_US")
    tune = c.read_method()
    t.ev(tune.name, tune.args)
    c.send_method(0, "connection.tune-ok", channel_max=tune.args["channel_max"],
                  frame_max=tune.args["frame_max"], heartbeat=0)
    c.send_method(0, "connection.open", virtual_host="/")
    t.method(c.read_method())
    c.send_method(0, "connection.close", reply_code=200, reply_text="bye")
    t.method(c.read_method())


@scenario
def frame_max_4096_works(t):
    # 4096 is the spec's frame-min-size: a client may negotiate it (RabbitMQ 4.1 raised its
    # own minimum to 8192; 3.10, the reference here, takes 4096).
    c = opened(t, frame_max=4096)
    q = t.n("q")
    c.send_method(1, "queue.declare", queue=q)
    t.method(c.read_method())
    c.publish(1, "", q, bytes(range(256)) * 40)  # 10240 bytes: three body frames
    c.send_method(1, "basic.get", queue=q, no_ack=True)
    t.ev(c.read_method().name)
    props, body = c.read_message()
    t.ev("body", len(body), body == bytes(range(256)) * 40)


@scenario
def garbage_after_handshake_501(t):
    c = t.raw()
    c.send(b"\x99garbage garbage garbage")
    # RabbitMQ's text prints the frame as Erlang terms ("type 153, all octets = <<>>:
    # {frame_too_large,...}"): only the code and the constant name are comparable.
    t.raw_close(c, text="name")


@scenario
def oversized_frame_501(t):
    c = opened(t)
    c.send(wire.frame(1, 1, wire.method_payload("queue.declare", queue="q") + b"x" * 200000))
    t.raw_close(c, text="name")  # Erlang terms in the text, as above
    # Over a small negotiated frame_max: a body frame past it. (Not at the edge: RabbitMQ
    # accepts payloads up to frame_max bytes, 8 more than the spec's frame_max - 8.)
    c = opened(t, frame_max=8192)
    c.send_method(1, "basic.publish", exchange="", routing_key="q")
    c.send(wire.frame(2, 1, wire.header_payload(9000)) + wire.frame(3, 1, b"a" * 9000))
    t.raw_close(c, text="name")


@scenario
def wrong_frame_end_501(t):
    c = opened(t)
    c.send(wire.frame(1, 1, wire.method_payload("queue.declare", queue=t.n("q")), end=0))
    t.raw_close(c, text="name")  # "{invalid_frame_end_marker,0}": Erlang terms


@scenario
def unknown_frame_type_501(t):
    c = opened(t)
    c.send(wire.frame(9, 1, b""))
    t.raw_close(c, text="name")  # "type 9, all octets = <<>>: unknown_frame"


@scenario
def truncated_method_501(t):
    c = opened(t)
    c.send(wire.frame(1, 1, b"\x00\x32\x00\x0a\x00"))  # queue.declare cut after 1 byte
    t.raw_close(c, text="name")  # "cannot decode <<0>>": Erlang terms


@scenario
def malformed_utf8_shortstr_501(t):
    c = opened(t)
    c.send_method(1, "queue.declare", queue=b"\xff\xfe")
    t.raw_close(c)


@scenario
def content_without_publish_505(t):
    c = opened(t)
    c.send(wire.frame(2, 1, wire.header_payload(3)))
    t.raw_close(c)
    c = opened(t)
    c.send(wire.frame(3, 1, b"abc"))
    t.raw_close(c)


@scenario
def method_inside_content_505(t):
    c = opened(t)
    c.send_method(1, "basic.publish", exchange="", routing_key="q")
    c.send(wire.frame(2, 1, wire.header_payload(3)))
    c.send_method(1, "basic.qos", prefetch_count=1)
    t.raw_close(c)
    c = opened(t)
    c.send_method(1, "basic.publish", exchange="", routing_key="q")
    c.send_method(1, "basic.qos", prefetch_count=1)
    t.raw_close(c)


@scenario
def content_header_wrong_class_505(t):
    c = opened(t)
    c.send_method(1, "basic.publish", exchange="", routing_key="q")
    c.send(wire.frame(2, 1, wire.header_payload(3, class_id=50)) + wire.frame(3, 1, b"abc"))
    t.raw_close(c)


@scenario
def heartbeat_on_channel_1_505(t):
    c = opened(t)
    c.send(wire.frame(8, 1, b""))
    t.raw_close(c, text="name")  # "type 8, all octets = <<>>": Erlang terms


@scenario
def body_longer_than_declared(t):
    c = opened(t)
    c.send_method(1, "queue.declare", queue=t.n("q"))
    c.read_method()
    c.send_method(1, "basic.publish", exchange="", routing_key=t.n("q"))
    c.send(wire.frame(2, 1, wire.header_payload(3)) + wire.frame(3, 1, b"abcdef"))
    c.send_method(1, "basic.get", queue=t.n("q"), no_ack=True)
    # RabbitMQ 3.10 keeps waiting for body frames after a body overshoots its size and
    # fails only at the next method (505); a broker that refuses the overshoot at once
    # (501/505) is as right. What must hold: a hard error closes the connection, and the
    # message is not delivered.
    end = time.monotonic() + 3
    outcome = "no close"
    while time.monotonic() < end:
        try:
            f = c.read(end - time.monotonic())
        except (wire.Eof, wire.Timeout):
            break
        if isinstance(f, wire.Method) and f.name == "connection.close":
            code = f.args["reply_code"]
            outcome = "connection.close %s" % ("5xx" if 500 <= code < 600 else code)
            c.send_method(0, "connection.close-ok")
            break
        outcome = "unexpected %r" % (f if not isinstance(f, wire.Method) else f.name,)
    t.ev(outcome)
    c2 = opened(t)
    c2.send_method(1, "queue.declare", queue=t.n("q"), passive=True)
    t.method(c2.read_method())


@scenario
def double_channel_open_504(t):
    c = opened(t)
    c.send_method(1, "channel.open")
    t.raw_close(c)


@scenario
def method_before_channel_open_504(t):
    c = t.raw()
    c.send_method(1, "queue.declare", queue=t.n("q"))
    t.raw_close(c)


@scenario
def frame_on_closed_channel_504(t):
    c = opened(t)
    c.send_method(1, "channel.close", reply_code=200)
    t.method(c.read_method())
    c.send_method(1, "queue.declare", queue=t.n("q"))
    t.raw_close(c)


@scenario
def frames_after_channel_error_are_discarded(t):
    c = opened(t)
    c.send_method(1, "queue.declare", queue=t.n("missing"), passive=True)
    close = c.read_method()
    t.ev(close.name, close.args["reply_code"], close.args["reply_text"])
    # Until close-ok, the broker drops what else arrives on the channel.
    c.publish(1, "", t.n("q"), b"dropped")
    c.send_method(1, "queue.declare", queue=t.n("also-dropped"))
    c.send_method(1, "channel.close-ok")
    t.method(c.open_channel(1))
    c.send_method(1, "queue.declare", queue=t.n("also-dropped"), passive=True)
    t.raw_close(c)


@scenario
def channel_methods_on_channel_0_504(t):
    for name, args in (("channel.open", {}), ("queue.declare", {"queue": t.n("q")}),
                       ("basic.publish", {"routing_key": "x"})):
        c = t.raw()
        c.send_method(0, name, **args)
        t.raw_close(c)


@scenario
def connection_methods_on_channel_1_503(t):
    c = opened(t)
    c.send_method(1, "connection.open", virtual_host="/")
    t.raw_close(c)
    c = opened(t)
    c.send_method(1, "channel.close-ok")  # nothing to acknowledge
    t.raw_close(c)
    c = t.raw()
    c.send_method(0, "connection.open", virtual_host="/")  # again
    t.raw_close(c)


@scenario
def undecodable_frames_end_connection(t):
    # RabbitMQ 3.10 crashes the connection process on an unknown class or method id, or an
    # unknown field-table tag in method arguments, and drops the socket without a
    # connection.close; an unknown tag in a content header's table gets 541 INTERNAL_ERROR.
    # A broker that answers with a proper close (501, 502, 503 or 540) is better, so only
    # "the connection ends" is compared, and that other connections carry on.
    bad_table = struct.pack(">I", 4) + b"\x01aZ\x00"
    declare = (b"\x00\x32\x00\x0a" + b"\x00\x00" + wire.enc_shortstr(t.n("q")) + b"\x00" +
               bad_table)
    header = struct.pack(">HHQH", 60, 0, 3, 0x2000) + bad_table
    cases = [("unknown method", [wire.frame(1, 1, b"\x00\x32\x00\x63")]),
             ("unknown class", [wire.frame(1, 1, b"\x00\x99\x00\x0a")]),
             ("unknown tag in arguments", [wire.frame(1, 1, declare)]),
             ("unknown tag in headers",
              [wire.frame(1, 1, wire.method_payload("basic.publish", routing_key="q")),
               wire.frame(2, 1, header), wire.frame(3, 1, b"abc")])]
    for what, frames in cases:
        c = opened(t)
        c.send(b"".join(frames))
        end = time.monotonic() + 3
        ended = False
        while time.monotonic() < end and not ended:
            try:
                f = c.read(end - time.monotonic())
            except wire.Eof:
                ended = True
            except wire.Timeout:
                break
            else:
                if isinstance(f, wire.Method) and f.name == "connection.close":
                    c.send_method(0, "connection.close-ok")
                    ended = True
        t.ev(what, "connection ended", ended)
    c = opened(t)
    t.method(c.open_channel(2))


@scenario
def not_implemented_540(t):
    c = opened(t)
    c.send_method(1, "channel.flow", active=True)
    t.method(c.read_method())
    c.send_method(1, "channel.flow", active=False)
    t.raw_close(c)
    c = opened(t)
    c.send_method(1, "basic.publish", exchange="", routing_key="q", immediate=True)
    c.send_content(1, b"now")
    t.raw_close(c)


@scenario
def channel_max_530(t):
    c = t.raw(channel_max=2)
    for ch in (1, 2):
        t.method(c.open_channel(ch))
    c.send_method(3, "channel.open")
    t.raw_close(c)
    # The limit counts open channels; a closed one frees its place.
    c = t.raw(channel_max=2)
    for ch in (1, 2):
        c.open_channel(ch)
    c.send_method(1, "channel.close", reply_code=200)
    t.method(c.read_method())
    t.method(c.open_channel(5))


@scenario
def vhost_not_found_530(t):
    for vhost, user, password in (("no-such-vhost", "guest", "guest"),
                                  ("other", "alice", "alice-pw")):
        c = t.raw(handshake=False)
        t.raw_close(c, first=c.handshake(vhost=vhost, user=user, password=password))


def bad_start_ok(t, response, mechanism="PLAIN", failure_close=True):
    """A connection that answers connection.start with this login."""
    c = t.raw(handshake=False)
    c.send(wire.PROTOCOL_HEADER)
    c.read_method()
    props = {"capabilities": {"authentication_failure_close": True}} if failure_close else {}
    c.send_method(0, "connection.start-ok", client_properties=props, mechanism=mechanism,
                  response=response, locale="en_US")
    return c


def bad_tune_ok(t, channel_max, frame_max):
    """A connection that answers connection.tune with these limits, then opens."""
    c = bad_start_ok(t, b"\0guest\0guest", failure_close=False)
    c.read_method()
    c.send_method(0, "connection.tune-ok", channel_max=channel_max, frame_max=frame_max)
    c.send_method(0, "connection.open", virtual_host="/")
    return c


@scenario
def handshake_failures(t):
    # RabbitMQ answers a refused login with 403 when the client has the
    # authentication_failure_close capability; otherwise, and for a malformed login or
    # limits out of range, it drops the socket without a word (after a pause that throttles
    # password guessing: all connections are set up first so the pauses overlap).
    cases = [("wrong password", bad_start_ok(t, b"\0guest\0wrong")),
             ("unknown user", bad_start_ok(t, b"\0nobody\0guest")),
             ("wrong password, no capability",
              bad_start_ok(t, b"\0guest\0wrong", failure_close=False)),
             ("PLAIN response without NULs", bad_start_ok(t, b"no nul separators")),
             ("unknown mechanism",
              bad_start_ok(t, b"\0guest\0guest", mechanism="NO-SUCH-MECHANISM")),
             ("frame_max 100", bad_tune_ok(t, 0, 100)),
             ("frame_max above the server's", bad_tune_ok(t, 0, 10 ** 8)),
             ("frame_max 0 (no limit)", bad_tune_ok(t, 0, 0)),
             ("channel_max above the server's", bad_tune_ok(t, 65535, 131072))]
    for what, c in cases:
        t.ev(what)
        t.raw_close(c, timeout=6)


@scenario
def amqplain_login(t):
    c = t.raw(handshake=False)
    c.send(wire.PROTOCOL_HEADER)
    c.read_method()
    # AMQPLAIN's response is a field table's entries without the table's length.
    response = wire.enc_table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]
    c.send_method(0, "connection.start-ok", client_properties={}, mechanism="AMQPLAIN",
                  response=response, locale="en_US")
    tune = c.read_method()
    t.ev(tune.name)
    c.send_method(0, "connection.tune-ok", channel_max=tune.args["channel_max"],
                  frame_max=tune.args["frame_max"], heartbeat=0)
    c.send_method(0, "connection.open", virtual_host="/")
    t.method(c.read_method())


@scenario
def client_close_gets_close_ok(t):
    c = opened(t)
    c.send_method(1, "channel.close", reply_code=200, reply_text="done")
    t.method(c.read_method())
    c.send_method(0, "connection.close", reply_code=200, reply_text="bye")
    t.method(c.read_method())


@scenario
def consumer_tag_generated(t):
    c = opened(t)
    c.send_method(1, "queue.declare", queue="", exclusive=True)
    ok = c.read_method()
    t.ev(ok.name, ok.args["queue"], ok.args["queue"].startswith("amq.gen-"))
    c.send_method(1, "basic.consume", queue=ok.args["queue"])
    ok = c.read_method()
    t.ev(ok.name, ok.args["consumer_tag"], ok.args["consumer_tag"].startswith("amq.ctag-"))
    c.send_method(1, "basic.consume", queue="", consumer_tag="own")  # "": last declared
    t.method(c.read_method())
    c.send_method(1, "basic.consume", queue="", consumer_tag="own")
    t.raw_close(c)


@scenario
def nowait_methods_get_no_reply(t):
    # Go's amqp091 and others set no-wait: the broker must answer nothing, and the next
    # synchronous method's reply must be the next frame.
    c = opened(t)
    ex, q = t.n("ex"), t.n("q")
    c.send_method(1, "exchange.declare", exchange=ex, type="direct", nowait=True)
    c.send_method(1, "queue.declare", queue=q, nowait=True)
    c.send_method(1, "queue.bind", queue=q, exchange=ex, routing_key="k", nowait=True)
    c.send_method(1, "confirm.select", nowait=True)
    c.send_method(1, "basic.consume", queue=q, consumer_tag="nw", no_ack=True, nowait=True)
    c.publish(1, ex, "k", b"routed")
    seen = []  # the delivery and the confirm, in either order
    for _ in range(2):
        f = c.read_method()
        if f.name == "basic.deliver":
            props, body = c.read_message()
            seen.append([f.name, f.args["consumer_tag"], f.args["routing_key"], body.decode()])
        else:
            seen.append([f.name, f.args])
    t.ev(sorted(seen, key=lambda e: e[0]))
    c.send_method(1, "basic.cancel", consumer_tag="nw", nowait=True)
    c.send_method(1, "queue.unbind", queue=q, exchange=ex, routing_key="k")
    t.method(c.read_method())
    c.send_method(1, "queue.delete", queue=q, nowait=True)
    c.send_method(1, "exchange.delete", exchange=ex, nowait=True)
    c.send_method(1, "queue.declare", queue=q, passive=True)
    t.raw_close(c)


@scenario
def basic_get_empty_and_last_queue(t):
    c = opened(t)
    c.send_method(1, "queue.declare", queue=t.n("q"))
    t.method(c.read_method())
    c.send_method(1, "basic.get", queue=t.n("q"))
    t.method(c.read_method())
    c.send_method(1, "basic.get", queue="")  # "" is the channel's last declared queue
    t.method(c.read_method())
    c2 = opened(t)
    c2.send_method(1, "basic.get", queue="")
    t.raw_close(c2)  # nothing declared on this channel yet


@scenario
def confirms_ack_and_nack_by_tag(t):
    # Which tags are acked or nacked is what counts; whether the broker folds them into
    # multiple=true acks is its choice, so the acks are expanded into single tags.
    c = opened(t)
    full, ok_q = t.n("full"), t.n("ok")
    c.send_method(1, "queue.declare", queue=full,
                  arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    c.read_method()
    c.send_method(1, "queue.declare", queue=ok_q)
    c.read_method()
    c.send_method(1, "confirm.select")
    t.method(c.read_method())
    targets = [ok_q, full, full, ok_q, "", full, ok_q, t.n("nowhere")]
    for q in targets:
        c.publish(1, "", q, b"x")
    settled = {}
    while len(settled) < len(targets):
        f = c.read_method()
        if f.name not in ("basic.ack", "basic.nack"):
            t.method(f)
            break
        tag = f.args["delivery_tag"]
        if f.args["multiple"]:  # every tag up to this one not settled yet
            for n in range(1, tag + 1):
                settled.setdefault(n, f.name)
        elif tag in settled:
            t.ev("settled twice", tag)
        else:
            settled[tag] = f.name
    t.ev("confirms", [settled.get(n) for n in range(1, len(targets) + 1)])


def tagged_table(entries):
    """A field table from (name, tag, encoded value) triples, tags chosen by the test."""
    body = b"".join(wire.enc_shortstr(n) + tag + v for n, tag, v in entries)
    return struct.pack(">I", len(body)) + body


@scenario
def field_table_tags_round_trip(t):
    inner = tagged_table([("n", b"b", struct.pack(">b", -1))])
    array = b"I" + struct.pack(">i", 7) + b"S" + wire.enc_longstr("s") + b"V"
    table = tagged_table([
        ("t", b"t", b"\x01"), ("b", b"b", struct.pack(">b", -5)),
        ("B", b"B", b"\xfa"), ("s", b"s", struct.pack(">h", -300)),
        ("u", b"u", struct.pack(">H", 60000)), ("I", b"I", struct.pack(">i", -70000)),
        ("i", b"i", struct.pack(">I", 4000000000)), ("l", b"l", struct.pack(">q", -2 ** 40)),
        ("f", b"f", struct.pack(">f", 1.5)), ("d", b"d", struct.pack(">d", -2.25)),
        ("D", b"D", b"\x02" + struct.pack(">i", 12345)), ("S", b"S", wire.enc_longstr("str")),
        ("x", b"x", wire.enc_longstr(b"\x00\xff")), ("T", b"T", struct.pack(">Q", 1700000000)),
        ("F", b"F", inner), ("A", b"A", struct.pack(">I", len(array)) + array),
        ("V", b"V", b"")])
    c = opened(t)
    q = t.n("q")
    c.send_method(1, "queue.declare", queue=q)
    c.read_method()
    c.send_method(1, "basic.publish", exchange="", routing_key=q)
    hdr = struct.pack(">HHQH", 60, 0, 4, 0x2000) + table
    c.send(wire.frame(2, 1, hdr) + wire.frame(3, 1, b"body"))
    c.send_method(1, "basic.get", queue=q, no_ack=True)
    got = c.read_method()
    t.ev(got.name)
    props, body = c.read_message(typed=True)
    t.ev("headers", props.get("headers"), body.decode())


@scenario
def heartbeat_timeout_closes(t):
    c = t.raw(heartbeat=1)
    c.open_channel(1)
    beats = 0
    end = time.monotonic() + 8
    outcome = "still open after 8 s"
    while time.monotonic() < end:
        try:
            f = c.read(end - time.monotonic())
        except wire.Eof:
            outcome = "eof"
            break
        except wire.Timeout:
            break
        if isinstance(f, wire.Method):
            outcome = f.name
            break
        beats += f[0] == "heartbeat"
    # The broker sends heartbeats while it waits for ours (how many depends on timing).
    t.ev("heartbeats received", beats > 0, outcome)


@scenario
def bad_clients_do_not_disturb_good_ones(t):
    good = t.pika()
    pub = good.channel()
    pub.confirm_delivery()
    q = t.n("q")
    pub.queue_declare(q)
    sub = t.pika().channel()
    got = []
    sub.basic_consume(q, lambda ch, m, p, b: (got.append(b), ch.basic_ack(m.delivery_tag)))
    attacks = [
        lambda c: c.send(b"\x01\x00\x01\xff\xff\xff\xffgarbage"),
        lambda c: c.send(wire.frame(1, 1, b"\x00\x3c\x00\x28" + b"\x00" * 100000)),
        lambda c: (c.send_method(1, "basic.publish", exchange="", routing_key=q),
                   c.send(wire.frame(2, 1, wire.header_payload(1000)) + b"\x03\x00\x01")),
        lambda c: c.send(wire.frame(1, 1, wire.method_payload("basic.publish")[:3])),
        lambda c: c.send(wire.frame(3, 1, b"body first")),
    ]
    for i in range(300):
        pub.basic_publish("", q, b"%03d" % i)
        if i % 30 == 0:
            bad = opened(t)
            attacks[(i // 30) % len(attacks)](bad)
            # Killed mid-conversation: an RST, not a polite close.
            bad.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            bad.close()
    t.pump(sub.connection, lambda: len(got) >= 300, timeout=10)
    t.ev("good consumer got", len(got), got == [b"%03d" % i for i in range(300)])
    t.ev("publisher open", good.is_open)


@scenario(last=True)
def broker_shutdown_closes_with_320(t):
    c = opened(t)
    idle = t.pika()
    t.target.stop()
    t.raw_close(c, timeout=30)
    try:
        idle.process_data_events(time_limit=1)
        t.ev("pika connection open", idle.is_open)
    except pika.exceptions.ConnectionClosedByBroker as exc:
        t.error(exc)
    except pika.exceptions.AMQPConnectionError as exc:
        t.ev("pika connection lost", type(exc).__name__)
