"""Per-image candidate boxes: what the inference worker ships and the logic stage filters."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidates:
    """Detections of one image before tracking: boxes in SOURCE pixels, best-class score and class id."""

    xyxy: np.ndarray  # float32 [n, 4]
    scores: np.ndarray  # float32 [n]
    class_ids: np.ndarray  # int32 [n]

    def __post_init__(self) -> None:
        # Canonical dtypes whatever the camera manager of the arrays used (no copy when already right).
        object.__setattr__(self, "xyxy", np.asarray(self.xyxy, dtype=np.float32))
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float32))
        object.__setattr__(self, "class_ids", np.asarray(self.class_ids, dtype=np.int32))
        n = len(self.scores)
        if self.xyxy.shape != (n, 4) or self.class_ids.shape != (n,):
            raise ValueError(
                f"Candidates shapes disagree: xyxy {self.xyxy.shape}, scores {self.scores.shape}, "
                f"class_ids {self.class_ids.shape}"
            )

    @classmethod
    def create(cls, xyxy: object, scores: object, class_ids: object) -> Candidates:
        """Build from array-likes, coercing to the canonical dtypes."""
        return cls(
            xyxy=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
            scores=np.asarray(scores, dtype=np.float32).reshape(-1),
            class_ids=np.asarray(class_ids, dtype=np.int32).reshape(-1),
        )

    @classmethod
    def empty(cls) -> Candidates:
        return cls.create(np.zeros((0, 4)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, index: np.ndarray) -> Candidates:
        """Subset by boolean mask or integer index array."""
        return Candidates(self.xyxy[index], self.scores[index], self.class_ids[index])

    @property
    def areas(self) -> np.ndarray:
        wh = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0.0, None)
        return wh[:, 0] * wh[:, 1]


def class_ids_by_name(model_names: Mapping[int, str] | Sequence[str], wanted: Collection[str]) -> list[int]:
    """Model class ids of the ``wanted`` class names (model metadata names, e.g. ``{17: "horse"}``).

    Raises ``ValueError`` naming what is missing, so a model without a horse class fails at start.
    """
    names = dict(model_names) if isinstance(model_names, Mapping) else dict(enumerate(model_names))
    by_name = {str(name): int(class_id) for class_id, name in names.items()}
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise ValueError(f"classes {missing} not in the model's classes {sorted(by_name)}")
    return sorted(by_name[name] for name in wanted)


