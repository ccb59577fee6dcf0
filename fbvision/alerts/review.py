"""The review page of the embedded backend: plain server-rendered HTML (standard library only, no JS build step;
a little inline JS for the keyboard). docs/evidence-and-review.md.

* ``GET /review`` - episodes (one row per alert episode), newest first, filtered by ``camera``, ``rule``,
  ``severity`` (the episode's highest), ``state`` (its latest), ``verdict`` (``true``/``false``/``unsure``/``none``),
  ``since``/``until`` (``YYYY-MM-DDTHH:MM`` UTC, on the episode's start).
* ``GET /review/alert/<episode key>`` - the snapshot, the clip, the timeline (raised -> ongoing -> resolved), the
  verdict buttons (true / false / unsure + note) and the verdict history (who, when).
* ``GET /review/camera/<camera id>`` - status and last frame time and a horse's day (the rolling 24 h time budget
  the logic workers publish; both when the backend can read the pipeline's Redis), alerts of the last 24 h, and a
  form to report a missed event (the lab's recall).
* ``POST /review/alert/<key>/verdict`` (form) and ``POST /api/verdicts`` (JSON ``{episode_key, verdict, note,
  who}``); ``POST /review/camera/<id>/missed`` (form) and ``POST /api/missed`` (JSON ``{camera_id, rule, start_at,
  end_at, note, who}``); ``GET /api/verdicts``, ``GET /api/missed``, ``GET /verdicts.csv``, ``GET /missed.csv``
  (what the lab loads: :mod:`fbvision.lab.reviewed`). A verdict may carry ``start_at``/``end_at``: when the event
  really began and ended, as the reviewer saw it.

Keyboard: ``j``/``k`` next/previous alert, ``t``/``f``/``u`` verdict true/false/unsure.
Every value that reaches the page (camera ids, messages, notes, names) goes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

VERDICTS = ("true", "false", "unsure")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
FILTERS = ("camera", "rule", "severity", "state", "verdict", "since", "until")

REVIEW_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    episode_key TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('true', 'false', 'unsure')),
    note TEXT NOT NULL DEFAULT '',
    start_at REAL,
    end_at REAL,
    who TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_episode ON verdicts (episode_key, row);
CREATE TABLE IF NOT EXISTS missed (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    camera_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    start_at REAL NOT NULL,
    end_at REAL NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    who TEXT NOT NULL,
    at REAL NOT NULL
);
"""

e = html.escape  # every value rendered goes through this


