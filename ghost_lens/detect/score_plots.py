"""ROC and reliability plots of out-of-fold scores (PNG).

Uses ``matplotlib.figure.Figure`` directly (no pyplot): no global backend or figure state is touched, so the
functions are safe in library code, threads and headless machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from ghost_lens.detect.metrics import reliability_bins, weighted_auroc
from ghost_lens.io import atomic_path


def plot_roc(
    scores: dict[str, np.ndarray], labels: np.ndarray, path: str | Path, highlight: str = "detector"
) -> Path:
    """One ROC curve per method (``highlight`` drawn thick), AUROC in the legend, chance diagonal."""
    fig = Figure(figsize=(5.5, 5.0), dpi=120)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        auc = weighted_auroc(s, labels, np.ones((1, s.size)))[0]
        bold = name == highlight
        ax.plot(fpr, tpr, lw=2.5 if bold else 1.0, alpha=1.0 if bold else 0.8, zorder=3 if bold else 2,
                label=f"{name} ({auc:.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
           title="ROC, out-of-fold (grouped k-fold)")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)


def plot_reliability(
    proba: np.ndarray, labels: np.ndarray, path: str | Path, n_bins: int = 10, name: str = "detector"
) -> Path:
    """Observed hallucination rate against mean predicted probability per bin, with the bins' counts below."""
    bins = reliability_bins(proba, labels, n_bins)
    count = np.asarray(bins["count"])
    conf = np.asarray(bins["mean_predicted"])
    freq = np.asarray(bins["observed_rate"])
    keep = count > 0
    fig = Figure(figsize=(5.0, 6.0), dpi=120)
    ax, ax_hist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="perfect calibration")
    ax.plot(conf[keep], freq[keep], marker="o", lw=1.5, label=name)
    ax.set(ylabel="observed hallucination rate", xlim=(0, 1), ylim=(0, 1), title="Reliability, out-of-fold")
    ax.legend(loc="upper left", fontsize=8)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ax_hist.bar(edges[:-1], count, width=1.0 / n_bins, align="edge", color="0.6", edgecolor="white")
    ax_hist.set(xlabel="predicted probability", ylabel="examples")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png")
    return Path(path)
