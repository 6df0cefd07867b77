#!/usr/bin/env bash
# The main job on a fresh Debian machine: install build dependencies, build the stac program
# (CPU only, for speed), and run `stac demo` on the bundled model: convert it to a spiking
# network (progress shown), hold a short scripted conversation with the SNN next to the float
# model, and print the report (perplexity and agreement of ANN, QANN and SNN, firing rate,
# synaptic operations, energy estimate).
# Usage: scripts/main-job.sh [MODEL_DIR]      (default: the bundled model, models/bundled/gpt2-fortunes)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-main
"$root/scripts/install-deps.sh"
echo "== building stac (CPU only) in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTAC_CUDA=OFF -DSTAC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target stac >/dev/null
args=(--out "$build/snn")
[ $# -ge 1 ] && args+=(--model "$1")
"$build/stac" demo "${args[@]}"
