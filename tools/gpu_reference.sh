#!/usr/bin/env bash
# The reference run of reference/ on a GPU machine: the latent-space claims (5 seeds, every model until
# its plateau test passes), then each application claim as its own run (3 seeds) merged into it, as the
# committed run was made; then a comparison with the committed metrics.
#   tools/gpu_reference.sh OUT_DIR
# Resumable: rerun the same command after a stop; finished models are read back from OUT_DIR.
# Needs jax with CUDA, flax, optax, orbax-checkpoint and the experiments extra; the data in
# $VAEJAX_DATA_DIR or TFDS. On a GPU the conv layers take the lax path (layers.conv_path), so the
# models differ from the CPU run's by float rounding that training amplifies: compare verdicts and intervals
# (compare.txt lists the numbers that differ by more than 5%).
set -euo pipefail
out=${1:?usage: tools/gpu_reference.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" | tee -a "$out/gpu.txt"

timed() {  # a command, its wall seconds appended to $out/seconds.txt
    local start=$SECONDS
    "$@"
    echo "$((SECONDS - start)) s: $*" | tee -a "$out/seconds.txt"
}

# each step is skipped once its run has finished, so a rerun goes on where a stop left off
[ -f "$out/latent/run_all.json" ] || timed python3 -m vaejax_experiments.run_all --scale reference --out "$out/latent"
for name in transform anomaly overfit_ood denoise pretrain_classify; do
    [ -f "$out/$name/run_all.json" ] \
        || timed python3 -m vaejax_experiments.run_all --scale reference --only "$name" --seeds 3 --out "$out/$name"
    [ -f "$out/latent/$name/metrics.json" ] || python3 -m vaejax_experiments.run_all --merge "$out/$name" --out "$out/latent"
done
echo "the whole run: $out/latent/REPORT.md"
python3 tools/compare_results.py reference "$out/latent" --rtol 0.05 | tee "$out/compare.txt" || true
