#!/usr/bin/env bash
# The benchmark table of docs/benchmark.md on a GPU machine: each preset one model at a time (step,
# epoch), 64 models at once (vmapped; for mlp_vae also lax.mapped), and the PyTorch peer on the same GPU.
#   tools/gpu_benchmark.sh OUT_DIR [extra benchmark flags]
# One benchmark run per preset, mlp_vae first, each writing its table and JSON when it ends: on a
# machine lent for a fixed time, the presets finished before it is taken back keep their numbers.
# lax.map over 64 conv models takes 64 epochs a window, and on a GPU model_axis="auto" is vmap, so
# only mlp_vae times the mapped form beside the vmapped one.
# Needs jax with CUDA, flax, optax, orbax-checkpoint and torch; the data in $VAEJAX_DATA_DIR or TFDS.
set -euo pipefail
out=${1:?usage: tools/gpu_benchmark.sh OUT_DIR [flags]}; shift
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)" | tee -a "$out/gpu.txt"
for preset in mlp_vae conv_ae conv_vae; do
    modes=(step epoch seeds)
    [ "$preset" = mlp_vae ] && modes+=(seeds_map)
    python3 -m vaejax_experiments.benchmark --preset "$preset" --batch 128 --modes "${modes[@]}" --seeds 64 \
        --windows 5 --peer torch --json "$out/benchmark_gpu_$preset.json" "$@" 2>&1 | tee "$out/benchmark_gpu_$preset.txt"
done
