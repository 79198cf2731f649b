#!/usr/bin/env bash
# The cost of a full reproduction under the Nash-MTL protocol, measured on this machine's GPU.
#
#   bash perf/reproduce_time.sh [DATA_DIR] [METHOD ...]
#
# Times one epoch of SegNet-MTAN at 288x384 (batch 2, fp32, the released augmentation and evaluation)
# on generated NYUv2-format data (80 training and 66 test images, a tenth of the real folder) and
# prints, per method, ms per step and the estimated GPU-hours of 3 seeds x 200 epochs on the real
# NYUv2 (795 training, 654 test images): the line "On the real nyuv2 ...".  Nothing is trained further.
# Runs from the checkout's root with the project's venv active (PYTHONPATH=$PWD if not installed).
set -euo pipefail
DATA=${1:-/tmp/mtlsearch_nyuv2_288x384}
shift || true
METHODS=${*:-ew famo nash_mtl}
[ -d "$DATA/train" ] || python -m mtlsearch.benchmarks.generate nyuv2 "$DATA" --train 80 --test 66 --size 288x384
for method in $METHODS; do
  python -m mtlsearch.reproduce --protocol nashmtl --benchmark nyuv2 --method "$method" --data-root "$DATA" --time-only
done
