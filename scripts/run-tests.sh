#!/usr/bin/env bash
# The test command: installs build dependencies, configures, builds (CUDA too when nvcc is found:
# compile-only without a GPU) and runs the default CTest suite (long checks excluded; GPU cases
# are reported as Skipped without a GPU).
# Usage: scripts/run-tests.sh [BUILD_DIR]        (default: build)
#   STAC_TEST_LABELS=long scripts/run-tests.sh   runs only the long checks instead
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
"$root/scripts/install-deps.sh"
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs"
if [ -n "${STAC_TEST_LABELS:-}" ]; then
  ctest --test-dir "$build" -j "$jobs" --output-on-failure --no-tests=error -L "$STAC_TEST_LABELS"
else
  ctest --test-dir "$build" -j "$jobs" --output-on-failure --no-tests=error -LE long
fi
