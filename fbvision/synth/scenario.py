"""Scenario description: which horses are in the stall and what each one does, second by second.

A scenario is a few lines of YAML::

    name: down_long
    seed: 11
    horses:
      - id: bay
        script:
          - standing: 15          # shorthand for {behaviour: standing, duration_s: 15}
          - lying_down: 3
          - lying_flat: 60
          - getting_up: 3
          - standing: 10

Everything that varies (coat, size, start position, straw, light, noise) is drawn from ``seed`` unless the
scenario pins it, so the same scenario renders the same frames on every machine.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, field_validator, model_validator

from fbvision.core.configbase import ConfigModel

Behaviour = Literal[
    "standing",
    "walking",
    "running",
    "lying_sternal",
    "lying_flat",
    "getting_up",
    "lying_down",
    "rolling",
    "absent",
]
BEHAVIOURS: tuple[str, ...] = Behaviour.__args__  # type: ignore[attr-defined]
Look = Literal["day", "night"]

_SCENARIO_DIR = "scenarios"  # inside the fbvision.synth package


class Segment(ConfigModel, frozen=True):
    """One behaviour held for ``duration_s`` seconds."""

    behaviour: Behaviour = Field(description="what the horse does during this segment")
    duration_s: float = Field(gt=0, le=24 * 3600, description="length of the segment in seconds")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # Accept `{standing: 15}` and `"standing 15"` as well as the explicit form.
        if isinstance(value, str):
            parts = value.split()
            if len(parts) != 2:
                raise ValueError(f"segment shorthand must be '<behaviour> <seconds>', got {value!r}")
            return {"behaviour": parts[0], "duration_s": parts[1]}
        if isinstance(value, dict) and len(value) == 1:
            ((key, seconds),) = value.items()
            if key in BEHAVIOURS:
                return {"behaviour": key, "duration_s": seconds}
        return value


class HorseScript(ConfigModel, frozen=True):
    """One horse and its behaviour script; the optional fields pin what the seed would otherwise choose."""

    id: str = Field(min_length=1, max_length=64, description="horse id, unique within the scenario")
    script: list[Segment] = Field(min_length=1, description="behaviours in order")
    coat: str | None = Field(
        default=None,
        description="coat colour name (bay, chestnut, black, grey, white, palomino, dun); random if unset",
    )
    height_frac: float | None = Field(
        default=None, gt=0.05, le=0.8, description="standing box height as a fraction of the frame height"
    )
    start_x: float | None = Field(
        default=None, ge=0, le=1, description="start position across the stall, 0..1"
    )
    start_y: float | None = Field(
        default=None, ge=0, le=1, description="start depth on the floor, 0=back 1=front"
    )
    facing: Literal["left", "right"] | None = Field(
        default=None, description="initial heading; random if unset"
    )

    @property
    def script_duration_s(self) -> float:
        return float(sum(segment.duration_s for segment in self.script))


class CameraSettings(ConfigModel, frozen=True):
    """Sensor artefacts applied to every rendered frame."""

    noise: float | None = Field(
        default=None,
        ge=0,
        le=40,
        description="sensor noise std-dev in grey levels; default 3 (day) / 7 (night)",
    )
    jpeg_quality: int | None = Field(
        default=None,
        ge=5,
        le=100,
        description="if set, every frame goes through a JPEG round trip at this quality",
    )
    shadows: bool = Field(default=True, description="draw a soft shadow under each horse")


class Scenario(ConfigModel, frozen=True):
    """A stall, a look, a camera and the horses' scripts."""

    name: str = Field(min_length=1, max_length=128)
    description: str = Field(default="", description="free text")
    seed: int = Field(default=0, ge=0, description="drives every random choice of the scene")
    fps: float = Field(default=5.0, gt=0, le=60)
    duration_s: float | None = Field(
        default=None,
        gt=0,
        description="scene length; default = the longest script. Scripts that end early hold their last state.",
    )
    size: tuple[int, int] = Field(default=(960, 540), description="frame (width, height) in pixels")
    look: Look = Field(default="day", description="day colour or infrared/greyscale night")
    camera: CameraSettings = Field(default_factory=CameraSettings)
    horses: list[HorseScript] = Field(default_factory=list)

    @field_validator("size")
    @classmethod
    def _check_size(cls, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        if not (160 <= width <= 4096 and 120 <= height <= 4096):
            raise ValueError(f"size must be within 160x120..4096x4096, got {width}x{height}")
        return size

    @model_validator(mode="after")
    def _unique_ids(self) -> Scenario:
        ids = [horse.id for horse in self.horses]
        if len(ids) != len(set(ids)):
            raise ValueError(f"horse ids must be unique, got {ids}")
        if self.duration_s is None and not self.horses:
            raise ValueError("a scenario without horses needs duration_s")
        return self

    @property
    def effective_duration_s(self) -> float:
        if self.duration_s is not None:
            return float(self.duration_s)
        return max(horse.script_duration_s for horse in self.horses)

    @property
    def n_frames(self) -> int:
        return max(1, int(math.floor(self.effective_duration_s * self.fps + 1e-9)))

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> Scenario:
        """Parse a scenario from a YAML file path or from YAML text."""
        text: str
        if isinstance(path_or_text, Path):
            text = path_or_text.read_text(encoding="utf-8")
        elif "\n" not in path_or_text and path_or_text.endswith((".yaml", ".yml")):
            text = Path(path_or_text).read_text(encoding="utf-8")
        else:
            text = path_or_text
        document = yaml.safe_load(text)
        if not isinstance(document, dict):
            raise ValueError("scenario YAML must be a mapping with at least 'name' and 'horses'")
        return cls.model_validate(document)

    @classmethod
    def builtin(cls, name: str) -> Scenario:
        """Load one of the scenarios shipped in ``fbvision/synth/scenarios/``."""
        available = builtin_scenarios()
        if name not in available:
            raise KeyError(f"no built-in scenario {name!r}; available: {', '.join(available)}")
        text = (
            resources.files("fbvision.synth")
            .joinpath(_SCENARIO_DIR)
            .joinpath(f"{name}.yaml")
            .read_text(encoding="utf-8")
        )
        return cls.from_yaml(text)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


def builtin_scenarios() -> list[str]:
    """Names of the built-in scenarios, sorted."""
    folder = resources.files("fbvision.synth").joinpath(_SCENARIO_DIR)
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))
