# memtape: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_HOME ?= ./memtape-data
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-fast lint bench fuzz clean

$(STAMP): pyproject.toml setup.py memtape/_textcore.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet -e '.[dev,audio]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	MEMTAPE_HOME=$(DEMO_HOME) bash infra/demo.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The inner loop: everything but the tests marked slow (whole pipelines on real data, brokers, kill -9); `make test` runs all.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# mypy cannot follow the editable install's package-dir mapping (connectors/ -> memtape.connectors ...), so it checks
# a tree of links laid out as installed: every memtape.* import then resolves to the repository's own source.
TYPECHECK := build/typecheck
lint: $(STAMP)
	$(BIN)/ruff check .
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)/memtape
	for f in memtape/*; do ln -s "$(CURDIR)/$$f" $(TYPECHECK)/memtape/; done
	for d in connectors transforms schemas pipelines; do ln -s "$(CURDIR)/$$d" $(TYPECHECK)/memtape/$$d; done
	cd $(TYPECHECK) && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p memtape

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(DEMO_HOME) .pytest_cache
