#!/usr/bin/env bash
# Installs the built library into a scratch prefix, then builds and runs a consumer
# project against it twice: through find_package(transient CONFIG) and through pkg-config.
# Usage: check.sh BUILD_DIR CONSUMER_SOURCE_DIR CXX [CXXFLAGS]
set -euo pipefail
build_dir=$1 consumer_src=$2 cxx=$3 cxxflags=${4:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null

cmake -S "$consumer_src" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_CXX_FLAGS="$cxxflags" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
"$work/cmake-build/consumer"

libdir=$(find "$work/prefix" -name transient.pc -printf '%h\n' | head -n 1)
[ -n "$libdir" ] || { echo "transient.pc was not installed" >&2; exit 1; }
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
"$cxx" $cxxflags "$consumer_src/main.cpp" -o "$work/pc-consumer" \
  $(PKG_CONFIG_PATH="$libdir" pkg-config --define-prefix --cflags --libs transient)
"$work/pc-consumer"
echo "consumer: CMake package and pkg-config both work"
