# Set-up and entry points. `make demo` and `make test` work on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format report setup sysdeps clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements-dev.txt
	touch $(STAMP)

## Run the whole workflow on the embedded demo data (config/config.yaml).
demo: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --cores all

## Debian packages used by some tests (KMC, Chromium, SLURM...): installed when root, else skipped.
sysdeps:
	bash tools/sysdeps.sh

## Run the whole test suite (unit tests + end-to-end workflow tests).
test: $(STAMP) sysdeps
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q

## Formatting and lint: snakefmt (Snakefile, rules/*.smk), ruff (Python), snakemake --lint.
## `make format` applies snakefmt and ruff's safe fixes.
lint: $(STAMP)
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/ruff check .
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/snakefmt Snakefile rules
	$(BIN)/ruff check --fix .

## HTML report of the demo run.
report: $(STAMP)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/snakemake --report results/report.html

clean:
	rm -rf results .snakemake
