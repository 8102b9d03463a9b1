# Two set-up commands for a fresh machine: `make demo` and `make test`. Both create .venv when it is missing.
VENV ?= .venv
PY := $(VENV)/bin/python
SCANNER := $(VENV)/bin/scanner
DEMO ?= demo
# torch is pinned to the wheels that lie on the build machines' disks; a bare `torch` would pull a GB-sized CUDA build.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test test-fast bench gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The demo starts clean each time (its own folder, store and scans), so a second `make demo` works too. It runs a
# sweep (with seed replicas of its finalists), evaluates the finals on a noisier detector, draws what the best trial
# looks at, exports it to ONNX (checked against PyTorch), and writes the report that shows all of it.
demo: install
	rm -rf $(DEMO)/scans $(DEMO)/mlflow.db $(DEMO)/mlruns $(DEMO)/report $(DEMO)/explain $(DEMO)/demo.onnx
	mkdir -p $(DEMO)
	cd $(DEMO) && ../$(SCANNER) data synth --out lartpc_demo.h5 --events 3000 --size 32 --seed 0
	cd $(DEMO) && ../$(SCANNER) data inspect lartpc_demo.h5 --display lartpc_demo.png
	cd $(DEMO) && ../$(SCANNER) run ../search_spaces/demo.yaml
	cd $(DEMO) && ../$(SCANNER) data synth --out lartpc_demo_noisy.h5 --events 3000 --size 32 --seed 0 --noise 0.2 --dead-wires 0.05
	cd $(DEMO) && ../$(SCANNER) evaluate finals-of:demo --data lartpc_demo_noisy.h5 --label noisy
	cd $(DEMO) && ../$(SCANNER) explain best-of:demo --events 6 --out explain
	cd $(DEMO) && ../$(SCANNER) export best-of:demo --out demo.onnx
	cd $(DEMO) && ../$(SCANNER) report demo --out report
	@echo "demo done: open $(DEMO)/report/index.html  (MLflow UI: cd $(DEMO) && ../$(SCANNER) ui)"

test: install
	$(PY) -m pytest -q --durations=15

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# On a machine with CUDA: the GPU paths end to end in <= 5 minutes (docs/gpu.md); without CUDA one line, exit 0.
gpu-check: install
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
