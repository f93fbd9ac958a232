# basque_vlm — setup, tests and the embedded demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/runtime.txt requirements/test.txt requirements/lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements/lock.txt -r requirements/runtime.txt -r requirements/test.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

demo: setup
	@echo "make demo: training on the embedded demo data is not available yet (see README)."

bench: setup
	$(BIN)/python benchmarks/convert_memory.py
	$(BIN)/python benchmarks/decode_throughput.py
	$(BIN)/python benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) .cache .pytest_cache
