# shellcheck shell=bash
# lib.sh: what the Go client tests share, sourced by go_examples_test.sh and amqp_go/run.sh.
# It builds Go programs in GOPATH mode against Debian's amqp091-go, starts warren on loopback
# ports the kernel picks, and stops everything it started by PID. Every wait has a deadline.
#
# The caller sets WARREN_BIN and WARREN_PLUGIN_DIR, then calls go_test_init.
# WARREN_GOCACHE, if set, is a Go build cache kept across runs (default: a fresh one).

GO_AMQP_PKG=github.com/rabbitmq/amqp091-go

declare -A warren_pid=() warren_port=() warren_dir=()
started_pids=()

skip() {
    echo "SKIPPED: $*"
    exit 77
}

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# go_test_init: skips unless go and amqp091-go are installed, makes the scratch directory
# $work (removed on exit) and points the Go build cache into it.
go_test_init() {
    command -v go >/dev/null || skip "go is not installed (apt-get install golang-go)"
    export GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS=
    [ -d "$GOPATH/src/$GO_AMQP_PKG" ] ||
        skip "$GO_AMQP_PKG is not installed (apt-get install golang-github-rabbitmq-amqp091-go-dev)"
    [ -x "$WARREN_BIN" ] || fail "no warren executable at $WARREN_BIN"
    work=$(mktemp -d "${TMPDIR:-/tmp}/warren-go-XXXXXX")
    export GOCACHE=${WARREN_GOCACHE:-$work/gocache}
    trap cleanup EXIT
}

cleanup() {
    local status=$?
    set +e # a killed process's status must not end the cleanup early
    for pid in "${started_pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    for name in "${!warren_pid[@]}"; do
        kill -KILL "${warren_pid[$name]}" 2>/dev/null && wait "${warren_pid[$name]}" 2>/dev/null
    done
    rm -rf "$work"
    exit "$status"
}

# go_build SRC_DIR OUT: one main package, built outside the source tree.
go_build() {
    (cd "$1" && go build -o "$2" .) || fail "go build $1"
}

# now_ms: a monotonic-enough clock for deadlines (the tests run seconds, not days).
now_ms() {
    echo $(($(date +%s%N) / 1000000))
}

# wait_until TIMEOUT_S WHAT COMMAND...: runs COMMAND every 20 ms until it succeeds; fails
# the test naming WHAT after TIMEOUT_S seconds.
wait_until() {
    local deadline=$(($(now_ms) + $1 * 1000)) what=$2
    shift 2
    until "$@"; do
        [ "$(now_ms)" -lt "$deadline" ] || fail "timed out after $1 s waiting for $what"
        sleep 0.02
    done
}

port_accepts() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

alive() {
    kill -0 "$1" 2>/dev/null
}

# warren_logged_port PID LOG: true once warren has logged the port its AMQP listener got
# (it asks for port 0, so parallel tests never race for a free port); sets logged_port.
warren_logged_port() {
    alive "$1" || fail "warren exited before listening:$(printf '\n%s' "$(cat "$2")")"
    logged_port=$(grep -oE 'amqp091.*listening on 127\.0\.0\.1:[0-9]+' "$2" | head -n 1 |
        grep -oE '[0-9]+$') || return 1
    port_accepts "$logged_port"
}

# warren_start NAME [BROKER_YAML_LINE...]: warren with an AMQP listener on a port the kernel
# picks; extra lines go under broker:. Sets warren_port[NAME] and warren_pid[NAME].
warren_start() {
    local name=$1 dir=$work/warren-$1
    shift
    mkdir -p "$dir"
    {
        printf 'broker:\n  data_dir: %s/data\n  plugin_dirs: [%s]\n' "$dir" "$WARREN_PLUGIN_DIR"
        for line in "$@"; do printf '  %s\n' "$line"; done
        printf 'listeners:\n  - {transport: amqp091, host: 127.0.0.1, port: 0}\n'
    } >"$dir/warren.yaml"
    "$WARREN_BIN" "$dir/warren.yaml" >"$dir/warren.log" 2>&1 &
    warren_pid[$name]=$!
    warren_dir[$name]=$dir
    wait_until 15 "warren $name to log its AMQP port and listen" \
        warren_logged_port "${warren_pid[$name]}" "$dir/warren.log"
    warren_port[$name]=$logged_port
}

warren_url() {
    echo "amqp://guest:guest@127.0.0.1:${warren_port[$1]}/"
}

warren_log() {
    cat "${warren_dir[$1]}/warren.log"
}

# warren_stop NAME: SIGTERM, then warren must exit 0 within 10 s.
warren_stop() {
    local name=$1 pid=${warren_pid[$1]} status=0
    kill -TERM "$pid"
    local deadline=$(($(now_ms) + 10000))
    while alive "$pid" && [ "$(now_ms)" -lt "$deadline" ]; do
        sleep 0.02
    done
    if alive "$pid"; then
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null
        unset "warren_pid[$name]"
        fail "warren $name did not exit within 10 s of SIGTERM; its log:
$(warren_log "$name")"
    fi
    wait "$pid" || status=$?
    unset "warren_pid[$name]"
    [ "$status" -eq 0 ] || fail "warren $name exited with status $status after SIGTERM; its log:
$(warren_log "$name")"
}
