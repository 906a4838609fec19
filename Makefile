# The two commands of the README: `make demo` (main job) and `make test` (test suite).
# Each creates .venv from Python 3.12 when missing.
PY := .venv/bin/python
export OMP_NUM_THREADS ?= 1

.PHONY: venv demo test test-slow bench clean-venv

venv:
	@scripts/bootstrap.sh dev

demo: venv
	$(PY) -m experiments.ethanol_schnet --scale demo

test: venv
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

clean-venv:
	rm -rf .venv
