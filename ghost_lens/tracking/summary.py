"""``tracking_summary.json``: corpus-level track statistics of a run, and the seed research's tuning hints.

Everything is derived from the per-example metric vectors, so a summary can be rebuilt from
``track_metrics.json`` alone. ``avg_track_length`` is pooled over all tracks of the run (each track counts once);
per-layer values are means over examples; histograms count tracks (length) or examples (the rest).
Hints (logged as warnings and listed under ``hints``): an average track length under
:data:`SHORT_TRACKS` layers suggests lowering ``association_threshold``; over :data:`LONG_TRACKS`, raising it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ghost_lens.config_io import to_dict
from ghost_lens.constants import TRACKING_SUMMARY

if TYPE_CHECKING:
    from ghost_lens.tracking.result import TrackingResult

logger = logging.getLogger(__name__)

SHORT_TRACKS = 3.0
"""Average track length (layers) below which the seed research lowered ``association_threshold``."""
LONG_TRACKS = 20.0
"""Average track length (layers) above which the seed research raised ``association_threshold``."""


def tuning_hints(avg_track_length: float, n_layers: int, association_threshold: float) -> list[str]:
    """The seed research's rules of thumb, as sentences. The short-track hint needs more than 3 tracked layers
    (with 3 or fewer, no track can be longer)."""
    hints = []
    if avg_track_length < SHORT_TRACKS and n_layers > SHORT_TRACKS:
        hints.append(
            f"average track length {avg_track_length:.2f} layers is under {SHORT_TRACKS:g}: tracks break too easily;"
            f" lower tracker.association_threshold (now {association_threshold:g})"
        )
    if avg_track_length > LONG_TRACKS:
        hints.append(
            f"average track length {avg_track_length:.2f} layers is over {LONG_TRACKS:g}: features chain too easily;"
            f" raise tracker.association_threshold (now {association_threshold:g})"
        )
    return hints


def _stats(x: np.ndarray) -> dict[str, float]:
    if x.size == 0:
        return {"mean": 0.0, "std": 0.0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "median": float(np.median(x)),
        "min": float(x.min()),
        "max": float(x.max()),
    }


def _hist(x: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    counts, edges = np.histogram(x, bins=bins) if x.size else (np.zeros(0), np.zeros(0))
    return {"edges": edges.tolist(), "counts": counts.astype(int).tolist()}


def tracking_summary(result: TrackingResult) -> dict[str, Any]:
    """Summary of a :class:`~ghost_lens.tracking.result.TrackingResult`; logs the hints as warnings."""
    col = result.column
    n_tracks = col("n_tracks")
    total_tracks = float(n_tracks.sum())
    avg_len = float((col("mean_track_length") * n_tracks).sum() / total_tracks) if total_tracks else 0.0
    per_layer = {
        m: {
            f"L{layer}": float(col(f"{m}_L{layer}").mean()) if result.n_examples else 0.0
            for layer in result.layers
        }
        for m in ("births", "deaths", "live", "clutter", "churn", "entropy")
    }
    len_hist = {str(n): int(col(f"len_hist_{n}").sum()) for n in range(1, len(result.layers) + 1)}
    hints = tuning_hints(avg_len, len(result.layers), result.config.association_threshold)
    for h in hints:
        logger.warning(h)
    summary: dict[str, Any] = {
        "n_examples": result.n_examples,
        "layers": result.layers,
        "decoder_mode": result.decoder_mode,
        "avg_track_length": avg_len,
        "track_length": _stats(col("mean_track_length")),
        "track_count": {**_stats(n_tracks), "total": total_tracks},
        "births_per_layer": per_layer["births"],
        "deaths_per_layer": per_layer["deaths"],
        "live_per_layer": per_layer["live"],
        "clutter_per_layer": per_layer["clutter"],
        "churn": {**_stats(col("churn")), "per_layer": per_layer["churn"]},
        "entropy": {**_stats(col("entropy")), "per_layer": per_layer["entropy"]},
        "survival": _stats(col("survival")),
        "dominant_share": _stats(col("dominant_share")),
        "histograms": {
            "track_length": len_hist,
            "track_count": _hist(n_tracks),
            "entropy": _hist(col("entropy")),
            "churn": _hist(col("churn")),
        },
        "hints": hints,
        "config": to_dict(result.config),
    }
    if result.labels is not None and result.n_examples:
        labels = np.asarray(result.labels)
        summary["by_label"] = {
            str(lab): {
                m: float(col(m)[labels == lab].mean())
                for m in ("n_tracks", "mean_track_length", "entropy", "churn", "survival", "dominant_share")
            }
            for lab in sorted(set(labels.tolist()))
        }
    return summary


def write_tracking_summary(result: TrackingResult, path: str | Path) -> dict[str, Any]:
    """Write :func:`tracking_summary` as JSON to ``path`` (a file, or a folder that gets ``tracking_summary.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / TRACKING_SUMMARY
    summary = tracking_summary(result)
    from ghost_lens.io import atomic_write_text

    atomic_write_text(path, json.dumps(summary, indent=1))
    return summary
