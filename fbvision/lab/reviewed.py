"""Score smoothing strategies on *your own stalls*: a reviewed run instead of synthetic ground truth.

A reviewed run is what the pipeline recorded (``<run>/recording``, the logic stage's parquet) plus what a person said
on the review page (the backend's database ``<run>/alerts.sqlite``, or the exported ``verdicts.csv`` and
``missed.csv``): each alert episode marked true / false / unsure (a true one optionally with when the event really
began and ended), and the events nobody was alerted to ("missed: horse was down from ... to ...").

The reviewed events stand in for the ground truth: every true episode and every missed event becomes an expected
alert (onset = when it really began - the reviewer's time, else the episode's start; due by onset + the rule's
minimum duration + ``max_delay_s``), and each strategy's raises are matched against them exactly as
:func:`fbvision.lab.strategies.evaluate_strategies` matches against a scenario's truth. So:

* **precision** (hits / raises) is known from the verdicts: a raise nobody confirmed is a false alert;
* **recall** (hits / expected) is only as good as the missed events the reviewer marked;
* ``unsure`` episodes are not expected alerts: a strategy that raises there matches nothing and counts a false
  alert (decide them to remove that doubt).

With a reviewer who marks verdicts and missed events from the synthetic truth (notebooks/03_your_own_stalls.ipynb),
the scores equal the ground-truth scores of the same log.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fbvision.core.logic_config import LogicConfig
from fbvision.lab.groundtruth import ExpectedAlert
from fbvision.lab.strategies import evaluate_strategies

VERDICT_COLUMNS = ["episode_key", "camera_id", "rule", "track_id", "started_at", "raised_at", "resolved_at",
                   "severity", "verdict", "start_at", "end_at", "note", "who", "at"]
MISSED_COLUMNS = ["camera_id", "rule", "start_at", "end_at", "note", "who", "at"]


@dataclass
class Reviews:
    """The reviewer's word on a run: ``verdicts`` (one row per reviewed episode, its latest verdict) and
    ``missed`` (events without an alert)."""

    verdicts: pd.DataFrame
    missed: pd.DataFrame
    source: str = ""

    def summary(self) -> dict[str, int]:
        counts = self.verdicts["verdict"].value_counts().to_dict() if len(self.verdicts) else {}
        return {"true": int(counts.get("true", 0)), "false": int(counts.get("false", 0)),
                "unsure": int(counts.get("unsure", 0)), "missed": len(self.missed)}


def _frame(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(list(rows), columns=columns)
    for col in ("started_at", "raised_at", "resolved_at", "start_at", "end_at", "at"):
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def load_reviews(source: str | Path, missed_csv: str | Path | None = None) -> Reviews:
    """From the backend's SQLite database (``alerts.sqlite``) or an exported ``verdicts.csv`` (then ``missed.csv``
    beside it, or ``missed_csv``, when there is one)."""
    path = Path(source)
    if path.suffix == ".csv":
        text = {"episode_key": str, "camera_id": str, "rule": str, "severity": str, "verdict": str, "note": str,
                "who": str}  # "true"/"false" stay verdicts, not booleans
        verdicts = _frame(pd.read_csv(path, dtype=text).to_dict("records"), VERDICT_COLUMNS)
        missed_path = Path(missed_csv) if missed_csv else path.with_name("missed.csv")
        missed = _frame(pd.read_csv(missed_path, dtype=text).to_dict("records") if missed_path.exists() else [],
                        MISSED_COLUMNS)
        return Reviews(verdicts, missed, str(path))
    from fbvision.alerts.backend import AlertStore

    if not path.exists():
        raise FileNotFoundError(path)
    try:
        store = AlertStore(path)
    except sqlite3.Error as exc:
        raise ValueError(f"{path} is not a backend database: {exc}") from None
    try:
        return Reviews(_frame(store.verdicts(), VERDICT_COLUMNS), _frame(store.missed(), MISSED_COLUMNS), str(path))
    finally:
        store.close()


def load_reviewed_run(run_dir: str | Path) -> tuple[pd.DataFrame, Reviews]:
    """``(recording, reviews)`` of a run directory: ``recording/`` (parquet parts) and ``alerts.sqlite`` (else
    ``verdicts.csv``)."""
    from fbvision.logic.recorder import read_recording

    run_dir = Path(run_dir)
    recording = read_recording(run_dir / "recording")
    if recording.empty:
        raise ValueError(f"{run_dir / 'recording'} holds no recorded results")
    db = run_dir / "alerts.sqlite"
    reviews = load_reviews(db if db.exists() else run_dir / "verdicts.csv")
    recording.attrs["source"] = f"recording of {run_dir}"
    return recording, reviews


def reviewed_expected(reviews: Reviews, rule: str, base: LogicConfig, *, max_delay_s: float = 10.0,
                      cameras: Iterable[str] | None = None) -> dict[str, list[ExpectedAlert]]:
    """The alerts that were due according to the reviewer: true episodes and missed events of ``rule``, per camera
    (``cameras``: include these even without any)."""
    first_age = getattr(base.rules, rule).escalation[0].after_s
    out: dict[str, list[ExpectedAlert]] = {str(c): [] for c in cameras or ()}
    v = reviews.verdicts
    for row in v[(v["verdict"] == "true") & (v["rule"] == rule)].itertuples(index=False):
        onset = row.start_at if pd.notna(row.start_at) else row.started_at
        end = row.end_at if pd.notna(row.end_at) else (row.resolved_at if pd.notna(row.resolved_at) else math.inf)
        out.setdefault(str(row.camera_id), []).append(
            ExpectedAlert(str(row.camera_id), rule, float(onset), float(onset) + first_age + max_delay_s, float(end)))
    m = reviews.missed
    for row in m[m["rule"] == rule].itertuples(index=False):
        out.setdefault(str(row.camera_id), []).append(
            ExpectedAlert(str(row.camera_id), rule, float(row.start_at),
                          float(row.start_at) + first_age + max_delay_s, float(row.end_at)))
    # One event confirmed twice (two raises during it, or a raise and a missed mark) is one expected alert.
    return {cam: sorted({(e.rule, e.onset, e.condition_end): e for e in exp}.values(), key=lambda e: e.onset)
            for cam, exp in out.items()}


def evaluate_reviewed(log: pd.DataFrame, reviews: Reviews, rule: str = "horse_down",
                      grid: Mapping[str, Any] | Iterable[Any] | None = None, base: LogicConfig | None = None, *,
                      max_delay_s: float = 10.0) -> pd.DataFrame:
    """:func:`~fbvision.lab.strategies.evaluate_strategies` with the reviewer's events as the truth: the same
    columns (``precision`` included), ``table.attrs['reviews']`` the verdict counts."""
    base = base or LogicConfig()
    cameras = sorted(str(c) for c in log["camera_id"].dropna().unique())
    expected = reviewed_expected(reviews, rule, base, max_delay_s=max_delay_s, cameras=cameras)
    table = evaluate_strategies(log, rule, grid, base, expected=expected, max_delay_s=max_delay_s)
    table.attrs.update(reviews=reviews.summary(), truth=f"reviews ({reviews.source})")
    return table


def scripted_review(alerts: Iterable[Mapping[str, Any]], expected: Mapping[str, list[ExpectedAlert]],
                    ) -> tuple[list[dict], list[dict]]:
    """A stand-in for a person, for CI: verdicts for the raised ``alerts`` (dicts with ``episode_key``,
    ``camera_id``, ``rule``, ``updated_at``) and missed events, from the synthetic truth ``expected``
    (:func:`~fbvision.lab.strategies.expected_for`: the events that warrant an alert). Like a person looking at the
    clip: a raise while such an event is going on is ``true``, with when the event really began and ended (late or
    not: timing is the lab's business, not the reviewer's); any other raise is ``false``; an event during which
    nothing was raised is missed. Returns ``(verdicts, missed)`` as the review page's JSON API takes them."""
    verdicts, missed = [], []
    raised_by_camera: dict[str, list[dict]] = {}
    for a in alerts:
        raised_by_camera.setdefault(str(a["camera_id"]), []).append(dict(a))
    for camera_id in sorted(set(raised_by_camera) | set(expected)):
        events = expected.get(camera_id, [])
        seen = set()
        for a in raised_by_camera.get(camera_id, []):
            event = next((e for e in events if e.rule == a["rule"]
                          and e.onset - 1.0 <= float(a["updated_at"]) <= e.condition_end), None)
            if event is None:
                verdicts.append({"episode_key": a["episode_key"], "verdict": "false", "who": "scripted-reviewer",
                                 "note": "scripted reviewer: nothing happened"})
                continue
            seen.add(event)
            verdicts.append({"episode_key": a["episode_key"], "verdict": "true", "start_at": event.onset,
                             "end_at": event.condition_end, "who": "scripted-reviewer"})
        for e in events:
            if e not in seen:
                missed.append({"camera_id": camera_id, "rule": e.rule, "start_at": e.onset, "end_at": e.condition_end,
                               "note": "scripted reviewer: no alert for this event", "who": "scripted-reviewer"})
    return verdicts, missed
