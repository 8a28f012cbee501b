"""What :func:`ghost_lens.detect.evaluate` returns, and how it is written into a run folder.

Files (names from :mod:`ghost_lens.constants`): ``detection_metrics.json`` (schema: ``docs/detection_metrics.md``),
``predictions.csv`` (one row per example: ``id, group, fold, label, detector, stacked, <baseline>...,
shuffled_label, kind``; every score is an out-of-fold probability of hallucination from the first cross-validation
repeat, whose fold the ``fold`` column gives), ``roc.png`` and ``reliability.png`` (the same repeat).
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghost_lens.constants import DETECTION_METRICS, PREDICTIONS, RELIABILITY_PLOT, ROC_PLOT
from ghost_lens.detect.score_plots import plot_reliability, plot_roc
from ghost_lens.detect.verdicts import clean_json

logger = logging.getLogger(__name__)

SummaryRow = tuple[str, float, float, float, float, str]


@dataclass
class EvaluationResult:
    """``metrics`` (-> ``detection_metrics.json``) and the out-of-fold scores behind them."""

    metrics: dict[str, Any]
    ids: list[str]
    groups: list[str]
    folds: np.ndarray
    labels: np.ndarray
    scores: dict[str, np.ndarray]
    """Out-of-fold probability of hallucination per method: ``detector`` first, then baselines and controls."""
    extra_columns: dict[str, np.ndarray] = field(default_factory=dict)
    """Further per-example columns of the predictions file (``shuffled_label``, ``kind``)."""
    repeat_scores: dict[str, np.ndarray] | None = field(default=None, repr=False)
    """``[R, N]`` out-of-fold scores per method and cross-validation repeat (``scores`` holds row 0)."""
    repeat_folds: np.ndarray | None = field(default=None, repr=False)
    """``[R, N]`` test fold of every example in each repeat (``folds`` is row 0)."""
    detector_inputs: tuple[np.ndarray, list[str], list[str]] | None = field(default=None, repr=False)
    """``(X [N, F], column names, feature groups)``: what the detector was evaluated on (the final detector of a
    run is refitted on it)."""

    @property
    def predictions(self) -> list[dict[str, Any]]:
        """One row per example: id, group, fold, label, then every method's score (and ``shuffled_label``)."""
        columns: dict[str, list[Any]] = {
            "id": list(self.ids), "group": list(self.groups), "fold": self.folds.tolist(),
            "label": self.labels.tolist(),
        }
        columns.update({k: np.asarray(v).tolist() for k, v in {**self.scores, **self.extra_columns}.items()})
        names = list(columns)
        return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]

    def summary_rows(self) -> list[SummaryRow]:
        """``(name, auroc, ci_low, ci_high, auprc, verdict)`` for the detector, the stacked scorer, then every
        baseline and control (verdicts against the detector)."""
        det = self.metrics["detector"]
        verdict = "above chance" if self.metrics["conclusion"]["detector_above_chance"] else "not above chance"
        rows: list[SummaryRow] = [("detector", *_auc_row(det), verdict)]
        stacked = self.metrics.get("stacked")
        if stacked:
            rows.append(("stacked (confidence + SAE)", *_auc_row(stacked), stacked["verdict"]))
        for name, entry in self.metrics["baselines"].items():
            label = f"{name} (L{entry['layer']})" if "layer" in entry else name
            rows.append((label, *_auc_row(entry), entry["verdict"]))
        return rows

    def save(self, run_dir: str | Path) -> dict[str, Path]:
        """Write the metrics JSON, the predictions CSV and the ROC / reliability PNGs into ``run_dir``."""
        run_dir = Path(run_dir)
        from ghost_lens.io import atomic_write, atomic_write_text

        run_dir.mkdir(parents=True, exist_ok=True)
        paths = {
            "metrics": run_dir / DETECTION_METRICS, "predictions": run_dir / PREDICTIONS,
            "roc": run_dir / ROC_PLOT, "reliability": run_dir / RELIABILITY_PLOT,
        }
        atomic_write_text(paths["metrics"], json.dumps(clean_json(self.metrics), indent=2, allow_nan=False))
        rows = self.predictions
        with atomic_write(paths["predictions"], "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot_roc({k: v for k, v in self.scores.items() if k != "shuffled"}, self.labels, paths["roc"])
        plot_reliability(self.scores["detector"], self.labels, paths["reliability"],
                         n_bins=int(self.metrics["protocol"]["n_bins"]))
        logger.info("detection report written to %s", run_dir)
        return paths


def _auc_row(entry: dict[str, Any]) -> tuple[float, float, float, float]:
    a = entry["auroc"]
    return float(a["value"]), float(a["ci_low"]), float(a["ci_high"]), float(entry["auprc"]["value"])
