#!/usr/bin/env bash
# The whole pipeline on the embedded default (NSynth-GM, rendered from the General MIDI SoundFont
# that the pretty_midi package ships), on CPU, writing everything under runs/demo/.
# Every step resumes: rerunning `make demo` skips the stages that finished (see `stage`) and
# resumes the one a kill interrupted.
# Knobs: DEMO_OUT (runs/demo), DEMO_SIZE (small | tiny), DEMO_STEPS (training steps, 3200),
# DEMO_TRAIN_SECONDS (training stops there if DEMO_STEPS is not reached yet, 420: the demo must fit
# in 15 minutes; 3,200 steps take ~400 s on an idle AMD Zen 4 box, a 2-core Xeon with AMX reached
# 2,660-2,890 and an old AMD box in fp32 about 700 in that time; held partials keep improving to
# 3,600: docs/RECIPE.md),
# DEMO_SAMPLES (generated notes, 64), DEMO_GUIDE_STEP (the training step whose EMA is kept to
# autoguide the demo model's samples, 400; empty: unguided samples; docs/RECIPE.md, "Autoguidance"),
# DEMO_SHIPPED (the shipped diffusion model sampled beside the
# demo's own, notes-unet-v3; empty skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${DEMO_OUT:-runs/demo}
SIZE=${DEMO_SIZE:-small}
STEPS=${DEMO_STEPS:-3200}
TRAIN_SECONDS=${DEMO_TRAIN_SECONDS:-420}
SAMPLES=${DEMO_SAMPLES:-64}
CLF_STEPS=${DEMO_CLF_STEPS:-300}
GUIDE_STEP=${DEMO_GUIDE_STEP-400}
KEEP_GUIDE=()
if [ -n "$GUIDE_STEP" ]; then KEEP_GUIDE=(--keep_steps "$GUIDE_STEP"); fi
RUN="$OUT/run"
SHIPPED=${DEMO_SHIPPED-notes-unet-v3}
SHIPPED_DIR="improved_diffusion/weights/$SHIPPED"
if [ -z "$SHIPPED" ] || [ ! -f "$SHIPPED_DIR/args.json" ]; then SHIPPED=""; fi
SHIPPED_RUN="$OUT/$SHIPPED"
# One demo per folder: rerun this script under the lock of $OUT (melcore.run_lock); a second
# `make demo` on the same folder stops at once with one line naming the holder.
if [ "${DEMO_LOCKED:-}" != "$OUT" ]; then
  DEMO_LOCKED="$OUT" exec $PY -m melcore.run_lock --hold "$OUT" --what demo -- bash scripts/demo.sh "$@"
fi
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - t0 ))s] $*"; }
# stage ID TITLE CMD...: run CMD unless stage ID finished before with the same command. A
# stage's stamp ($OUT/.done/ID, holding its command) is written only after it succeeds, so a
# kill at any moment reruns just the stage it hit (training resumes from its checkpoint); once
# a stage runs, every later one runs too (their inputs may have changed).
DONE="$OUT/.done"
mkdir -p "$DONE"
RERUN_REST=""
stage() {
  local id=$1 title=$2
  shift 2
  if [ -z "$RERUN_REST" ] && [ -f "$DONE/$id" ] && [ "$(cat "$DONE/$id")" = "$*" ]; then
    step "$title: done before, skipped"
    return 0
  fi
  RERUN_REST=1
  rm -f "$DONE/$id"
  step "$title"
  "$@"
  printf '%s' "$*" > "$DONE/$id.tmp" && mv "$DONE/$id.tmp" "$DONE/$id"
}

stage render "1/11 render NSynth-GM ($SIZE) -> $OUT/data" \
  $PY -m datasets.nsynth_gm --out "$OUT/data" --size "$SIZE" --seed 0 --workers 2

stage mels "2/11 mels with the universal preset (22.05 kHz analysis, the shipped vocoders') -> $OUT/mels" \
  $PY scripts/prep_mels.py --input "$OUT/data" --output "$OUT/mels" --workers 2

# The shipped model (improved_diffusion/weights/, trained here with the long CPU recipe of
# docs/RECIPE.md): sampled the same way, so the report shows what more training gives. Its run
# folder holds a copy of its args.json and training.json (what the report reads).
if [ -n "$SHIPPED" ]; then
  mkdir -p "$SHIPPED_RUN" && cp "$SHIPPED_DIR/args.json" "$SHIPPED_DIR/training.json" "$SHIPPED_RUN/"
  stage shipped_sample "3/11 sample $SAMPLES whole notes from the shipped model $SHIPPED -> $SHIPPED_RUN" \
    $PY scripts/mel_sample.py --model_path "$SHIPPED" --out_dir "$SHIPPED_RUN/samples" --num_samples "$SAMPLES" \
    --batch_size 16 --sampler dpmpp2m_sde --steps 20 --seed 0
else
  step "3/11 no shipped model to sample (DEMO_SHIPPED empty or $SHIPPED_DIR missing)"
