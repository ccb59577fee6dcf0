"""Process entry points of the stages: build the stage from a serialised config and run it until stopped.

Each function's arguments are plain strings (the config as JSON, URLs, names) so that it can be started
with the ``spawn`` method by :mod:`fbvision.run.supervisor`, from ``runners/run_*.py`` or from ``fbvision``
subcommands. The last argument is always the stop event.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from pathlib import Path

from fbvision.core.config import Settings
from fbvision.core.transport import Connection, RunnerTransport, Transport

logger = logging.getLogger(__name__)


def _setup(settings_json: str, redis_url: str, role: str, port_offset: int | None = None) -> tuple[Settings, Connection]:
    settings = Settings.model_validate_json(settings_json)
    # alerts.outbox_maxlen caps every XADD to the outbox (the logic stage writes it, delivery trims it). Every stage
    # still gets the whole Transport: with the role facades (fbvision.core.transport.ROLE_TRANSPORTS) the fault
    # suite's corrupt-JPEG frame arrived stale (tests/fault/test_corrupt_messages.py), cause not found yet.
    transport = Transport.from_config(
        settings.redis, url=redis_url, client_name=f"fbv-{role}", outbox_maxlen=settings.alerts.outbox_maxlen)
    if settings.runner.prometheus_port:
        from fbvision.core import metrics

        offset = port_offset if port_offset is not None else {"logic": 0, "inference": 1, "camera": 2,
                                                               "delivery": 3}.get(role, 4)
        metrics.enable_prometheus(settings.runner.prometheus_port + offset)
    return settings, transport


def default_name(role: str) -> str:
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


def camera_stage(settings_json: str, redis_url: str, stop) -> None:
    camera_part_stage(settings_json, redis_url, 0, stop)


def camera_part_stage(settings_json: str, redis_url: str, part: int, stop) -> None:
    """Camera manager ``part`` of several (``camera.processes``), over the cameras of ``settings_json``. Its
    Prometheus port: the camera offset (2) for part 0, 4 + part for the others."""
    from fbvision.camera.manager import CameraManager
    from fbvision.core.modelinfo import load_model_info

    settings, transport = _setup(settings_json, redis_url, "camera", None if part == 0 else 4 + part)
    height, width = load_model_info(settings.model.resolved_path()).input_size
    try:
        CameraManager(settings, transport, (width, height), name=default_name("camera"),
                      offline_after_s=settings.logic.rules.camera_offline.stale_after_s).run(stop)
    finally:
        transport.close()


def inference_stage(settings_json: str, redis_url: str, stop) -> None:
    from fbvision.inference.worker import InferenceWorker

    settings, transport = _setup(settings_json, redis_url, "inference")
    try:
        InferenceWorker(settings, transport, name=default_name("inference"),
                        autotune_budget_s=settings.inference.autotune_budget_s).run(stop)
    finally:
        transport.close()


def logic_stage(settings_json: str, redis_url: str, worker_id: str, recording_dir: str, stop) -> None:
    from fbvision.logic.recorder import Recorder
    from fbvision.logic.worker import LogicWorker

    settings, transport = _setup(settings_json, redis_url, "logic")
    recorder = Recorder(Path(recording_dir)) if recording_dir else None
    try:
        LogicWorker(settings, transport, worker_id or default_name("logic"), recorder=recorder).run(stop)
    finally:
        if recorder is not None:
            recorder.close()
        transport.close()


def delivery_stage(settings_json: str, redis_url: str, backend_url: str, stop) -> None:
    from fbvision.alerts.delivery import AlertDelivery

    settings, transport = _setup(settings_json, redis_url, "delivery")
    try:
        AlertDelivery(transport, settings.alerts, f"delivery@{socket.gethostname()}", backend_url=backend_url or None,
                      claim_idle_s=settings.alerts.claim_idle_s).run(stop)
    finally:
        transport.close()


def horse_days(transport: Transport) -> dict[str, dict]:
    """Every camera's time budget (a horse's day) as the logic workers last published it in their snapshots."""
    out: dict[str, dict] = {}
    for name, snap in sorted(transport.snapshots().items()):
        budgets = snap.get("time_budget") if name.startswith("logic:") and isinstance(snap, dict) else None
        if isinstance(budgets, dict):
            out.update({cam: b for cam, b in budgets.items() if isinstance(b, dict)})
    return out


def backend_stage(db_path: str, port: int, evidence_dir: str, settings_json: str, redis_url: str, stop) -> None:
    """The embedded backend; with ``redis_url`` its camera pages show the cameras' status from the pipeline."""
    from fbvision.alerts.backend import EmbeddedBackend

    status_source = horse_day_source = None
    if redis_url:
        settings = Settings.model_validate_json(settings_json)
        transport = RunnerTransport.from_config(settings.redis, url=redis_url, client_name="fbv-backend")
        status_source = transport.camera_statuses
        horse_day_source = functools.partial(horse_days, transport)
    with EmbeddedBackend(db_path, port=port, evidence_dir=evidence_dir or None,
                         status_source=status_source, horse_day_source=horse_day_source) as backend:
        logger.info("embedded alert backend at %s (SQLite %s)", backend.url, db_path)
        while not stop.wait(1.0):
            pass
