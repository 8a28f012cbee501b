"""Detection metrics: ranking metrics with group-bootstrap intervals, calibration metrics, threshold metrics.

Confidence intervals resample **groups** (questions, entities), never single examples: examples of one group are
correlated, and resampling them one by one would give intervals that are too narrow. A bootstrap resample is a
vector of group multiplicities (a multinomial draw); each example inherits its group's multiplicity as a weight,
so AUROC and AUPRC of a resample are *weighted* metrics on the original arrays. The same resamples are used for
every method, which makes differences between methods **paired** (:func:`bootstrap_metric` with ``diff_with``).

The weighted metrics are vectorised over resamples; :func:`weighted_auroc` and :func:`weighted_average_precision`
agree with scikit-learn's ``roc_auc_score`` / ``average_precision_score`` with ``sample_weight`` (tested).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
_CHUNK_CELLS = 4_000_000  # resamples x examples per chunk (bounds memory to a few tens of MB)


def _tied_blocks(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive and negative weight per distinct score, ascending: ``[B, U]`` each."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    y = labels[order].astype(bool)
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(np.where(y, w, 0.0), starts, axis=1)
    neg = np.add.reduceat(np.where(y, 0.0, w), starts, axis=1)
    return pos, neg


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC per row of ``weights`` ``[B, N]`` (Mann-Whitney with ties counted 1/2); NaN where a class is absent."""
    pos, neg = _tied_blocks(scores, labels, np.atleast_2d(weights))
    neg_below = np.cumsum(neg, axis=1) - neg
    num = np.sum(pos * (neg_below + 0.5 * neg), axis=1)
    den = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def weighted_average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (AUPRC, step-wise as scikit-learn) per row of ``weights``; NaN without positives."""
    pos, neg = _tied_blocks(scores, labels, np.atleast_2d(weights))
    tp = np.cumsum(pos[:, ::-1], axis=1)  # thresholds descending
    fp = np.cumsum(neg[:, ::-1], axis=1)
    total_pos = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
        recall_step = pos[:, ::-1] / total_pos
        ap = np.sum(recall_step * precision, axis=1)
    return np.where(total_pos[:, 0] > 0, ap, np.nan)


def group_bootstrap_counts(groups: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(counts [B, G], group_code [N])``: multiplicities of each group in ``n_boot`` resamples of groups."""
    _, codes = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    n_groups = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_boot).astype(np.float64)
    return counts, codes


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval; ``n_valid`` resamples had both classes."""

    value: float
    ci_low: float
    ci_high: float
    n_valid: int

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n_valid": self.n_valid}


def bootstrap_metric(
    metric: MetricFn,
    scores: np.ndarray,
    labels: np.ndarray,
    counts: np.ndarray,
    codes: np.ndarray,
    confidence: float,
    diff_with: np.ndarray | None = None,
    *,
    repeat: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> Interval:
    """Point estimate and percentile interval of ``metric`` over group resamples.

    With ``diff_with`` (another method's scores on the same examples), the statistic is
    ``metric(scores) - metric(diff_with)`` on each resample: a paired bootstrap of the difference.

    Repeated cross-validation: ``scores`` (and ``diff_with``, and ``labels`` where they differ per repeat) may be
    ``[R, N]``, one row of out-of-fold scores per repeat. The point estimate is then the mean over repeats of the
    metric, and resample ``b`` is scored on repeat ``repeat[b]`` (``[B]`` ints in ``[0, R)``): the interval holds
    the variance of refitting on other folds as well as the variance of which groups were asked. ``mask`` (``[N]``
    bool) restricts every statistic to a subset of the examples (a per-kind breakdown) on the same resamples.
    """
    s2 = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    d2 = None if diff_with is None else np.atleast_2d(np.asarray(diff_with, dtype=np.float64))
    y2 = np.atleast_2d(np.asarray(labels))
    n_rep, n = s2.shape
    keep = np.ones(n, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if repeat is None:
        repeat = np.zeros(counts.shape[0], dtype=np.int64)
    if n_rep > 1 and int(np.max(repeat, initial=0)) >= n_rep:
        raise ValueError(f"resamples draw repeats up to {int(np.max(repeat))}, scores hold {n_rep}")

    def row(a: np.ndarray, r: int) -> np.ndarray:
        return a[min(r, a.shape[0] - 1)][keep]

    def stat(r: int, w: np.ndarray) -> np.ndarray:
        out = metric(row(s2, r), row(y2, r), w)
        return out - metric(row(d2, r), row(y2, r), w) if d2 is not None else out

    point = float(np.mean([stat(r, np.ones((1, int(keep.sum()))))[0] for r in range(n_rep)]))
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    parts = []
    for r in range(n_rep):
        sel = counts[repeat == r] if n_rep > 1 else counts
        w_all = sel[:, codes][:, keep] if sel.size else np.empty((0, int(keep.sum())))
        parts += [stat(r, w_all[i : i + chunk]) for i in range(0, w_all.shape[0], chunk)]
        if n_rep == 1:
            break
    values = np.concatenate(parts) if parts else np.empty(0)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(point, float("nan"), float("nan"), 0)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return Interval(point, float(low), float(high), int(values.size))


def repeat_draws(n_boot: int, n_repeats: int, seed: int) -> np.ndarray:
    """``[B]``: the cross-validation repeat each bootstrap resample is scored on (uniform, seeded)."""
    if n_repeats <= 1:
        return np.zeros(n_boot, dtype=np.int64)
    return np.random.default_rng([seed, 1]).integers(0, n_repeats, size=n_boot)


def reliability_bins(proba: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Equal-width bins over [0, 1]: per bin the count, mean predicted probability and observed positive rate."""
    proba = np.clip(np.asarray(proba, dtype=np.float64), 0.0, 1.0)
    labels = np.asarray(labels, dtype=np.float64)
    which = np.minimum((proba * n_bins).astype(int), n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(which, weights=proba, minlength=n_bins) / count
        freq = np.bincount(which, weights=labels, minlength=n_bins) / count
    return {"count": count.tolist(), "mean_predicted": conf.tolist(), "observed_rate": freq.tolist()}


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, n_bins: int = 10) -> float:
    """ECE: the count-weighted mean of |observed rate - mean predicted probability| over equal-width bins."""
    bins = reliability_bins(proba, labels, n_bins)
    count = np.asarray(bins["count"])
    gap = np.abs(np.asarray(bins["observed_rate"]) - np.asarray(bins["mean_predicted"]))
    return float(np.nansum(count * gap) / max(count.sum(), 1.0))


def brier_score(proba: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of the probability of the positive class."""
    return float(np.mean((np.asarray(proba, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2))


def probability_range(proba: np.ndarray, collapse_width: float) -> dict[str, float | bool]:
    """Range of predicted probabilities (min, max, 5th and 95th percentiles).

    ``collapsed`` when the central 90% of the probabilities spans less than ``collapse_width``: judged on the
    percentiles so that a few outliers cannot hide a collapse (a full range that narrow is always a collapse).
    """
    p = np.asarray(proba, dtype=np.float64)
    lo, hi = float(p.min()), float(p.max())
    p05, p95 = (float(v) for v in np.quantile(p, [0.05, 0.95]))
    return {"min": lo, "max": hi, "width": hi - lo, "p05": p05, "p95": p95, "central_width": p95 - p05,
            "collapsed": bool(p95 - p05 < collapse_width)}


def threshold_metrics(pred: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    """Accuracy, precision, recall, F1, balanced accuracy and the confusion counts of 0/1 predictions."""
    pred = np.asarray(pred).astype(bool)
    y = np.asarray(labels).astype(bool)
    tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
    fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    specificity = tn / (tn + fp) if tn + fp else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / max(y.size, 1), "precision": precision, "recall": recall, "f1": f1,
        "balanced_accuracy": (recall + specificity) / 2, "tp": tp, "fp": fp, "tn": tn, "fn": fn,
    }
