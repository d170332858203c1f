# Two commands: `make demo` and `make test`. Each builds .venv by itself on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LOCK    := requirements.lock
TORCH   := torch==2.13.0
PIP     := pip==26.3

.PHONY: demo test lint clean venv bench lock system-deps

venv: $(STAMP)

# torch is pinned and installed first so pip takes the local CPU wheel instead of pulling a
# multi-GB CUDA build. Everything else comes from the lock (exact versions, committed), so a
# new upstream release cannot change what `make test` runs; pyproject.toml keeps ranges
# (torch>=2.4, transformers>=4.45, ...) for people who use plait as a library.
$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

# System packages beyond python3-venv and make: espeak-ng synthesises the speech dataset
# (plait/data/speech.py); chromium runs the web playground's browser test (tests/test_browser.py,
# driven by Playwright). Silent when present; installed with apt-get when missing and run as
# root (CI, containers); otherwise one line says what to install, and those tests fail.
SYSTEM_PKGS := espeak-ng chromium
system-deps:
	@missing=""; for p in $(SYSTEM_PKGS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing system packages:$$missing; install them (e.g. sudo apt-get install$$missing)"; \
	  fi; \
	fi

demo: system-deps $(STAMP)
	$(BIN)/python -m plait.demo

test: system-deps $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.hf_speed

# Upgrade on purpose: resolve pyproject's ranges afresh in a scratch venv and write the exact
# versions it installed. Review the diff, run `make test`, commit both together.
lock:
	rm -rf .lock-venv
	$(PY) -m venv .lock-venv
	.lock-venv/bin/pip install -q $(PIP)
	.lock-venv/bin/pip install -q $(TORCH)
	.lock-venv/bin/pip install -q -e ".[dev]"
	{ echo "# Exact versions that 'make test' and 'make demo' install (after $(TORCH))."; \
	  echo "# Written by 'make lock' from pyproject.toml's ranges; do not edit by hand."; \
	  .lock-venv/bin/pip freeze --all --exclude-editable | grep -v "^pip==" | sed 's/^torch==\([^+]*\)+.*/torch==\1/'; \
	} > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .lock-venv
	@echo "wrote $(LOCK); review 'git diff $(LOCK)', then 'make test'"

clean:
	rm -rf $(VENV) runs build *.egg-info
