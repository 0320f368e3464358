# Two commands on a fresh clone: `make demo` and `make test`. Each bootstraps .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test reliability bench lint clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[server,embedded,test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/riverrun demo $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The long fault-injection profile (tests/reliability; make test runs its short profile).
# Figures go to .reliability/long.json, which RELIABILITY.md quotes.
reliability: $(STAMP)
	RIVERRUN_RELIABILITY=long $(BIN)/python -m pytest tests/reliability -m reliability \
		--timeout=2700 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/riverrun bench --json $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
