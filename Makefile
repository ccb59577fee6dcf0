# The commands of the Quickstart. Each does its own set-up on a fresh machine.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: run test lab bench setup-run setup-test setup-lab lint clean

run: setup-run
	$(PY) runners/run_all.py $(ARGS)

# Unit, integration, end-to-end, fault and security tests, the notebooks (nbmake) and a benchmark smoke pass.
test: setup-test
	$(PY) -m pytest tests notebooks benchmarks --nbmake $(PYTEST_ARGS)

# JupyterLab on notebooks/ with the project's kernel (.venv). LAB_ARGS="--port 8899 --no-browser" etc.
# (As root, e.g. in a container, JupyterLab wants --allow-root.)
lab: setup-lab
	.venv/bin/jupyter lab --notebook-dir notebooks $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

bench: setup-test
	$(PY) benchmarks/run_bench.py $(ARGS)

lint: setup-test
	.venv/bin/ruff check fbvision runners export benchmarks tests
	.venv/bin/lint-imports

setup-run:
	@bash scripts/setup.sh run

setup-test:
	@bash scripts/setup.sh test

setup-lab:
	@bash scripts/setup.sh lab

clean:
	rm -rf .venv .pytest_cache .benchmarks runs
