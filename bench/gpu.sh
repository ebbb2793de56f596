#!/usr/bin/env bash
# The GPU path measured in one run (about 8 minutes at most on one GPU):
#   1. training samples/s in fp32 and bf16 (bfloat16 autocast), forward and
#      forward+backward per sample, the loader's samples/s from the on-disk float16 cache
#      into device memory, peak memory -- at 48x48x56 (the demo grid) and 96x96x112 (the
#      paper's), bench/train.py;
#   2. every relevance scenario's seconds per session and its ratio to one
#      forward+backward, integrated gradients (scenarios 10 and 12) per session, at both
#      grids, bench/lrp.py.
#
# Usage:  bash bench/gpu.sh                  # cuda (the default)
#         bash bench/gpu.sh --device cpu     # the same on the CPU
#         bash bench/gpu.sh --device cpu --tiny   # a tiny grid, seconds (the test suite)
# PYTHON selects the interpreter (default: .venv/bin/python when present, else python3).
set -euo pipefail

device=cuda
tiny=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --tiny) tiny=1; shift ;;
    *) echo "usage: bash bench/gpu.sh [--device cuda|cpu] [--tiny]" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

if [ "$tiny" = 1 ]; then
  shapes=("16,16,20"); train_args=(--repeats 1 --cache-samples 16 --loader-batch 8)
  lrp_args=(--repeats 1 --ig-steps 4); limit=120
else
  shapes=("48,48,56" "96,96,112"); train_args=(--repeats 3 --cache-samples 560 --loader-batch 70)
  lrp_args=(--repeats 3 --ig-steps 32); limit=200
fi

echo "== $(date -u +%FT%TZ) device $device, torch $("$PYTHON" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")')"
echo "== training step (fp32, bf16), forward, loader"
timeout "$limit" "$PYTHON" bench/train.py --devices "$device" --shapes "${shapes[@]}" \
  --precisions fp32 bf16 "${train_args[@]}"
for shape in "${shapes[@]}"; do
  echo "== relevance scenarios at ${shape//,/x}"
  timeout "$limit" "$PYTHON" bench/lrp.py --device "$device" --shape ${shape//,/ } "${lrp_args[@]}"
done
