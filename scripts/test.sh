#!/usr/bin/env bash
# Builds transient and runs its test suite through CTest, in each preset named on the
# command line (default: "default"). Presets: default, clang, asan, tsan (the threaded
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
  cmake --build --preset "$preset" -j "$(nproc)"
  ctest --preset "$preset"
done
