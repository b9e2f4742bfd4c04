# Two commands for a fresh machine with only python3 and pip:  make demo   |   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo findings test test-isa test-repeat lint format install clean mergekit-venv mergekit-path compile-venv compile-check

$(BIN)/jaxfin: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/jaxfin

demo: install
	$(BIN)/python -m jaxfin.demo

# The seed systems' findings reproduced in miniature (jaxfin/recipe/findings.py): runs/findings/findings.md and
# .json, and the README's findings table rewritten from them (about 15-20 min on 2 cores; reruns resume)
findings: install
	$(BIN)/jaxfin findings --readme README.md

lint: install
	$(BIN)/ruff check jaxfin tests benchmarks tools
	$(BIN)/ruff format --check jaxfin tests benchmarks tools

format: install
	$(BIN)/ruff format jaxfin tests benchmarks tools
	$(BIN)/ruff check --fix jaxfin tests benchmarks tools

test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

# The numerics-heavy tests again with XLA:CPU capped to an older vector ISA (--xla_cpu_max_isa: SSE4_2, AVX,
# AVX2, AVX512 on x86; NEON, SVE on ARM), a second CPU code path (other lane widths, other summation orders), in
# its own compilation cache. ISA=AVX2 make test-isa picks another cap.
ISA ?= SSE4_2
NUMERICS_TESTS := tests/test_model_packing.py tests/test_attention.py tests/test_attention_training.py \
	tests/test_hf.py tests/test_lora.py tests/test_loss_and_optimizer.py tests/test_dtypes.py \
	tests/test_preference.py tests/test_parallel.py tests/test_merge_methods.py tests/test_eval_text.py
test-isa: install
	XLA_FLAGS="$(XLA_FLAGS) --xla_cpu_max_isa=$(ISA)" JAX_COMPILATION_CACHE_DIR=/tmp/jaxfin-test-xla-cache-$(ISA) \
		$(BIN)/python -m pytest -q -n 2 --dist loadfile $(NUMERICS_TESTS)

# The numerics files three more times, each in another shuffled order (pytest-randomly; the seed is printed, and
# `--randomly-seed=N` replays one, `-p no:randomly` turns it off): no test may depend on what ran before it.
test-repeat: install
	for seed in 1 2 3; do $(BIN)/python -m pytest -q -n 2 --dist loadfile -p no:cacheprovider \
		--randomly-seed=$$seed $(NUMERICS_TESTS) || exit 1; done

# mergekit itself, for tests/test_merge.py's parity tests (JAXFIN_MERGEKIT=<its mergekit-yaml>; they skip without it)
# and `jaxfin bench merge --mergekit`: a side venv of its own (its pins are not jaxfin's), outside the clone so
# that it is kept between CI runs, named by version so that a bump builds a new one. CPU torch pinned as in
# pyproject's test extra. `.ci/run` builds it and exports JAXFIN_MERGEKIT=$(make -s mergekit-path) for make test.
MERGEKIT_VERSION := 0.1.5
MERGEKIT_VENV ?= /tmp/jaxfin-mergekit-$(MERGEKIT_VERSION)
MERGEKIT_STAMP := $(MERGEKIT_VENV)/.jaxfin-installed

$(MERGEKIT_STAMP):
	$(PY) -m venv --clear $(MERGEKIT_VENV)
	$(MERGEKIT_VENV)/bin/pip install -q --upgrade pip
	$(MERGEKIT_VENV)/bin/pip install -q "mergekit==$(MERGEKIT_VERSION)" "torch==2.13.0"
	$(MERGEKIT_VENV)/bin/mergekit-yaml --help > /dev/null
	touch $@

mergekit-venv: $(MERGEKIT_STAMP)

mergekit-path:
	@echo $(MERGEKIT_VENV)/bin/mergekit-yaml

# Real TPU compilation on this CPU host (tests/test_tpu_compile.py, `jaxfin compile --topology v5p-64`): the TPU build
# of the project's own jax version (libtpu) in a side venv outside the clone, named by that version, with the
# project's runtime dependencies; the clone's code runs from PYTHONPATH (nothing stale installed). libtpu normally
# allows one process per machine: ALLOW_MULTIPLE_LIBTPU_LOAD lets the two test workers (and anything else) share it.
JAX_VERSION = $(shell $(BIN)/python -c "import jax; print(jax.__version__)" 2>/dev/null)
TPU_VENV ?= /tmp/jaxfin-tpu-$(JAX_VERSION)
TPU_RUN := PYTHONPATH=$(CURDIR) ALLOW_MULTIPLE_LIBTPU_LOAD=1 JAX_ENABLE_COMPILATION_CACHE=false $(TPU_VENV)/bin/python

compile-venv: install
	test -x $(TPU_VENV)/bin/python || $(PY) -m venv $(TPU_VENV)
	$(TPU_VENV)/bin/pip install -q --upgrade pip
	$(TPU_VENV)/bin/pip install -q "jax[tpu]==$(JAX_VERSION)" "pytest>=8" "pytest-xdist>=3" \
		$$($(BIN)/python -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))")

compile-check: compile-venv
	$(TPU_RUN) -m pytest -q -n 2 -p no:cacheprovider tests/test_tpu_compile.py

clean:
	rm -rf runs
