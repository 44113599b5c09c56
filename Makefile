# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.allwen-installed

.PHONY: demo test test-slow bench bench-report docs docs-check install clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/allwen demo --out runs/demo

# the suite in pytest-xdist workers, one per CPU (PYTEST_WORKERS=0: one process); work-stealing
# keeps both busy to the end although a few tests take minutes
PYTEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/feature_cache.py

bench-report: $(STAMP)
	$(BIN)/python benchmarks/report_speed.py

# the documentation site (docs/ -> site/), offline; warnings are errors
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# run every `allwen` command of README.md and docs/ that can run here (slow: real-data trainings
# take hours); `make docs-check ARGS=--fast` leaves out the commands that train
docs-check: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tools/docs_check.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
