#!/usr/bin/env bash
# The benchmark table of docs/benchmark.md on a GPU machine: vaejax's presets in every mode, 64 seeds
# at once (vmapped and lax.mapped), and the PyTorch peer on the same GPU, in one run.
#   tools/gpu_benchmark.sh OUT_DIR [extra benchmark flags]
# Needs jax with CUDA, flax, optax, orbax-checkpoint and torch; the data in $VAEJAX_DATA_DIR or TFDS.
set -euo pipefail
out=${1:?usage: tools/gpu_benchmark.sh OUT_DIR [flags]}; shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)" | tee -a "$out/gpu.txt"
python3 -m vaejax_experiments.benchmark --preset mlp_vae conv_ae conv_vae --batch 128 \
    --modes step epoch seeds seeds_map --seeds 64 --windows 5 --peer torch \
    --json "$out/benchmark_gpu.json" "$@" 2>&1 | tee "$out/benchmark_gpu.txt"
