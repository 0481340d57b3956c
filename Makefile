# `make test` and `make demo` do all set-up themselves. CI passes TORCH=torch==2.13.0 (the CPU wheel).
TORCH ?= torch
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test lint demo fuzz clean test-compat compat-leg coinstall test-torch-newest test-zero3

# The other end of the transformers window. Each leg has its own venv: 5.16.1 with every other dependency at the
# lower bound pyproject.toml declares (.ci/lowest.txt), and the newest 5.20 (the highest vLLM 0.33 accepts) with the
# newest of the rest. A leg runs the parity, generation, save/load and training-smoke tests (COMPAT_TESTS).
COMPAT_LEGS ?= 5.16.1 5.20.2
COMPAT_TESTS ?= tests/convert tests/modeling tests/conformance/test_generation.py \
	tests/conformance/test_with_images.py tests/conformance/test_output_classes.py tests/test_auto_and_pipeline.py \
	tests/test_remote_code.py tests/reliability/test_safetensors_only.py tests/training/test_sft.py \
	tests/training/test_dpo.py tests/training/test_gradient_accumulation.py tests/test_hub.py \
	tests/data tests/test_compare.py tests/reliability/test_fuzz.py tests/processing \
	tests/test_serving_contract.py tests/test_export_transformers.py

$(PY):
	python3 -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# lmms-eval for its CLI test, without its GPU stack (torchvision, opencv, wandb ...): the extra `eval` installs
	# it whole; CI takes what its CLI imports for a generate_until task (.ci/lmms-eval.txt).
	$(PY) -m pip install -q --no-deps "lmms-eval==0.7.3"
	$(PY) -m pip install -q -r .ci/lmms-eval.txt
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

test-compat:
	@for v in $(COMPAT_LEGS); do $(MAKE) --no-print-directory compat-leg LEG=$$v || exit 1; done

# One leg: `make compat-leg LEG=5.16.1`. The lowest leg pins every runtime dependency to its lower bound.
compat-leg:
	test -x .venv-tf$(LEG)/bin/python || python3 -m venv .venv-tf$(LEG)
	.venv-tf$(LEG)/bin/python -m pip install -q --upgrade pip
	.venv-tf$(LEG)/bin/python -m pip install -q "$(TORCH)"
	.venv-tf$(LEG)/bin/python -m pip install -q -e ".[dev]" "transformers==$(LEG)" \
		$(if $(filter $(LEG),$(firstword $(COMPAT_LEGS))),-c .ci/lowest.txt)
	.venv-tf$(LEG)/bin/python -c "import transformers, torch; print('leg', transformers.__version__, torch.__version__)"
	.venv-tf$(LEG)/bin/python -m ruff check -q hf_mm tests benchmarks
	.venv-tf$(LEG)/bin/python -m pytest -q -p no:cacheprovider $(COMPAT_TESTS)

# DeepSpeed ZeRO-3 on 2 CPU processes, in its own venv: deepspeed's engine directly (test_zero3.py) and the SFT CLI
# through `accelerate launch` (test_accelerate_zero3.py). deepspeed ships only as an sdist whose build imports torch:
# built without isolation against this venv's CPU torch (an isolated build would fetch a CUDA torch of several GB).
test-zero3:
	test -x .venv-zero3/bin/python || python3 -m venv .venv-zero3
	.venv-zero3/bin/python -m pip install -q --upgrade pip setuptools wheel
	.venv-zero3/bin/python -m pip install -q "$(TORCH)"
	.venv-zero3/bin/python -m pip install -q -e ".[dev]"
	.venv-zero3/bin/python -m pip install -q --no-build-isolation "deepspeed==0.19.8"
	DS_ACCELERATOR=cpu .venv-zero3/bin/python -m pytest -q -p no:cacheprovider tests/training/test_zero3.py tests/training/test_accelerate_zero3.py

# pip's resolver: hf-mm beside vLLM 0.33, SGLang 0.5.23 and TRL's vLLM extra (metadata only, about a minute).
coinstall: install
	scripts/coinstall.sh $(PY)

# The newest torch on PyPI (a CUDA build of several GB; not in CI). PIP_CONFIG_FILE=/dev/null lifts a machine-wide
# pip cap on torch where one is set; the rest of the stack is the newest too.
test-torch-newest:
	test -x .venv-torch-newest/bin/python || python3 -m venv .venv-torch-newest
	PIP_CONFIG_FILE=/dev/null .venv-torch-newest/bin/python -m pip install -q --upgrade pip torch -e ".[dev]"
	.venv-torch-newest/bin/python -m pytest -q -p no:cacheprovider

demo: install
	$(VENV)/bin/hf-mm demo

clean:
	rm -rf $(VENV) .venv-tf* build *.egg-info
