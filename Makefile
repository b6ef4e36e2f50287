# The two commands a new user needs: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean espeak

setup: $(STAMP) espeak

# Reinstall only when the dependency list changes.
$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing quartznet (torch 2.11 + torchaudio 2.11, ~5 GB on first run)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar on -e '.[dev]'
	@touch $(STAMP)

# espeak-ng synthesises the embedded speech corpora; installed through apt-get where we may.
espeak:
	@if command -v espeak-ng >/dev/null 2>&1; then \
		echo "==> espeak-ng present"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing espeak-ng with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	else \
		echo "WARNING: espeak-ng is missing and cannot be installed automatically (not root or no apt-get)."; \
		echo "         Install it with your package manager (e.g. 'sudo apt-get install espeak-ng');"; \
		echo "         the synthetic corpora and the tests that use speech need it."; \
	fi

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/bench_model.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
