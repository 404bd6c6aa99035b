#!/usr/bin/env bash
# The main job: install what is missing, build what the guest needs (reusing
# cached artifacts), boot it with svmdev to a ready executor, then run a
# two-minute libFuzzer campaign against it (build/campaign, resumed by the
# next run). Arguments go to `svmfuzz boot` (e.g. --devices 2, --shell,
# --accel tcg); with --shell there is no campaign.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja
cmake --build build --target guest svmfuzz_runner_python svmfuzz-guest-fuzz
./svmfuzz boot "$@"
case " $* " in
  *" --shell "*) ;;
  *) ./svmfuzz fuzz --engine libfuzzer --minutes 2 --workdir build/campaign ;;
esac
