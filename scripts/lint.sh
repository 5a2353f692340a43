#!/usr/bin/env bash
# Lint, the developer's check before a commit and a step of .ci/run: clang-format over every
# C++ source, then clang-tidy (the repo's .clang-tidy) over the library and the tool, with the
# default preset's compile_commands.json (configured here if missing). Fails on any finding.
# Usage: scripts/lint.sh [format|tidy]   (default: both; from anywhere; installs missing packages first)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
parts=("$@")
if [ "${#parts[@]}" -eq 0 ]; then
  parts=(format tidy)
fi
for part in "${parts[@]}"; do
  case $part in
    format) bash scripts/check-format.sh "$(command -v clang-format-14 || command -v clang-format)" ;;
    tidy)
      cmake --preset default >/dev/null
      # clang-tidy reads the generated headers (version.hpp) the build writes at configure time.
      bash scripts/check-tidy.sh build/default "$(command -v clang-tidy-14 || command -v clang-tidy)"
      ;;
    *) echo "lint.sh: unknown part '$part' (format or tidy)" >&2; exit 2 ;;
  esac
done
