#!/usr/bin/env bash
# The main job on a fresh Debian machine: install build dependencies, build the stac program
# (CPU only, for speed), and run it on the default model: what the model is, a streamed
# continuation, and a short scripted multi-turn chat that reuses the KV cache across turns.
# Usage: tools/main-job.sh [MODEL_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-main
"$root/tools/install-deps.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DSTAC_CUDA=OFF -DSTAC_BUILD_TESTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target stac
stac=$build/stac

# Until the bundled English model lands, the default is a fixture GPT-2 (random weights, no
# tokenizer): it shows the engine working on token ids only.
model=${1:-$root/tests/fixtures/gpt2/tiny-gelu-f32}
echo "== stac inspect --model $model"
"$stac" inspect --model "$model"
if [ -f "$model/vocab.json" ]; then
  echo "== stac generate"
  "$stac" generate --model "$model" --prompt "The meaning of life is" --max-new-tokens 40
  echo "== stac chat (scripted, three turns)"
  printf 'Hello! Who are you?\nWhat do you like to do?\nTell me a short story.\n' |
    "$stac" chat --model "$model" --max-new-tokens 40 --seed 1 --stats
else
  echo "== stac generate --ids (greedy, token ids: this model has no tokenizer)"
  "$stac" generate --model "$model" --ids 464,68,758,218 --max-new-tokens 16
  echo "== stac logits: batched and incremental (KV cache) agree"
  "$stac" logits --model "$model" --ids 1,2,3,4 --last | head -c 200; echo " ..."
  "$stac" logits --model "$model" --ids 1,2,3,4 --last --incremental | head -c 200; echo " ..."
fi
