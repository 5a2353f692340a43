#!/usr/bin/env bash
# Builds transient the way users build it: a plain `cmake -DCMAKE_BUILD_TYPE=Release` with the
# default generator and default options (so no -Werror), once with g++ and once with clang++,
# building everything (library, command, tests, benchmarks) and running every test. In Release
# the tests also take transient as a subproject (add_subdirectory, FetchContent), installed
# (find_package, pkg-config) and as a Debian package.
# With TRANSIENT_NO_WARNINGS=1 (CI), a build that prints any compiler warning fails: the build
# stays the user's (the project's -Wall -Wextra -Wpedantic, no -Werror) and CI still keeps it
# warning-free with both compilers.
# Usage: scripts/user-builds.sh [g++|clang++ ...]     (default: both; installs missing packages first)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
compilers=("$@")
if [ "${#compilers[@]}" -eq 0 ]; then
  compilers=(g++ clang++)
fi
for cxx in "${compilers[@]}"; do
  dir="build/release-$cxx"
  echo "== user-builds.sh: Release with $cxx in $dir" >&2
  CXX="$cxx" cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$dir" -j "$(nproc)" 2>&1 | tee "$dir/build.log"
  if [ "${TRANSIENT_NO_WARNINGS:-0}" = 1 ] && grep -q 'warning:' "$dir/build.log"; then
    echo "user-builds.sh: the $cxx build printed warnings (above); CI takes none" >&2
    exit 1
  fi
  # Label fleet (the drill's scenario 11 with a real HAProxy) runs once, in CI's default preset.
  ctest --test-dir "$dir" -j 2 --output-on-failure --timeout 600 -LE fleet
done
