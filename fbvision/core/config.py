"""One strict configuration tree for every stage.

Loaded from YAML, then overridden from the environment:

* ``REDIS_URL`` sets ``redis.url`` (the usual name for it);
* ``FBV_<SECTION>__<FIELD>[__<FIELD>...]=value`` sets any field, ``__`` separating levels and list indices
  (``FBV_INFERENCE__MAX_BATCH=8``, ``FBV_CAMERAS__0__FPS=10``). The variables are read by pydantic-settings'
  ``EnvSettingsSource`` (prefix, ``__`` nesting, case-insensitive names); a list or section value is parsed as
  YAML (JSON is YAML), ``null`` is None, a scalar is converted by the field's type. Two things pydantic-settings
  does not do are done here: a list index (``CAMERAS__0``) sets that item of the file's list, and a variable
  whose section does not exist (``FBV_INFRENCE__X``) is an unknown field, not silently ignored. A variable
  without ``__`` that names no section (``FBV_BENCH_QUICK``, ``FBV_BACKEND_TOKEN``) belongs to another tool of
  the project and is left alone.

Every model derives from :class:`~fbvision.core.configbase.ConfigModel` (unknown keys refused), and every field
has a description and bounds. An invalid file fails at start with :class:`ConfigError`, whose message names each
bad field, what was given (secrets masked), what is allowed and where it was set (``file:line`` or
``[from environment variable X]``).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from fbvision.core.configbase import ConfigModel, SecretText, SecretUrlText, secret_mark
from fbvision.core.logic_config import (
    RULE_NAMES,
    CameraLogicOverrides,
    LogicConfig,
    check_horse_down_mode,
    effective_rules,
)
from fbvision.core.redact import MASK, redact_url

# The source checkout this module sits in (meaningful only when running from one; an installed package has none).
REPO_ROOT = Path(__file__).resolve().parents[2]
# Package data: the demo configuration and the demo model ship inside the package (configs/demo.yaml and
# models/horse-demo-yolo11n-320.onnx in the checkout are links to these).
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
DEMO_CONFIG = PACKAGE_DATA / "demo.yaml"
DEMO_MODEL = PACKAGE_DATA / "models" / "horse-demo-yolo11n-320.onnx"
ENV_PREFIX = "FBV_"


def resolve_data_path(path: str | Path, base: Path | None = None) -> Path:
    """Where a relative file path of the configuration (``model.path``) points, absolute.

    Looked up, in order, in ``base`` (the config file's folder, when there is one), the current directory and
    the package's data (``fbvision/data``); the first that exists wins. When none does, the first candidate
    is returned, so that the error names it."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    candidates = [*([base] if base is not None else []), Path.cwd(), PACKAGE_DATA]
    for folder in candidates:
        if (folder / path).exists():
            return (folder / path).absolute()
    return (candidates[0] / path).absolute()


class RedisConfig(ConfigModel):
    url: SecretUrlText | None = Field(
        None,
        description="redis:// or rediss:// URL (password in the URL or from REDIS_URL; masked in every dump). None: "
        "start a private redis-server on a free port for this run.",
    )
    frames_url: SecretUrlText | None = Field(
        None,
        description="An ephemeral Redis for the frame queue only (no persistence, sized for bandwidth): "
        "batch_frames and the frames' once keys go there, everything durable (results, outbox, episodes, leases, "
        "counters) stays on redis.url (AOF). None: frames share redis.url's server (the embedded default). "
        "docs/deploy.md 'Two Redis roles'.",
    )
    namespace: str = Field(
        "",
        max_length=32,
        pattern=r"^[A-Za-z0-9_\-]*$",
        description="Prefix for every key. When set, keys are hash-tagged as '{namespace}:...' so that they all "
        "live in one Redis Cluster slot.",
    )
    frame_queue_cap: int = Field(
        256, ge=1, le=100_000, description="Most frames kept in batch_frames; pushing more drops the oldest (counted)."
    )
    result_partitions: int = Field(
        8, ge=1, le=1024, description="Result streams; a camera always maps to the same one (per-camera order)."
    )
    result_stream_maxlen: int = Field(
        100_000, ge=1000, le=10_000_000, description="Approximate cap on each result stream's length."
    )
    socket_timeout_s: float = Field(5.0, gt=0.5, le=60, description="Socket timeout; blocking calls stay below it.")
    retry_initial_s: float = Field(0.1, gt=0, le=10, description="First back-off after a connection error.")
    retry_max_s: float = Field(5.0, gt=0, le=120, description="Longest back-off between reconnection attempts.")

    @field_validator("url", "frames_url")
    @classmethod
    def _scheme(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return url


class ModelConfig(ConfigModel):
    path: Path = Field(
        Path("models/horse-demo-yolo11n-320.onnx"),
        description="ONNX model with a dynamic batch dimension. A relative path is looked up beside the config file, "
        "then in the current directory, then in the package's data (fbvision/data: the demo model).",
    )
    engine: Literal["ort", "torch", "sim", "null"] = Field(
        "ort",
        description="What runs the model: 'ort' = ONNX Runtime (the providers below, in order); 'torch' = the same "
        "ONNX file run by PyTorch (CUDA FP16 when a GPU is there, else CPU; needs torch + onnx installed); "
        "'sim' = a SIMULATED accelerator (sleeps sim_profile's time, returns no detection: benchmarks and tests "
        "only); 'null' = no model at all (returns at once, no detection).",
    )
    sim_profile: str = Field(
        "t4-trt-fp16-320", pattern=r"^[a-z0-9][a-z0-9.\-]{0,63}$",
        description="model.engine: sim only - the SIMULATED accelerator's timing profile (a + b x batch ms; "
        "names and sources in docs/benchmarks.md), e.g. t4-trt-fp16-320, t4-ort-cuda-320, null.",
    )
    sim_overhead_ms: float = Field(
        0.0, ge=0, le=10_000, description="model.engine: sim only - extra simulated milliseconds per call."
    )
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        ["tensorrt", "cuda", "cpu"], min_length=1, description="Execution providers to try, in order."
    )
    tensorrt_fp16: bool = Field(True, description="Let TensorRT build FP16 engines.")
    tensorrt_cache_dir: Path = Field(
        Path(".cache/trt"), description="TensorRT engine and timing cache directory (kept across runs); relative to the working directory."
    )
    intra_op_threads: int = Field(0, ge=0, le=256, description="ORT CPU threads; 0 = ORT's default (all cores).")
    precision: Literal["fp32", "int8", "auto"] = Field(
        "fp32", description="fp32 = model.path; int8 = its INT8 variant (<stem>.int8.onnx, python -m "
        "fbvision.export.quantize; refused unless it passed its mAP50 check); auto = the INT8 variant on a CPU when "
        "it passed and measures faster here at start, else FP32 (docs/inference.md).",
    )
    intra_op_spinning: bool = Field(
        False, description="Let ONNX Runtime's CPU threads spin-wait between operators. Off: the stages share the "
        "cores, and spinning threads burn them (2.5x CPU per frame measured with 2 threads under load; "
        "docs/benchmarks.md). On: a host that runs the model alone.",
    )

    def resolved_path(self) -> Path:
        return resolve_data_path(self.path)


class InferenceConfig(ConfigModel):
    max_batch: int = Field(8, ge=1, le=32, description="Most frames per model call.")
    max_wait_ms: float = Field(
        10.0, ge=0, le=1000, description="Once the first frame of a batch is in hand, wait at most this long for more."
    )
    max_age_ms: float = Field(
        1000.0, ge=10, le=60_000, description="Frames older than this (since capture) are dropped before inference."
    )
    autotune: bool = Field(
        True, description="Measure throughput per batch size at start and never use a batch size that is slower."
    )
    autotune_budget_s: float = Field(
        3.0, gt=0, le=120, description="Time the start-up auto-tune may spend measuring batch sizes."
    )
    autotune_margin: float = Field(
        0.10, ge=0, le=10, description="Auto-tune leaves batch 1 only for a batch size that beat batch 1 by at least "
        "this share in 3 of 4 paired, interleaved measurements (lower quartile of its ratio >= 1 + margin).",
    )
    autotune_cache: Path | None = Field(
        None, description="Keep the auto-tune's result in this JSON file (relative: to the working directory) and "
        "reuse it on the next start with the same model, engine settings and machine, up to 7 days, instead of "
        "measuring again while the other stages start; null = measure at every start.",
    )
    decode_threads: int = Field(4, ge=1, le=64, description="Threads decoding JPEGs in parallel (OpenCV frees the GIL).")
    pipeline: bool = Field(
        True, description="Overlap the model with the CPU work: while the engine runs batch k, batch k+1 is popped "
        "and decoded and batch k-1's results are published (false: the serial loop pop -> decode -> infer -> publish).",
    )
    conf_floor: float = Field(
        0.05, ge=0, le=1, description="Candidates below this score are not shipped to the logic stage."
    )
    top_k: int = Field(100, ge=1, le=1000, description="Most candidates shipped per image.")
    class_names: list[str] = Field(
        ["horse"], min_length=1, description="Classes worth shipping, by name in the model's metadata."
    )


class CameraManagerConfig(ConfigModel):
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of the letterboxed frame.")
    encoding: Literal["jpeg", "raw"] = Field(
        "jpeg", description="How frames travel to inference (wire version 2): 'jpeg' (quality above; ~20 KB at "
        "320x320, moves boxes slightly) or 'raw' (uint8 HxWx3, exact pixels, ~300 KB at 320x320: for a local, "
        "bandwidth-rich frames Redis). A camera's own 'encoding' overrides it (docs/benchmarks.md: which to pick).",
    )
    reconnect_initial_s: float = Field(0.5, gt=0, le=60, description="First reconnection delay after a failure.")
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="Longest reconnection delay (exponential + jitter).")
    watchdog_s: float = Field(5.0, gt=0, le=600, description="Reconnect a source that gave no frame for this long.")
    status_interval_s: float = Field(1.0, gt=0, le=60, description="How often each camera's status is published.")
    hw_decode: bool = Field(True, description="Ask OpenCV for hardware decoding where it offers it (falls back quietly).")
    processes: int = Field(
        0, ge=0, le=64,
        description="Camera-manager processes the runner splits the cameras over (each reads, letterboxes and "
        "encodes its share); 0 = one per CPU core, at most one per 8 cameras.",
    )

    def resolved_processes(self, cameras: int) -> int:
        """Processes for ``cameras`` enabled cameras: ``processes``, else one per core (at most one per 8 cameras)."""
        if cameras <= 0:
            return 1
        if self.processes:
            return max(1, min(self.processes, cameras))
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return max(1, min(cores, -(-cameras // 8)))


class CameraConfig(ConfigModel):
    id: str = Field(..., pattern=r"^[A-Za-z0-9_.:\-]{1,64}$", description="Unique camera id.")
    source: SecretUrlText = Field(
        ...,
        min_length=1,
        description="(credentials masked in every dump) rtsp://user:pass@host/path, a video file path, 'device:N', or 'synthetic:<scenario>' "
        "(a built-in scenario name or a scenario YAML path).",
    )
    fps: float = Field(5.0, ge=0.2, le=60, description="Frames per second sampled from the source.")
    loop: bool = Field(True, description="Loop video files and synthetic scenarios at their own fps.")
    enabled: bool = Field(True, description="Disabled cameras are not opened.")
    encoding: Literal["jpeg", "raw"] | None = Field(
        None, description="This camera's frame encoding; None = camera.encoding."
    )
    logic: CameraLogicOverrides | None = Field(None, description="Per-camera rule overrides and stall polygon.")


class AlertsConfig(ConfigModel):
    backend_url: SecretUrlText | None = Field(
        None, description="(credentials masked in every dump) HTTP(S) endpoint that receives alerts by POST. None in the demo: the embedded backend."
    )
    timeout_s: float = Field(5.0, gt=0, le=120, description="Per-request timeout.")
    retry_initial_s: float = Field(0.5, gt=0, le=60, description="First retry delay after a failed delivery.")
    retry_max_s: float = Field(30.0, gt=0, le=3600, description="Longest retry delay (exponential back-off).")
    claim_idle_s: float | None = Field(
        None, gt=0, le=3600,
        description="Take over alerts a dead delivery consumer left pending this long; None = max(30, 2*retry_max_s + timeout_s).",
    )
    outbox_maxlen: int = Field(
        1_000_000, ge=1000, le=100_000_000,
        description="Cap on the durable alert outbox (approximate MAXLEN on every XADD; delivered entries are deleted).",
    )
    max_attempts: int = Field(
        5, ge=1, le=1000,
        description="Tries of one alert the backend keeps failing on (HTTP 500, or an error in delivery itself) before "
        "it is dead-lettered with its full payload. Outages (no connection, timeouts, 502/503/504, 429, 401/403/404) "
        "never count: they delay, never drop.",
    )
    backend_token: SecretText | None = Field(
        None, min_length=16, max_length=512,
        description="Bearer token sent as 'Authorization: Bearer ...' with every POST (required by a backend bound "
        "to a non-loopback address; FBV_ALERTS__BACKEND_TOKEN; 16-512 visible ASCII characters). A SecretStr: "
        "masked in logs, config show, reports and errors.",
    )

    @field_validator("backend_token")
    @classmethod
    def _visible_ascii(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and not all("\x21" <= c <= "\x7e" for c in token.get_secret_value()):
            raise ValueError("must be visible ASCII characters only (no spaces, no control characters)")
        return token

    @field_validator("backend_url")
    @classmethod
    def _http(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("must start with http:// or https://")
        return url


class EvidenceConfig(ConfigModel):
    """Evidence with every raised and escalated alert: a snapshot and a clip (docs/evidence-and-review.md)."""

    enabled: bool = Field(True, description="Keep recent frames per camera and write a snapshot + clip per alert.")
    dir: Path | None = Field(
        None, description="Evidence store (local directory); None = <run dir>/evidence under the runner, "
        "runs/evidence for a stage started on its own.",
    )
    url_prefix: str = Field(
        "/evidence/", min_length=1, max_length=512,
        description="What the alert's evidence URLs start with (the embedded backend serves /evidence/<file>).",
    )
    max_width: int = Field(1280, ge=160, le=7680, description="Frames kept are downscaled to at most this width.")
    fps: float = Field(
        2.0, gt=0, le=60,
        description="Frames per second kept per camera for the snapshot and clip (at most the camera's own rate): "
        "every kept frame is one JPEG encode on the camera's reader thread, so this bounds the ring's CPU as "
        "ring_max_mb bounds its memory.",
    )
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the frames kept and of the snapshot.")
    clip_pre_s: float = Field(10.0, ge=0, le=120, description="Seconds of clip before the decision.")
    clip_post_s: float = Field(5.0, ge=0, le=120, description="Seconds of clip after the decision.")
    ring_max_mb: float = Field(
        16.0, gt=0, le=4096,
        description="Memory budget per camera of the frame ring (JPEG bytes; oldest frames dropped beyond it).",
    )
    retention_days: float = Field(30.0, gt=0, le=3650, description="Evidence files older than this are deleted.")
    retention_max_mb: float = Field(
        10_240.0, gt=0, le=10_000_000, description="Oldest evidence files are deleted beyond this total size.",
    )
    requests_maxlen: int = Field(
        1000, ge=10, le=1_000_000, description="Cap on the evidence request stream (approximate MAXLEN).",
    )
    drain_s: float = Field(
        8.0, ge=0, le=120,
        description="At stop, how long the camera manager keeps serving evidence requests for frames still queued.",
    )

    @property
    def ring_s(self) -> float:
        """How far back the ring keeps frames: the clip's length plus a margin for queueing delays."""
        return self.clip_pre_s + self.clip_post_s + 5.0


class RunnerConfig(ConfigModel):
    dashboard: bool = Field(True, description="Live terminal dashboard (rich) while running.")
    prometheus_port: int | None = Field(None, ge=1, le=65535, description="Serve /metrics on this port; None = off.")
    report_dir: Path = Field(Path("runs"), description="Where run reports (Markdown + JSON) are written.")
    max_restarts: int = Field(5, ge=0, le=100, description="Restarts allowed per stage within restart_window_s.")
    restart_window_s: float = Field(60.0, gt=0, le=3600, description="Window of the restart budget.")


class Settings(ConfigModel):
    """The whole configuration."""

    redis: RedisConfig = Field(default_factory=RedisConfig, description="Redis connection and queue sizes.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The detector.")
    inference: InferenceConfig = Field(default_factory=InferenceConfig, description="Batch inference worker.")
    camera: CameraManagerConfig = Field(default_factory=CameraManagerConfig, description="The camera manager (the camera stage).")
    cameras: list[CameraConfig] = Field(default_factory=list, max_length=1024, description="The cameras.")
    logic: LogicConfig = Field(default_factory=LogicConfig, description="Logic worker: NMS, tracking, rules.")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, description="Alert delivery to the backend.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Snapshots and clips per alert.")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="run_all.py behaviour.")

    @model_validator(mode="after")
    def _unique_cameras(self) -> Settings:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"camera id {cam.id!r} appears twice")
            seen.add(cam.id)
        return self

    @model_validator(mode="after")
    def _smoothing_fits_the_frame_rate(self) -> Settings:
        """A vote or median whose window cannot hold ``min_frames`` at a camera's fps would never decide."""
        for cam in self.cameras:
            if not cam.enabled:
                continue
            rules = effective_rules(self.logic, cam.logic)
            check_horse_down_mode(self.logic, rules, f"camera {cam.id!r}: logic.rules")
            for name in RULE_NAMES:
                rule = getattr(rules, name)
                s = rule.smoothing
                if not rule.enabled or s.kind.value not in ("vote", "median"):
                    continue
                holds = math.ceil(s.window_s * cam.fps - 1e-6)  # frames in the last window_s seconds
                if holds < s.min_frames:
                    raise ValueError(
                        f"camera {cam.id!r} at {cam.fps:g} fps: rules.{name}.smoothing window_s {s.window_s:g} holds "
                        f"{holds} frame(s), fewer than its min_frames {s.min_frames}, so it would never decide: "
                        f"widen window_s (to at least {s.min_frames / cam.fps:g}) or lower min_frames (in logic.rules "
                        f"or in the camera's logic.rules override)")
        return self


# The sections of Settings as pydantic-settings sees them: only read by _EnvSource (which variables exist, which
# values are lists or sections), never instantiated; validation is Settings' own.
_SettingsFields = create_model("_SettingsFields", __base__=BaseSettings,
                               **{name: (field.annotation, field) for name, field in Settings.model_fields.items()})


class ConfigError(ValueError):
    """An invalid configuration; the message names every bad field."""


def _field_at(model: type[BaseModel], loc: tuple) -> tuple[Any, list[str] | None]:
    """The pydantic field at ``loc`` (None when there is none) and the field names allowed beside it."""
    current: Any = model
    field = None
    for i, part in enumerate(loc):
        if isinstance(part, int) or current is None:
            continue
        fields = getattr(current, "model_fields", {})
        field = fields.get(part)
        if field is None:
            return None, (sorted(fields) if fields and i == len(loc) - 1 else None)
        if i < len(loc) - 1:
            current = _model_of(field.annotation)
    fields = getattr(current, "model_fields", None)
    return field, (sorted(fields) if fields else None)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _shown(given: Any, mark: Any) -> Any:
    """What an error shows of a given value: secrets masked on the value itself, other text through redact_url."""
    if mark is not None:
        return mark.mask(given) if isinstance(given, str) else (MASK if given is not None else None)
    if isinstance(given, SecretStr):
        return MASK
    if isinstance(given, str):
        return redact_url(given)
    if isinstance(given, (dict, list)):
        return type(given).__name__
    return given


Origins = dict[tuple, str]  # a config path (keys, list indices as int) -> where its value came from


def _origin(loc: tuple, env: Origins | None, lines: Origins | None) -> str:
    """Where the value at ``loc`` (or its closest enclosing entry) was set: ``environment variable FBV_...`` or
    ``file:line``; '' when unknown. The environment wins: it is applied over the file."""
    for i in range(len(loc), 0, -1):
        key = tuple(loc[:i])
        if env and key in env:
            return f"environment variable {env[key]}"
        if lines and key in lines:
            return lines[key]
    return ""


def format_validation_error(exc: ValidationError, source: str, *, env: Origins | None = None,
                            lines: Origins | None = None) -> str:
    """One line per error: the field, what is wrong, what was given, where it was set (``env``: paths set by
    environment variables; ``lines``: paths to ``file:line``), and for an unknown key the closest allowed one."""
    out = [f"invalid configuration ({source}):"]
    for err in exc.errors():
        path = tuple(err["loc"])
        given = err.get("input")
        msg = err["msg"]
        if err["type"] == "frame_count_window":  # an old frame-count smoothing key: point at the key itself
            path, given = (*path, err["ctx"]["key"]), err["ctx"]["value"]
        loc = ".".join(str(p) for p in path) or "<root>"
        field, allowed = _field_at(Settings, tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), allowed or [], n=1, cutoff=0.6)
            msg = ("unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
                   + (f" allowed: {', '.join(allowed)}" if allowed else ""))
        mark = secret_mark(field) if field is not None and err["type"] != "extra_forbidden" else None
        shown = _shown(given, mark)
        where = _origin(path, env, lines)
        out.append(f"  {loc}: {msg} (given: {shown!r})" + (f" [from {where}]" if where else ""))
    return "\n".join(out)


def yaml_lines(text: str, filename: str) -> Origins:
    """Every key and list item of a YAML document -> ``filename:line`` (PyYAML's node marks; 1-based lines)."""
    out: Origins = {}
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return out

    def walk(node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                out[sub] = f"{filename}:{key.start_mark.line + 1}"
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                sub = (*path, i)
                out[sub] = f"{filename}:{item.start_mark.line + 1}"
                walk(item, sub)

    if root is not None:
        walk(root, ())
    return out


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (the process's environment by default), with
    YAML for list and section values."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(_SettingsFields, case_sensitive=False, env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                         env_parse_none_str="null")

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)

    def decode_complex_value(self, field_name: str, field: Any, value: Any) -> Any:
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{ENV_PREFIX}{field_name.upper()}: not valid YAML: {exc}") from None


def _merge(node: Any, override: Any, path: tuple) -> Any:
    """``override`` (from the environment) over ``node`` (from the file): sections merge key by key, a list takes
    ``{"<index>": ...}`` items (the index must exist), any other value replaces."""
    if isinstance(node, list) and isinstance(override, dict) and all(str(k).isdigit() for k in override):
        node = list(node)
        for key, value in override.items():
            idx = int(key)
            if idx >= len(node):
                raise ConfigError(f"override {ENV_PREFIX}{'__'.join(map(str, (*path, key))).upper()}: list index "
                                  f"{idx} out of range (have {len(node)})")
            node[idx] = _merge(node[idx], value, (*path, idx))
        return node
    if isinstance(override, dict) and isinstance(node, dict):
        merged = dict(node)
        for key, value in override.items():
            merged[key] = _merge(node.get(key), value, (*path, key))
        return merged
    if isinstance(override, dict) and node is None:
        return {key: _merge(None, value, (*path, key)) for key, value in override.items()}
    return override


def apply_env_overrides(tree: dict, environ: Mapping[str, str], origins: Origins | None = None) -> dict:
    """``tree`` with the environment's overrides; ``origins`` (when given) learns which variable set which path."""
    overrides: dict[str, Any] = dict(_EnvSource(environ)())
    sections = set(Settings.model_fields)
    for key in sorted(environ):
        path = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p] if key.upper().startswith(ENV_PREFIX) else []
        if not path:
            continue
        if path[0] not in sections and len(path) == 1:
            continue  # FBV_BENCH_QUICK, FBV_BACKEND_TOKEN ...: another tool's variable, not a config path
        if path[0] not in sections:  # FBV_<X>__<Y> for an X that is no section: a misspelt one, a mistake
            overrides[path[0]] = environ[key] if len(path) == 1 else _nest(path[1:], environ[key])
            if origins is not None:  # the error is on the section itself
                origins.setdefault((path[0],), key)
        if origins is not None:
            origins[tuple(int(p) if p.isdigit() else p for p in path)] = key
    if environ.get("REDIS_URL"):  # the conventional name, outside the FBV_ prefix
        overrides["redis"] = {**(overrides.get("redis") or {}), "url": environ["REDIS_URL"]}
        if origins is not None:
            origins[("redis", "url")] = "REDIS_URL"
    return _merge(dict(tree), _typed(overrides), ())


def _typed(node: Any) -> Any:
    """Scalar values from the environment as YAML reads them (``5`` an int, ``false`` a bool, as they were before
    pydantic-settings: the frame-count messages and ``given:`` show the number); text stays the raw text, so a
    quote in a password is never taken for YAML quoting."""
    if isinstance(node, dict):
        return {key: _typed(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_typed(value) for value in node]
    if isinstance(node, str):
        try:
            value = yaml.safe_load(node)
        except yaml.YAMLError:
            return node
        return value if isinstance(value, (int, float, bool)) else node
    return node


def _nest(path: list[str], value: Any) -> Any:
    for part in reversed(path):
        value = {part: value}
    return value


def load_settings(path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Load ``path`` (default: the demo config, fbvision/data/demo.yaml), apply environment overrides, validate."""
    path = Path(path) if path is not None else DEMO_CONFIG
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        tree = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top, not {type(tree).__name__}")
    env_origins: Origins = {}
    tree = apply_env_overrides(tree, environ, env_origins)
    try:
        settings = Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path), env=env_origins,
                                                  lines=yaml_lines(text, str(path)))) from None
    # Relative to this file first; stored absolute, so that every stage process (given the settings as JSON,
    # from any working directory) opens the same model.
    settings.model.path = resolve_data_path(settings.model.path, path.resolve().parent)
    return settings
