#!/usr/bin/env bash
# GPU check, one prepared script (< 8 min): batching ratio (batch 1 sequential vs 8 / 16 / 32) and end-to-end
# latency at 32 cameras x 15 fps, on one CUDA card, with the card's name in the output.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR] [extra benchmarks.gpu_check options]
#
# Needs a python3 with torch (CUDA), numpy, OpenCV, onnx and onnxruntime (CPU) - the GPU image has them. Everything
# else comes from .cache/gpu-carry and .cache/models, made beforehand by benchmarks/gpu_prepare.sh; nothing is
# downloaded. No onnxruntime-gpu / TensorRT: the ONNX model runs through PyTorch on CUDA in FP16
# (fbvision/inference/engines/pytorch.py), which the report says. Writes OUT_DIR/gpu-<card>.json (default benchmarks/results,
# or $OUT); copy it next to REPORT.md and rebuild: python benchmarks/run_bench.py --report-only <json>.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
[ $# -gt 0 ] && shift
PY="${PYTHON:-python3}"
CARRY=.cache/gpu-carry
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

echo "[gpu_check.sh] $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"

# Python packages the image lacks, from the carried wheels (installed into a private folder, nothing else touched).
SITE=/tmp/fbv-gpu-site
if ls "$CARRY"/wheels/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$CARRY"/wheels/*.whl || { echo "[gpu_check.sh] carried wheels did not install" >&2; exit 1; }
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "[gpu_check.sh] no $CARRY/wheels (run benchmarks/gpu_prepare.sh): using the Python as it is"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

# redis-server: the one on PATH, else the carried Debian package files unpacked under /tmp (not installed).
if ! command -v redis-server >/dev/null 2>&1 && ls "$CARRY"/debs/*.deb >/dev/null 2>&1; then
  ROOTFS=/tmp/fbv-redis
  mkdir -p "$ROOTFS"
  for deb in "$CARRY"/debs/*.deb; do
    if command -v dpkg-deb >/dev/null 2>&1; then dpkg-deb -x "$deb" "$ROOTFS"
    else (cd "$ROOTFS" && ar p "$OLDPWD/$deb" data.tar.xz | tar -xJ); fi
  done
  export PATH="$ROOTFS/usr/bin:$PATH"
  export LD_LIBRARY_PATH="$ROOTFS/usr/lib/x86_64-linux-gnu:$ROOTFS/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
redis-server --version 2>/dev/null || echo "[gpu_check.sh] no working redis-server: the end-to-end part will be skipped"

timeout 470 "$PY" -m benchmarks.gpu_check --out "$OUT_DIR" "$@"
code=$?
[ $code -eq 124 ] && echo "[gpu_check.sh] stopped at the 470 s limit" >&2
exit $code
