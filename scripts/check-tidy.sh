#!/usr/bin/env bash
# Runs clang-tidy (the repo's .clang-tidy) over the library and the tool, using a build
# directory's compile_commands.json. Fails on any finding.
# Usage: scripts/check-tidy.sh BUILD_DIR [clang-tidy binary]   (run from the project root)
set -euo pipefail
build_dir=$1
tidy=${2:-clang-tidy}
mapfile -t files < <(find src tools -type f -name '*.cpp' | sort)
# Two at a time: this machine has two cores.
printf '%s\n' "${files[@]}" | xargs -P 2 -n 4 "$tidy" -p "$build_dir" --quiet 2>/dev/null
echo "check-tidy: ${#files[@]} files clean"
