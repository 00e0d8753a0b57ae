#!/usr/bin/env bash
# One command to run warren on a fresh Debian machine: installs what is missing, builds, and
# starts the broker (in the foreground) on the embedded default config, or on the config
# file given as the first argument. Stop it with Ctrl-C (SIGINT) or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DWARREN_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null
exec ./build-release/warren "$@"
