#!/usr/bin/env bash
# Builds transient and runs its main job: `transient drill`, eight failure scenarios against
# `transient serve` children on loopback (about 20 s), ending with a table; exit 0 if all pass.
# Usage: scripts/demo.sh [drill options, e.g. --quick, --json, --svg drill.svg]
#        (from anywhere; installs missing packages first)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target transient_cli >/dev/null
./build/default/tools/transient drill "$@"
