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

SCHEMA_VERSION = 2
DETECTOR_ABOVE, BASELINE_ABOVE, NOT_SEPARABLE = "detector above", "baseline above", "not separable"
NEAR_CHANCE, AWAY_FROM_CHANCE = "near chance", "away from chance"
ADDS, ADDS_NOTHING, WORSE = "adds", "nothing measurable", "worse"


class Bootstrap:
    """The group resamples shared by every method (which is what makes the differences paired), and the
    cross-validation repeat each resample is scored on (``repeat [B]``; all zeros for a single split)."""

    def __init__(self, counts: np.ndarray, codes: np.ndarray, confidence: float,
                 repeat: np.ndarray | None = None) -> None:
        self.counts, self.codes, self.confidence = counts, codes, confidence
        self.repeat = np.zeros(counts.shape[0], dtype=np.int64) if repeat is None else np.asarray(repeat)

    def auroc(self, scores: np.ndarray, labels: np.ndarray, diff_with: np.ndarray | None = None, *,
              mask: np.ndarray | None = None, point_only: bool = False) -> Interval:
        """AUROC (mean over the rows of ``[R, N]`` scores) with its interval; ``point_only`` skips the resamples."""
        counts, repeat = (self.counts[:0], self.repeat[:0]) if point_only else (self.counts, self.repeat)
        return bootstrap_metric(weighted_auroc, scores, labels, counts, self.codes, self.confidence, diff_with,
                                repeat=repeat, mask=mask)

    def auprc(self, scores: np.ndarray, labels: np.ndarray) -> Interval:
        return bootstrap_metric(weighted_average_precision, scores, labels, self.counts, self.codes,
                                self.confidence, repeat=self.repeat)


def _rows(a: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.asarray(a))


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
    """Metrics of one method's out-of-fold probabilities (``[N]``, or ``[R, N]`` with ``fold [R, N]`` under
    repeated cross-validation); with ``detector_scores``, the paired difference.

    AUROC / AUPRC: mean over repeats, intervals from the repeat-drawing bootstrap. Per-fold AUROCs, ECE, Brier and
    the probability range: the first repeat (the split written to ``predictions.csv``)."""
    s2, f2, y2 = _rows(scores).astype(np.float64), _rows(fold), _rows(labels)
    within = [within_fold_auroc(s2[r], y2[min(r, len(y2) - 1)], f2[r]) for r in range(s2.shape[0])]
    entry: dict[str, Any] = {
        "kind": kind,
        "description": description,
        "auroc": boot.auroc(s2, y2).as_dict(),
        "auprc": boot.auprc(s2, y2).as_dict(),
        "auroc_per_repeat": [boot.auroc(s2[r], y2[min(r, len(y2) - 1)], point_only=True).value
                             for r in range(s2.shape[0])],
        "auroc_per_fold": per_fold_auroc(s2[0], y2[0], f2[0]),
        "auroc_within_folds": None if any(w is None for w in within) else float(np.mean(within)),  # type: ignore
        "ece": expected_calibration_error(s2[0], y2[0], n_bins),
        "brier": brier_score(s2[0], y2[0]),
        "probability_range": probability_range(s2[0], collapse_width),
    }
    if detector_scores is not None:
        diff = boot.auroc(detector_scores, y2, diff_with=s2)
        entry["auroc_diff_vs_detector"] = diff.as_dict()
        entry["verdict"] = (
            DETECTOR_ABOVE if diff.ci_low > 0 else BASELINE_ABOVE if diff.ci_high < 0 else NOT_SEPARABLE
        )
    return entry


def adds_to_confidence(
    scores: dict[str, np.ndarray], labels: np.ndarray, boot: Bootstrap, confidence: list[str]
) -> dict[str, Any]:
    """"Do the SAE features add to the model's confidence?": the stacked scorer against the best confidence
    baseline, by the paired (repeat-drawing) group bootstrap of ``AUROC(stacked) - AUROC(baseline)``.

    The baseline is the confidence baseline with the highest out-of-fold AUROC on the evaluation folds: a choice
    made on the same scores, optimistic for the baseline, hence conservative for a claim that SAE features add.
    """
    if "stacked" not in scores:
        return {"available": False, "reason": "the stacked scorer did not run", "statement": None}
    if not confidence:
        return {"available": False, "reason": "no confidence baseline ran", "statement": None}
    cand = {b: boot.auroc(scores[b], labels, point_only=True).value for b in confidence}
    best = max(cand, key=lambda b: cand[b])
    diff = boot.auroc(scores["stacked"], labels, diff_with=scores[best])
    st, bl = boot.auroc(scores["stacked"], labels), boot.auroc(scores[best], labels)
    verdict = ADDS if diff.ci_low > 0 else WORSE if diff.ci_high < 0 else ADDS_NOTHING
    d = f"{diff.value:+.3f} [{diff.ci_low:+.3f}, {diff.ci_high:+.3f}]"
    ctx = f"(stacked scorer {_fmt(st.as_dict())} vs {best} {_fmt(bl.as_dict())}, paired group bootstrap)"
    statement = {
        ADDS: f"SAE features add {d} AUROC to the model's confidence {ctx}.",
        ADDS_NOTHING: f"SAE features add nothing measurable to the model's confidence: {d} AUROC {ctx}.",
        WORSE: f"SAE features make the model's confidence worse when stacked with it: {d} AUROC {ctx}.",
    }[verdict]
    return {
        "available": True,
        "best_confidence_baseline": best,
        "selection": "the confidence baseline with the highest out-of-fold AUROC (mean over repeats) on these "
                     "folds: chosen on the evaluation scores, optimistic for the baseline",
        "candidates": cand,
        "stacked_auroc": st.as_dict(),
        "baseline_auroc": bl.as_dict(),
        "auroc_diff": diff.as_dict(),
        "verdict": verdict,
        "statement": statement,
    }


