# `make test` and `make demo` do all set-up themselves. CI passes TORCH=torch==2.13.0 (the CPU wheel).
TORCH ?= torch
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo fuzz clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(PY) -m ruff check hf_mm tests benchmarks
	$(PY) -m ruff format --check hf_mm tests benchmarks

test: lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

# The property-based fuzzers at full strength (CI runs 25 examples per target inside `make test`).
fuzz: install
	HF_MM_FUZZ_EXAMPLES=10000 $(PY) -m pytest -q -p no:cacheprovider --hypothesis-show-statistics tests/reliability/test_fuzz.py

demo: install
	$(VENV)/bin/hf-mm demo

clean:
	rm -rf $(VENV) build *.egg-info
