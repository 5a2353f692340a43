#!/usr/bin/env bash
# Builds transient and runs its main job: for now the error table, `transient explain --table`.
# Usage: scripts/demo.sh      (from anywhere; installs missing packages first)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target transient_cli >/dev/null
./build/default/tools/transient explain --table
