# Two commands: `make demo` and `make test`. Each builds .venv by itself on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint clean venv bench

venv: $(STAMP)

# torch is pinned and installed first so pip takes the local CPU wheel instead of pulling a
# multi-GB CUDA build; pyproject itself only asks for torch>=2.4, so GPU users keep theirs.
$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m plait.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.hf_speed

clean:
	rm -rf $(VENV) runs build *.egg-info