def ts(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(float(t), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def parse_time(text: str | None) -> float | None:
    """``YYYY-MM-DD[THH:MM[:SS]]`` (UTC) or epoch seconds -> epoch seconds; None for empty. ValueError otherwise."""
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def episodes_from_rows(rows: Sequence[Mapping], verdicts: Mapping[str, Mapping]) -> list[dict]:
    """Alert events (``alerts`` rows, oldest first) -> one dict per episode, newest first."""
    by_key: dict[str, dict] = {}
    for r in rows:
        ep = by_key.get(r["episode_key"])
        if ep is None:
            ep = by_key[r["episode_key"]] = {
                "episode_key": r["episode_key"], "camera_id": r["camera_id"], "rule": r["rule"],
                "track_id": r["track_id"], "started_at": r["started_at"], "severity": r["severity"],
                "state": r["state"], "updated_at": r["updated_at"], "first_row": r["row"], "events": [],
            }
        ep["events"].append(r)
        ep["state"] = r["state"]
        ep["updated_at"] = max(ep["updated_at"], r["updated_at"])
        if SEVERITY_RANK.get(r["severity"], 0) > SEVERITY_RANK.get(ep["severity"], 0):
            ep["severity"] = r["severity"]
    out = sorted(by_key.values(), key=lambda ep: (ep["started_at"], ep["first_row"]), reverse=True)
    for ep in out:
        v = verdicts.get(ep["episode_key"])
        ep["verdict"] = v["verdict"] if v else None
        ep["verdict_info"] = v
    return out


def filter_episodes(episodes: list[dict], query: Mapping[str, str]) -> list[dict]:
    since, until = parse_time(query.get("since")), parse_time(query.get("until"))
    out = []
    for ep in episodes:
        if query.get("camera") and ep["camera_id"] != query["camera"]:
            continue
        if query.get("rule") and ep["rule"] != query["rule"]:
            continue
        if query.get("severity") and ep["severity"] != query["severity"]:
            continue
        if query.get("state") and ep["state"] != query["state"]:
            continue
        wanted = query.get("verdict")
        if wanted and (ep["verdict"] or "none") != wanted:
            continue
        if since is not None and ep["started_at"] < since:
            continue
        if until is not None and ep["started_at"] > until:
            continue
        out.append(ep)
    return out


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.3em .6em;text-align:left}
tr.sel{background:#ffefc2}.critical{color:#b00;font-weight:bold}.warning{color:#c60}
.v-true{color:#070;font-weight:bold}.v-false{color:#b00;font-weight:bold}.v-unsure{color:#666;font-weight:bold}
form.filters input,form.filters select{margin-right:.4em}button{font-size:1em;margin-right:.4em;padding:.3em .9em}
img.snap{max-width:600px;border:1px solid #aaa}video{width:600px;max-width:100%;border:1px solid #aaa}
figure{margin:0}
.media{display:flex;gap:1em;flex-wrap:wrap}.muted{color:#777}nav a{margin-right:1em}
"""


def page(title: str, body: str, script: str = "") -> bytes:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)}</title>"
            f"<style>{_STYLE}</style></head><body><nav><a href='/review'>alerts</a></nav>{body}"
            f"{'<script>' + script + '</script>' if script else ''}</body></html>").encode()


def _qs(query: Mapping[str, str]) -> str:
    kept = {k: v for k, v in query.items() if k in FILTERS and v}
    return ("?" + urlencode(kept)) if kept else ""


def _select(name: str, options: Sequence[str], current: str) -> str:
    opts = "".join(f"<option value='{e(o)}'{' selected' if o == current else ''}>{e(o) or 'any'}</option>"
                   for o in ("", *options))
    return f"<label>{e(name)} <select name='{e(name)}'>{opts}</select></label>"


def _verdict_html(v: str | None) -> str:
    return f"<span class='v-{e(v)}'>{e(v)}</span>" if v else "<span class='muted'>-</span>"


_LIST_JS = """
let i=-1;const rows=[...document.querySelectorAll('tr.ep')];
function sel(n){if(!rows.length)return;rows.forEach(r=>r.classList.remove('sel'));i=Math.max(0,Math.min(rows.length-1,n));
rows[i].classList.add('sel');rows[i].scrollIntoView({block:'nearest'});}
document.addEventListener('keydown',ev=>{if(['INPUT','SELECT','TEXTAREA'].includes(ev.target.tagName))return;
if(ev.key==='j')sel(i+1);else if(ev.key==='k')sel(i-1);
else if((ev.key==='Enter'||ev.key==='o')&&i>=0)location=rows[i].dataset.href;});
"""


def list_page(episodes: list[dict], query: Mapping[str, str], cameras: Sequence[str], rules: Sequence[str]) -> bytes:
    q = {k: query.get(k, "") for k in FILTERS}
    filters = (
        "<form class=filters method=get action='/review'>"
        + _select("camera", cameras, q["camera"]) + _select("rule", rules, q["rule"])
        + _select("severity", list(SEVERITY_RANK), q["severity"])
        + _select("state", ["raised", "ongoing", "resolved"], q["state"])
        + _select("verdict", [*VERDICTS, "none"], q["verdict"])
        + f"<label>since <input name=since value='{e(q['since'])}' placeholder='YYYY-MM-DDTHH:MM' size=16></label>"
        + f"<label>until <input name=until value='{e(q['until'])}' placeholder='YYYY-MM-DDTHH:MM' size=16></label>"
        + "<button type=submit>filter</button></form>"
    )
    qs = _qs(query)
    rows = []
    for ep in episodes:
        href = f"/review/alert/{quote(ep['episode_key'])}{qs}"
        rows.append(
            f"<tr class=ep data-href='{e(href)}' data-key='{e(ep['episode_key'])}'>"
            f"<td><a href='{e(href)}'>{e(ts(ep['started_at']))}</a></td>"
            f"<td><a href='/review/camera/{e(quote(ep['camera_id'], safe=''))}'>{e(ep['camera_id'])}</a></td>"
            f"<td>{e(ep['rule'])}</td><td>{e(str(ep['track_id']) if ep['track_id'] is not None else '-')}</td>"
            f"<td class='{e(ep['severity'])}'>{e(ep['severity'])}</td><td>{e(ep['state'])}</td>"
            f"<td class=verdict>{_verdict_html(ep['verdict'])}</td></tr>")
    table = ("<table id=alerts><tr><th>started (UTC)</th><th>camera</th><th>rule</th><th>track</th><th>severity</th>"
             "<th>state</th><th>verdict</th></tr>" + "".join(rows) + "</table>") if rows else \
        "<p class=muted>No alerts match.</p>"
    body = (f"<h1>Alerts ({len(episodes)})</h1>{filters}<p class=muted>Keys: j/k select, Enter open. "
            f"<a href='/verdicts.csv'>verdicts.csv</a> <a href='/missed.csv'>missed.csv</a></p>{table}")
    return page("fbvision alerts", body, _LIST_JS)


_ALERT_JS = """
const f=document.getElementById('verdict');
document.addEventListener('keydown',ev=>{if(['INPUT','SELECT','TEXTAREA'].includes(ev.target.tagName))return;
const m={t:'true',f:'false',u:'unsure'}[ev.key];
if(m){const b=f.querySelector('button[value="'+m+'"]');if(b)b.click();return;}
const nav={j:'next',k:'prev'}[ev.key];if(nav){const a=document.getElementById(nav);if(a)location=a.href;}});
"""


def alert_page(ep: dict, media: Mapping[str, str | None], verdict_history: list[dict], prev_href: str | None,
               next_href: str | None, query: Mapping[str, str]) -> bytes:
    """``media``: ``snapshot``/``clip`` URLs that exist (None when not written yet); ``escalations``: extra
    snapshot URLs of escalated events."""
    key = ep["episode_key"]
    title = f"{ep['rule']} on {ep['camera_id']}"
    snap, clip = media.get("snapshot"), media.get("clip")
    media_html = "<div class=media>"
    media_html += (f"<figure><img id=snapshot class=snap src='{e(snap)}' alt='snapshot'>"
                   f"<figcaption>snapshot at the decision</figcaption></figure>") if snap else \
        "<p id=snapshot-missing class=muted>Snapshot not written yet (reload in a few seconds).</p>"
    media_html += (f"<figure><video id=clip controls muted preload=auto src='{e(clip)}'></video>"
                   f"<figcaption>clip around the decision</figcaption></figure>") if clip else \
        "<p id=clip-missing class=muted>Clip not written yet: it ends a few seconds after the decision.</p>"
    for url in media.get("escalations") or []:
        media_html += f"<figure><img class=snap src='{e(url)}' alt='escalation snapshot' style='max-width:240px'></figure>"
    media_html += "</div>"
    timeline = "".join(
        f"<tr><td>{e(ts(r['updated_at']))}</td><td>{e(r['state'])}</td><td class='{e(r['severity'])}'>"
        f"{e(r['severity'])}</td><td>{e(r.get('message') or '')}</td></tr>" for r in ep["events"])
    history = "".join(
        f"<li>{_verdict_html(v['verdict'])} by {e(v['who'])} at {e(ts(v['at']))}"
        f"{': ' + e(v['note']) if v['note'] else ''}</li>" for v in verdict_history) or "<li class=muted>none yet</li>"
    qs = _qs(query)
    buttons = "".join(f"<button type=submit name=verdict value='{v}' id='verdict-{v}'>{v} ({v[0]})</button>"
                      for v in VERDICTS)
    form = (f"<form id=verdict method=post action='/review/alert/{e(quote(key))}/verdict{e(qs)}'>{buttons}"
            "<label>note <input name=note size=40 maxlength=2000></label>"
            "<label>who <input name=who size=12 maxlength=100></label><br><span class=muted>optional, for a true "
            "alert: it really began <input name=start_at size=19 placeholder='YYYY-MM-DDTHH:MM:SS'> and ended "
            "<input name=end_at size=19 placeholder='YYYY-MM-DDTHH:MM:SS'> (UTC)</span></form>")
    nav = (f"<p>{'<a id=prev href=' + chr(39) + e(prev_href) + chr(39) + '>&larr; previous (k)</a>' if prev_href else ''}"
           f"{'<a id=next href=' + chr(39) + e(next_href) + chr(39) + '>next (j) &rarr;</a>' if next_href else ''}</p>")
    body = (f"<h1>{e(title)}</h1>{nav}"
            f"<p>camera <a href='/review/camera/{e(quote(ep['camera_id'], safe=''))}'>{e(ep['camera_id'])}</a>, "
            f"rule {e(ep['rule'])}, track {e(str(ep['track_id']))}, severity "
            f"<span class='{e(ep['severity'])}'>{e(ep['severity'])}</span>, state {e(ep['state'])}, "
            f"episode <code>{e(key)}</code></p>"
            f"<p>verdict: <span id=current-verdict>{_verdict_html(ep['verdict'])}</span></p>{form}{media_html}"
            f"<h2>Timeline</h2><table id=timeline><tr><th>time (UTC)</th><th>state</th><th>severity</th>"
            f"<th>message</th></tr>{timeline}</table><h2>Verdicts</h2><ul id=verdicts>{history}</ul>")
    return page(title, body, _ALERT_JS)


def _num(value: object, digits: int = 1) -> str:
    """A figure of the time budget: NaN/None (nothing observed) as "-"."""
    if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def horse_day_html(day: Mapping | None) -> str:
    """The camera's rolling 24 h time budget (a horse's day, :mod:`fbvision.logic.timebudget`, as the logic worker
    last published it), or a line saying there is none."""
    if not day:
        return ("<h2>A horse's day</h2><p class=muted>no time budget (the logic's <code>time_budget</code> is off, "
                "no frame judged yet, or the backend cannot see the pipeline's Redis)</p>")
    observed_h = day.get("observed_s")
    observed_h = observed_h / 3600.0 if isinstance(observed_h, (int, float)) else None
    rows = [
        ("posture now", e(str(day.get("posture") or "unknown"))),
        ("observed", f"{_num(observed_h)} h of the last 24 h (unknown: {_num((day.get('unknown_s') or 0) / 60.0)} min)"),
        ("lying", f"{_num(day.get('lying_min'))} min ({_num(day.get('lying_pct'))} % of the observed time)"),
        ("lying bouts", f"{_num(day.get('bouts'))}; longest {_num(day.get('longest_bout_min'))} min, mean "
                        f"{_num(day.get('mean_bout_min'))} min, current {_num(day.get('current_bout_min'))} min"),
        ("lie-downs / get-ups", f"{_num(day.get('lie_downs'))} / {_num(day.get('get_ups'))} "
                                f"({_num(day.get('lie_downs_per_h'), 2)} / {_num(day.get('get_ups_per_h'), 2)} per h)"),
        ("restless at night", f"{_num(day.get('restless_moving_min_per_h'))} min moving per night hour, "
                              f"{_num(day.get('night_transitions_per_h'), 2)} posture changes per night hour"),
        ("absent", f"{_num(day.get('absent_min'))} min"),
    ]
    table = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return (f"<h2>A horse's day</h2><p class=muted>rolling 24 h up to {e(ts(day.get('t')))} (UTC)</p>"
            f"<table id=horse-day>{table}</table>")


def camera_page(camera_id: str, status: Mapping | None, episodes: list[dict], missed: list[dict],
                horse_day: Mapping | None = None) -> bytes:
    if status:
        state = status.get("state", "?")
        status_html = (f"<p>status: <b id=cam-state>{e(str(state))}</b> since {e(ts(status.get('since')))}; "
                       f"last frame {e(ts(status.get('last_frame_ts')))}"
                       f"{'; ' + e(str(status.get('detail'))) if status.get('detail') else ''}</p>")
    else:
        status_html = "<p class=muted>status: unknown (the backend cannot see the pipeline's Redis)</p>"
    rows = "".join(
        f"<tr><td><a href='/review/alert/{e(quote(ep['episode_key']))}'>{e(ts(ep['started_at']))}</a></td>"
        f"<td>{e(ep['rule'])}</td><td class='{e(ep['severity'])}'>{e(ep['severity'])}</td><td>{e(ep['state'])}</td>"
        f"<td>{_verdict_html(ep['verdict'])}</td></tr>" for ep in episodes)
    missed_rows = "".join(
        f"<li>{e(m['rule'])} from {e(ts(m['start_at']))} to {e(ts(m['end_at']))} by {e(m['who'])}"
        f"{': ' + e(m['note']) if m['note'] else ''}</li>" for m in missed) or "<li class=muted>none</li>"
    cam_q = e(quote(camera_id, safe=""))
    body = (f"<h1>Camera {e(camera_id)}</h1>{status_html}{horse_day_html(horse_day)}"
            f"<h2>Alerts of the last 24 h ({len(episodes)})</h2>"
            + (f"<table><tr><th>started (UTC)</th><th>rule</th><th>severity</th><th>state</th><th>verdict</th></tr>"
               f"{rows}</table>" if rows else "<p class=muted>none</p>")
            + "<h2>Missed events</h2><p>Something happened and no alert came: say when (UTC).</p>"
            f"<form id=missed method=post action='/review/camera/{cam_q}/missed'>"
            "<label>rule <input name=rule value='horse_down' size=12></label>"
            "<label>from <input name=start_at placeholder='YYYY-MM-DDTHH:MM:SS' size=20></label>"
            "<label>to <input name=end_at placeholder='YYYY-MM-DDTHH:MM:SS' size=20></label>"
            "<label>note <input name=note size=30 maxlength=2000></label>"
            "<label>who <input name=who size=12 maxlength=100></label><button type=submit>report missed</button></form>"
            f"<ul id=missed-list>{missed_rows}</ul>")
    return page(f"camera {camera_id}", body)


def missed_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["camera_id", "rule", "start_at", "end_at", "note", "who", "at"],
                            extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return out.getvalue().encode()


def verdicts_csv(rows: list[dict]) -> bytes:
    out = io.StringIO()
    fields = ["episode_key", "camera_id", "rule", "track_id", "started_at", "raised_at", "resolved_at", "severity",
              "verdict", "start_at", "end_at", "note", "who", "at"]
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return out.getvalue().encode()


def check_verdict(data: Mapping) -> tuple[str, str, str, float | None, float | None]:
    """(verdict, note, who, start_at, end_at): the optional times are when the event really began and ended, as the
    reviewer saw it on the clip (the lab scores against them; without them the episode's own times are used)."""
    verdict = str(data.get("verdict") or "")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
    note = str(data.get("note") or "")[:2000]
    who = str(data.get("who") or "")[:100]
    start, end = parse_time(str(data.get("start_at") or "")), parse_time(str(data.get("end_at") or ""))
    if start is not None and end is not None and end < start:
        raise ValueError("end_at is before start_at")
    return verdict, note, who, start, end


def check_missed(data: Mapping) -> tuple[str, float, float, str, str]:
    rule = str(data.get("rule") or "")[:64]
    if not rule:
        raise ValueError("rule is required")
    start, end = parse_time(str(data.get("start_at") or "")), parse_time(str(data.get("end_at") or ""))
    if start is None or end is None or end < start:
        raise ValueError("start_at and end_at are required, end_at not before start_at")
    return rule, start, end, str(data.get("note") or "")[:2000], str(data.get("who") or "")[:100]


def _csp_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"


#: The Content-Security-Policy of every page: our two inline scripts by hash, nothing else runs; no framing.
CSP = (f"default-src 'self'; script-src {_csp_hash(_LIST_JS)} {_csp_hash(_ALERT_JS)}; style-src 'unsafe-inline'; "
       "img-src 'self'; media-src 'self'; frame-ancestors 'none'; form-action 'self'")


def now() -> float:
    return time.time()


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
