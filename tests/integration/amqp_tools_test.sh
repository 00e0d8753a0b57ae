#!/bin/bash
# amqp_tools_test.sh: warren's AMQP 0-9-1 transport driven by Debian's amqp-tools (the
# rabbitmq-c command-line clients), as a shell user would: declare, publish, get, consume,
# delete, message properties, and errors that exit non-zero with the server's reply text.
#
#   amqp_tools_test.sh WARREN_BIN PLUGIN_DIR PYTHON   starts warren on a free 127.0.0.1 port,
#                                                      runs the checks, stops it by its PID
#   amqp_tools_test.sh --port PORT PYTHON             against a broker already listening
#                                                      there (a private RabbitMQ)
#
# PYTHON is Debian's /usr/bin/python3: pika reads back the properties amqp-tools cannot show.
# Every client runs under `timeout`, every wait is a bounded loop on a condition.
set -u

if [ $# -eq 3 ] && [ "$1" = "--port" ]; then
    PORT=$2 PYTHON=$3 WARREN_PID=
elif [ $# -eq 3 ]; then
    WARREN_BIN=$1 PLUGIN_DIR=$2 PYTHON=$3
else
    sed -n '2,12p' "$0"
    exit 2
fi

PASSED=0 FAILED=0
WORK=$(mktemp -d /tmp/warren-tools-XXXXXX)
P="tools-$$-$RANDOM"                     # queue names unique to this run

pass() { PASSED=$((PASSED + 1)); echo "PASS $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL $1"; shift; printf '  %s\n' "$@"; }

# ---- the broker ---------------------------------------------------------------------------

start_warren() {
    PORT=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0));
print(s.getsockname()[1])')
    cat > "$WORK/warren.yaml" <<EOF
broker:
  data_dir: $WORK/data
  plugin_dirs: [$PLUGIN_DIR]
listeners:
  - {transport: amqp091, host: 127.0.0.1, port: $PORT}
EOF
    "$WARREN_BIN" "$WORK/warren.yaml" > "$WORK/warren.log" 2>&1 &
    WARREN_PID=$!
    local i
    for i in $(seq 1 300); do                  # 15 s
        if ! kill -0 "$WARREN_PID" 2> /dev/null; then
            wait "$WARREN_PID"
            echo "FAIL warren exited with status $? before listening:"; cat "$WORK/warren.log"
            exit 1
        fi
        if (exec 3<> "/dev/tcp/127.0.0.1/$PORT") 2> /dev/null; then
            return
        fi
        sleep 0.05
    done
    echo "FAIL nothing listens on 127.0.0.1:$PORT after 15 s"; cat "$WORK/warren.log"
    kill -KILL "$WARREN_PID"
    exit 1
}

# SIGTERM by PID; warren must exit 0 within 10 s.
stop_warren() {
    [ -n "$WARREN_PID" ] || return 0
    kill -TERM "$WARREN_PID"
    local i
    for i in $(seq 1 200); do
        kill -0 "$WARREN_PID" 2> /dev/null || break
        sleep 0.05
    done
    if kill -0 "$WARREN_PID" 2> /dev/null; then
        kill -KILL "$WARREN_PID"
        wait "$WARREN_PID"
        fail "warren exits within 10 s of SIGTERM" "it did not; killed"
    else
        wait "$WARREN_PID"
        local status=$?
        if [ "$status" -eq 0 ]; then pass "warren exits 0 on SIGTERM"
        else fail "warren exits 0 on SIGTERM" "exit status $status"; fi
        # A sanitizer build may report without failing the exit status.
        if grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$WORK/warren.log"; then
            fail "warren's log has no sanitizer report" \
                 "$(grep -m1 -E "ERROR: (Address|Leak)Sanitizer|runtime error:" \
                    "$WORK/warren.log")"
        fi
    fi
    WARREN_PID=
}

# ---- the clients --------------------------------------------------------------------------

# tool NAME ARGS...: runs an amqp-tools command against the broker; its stdout lands in
# $WORK/out, its stderr in $WORK/err, its exit status in RC.
tool() {
    local name=$1
    shift
    timeout 30 "amqp-$name" -s 127.0.0.1 --port "$PORT" "$@" > "$WORK/out" 2> "$WORK/err"
    RC=$?
}

