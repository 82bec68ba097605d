#!/usr/bin/env bash
# The whole pipeline on the embedded default, on CPU, writing under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=runs/demo
mkdir -p "$OUT"
$PY -c "import hifigan.meldataset as m, torch; print('mel of 1 s noise:', tuple(m.mel_spectrogram(torch.randn(1, 22050), 1024, 80, 22050, 256, 1024, 0, 8000).shape))"
echo "demo: pipeline steps are added as they land; see README" | tee "$OUT/summary.txt"
