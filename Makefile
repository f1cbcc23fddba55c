# pgmdl: two commands on a fresh machine with only Python 3.10+:
#   make demo   - install into .venv and run the main job end to end
#   make test   - install into .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	-$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins torch to the CPU build this machine ships (no CUDA download)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	bash scripts/install-graphviz.sh
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/pgmdl demo

test: install
	$(BIN)/python -m ruff check pgmdl models tests benchmarks
	$(BIN)/python -m pytest

lint: install
	$(BIN)/python -m ruff check pgmdl models tests benchmarks
	$(BIN)/python -m ruff format --check pgmdl models tests benchmarks

bench: install
	$(BIN)/python benchmarks/compile_scale.py
	$(BIN)/python benchmarks/invert_scale.py
	$(BIN)/python benchmarks/step_overhead.py
	$(BIN)/python benchmarks/variance_learning.py
	$(BIN)/python benchmarks/multiset_scale.py
	$(BIN)/python benchmarks/compvae_evidence.py
	$(BIN)/python benchmarks/btgm_overhead.py
	$(BIN)/python benchmarks/btgm_households.py
	$(BIN)/python benchmarks/btgm_digits.py
	$(BIN)/python benchmarks/missing_digits.py
	$(BIN)/python benchmarks/conformance.py
	$(BIN)/python benchmarks/guide_quality.py

clean:
	rm -rf $(VENV) pgmdl-demo .pytest_cache
