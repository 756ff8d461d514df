# memtape: the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_HOME ?= ./memtape-data
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench fuzz clean

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

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

FUZZ_SECONDS ?= 60
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(DEMO_HOME) .pytest_cache
