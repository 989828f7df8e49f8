# The two commands of the README: `make report` and `make test`.
# Only Python 3.11+ and make are needed: everything else is installed into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SAMPLE := data/sample
OUT    := reports

.PHONY: install report test test-fast benchmarks sample clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11 or newer is needed, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[notebooks,spark,dev]'
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

## the main job on the committed sample: ingest, then the notebooks as HTML reports in reports/
report: $(STAMP)
	$(BIN)/campaign-analytics report --source $(SAMPLE) --table $(OUT)/events --out $(OUT)

## every test: unit, property, doctests and the notebooks under strict nbval
test: $(STAMP)
	$(BIN)/python -m pytest

## the tests without notebooks and slow ones, for the edit-test loop
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" --ignore=notebooks -p no:nbval

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/ingest.py
	$(BIN)/python benchmarks/metrics.py

## regenerate the committed sample payloads (deterministic)
sample: $(STAMP)
	rm -rf $(SAMPLE)
	$(BIN)/campaign-analytics simulate $(SAMPLE) --items 1500 --seed 7 --bad-records 6 --other-triggers 4

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
