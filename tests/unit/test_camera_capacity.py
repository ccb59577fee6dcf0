"""The camera side's capacity measures: shared scene frames, one renderer per scene, several camera managers."""

from __future__ import annotations

import numpy as np
import pytest

from fbvision.core.config import CameraConfig, CameraManagerConfig, Settings
from fbvision.synth import Scenario, SceneRenderer


def test_shared_frame_is_the_rendered_frame_read_only_and_bounded():
    renderer = SceneRenderer(Scenario.builtin("two_horses"))
    for i in (3, 4, 3, 10, 11, 12, 13, 14):
        shared = renderer.shared_frame(i)
        assert np.array_equal(shared, renderer.frame(i))
        assert not shared.flags.writeable
    assert renderer.shared_frame(14) is renderer.shared_frame(14)  # a hit: no second render
    assert len(renderer._cache) <= SceneRenderer.CACHE_FRAMES
    with pytest.raises(ValueError):
        renderer.shared_frame(14)[0, 0, 0] = 1
    assert renderer.frame(14).flags.writeable  # frame() still hands out a fresh array


def test_cameras_of_one_process_share_one_renderer_per_scene():
    from fbvision.camera.factory import _shared_renderer

    built = []

    def build(scenario):
        built.append(scenario.name)
        return object.__new__(SceneRenderer)

    a = _shared_renderer(Scenario.builtin("running"), build)
    b = _shared_renderer(Scenario.builtin("running"), build)
    c = _shared_renderer(Scenario.builtin("rolling"), build)
    assert a is b and a is not c and built == ["running", "rolling"]


@pytest.mark.parametrize("processes, cameras, cores, expected", [
    (0, 4, 2, 1), (0, 9, 2, 2), (0, 32, 2, 2), (0, 32, 8, 4), (3, 32, 2, 3), (5, 2, 2, 2), (0, 0, 2, 1),
])
def test_camera_processes_resolved(monkeypatch, processes, cameras, cores, expected):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)), raising=False)
    assert CameraManagerConfig(processes=processes).resolved_processes(cameras) == expected


def test_runner_splits_the_cameras_over_the_camera_stages(tmp_path):
    from fbvision.run.runner import PipelineRun
    from fbvision.run.stages import camera_part_stage

    cameras = [CameraConfig(id=f"cam-{i}", source="synthetic:running") for i in range(5)]
    run = PipelineRun(Settings(cameras=cameras, camera=CameraManagerConfig(processes=2)), tmp_path,
                      dashboard=False, record=False)
    specs = run._camera_stages()
    assert [s.name for s in specs] == ["camera-1", "camera-2"]
    assert all(s.target is camera_part_stage for s in specs)
    parts = [Settings.model_validate_json(s.args[0]).cameras for s in specs]
    assert sorted(c.id for part in parts for c in part) == [c.id for c in cameras]
    one = PipelineRun(Settings(cameras=cameras[:1]), tmp_path, dashboard=False, record=False)._camera_stages()
    assert [s.name for s in one] == ["camera"]
