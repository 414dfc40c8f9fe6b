#!/usr/bin/env bash
# Every benchmark on a GPU machine, in under fifteen minutes (the `gpu` profile of bench_all.py:
# the issue's sizes and larger ones where an accelerator needs more work to show its rate).
# Usage: experiments/bench_gpu.sh [OUT.json [SCALE.json]]   (needs jax with CUDA: pip install "jax[cuda12]")
# The sharding benchmark uses 4 host (CPU) devices on any machine; the cold start includes the
# accelerator's start-up.
set -euo pipefail
cd "$(dirname "$0")"
python -c "import jax; print('devices:', jax.devices())"
timeout 290 python bench_all.py --profile gpu --only reduced,closed_form,roofline,ensemble,sharding,cold_start,precision --json "${1:-bench_gpu.json}"
# Analysis at scale (1 GB of features: peak memory against K, per-checkpoint time against
# NumPy and PyTorch, statistics vs features file, 4 devices vs 1) and simulation start-up.
timeout 600 python bench_scale.py --profile gpu --json "${2:-bench_scale.json}"
