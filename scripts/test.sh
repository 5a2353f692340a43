#!/usr/bin/env bash
# Builds what the test suite runs (the library, the command, the examples, every test program;
# not the benchmarks) and runs it through CTest, in each preset named on the command line
# (default: "default"). Lint is scripts/lint.sh. Presets: default, clang, asan, tsan (the threaded
# tests only), fuzz (each libFuzzer target for a bounded time).
# Usage: scripts/test.sh [PRESET...]      (from anywhere; installs missing packages first)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
presets=("$@")
if [ "${#presets[@]}" -eq 0 ]; then
  presets=(default)
fi
for preset in "${presets[@]}"; do
  echo "== test.sh: preset $preset" >&2
  cmake --preset "$preset" >/dev/null
  if [ "$preset" = fuzz ]; then
    cmake --build --preset "$preset" -j "$(nproc)"  # the fuzz targets are all it builds
  else
    cmake --build --preset "$preset" -j "$(nproc)" --target transient_tests  # what the tests run, no benchmark
  fi
  ctest --preset "$preset"
done
