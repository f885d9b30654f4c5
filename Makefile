# earthloop — the two commands of a newcomer:
#   make demo   set up, generate the embedded demo data, start the local stack, run the loop
#   (make demo-round: label the queued tasks with a simulated annotator, then the next round)
#   make test   set up and run every test (unit + integration against real servers)
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= configs/demo.yaml
DATA ?= data/synthetic
export RAY_AUTH_MODE ?= token

.PHONY: setup data stack-up stack-down demo demo-round test test-unit lint bench bench-remote clean

setup:
	@infra/local/setup.sh

data: setup
	$(VENV)/bin/earthloop sample-data --preset demo_world --out $(DATA)

stack-up: setup
	infra/local/stack.sh up $(DATA)

stack-down:
	infra/local/stack.sh down

demo: data stack-up
	infra/local/demo.sh $(CONFIG)

# After `make demo`: simulated annotator on the queued tasks, sync-labels, then the next round.
demo-round:
	infra/local/demo_round.sh $(CONFIG)

# env.sh: one Ray auth mode and the project's own token (.stack/ray_auth_token) for every client.
test: setup
	source infra/local/env.sh && $(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: setup
	source infra/local/env.sh && $(PY) -m pytest -q -m "not integration" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff format --check platform jobs labeling tests benchmarks
	$(VENV)/bin/ruff check platform jobs labeling tests benchmarks
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/stream_bench.py

# remote COGs: nginx + latency proxies on loopback (infra/local/cogs.sh), TorchGeo in .venv-bench
bench-remote: setup
	bash benchmarks/setup_bench_venv.sh
	$(PY) benchmarks/remote_bench.py --json docs/results/stream_remote.json

clean: stack-down
	rm -rf runs .stack
