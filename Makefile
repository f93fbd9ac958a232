# basque_vlm — setup, tests and the embedded demo.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-slow demo bench bench-full clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/runtime.txt requirements/test.txt requirements/tpu.txt \
          requirements/cloud.txt requirements/lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements/lock.txt -r requirements/runtime.txt -r requirements/test.txt \
	  -r requirements/tpu.txt -r requirements/cloud.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q tests

test-slow: setup
	$(BIN)/python -m pytest -q -m slow tests

DEMO_WORKDIR ?= workdir/demo

# Trains configs/demo.py (resumes, or only evaluates, when DEMO_WORKDIR already holds the run).
# Two CPU devices (unless XLA_FLAGS is set): XLA runs the demo's small ops on one core per device.
demo: setup
	XLA_FLAGS="$${XLA_FLAGS:---xla_force_host_platform_device_count=2}" \
	  $(BIN)/python -m basque_vlm.train --config=configs/demo.py --workdir=$(DEMO_WORKDIR)
	$(BIN)/python -m basque_vlm.evaluate --checkpoint=$(DEMO_WORKDIR) \
	  --tasks=demo_vqa_eu,demo_vqa_en --out=$(DEMO_WORKDIR)/eval.json
	@image=$$($(BIN)/python -c 'from basque_vlm.demo import synthetic; \
	  print(synthetic.default_root() / "raw/images/heldout/00000.png")'); \
	  echo "checkpoint: $(DEMO_WORKDIR) (its latest step); chat with it:"; \
	  echo "  $(BIN)/python -m basque_vlm.generate --checkpoint=$(DEMO_WORKDIR) \\"; \
	  echo "    --image=$$image --prompt='Zenbat zirkulu daude irudian?'"

# A smoke run of every benchmark (a few minutes); bench-full writes benchmarks/results/cpu.json.
bench: setup
	$(BIN)/python benchmarks/run.py --quick

bench-full: setup
	$(BIN)/python benchmarks/run.py --json=benchmarks/results/cpu.json

clean:
	rm -rf $(VENV) .cache .pytest_cache
