#!/usr/bin/env bash
# Sentence-pair / sentence classification, as the original run_clf.sh (LCQMC: seq 128, batch 32, 5 epochs, lr 3e-5).
#   scripts/run_clf.sh DATA_DIR MODEL_DIR OUTPUT_DIR [extra nezha finetune flags...]
# DATA_DIR holds train and dev files (train.txt/dev.txt or train.tsv/dev.tsv); FORMAT picks the reader
# (lcqmc, chnsenticorp, xnli, tsv, csv, jsonl). MODEL_DIR is a from_pretrained folder, or "scratch" for a random
# PRESET-sized model with VOCAB_FILE. Ends by printing the metrics, which are also in OUTPUT_DIR/metrics.json.
set -euo pipefail
DATA_DIR=${1:?usage: run_clf.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
MODEL_DIR=${2:?usage: run_clf.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
OUTPUT_DIR=${3:?usage: run_clf.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
shift 3
pick() { for f in "$@"; do [[ -f "$f" ]] && { echo "$f"; return; }; done; echo "no file among: $*" >&2; exit 2; }
TRAIN=$(pick "$DATA_DIR/train.txt" "$DATA_DIR/train.tsv" "$DATA_DIR/train.csv" "$DATA_DIR/train.jsonl")
DEV=$(pick "$DATA_DIR/dev.txt" "$DATA_DIR/dev.tsv" "$DATA_DIR/dev.csv" "$DATA_DIR/dev.jsonl")
if [[ "$MODEL_DIR" == scratch ]]; then
  MODEL=(--from_scratch --preset "${PRESET:-tiny}" --vocab_file "${VOCAB_FILE:?set VOCAB_FILE for scratch}")
else
  MODEL=(--model "$MODEL_DIR")
fi
"${NEZHA:-nezha}" finetune --task classification --data_format "${FORMAT:-lcqmc}" \
  --train_file "$TRAIN" --eval_file "$DEV" "${MODEL[@]}" --output_dir "$OUTPUT_DIR" \
  --max_seq_length "${MAX_SEQ_LENGTH:-128}" --train_batch_size "${BATCH_SIZE:-32}" \
  --num_train_epochs "${EPOCHS:-5}" --learning_rate "${LEARNING_RATE:-3e-5}" --warmup_proportion 0.1 "$@"
echo "metrics written to $OUTPUT_DIR/metrics.json"
