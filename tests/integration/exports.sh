#!/usr/bin/env bash
# libwarren exports only wr_* names, and a plugin only wr_plugin_entry: everything else is
# hidden, so plugins cannot come to depend on the core's internals.
# Usage: exports.sh LIBWARREN PLUGIN...
set -euo pipefail
lib=$1
shift
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^wr_' | grep -vE '^(_init|_fini|__odr_asan[.].*)$' || true)
if [ -n "$bad" ]; then
  echo "libwarren exports names without the wr_ prefix:"; echo "$bad"; exit 1
fi
echo "libwarren: $(nm -D --defined-only "$lib" | grep -c ' wr_') wr_ symbols, nothing else"
for p in "$@"; do
  extra=$(nm -D --defined-only "$p" | awk '{print $3}' | grep -vxE 'wr_plugin_entry|_init|_fini|__odr_asan[.].*' || true)
  if [ -n "$extra" ]; then
    echo "$p exports more than wr_plugin_entry:"; echo "$extra"; exit 1
  fi
done
echo "plugins: each exports only wr_plugin_entry ($# checked)"
