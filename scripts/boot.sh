#!/usr/bin/env bash
# The main job: install what is missing, build what the guest needs (reusing
# cached artifacts), and boot it with svmdev to a ready executor.
# Arguments go to `svmfuzz boot` (e.g. --devices 2, --shell, --accel tcg).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja
cmake --build build --target guest
./svmfuzz boot "$@"
