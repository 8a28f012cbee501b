"""Assembling ``detection_metrics.json``: per-method metrics, verdicts against the detector, the conclusion.

The schema is documented in ``docs/detection_metrics.md``. Rules used here:

- **Verdict of a baseline** (and of the random-decoder control): a paired bootstrap over groups of
  ``AUROC(detector) - AUROC(baseline)`` (same resamples for both, so their shared noise cancels).
  ``"detector above"`` when the interval's lower end is > 0, ``"baseline above"`` when its upper end is < 0,
  ``"not separable"`` otherwise.
- **Shuffled-label control**: ``"near chance"`` when its AUROC interval contains 0.5, ``"away from chance"`` (a
  leak in the protocol) otherwise.
- **Explained by**: the baselines the detector is *not* above (verdict other than ``"detector above"``) that
  themselves carry signal (AUROC interval above 0.5), best first; only stated when the detector is above chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ghost_lens.detect.metrics import (
    Interval,
    bootstrap_metric,
    brier_score,
    expected_calibration_error,
    probability_range,
    weighted_auroc,
    weighted_average_precision,
)

SCHEMA_VERSION = 1
DETECTOR_ABOVE, BASELINE_ABOVE, NOT_SEPARABLE = "detector above", "baseline above", "not separable"
NEAR_CHANCE, AWAY_FROM_CHANCE = "near chance", "away from chance"


class Bootstrap:
    """The group resamples shared by every method (which is what makes the differences paired)."""

    def __init__(self, counts: np.ndarray, codes: np.ndarray, confidence: float) -> None:
        self.counts, self.codes, self.confidence = counts, codes, confidence

    def auroc(self, scores: np.ndarray, labels: np.ndarray, diff_with: np.ndarray | None = None) -> Interval:
        return bootstrap_metric(weighted_auroc, scores, labels, self.counts, self.codes, self.confidence, diff_with)

    def auprc(self, scores: np.ndarray, labels: np.ndarray) -> Interval:
        return bootstrap_metric(weighted_average_precision, scores, labels, self.counts, self.codes, self.confidence)


def per_fold_auroc(scores: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> list[float | None]:
    """AUROC within each test fold (``None`` where a fold holds one class only)."""
    out: list[float | None] = []
    for k in range(int(fold.max()) + 1):
        m = fold == k
        auc = weighted_auroc(scores[m], labels[m], np.ones((1, int(m.sum()))))[0]
        out.append(None if np.isnan(auc) else float(auc))
    return out


def within_fold_auroc(scores: np.ndarray, labels: np.ndarray, fold: np.ndarray) -> float | None:
    """AUROC over (positive, negative) pairs that share a test fold: the per-fold AUROCs weighted by their pair
    counts. Unlike the pooled AUROC it is blind to offsets between the folds' models."""
    num = den = 0.0
    for k in range(int(fold.max()) + 1):
        m = fold == k
        pairs = float(labels[m].sum() * (m.sum() - labels[m].sum()))
        if pairs > 0:
            num += pairs * float(weighted_auroc(scores[m], labels[m], np.ones((1, int(m.sum()))))[0])
            den += pairs
    return num / den if den > 0 else None


def method_entry(
    scores: np.ndarray,
    labels: np.ndarray,
    fold: np.ndarray,
    boot: Bootstrap,
    *,
    kind: str,
    description: str,
    n_bins: int,
    collapse_width: float,
    detector_scores: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of one method's out-of-fold probabilities; with ``detector_scores``, the paired difference."""
    entry: dict[str, Any] = {
        "kind": kind,
        "description": description,
        "auroc": boot.auroc(scores, labels).as_dict(),
        "auprc": boot.auprc(scores, labels).as_dict(),
        "auroc_per_fold": per_fold_auroc(scores, labels, fold),
        "auroc_within_folds": within_fold_auroc(scores, labels, fold),
        "ece": expected_calibration_error(scores, labels, n_bins),
        "brier": brier_score(scores, labels),
        "probability_range": probability_range(scores, collapse_width),
    }
    if detector_scores is not None:
        diff = boot.auroc(detector_scores, labels, diff_with=scores)
        entry["auroc_diff_vs_detector"] = diff.as_dict()
        entry["verdict"] = (
            DETECTOR_ABOVE if diff.ci_low > 0 else BASELINE_ABOVE if diff.ci_high < 0 else NOT_SEPARABLE
        )
    return entry


def chance_verdict(entry: dict[str, Any]) -> str:
    a = entry["auroc"]
    return NEAR_CHANCE if a["ci_low"] <= 0.5 <= a["ci_high"] else AWAY_FROM_CHANCE


def _fmt(a: dict[str, Any]) -> str:
    return f"{a['value']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]"


def conclusion(detector: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The top-level statement: above chance? above every baseline? explained by which? do the controls hold?"""
    det_auc = detector["auroc"]
    above_chance = bool(det_auc["ci_low"] > 0.5)
    competitors = {k: v for k, v in baselines.items() if v["kind"] == "baseline"}
    best = max(competitors, key=lambda k: competitors[k]["auroc"]["value"]) if competitors else None
    explained = sorted(
        (k for k, v in competitors.items() if v["verdict"] != DETECTOR_ABOVE and v["auroc"]["ci_low"] > 0.5),
        key=lambda k: -competitors[k]["auroc"]["value"],
    ) if above_chance else []
    beats_all = all(v["verdict"] == DETECTOR_ABOVE for v in competitors.values()) if competitors else None
    rd, sh = baselines.get("random_decoder"), baselines.get("shuffled")
    sae_matters = None if rd is None else rd["verdict"] == DETECTOR_ABOVE
    shuffled_ok = None if sh is None else sh["verdict"] == NEAR_CHANCE

    parts = [f"Detector AUROC {_fmt(det_auc)}"]
    if not above_chance:
        parts.append("is not above chance (interval includes 0.5)")
    elif explained:
        names = ", ".join(explained)
        parts.append(f"does not beat the {names} baseline{'s' if len(explained) > 1 else ''}: "
                     f"its signal is explained by the {names} baseline{'s' if len(explained) > 1 else ''}")
    elif beats_all:
        parts.append(f"is above every baseline (best: {best}, AUROC {_fmt(competitors[best]['auroc'])})")
    elif best is not None:
        parts.append(f"is above chance but not separable from the best baseline ({best})")
    else:
        parts.append("is above chance; no baseline was run")
    text = " ".join(parts) + "."
    if sae_matters is not None:
        text += (" The tracker on random decoder directions does worse: the SAE structure matters."
                 if sae_matters else " The tracker on random decoder directions does as well: the SAE structure is "
                 "not shown to matter.")
    if shuffled_ok is not None:
        text += (" Shuffled-label control near chance." if shuffled_ok
                 else f" WARNING: shuffled-label control away from chance (AUROC {_fmt(sh['auroc'])}): suspect a "
                 "leak.")
    return {
        "detector_above_chance": above_chance,
        "best_baseline": best,
        "detector_beats_best_baseline": None if best is None else competitors[best]["verdict"] == DETECTOR_ABOVE,
        "detector_beats_all_baselines": beats_all,
        "explained_by": explained,
        "sae_structure_matters": sae_matters,
        "shuffled_control_ok": shuffled_ok,
        "statement": text,
    }


def clean_json(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, recursively (so the JSON is strict)."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
