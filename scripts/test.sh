#!/usr/bin/env bash
# One command for the whole test suite: installs what is missing, builds and runs every test
# (unit tests, the loader's test plugins, the `warren` binary, the out-of-tree plugin), checks
# that the Release configuration compiles, then builds again with AddressSanitizer +
# UndefinedBehaviorSanitizer and runs everything again.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh --test
jobs=$(nproc)

echo "== build and test (RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build -j"$jobs" --output-on-failure

echo "== build the Release configuration scripts/run.sh uses (gcc warns differently at -O3)"
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DWARREN_TESTS=OFF >/dev/null
cmake --build build-release -j"$jobs" >/dev/null

echo "== build and test under ASan + UBSan"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DWARREN_SANITIZE=ON -DWARREN_BENCH=OFF >/dev/null
cmake --build build-asan -j"$jobs"
# tests/CMakeLists.txt gives each test the sanitizer options that make a finding (a leak
# included) fail it.
ctest --test-dir build-asan -j"$jobs" --output-on-failure