def adds_given_kind(stacked_kind: np.ndarray, confidence_kind: np.ndarray, labels: np.ndarray,
                    boot: Bootstrap) -> dict[str, Any]:
    """The same question once the example's kind is known: the stacked scorer with the kind one-hot against the
    ``confidence_kind`` baseline (confidence scores + kind), paired group bootstrap. A pooled gain that is only
    "which kind (relation) is this" vanishes here."""
    diff = boot.auroc(stacked_kind, labels, diff_with=confidence_kind)
    st, bl = boot.auroc(stacked_kind, labels), boot.auroc(confidence_kind, labels)
    verdict = ADDS if diff.ci_low > 0 else WORSE if diff.ci_high < 0 else ADDS_NOTHING
    d = f"{diff.value:+.3f} [{diff.ci_low:+.3f}, {diff.ci_high:+.3f}]"
    ctx = f"(stacked scorer with the kind {_fmt(st.as_dict())} vs confidence_kind {_fmt(bl.as_dict())})"
    statement = {
        ADDS: f"Given the example's kind, SAE features still add {d} AUROC to the model's confidence {ctx}.",
        ADDS_NOTHING: f"Given the example's kind, SAE features add nothing measurable to the model's confidence: "
                      f"{d} AUROC {ctx}.",
        WORSE: f"Given the example's kind, stacking SAE features onto the model's confidence makes it worse: {d} "
               f"AUROC {ctx}.",
    }[verdict]
    return {"stacked_auroc": st.as_dict(), "baseline_auroc": bl.as_dict(), "auroc_diff": diff.as_dict(),
            "verdict": verdict, "statement": statement}


def ablation_table(
    settings: dict[str, list[str]], own: str, scores: dict[str, np.ndarray], detector_scores: np.ndarray,
    labels: np.ndarray, boot: Bootstrap, descriptions: dict[str, str],
) -> dict[str, Any]:
    """Each feature-group setting (label -> groups: each group alone, ``all`` together) on the same folds: AUROC,
    AUPRC and the paired difference against the detector. The row ``own`` (the detector's setting) holds the
    detector's own scores."""
    rows: dict[str, Any] = {}
    for label, groups in settings.items():
        is_det = label == own
        s = detector_scores if is_det else scores.get(label)
        if s is None:  # that setting failed to fit
            continue
        rows[label] = {
            "groups": groups, "is_detector": is_det,
            "auroc": boot.auroc(s, labels).as_dict(), "auprc": boot.auprc(s, labels).as_dict(),
            "auroc_diff_vs_detector": None if is_det else boot.auroc(detector_scores, labels, diff_with=s).as_dict(),
        }
    best = max(rows, key=lambda k: rows[k]["auroc"]["value"]) if rows else None
    return {"detector_setting": own, "groups": descriptions, "rows": rows, "best": best}


def kind_breakdown(
    kind: np.ndarray, scores: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray, boot: Bootstrap
) -> dict[str, Any]:
    """AUROC per kind (``meta["kind"]``) for the methods in ``scores``, on the run's resamples restricted to the
    examples of that kind; a kind holding one class gets no AUROC and a note saying so."""
    out: dict[str, Any] = {}
    for k in sorted({str(v) for v in kind if v is not None}):
        mask = np.asarray([v == k for v in kind])
        n_pos = int(labels[mask].sum())
        row: dict[str, Any] = {"n": int(mask.sum()), "n_positive": n_pos,
                               "n_groups": int(np.unique(groups[mask]).size)}
        if n_pos in (0, int(mask.sum())):
            row["one_class"] = True
            row["note"] = f"all {row['n']} examples are labelled {1 if n_pos else 0}: no AUROC"
            row["auroc"] = {m: None for m in scores}
        else:
            row["one_class"] = False
            row["auroc"] = {m: boot.auroc(s, labels, mask=mask).as_dict() for m, s in scores.items()}
        out[k] = row
    n_none = int(sum(v is None for v in kind))
    return {"key": "kind", "methods": list(scores), "kinds": out, "n_without_kind": n_none}


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
