#!/usr/bin/env bash
# NEZHA pretraining on torchrun: the original toy entry point (2 ranks, batch 32, seq 128, 200 steps), rewritten for
# PyTorch's own distributed engine. On a machine without GPUs it runs on CPU with the gloo backend.
#
#   DATA_DIR=data/shards OUTPUT_DIR=runs/toy VOCAB_FILE=vocab.txt scripts/run_pretraining.sh [extra nezha flags]
#
# Environment variables (defaults in brackets):
#   DATA_DIR            shard folder(s) from `nezha prepare`, or .tfrecord files, comma-separated   [required]
#   OUTPUT_DIR          run folder                                                                    [runs/pretrain]
#   VOCAB_FILE          vocab.txt                                                                     [required]
#   BERT_CONFIG_FILE    bert_config.json of the model; unset: --preset ${PRESET}                     []
#   PRESET              tiny | small | base | large                                                  [base]
#   INIT_CHECKPOINT     from_pretrained folder to continue from                                      []
#   NUM_GPUS            processes per node                                                  [GPUs on the node, or 2]
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   multi-node rendezvous                   [1, 0, localhost, 29500]
#   TRAIN_BATCH_SIZE [32]  MAX_SEQ_LENGTH [128]  MAX_PREDICTIONS_PER_SEQ [20]  NUM_TRAIN_STEPS [200]
#   NUM_WARMUP_STEPS [20]  LEARNING_RATE [1e-4]  OPTIMIZER [lamb]  PRECISION [auto]  SAVE_CHECKPOINTS_STEPS [100]
#   SCALE_LR_WITH_WORLD_SIZE  true: the effective peak rate is LEARNING_RATE x processes, as the original
#                             run_pretraining.py under horovod (learning_rate * hvd.size()); false: as given  [true]
set -euo pipefail

: "${DATA_DIR:?set DATA_DIR to the shard folder(s) made by nezha prepare}"
: "${VOCAB_FILE:?set VOCAB_FILE to the vocab.txt}"
OUTPUT_DIR=${OUTPUT_DIR:-runs/pretrain}
PRESET=${PRESET:-base}
if [[ -z "${NUM_GPUS:-}" ]]; then
  NUM_GPUS=$(python -c "import torch; print(torch.cuda.device_count() or 2)")
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
SCALE_LR_WITH_WORLD_SIZE=${SCALE_LR_WITH_WORLD_SIZE:-true}
LEARNING_RATE=${LEARNING_RATE:-1e-4}
WORLD=$((NNODES * NUM_GPUS))
if [[ "${SCALE_LR_WITH_WORLD_SIZE}" == true ]]; then
  echo "run_pretraining.sh: peak learning rate ${LEARNING_RATE} x ${WORLD} processes, as the original's horovod" \
       "run (set SCALE_LR_WITH_WORLD_SIZE=false to use ${LEARNING_RATE} as is)" >&2
fi

model_flags=(--preset "${PRESET}")
if [[ -n "${BERT_CONFIG_FILE:-}" ]]; then model_flags=(--bert_config_file "${BERT_CONFIG_FILE}"); fi
if [[ -n "${INIT_CHECKPOINT:-}" ]]; then model_flags=(--init_checkpoint "${INIT_CHECKPOINT}"); fi

if [[ "${NNODES}" == 1 ]]; then
  launch=(--standalone --nproc_per_node="${NUM_GPUS}")
else
  launch=(--nnodes="${NNODES}" --node_rank="${NODE_RANK}" --nproc_per_node="${NUM_GPUS}"
          --rdzv_backend=c10d --rdzv_endpoint="${MASTER_ADDR}:${MASTER_PORT}")
fi

exec python -m torch.distributed.run "${launch[@]}" -m nezha.cli pretrain \
  --input_dir "${DATA_DIR}" \
  --output_dir "${OUTPUT_DIR}" \
  --vocab_file "${VOCAB_FILE}" \
  "${model_flags[@]}" \
  --train_batch_size "${TRAIN_BATCH_SIZE:-32}" \
  --max_seq_length "${MAX_SEQ_LENGTH:-128}" \
  --max_predictions_per_seq "${MAX_PREDICTIONS_PER_SEQ:-20}" \
  --num_train_steps "${NUM_TRAIN_STEPS:-200}" \
  --num_warmup_steps "${NUM_WARMUP_STEPS:-20}" \
  --learning_rate "${LEARNING_RATE}" \
  --scale_lr_with_world_size "${SCALE_LR_WITH_WORLD_SIZE}" \
  --optimizer "${OPTIMIZER:-lamb}" \
  --precision "${PRECISION:-auto}" \
  --save_checkpoints_steps "${SAVE_CHECKPOINTS_STEPS:-100}" \
  "$@"
