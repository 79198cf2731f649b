#!/usr/bin/env bash
# Build what a lent GPU machine lacks to run perf/gpu_checks.sh: Ray, Optuna and MLflow (the
# tracking client, mlflow-skinny) with their needs, for its Python 3.12 on x86-64, under .device/
# (ignored by git; ~35 MB, under the device tool's 64 MiB carry limit):
#   .device/wheels/*.whl    every needed wheel the machine's image does not already hold
#   .device/ray.tar.xz      Ray unpacked without ray/jars, ray/rllib, ray/serve, ray/llm (its wheel is too big)
# (ray/data stays: ray.tune imports ray.air, which imports ray.data.)
# Usage: bash perf/device_bundle.sh   (needs pip and PyPI here; run from the repository root)
# Then run on the device, carrying .device:  bash perf/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=.device
RAY_VERSION=${RAY_VERSION:-2.60.0}
OPTUNA_VERSION=${OPTUNA_VERSION:-5.0.0}
MLFLOW_VERSION=${MLFLOW_VERSION:-3.17.2}
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.device/' "$exclude" 2>/dev/null || echo '/.device/' >> "$exclude"
rm -rf "$OUT" && mkdir -p "$OUT/download" "$OUT/wheels"

platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d "$OUT/download" "ray[tune]==$RAY_VERSION" "optuna==$OPTUNA_VERSION" "mlflow-skinny==$MLFLOW_VERSION" sqlalchemy alembic

# Packages the device image already holds (device/KINDS.md, read 2026-11-17): not carried.
present=" absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi
charset-normalizer click cloudpickle colorama contourpy cycler filelock fonttools frozenlist fsspec grpcio h11
httpcore httpx idna jinja2 joblib kiwisolver markdown markdown-it-py markupsafe matplotlib mdurl msgpack multidict
networkx numpy packaging pandas pillow pip pluggy prometheus-client propcache protobuf psutil pyarrow pygments
pyparsing python-dateutil pyyaml regex requests rich scikit-learn scipy setuptools six sympy tabulate tensorboard
tensorboard-data-server threadpoolctl tqdm typer typing-extensions urllib3 uvloop werkzeug wheel wrapt xxhash yarl
zipp shellingham typing-inspect mypy-extensions pytest iniconfig"
present=" $(echo $present) "  # one space between names, and around them
for whl in "$OUT"/download/*.whl; do
  name=$(basename "$whl" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
  case "$name" in
    ray) continue ;;
  esac
  [[ "$present" == *" $name "* ]] || cp "$whl" "$OUT/wheels/"
done

# Ray: unpack, drop what a Tune search does not use, compress.
mkdir -p "$OUT/ray_site"
# unzip keeps the executables' mode bits (gcs_server, raylet); python -m zipfile drops them.
unzip -q "$OUT"/download/ray-*.whl -d "$OUT/ray_site"
rm -rf "$OUT"/ray_site/ray/{jars,rllib,serve,llm}
tar -C "$OUT/ray_site" -cJf "$OUT/ray.tar.xz" .
rm -rf "$OUT/ray_site" "$OUT/download"
echo "wrote $OUT: $(ls "$OUT/wheels" | wc -l) wheels ($(du -sh "$OUT/wheels" | cut -f1)), ray.tar.xz ($(du -sh "$OUT/ray.tar.xz" | cut -f1))"
