# Two commands on a fresh clone: `make demo` and `make test`. Each bootstraps .venv itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test reliability bench client-size clean venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The workers (server extra), the embedded broker and the test tools; quiet about the
	# editable install's advice, which a checkout of this layout does not need.
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[server,embedded,test]'
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

# What `pip install riverrun` (the client, no extras) installs: names and megabytes, as JSON.
client-size: $(STAMP)
	$(BIN)/python tests/e2e/client_install.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
