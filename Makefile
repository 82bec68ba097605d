# Two commands for a fresh machine: `make demo` and `make test` (and `make experiments`, ~42 min).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo experiments bench lint clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check .
	OMP_NUM_THREADS=2 $(PY) -m pytest -q

demo: $(STAMP)
	bash scripts/demo.sh

# The preset arms (evaluation/presets/experiments.json) into runs/experiments, reusing runs/demo's
# data and classifier when they are there; SOUNDFONT=PATH (or none) picks the zero-shot set;
# EXPERIMENTS_FLAGS=--list prints the arms and the budget. A rerun resumes.
SOUNDFONT ?=
EXPERIMENTS_FLAGS ?=
experiments: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) scripts/run_experiments.py --out runs/experiments --reuse runs/demo \
	  $(if $(SOUNDFONT),--soundfont $(SOUNDFONT)) $(EXPERIMENTS_FLAGS)

bench: $(STAMP)
	bash benchmarks/run_all.sh

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) runs/demo runs/experiments
