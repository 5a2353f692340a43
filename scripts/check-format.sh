#!/usr/bin/env bash
# Fails (and shows the first differences) if any C++ source is not clang-format clean.
# Usage: scripts/check-format.sh [clang-format binary]   (run from the project root)
set -euo pipefail
formatter=${1:-clang-format}
mapfile -t files < <(find include src tools tests bench examples -type f \
  \( -name '*.hpp' -o -name '*.cpp' -o -name '*.h' \) 2>/dev/null | sort)
if [ "${#files[@]}" -eq 0 ]; then
  echo "check-format: no source files found (run from the project root)" >&2
  exit 1
fi
"$formatter" --dry-run --Werror "${files[@]}"
echo "check-format: ${#files[@]} files clean"
