#!/usr/bin/env bash
# Builds transient and runs its main job: `transient drill`, eleven failure scenarios against
# `transient serve` children on loopback, ending with a table; exit 0 if all pass. The build
# shows its progress (the first one compiles the library and the command).
# Usage: scripts/demo.sh [drill options, e.g. --quick, --json, --svg drill.svg]
#        (from anywhere; installs missing packages first)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "demo.sh: building the transient command (build/default)..." >&2
cmake --preset default >/dev/null
# Ninja's progress lines ([n/N] what it compiles) go to stderr, so --json output stays clean.
cmake --build --preset default -j "$(nproc)" --target transient_cli >&2
echo "demo.sh: running transient drill $*" >&2
./build/default/tools/transient drill "$@"
