#!/usr/bin/env bash
# The GPU benchmark, one prepared command for a machine with one NVIDIA GPU and JAX + PyTorch
# installed: trains the ~1.3B LLaVA preset (benchmarks/presets.py: Llama-3.2-1B shapes + CLIP
# ViT-B/16) in bfloat16 for a few steps, ours and transformers' LLaVA + PyTorch AdamW side by side
# in one process (tokens/s, MFU against the chip's datasheet bf16 peak and against a measured
# 8192^3 bf16 matmul), then decodes with it at batch 1 and 8 (tokens/s against the bound set by
# reading the weights at the measured memory bandwidth).
#
#   benchmarks/gpu.sh [--small] [--out=DIR]
#
# --small shrinks everything to the demo model (runs on CPU too: how it is tested). Results go
# to DIR (default benchmarks/results): gpu_train.json, and gpu_decode.log (its last line JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

small=0
out=benchmarks/results
for arg in "$@"; do
  case "$arg" in
    --small) small=1 ;;
    --out=*) out="${arg#--out=}" ;;
    *) echo "gpu.sh: unknown argument $arg (--small, --out=DIR)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
PYTHON=${PYTHON:-python3}
# PyTorch shares the GPU with JAX in the same process: JAX must not take 75% of it up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" - <<'PY'
import jax, torch, transformers, flax, optax
print(f"jax {jax.__version__} ({jax.default_backend()}: {jax.devices()[0].device_kind}), "
      f"flax {flax.__version__}, optax {optax.__version__}, torch {torch.__version__} "
      f"(cuda: {torch.cuda.is_available()}), transformers {transformers.__version__}", flush=True)
PY

if [ "$small" = 1 ]; then
  train=(--presets=demo --reps=1 --steps=1)
  decode=(--preset=demo --reps=1 --new_tokens=8 --prompt_length=16)
else
  train=(--presets=1b --reps=3 --steps=3)
  decode=(--preset=1b --reps=3 --new_tokens=128 --prompt_length=128)
fi
"$PYTHON" benchmarks/train_throughput.py "${train[@]}" --dtype=bfloat16 \
  --json="$out/gpu_train.json"
"$PYTHON" benchmarks/decode_throughput.py "${decode[@]}" --dtype=bfloat16 | tee "$out/gpu_decode.log"
