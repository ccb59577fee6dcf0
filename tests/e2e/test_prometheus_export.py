"""With ``runner.prometheus_port`` set, every stage process of a running pipeline serves its own ``/metrics``
(logic on the port, inference +1, camera +2, delivery +3) with its counters and latency histograms."""

from __future__ import annotations

import socket
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from fbvision.core.config import DEMO_CONFIG, load_settings
from fbvision.run.runner import PipelineRun

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

OFFSETS = {"logic": 0, "inference": 1, "camera": 2, "delivery": 3}  # fbvision.run.stages._setup


def four_free_ports() -> int:
    """A base port with base .. base+3 free on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + 3 > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + 4):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no four consecutive free ports")


def scrape(port: int) -> dict | None:
    """``{"events": {(stage, name): value}, "latency_counts": {stage: n}, "queue_depth": {(stage, queue): v}}``,
    or None while the endpoint does not answer yet."""
    try:
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except requests.RequestException:
        return None
    out: dict = {"events": {}, "latency_counts": {}, "queue_depth": {}}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "fbvision_events_total":
                out["events"][(sample.labels["stage"], sample.labels["name"])] = sample.value
            elif sample.name == "fbvision_stage_latency_seconds_count":
                out["latency_counts"][sample.labels["stage"]] = sample.value
            elif sample.name == "fbvision_queue_depth":
                out["queue_depth"][(sample.labels["stage"], sample.labels["queue"])] = sample.value
    return out


def test_every_stage_exports_its_counters_and_latency_on_its_own_port(tmp_path):
    base = four_free_ports()
    settings = load_settings(DEMO_CONFIG)
    if not settings.model.resolved_path().exists():
        pytest.fail("the committed demo model is missing")
    settings.cameras = [type(settings.cameras[0])(id="cam-a", source="synthetic:normal_walk", fps=5)]
    settings.runner.dashboard = False
    settings.runner.prometheus_port = base
    run = PipelineRun(settings, tmp_path / "run", dashboard=False, record=False)
    run.start()
    got: dict[str, dict | None] = {}

    def ready() -> bool:
        got.update({stage: scrape(base + offset) for stage, offset in OFFSETS.items()})
        if any(v is None for v in got.values()):
            return False
        ev = {stage: got[stage]["events"] for stage in OFFSETS}
        return (ev["camera"].get(("camera", "frames_pushed"), 0) > 0
                and ev["inference"].get(("inference", "frames_out"), 0) > 0
                and ev["logic"].get(("logic", "results"), 0) > 0
                and bool(got["inference"]["queue_depth"]) and bool(got["delivery"]["queue_depth"]))  # 1st flush

    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not ready():
            run.step()
            time.sleep(1.0)
        assert all(v is not None for v in got.values()), {s: v is not None for s, v in got.items()}
        camera, inference, logic, delivery = (got[s] for s in ("camera", "inference", "logic", "delivery"))
        # frames counted in each stage, each on its own port (and only its own stage's counters there)
        assert camera["events"][("camera", "frames_read")] > 0
        assert camera["events"][("camera", "frames_pushed")] > 0
        assert camera["events"][("camera", "frames_pushed:cam-a")] > 0
        assert inference["events"][("inference", "frames_in")] > 0
        assert inference["events"][("inference", "frames_out")] > 0
        assert logic["events"][("logic", "results")] > 0
        for stage in OFFSETS:
            assert {s for s, _ in got[stage]["events"]} == {stage}, stage
        # the delivery answers with its counters (declared at 0 before any alert is delivered)
        assert ("delivery", "delivered") in delivery["events"]
        assert ("delivery", "redis_unavailable") in delivery["events"]
        assert ("delivery", "alerts:outbox") in delivery["queue_depth"]
        # latency histograms: the stage's own steps, and the pipeline's stages as the logic worker measures them
        assert camera["latency_counts"].get("camera_encode", 0) > 0
        assert camera["latency_counts"].get("camera_push", 0) > 0
        assert inference["latency_counts"].get("inference_infer", 0) > 0
        assert inference["latency_counts"].get("inference_publish", 0) > 0
        assert logic["latency_counts"].get("end_to_end", 0) > 0
        assert logic["latency_counts"].get("inference", 0) > 0
        # the frame queue's depth, as the inference worker sees it
        assert ("inference", "batch_frames") in inference["queue_depth"]
        assert sum(run.supervisor.restart_counts.values()) == 0
    finally:
        run.warm_stop()
        run.close()
