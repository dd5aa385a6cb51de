#!/usr/bin/env bash
# One short GPU check (issue 19): each image recipe trained for one epoch on the GPU with the
# TensorFlow and JAX backends (and --distribute where there are 2+ GPUs), throughput against this
# project's CPU runs, written to benchmarks/RESULTS.md (section "gpu").
#
#   benchmarks/gpu.sh [--recipes classification,detection] [--backends tensorflow,jax]
#
# Needs an NVIDIA GPU and GPU builds of the frameworks in the venv (pip install "tensorflow[and-cuda]"
# "jax[cuda12]"); the CPU builds that `make` installs see no GPU, and each backend without one is a
# row saying so. Nothing in `make test` needs a GPU or this script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "benchmarks/gpu.sh: no NVIDIA GPU on this machine (nvidia-smi -L fails): nothing to measure" >&2
  exit 2
fi
nvidia-smi -L
exec "$PY" benchmarks/gpu.py "$@"
