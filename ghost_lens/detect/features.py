"""Feature groups for the detector: named ``[N, F]`` matrices built from a capture, each alone or all together.

Three groups (:data:`FEATURE_GROUPS`, the names used in the config and the report):

1. ``tracks``: today's track metrics (:mod:`ghost_lens.tracking.metrics`) over the tracker's configured positions.
2. ``sae_stats``: per tracked layer and decision position, plain statistics of the SAE activation vector, kept
   unnormalised (the scale carries signal): L1 mass, max, entropy of the activation shares, top-feature share
   (max / L1) and L0. The positions are kept apart: ``last_prompt`` (the token that predicts the answer, before
   any answer token) and ``answer`` (each statistic averaged over the answer tokens). L1, L0 and entropy come
   from the full activation vector (``FeatureTrace.sae_totals``) when the capture has it, else from the captured
   top-k values (then the description says so).
3. ``position_tracks``: the same tracker run once per position set (``last_prompt``: a track through the layers
   at the last prompt token; ``answer``: tracks within the answer span), with the normalisation of
   ``tracker.position_normalization`` and the raw activation-mass metrics beside the normalised ones
   (:func:`ghost_lens.tracking.metrics.scale_metrics`); columns prefixed ``last_prompt/`` and ``answer/``.

Every group is label-free: nothing here reads the labels, so a group can be computed once over all examples and
split by the evaluation's folds afterwards.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ghost_lens.errors import ConfigError

if TYPE_CHECKING:
    from ghost_lens.capture.trace import FeatureTrace
    from ghost_lens.config import RunConfig
    from ghost_lens.tracking.result import TrackingResult

logger = logging.getLogger(__name__)

FEATURE_GROUPS = ("tracks", "sae_stats", "position_tracks")
"""Names of the feature groups :func:`build_feature_groups` knows."""

STAT_POSITIONS = ("last_prompt", "answer")
"""Decision positions of ``sae_stats`` and ``position_tracks``."""

SAE_STATS = ("l1", "max", "entropy", "top_share", "l0")
"""Statistics of ``sae_stats``, per layer and position."""


@dataclass
class FeatureGroup:
    """One named feature matrix for the detector."""

    name: str
    values: np.ndarray
    """``[n_examples, n_features]`` float64, finite."""
    names: list[str]
    """Column names, e.g. ``L3/last_prompt/l1``."""
    description: str
    """One line for the report."""

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(f"feature group {self.name!r}: values {self.values.shape} vs {len(self.names)} names")
        if not np.all(np.isfinite(self.values)):
            raise ValueError(f"feature group {self.name!r} has NaN/inf values")


def build_feature_groups(
    trace: FeatureTrace,
    tracking: TrackingResult | None,
    cfg: RunConfig,
    names: Sequence[str] | None = None,
    n_jobs: int = 1,
) -> dict[str, FeatureGroup]:
    """The requested groups (default: all of :data:`FEATURE_GROUPS`), in the order asked.

    ``tracking`` is the run's tracking of ``trace`` (its metrics are the ``tracks`` group); ``None`` tracks here
    with ``cfg.tracker``. ``n_jobs``: batches tracked at once, in threads, where a group runs the tracker (the
    same numbers). Raises :class:`ConfigError` for an unknown group name.
    """
    wanted = list(FEATURE_GROUPS if names is None else names)
    unknown = [g for g in wanted if g not in FEATURE_GROUPS]
    if unknown:
        raise ConfigError(f"unknown feature group(s) {unknown} (known: {', '.join(FEATURE_GROUPS)})")
    out: dict[str, FeatureGroup] = {}
    for name in wanted:
        if name == "tracks":
            out[name] = tracks_group(trace, tracking, cfg, n_jobs)
        elif name == "sae_stats":
            out[name] = sae_stats_group(trace)
        else:
            out[name] = position_tracks_group(trace, cfg, n_jobs)
    return out


def tracks_group(trace: FeatureTrace, tracking: TrackingResult | None, cfg: RunConfig, n_jobs: int = 1) -> FeatureGroup:
    """Group 1: the tracker's metrics as configured (tracked here when ``tracking`` is ``None``)."""
    if tracking is None:
        from ghost_lens.tracking.result import track_trace

        tracking = track_trace(trace, cfg.tracker, progress=False, keep_graphs=False, n_jobs=n_jobs)
    if tracking.n_examples != trace.n_examples:
        raise ValueError(f"tracking has {tracking.n_examples} examples, the capture {trace.n_examples}")
    t = tracking.config
    return FeatureGroup(
        "tracks", tracking.metrics, list(tracking.feature_names),
        f"track metrics (positions {t.positions}, normalisation {t.normalization}, "
        f"{len(tracking.feature_names)} columns)",
    )


