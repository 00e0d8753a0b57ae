#!/usr/bin/env bash
# Installs this build of warren into a scratch prefix, then builds examples/custom-exchange
# against the *installed* package twice: with CMake's find_package(Warren) and with
# pkg-config. Finally the installed `warren` validates a config that loads the plugin.
# Usage: custom_exchange_build.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1
build=$2
prefix=$build/install-test
out=$build/example-build

rm -rf "$prefix" "$out"
cmake --install "$build" --prefix "$prefix" >/dev/null

# 1. CMake package.
cmake -S "$src/examples/custom-exchange" -B "$out" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$out" >/dev/null
test -f "$out/consistent_hash.so"

# 2. pkg-config, by hand, as a Makefile user would.
pcdir=$(dirname "$(find "$prefix" -name warren.pc | head -n 1)")
flags=$(PKG_CONFIG_PATH=$pcdir pkg-config --cflags --libs warren)
# shellcheck disable=SC2086
cc -std=c11 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden \
  "$src/examples/custom-exchange/consistent_hash.c" $flags -o "$out/consistent_hash_pc.so"
nm -D --defined-only "$out/consistent_hash_pc.so" | grep -q ' wr_plugin_entry$'

# 3. The installed executable loads it through a config, with the installed built-ins.
cat > "$out/check.yaml" <<YAML
plugins:
  - {name: consistent_hash, path: $out/consistent_hash.so}
vhosts:
  - name: /
    exchanges:
      - {name: shards, type: consistent_hash}
    queues:
      - {name: a}
    bindings:
      - {exchange: shards, queue: a, key: "10"}
YAML
"$prefix/bin/warren" --check-config "$out/check.yaml" | tee "$out/check.out"
grep -q "shards" "$out/check.out"
echo "custom exchange: built against the installed package and loaded by the installed warren"
