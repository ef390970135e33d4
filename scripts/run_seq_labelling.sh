#!/usr/bin/env bash
# NER as the original run_seq_labelling.sh (People's Daily: seq 256, batch 16, 10 epochs, lr 3e-5).
#   scripts/run_seq_labelling.sh DATA_DIR MODEL_DIR OUTPUT_DIR [extra nezha finetune flags, e.g. --use_crf]
# DATA_DIR holds train and dev files: example.train/example.dev (char TAG per line), train.txt/dev.txt,
# train.tsv/dev.tsv or train.jsonl/dev.jsonl. MODEL_DIR: a from_pretrained folder or "scratch" (PRESET, VOCAB_FILE).
# Ends by printing entity-level (strict) and token-level scores, also in OUTPUT_DIR/metrics.json; predictions are
# written in the input's format.
set -euo pipefail
DATA_DIR=${1:?usage: run_seq_labelling.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
MODEL_DIR=${2:?usage: run_seq_labelling.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
OUTPUT_DIR=${3:?usage: run_seq_labelling.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
shift 3
pick() { for f in "$@"; do [[ -f "$f" ]] && { echo "$f"; return; }; done; echo "no file among: $*" >&2; exit 2; }
TRAIN=$(pick "$DATA_DIR/example.train" "$DATA_DIR/train.txt" "$DATA_DIR/train.tsv" "$DATA_DIR/train.jsonl")
DEV=$(pick "$DATA_DIR/example.dev" "$DATA_DIR/dev.txt" "$DATA_DIR/dev.tsv" "$DATA_DIR/dev.jsonl")
if [[ "$MODEL_DIR" == scratch ]]; then
  MODEL=(--from_scratch --preset "${PRESET:-tiny}" --vocab_file "${VOCAB_FILE:?set VOCAB_FILE for scratch}")
else
  MODEL=(--model "$MODEL_DIR")
fi
"${NEZHA:-nezha}" finetune --task ner --data_format "${FORMAT:-auto}" \
  --train_file "$TRAIN" --eval_file "$DEV" "${MODEL[@]}" --output_dir "$OUTPUT_DIR" \
  --max_seq_length "${MAX_SEQ_LENGTH:-256}" --train_batch_size "${BATCH_SIZE:-16}" \
  --num_train_epochs "${EPOCHS:-10}" --learning_rate "${LEARNING_RATE:-3e-5}" --warmup_proportion 0.1 "$@"
echo "metrics written to $OUTPUT_DIR/metrics.json"
