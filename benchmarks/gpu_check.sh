#!/usr/bin/env bash
# GPU checks for a CUDA machine (the CI box has none). Run from the repo root after `make install`:
#   bash benchmarks/gpu_check.sh            # ~5-10 minutes on one H100-class GPU
# Writes benchmarks/results/gpu/*.json and RESULTS.md; paste the table into README "Benchmarks".
#  1. GPU-marked tests (fast-mode numerics on CUDA)
#  2. training step: fast mode in bf16 and in fp16 vs upstream mode (fp32, einsum, NCHW, loops), batch 8 and 32
#  3. DDIM-50 sampling of 4 s notes (80 x 256) at batch 1 and 32, vs 1000-step ancestral
#  4. vocoder real-time factors (V1 universal, V2, V3), 4 s of audio per call
#  5. mel_train under torchrun with NCCL, 2 processes (one GPU per rank: needs 2 GPUs;
#     with one GPU it runs 1 process and says so), tiny mel set, 20 steps
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
"$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('cuda:', ok, torch.cuda.get_device_name(0) if ok else ''); sys.exit(0 if ok else 1)" \
  || { echo "error: no CUDA device; this script is for a GPU machine" >&2; exit 2; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

echo "== 1. GPU tests"
"$PY" -m pytest -q -m gpu tests/ || echo "GPU TESTS FAILED"

echo "== 2. training step (bf16, then fp16)"
"$PY" benchmarks/bench_train.py --device cuda --json "$OUT/train.json" >/dev/null
"$PY" benchmarks/bench_train.py --device cuda --precision fp16 --json "$OUT/train_fp16.json" >/dev/null
"$PY" -c "import json; r = json.load(open('$OUT/train_fp16.json')); print('fp16: ratio', round(r['ratio'], 2), 'samples/s', round(r['samples_per_s'], 1), 'memory ratio', round(r['peak_mb_ratio'], 2))"

echo "== 3. sampling"
"$PY" benchmarks/bench_sample.py --device cuda --json "$OUT/sample.json" >/dev/null

echo "== 4. vocoder"
"$PY" benchmarks/bench_vocoder.py --device cuda --json "$OUT/vocoder.json" >/dev/null

echo "== 5. torchrun + NCCL"
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())")
NPROC=2
if [ "$NGPU" -lt 2 ]; then
  echo "only $NGPU GPU: NCCL needs one GPU per rank, running 1 process (rerun on a 2-GPU machine for the 2-rank check)"
  NPROC=1
fi
TINY="$OUT/tiny"
rm -rf "$TINY"
"$PY" -c "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); from tiny_mels import make_melset; make_melset(Path('$TINY/mels'))"
"$PY" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" scripts/mel_train.py \
  --data_dir "$TINY/mels" --log_dir "$TINY/run" --num_mels 16 --crop_width 16 --num_channels 32 \
  --num_res_blocks 1 --channel_mult 1,2 --attention_resolutions "" --batch_size 4 --max_steps 20 \
  --save_interval 20 --log_interval 5 --val_interval 0 --sample_interval 0 --num_workers 0 --precision bf16
ls "$TINY/run" | grep -E '^(model|ema|opt)' | tail -3

"$PY" benchmarks/report.py "$OUT" --out "$OUT/RESULTS.md"
