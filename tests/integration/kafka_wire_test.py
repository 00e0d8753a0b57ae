"""kafka_wire_test.py: bad input on the Kafka listener closes that connection and nothing
else; SASL PLAIN lets in the config's users only.

Raw sockets speak just enough of the protocol to send broken requests (framing: a big-endian
int32 size, then api_key, api_version, correlation_id, client_id): an ApiVersions version
warren does not serve gets the v0 answer with UNSUPPORTED_VERSION (35) and its ranges, as
Kafka does; an unknown api key, an oversized size prefix and a truncated Metadata request
each close their connection, while a client on another connection carries on. Then a
listener with `sasl: plain`: confluent-kafka with the right password produces and consumes,
with a wrong one it fails to authenticate, and without SASL it gets nothing.

    /usr/bin/python3 kafka_wire_test.py WARREN_BIN PLUGIN_DIR
"""
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402


def request(api_key, version, corr, body=b"", client=b"wire-test"):
    head = struct.pack(">hhih", api_key, version, corr, len(client)) + client
    return struct.pack(">i", len(head) + len(body)) + head + body


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(5)
    return s


def read_frame(s):
    """One response frame's bytes, or None when the server closed the connection."""
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (size,) = struct.unpack(">i", head)
    body = b""
    while len(body) < size:
        chunk = s.recv(size - len(body))
        if not chunk:
            return None
        body += chunk
    return body


def closed(s):
    """True once the server has closed s (bounded by the socket timeout)."""
    try:
        while True:
            if not s.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def api_versions_ok(port):
    s = connect(port)
    s.sendall(request(18, 0, 7))
    frame = read_frame(s)
    s.close()
    corr, error = struct.unpack(">ih", frame[:6])
    return corr == 7 and error == 0


def check_wire(port):
    bystander = connect(port)  # a good connection that must survive the others' errors

    s = connect(port)
    s.sendall(request(18, 9, 41))
    frame = read_frame(s)
    assert frame is not None, "ApiVersions v9: connection closed instead of error 35"
    corr, error, n = struct.unpack(">ihi", frame[:10])
    assert (corr, error) == (41, 35), (corr, error)
    keys = {struct.unpack(">hhh", frame[10 + 6 * i:16 + 6 * i])[0] for i in range(n)}
    assert {0, 1, 2, 3, 18} <= keys, keys
    print("ApiVersions v9: error 35 with %d ranges, correlation id kept" % n)
    s.close()

    for what, data in (("unknown api key 9999", request(9999, 0, 1)),
                       ("size prefix of 1 GiB", struct.pack(">i", 1 << 30) + b"\0" * 64),
                       ("truncated Metadata v1", request(3, 1, 2, struct.pack(">i", 5)))):
        s = connect(port)
        s.sendall(data)
        assert closed(s), "%s: the connection stayed open" % what
        print("%s: connection closed" % what)
        s.close()

    bystander.sendall(request(18, 0, 99))
    frame = read_frame(bystander)
    assert frame is not None and struct.unpack(">ih", frame[:6]) == (99, 0), \
        "the good connection was hurt by the others"
    bystander.close()
    assert api_versions_ok(port)
    print("a good connection carries on")


def sasl_conf(port, password):
    return {"bootstrap.servers": "127.0.0.1:%d" % port, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN", "sasl.username": "alice", "sasl.password": password}


def check_sasl(port):
    p = Producer(dict(sasl_conf(port, "alice-pw"), **{"acks": "all"}))
    p.produce("secured", b"for alice")
    assert p.flush(20) == 0, "the authenticated producer did not deliver"
    c = Consumer(dict(sasl_conf(port, "alice-pw"), **{"group.id": "g"}))
    c.assign([TopicPartition("secured", 0, 0)])
    got = None
    end = time.monotonic() + 20
    while got is None and time.monotonic() < end:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got = m.value()
    c.close()
    assert got == b"for alice", got
    print("SASL PLAIN alice: produced and consumed")

    errors, reports = [], []
    bad = Producer(dict(sasl_conf(port, "wrong"), **{"error_cb": errors.append,
                                                     "message.timeout.ms": 3000}))
    bad.produce("secured", b"not allowed", on_delivery=lambda err, m: reports.append(err))
    bad.flush(10)
    assert reports and reports[0] is not None, "a wrong password delivered: %r" % reports
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    print("SASL PLAIN wrong password: authentication refused, the record not delivered")

    s = connect(port)  # no SASL: a Metadata request without authenticating
    s.sendall(request(3, 1, 5, struct.pack(">i", -1)))
    assert read_frame(s) is None, "a Metadata request without SASL was answered"
    s.close()
    print("no SASL: closed")


def main(argv):
    binary, plugin_dir = argv[1], argv[2]
    with harness.Warren(binary, plugin_dir, kafka=True,
                        kafka_options="{auto_create_topics: true, max_request_size: 1MiB}") as w:
        check_wire(w.kafka_port)
    users = 'users:\n  - {name: alice, password: alice-pw, vhosts: ["/"]}\n'
    with harness.Warren(binary, plugin_dir, kafka=True, extra_yaml=users,
                        kafka_options="{auto_create_topics: true, sasl: plain}") as w:
        check_sasl(w.kafka_port)
    print("PASS kafka wire and SASL")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
