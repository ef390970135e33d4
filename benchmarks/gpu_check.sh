#!/usr/bin/env bash
# One prepared GPU check of the fused relative-attention kernel, sized for <= 8 minutes on one H100:
#   1. the kernel's correctness tests on the GPU (tests/model/test_triton_attention.py: bf16 and fp32 against the eager
#      path, lengths 1..4096, padding masks, dropout) and, in a subprocess, the Triton-interpreter tests;
#   2. benchmarks/bench_attention_gpu.py: fwd+bwd timings (fused kernel, eager path, SDPA-flash, transformers
#      4.44.2 NezhaSelfAttention) at seq 128/512/2048/8192 and a NezhaForPreTraining step with MFU.
# Writes benchmarks/results/gpu_check.json, gpu_check.md and gpu_check_tests.log (copied to $OUT when set).
#
#   benchmarks/gpu_check.sh                  # on the GPU machine (no network needed)
#   benchmarks/gpu_check.sh --fetch-wheels   # beforehand, on a machine with PyPI: transformers 4.44.2 wheels -> .whl/
#   benchmarks/gpu_check.sh --cpu-smoke      # without a GPU: the same steps at tiny sizes (Triton interpreter)
# Other arguments go to bench_attention_gpu.py (e.g. --peak-tflops 989 --seqs 128,512).
#
# Python: $PYTHON, else the first of python3 / .venv/bin/python that has torch with CUDA and triton. nezha runs from
# src/ (no install). transformers 4.44.2 (for the Nezha baseline; newer releases dropped Nezha) and the tokenizers /
# huggingface-hub versions it insists on are installed from .whl/ into /tmp/nezha-site when that folder exists.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"
RESULTS="$ROOT/benchmarks/results"
mkdir -p "$RESULTS"

MODE=gpu
BENCH_ARGS=()
for arg in "$@"; do
  case "$arg" in
    --cpu-smoke) MODE=cpu ;;
    --fetch-wheels) MODE=fetch ;;
    *) BENCH_ARGS+=("$arg") ;;
  esac
done

if [ "$MODE" = fetch ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info && echo '/.whl/' >> .git/info/exclude; }
  mkdir -p .whl
  exec "${PYTHON:-python3}" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl transformers==4.44.2 tokenizers==0.19.1 huggingface-hub==0.24.6
fi

pick_python() {
  local cand
  for cand in "${PYTHON:-}" python3 .venv/bin/python; do
    [ -n "$cand" ] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if [ "$MODE" = cpu ]; then
      "$cand" -c "import torch, triton" 2>/dev/null && { echo "$cand"; return; }
    else
      "$cand" -c "import torch, triton; assert torch.cuda.is_available()" 2>/dev/null && { echo "$cand"; return; }
    fi
  done
}
if [ "$MODE" = cpu ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY="$(pick_python)"; fi
if [ -z "$PY" ]; then
  echo "gpu_check: no Python with torch + triton ($MODE) found; set PYTHON=..." >&2
  exit 2
fi

export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ "$MODE" = gpu ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/nezha-site \
    .whl/*.whl && export PYTHONPATH="$ROOT/src:/tmp/nezha-site:$PYTHONPATH"
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore

echo "== gpu_check ($MODE) with $PY"
"$PY" - <<'EOF'
import torch, triton
print("torch", torch.__version__, "triton", triton.__version__, "cuda", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(), torch.cuda.get_device_capability())
try:
    import transformers
    print("transformers", transformers.__version__)
except Exception as e:  # the Nezha baseline cell reports it too
    print("transformers not importable:", e)
EOF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv

START=$(date +%s)
echo "== 1. correctness tests"
# Fixed tile sizes for the tests: autotuning every test shape would spend the budget compiling.
if [ "$MODE" = cpu ]; then TEST_LIMIT=300; else TEST_LIMIT=140; fi
NEZHA_TRITON_AUTOTUNE=0 timeout "$TEST_LIMIT" "$PY" -m pytest tests/model/test_triton_attention.py -p no:cacheprovider -rs 2>&1 \
  | tee "$RESULTS/gpu_check_tests.log"
TESTS_RC=${PIPESTATUS[0]}
echo "tests exit code: $TESTS_RC ($(( $(date +%s) - START )) s)"

echo "== 2. benchmark"
if [ "$MODE" = cpu ]; then
  BENCH_LIMIT=400
  "$PY" benchmarks/bench_attention_gpu.py --cpu-smoke "${BENCH_ARGS[@]}"
  BENCH_RC=$?
else
  # Attention table <= 150 s, everything <= 300 s (a late pretraining row is skipped, not cut); results are
  # written after each section, so even a run stopped by the limit leaves its JSON.
  BENCH_LIMIT=320
  timeout "$BENCH_LIMIT" "$PY" benchmarks/bench_attention_gpu.py --budget 150 --total-budget 300 "${BENCH_ARGS[@]}"
  BENCH_RC=$?
fi
echo "benchmark exit code: $BENCH_RC (limit ${BENCH_LIMIT} s; total $(( $(date +%s) - START )) s)"

if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$RESULTS"/gpu_check*.json "$RESULTS"/gpu_check*.md "$RESULTS/gpu_check_tests.log" "$OUT"/ 2>/dev/null || true
fi
[ "$TESTS_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
