PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,test]'
	touch $(STAMP)

## run: set up and start the receiver and the poller locally on ./var/ens-status.db
run: $(STAMP)
	$(BIN)/ens-status dev-env var/dev.env
	$(BIN)/ens-status db upgrade
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/honcho -e var/dev.env start web poller

## test: set up and run the test suite
test: $(STAMP)
	$(BIN)/python -m pytest

## demo: the whole product against a local fake SFMC for about a minute, with a summary
demo: $(STAMP)
	$(BIN)/python -m tests.demo

## bench: the performance benchmarks of docs/benchmarks.md (about 2½ minutes)
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) var .pytest_cache