fi

# The notes recipe (docs/RECIPE.md): whole notes (344 frames padded to 352), a 2x4 (mel x frame)
# patch folded into channels, v-prediction with Min-SNR-5 weighting, lr 2e-3 with warm-up, EMA
# with warm-up.
stage train "4/11 train the notes recipe for $STEPS steps (at most $TRAIN_SECONDS s) -> $RUN" \
  env OMP_NUM_THREADS=2 $PY scripts/mel_train.py --data_dir "$OUT/mels" --log_dir "$RUN" --max_steps "$STEPS" \
  --max_train_seconds "$TRAIN_SECONDS" \
  --num_channels 32 --num_res_blocks 1 --channel_mult 1,2,2,2 --attention_resolutions "" \
  --patch_size 2,4 --crop_width 352 --batch_size 8 --lr 2e-3 --lr_warmup_steps 100 \
  --noise_schedule cosine --predict_v True --snr_gamma 5 --ema_rate 0.995 --ema_warmup True \
  --save_interval 400 --keep_checkpoints 2 --val_interval 400 --val_samples 16 \
  --sample_interval 0 --log_interval 100 --num_workers 1 --seed 0 "${KEEP_GUIDE[@]}"

# Autoguidance (Karras et al. 2024): the model steered away from its own early EMA (step
# $GUIDE_STEP, kept by --keep_steps) over the lower 0.7 of the schedule, with weight 2: sharper
# partials and less haze between them (docs/RECIPE.md). A run that stopped before that step
# samples unguided.
GUIDE=()
GUIDE_WORDS="unguided"
if [ -n "$GUIDE_STEP" ]; then
  GUIDE_FILE="$RUN/ema_0.995_$(printf '%06d' "$GUIDE_STEP").pt"
  if [ -f "$GUIDE_FILE" ]; then
    GUIDE=(--guide_model_path "$GUIDE_FILE" --guidance 2 --guidance_interval 0.7)
    GUIDE_WORDS="autoguided by its step-$GUIDE_STEP EMA"
  fi
fi

stage sample "5/11 sample $SAMPLES whole notes (DPM-Solver++(2M) SDE, 20 steps, $GUIDE_WORDS) and vocode them with the shipped note vocoder" \
  $PY scripts/mel_sample.py --model_path "$RUN" --out_dir "$RUN/samples" --num_samples "$SAMPLES" \
  --batch_size 16 --sampler dpmpp2m_sde --steps 20 --seed 0 "${GUIDE[@]}"

stage losses "6/11 losses and bits/dim per split (EMA weights)" \
  $PY scripts/eval_losses.py --model_path "$RUN" --data_dir "$OUT/mels" --weights ema --limit 16 --bpd_limit 1

stage classifier "7/11 train the evaluation classifier (pitch, family, source)" \
  $PY scripts/train_classifier.py --data_dir "$OUT/mels" --out "$OUT/classifier" --max_steps "$CLF_STEPS"

stage metrics "8/11 audio metrics of the samples, with the real-vs-real floor" \
  $PY scripts/audio_metrics.py --real "$OUT/mels" --generated "$RUN/samples" \
  --classifier "$OUT/classifier" --out "$RUN/metrics.json"

if [ -n "$SHIPPED" ]; then
  stage shipped_metrics "9/11 audio metrics of the shipped model's samples" \
    $PY scripts/audio_metrics.py --real "$OUT/mels" --generated "$SHIPPED_RUN/samples" \
    --classifier "$OUT/classifier" --out "$SHIPPED_RUN/metrics.json"
else
  step "9/11 no shipped model to measure"
fi

stage interp "10/11 interpolate between two held-out notes of different families, 7+ semitones apart (DDIM inversion + slerp)" \
  $PY scripts/interpolate.py --model_path "$RUN" --data_dir "$OUT/mels" --pick_endpoints --steps 5 --timestep_respacing ddim25 \
  --out_dir "$RUN/interp"

step "11/11 report"
# `make experiments` (runs/experiments): its table, findings and a link to its own report.
EXP=${DEMO_EXPERIMENTS:-runs/experiments}
EXP_FLAGS=()
if [ -f "$EXP/experiments.json" ]; then EXP_FLAGS=(--experiments "$EXP"); fi
$PY scripts/make_report.py "$RUN" ${SHIPPED:+"$SHIPPED_RUN"} --out "$OUT/report" "${EXP_FLAGS[@]}"

{
  echo "demo finished in $(( $(date +%s) - t0 )) s"
  echo "report:  $OUT/report/index.html  ($OUT/report/report.md)"
  echo "samples: $RUN/samples/*.wav, *.png"
  if [ -n "$SHIPPED" ]; then echo "shipped model $SHIPPED: $SHIPPED_RUN/samples/*.wav, *.png"; fi
  echo "metrics: $RUN/metrics.json; losses: $RUN/losses.json"
} | tee "$OUT/summary.txt"
