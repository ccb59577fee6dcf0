"""The review side of the embedded backend over HTTP (no browser: tests/e2e/test_review_page.py has the browser):
evidence files served once written (with byte ranges), verdicts and missed events stored with who/when,
filters, escaping, auth when a token is set, cross-origin form posts refused."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from fbvision.alerts.backend import EmbeddedBackend
from fbvision.core.events import AlertEvent, AlertState, Evidence, Severity
from fbvision.core.evidence import evidence_name, evidence_urls

HOSTILE = "<script>alert(1)</script>"
TOKEN = "t" * 24


def event(camera="cam-1", rule="horse_down", state=AlertState.raised, severity=Severity.warning, started=None,
          message="", track=1):
    started = time.time() - 60 if started is None else started
    key_event = AlertEvent.create(camera_id=camera, rule=rule, track_id=track, state=state, severity=severity,
                                  started_at=started, updated_at=started + 5,
                                  resolved_at=started + 9 if state is AlertState.resolved else None,
                                  evidence=Evidence(seq=1), message=message)
    snap, clip = evidence_urls(evidence_name(key_event.episode_key, state.value, severity.value))
    return key_event.model_copy(update={"evidence": Evidence(seq=1, snapshot=snap, clip=clip)})


def post(backend, ev, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = requests.post(backend.url, data=ev.to_json(), headers=headers, timeout=5)
    assert r.status_code == 201, r.text
    return ev


@pytest.fixture
def backend(tmp_path):
    with EmbeddedBackend(tmp_path / "a.sqlite", evidence_dir=tmp_path / "ev") as b:
        (tmp_path / "ev").mkdir()
        yield b


def test_evidence_is_404_until_written_then_served_with_ranges(backend, tmp_path):
    ev = post(backend, event())
    url = backend.base_url + ev.evidence.clip
    assert requests.get(url, timeout=5).status_code == 404
    data = bytes(range(256)) * 40
    (tmp_path / "ev" / f"{ev.episode_key}.mp4").write_bytes(data)
    full = requests.get(url, timeout=5)
    assert full.status_code == 200 and full.content == data and full.headers["Content-Type"] == "video/mp4"
    part = requests.get(url, headers={"Range": "bytes=100-199"}, timeout=5)
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    assert requests.get(url, headers={"Range": "bytes=99999-"}, timeout=5).status_code == 416
    for bad in ("../a.sqlite", "..%2Fa.sqlite", "x.jpg", f"{ev.episode_key}.txt"):
        assert requests.get(f"{backend.base_url}/evidence/{bad}", timeout=5).status_code == 404


def test_list_page_filters_and_the_alert_page_timeline(backend):
    a = post(backend, event(camera="cam-1", rule="horse_down"))
    post(backend, event(camera="cam-1", rule="horse_down", state=AlertState.ongoing, severity=Severity.critical,
                        started=a.started_at))
    b = post(backend, event(camera="cam-2", rule="rolling", started=time.time() - 3600))
    page = requests.get(f"{backend.base_url}/review", timeout=5).text
    assert a.episode_key in page and b.episode_key in page
    assert page.index(a.episode_key) < page.index(b.episode_key)  # newest first
    only = requests.get(f"{backend.base_url}/review?camera=cam-2", timeout=5).text
    assert b.episode_key in only and a.episode_key not in only
    crit = requests.get(f"{backend.base_url}/review?severity=critical&state=ongoing", timeout=5).text
    assert a.episode_key in crit and b.episode_key not in crit
    early = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 1800))
    recent = requests.get(f"{backend.base_url}/review?since={early}", timeout=5).text
    assert a.episode_key in recent and b.episode_key not in recent
    assert requests.get(f"{backend.base_url}/review?since=garbage", timeout=5).status_code == 400
    alert = requests.get(f"{backend.base_url}/review/alert/{a.episode_key}", timeout=5).text
    assert "raised" in alert and "ongoing" in alert and "snapshot-missing" in alert  # evidence not written yet
    assert requests.get(f"{backend.base_url}/review/alert/{'0' * 32}", timeout=5).status_code == 404


def test_verdicts_are_stored_with_who_and_when_and_filter_the_list(backend):
    a = post(backend, event(camera="cam-1"))
    b = post(backend, event(camera="cam-2"))
    r = requests.post(f"{backend.base_url}/review/alert/{a.episode_key}/verdict", data={"verdict": "true", "who": "ann"},
                      allow_redirects=False, timeout=5)
    assert r.status_code == 303
    r = requests.post(f"{backend.base_url}/api/verdicts", json={"episode_key": b.episode_key, "verdict": "false",
                                                                "note": "sleeping"}, timeout=5)
    assert r.status_code == 201
    assert requests.post(f"{backend.base_url}/api/verdicts", json={"episode_key": b.episode_key, "verdict": "maybe"},
                         timeout=5).status_code == 400
    assert requests.post(f"{backend.base_url}/api/verdicts", json={"episode_key": "0" * 32, "verdict": "true"},
                         timeout=5).status_code == 404
    verdicts = {v["episode_key"]: v for v in requests.get(f"{backend.base_url}/api/verdicts", timeout=5).json()}
    assert verdicts[a.episode_key]["verdict"] == "true" and verdicts[a.episode_key]["who"] == "ann"
    assert verdicts[b.episode_key]["note"] == "sleeping" and verdicts[b.episode_key]["at"] > time.time() - 60
    false_only = requests.get(f"{backend.base_url}/review?verdict=false", timeout=5).text
    assert b.episode_key in false_only and a.episode_key not in false_only
    csv = requests.get(f"{backend.base_url}/verdicts.csv", timeout=5).text
    assert csv.splitlines()[0].startswith("episode_key,camera_id,rule") and len(csv.splitlines()) == 3


def test_missed_events_from_the_camera_page(backend):
    post(backend, event(camera="cam-1"))
    r = requests.post(f"{backend.base_url}/review/camera/cam-1/missed", allow_redirects=False, timeout=5,
                      data={"rule": "horse_down", "start_at": "2026-01-02T03:04:05", "end_at": "2026-01-02T03:14:05"})
    assert r.status_code == 303
    assert requests.post(f"{backend.base_url}/api/missed", json={"camera_id": "cam-1", "rule": "horse_down",
                                                                 "start_at": 10, "end_at": 5}, timeout=5).status_code == 400
    missed = requests.get(f"{backend.base_url}/api/missed", timeout=5).json()
    assert len(missed) == 1 and missed[0]["end_at"] - missed[0]["start_at"] == 600
    assert "2026-01-02 03:04:05" in requests.get(f"{backend.base_url}/review/camera/cam-1", timeout=5).text


def test_hostile_camera_id_message_and_note_are_escaped(backend):
    a = post(backend, event(camera=HOSTILE, message=HOSTILE))
    requests.post(f"{backend.base_url}/api/verdicts", timeout=5,
                  json={"episode_key": a.episode_key, "verdict": "true", "note": HOSTILE, "who": HOSTILE})
    requests.post(f"{backend.base_url}/api/missed", timeout=5,
                  json={"camera_id": HOSTILE, "rule": HOSTILE, "start_at": 1, "end_at": 2, "note": HOSTILE})
    from urllib.parse import quote

    for path in ("/review", f"/review/alert/{a.episode_key}", f"/review/camera/{quote(HOSTILE, safe='')}",
                 f"/review?camera={quote(HOSTILE)}"):
        r = requests.get(backend.base_url + path, timeout=5)
        assert r.status_code == 200, path
        assert HOSTILE not in r.text and "&lt;script&gt;" in r.text, path
        assert "default-src 'self'" in r.headers["Content-Security-Policy"]


def test_cross_origin_form_posts_are_refused(backend):
    a = post(backend, event())
    r = requests.post(f"{backend.base_url}/review/alert/{a.episode_key}/verdict", data={"verdict": "true"},
                      headers={"Origin": "http://evil.example"}, allow_redirects=False, timeout=5)
    assert r.status_code == 403
    assert requests.get(f"{backend.base_url}/api/verdicts", timeout=5).json() == []


def test_review_needs_the_token_when_one_is_set(tmp_path):
    with EmbeddedBackend(tmp_path / "a.sqlite", token=TOKEN, evidence_dir=tmp_path) as b:
        a = post(b, event(), token=TOKEN)
        r = requests.get(f"{b.base_url}/review", timeout=5)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
        assert requests.get(f"{b.base_url}/evidence/{a.episode_key}.jpg", timeout=5).status_code == 401
        assert requests.get(f"{b.base_url}/review", auth=("ann", "wrong"), timeout=5).status_code == 401
        assert requests.get(f"{b.base_url}/review", auth=("ann", TOKEN), timeout=5).status_code == 200
        assert requests.get(f"{b.base_url}/review", headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=5).status_code == 200
        bad = base64.b64encode(b"\xff\xfe").decode()
        assert requests.get(f"{b.base_url}/review", headers={"Authorization": f"Basic {bad}"},
                            timeout=5).status_code == 401
        r = requests.post(f"{b.base_url}/review/alert/{a.episode_key}/verdict", data={"verdict": "unsure"},
                          auth=("ann", TOKEN), allow_redirects=False, timeout=5)
        assert r.status_code == 303
        verdicts = requests.get(f"{b.base_url}/api/verdicts", auth=("x", TOKEN), timeout=5).json()
        assert verdicts[0]["who"] == "ann"  # the basic-auth user, when the form names nobody


def test_camera_page_shows_the_pipeline_status(tmp_path):
    now = time.time()
    statuses = {"cam-1": {"state": "online", "since": now - 3600, "last_frame_ts": 1_700_000_000.0}}
    with EmbeddedBackend(tmp_path / "a.sqlite", status_source=lambda: statuses) as b:
        post(b, event(camera="cam-1"))
        post(b, event(camera="cam-1", started=now - 2 * 86400))  # older than 24 h: not listed
        page = requests.get(f"{b.base_url}/review/camera/cam-1", timeout=5).text
        assert "<b id=cam-state>online</b>" in page and "2023-11-14 22:13:20" in page
        assert "Alerts of the last 24 h (1)" in page
        statuses.clear()
        assert "status: unknown" in requests.get(f"{b.base_url}/review/camera/cam-1", timeout=5).text


def test_camera_page_shows_the_horses_day(tmp_path):
    """Issue 15: the time budget on the review page's camera view (as the logic worker last published it)."""
    now = time.time()
    day = {"t": now, "observed_s": 20 * 3600.0, "unknown_s": 600.0, "lying_min": 211.6, "lying_pct": 17.6,
           "bouts": 7, "longest_bout_min": 48.5, "mean_bout_min": 30.2, "current_bout_min": 0.0, "lie_downs": 7,
           "get_ups": 7, "lie_downs_per_h": 0.35, "get_ups_per_h": 0.35, "restless_moving_min_per_h": float("nan"),
           "night_transitions_per_h": 0.5, "absent_min": 0.0, "posture": "<b>lying</b>"}
    days = {"cam-1": day}
    with EmbeddedBackend(tmp_path / "a.sqlite", horse_day_source=lambda: days) as b:
        page = requests.get(f"{b.base_url}/review/camera/cam-1", timeout=5).text
        assert "A horse's day" in page and "<table id=horse-day>" in page
        assert "211.6 min (17.6 % of the observed time)" in page
        assert "7; longest 48.5 min" in page and "20.0 h of the last 24 h" in page
        assert "- min moving per night hour" in page  # NaN (no night observed) shown as "-", not "nan"
        assert "<b>lying</b>" not in page and "&lt;b&gt;lying&lt;/b&gt;" in page  # escaped
        other = requests.get(f"{b.base_url}/review/camera/cam-2", timeout=5).text
        assert "no time budget" in other and "<table id=horse-day>" not in other

        def away() -> dict:
            raise ConnectionError("redis away")

        b._server.horse_day_source = away  # Redis gone: the page still renders, without the budget
        assert "no time budget" in requests.get(f"{b.base_url}/review/camera/cam-1", timeout=5).text
