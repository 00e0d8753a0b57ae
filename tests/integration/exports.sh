#!/usr/bin/env bash
# libwarren exports only wr_* names, and a plugin only wr_plugin_entry: everything else is
# hidden, so plugins cannot come to depend on the core's internals.
# Usage: exports.sh LIBWARREN PLUGIN_DIR (every *.so in it is checked)
set -euo pipefail
lib=$1
plugins=("$2"/*.so)
# A missing file or an empty directory must fail, not pass for having nothing to show.
nm -D --defined-only "$lib" >/dev/null
count=$(nm -D --defined-only "$lib" | grep -c ' wr_' || true)
[ "$count" -gt 0 ] || { echo "$lib exports no wr_ symbol"; exit 1; }
[ -f "${plugins[0]}" ] || { echo "no plugin in $2"; exit 1; }
# Linker and sanitizer symbols every shared object may carry.
builtin='_init|_fini|__odr_asan[.].*'
bad=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^wr_' | grep -vxE "$builtin" || true)
if [ -n "$bad" ]; then
  echo "libwarren exports names without the wr_ prefix:"; echo "$bad"; exit 1
fi
echo "libwarren: $count wr_ symbols, nothing else"
for p in "${plugins[@]}"; do
  extra=$(nm -D --defined-only "$p" | awk '{print $3}' | grep -vxE "wr_plugin_entry|$builtin" || true)
  if [ -n "$extra" ]; then
    echo "$p exports more than wr_plugin_entry:"; echo "$extra"; exit 1
  fi
done
echo "plugins: each exports only wr_plugin_entry (${#plugins[@]} checked)"
