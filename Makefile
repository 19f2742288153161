# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Both experiments on the simulators on virtual time (as fast as the machine
# allows, the same result whatever its load), into the embedded Tiled under
# ./data, reduced live; figures under ./data/figures/<experiment id>/.
demo: $(STAMP)
	$(BIN)/operando rehearse xct --cycles 2 --projections 61 \
		--postmortem-projections 61 --data-dir data
	$(BIN)/operando rehearse saxs --cycles 1 --grid 5x4 --raster-every 3600 --data-dir data
	@echo "Browse the catalog: $(BIN)/operando serve --data-dir data"

# The whole suite against real IOC subprocesses and a real Tiled server.
# pytest's exit code 5 (no tests collected) is a failure like any other.
test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data
