# Two commands for a fresh machine with only python3 and pip:  make demo   |   make test
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-isa lint format install clean

$(BIN)/jaxfin: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/jaxfin

demo: install
	$(BIN)/python -m jaxfin.demo

lint: install
	$(BIN)/ruff check jaxfin tests benchmarks
	$(BIN)/ruff format --check jaxfin tests benchmarks

format: install
	$(BIN)/ruff format jaxfin tests benchmarks
	$(BIN)/ruff check --fix jaxfin tests benchmarks

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

clean:
	rm -rf runs
