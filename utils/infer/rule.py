"""The one video rule, shared by the app, the evaluation and the threshold search: which faces are fake, and
whether enough of them are for the video to be fake, under a pair of Thresholds. numpy only, so the app stays light."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# A fraction such as 0.3 * 10 evaluates to 3.0000000000000004; without this slack "3 of 10 faces"
# would not count as "at least 30 %".
_FRACTION_SLACK = 1e-9


def video_rule(probs: Sequence[float], fake_threshold: float, fake_fraction: float) -> tuple[bool, float, int]:
    """The one video rule (evaluation, grid search and app): a face is fake when p > fake_threshold;
    the video is fake when its fake faces are at least `fake_fraction` of its faces.

    Returns (is_fake, fake_prob, n_fake); fake_prob is the mean p of the fake faces, 0 when there are
    none (the original's ROC score). Every face crop counts, so a frame with two faces counts twice.
    For fake_threshold >= 0.5 this equals the original's "p > 0.5 and p > t_f".
    """
    probs = np.asarray(probs, dtype=float)
    if probs.size == 0:
        raise ValueError("video_rule needs at least one face probability (a video without faces is "
                         "reported separately, not classified)")
    fake = probs > fake_threshold
    n_fake = int(fake.sum())
    is_fake = n_fake >= fake_fraction * probs.size - _FRACTION_SLACK
    fake_prob = float(probs[fake].mean()) if n_fake else 0.0
    return bool(is_fake), fake_prob, n_fake


@dataclass(frozen=True)
class Thresholds:
    """The video rule's pair: a face is fake when p > fake_threshold, a video when at least fake_fraction of its
    faces are. Checkpoints keep it as the dict {"fake_threshold": ..., "fake_fraction": ...} (as_dict)."""

    fake_threshold: float
    fake_fraction: float

    def as_dict(self) -> dict[str, float]:
        return {"fake_threshold": self.fake_threshold, "fake_fraction": self.fake_fraction}

    @classmethod
    def stored_in(cls, checkpoint: Any) -> Thresholds | None:
        """The pair a checkpoint carries (tuned on validation by our trainer, kept by its export), None when it
        holds none (e.g. the original's checkpoints)."""
        stored = checkpoint.get("thresholds") if isinstance(checkpoint, dict) else None
        if not isinstance(stored, dict) or not {"fake_threshold", "fake_fraction"} <= set(stored):
            return None
        return cls(float(stored["fake_threshold"]), float(stored["fake_fraction"]))

    @classmethod
    def from_config(cls, cfg) -> Thresholds:
        """The config's fallback pair (deep_fake.evaluation.fake_threshold and .fake_fraction)."""
        return cls(cfg["deep_fake.evaluation.fake_threshold"], cfg["deep_fake.evaluation.fake_fraction"])
