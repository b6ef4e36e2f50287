# The two commands a new user needs: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

RUNS   := runs
DATA   := data

UV_VERSION := 0.13.9
LOCK       := requirements.lock
# One command regenerates the lock: every platform, Python 3.11+, hashes for every wheel.
UV_COMPILE := pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes

.PHONY: setup check lock test demo demo-voices demo-kws bench clean speech-tools gpu-wheels

setup: $(STAMP) speech-tools

# Install exactly what requirements.lock says (the environment the tests saw), then quartznet itself
# without dependencies, then the end-of-set-up check. uv installs ~5x faster than pip
# (docs/benchmarks.md); where it cannot be installed, pip does the same from the same lock.
$(STAMP): pyproject.toml $(LOCK)
	@echo "==> creating $(VENV) and installing the locked environment (torch 2.11.0 + torchaudio 2.11.0, ~5 GB on first run)"
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "error: $(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); quartznet needs 3.11 or newer. Run: PYTHON=python3.11 make setup" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	@if $(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"; then \
		$(VENV)/bin/uv pip install --python $(PY) --require-hashes -r $(LOCK) && \
		$(VENV)/bin/uv pip install --python $(PY) --no-deps -e . ; \
	else \
		echo "==> uv is not installable here; installing with pip from the same lock"; \
		$(PY) -m pip install --progress-bar on --require-hashes -r $(LOCK) && \
		$(PY) -m pip install --no-deps -e . ; \
	fi
	$(PY) tools/check_env.py --lock $(LOCK)
	@touch $(STAMP)

# Re-run the end-of-set-up check: every import, torchaudio's compiled extension, pip check, the lock.
check: $(STAMP)
	$(PY) tools/check_env.py --lock $(LOCK)

# For maintainers: re-resolve the lock from pyproject.toml's ranges, then `make setup && make test`.
lock:
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"
	$(VENV)/bin/uv $(UV_COMPILE) -o $(LOCK)

# espeak-ng synthesises the embedded speech corpora; installed through apt-get where we may.
speech-tools:
	@missing=""; \
	for tool in espeak-ng flite festival; do \
		command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	for package in festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts festvox-italp16k festvox-itapc16k \
		festvox-suopuhe-lj festvox-suopuhe-mv festlex-poslex pocketsphinx-testdata; do \
		dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q " installed$$" || missing="$$missing $$package"; \
	done; \
	if [ -z "$$missing" ]; then \
		echo "==> speech tools present (espeak-ng, flite, festival with its voices and WSJ lexicon, pocketsphinx-testdata)"; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "==> installing with apt-get:$$missing"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; } || \
			echo "WARNING: apt-get could not install all of:$$missing (see its message above)"; \
	else \
		echo "WARNING: missing and not installable automatically (not root or no apt-get):$$missing"; \
		echo "         Install them with your package manager (e.g. 'sudo apt-get install$$missing')."; \
		echo "         espeak-ng makes the synthetic corpora (make demo, the tests that speak); flite and festival"; \
		echo "         add recorded voices (data_prep.synthetic asr --engines; the Italian and Finnish festvox voices"; \
		echo "         read English with an accent), festlex-poslex the --vocabulary words;"; \
		echo "         pocketsphinx-testdata is real speech for data_prep.real_speech."; \
	fi

test: setup
	$(PY) -m pytest -q

# The main job on the embedded data: synthesise speech, train a small QuartzNet on CPU, score held-out
# voices and sentences. Under 15 minutes on 2 cores, set-up included (docs/benchmarks.md). train.py
# skips its own test pass: step 3 scores the same test set and writes the predictions.
demo: setup
	@echo "==> [1/3] synthesising the speech corpus (espeak-ng) into $(DATA)/synthetic_asr"
	$(PY) -m data_prep.synthetic asr --out $(DATA)/synthetic_asr --train-utterances 4800
	@echo "==> [2/3] training QuartzNet-slim on CPU (runs/demo_asr)"
	$(PY) train.py experiment=demo_asr paths.data_dir=$(DATA) paths.runs_dir=$(RUNS) test_after_training=false
	@echo "==> [3/3] evaluating on the held-out test set"
	$(PY) evaluate.py checkpoint=$(RUNS)/demo_asr/model.nemo manifest=$(DATA)/synthetic_asr/test.json \
		output_dir=$(RUNS)/demo_asr/evaluation

