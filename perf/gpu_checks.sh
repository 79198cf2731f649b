#!/usr/bin/env bash
# The GPU checks, for a lent GPU machine (the device tool); `all` fits one call of < 10 min:
#   bash perf/gpu_checks.sh smoke    perf/cuda_smoke.py: checkpoint continuity on CUDA, every
#                                          method and optimizer for one epoch, held data within a GPU share
#   bash perf/gpu_checks.sh search   a 4-trial NYUv2-format search (bundled nyuv2_gemtl_p, generated
#                                          288x384 data, 0.25 GPU per trial), read back from MLflow
#   bash perf/gpu_checks.sh steps    step_time.py tables (b)-(g) on CUDA: optimizer step, methods on
#                                          the NYUv2-sized model, default vs plain fp32 step, 1/2/4 trials
#                                          sharing the GPU, every method x mode, short-run metrics
#   bash perf/gpu_checks.sh mtan     perf/reproduce_time.sh: SegNet-MTAN step time under nashmtl@1 (ew famo
#                                          nash_mtl) and the estimated GPU-hours of a full reproduction
#   bash perf/gpu_checks.sh flat     issue 28 (b) and (d): AdaTask's optimizer step on flat buffers vs the
#                                          per-parameter foreach path and the loop at ResNet-50 / EfficientNet-B0
#                                          shapes with the memory-traffic floor (targets: loop >= 10x flat, flat
#                                          <= 3x floor); the default vs plain fp32 step with compile: encoder and
#                                          encoder_graphs at batch 8 and 32 (target <= 0.65x); the compile options'
#                                          metrics beside compile: off (perf/compile_check.py)
#   bash perf/gpu_checks.sh all      the three in turn, each under a time limit (SMOKE_S, SEARCH_S,
#                                          then what is left of TOTAL_S for the steps), so a part that
#                                          hangs costs only its own time
# Each command's output goes to its own file in $OUT (the device tool's folder that comes back), else
# ./gpu_checks_out; the tail of each is printed.  To try the search part without a GPU:
#   GPUS_PER_TRIAL=0 SIZE=32x48 bash perf/gpu_checks.sh search
# The machine's image has PyTorch but not Ray, Optuna or MLflow: build them here first with
# `bash perf/device_bundle.sh` and carry `.device` (the search needs it).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
LOG=${OUT:-gpu_checks_out}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)
code=0

# part NAME LIMIT_S COMMAND...: run COMMAND under a time limit, output to $LOG/NAME.txt, print its tail.
part() {
  local name=$1 limit=$2 t0 rc note=""
  shift 2
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$LOG/$name.txt" 2>&1
  rc=$?
  [[ $rc == 124 ]] && note=", its time limit"
  echo "[$name: exit $rc after $(( $(date +%s) - t0 )) s$note]" | tee -a "$LOG/$name.txt"
  tail -n "${TAIL:-25}" "$LOG/$name.txt" | sed "s/^/  $name| /"
  [[ $rc == 0 ]] || code=$rc
  return $rc
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
  nproc
} | tee "$LOG/gpu.txt"

smoke() { part smoke "${SMOKE_S:-90}" python3 perf/cuda_smoke.py; }

search() {
  if [[ -d .device/wheels ]] && ! python3 -c "import ray, optuna, mlflow" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .device/wheels/*.whl \
      || { code=1; return 1; }
    tar -C /tmp/site -xJf .device/ray.tar.xz || { code=1; return 1; }
    export PYTHONPATH="/tmp/site:$PYTHONPATH" PATH="/tmp/site/bin:$PATH"
  fi
  python3 -c "import ray, optuna, mlflow; print('ray', ray.__version__, 'optuna', optuna.__version__, 'mlflow', mlflow.__version__)" \
    | tee -a "$LOG/gpu.txt" || { code=1; return 1; }
  local data=/tmp/nyuv2_generated deadline=$(( $(date +%s) + ${SEARCH_S:-200} ))
  rm -rf "$data" /tmp/ray_results /tmp/mlflow.db
  python3 -m mtlsearch.benchmarks.generate nyuv2 "$data" --train 64 --test 16 ${SIZE:+--size $SIZE} > /dev/null || { code=1; return 1; }
  TAIL=5 part references "${REFS_S:-90}" python3 -m mtlsearch.references --benchmark nyuv2 --data-root "$data" --epochs 2 --lrs 1e-4 \
    --seeds 0 --batch-size 8
  TAIL=40 part search $(( deadline - $(date +%s) - 20 )) python3 -m mtlsearch.launch --space nyuv2_gemtl_p --data-root "$data" \
    --num-samples 4 --max-epochs 3 --gpus-per-trial "${GPUS_PER_TRIAL:-0.25}" --cpus-per-trial "${CPUS_PER_TRIAL:-3}" \
    --storage /tmp/ray_results --tracking-uri sqlite:////tmp/mlflow.db
  TAIL=30 part report 20 python3 -m mtlsearch.report --tracking-uri sqlite:////tmp/mlflow.db --experiment nyuv2_gemtl_p --no-figures
}

mtan() { TAIL=30 part mtan "${MTAN_S:-240}" bash perf/reproduce_time.sh /tmp/mtlsearch_nyuv2_288x384 ${MTAN_METHODS:-ew famo nash_mtl}; }

steps() {
  local limit=${STEPS_S:-$(( ${TOTAL_S:-470} - ($(date +%s) - started) ))}
  TAIL=200 part step_time "$limit" python3 perf/step_time.py --parts ${STEPS_PARTS:-b c d e f g} --device cuda --threads 4 \
    --repeats 3 --gpu-steps 10 --warmup 3 --short-epochs 6 --short-train 96
}

flat() {
  TAIL=40 part flat_b "${FLAT_B_S:-120}" python3 perf/step_time.py --parts b --opt-devices cuda --models resnet50 efficientnet_b0 \
    --repeats 5 --opt-steps 5
  TAIL=40 part flat_d "${FLAT_D_S:-330}" python3 perf/step_time.py --parts d --device cuda --threads 4 --repeats 3 --gpu-steps 10 \
    --warmup 3 --precision-batches 8 32 --step-options encoder encoder_graphs
  TAIL=30 part compile_check "${COMPILE_S:-120}" python3 perf/compile_check.py --device cuda --epochs 2 --methods ew
}

case "$what" in
  smoke) smoke ;;
  search) search ;;
  steps) steps ;;
  all) smoke; search; steps ;;
  again) smoke; steps; search ;;  # the order of a second call: what was fixed first
  late) search; mtan ;;  # what the first GPU session left unseen: the launcher's exit, the MTAN step
  flat) flat ;;  # issue 28 (b), (d): one call of about 10 min
  *) echo "usage: bash perf/gpu_checks.sh smoke|search|steps|mtan|all|again|late|flat" >&2; exit 2 ;;
esac
echo "gpu_checks $what: exit $code after $(( $(date +%s) - started )) s"
exit $code
