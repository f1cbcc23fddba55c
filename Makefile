# pgmdl: two commands on a fresh machine with only Python 3.10+:
#   make demo   - install into .venv and run the main job end to end
#   make test   - install into .venv and run the test suite
#   make docs   - build the API reference (Sphinx, warnings are errors) into docs/_build/html
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint docs bench clean

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

# The API reference, generated from the docstrings (docs/api/conf.py writes one
# page per module into docs/api/generated/). Offline: no intersphinx, MathJax
# is only referenced by the pages. -W --keep-going: every warning is listed,
# then the build fails; nitpicky (set in conf.py): every pgmdl reference resolves.
docs: install
	$(BIN)/python -m sphinx -b html -W --keep-going docs/api docs/_build/html
	@echo "API reference: docs/_build/html/index.html"

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
	rm -rf $(VENV) pgmdl-demo .pytest_cache docs/_build docs/api/generated
