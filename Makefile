# The two set-up commands of the README:
#   make demo   installs (into .venv) and runs the whole mission on the embedded demo world
#   make test   installs (into .venv) and runs the test suite, as .ci/run does
# torch is installed first, pinned, so that no CUDA wheels are ever pulled on a CPU machine.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
PRESET ?= small
OUT    ?= demo-run
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck bench clean install system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[training,dev]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/terracorpus demo --preset $(PRESET) --out $(OUT)

test: $(VENV)/.installed lint system-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The report's browser test needs Debian's chromium; installed when we may (root + apt).
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (Debian) for the report's browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no chromium; the report's browser test will be skipped"; fi; }

lint: $(VENV)/.installed
	$(BIN)/ruff check catalogs curation pipelines training tests benchmarks
	$(BIN)/ruff format --check catalogs curation pipelines training tests benchmarks
	$(MAKE) --no-print-directory typecheck

# mypy does not run import hooks, so it cannot see the editable package-dir mapping;
# give it a tree of links shaped like the installed namespace.
typecheck: $(VENV)/.installed
	@mkdir -p build/typecheck/terracorpus
	@for p in catalogs curation pipelines training; do ln -sfn ../../../$$p build/typecheck/terracorpus/$$p; done
	cd build/typecheck && MYPYPATH=. ../../$(BIN)/mypy --config-file ../../pyproject.toml --explicit-package-bases \
		-p terracorpus.catalogs -p terracorpus.curation -p terracorpus.pipelines -p terracorpus.training

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks --all

clean:
	rm -rf $(VENV) build demo-run .pytest_cache .mypy_cache .ruff_cache
