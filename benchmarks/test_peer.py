"""The peer benchmark: fbvision against the tool a user would pick instead, on the same CPU, model and video.

All rows in one run, on the demo model (horse YOLO11n 320, FP32 ONNX) and the same synthetic 960x540 MP4:

* ``ort``: the model alone in ONNX Runtime on pre-letterboxed tensors (FP32: batch 1 / 8, intra-op threads 1 / 2
  / all, spinning off - the ceiling; the INT8 variant at batch 1 / 8, all threads);
* ``ultralytics``: ``YOLO(model.onnx, task="detect").predict(video, stream=True, batch=b, imgsz=320,
  rect=False)`` (``rect=False``: a fixed-size export; batch 1 / 8) - decode + letterbox + model + NMS;
* ``fbvision``: ``fbvision run`` itself (the product: camera manager, inference worker, logic with tracking and
  rules, evidence, the embedded backend, a private redis-server) with N file cameras on that video at 5 fps,
  N rising; judged frames/s from the run's report.json over its steady window (first judged frame to the end of
  the duration: start-up left out), and CPU ms per judged frame per stage in that window.

``test_peer_ratios`` (last) prints the ratios side by side and writes ``peer.md`` and ``peer.json`` into the
results folder. A plain ``pytest benchmarks`` is the smoke pass (a 40-frame video, one fbvision row of 2 cameras
for a few seconds); ``make bench`` the full one. Nothing here asserts a timing.
``FBV_BENCH_PEER_ROWS`` (e.g. ``fp32:4,fp32:8,auto:8``: model.precision and cameras) picks the fbvision rows,
``FBV_BENCH_PEER_S`` their seconds. ``auto`` is the demo's precision: the INT8 variant where it passed its check
and is faster on this machine (docs/inference.md), else FP32; the row records which ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import common

pytestmark = [pytest.mark.bench, pytest.mark.timeout(3600)]

IMGSZ = 320
FPS = 5.0
_ROWS: dict[str, dict] = {}


def _rows() -> list[tuple[str, int]]:
    """(model.precision, cameras) of the fbvision rows: FBV_BENCH_PEER_ROWS (e.g. ``fp32:4,fp32:8,auto:12``)."""
    chosen = os.environ.get("FBV_BENCH_PEER_ROWS", "").strip()
    if chosen:
        return [(r.split(":")[0], int(r.split(":")[1])) for r in chosen.split(",") if r.strip()]
    if common.quick_mode():
        return [("auto", 2)]
    return [(p, n) for p in ("fp32", "auto") for n in (4, 6, 8, 12)]


def _seconds() -> float:
    return float(os.environ.get("FBV_BENCH_PEER_S", "") or (30.0 if common.quick_mode() else 60.0))


@pytest.fixture(scope="module")
def peer_video(tmp_path_factory) -> Path:
    """The synthetic stall video every row reads: 960x540, the ``normal_walk`` scenario (one horse moving)."""
    from fbvision.synth.scenario import Scenario
    from fbvision.synth.video import write_video

    seconds = 8 if common.quick_mode() else 60
    cache = common.REPO_ROOT / ".cache" / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"peer-normal_walk-{seconds}s.mp4"
    if not path.is_file():
        scenario = Scenario.builtin("normal_walk")
        scenario = scenario.model_copy(update={"duration_s": float(seconds)})
        write_video(scenario, path)
    return path


def _video_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system


# -- the model alone ---------------------------------------------------------------------------------------------


MODEL_ALONE = [("fp32", b, t) for t in (1, 2, 0) for b in (1, 8)] + [("int8", b, 0) for b in (1, 8)]


@pytest.mark.parametrize("precision, batch, threads", MODEL_ALONE)
def test_model_alone(benchmark, precision, batch, threads):
    import onnxruntime as ort

    from fbvision.inference.engines.variants import int8_variant

    path = common.DEMO_MODEL if precision == "fp32" else int8_variant(common.DEMO_MODEL)
    if not path.is_file():
        pytest.skip(f"{path.name} not present")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    images = common.stall_images(batch, seed=3)
    from fbvision.core.letterbox import letterbox
    from fbvision.core.tensor import to_tensor

    tensor = to_tensor([letterbox(im, (IMGSZ, IMGSZ))[0] for im in images])
    for _ in range(2):
        session.run(None, {name: tensor})
    seconds = 1.5 if common.quick_mode() else 8.0

    def measure():
        n, t0, c0 = 0, time.perf_counter(), _cpu_s()
        while time.perf_counter() - t0 < seconds:
            session.run(None, {name: tensor})
            n += batch
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        return n / wall, 1000.0 * cpu / n

    fps, cpu_ms = benchmark.pedantic(measure, rounds=1, iterations=1)
    row = {"what": f"model alone, ORT {precision.upper()}, batch {batch}, threads {threads or 'all'}",
           "frames_per_s": round(fps, 1), "cpu_ms_per_frame": round(cpu_ms, 1), "precision": precision}
    _ROWS[f"ort:{precision}:b{batch}:t{threads}"] = row
    benchmark.extra_info.update(kind="peer", **row)


# -- Ultralytics predict ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 8])
def test_ultralytics_predict(benchmark, batch, peer_video):
    pytest.importorskip("ultralytics")
    from ultralytics import YOLO

    model = YOLO(str(common.DEMO_MODEL), task="detect")
    # one warm-up pass over a few frames (the ONNX session is created on the first call)
    for _ in model.predict(str(peer_video), stream=True, batch=batch, imgsz=IMGSZ, rect=False, device="cpu",
                           verbose=False, vid_stride=max(1, _video_frames(peer_video) // 8)):
        pass

    def measure():
        n, boxes, t0, c0 = 0, 0, time.perf_counter(), _cpu_s()
        for result in model.predict(str(peer_video), stream=True, batch=batch, imgsz=IMGSZ, rect=False,
                                    device="cpu", verbose=False):
            n += 1
            boxes += len(result.boxes)
        wall, cpu = time.perf_counter() - t0, _cpu_s() - c0
        return n, boxes, n / wall, 1000.0 * cpu / n

    n, boxes, fps, cpu_ms = benchmark.pedantic(measure, rounds=1, iterations=1)
    assert n == _video_frames(peer_video), "Ultralytics skipped frames of the video"
    assert boxes >= n // 2, "the demo model found no horse in most frames: not the same workload"
    row = {"what": f"Ultralytics predict, batch {batch}", "frames_per_s": round(fps, 1),
           "cpu_ms_per_frame": round(cpu_ms, 1), "frames": n}
    _ROWS[f"ultralytics:b{batch}"] = row
    benchmark.extra_info.update(kind="peer", **row)


# -- fbvision run ------------------------------------------------------------------------------------------------


def _config(tmp: Path, video: Path, cameras: int, precision: str) -> Path:
    from fbvision.core.config import load_settings

    demo = yaml.safe_load((common.REPO_ROOT / "fbvision" / "data" / "demo.yaml").read_text())
    demo["model"]["path"] = str(common.DEMO_MODEL)
    demo["model"]["precision"] = precision
    demo["cameras"] = [{"id": f"file-{i:02d}", "source": str(video), "fps": FPS, "loop": True}
                       for i in range(cameras)]
    demo["inference"]["autotune_cache"] = str(common.REPO_ROOT / ".cache" / "fbvision" / "autotune.json")
    demo["runner"]["dashboard"] = False
    path = tmp / f"peer-{precision}-{cameras}.yaml"
    path.write_text(yaml.safe_dump(demo, sort_keys=False))
    load_settings(path)  # a config error shows here, not as a failed run
    return path


@pytest.mark.parametrize("precision, cameras", _rows())
def test_fbvision_run(benchmark, precision, cameras, peer_video, tmp_path):
    config = _config(tmp_path, peer_video, cameras, precision)
    run_dir = tmp_path / "run"
    seconds = _seconds()

    def measure():
        proc = subprocess.run(
            [sys.executable, "-m", "fbvision", "run", "--config", str(config), "--duration", str(seconds),
             "--no-dashboard", "--no-record", "--run-dir", str(run_dir)],
            capture_output=True, text=True, timeout=seconds + 240, cwd=common.REPO_ROOT,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads((run_dir / "report.json").read_text())

    report = benchmark.pedantic(measure, rounds=1, iterations=1)
    steady = report.get("steady") or {}
    judged = int(steady.get("judged") or 0)
    drops = report.get("drops") or {}
    e2e = (report.get("latency_ms") or {}).get("end_to_end") or {}
    ran = (report.get("model_precision") or {}).get("precision", "fp32")
    row = {"what": f"fbvision run, {cameras} file cameras x {FPS:g} fps, model.precision {precision} (ran {ran})",
           "cameras": cameras, "precision": ran,
           "offered_per_s": cameras * FPS, "frames_per_s": steady.get("judged_per_s", 0.0),
           "steady_s": steady.get("seconds"), "cpu_cores": steady.get("cpu_cores"),
           "judged": judged, "stale": int(drops.get("inference:stale", 0)),
           "dropped": int(sum(int(v) for v in drops.values())), "e2e_p50_ms": e2e.get("p50"),
           "e2e_p95_ms": e2e.get("p95"), "batch": (report.get("batch") or {}).get("chosen"),
           "cpu_ms_per_frame": report.get("cpu_ms_per_frame")}
    assert judged > 0, "no frame was judged in the steady window"
    _ROWS[f"fbvision:{precision}:{cameras}"] = row
    benchmark.extra_info.update(kind="peer", **row)


# -- side by side --------------------------------------------------------------------------------------------------


def ratios(rows: dict[str, dict]) -> dict:
    """The peer table's ratios: fbvision's best judged frames/s over Ultralytics' best batch and over the model
    alone's best setting, per precision that ran; the knee is the smallest N within 5% of that precision's best."""
    ultra = max((r["frames_per_s"] for k, r in rows.items() if k.startswith("ultralytics:")), default=None)
    alone = max((r["frames_per_s"] for k, r in rows.items() if k.startswith("ort:fp32:")), default=None)
    out = {"ultralytics_best": ultra, "model_alone_best": alone}
    for precision in ("fp32", "int8"):
        fbv = {r["cameras"]: r["frames_per_s"] for k, r in rows.items()
               if k.startswith("fbvision:") and r["precision"] == precision}
        best = max(fbv.values(), default=None)
        out[f"fbvision_{precision}_best"] = best
        out[f"fbvision_{precision}_knee_cameras"] = min((n for n, v in fbv.items() if best and v >= 0.95 * best),
                                                        default=None)
        out[f"fbvision_{precision}_vs_ultralytics"] = round(best / ultra, 2) if best and ultra else None
        out[f"fbvision_{precision}_vs_model_alone"] = round(best / alone, 2) if best and alone else None
    return out


def plot(rows: dict[str, dict], summary: dict, path: Path) -> Path | None:
    """The capacity curve: judged frames/s against cameras per precision, offered load, the peer's and the model
    alone's best as lines; CPU ms per judged frame per stage (stacked) below."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fbv = [r for k, r in rows.items() if k.startswith("fbvision:")]
    if not fbv:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8))
    for precision in sorted({r["precision"] for r in fbv}):
        pts = sorted((r["cameras"], r["frames_per_s"]) for r in fbv if r["precision"] == precision)
        top.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"fbvision ({precision})")
    ns = sorted({r["cameras"] for r in fbv})
    top.plot(ns, [n * FPS for n in ns], ":", color="grey", label="offered")
    for key, style, label in (("ultralytics_best", "--", "Ultralytics predict (best batch)"),
                              ("model_alone_best", "-.", "model alone (best)")):
        if summary.get(key):
            top.axhline(summary[key], linestyle=style, color="black", label=label)
    top.set_xlabel("file cameras x 5 fps")
    top.set_ylabel("judged frames/s")
    top.legend(fontsize=8)
    top.grid(alpha=0.3)
    stages = sorted({s for r in fbv for s in (r.get("cpu_ms_per_frame") or {}) if s != "all"})
    labels = [f"{r['precision']} x{r['cameras']}" for r in fbv]
    base = np.zeros(len(fbv))
    for stage in stages:
        values = np.array([float((r.get("cpu_ms_per_frame") or {}).get(stage, 0.0)) for r in fbv])
        bottom.bar(labels, values, bottom=base, label=stage)
        base += values
    bottom.set_ylabel("CPU ms per judged frame")
    bottom.legend(fontsize=8, ncol=3)
    bottom.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def test_peer_ratios():
    if not _ROWS:
        pytest.skip("no peer row ran")
    summary = ratios(_ROWS)
    machine = common.machine_info()
    lines = [f"# Peer benchmark ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"Machine: {machine.get('cpu')} ({machine.get('cpu_family_model')}), {machine.get('cores')} cores; "
             f"flags {' '.join(machine.get('cpu_flags') or []) or '?'}", "",
             "| row | frames/s | CPU ms/frame | notes |", "|---|---|---|---|"]
    for key, r in _ROWS.items():
        note = ""
        if key.startswith("fbvision:"):
            note = (f"offered {r['offered_per_s']:g}/s, stale {r['stale']}, dropped {r['dropped']}, e2e p50/p95 "
                    f"{r['e2e_p50_ms']}/{r['e2e_p95_ms']} ms, batch {r['batch']}")
        cpu = r.get("cpu_ms_per_frame")
        lines.append(f"| {r['what']} | {r['frames_per_s']} | {json.dumps(cpu) if isinstance(cpu, dict) else cpu} "
                     f"| {note} |")
    lines += ["", "Ratios: " + ", ".join(f"{k} {v}" for k, v in summary.items())]
    out = common.results_dir()
    (out / "peer.md").write_text("\n".join(lines) + "\n")
    (out / "peer.json").write_text(json.dumps({"rows": _ROWS, "ratios": summary, "machine": machine}, indent=1))
    plot(_ROWS, summary, out / "peer.png")
    print("\n" + "\n".join(lines))
    assert all(np.isfinite(v) for v in summary.values() if isinstance(v, float))