def sae_stats_group(trace: FeatureTrace) -> FeatureGroup:
    """Group 2: per layer and position, L1 / max / entropy / top share / L0 of the SAE activations (unnormalised)."""
    from ghost_lens.capture.trace import SAE_TOTALS

    last_tok, ans_tok, ans_row = decision_tokens(trace)
    n = trace.n_examples
    val = _np32(trace.feat_val)
    totals = None if trace.sae_totals is None else _np32(trace.sae_totals)
    if totals is not None and totals.shape[:2] != val.shape[:2]:
        raise ValueError(f"sae_totals has shape {totals.shape}, the features {val.shape}")
    last = token_stats(val[:, last_tok], None if totals is None else totals[:, last_tok])  # [L, N, S]
    per_tok = token_stats(val[:, ans_tok], None if totals is None else totals[:, ans_tok])  # [L, A, S]
    counts = np.bincount(ans_row, minlength=n).astype(np.float64)
    answer = np.zeros_like(last)
    np.add.at(answer, (slice(None), ans_row), per_tok)
    answer /= np.maximum(counts, 1.0)[None, :, None]
    blocks, names = [], []
    for pos, stats in (("last_prompt", last), ("answer", answer)):
        for j, layer in enumerate(trace.layers):
            blocks.append(stats[j])
            names += [f"L{layer}/{pos}/{s}" for s in SAE_STATS]
    source = (
        f"L1, L0 and entropy over the full SAE activation ({'/'.join(SAE_TOTALS)} captured per token)"
        if totals is not None
        else f"L1, L0 and entropy over the captured top-{val.shape[-1]} features only (this capture has no "
        "full-activation totals)"
    )
    return FeatureGroup(
        "sae_stats", np.concatenate(blocks, axis=1), names,
        f"per-layer SAE statistics (L1 mass, max, entropy, max/L1, L0; unnormalised) at the last prompt token "
        f"and averaged over the answer; {source}",
    )


def decision_tokens(trace: FeatureTrace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(last_prompt [N], answer_tokens [A], answer_row [A])``: absolute token indices of each example's last
    prompt token and of all answer tokens (with the example each belongs to)."""
    start = trace.offsets[:-1].numpy().astype(np.int64)
    a_start = trace.answer_start.numpy().astype(np.int64)
    a_end = trace.answer_end.numpy().astype(np.int64)
    if np.any(a_start < 1) or np.any(a_end <= a_start):
        raise ValueError("every example needs a prompt token before a non-empty answer span")
    length = a_end - a_start
    row = np.repeat(np.arange(start.size), length)
    within = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    return start + a_start - 1, (start + a_start)[row] + within, row


def token_stats(vals: np.ndarray, totals: np.ndarray | None) -> np.ndarray:
    """``[..., len(SAE_STATS)]`` from captured top-k values ``[..., k]`` and, when given, the full-activation
    totals ``[..., 3]`` (L1, L0, entropy; ``capture.trace.SAE_TOTALS``), which then replace their top-k versions."""
    v = np.clip(vals.astype(np.float64), 0.0, None)
    top = v.max(axis=-1)
    if totals is None:
        l1 = v.sum(axis=-1)
        l0 = (v > 0).sum(axis=-1).astype(np.float64)
        p = v / np.where(l1 > 0, l1, 1.0)[..., None]
        entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=-1)
    else:
        tot = totals.astype(np.float64)
        l1, l0, entropy = tot[..., 0], tot[..., 1], tot[..., 2]
    share = np.divide(top, l1, out=np.zeros_like(top), where=l1 > 0)
    return np.stack([l1, top, entropy, share, l0], axis=-1)


def position_tracks_group(trace: FeatureTrace, cfg: RunConfig, n_jobs: int = 1) -> FeatureGroup:
    """Group 3: the tracker once per decision position, with raw-mass columns beside the normalised metrics."""
    from ghost_lens.tracking.result import track_trace

    blocks, names = [], []
    norm = cfg.tracker.position_normalization
    for pos in STAT_POSITIONS:
        tcfg = dataclasses.replace(cfg.tracker, positions=pos, normalization=norm)
        res = track_trace(trace, tcfg, progress=False, keep_graphs=False, scale=True, n_jobs=n_jobs)
        blocks.append(res.metrics)
        names += [f"{pos}/{c}" for c in res.feature_names]
    return FeatureGroup(
        "position_tracks", np.concatenate(blocks, axis=1), names,
        f"track metrics computed separately at the last prompt token and over the answer span (normalisation "
        f"{norm}), plus raw activation mass of the tracks",
    )


def _np32(t) -> np.ndarray:
    return t.float().numpy() if hasattr(t, "numpy") else np.asarray(t, dtype=np.float32)
