#!/usr/bin/env bash
# CMRC 2018 reading comprehension as the original run_reading.sh (seq 512, doc_stride 128, max_query_length 64,
# n_best 20, max_answer_length 30, batch 4, lr 3e-5, 1 epoch, do_lower_case False), then the official metric:
#   scripts/run_reading.sh DATA_DIR MODEL_DIR OUTPUT_DIR [extra nezha finetune flags...]
# DATA_DIR holds cmrc2018_train.json and cmrc2018_dev.json (SQuAD style). MODEL_DIR: a from_pretrained folder or
# "scratch" (PRESET, VOCAB_FILE). Writes OUTPUT_DIR/predictions.json, nbest_predictions.json and cmrc2018_eval.json.
set -euo pipefail
DATA_DIR=${1:?usage: run_reading.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
MODEL_DIR=${2:?usage: run_reading.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
OUTPUT_DIR=${3:?usage: run_reading.sh DATA_DIR MODEL_DIR OUTPUT_DIR [flags]}
shift 3
TRAIN=${TRAIN_FILE:-$DATA_DIR/cmrc2018_train.json}
DEV=${DEV_FILE:-$DATA_DIR/cmrc2018_dev.json}
if [[ "$MODEL_DIR" == scratch ]]; then
  MODEL=(--from_scratch --preset "${PRESET:-tiny}" --vocab_file "${VOCAB_FILE:?set VOCAB_FILE for scratch}")
else
  MODEL=(--model "$MODEL_DIR")
fi
"${NEZHA:-nezha}" finetune --task mrc --train_file "$TRAIN" --eval_file "$DEV" "${MODEL[@]}" \
  --output_dir "$OUTPUT_DIR" --do_lower_case False \
  --max_seq_length "${MAX_SEQ_LENGTH:-512}" --doc_stride "${DOC_STRIDE:-128}" --max_query_length 64 \
  --n_best_size 20 --max_answer_length 30 --train_batch_size "${BATCH_SIZE:-4}" \
  --num_train_epochs "${EPOCHS:-1}" --learning_rate "${LEARNING_RATE:-3e-5}" --warmup_proportion 0.1 "$@"
"${PYTHON:-python}" "$(dirname "$0")/cmrc2018_evaluate.py" "$DEV" "$OUTPUT_DIR/predictions.json" \
  "$OUTPUT_DIR/cmrc2018_eval.json"
