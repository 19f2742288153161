# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-unit lint venv services postgres postgres-stop queue-config clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Redis (and PostgreSQL 15 if missing) from the distribution's packages; the
# tests and the commands start their own servers on 127.0.0.1 and free ports.
services:
	scripts/install-services

# A local PostgreSQL for development under ./data/postgres (127.0.0.1, a free
# port, run as an unprivileged system user): prints the catalog and tables URIs,
# e.g. `operando serve --catalog-uri URI` with PGPASSFILE as printed.
postgres: $(STAMP) services
	$(BIN)/python -m operando.postgres start data/postgres

postgres-stop: $(STAMP)
	$(BIN)/python -m operando.postgres stop data/postgres

# Both experiments on the simulators on virtual time (as fast as the machine
# allows, the same result whatever its load), into the embedded Tiled under
# ./data, reduced live; figures under ./data/figures/<experiment id>/.
demo: $(STAMP)
	$(BIN)/operando rehearse xct --cycles 2 --projections 61 \
		--postmortem-projections 61 --data-dir data
	$(BIN)/operando rehearse saxs --cycles 1 --grid 5x4 --raster-every 3600 --data-dir data
	@echo "Browse the catalog: $(BIN)/operando serve --data-dir data"

# The pure tests (no subprocess, no IOC, no Tiled server): well under a minute.
# pytest's exit code 5 (no tests collected) is a failure like any other.
test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

# Both tiers: the pure tests, then the integration tests against real IOC
# subprocesses and a real Tiled server (in a process of their own: their
# conftest confines Channel Access to loopback). Exit code 5 fails here too.
# Three pytest-xdist workers, a test file each, the slowest files first
# (tests/integration/conftest.py): part of a test's wall time is its IOC, Tiled or
# queue-server subprocesses waiting on each other (Channel Access round trips on
# virtual time), so a third file keeps the 2 cores busy.
test: test-unit services
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --durations=15 tests/integration

# ruff (pyproject.toml [tool.ruff]): lint and formatting, checked, nothing rewritten.
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The queue server's list of plans and devices (queue/existing_plans_and_devices.yaml),
# regenerated with qserver-list-plans-devices from profile_collection/startup against
# simulators on virtual time and an embedded Tiled started for it (operando queue start
# also rewrites its copy under DATA_DIR/queue each time the environment opens).
queue-config: $(STAMP)
	$(BIN)/operando queue plans-devices --output $(CURDIR)/queue

clean:
	rm -rf $(VENV) data
