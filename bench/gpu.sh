#!/usr/bin/env bash
# The engine benchmark (bench/bench_engine.py) on one GPU, in float16/bfloat16.
#
#   bash bench/gpu.sh                 # from the repository root; no internet needed
#   OUT=/some/folder bash bench/gpu.sh
#
# Builds its own model pair on the GPU machine (bench/pairs.py: a random-init Llama System 2 of
# ~0.5B parameters and a System 1 made of its first 2 layers, so the two agree often), then
# times the same runs and ratios as the CPU benchmark (DTYPES="bfloat16 float16" for both;
# HIDDEN, LAYERS, DRAFT_LAYERS, TAIL_SCALE, INIT_STD, NEW_TOKENS, REPEATS override sizes). Writes
# $OUT/engine_gpu_<dtype>.json and
# $OUT/engine_gpu.log (default OUT: bench/out) and prints one table per dtype.
# Needs python3 with torch (CUDA), transformers >= 5, tokenizers, pandas, pyarrow, tqdm;
# fsgen is used from this checkout (PYTHONPATH), it need not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"

DEVICE="${DEVICE:-cuda}"  # DEVICE=cpu only to smoke-test this script on a machine without a GPU
DEVICE="$DEVICE" "$PY" - <<'PY'
import os, torch, transformers
if os.environ["DEVICE"].startswith("cuda"):
    assert torch.cuda.is_available(), "no CUDA device visible"
    print("gpu", torch.cuda.get_device_name(0))
print("torch", torch.__version__, "transformers", transformers.__version__)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

MODELS="$(mktemp -d /tmp/fsgen-gpu-bench.XXXXXX)"
trap 'rm -rf "$MODELS"' EXIT
for DTYPE in ${DTYPES:-bfloat16}; do
  "$PY" bench/bench_engine.py --device "$DEVICE" --dtype "$DTYPE" \
      --hidden "${HIDDEN:-2048}" --layers "${LAYERS:-12}" --heads 16 --draft-layers "${DRAFT_LAYERS:-2}" --init-std "${INIT_STD:-0.1}" \
      --tail-scale "${TAIL_SCALE:-0.05}" --new-tokens "${NEW_TOKENS:-64}" --repeats "${REPEATS:-2}" \
      --models "$MODELS/$DTYPE" --out "$OUT/engine_gpu_${DTYPE}.json" 2>&1 \
    | grep -v -e "Loading weights" -e "Writing model shards" -e FutureWarning -e "return forward_call" \
    | tee -a "$OUT/engine_gpu.log"
done
