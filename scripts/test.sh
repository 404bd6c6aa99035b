#!/usr/bin/env bash
# Builds everything (reusing cached artifacts) and runs every test: unit tests
# of the host code and the harness, then the tests that boot the real guest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja
cmake --build build
ctest --test-dir build --output-on-failure "$@"
