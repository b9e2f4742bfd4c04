# Two commands for a fresh machine with only python3 and pip:  make demo   |   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-isa test-repeat lint format install clean mergekit-venv mergekit-path

$(BIN)/jaxfin: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/jaxfin

demo: install
	$(BIN)/python -m jaxfin.demo

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

clean:
	rm -rf runs
