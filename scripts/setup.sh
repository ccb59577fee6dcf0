#!/usr/bin/env bash
# Idempotent set-up shared by `make run`, `make test` and `make bench`.
#   scripts/setup.sh run    -> .venv with the runtime (+ the ONNX Runtime build that fits this machine), redis-server
#   scripts/setup.sh test   -> the above + export/dev/lab extras + the RTSP test server's and the browser test's (chromium) Debian packages
#   scripts/setup.sh lab    -> the runtime + JupyterLab, and the project's kernel (.venv's Python) for the notebooks
# Installs Debian packages only when running as root; otherwise prints exactly what to install.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
PY="${PYTHON:-python3}"
VENV=.venv

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------------------------
need_debs=()
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || need_debs+=(redis-server)
if [ "$mode" = test ]; then
  command -v ffmpeg >/dev/null 2>&1 || need_debs+=(ffmpeg)
  # The review page's browser test (tests/e2e/test_review_page.py): Debian's chromium and its driver, no download.
  { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || need_debs+=(chromium chromium-driver)
  if ! /usr/bin/python3 -c "import gi; gi.require_version('Gst','1.0'); gi.require_version('GstRtspServer','1.0'); from gi.repository import Gst, GstRtspServer; Gst.init(None); assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('rtph264pay') and Gst.ElementFactory.find('qtdemux')" >/dev/null 2>&1; then
    need_debs+=(python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly)
  fi
fi
if [ ${#need_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing Debian packages: ${need_debs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_debs[@]}" >/dev/null
  else
    echo "missing system packages: ${need_debs[*]}" >&2
    echo "install them with:  sudo apt-get install ${need_debs[*]}" >&2
    exit 1
  fi
fi

# --- Python environment --------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
# Exactly one ONNX Runtime build: both wheels provide the `onnxruntime` module.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then ort=gpu; else ort=cpu; fi
extras="$ort"
[ "$mode" = test ] && extras="$ort,export,dev,lab"
[ "$mode" = lab ] && extras="$ort,lab"
stamp="$VENV/.fbvision-installed"
hash=$(sha256sum pyproject.toml | cut -c1-16)
have=$(cat "$stamp" 2>/dev/null || true)
case "$have" in
  "$ort,export,dev,lab $hash" | "$extras $hash") ;;   # already installed (the full set covers `run` and `lab` too)
  *)
    log "installing fbvision[$extras] into $VENV (first time: a few minutes)"
    other=$([ "$ort" = gpu ] && echo onnxruntime || echo onnxruntime-gpu)
    "$VENV/bin/pip" uninstall -y -q "$other" >/dev/null 2>&1 || true
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[$extras]"
    echo "$extras $hash" > "$stamp"
    ;;
esac
if [ "$mode" != run ]; then
  # The notebooks name the kernel "python3": make it this .venv's Python (not whatever python3 is on PATH), in
  # the .venv's own Jupyter data folder.
  "$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fbvision .venv)" >/dev/null
fi
log "ready ($VENV, onnxruntime: $ort, redis-server: $(command -v redis-server || echo /usr/bin/redis-server))"
