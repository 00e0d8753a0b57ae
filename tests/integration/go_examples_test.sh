#!/usr/bin/env bash
# The Go example service (examples/go, amqp091-go) against warren, as a user would run it:
# 1. the producer publishes 500 messages with confirms and the consumer prints each exactly
#    once;
# 2. SIGTERM while the consumer is busy with a slow message: it exits 0, the message in hand
#    was acked (a fresh consumer finds one message fewer and never sees it again), the
#    prefetched ones come back, and nothing is lost.
# Usage: go_examples_test.sh SOURCE_DIR WARREN_BIN WARREN_PLUGIN_DIR WARREN_PYTHON
set -euo pipefail
src=$1
export WARREN_BIN=$2 WARREN_PLUGIN_DIR=$3 WARREN_PYTHON=$4
# shellcheck source=SCRIPTDIR/amqp_go/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/amqp_go/lib.sh"

go_test_init
go_build "$src/examples/go/producer" "$work/producer"
go_build "$src/examples/go/consumer" "$work/consumer"
warren_start main
AMQP_URL=$(warren_url main)
export AMQP_URL

# expect_lines FILE EXPECTED_FILE WHAT: FILE holds exactly the lines of EXPECTED_FILE.
expect_lines() {
    if ! diff -u "$2" "$1" >"$work/diff"; then
        fail "$3 (- expected, + got):
$(head -n 40 "$work/diff")"
    fi
}

# --- 1. every message confirmed, then consumed exactly once ---------------------------------
n=500
timeout -s KILL 60 "$work/producer" -queue orders -count "$n" -timeout 30s ||
    fail "producer did not get $n confirms"
timeout -s KILL 60 "$work/consumer" -queue orders -count "$n" \
    >"$work/all.out" 2>"$work/all.err" ||
    fail "consumer failed: $(cat "$work/all.err")"
grep -qx "consumer: queue orders: $n messages ready" "$work/all.err" ||
    fail "queue.declare-ok did not count $n ready messages: $(head -n 1 "$work/all.err")"
seq -f 'msg-%g' 1 "$n" >"$work/expected"
expect_lines "$work/all.out" "$work/expected" "the consumer did not print msg-1..msg-$n once each"
echo "ok: $n messages published with confirms, consumed and acked exactly once"

# --- 2. graceful shutdown in the middle of a slow message -----------------------------------
m=20
in_hand=slow-3
timeout -s KILL 60 "$work/producer" -queue slow -count "$m" -prefix slow- -timeout 30s ||
    fail "producer did not get $m confirms"
"$work/consumer" -queue slow -prefetch 5 -work 1s >"$work/first.out" 2>"$work/first.err" &
pid=$!
started_pids+=("$pid")
wait_until 30 "the consumer to start on $in_hand" grep -q "working on $in_hand " "$work/first.err"
kill -TERM "$pid"
consumer_exited() { ! alive "$pid"; }
wait_until 10 "the consumer to exit after SIGTERM" consumer_exited
status=0
wait "$pid" || status=$?
[ "$status" -eq 0 ] || fail "consumer exited with $status after SIGTERM: $(cat "$work/first.err")"
printf 'slow-1\nslow-2\n%s\n' "$in_hand" >"$work/expected"
expect_lines "$work/first.out" "$work/expected" \
    "the consumer did not finish and ack $in_hand after SIGTERM"

left=$((m - 3))
timeout -s KILL 60 "$work/consumer" -queue slow -count "$left" \
    >"$work/second.out" 2>"$work/second.err" ||
    fail "second consumer failed: $(cat "$work/second.err")"
grep -qx "consumer: queue slow: $left messages ready" "$work/second.err" ||
    fail "after SIGTERM the queue should hold $left messages ($in_hand acked):
$(head -n 1 "$work/second.err")"
if grep -qx "$in_hand" "$work/second.out"; then
    fail "$in_hand was acked before shutdown but delivered again"
fi
sort "$work/first.out" "$work/second.out" >"$work/seen"
seq -f 'slow-%g' 1 "$m" | sort >"$work/expected"
expect_lines "$work/seen" "$work/expected" "messages lost or seen twice across the restart"
echo "ok: SIGTERM mid-message: exit 0, $in_hand acked, $left left for the next consumer"

warren_stop main
echo "ok: warren exited 0 on SIGTERM"
