"""Plots of one track's features with ground-truth behaviour bands and alerts (matplotlib imported lazily)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from fbvision.core.logic_config import (
    LogicConfig,
)
from fbvision.lab.detections import _track_rows

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------
# Plots

#: Background colour per ground-truth behaviour (standing is left blank).
BEHAVIOUR_COLOURS: dict[str, str] = {
    "walking": "#d9ead3",
    "running": "#9fc5e8",
    "lying_down": "#ffe599",
    "getting_up": "#fff2cc",
    "lying_sternal": "#f9cb9c",
    "lying_flat": "#ea9999",
    "rolling": "#b4a7d6",
    "absent": "#cccccc",
}
_PANELS = (
    ("aspect", "aspect w/h"),
    ("rel_height", "rel. height"),
    ("speed_bl_s", "speed BL/s"),
    ("confidence", "confidence"),
)


def _runs(values: Sequence[Any], times: Sequence[float], dt: float) -> list[tuple[Any, float, float]]:
    out: list[tuple[Any, float, float]] = []
    for value, t in zip(values, times, strict=True):
        if out and out[-1][0] == value and t - out[-1][2] <= 1.5 * dt:
            out[-1] = (value, out[-1][1], t + dt)
        else:
            out.append((value, t, t + dt))
    return out


def _alert_sets(alerts: Any) -> dict[str, pd.DataFrame]:
    if alerts is None:
        return {}
    if isinstance(alerts, pd.DataFrame):
        if "strategy" in alerts:
            return {str(k): g for k, g in alerts.groupby("strategy", sort=False)}
        return {"alerts": alerts}
    return {str(k): v for k, v in dict(alerts).items()}


def plot_track_timeline(
    log: pd.DataFrame,
    camera_id: str,
    alerts: pd.DataFrame | Mapping[str, pd.DataFrame] | None = None,
    ax: Sequence[Any] | None = None,
    *,
    track_id: int | None = None,
    config: LogicConfig | None = None,
):
    """One track's aspect, relative height, speed and confidence over time, on ground-truth behaviour bands,
    with the alert episodes of each strategy (``alerts``: :func:`run_strategy` output, or a dict label ->
    output, or one DataFrame with a ``strategy`` column) in a last panel.

    ``track_id`` defaults to the camera's track seen in most frames. ``ax``: 4 axes (5 with alerts) to draw
    into; else a new figure. Returns the figure.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    config = config or LogicConfig()
    rows = _track_rows(log[log["camera_id"] == camera_id])
    if rows.empty:
        raise ValueError(f"no track rows for camera {camera_id!r}")
    if track_id is None:
        track_id = int(rows[rows["present"].astype(bool)]["track_id"].value_counts().idxmax())
    track = rows[rows["track_id"] == track_id].sort_values("t")
    sets = _alert_sets(alerts)
    n_panels = len(_PANELS) + (1 if sets else 0)
    if ax is None:
        fig, axes = plt.subplots(n_panels, 1, sharex=True, figsize=(11, 1.6 * n_panels + 0.6))
        axes = np.atleast_1d(axes)
    else:
        axes = np.asarray(ax, dtype=object).reshape(-1)
        if len(axes) < n_panels:
            raise ValueError(f"need {n_panels} axes, got {len(axes)}")
        fig = axes[0].figure
    times = track["t"].to_numpy(float)
    dt = float(np.median(np.diff(times))) if len(times) > 1 else 0.2
    bands = _runs(list(track["gt_behaviour"].fillna("unknown")), list(times), dt)
    for axis in axes[:n_panels]:
        for behaviour, t0, t1 in bands:
            colour = BEHAVIOUR_COLOURS.get(behaviour)
            if colour is not None:
                axis.axvspan(t0, t1, color=colour, alpha=0.7, lw=0)
    present = track["present"].astype(bool).to_numpy()
    lying = track["lying"].astype(bool).to_numpy()
    for axis, (column, title) in zip(axes, _PANELS, strict=False):
        values = track[column].to_numpy(float)
        axis.plot(times, values, color="k", lw=1)
        axis.scatter(times[present & lying], values[present & lying], s=6, color="crimson", zorder=3)
        axis.set_ylabel(title, fontsize=8)
    axes[0].axhline(config.features.lying_min_aspect, color="grey", ls=":", lw=0.8)
    axes[1].axhline(config.features.lying_rel_height, color="grey", ls=":", lw=0.8)
    axes[2].axhline(config.rules.too_fast.speed_bl_s, color="grey", ls=":", lw=0.8)
    if sets:
        axis = axes[len(_PANELS)]
        end = float(times.max()) + dt
        labels = list(sets)
        for level, label in enumerate(labels):
            tr = sets[label]
            tr = tr[(tr["camera_id"] == camera_id) & (tr["track_id"] == track_id)]
            raised = tr[tr["state"] == "raised"]
            resolved = tr[tr["state"] == "resolved"]
            for _, r in raised.iterrows():
                ends = resolved[resolved["started_at"] == r["started_at"]]
                stop = float(ends["t"].iloc[0]) if len(ends) else end
                axis.plot([r["started_at"], r["t"]], [level, level], color="orange", lw=2)
                axis.plot([r["t"], stop], [level, level], color="red", lw=4)
                axis.plot([r["t"]], [level], marker="v", color="red")
        axis.set_yticks(range(len(labels)), labels, fontsize=7)
        axis.set_ylim(-0.7, len(labels) - 0.3)
        axis.set_ylabel("alerts", fontsize=8)
    axes[n_panels - 1].set_xlabel("t (s)")
    seen = [b for b, _, _ in bands if b in BEHAVIOUR_COLOURS]
    handles = [Patch(color=BEHAVIOUR_COLOURS[b], label=b) for b in dict.fromkeys(seen)]
    if handles:
        axes[0].legend(handles=handles, fontsize=7, ncol=len(handles), loc="upper left", framealpha=0.8)
    axes[0].set_title(f"{camera_id} - track {track_id} (red dots: classified lying)", fontsize=9)
    return fig
