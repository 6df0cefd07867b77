#!/usr/bin/env bash
# Writes a chat-formatted evaluation text for a ChatML model (SmolLM2-Instruct): five three-turn
# conversations, the replies the FLOAT model gives to them greedily (stac chat, repetition penalty
# 1.1, at most 60 tokens a reply), laid out in ChatML with the template's default system message.
# `stac eval --text OUT --special` then scores an SNN teacher-forced on what the float model says
# in a chat (docs/SNN.md, "Spiking SmolLM2"). Greedy replies of both models are in
# docs/SMOLLM2_CHAT.md; this measures the same thing without greedy decoding's chaos.
#   scripts/reference/make_chat_eval.sh [STAC] [MODEL_DIR] [OUT]
set -euo pipefail
stac=${1:-build/stac}
model=${2:-build-smollm2/SmolLM2-135M-Instruct}
out=${3:-build-smollm2/chat-eval.txt}
system="You are a helpful AI assistant named SmolLM, trained by Hugging Face"
conversations=(
  $'What is the capital of France?\nAnd what is it famous for?\nThank you! Can you say that in one short sentence?'
  $'Who wrote Romeo and Juliet?\nWhen was he born?\nName another play he wrote.'
  $'Tell me about the Moon.\nHow far away is it?\nCould people live there?'
  $'What is photosynthesis?\nWhy is it important?\nExplain it to a child.'
  $'Write a haiku about the sea.\nNow one about mountains.\nWhich one do you like more?'
)
: > "$out"
for turns in "${conversations[@]}"; do
  replies=$(printf '%s\n' "$turns" | "$stac" chat --model "$model" --temperature 0 --repetition-penalty 1.1 \
              --max-new-tokens 60 2>/dev/null | sed -n 's/^Assistant: //p')
  [ "$(printf '%s\n' "$replies" | wc -l)" -eq 3 ] || { echo "expected 3 one-line replies, got: $replies" >&2; exit 1; }
  printf '<|im_start|>system\n%s<|im_end|>\n' "$system" >> "$out"
  paste -d '\t' <(printf '%s\n' "$turns") <(printf '%s\n' "$replies") | while IFS=$'\t' read -r user reply; do
    printf '<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n' "$user" "$reply" >> "$out"
  done
done
echo "wrote $out"
