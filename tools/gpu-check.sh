#!/usr/bin/env bash
# The one prepared GPU check (run on a machine with an NVIDIA GPU, e.g. through the device tool):
#   1. builds stac with CUDA for the GPU (sm_90 = H200 by default; CUDA_ARCH=.. to change),
#   2. runs the GPU test cases (every CUDA kernel against the CPU kernel; GPT-2 logits, greedy
#      continuations and cached = one-shot on the GPU; SNN = QANN and spike path = count path at
#      the kernel level), then the whole default suite on the same build,
#   3. runs bench/bench_gpu (GPT-2 124M shape, random weights: prompt and decode tokens/s for
#      f32/f16/bf16 weights, and kernel timings),
# and writes everything under $OUT (default ./gpu-check-out): machine.txt, configure.log,
# build.log, gpu-tests.log, all-tests.log, bench_gpu.json, bench_gpu.log, summary.txt.
# Every step has a time limit, so the script ends inside 8 minutes; exit 0 only if all passed.
# Usage: OUT=/some/dir tools/gpu-check.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/gpu-check-out}
mkdir -p "$out"
build=${BUILD:-$root/build-gpu}
arch=${CUDA_ARCH:-90}
jobs=$(nproc)
start=$(date +%s)
say() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$out/summary.txt"; }
: > "$out/summary.txt"
{
  echo "date: $(date -u)"
  nvidia-smi || echo "nvidia-smi: not available"
  nvcc --version | tail -2
  echo "cores: $jobs"
} > "$out/machine.txt" 2>&1
status=0
say "configure (sm_$arch)"
timeout 120 cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTAC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  > "$out/configure.log" 2>&1 || { say "configure failed: see configure.log"; tail -20 "$out/configure.log"; exit 1; }
say "build"
timeout 270 cmake --build "$build" -j "$jobs" > "$out/build.log" 2>&1 || {
  say "build failed: see build.log"; grep -E "error" -A3 "$out/build.log" | head -40; exit 1; }
say "GPU tests"
(cd "$build" && timeout 120 ./stac_tests -ts=gpu --duration=true) > "$out/gpu-tests.log" 2>&1 \
  && say "GPU tests passed" || { status=1; say "GPU tests FAILED (see gpu-tests.log)"; }
if grep -q "SKIPPED: no CUDA GPU" "$out/gpu-tests.log"; then status=1; say "GPU tests were SKIPPED: no GPU visible"; fi
grep -E "test cases|assertions|SKIPPED" "$out/gpu-tests.log" | tail -3 | tee -a "$out/summary.txt"
say "bench_gpu"
timeout 90 "$build/bench_gpu" > "$out/bench_gpu.json" 2> "$out/bench_gpu.log" \
  && say "bench_gpu done" || { status=1; say "bench_gpu FAILED (see bench_gpu.log)"; }
cat "$out/bench_gpu.log" | tee -a "$out/summary.txt"
say "stac on the GPU (bundled model): generate, chat, eval of a simplified SNN"
{
  set -e
  stac="$build/stac"
  tmp=$(mktemp -d)
  echo "== generate --device cuda (greedy) vs --device cpu"
  g=$(timeout 60 "$stac" generate --device cuda --prompt "The meaning of life is" --max-new-tokens 24 --temperature 0 --json)
  c=$(timeout 60 "$stac" generate --device cpu --prompt "The meaning of life is" --max-new-tokens 24 --temperature 0 --json)
  echo "gpu: $g"; echo "cpu: $c"
  ids() { sed -E 's/.*"new_ids":\[([^]]*)\].*/\1/'; }
  [ "$(echo "$g" | ids)" = "$(echo "$c" | ids)" ] && echo "greedy continuations identical" || echo "greedy continuations DIFFER"
  echo "== chat --device cuda --weights-dtype bf16"
  printf 'Hello there.\nTell me a joke.\n' | timeout 60 "$stac" chat --device cuda --weights-dtype bf16 --max-new-tokens 16
  echo "== eval --device cuda (simplified conversion, layer-wise spike path and streaming)"
  timeout 60 "$stac" convert --out "$tmp/snn" --simplified --quiet
  timeout 90 "$stac" eval --model "$tmp/snn" --device cuda --max-tokens 512 --window 128 --quiet
  timeout 90 "$stac" eval --model "$tmp/snn" --device cuda --schedule streaming --max-tokens 256 --window 128 --quiet
  rm -rf "$tmp"
} > "$out/cli.log" 2>&1 && say "stac on the GPU ran (see cli.log)" || { status=1; say "stac on the GPU FAILED (see cli.log)"; }
grep -E "identical|DIFFER" "$out/cli.log" | tee -a "$out/summary.txt"
say "default suite (CPU and GPU cases together)"
(cd "$build" && timeout 120 ctest -j "$jobs" -LE long --output-on-failure --no-tests=error) > "$out/all-tests.log" 2>&1 \
  || { status=1; say "default suite FAILED (see all-tests.log)"; }
tail -4 "$out/all-tests.log" | tee -a "$out/summary.txt"
say "results in $out (exit $status)"
exit $status
