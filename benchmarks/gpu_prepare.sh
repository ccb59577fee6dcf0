#!/usr/bin/env bash
# Prepare a GPU run, HERE (a machine with the project's .venv and package registries): fills the two folders
# that benchmarks/gpu_check.sh needs on a GPU machine that has no network and no Ultralytics.
#
#   .cache/models/  the YOLO11n ONNX export at 640, dynamic batch 1..32 (export/export_onnx.py)
#   .cache/gpu-carry/     wheels the GPU machine's Python lacks (pydantic, redis, supervision, trackers ...,
#                         for Python 3.12 / manylinux x86-64) and the Debian redis-server files
#
# Both are under .cache/ (git-ignored): copy or carry them along with the checkout (about 35 MB).
#   bash benchmarks/gpu_prepare.sh [PYTHON_VERSION]   (default 3.12, the GPU image's)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PYVER="${1:-3.12}"
CARRY=.cache/gpu-carry
mkdir -p "$CARRY/wheels" "$CARRY/debs"

# The same versions as this venv: what the code was tested with.
pins=$("$PY" - <<'PYEOF'
from importlib.metadata import version
names = ["pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions", "redis",
         "pydantic-settings", "python-dotenv", "supervision", "trackers", "pyDeprecate", "defusedxml", "onnx2torch"]
print(" ".join(f"{n}=={version(n)}" for n in names))
PYEOF
)
echo "[gpu_prepare] wheels for Python $PYVER: $pins"
rm -f "$CARRY"/wheels/*.whl
# shellcheck disable=SC2086
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$CARRY/wheels" $pins

echo "[gpu_prepare] Debian packages of redis-server (unpacked on the GPU machine, not installed)"
rm -f "$CARRY"/debs/*.deb
if ! (cd "$CARRY/debs" && apt-get download redis-server redis-tools liblzf1 libjemalloc2 >/dev/null 2>&1); then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && (cd "$CARRY/debs" && apt-get download redis-server redis-tools liblzf1 libjemalloc2); \
  else echo "[gpu_prepare] apt-get download failed: the GPU run will skip the end-to-end part" >&2; fi
fi

echo "[gpu_prepare] the benchmark model"
"$PY" -c "from benchmarks.common import ensure_yolo11n; print(ensure_yolo11n(640, 32))"

du -sh "$CARRY" .cache/models
echo "[gpu_prepare] ready: carry .cache/gpu-carry and .cache/models, then run: bash benchmarks/gpu_check.sh"