# A model for real voices without downloads: espeak-ng, flite and festival voices, speaker / room / noise /
# channel simulation, sentences from a 5,000-word vocabulary in English word order, scored on held-out voices
# and on real human speech (pocketsphinx-testdata). ~1 hour on 2 cores (docs/benchmarks.md).
demo-voices: setup
	@echo "==> [1/4] synthesising the many-voice corpus (espeak-ng, flite, festival) into $(DATA)/voices_asr"
	$(PY) -m data_prep.synthetic asr --out $(DATA)/voices_asr --engines espeak,flite,festival --train-utterances 3600 \
		--vocabulary 5000 --numbers 0.25 --word-order pos-trigram --max-words 8
	@echo "==> [2/4] building the real-speech dev set (pocketsphinx-testdata) into $(DATA)/real_dev"
	$(PY) -m data_prep.real_speech --out $(DATA)/real_dev
	@echo "==> [3/4] training QuartzNet-deep with voice and channel augmentation (runs/demo_asr_voices)"
	$(PY) train.py experiment=demo_asr_voices paths.data_dir=$(DATA) paths.runs_dir=$(RUNS)
	@echo "==> [4/4] evaluating on held-out voices and on real speech"
	$(PY) evaluate.py checkpoint=$(RUNS)/demo_asr_voices/model.nemo manifest=$(DATA)/voices_asr/test.json \
		output_dir=$(RUNS)/demo_asr_voices/evaluation
	$(PY) evaluate.py checkpoint=$(RUNS)/demo_asr_voices/model.nemo manifest=$(DATA)/real_dev/real_dev.json \
		output_dir=$(RUNS)/demo_asr_voices/evaluation_real

demo-kws: setup
	@echo "==> [1/3] synthesising the keyword corpus (espeak-ng) into $(DATA)/synthetic_kws"
	$(PY) -m data_prep.synthetic kws --out $(DATA)/synthetic_kws
	@echo "==> [2/3] training MatchboxNet 3x1x64 on CPU (runs/demo_kws)"
	$(PY) train.py experiment=demo_kws paths.data_dir=$(DATA) paths.runs_dir=$(RUNS)
	@echo "==> [3/3] evaluating on held-out voices"
	$(PY) evaluate.py checkpoint=$(RUNS)/demo_kws/model.nemo manifest=$(DATA)/synthetic_kws/v2_test.json \
		output_dir=$(RUNS)/demo_kws/evaluation

# The packages a lent GPU machine lacks (it has torch, Lightning, numpy, matplotlib, pytest, ...), as
# Python 3.12 wheels at the locked versions (pure-Python sdists built here), for bench/gpu_check.sh there
# (it has no network).
GPU_WHEELS := hydra-core omegaconf antlr4-python3-runtime jiwer rapidfuzz soundfile webdataset braceexpand tensorboardx flashlight-text
gpu-wheels: $(STAMP)
	@mkdir -p .whl
	@for name in $(GPU_WHEELS); do \
		pin=$$(grep -i -m1 "^$$name==" $(LOCK) | cut -d' ' -f1); \
		$(PY) -m pip download -q --no-deps --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
			--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
			--only-binary=:all: -d .whl "$$pin" 2>/dev/null \
		|| $(PY) -m pip wheel -q --no-deps -w .whl "$$pin" || exit 1; \
	done
	@du -sh .whl

bench: setup
	$(PY) bench/bench_model.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
