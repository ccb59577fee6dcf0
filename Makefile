# The commands of the Quickstart. Each does its own set-up on a fresh machine.
PY := .venv/bin/python
PYTEST_ARGS ?=
# Each pass ends with its slowest tests (the CI log is the suite's time profile).
DURATIONS ?= --durations=30 --durations-min=5

.PHONY: run test lab bench setup-run setup-test setup-lab lint clean

run: setup-run
	$(PY) runners/run_all.py $(ARGS)

# Unit, integration, end-to-end, fault and security tests, the notebooks (nbmake) and a benchmark smoke pass,
# in two passes (conftest.py): the parallel-safe tests two at a time, then the serial ones alone. Both always run;
# exit 5 (nothing selected, e.g. PYTEST_ARGS naming one file) counts as passed.
test: setup-test
	@$(PY) -m pytest tests notebooks benchmarks --nbmake -m "not serial" -n 2 --dist worksteal $(DURATIONS) $(PYTEST_ARGS); a=$$?; \
	$(PY) -m pytest tests notebooks benchmarks --nbmake -m serial $(DURATIONS) $(PYTEST_ARGS); b=$$?; \
	echo "make test: parallel pass exit $$a, serial pass exit $$b"; \
	{ [ $$a -eq 0 ] || [ $$a -eq 5 ]; } && { [ $$b -eq 0 ] || [ $$b -eq 5 ]; }

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
