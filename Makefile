# The two commands a new user needs: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

RUNS   := runs
DATA   := data

.PHONY: setup test demo demo-kws bench clean espeak

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

# The main job on the embedded data: synthesise speech, train a small QuartzNet on CPU, score held-out
# voices and sentences. ~20 minutes on 2 cores (docs/benchmarks.md).
demo: setup
	@echo "==> [1/3] synthesising the speech corpus (espeak-ng) into $(DATA)/synthetic_asr"
	$(PY) -m data_prep.synthetic asr --out $(DATA)/synthetic_asr
	@echo "==> [2/3] training QuartzNet-small on CPU (runs/demo_asr)"
	$(PY) train.py experiment=demo_asr paths.data_dir=$(DATA) paths.runs_dir=$(RUNS)
	@echo "==> [3/3] evaluating on the held-out test set"
	$(PY) evaluate.py checkpoint=$(RUNS)/demo_asr/model.nemo manifest=$(DATA)/synthetic_asr/test.json \
		output_dir=$(RUNS)/demo_asr/evaluation

demo-kws: setup
	@echo "==> [1/3] synthesising the keyword corpus (espeak-ng) into $(DATA)/synthetic_kws"
	$(PY) -m data_prep.synthetic kws --out $(DATA)/synthetic_kws
	@echo "==> [2/3] training MatchboxNet 3x1x64 on CPU (runs/demo_kws)"
	$(PY) train.py experiment=demo_kws paths.data_dir=$(DATA) paths.runs_dir=$(RUNS)
	@echo "==> [3/3] evaluating on held-out voices"
	$(PY) evaluate.py checkpoint=$(RUNS)/demo_kws/model.nemo manifest=$(DATA)/synthetic_kws/v2_test.json \
		output_dir=$(RUNS)/demo_kws/evaluation

bench: setup
	$(PY) bench/bench_model.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
