#!/usr/bin/env bash
# The GPU checks of issues 3 and 4, for a lent GPU machine (the device tool), in two calls of < 10 min:
#   bash benchmarks/gpu_checks.sh steps    step_time.py tables (b)-(f) on CUDA: optimizer step, methods on
#                                          the NYUv2-sized model, default vs plain fp32 step, short-run metrics,
#                                          1/2/4 trials sharing the GPU
#   bash benchmarks/gpu_checks.sh search   a 4-trial NYUv2-format search (bundled nyuv2_gemtl_p, generated
#                                          288x384 data, 0.25 GPU per trial), read back from MLflow
# Logs go to $OUT (the device tool's folder that comes back), else ./gpu_checks_out.  To try the search part
# without a GPU: GPUS_PER_TRIAL=0 SIZE=32x48 bash benchmarks/gpu_checks.sh search
# The machine's image has PyTorch but not Ray, Optuna or MLflow: build them here first with
# `bash benchmarks/device_bundle.sh` and carry `.device` (the search needs it; the steps do not).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-steps}
LOG=${OUT:-gpu_checks_out}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$LOG/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" | tee -a "$LOG/gpu.txt"

if [[ "$what" == steps ]]; then
  python3 benchmarks/step_time.py --parts b c d e f --device cuda --threads 4 --repeats 5 --gpu-steps 10 2>&1 \
    | tee "$LOG/step_time.txt"
  exit "${PIPESTATUS[0]}"
fi

if [[ "$what" == search ]]; then
  if [[ -d .device/wheels ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/wheels/*.whl || exit
    tar -C /tmp/site -xJf .device/ray.tar.xz || exit
    export PYTHONPATH="/tmp/site:$PYTHONPATH" PATH="/tmp/site/bin:$PATH"
  fi
  python3 -c "import ray, optuna, mlflow; print('ray', ray.__version__, 'optuna', optuna.__version__, 'mlflow', mlflow.__version__)" \
    | tee -a "$LOG/gpu.txt" || exit
  data=/tmp/nyuv2_generated
  rm -rf "$data" /tmp/ray_results /tmp/mlflow.db
  python3 -m mtlsearch.benchmarks.generate nyuv2 "$data" --train 64 --test 16 ${SIZE:+--size $SIZE} || exit
  python3 -m mtlsearch.references --benchmark nyuv2 --data-root "$data" --epochs 2 --lrs 1e-4 --seeds 0 --batch-size 8 \
    2>&1 | tail -5 | tee "$LOG/references.txt"
  start=$(date +%s)
  python3 -m mtlsearch.launch --space nyuv2_gemtl_p --data-root "$data" --num-samples 4 --max-epochs 3 \
    --gpus-per-trial "${GPUS_PER_TRIAL:-0.25}" --cpus-per-trial "${CPUS_PER_TRIAL:-3}" --storage /tmp/ray_results --tracking-uri sqlite:////tmp/mlflow.db \
    2>&1 | tee "$LOG/search.txt"
  code=${PIPESTATUS[0]}
  echo "search: exit $code, $(( $(date +%s) - start )) s" | tee -a "$LOG/search.txt"
  python3 -m mtlsearch.report --tracking-uri sqlite:////tmp/mlflow.db --experiment nyuv2_gemtl_p --no-figures 2>&1 | tee "$LOG/report.txt"
  exit "$code"
fi
echo "usage: bash benchmarks/gpu_checks.sh steps|search" >&2
exit 2
