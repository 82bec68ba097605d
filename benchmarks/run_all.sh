#!/usr/bin/env bash
# Run every benchmark, write benchmarks/results/*.json and RESULTS.md, print the table.
# `make bench` runs this; about 5-8 minutes on 2 CPU cores. Extra arguments (e.g. --quick)
# go to every benchmark of this folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=benchmarks/results
mkdir -p "$OUT"

run() {  # name, script, args...
  local name=$1 script=$2
  shift 2
  echo "== $name: $script $*" >&2
  local start=$SECONDS
  "$PY" "$script" --json "$OUT/$name.json" "$@" >/dev/null
  echo "   $name took $((SECONDS - start)) s" >&2
}

run train benchmarks/bench_train.py "$@"
run sample benchmarks/bench_sample.py "$@"
run vocoder benchmarks/bench_vocoder.py "$@"
if [ -f benchmarks/bench_data.py ] && [[ " $* " != *" --quick "* ]]; then
  run data benchmarks/bench_data.py
fi
"$PY" benchmarks/report.py "$OUT" --out "$OUT/RESULTS.md"
