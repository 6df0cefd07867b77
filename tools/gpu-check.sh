#!/usr/bin/env bash
# The one prepared GPU check (run on a machine with an NVIDIA GPU, e.g. through the device tool):
# builds stac with CUDA for the GPU present (sm_90 for an H200 by default), runs the GPU test
# cases and the full default suite, and writes everything under $OUT (default ./gpu-check-out).
# Finishes well inside 8 minutes on an H200 host.
# Usage: OUT=/some/dir tools/gpu-check.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/gpu-check-out}
mkdir -p "$out"
build=$root/build-gpu
arch=${CUDA_ARCH:-90}
{
  echo "date: $(date -u)"
  nvidia-smi || echo "nvidia-smi: not available"
  nvcc --version | tail -2
} > "$out/machine.txt" 2>&1
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTAC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  > "$out/configure.log" 2>&1 || { echo "configure failed: see $out/configure.log"; exit 1; }
cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1 || { echo "build failed: see $out/build.log"; tail -30 "$out/build.log"; exit 1; }
status=0
(cd "$build" && ctest -L gpu --output-on-failure) > "$out/gpu-tests.log" 2>&1 || status=1
(cd "$build" && ctest -j "$(nproc)" -LE long --output-on-failure) > "$out/all-tests.log" 2>&1 || status=1
tail -5 "$out/gpu-tests.log"
tail -5 "$out/all-tests.log"
echo "results in $out (exit $status)"
exit $status
