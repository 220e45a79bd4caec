# Every target creates the virtualenv it needs: a fresh machine needs Python >= 3.11 and make.
# The environment is installed from uv.lock (exact versions, hashes checked), never from
# whatever the package index serves today; `make lock` is the one way to move those versions.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
UV := $(BIN)/uv
STAMP := $(VENV)/.installed
LOWEST ?= .venv-lowest
# The first test session waits on servers far more than it computes: four processes, each
# with its own embedded Redis, fleet and in-process worker (tests/conftest.py), halve it.
TEST_WORKERS ?= 4
# The second session spawns `celery worker` processes: three test processes at a time.
E2E_WORKERS ?= 3
# uv installs into our .venv (not one of its own) and never downloads an interpreter.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never

.PHONY: demo test test-faults lint lint-lowest lock lock-check bench clean schema

$(UV):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check uv==$(UV_VERSION)

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync -q --frozen --inexact --extra dev
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deployer demo

test: $(STAMP) lock-check
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -m "not faults and not e2e" -n $(TEST_WORKERS) --dist loadfile
	$(BIN)/pytest -m "e2e and not faults" -n $(E2E_WORKERS) --dist loadfile

test-faults: $(STAMP)
	$(BIN)/pytest -m faults

lint: $(STAMP) lock-check
	$(BIN)/ruff check .
	$(BIN)/mypy

# uv.lock must answer pyproject.toml: a range edited without `make lock` fails here, loudly.
lock-check: | $(UV)
	$(UV) lock --check

# Move the pinned versions to today's index (within pyproject's ranges), then run `make test`.
lock: | $(UV)
	$(UV) lock --upgrade
	rm -f $(STAMP)

# The oldest release of every direct dependency that pyproject.toml admits must type-check too:
# people who install deployer into their own environment get anything in those ranges.
lint-lowest: | $(UV)
	$(UV) venv -q --allow-existing --python $(BIN)/python $(LOWEST)
	VIRTUAL_ENV=$(LOWEST) $(UV) pip install -q --resolution lowest-direct -e . \
	  $$($(UV) export -q --frozen --extra dev --no-hashes --no-emit-project \
	     | grep -E '^(mypy|types-pyyaml)==' | tr '\n' ' ')
	$(LOWEST)/bin/mypy

# docs/schema/plan.v1.json from the models that validate plans (a test compares the two)
schema: $(STAMP)
	$(VENV)/bin/python -m deployer.contract --write

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) $(LOWEST) build dist *.egg-info