# pika QUEUE PROGRAM: runs a Python snippet with ch (a channel) and q bound; prints what it
# prints. For what amqp-tools cannot observe: properties, consumer counts.
pika() {
    timeout 30 "$PYTHON" - "$PORT" "$1" <<EOF
import sys, time, pika
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", int(sys.argv[1])))
ch = conn.channel()
q = sys.argv[2]
$2
conn.close()
EOF
}

# expect_error WHAT CODE TEXT_START: the last tool call failed with the server's reply.
expect_error() {
    local what=$1 code=$2 text=$3 err
    err=$(cat "$WORK/err")
    if [ "$RC" -ne 0 ] && [[ "$err" == *"error $code, message: $text"* ]]; then
        pass "$what"
    else
        fail "$what" "expected a non-zero exit and 'error $code, message: $text...' on stderr" \
             "got exit $RC, stderr: $err"
    fi
}

# ---- the checks ---------------------------------------------------------------------------

check_declare() {
    tool declare-queue -q "$P.q"
    if [ "$RC" -eq 0 ] && [ "$(cat "$WORK/out")" = "$P.q" ]; then pass "declare a named queue"
    else fail "declare a named queue" "expected exit 0 and '$P.q'" \
              "got exit $RC, out '$(cat "$WORK/out")', err '$(cat "$WORK/err")'"; fi

    tool declare-queue -q ""
    local name
    name=$(cat "$WORK/out")
    if [ "$RC" -eq 0 ] && [ -n "$name" ]; then
        tool get -q "$name"
        if [ "$RC" -eq 2 ]; then pass "declare a server-named queue ($name)"
        else fail "declare a server-named queue" "amqp-get on '$name' should find it empty" \
                  "(exit 2), got exit $RC: $(cat "$WORK/err")"; fi
        tool delete-queue -q "$name"
    else
        fail "declare a server-named queue" "expected exit 0 and a name" \
             "got exit $RC, out '$name', err '$(cat "$WORK/err")'"
    fi
}

check_publish_get() {
    local n=50 i got=() bad=
    for i in $(seq 1 $n); do
        tool publish -r "$P.q" -b "message $i"
        [ "$RC" -eq 0 ] || { bad="amqp-publish $i exited $RC: $(cat "$WORK/err")"; break; }
    done
    for i in $(seq 1 $n); do
        [ -z "$bad" ] || break
        tool get -q "$P.q"
        [ "$RC" -eq 0 ] || { bad="amqp-get $i exited $RC: $(cat "$WORK/err")"; break; }
        [ "$(cat "$WORK/out")" = "message $i" ] ||
            bad="amqp-get $i: expected 'message $i', got '$(cat "$WORK/out")'"
    done
    if [ -z "$bad" ]; then
        tool get -q "$P.q"
        [ "$RC" -eq 2 ] || bad="amqp-get on the drained queue: expected exit 2, got $RC"
    fi
    if [ -z "$bad" ]; then pass "publish $n, get them back in order, then get-empty"
    else fail "publish $n, get them back in order, then get-empty" "$bad"; fi
}

check_consume() {
    local n=200
    seq 1 $n | sed 's/^/line /' > "$WORK/want"
    timeout 30 amqp-publish -s 127.0.0.1 --port "$PORT" -r "$P.q" -l < "$WORK/want" \
        2> "$WORK/err"
    RC=$?
    if [ "$RC" -ne 0 ]; then
        fail "amqp-publish -l of $n lines" "exit $RC: $(cat "$WORK/err")"
        return
    fi
    # Each delivery runs the command with the body (a line, with its newline) on its input.
    timeout 30 amqp-consume -s 127.0.0.1 --port "$PORT" -q "$P.q" -c $n -- cat \
        > "$WORK/got" 2> "$WORK/err"
    RC=$?
    if [ "$RC" -eq 0 ] && cmp -s "$WORK/want" "$WORK/got"; then
        pass "amqp-consume -c $n receives the $n lines of amqp-publish -l, in order"
    else
        fail "amqp-consume -c $n receives the $n lines of amqp-publish -l, in order" \
             "exit $RC (stderr: $(cat "$WORK/err"))" \
             "differences (want vs got): $(diff "$WORK/want" "$WORK/got" | head -5)"
    fi
    tool get -q "$P.q"
    if [ "$RC" -eq 2 ]; then pass "the consumed queue is empty (its acks were taken)"
    else fail "the consumed queue is empty" "amqp-get: expected exit 2, got $RC"; fi
}

