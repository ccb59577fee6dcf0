"""The transport's typed JSON records: unknown fields are kept (a newer writer's), a known field of the wrong type
is a clear error, and camera statuses round-trip through a real Redis."""

from __future__ import annotations

import pytest

from fbvision.core.transport.records import CameraStatus, RecordError


def test_an_unknown_field_is_kept_through_a_round_trip():
    raw = '{"state":"online","since":5,"lens":{"zoom":2},"frames":3}'
    status = CameraStatus.from_json(raw)
    assert status.state == "online" and status.since == 5.0 and status.frames == 3
    assert status.to_dict() == {"state": "online", "since": 5.0, "lens": {"zoom": 2}, "frames": 3}
    assert CameraStatus.from_json(status.to_json()) == status


def test_a_partial_status_stays_partial():
    assert CameraStatus.from_dict({"state": "offline"}).to_dict() == {"state": "offline"}


@pytest.mark.parametrize("raw, message", [
    ('{"since": 1.0}', r"CameraStatus: state: Field required"),
    ('{"state": "online", "since": "yesterday"}', r"CameraStatus: since: .*number"),
    ('{"state": "online", "frames": 2.5}', r"CameraStatus: frames: .*integer"),
    ('[1, 2]', r"CameraStatus: want a JSON object, got list"),
    ('not json', r"CameraStatus: not JSON"),
    (b'\xff{}', r"CameraStatus: not JSON"),
])
def test_a_bad_record_is_a_clear_error(raw, message):
    with pytest.raises(RecordError, match=message):
        CameraStatus.from_json(raw)


def test_statuses_through_redis_skip_and_count_a_bad_one(transport):
    transport.set_camera_status("cam1", {"state": "online", "since": 1.0, "future_field": [1]})
    transport.client.hset(transport.keys.camera_status, "cam2", '{"state": "online", "since": "soon"}')
    assert transport.camera_statuses() == {"cam1": {"state": "online", "since": 1.0, "future_field": [1]}}
    assert transport.camera_status_records()["cam1"].state == "online"
    assert transport.invalid_ids["camera_status"] == 2  # cam2, once per read
    with pytest.raises(RecordError, match="since"):
        transport.set_camera_status("cam3", {"state": "online", "since": "soon"})
