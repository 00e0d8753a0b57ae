#!/usr/bin/env bash
# Builds the amqp_go test program and runs it against two warren brokers: one with the
# defaults for every feature test, one with a 1 MiB memory high watermark for the
# connection.blocked test. Both brokers must then exit 0 on SIGTERM.
# Usage: run.sh SOURCE_DIR WARREN_BIN WARREN_PLUGIN_DIR WARREN_PYTHON [amqp_go flags...]
set -euo pipefail
src=$1
export WARREN_BIN=$2 WARREN_PLUGIN_DIR=$3 WARREN_PYTHON=$4
shift 4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/lib.sh
source "$here/lib.sh"

go_test_init
go_build "$here" "$work/amqp_go"

# AMQP_GO_BROKER=rabbitmq runs the same program against a private RabbitMQ instead, to show
# that what it expects is what RabbitMQ does (the blocked test needs a low watermark: skipped).
if [ "${AMQP_GO_BROKER:-warren}" = rabbitmq ]; then
    "$WARREN_PYTHON" - "$src/tests/integration" "$work/amqp_go" "$@" <<'PY'
import subprocess, sys
sys.path.insert(0, sys.argv[1])
import rabbitmq
if not rabbitmq.available():
    rabbitmq.skip()
with rabbitmq.RabbitMQ() as rmq:
    url = "amqp://guest:guest@127.0.0.1:%d/" % rmq.port
    sys.exit(subprocess.run([sys.argv[2], "-url", url] + sys.argv[3:], timeout=240).returncode)
PY
    exit 0
fi
warren_start main
warren_start lowmem "memory_high_watermark: 1MiB"

status=0
timeout -s KILL 240 "$work/amqp_go" -url "$(warren_url main)" \
    -blocked-url "$(warren_url lowmem)" "$@" || status=$?
if [ "$status" -ne 0 ]; then
    for name in main lowmem; do
        echo "--- the last lines warren $name logged ---"
        warren_log "$name" | tail -n 40
    done
    fail "amqp_go exited with status $status"
fi
warren_stop main
warren_stop lowmem
echo "ok: both brokers exited 0 on SIGTERM"
