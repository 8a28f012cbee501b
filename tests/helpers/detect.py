"""Builders of synthetic detection datasets (track metrics + baseline inputs with known structure)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ghost_lens.config import EvalConfig
from ghost_lens.detect import BaselineInputs

FEATURE_NAMES = ["entropy", "churn", "track_count", "mean_track_length", "survival", "dominant_share"]


@dataclass
class Synthetic:
    labels: np.ndarray
    groups: np.ndarray
    ids: list[str]
    X: np.ndarray
    feature_names: list[str]
    inputs: BaselineInputs
    random_decoder: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`ghost_lens.detect.evaluate` (configs excluded)."""
        return {"labels": self.labels, "groups": self.groups, "ids": self.ids, "track_features": self.X,
                "feature_names": self.feature_names, "baseline_inputs": self.inputs,
                "random_decoder_features": self.random_decoder}


def make_synthetic(
    n_groups: int = 80,
    per_group: int = 3,
    signal: float = 1.5,
    *,
    driver: str = "tracks",
    seed: int = 0,
    n_layers: int = 2,
    d_model: int = 8,
) -> Synthetic:
    """A dataset whose labels follow a latent with a group-level part (so groups matter).

    ``driver="tracks"``: entropy and churn carry the label (strength ``signal``), the baseline inputs are noise.
    ``driver="length"``: the label follows answer length alone; entropy and churn are (noisy) functions of length,
    so the detector has signal but only through length.
    ``driver="none"``: nothing carries the label.
    """
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    groups = np.repeat(np.arange(n_groups), per_group)
    latent = 0.7 * rng.normal(size=n_groups)[groups] + rng.normal(size=n)
    labels = (latent > 0).astype(np.int64)
    noise = rng.normal(size=(n, len(FEATURE_NAMES)))
    length = np.clip(np.round(6 + 2 * rng.normal(size=n)), 1, None)
    X = noise.copy()
    if driver == "tracks":
        X[:, 0] += signal * latent
        X[:, 1] += 0.7 * signal * latent
    elif driver == "length":
        length = np.clip(np.round(6 + 3 * latent), 1, None)
        X[:, 0] += 0.5 * (length - 6)
        X[:, 1] += 0.3 * (length - 6)
    elif driver != "none":
        raise ValueError(driver)
    words = ["Paris", "Lyon", "blue", "seven", "Zorbal", "Quen", "river", "1842"]
    texts = [" ".join(rng.choice(words, size=int(min(k, 4)))) for k in length]
    inputs = BaselineInputs(
        answer_length=length, answer_text=texts, answer_logprob=rng.normal(size=n),
        answer_mean_logprob=rng.normal(size=n), output_entropy=rng.normal(size=n), max_prob=rng.uniform(size=n),
        residuals=rng.normal(size=(n_layers, n, d_model)), layers=list(range(n_layers)),
    )
    return Synthetic(labels, groups, [f"ex{i}" for i in range(n)], X, list(FEATURE_NAMES), inputs,
                     rng.normal(size=X.shape), {"driver": driver})


def fast_eval(**overrides: Any) -> EvalConfig:
    """An :class:`EvalConfig` cheap enough for unit tests."""
    base: dict[str, Any] = {"n_folds": 4, "n_bootstrap": 300, "seed": 0, "n_repeats": 1}
    base.update(overrides)
    return EvalConfig(**base)
