#!/usr/bin/env bash
# The GPU checks as one run on a lent GPU machine (issue 11): bench/bench_gpu.py and the `gpu` tests.
# That machine has torch/torchaudio 2.11.0, Lightning and most of our needs, but no network: the rest
# travels as wheels in .whl/ (`make gpu-wheels` here, then name .whl in the device tool's carry):
#     bash bench/gpu_check.sh            # on the GPU machine; results land in $OUT (default gpu_results/)
set -u
out=${OUT:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "error: cannot install the carried wheels (.whl/); run 'make gpu-wheels' first"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, torchaudio; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__)" | tee -a "$out/gpu.txt"
timeout 300 python3 bench/bench_gpu.py --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench_gpu.txt"
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -o addopts="" 2>&1 | tee "$out/test_gpu.txt"