check_consume_bound() {
    # With -e, amqp-consume declares the queue (auto-delete) and binds it to the exchange;
    # publish once it consumes.
    timeout 30 amqp-consume -s 127.0.0.1 --port "$PORT" -q "$P.bound" -e amq.direct \
        -r "$P.key" -c 3 -- sh -c 'cat; echo' > "$WORK/bound" 2> "$WORK/bound.err" &
    local consumer=$!
    local waited
    waited=$(pika "$P.bound" '
def consumers():
    global ch
    try:
        return ch.queue_declare(q, passive=True).method.consumer_count
    except pika.exceptions.ChannelClosedByBroker:   # not declared yet
        ch = conn.channel()
        return 0
deadline = time.monotonic() + 15
while consumers() < 1:
    if time.monotonic() > deadline:
        print("no consumer after 15 s")
        break
    time.sleep(0.02)')
    local i
    for i in 1 2 3; do tool publish -e amq.direct -r "$P.key" -b "routed $i"; done
    wait "$consumer"
    RC=$?
    local got
    got=$(cat "$WORK/bound")
    if [ -z "$waited" ] && [ "$RC" -eq 0 ] && [ "$got" = $'routed 1\nrouted 2\nrouted 3' ]; then
        pass "amqp-consume -e amq.direct -r KEY receives what is published to the exchange"
    else
        fail "amqp-consume -e amq.direct -r KEY receives what is published to the exchange" \
             "waiting for the consumer: ${waited:-ok}" \
             "expected exit 0 and 'routed 1..3', got exit $RC and '$got'" \
             "stderr: $(cat "$WORK/bound.err")"
    fi
}

check_properties() {
    tool publish -r "$P.q" -C application/json -E utf-8 -t "$P.replies" -p \
        -H "region: eu" -H "tier: gold" -b '{"order": 1}'
    if [ "$RC" -ne 0 ]; then
        fail "properties round-trip" "amqp-publish exited $RC: $(cat "$WORK/err")"
        return
    fi
    local got
    got=$(pika "$P.q" '
m, p, body = ch.basic_get(q, auto_ack=True)
print(m and (body, p.content_type, p.content_encoding, p.reply_to, p.delivery_mode,
             p.headers))')
    local want="(b'{\"order\": 1}', 'application/json', 'utf-8', '$P.replies', 2,"
    want+=" {'region': 'eu', 'tier': 'gold'})"
    if [ "$got" = "$want" ]; then pass "properties round-trip (-C, -E, -t, -p, -H twice)"
    else fail "properties round-trip (-C, -E, -t, -p, -H twice)" "expected $want" \
              "got      $got"; fi
}

check_delete() {
    local i
    for i in 1 2 3; do tool publish -r "$P.q" -b "left $i"; done
    tool delete-queue -q "$P.q" --if-empty
    expect_error "amqp-delete-queue --if-empty of a queue holding 3 fails" 406 \
        "PRECONDITION_FAILED"
    tool delete-queue -q "$P.q"
    if [ "$RC" -eq 0 ] && [ "$(cat "$WORK/out")" = 3 ]; then
        pass "amqp-delete-queue prints the 3 messages it deleted"
    else fail "amqp-delete-queue prints the 3 messages it deleted" \
              "got exit $RC, out '$(cat "$WORK/out")', err '$(cat "$WORK/err")'"; fi
    tool get -q "$P.q"
    expect_error "amqp-get from the deleted queue fails" 404 "NOT_FOUND - no queue '$P.q'"
}

check_errors() {
    tool get -q "$P.missing"
    expect_error "amqp-get from a missing queue fails" 404 "NOT_FOUND - no queue '$P.missing'"
    tool publish -e "$P.no-exchange" -r k -b x
    expect_error "amqp-publish to a missing exchange fails" 404 \
        "NOT_FOUND - no exchange '$P.no-exchange'"
    tool declare-queue -q amq.reserved
    expect_error "amqp-declare-queue of an amq.* name fails" 403 "ACCESS_REFUSED"
    tool get --password=wrong -q "$P.q"
    expect_error "a wrong password is refused" 403 "ACCESS_REFUSED"
}

[ -n "${WARREN_BIN:-}" ] && start_warren
check_declare
check_publish_get
check_consume
check_consume_bound
check_properties
check_delete
check_errors
stop_warren
if [ "$FAILED" -ne 0 ] && [ -f "$WORK/warren.log" ]; then
    echo "warren's log (last 80 lines):"
    tail -n 80 "$WORK/warren.log" | sed 's/^/    /'
fi
rm -rf "$WORK"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
