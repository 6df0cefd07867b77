#!/usr/bin/env bash
# The one prepared GPU check (run on a machine with an NVIDIA GPU, e.g. through the device tool):
#   1. builds stac with CUDA for the GPU (sm_90 = H200 by default; CUDA_ARCH=.. to change),
#   2. runs the GPU test cases (every CUDA kernel against the CPU kernel; GPT-2 logits, greedy
#      continuations and cached = one-shot on the GPU; SNN = QANN and spike path = count path at
#      the kernel level), then the whole default suite on the same build,
#   3. runs bench/bench_gpu (GPT-2 124M shape, random weights: prompt and decode tokens/s for
#      f32/f16/bf16 weights, with and without the CUDA graph, and kernel timings),
#   4. runs the stac program on the GPU (greedy generate GPU = CPU, chat with bf16 weights, eval
#      of a simplified SNN in both schedules),
# and writes everything under $OUT (default ./gpu-check-out): machine.txt, configure.log,
# build.log, gpu-tests.log, bench_gpu.json, bench_gpu.log, cli.log, all-tests.log, summary.txt.
# Every step has a time limit within a 470 s budget, so the script ends inside 8 minutes; exit 0
# only if everything passed (GPU tests that skip for want of a GPU count as a failure here).
# Usage: OUT=/some/dir scripts/gpu-check.sh
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$root/gpu-check-out}
mkdir -p "$out"
build=${BUILD:-$root/build-gpu}
arch=${CUDA_ARCH:-90}
jobs=$(nproc)
start=$(date +%s)
say() { echo "[$(( $(date +%s) - start ))s] $*" | tee -a "$out/summary.txt"; }
# Time limit of a step: its own, or what is left of 470 s, whichever is less (at least 5 s), so
# the whole script ends inside 8 minutes even when every step runs long.
lim() { local left=$(( 470 - ($(date +%s) - start) )); [ "$left" -lt 5 ] && left=5; [ "$left" -lt "$1" ] && echo "$left" || echo "$1"; }
: > "$out/summary.txt"
{
  echo "date: $(date -u)"
  nvidia-smi || echo "nvidia-smi: not available"
  nvcc --version | tail -2
  echo "cores: $jobs"
} > "$out/machine.txt" 2>&1
status=0
say "configure (sm_$arch)"
timeout "$(lim 120)" cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTAC_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  > "$out/configure.log" 2>&1 || { say "configure failed: see configure.log"; tail -20 "$out/configure.log"; exit 1; }
say "build"
timeout "$(lim 270)" cmake --build "$build" -j "$jobs" > "$out/build.log" 2>&1 || {
  say "build failed: see build.log"; grep -E "error" -A3 "$out/build.log" | head -40; exit 1; }
say "GPU tests"
(cd "$build" && timeout "$(lim 120)" ./stac_tests -ts=gpu --duration=true) > "$out/gpu-tests.log" 2>&1 \
  && say "GPU tests passed" || { status=1; say "GPU tests FAILED (see gpu-tests.log)"; }
if grep -q "SKIPPED: no CUDA GPU" "$out/gpu-tests.log"; then status=1; say "GPU tests were SKIPPED: no GPU visible"; fi
grep -E "test cases|assertions|SKIPPED" "$out/gpu-tests.log" | tail -3 | tee -a "$out/summary.txt"
say "bench_gpu"
timeout "$(lim 90)" "$build/bench_gpu" > "$out/bench_gpu.json" 2> "$out/bench_gpu.log" \
  && say "bench_gpu done" || { status=1; say "bench_gpu FAILED (see bench_gpu.log)"; }
cat "$out/bench_gpu.log" | tee -a "$out/summary.txt"
say "stac on the GPU (bundled model): generate, chat, eval of a simplified SNN; a Llama fixture: generate"
cli_ok=1
step() { echo "\$ $*"; "$@" || { echo "FAILED ($?): $*"; cli_ok=0; }; }
{
  stac="$build/stac"
  tmp=$(mktemp -d)
  echo "== generate --device cuda (greedy) vs --device cpu"
  g=$(timeout "$(lim 60)" "$stac" generate --device cuda --prompt "The meaning of life is" --max-new-tokens 24 --temperature 0 --json) || cli_ok=0
  c=$(timeout "$(lim 60)" "$stac" generate --device cpu --prompt "The meaning of life is" --max-new-tokens 24 --temperature 0 --json) || cli_ok=0
  echo "gpu: $g"; echo "cpu: $c"
  ids() { sed -E 's/.*"new_ids":\[([^]]*)\].*/\1/'; }
  if [ -n "$g" ] && [ "$(echo "$g" | ids)" = "$(echo "$c" | ids)" ]; then echo "greedy continuations identical"
  else echo "greedy continuations DIFFER"; cli_ok=0; fi
  echo "== chat --device cuda --weights-dtype bf16"
  step timeout "$(lim 60)" "$stac" chat --device cuda --weights-dtype bf16 --max-new-tokens 16 < <(printf 'Hello there.\nTell me a joke.\n')
  echo "== eval --device cuda (simplified conversion, layer-wise spike path and streaming)"
  step timeout "$(lim 60)" "$stac" convert --out "$tmp/snn" --simplified --quiet
  step timeout "$(lim 90)" "$stac" eval --model "$tmp/snn" --device cuda --max-tokens 512 --window 128 --quiet
  step timeout "$(lim 90)" "$stac" eval --model "$tmp/snn" --device cuda --schedule streaming --max-tokens 256 --window 128 --quiet
  echo "== a Llama fixture (GQA 6:2, tied) greedy on the GPU vs the CPU"
  llama="$root/tests/fixtures/llama/tiny-gqa-tied-f32"
  g=$(timeout "$(lim 30)" "$stac" generate --model "$llama" --device cuda --ids 1,2,3,4 --max-new-tokens 12 --temperature 0 --json) || cli_ok=0
  c=$(timeout "$(lim 30)" "$stac" generate --model "$llama" --device cpu --ids 1,2,3,4 --max-new-tokens 12 --temperature 0 --json) || cli_ok=0
  echo "gpu: $g"; echo "cpu: $c"
  if [ -n "$g" ] && [ "$(echo "$g" | ids)" = "$(echo "$c" | ids)" ]; then echo "greedy continuations identical"
  else echo "greedy continuations DIFFER"; cli_ok=0; fi
  rm -rf "$tmp"
} > "$out/cli.log" 2>&1
if [ "$cli_ok" = 1 ]; then say "stac on the GPU ran (see cli.log)"; else status=1; say "stac on the GPU FAILED (see cli.log)"; fi
grep -E "identical|DIFFER|FAILED" "$out/cli.log" | tee -a "$out/summary.txt"
say "default suite (CPU and GPU cases together)"
(cd "$build" && timeout "$(lim 120)" ctest -j "$jobs" -LE long --output-on-failure --no-tests=error) > "$out/all-tests.log" 2>&1 \
  || { status=1; say "default suite FAILED (see all-tests.log)"; }
grep -E "tests passed|tests failed" "$out/all-tests.log" | tee -a "$out/summary.txt"
say "results in $out (exit $status)"
exit $status
