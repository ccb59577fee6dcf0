"""Auto-tune: the sweep that picks ``inference.max_batch`` / ``max_wait_ms`` for this machine and model.

It is :func:`fbvision.inference.batcher.autotune` itself - what the inference worker runs at start - on the real engine:
model-only frames/s per batch size (no JPEG, no Redis), the smallest batch within 5 % of the best, and a wait no
longer than one batch-1 inference. The table is printed and attached to the JSON; the choice is written as a
config snippet (``autotune.yaml``; ``autotune-<model>.yaml`` for other models) that
:func:`fbvision.core.config.load_settings` loads - checked here.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from benchmarks import common
from fbvision.core.config import load_settings
from fbvision.inference.batcher import autotune, format_table

pytestmark = [pytest.mark.bench, pytest.mark.timeout(900)]


def snippet(result, engine, model: dict, machine: dict) -> str:
    rates = ", ".join(f"b{r['batch']} {r['frames_per_s']:.1f}" for r in result.table)
    return (
        f"# Auto-tuned by benchmarks/test_autotune.py on {dt.datetime.now().isoformat(timespec='seconds')}\n"
        f"# machine: {machine['cpu']}, {machine['cores']} cores; gpus: {', '.join(machine['gpus']) or 'none'}\n"
        f"# engine: {engine.provider}; model {model['file']} ({model['input']}, {model['weights']})\n"
        f"# model-only frames/s per batch size: {rates}\n"
        "# Merge into your config's `inference:` section (fbvision.core.config.load_settings loads this file as is).\n"
        "inference:\n"
        f"  max_batch: {int(result.batch)}\n"
        f"  max_wait_ms: {round(float(result.max_wait_ms), 2)}\n"
        "  autotune: false   # measured above: skip the start-up sweep (set true to re-measure at every start)\n"
    )


def test_autotune(benchmark, model_key, engines, model_paths, tuning, prof, results):
    engine = engines(model_key)
    sizes = [b for b in prof.batch_sizes if b <= engine.max_batch]

    result = benchmark.pedantic(
        autotune, args=(engine, sizes), kwargs={"max_wait_ms": 10.0, "budget_s": prof.autotune_budget_s},
        rounds=1, iterations=1,
    )
    tuning[model_key] = result
    table = format_table(result.table)
    print(f"\nauto-tune on {engine.provider}, model {model_key}:\n{table}\n"
          f"-> max_batch {result.batch}, max_wait_ms {result.max_wait_ms:.2f}")

    model = common.describe_model(model_paths[model_key])
    path = Path(results) / ("autotune.yaml" if model_key == "yolo11n" else f"autotune-{model_key}.yaml")
    path.write_text(snippet(result, engine, model, common.machine_info()))
    settings = load_settings(path, environ={})
    assert settings.inference.max_batch == result.batch
    assert settings.inference.max_wait_ms == pytest.approx(result.max_wait_ms, abs=0.01)

    benchmark.extra_info.update(
        kind="autotune", model_key=model_key, model=model, provider=engine.provider,
        table=[{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()} for row in result.table],
        chosen_batch=int(result.batch), chosen_wait_ms=round(float(result.max_wait_ms), 3),
        seconds=round(result.seconds, 2), snippet=str(path.name),
    )
