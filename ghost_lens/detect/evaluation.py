"""The evaluation protocol: the detector, its baselines and controls on the same grouped folds, one report.

Steps of :func:`evaluate`:

1. Guards: labels 0/1 with both classes, finite track features, ids and groups of the right length.
2. Folds: stratified group k-fold over ``groups`` (:func:`ghost_lens.detect.folds.make_folds`), shared by every
   method: no question or entity is ever on both sides of a split.
3. Per fold and method: everything (scalers, classifiers, orientations, calibration, threshold) is fitted on the
   training folds only; the test fold gets probabilities. Every example ends with one out-of-fold score per method.
4. The detector's decision threshold is chosen per fold from its inner out-of-fold probabilities on the training
   folds (``HallucinationDetector.oof_proba_``, rule ``cfg_eval.threshold_rule``) and applied to that test fold.
5. Metrics per method with group-bootstrap intervals (the same resamples for all, so differences are paired),
   verdicts against the detector, controls, and the conclusion (:mod:`ghost_lens.detect.report`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from ghost_lens.config import DetectorConfig, EvalConfig
from ghost_lens.detect import report
from ghost_lens.detect.baselines import BaselineInputs, Method, build_baselines
from ghost_lens.detect.calibration import choose_threshold
from ghost_lens.detect.detector import HallucinationDetector
from ghost_lens.detect.folds import check_finite, check_labels, group_codes, make_folds
from ghost_lens.detect.metrics import (
    group_bootstrap_counts,
    reliability_bins,
    threshold_metrics,
    weighted_auroc,
)
from ghost_lens.detect.result import EvaluationResult
from ghost_lens.errors import DatasetError

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, what)``, called after each (fold, method) fit."""


@contextlib.contextmanager
def _progress(progress: Any, total: int) -> Iterator[ProgressFn]:
    """The callback for ``progress``: a :data:`ProgressFn` as is; a ``rich.progress.Progress`` gets an "evaluate"
    task; ``True`` opens a transient rich bar; ``None`` / ``False`` report nothing (the convention of capture)."""
    if progress is None or progress is False:
        yield lambda done, total, what: None
        return
    from rich.progress import Progress

    if isinstance(progress, Progress):
        task = progress.add_task("evaluate", total=total)
        yield lambda done, total, what: progress.update(task, completed=done)
    elif progress is True:
        with Progress(transient=True) as bar:
            task = bar.add_task("evaluate", total=total)
            yield lambda done, total, what: bar.update(task, completed=done)
    else:
        yield progress


def _run_folds(
    methods: list[Method], y: np.ndarray, groups: np.ndarray, fold: np.ndarray, rule: str,
    progress: Any,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, str]]:
    """Out-of-fold probabilities of every method, what the detector learned in each fold, and the baselines
    that failed to fit (name -> reason; a failing detector is an error, a failing baseline is reported)."""
    n_folds = int(fold.max()) + 1
    oof = {m.name: np.empty(y.size) for m in methods}
    det: dict[str, Any] = {"threshold": [], "entropy_sign": [], "churn_sign": [], "out_of_fold_calibration": [],
                           "components": {}}
    failed: dict[str, str] = {}
    with _progress(progress, n_folds * len(methods)) as report_progress:
        _fit_all(methods, y, groups, fold, rule, oof, det, failed, report_progress)
    return oof, det, failed


def _fit_all(
    methods: list[Method], y: np.ndarray, groups: np.ndarray, fold: np.ndarray, rule: str,
    oof: dict[str, np.ndarray], det: dict[str, Any], failed: dict[str, str], progress: ProgressFn,
) -> None:
    """Fold after fold, fit every method on the training part and score the test part (fills the dicts)."""
    n_folds = int(fold.max()) + 1
    done, total = 0, n_folds * len(methods)
    for k in range(n_folds):
        train, test = fold != k, fold == k
        for m in methods:
            if m.name not in failed:
                ym = y if m.labels is None else m.labels
                est = m.make()
                try:
                    est.fit(m.X[train], ym[train], **({"groups": groups[train]} if m.pass_groups else {}))
                    oof[m.name][test] = est.predict_proba(m.X[test])[:, 1]
                except ValueError as exc:
                    if m.kind == "detector":
                        raise
                    failed[m.name] = f"failed to fit in fold {k}: {str(exc).splitlines()[0]}"
                    logger.warning("baseline %s %s", m.name, failed[m.name])
                if m.name == "detector":
                    det["threshold"].append(choose_threshold(est.oof_proba_, ym[train], rule))  # type: ignore
                    det["entropy_sign"].append(int(est.entropy_sign_))
                    det["churn_sign"].append(int(est.churn_sign_))
                    det["out_of_fold_calibration"].append(bool(est.calibrated_out_of_fold_))
                    for part, values in est.component_scores(m.X[test]).items():
                        det["components"].setdefault(part, np.empty(y.size))[test] = values
            done += 1
            progress(done, total, f"fold {k + 1}/{n_folds}: {m.name}")


def evaluate(
    *,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    ids: Sequence[Any],
    track_features: np.ndarray,
    feature_names: Sequence[str],
    baseline_inputs: BaselineInputs,
    cfg_detector: DetectorConfig,
    cfg_eval: EvalConfig,
    random_decoder_features: np.ndarray | None = None,
    progress: Any = None,
) -> EvaluationResult:
    """Evaluate the detector against its baselines and controls on shared grouped folds (module docstring).

    ``progress``: a :data:`ProgressFn`, a ``rich.progress.Progress`` (an "evaluate" task is added), ``True`` (a
    transient bar) or ``None`` / ``False``.
    """
    y = check_labels(labels)
    n = y.size
    g = group_codes(groups, n)
    id_list = [str(i) for i in ids]
    if len(id_list) != n:
        raise DatasetError(f"expected {n} ids, got {len(id_list)}")
    X = check_finite("track features", track_features, list(feature_names))
    if X.shape != (n, len(feature_names)):
        raise DatasetError(f"track features have shape {X.shape}, expected ({n}, {len(feature_names)})")
    fold, notes = make_folds(y, g, cfg_eval.n_folds, cfg_eval.seed)
    names = list(cfg_eval.baselines)

    def make_detector() -> HallucinationDetector:
        return HallucinationDetector.from_config(cfg_detector, feature_names, random_state=cfg_eval.seed)

    make_detector()  # a missing entropy / churn column fails here, before any fitting
    methods = [Method("detector", "detector", "entropy/churn detector on the track metrics", X, make_detector, True)]
    baselines, skipped, probes = build_baselines(baseline_inputs, names, n, cfg_eval.probe_c)
    methods += baselines + probes
    if "random_decoder" in names:
        if random_decoder_features is None:
            skipped["random_decoder"] = "no track metrics from random-decoder SAEs were given"
        else:
            Xr = check_finite("random-decoder track features", random_decoder_features, list(feature_names))
            if Xr.shape != X.shape:
                raise DatasetError(f"random-decoder track features have shape {Xr.shape}, expected {X.shape}")
            methods.append(Method("random_decoder", "control", "the detector on track metrics from SAEs whose "
                                  "decoder directions are replaced by random ones", Xr, make_detector, True))
    if "shuffled" in names:
        # permuted within each fold: every fold keeps its label count, so a fold-level prevalence offset (which a
        # pooled AUROC would turn into a below-chance score) cannot masquerade as a leak
        rng = np.random.default_rng(cfg_eval.seed)
        y_perm = y.copy()
        for k in range(int(fold.max()) + 1):
            y_perm[fold == k] = rng.permutation(y[fold == k])
        methods.append(Method("shuffled", "control", "the detector fitted and scored on labels permuted within "
                              "each fold", X, make_detector, True, labels=y_perm))
    for name, why in skipped.items():
        logger.info("baseline %s skipped: %s", name, why)

    oof, det_fit, failed = _run_folds(methods, y, g, fold, cfg_eval.threshold_rule, progress)
    skipped.update(failed)
    methods = [m for m in methods if m.name not in failed]
    return _assemble(methods, oof, det_fit, y, g, id_list, fold, notes, skipped, cfg_detector, cfg_eval,
                     list(feature_names))


def _assemble(
    methods: list[Method], oof: dict[str, np.ndarray], det_fit: dict[str, Any], y: np.ndarray, g: np.ndarray,
    ids: list[str], fold: np.ndarray, notes: list[str], skipped: dict[str, str], cfg_detector: DetectorConfig,
    cfg_eval: EvalConfig, feature_names: list[str],
) -> EvaluationResult:
    counts, codes = group_bootstrap_counts(g, cfg_eval.n_bootstrap, cfg_eval.seed)
    boot = report.Bootstrap(counts, codes, cfg_eval.confidence)
    common = {"n_bins": cfg_eval.n_bins, "collapse_width": cfg_eval.collapse_width}
    det_scores = oof["detector"]
    detector = report.method_entry(det_scores, y, fold, boot, kind="detector",
                                   description=methods[0].description, **common)
    thresholds = np.asarray(det_fit["threshold"])
    detector.update({
        "config": dataclasses.asdict(cfg_detector),
        "feature_names": feature_names,
        "threshold": {"rule": cfg_eval.threshold_rule, "per_fold": thresholds.tolist()},
        "at_threshold": threshold_metrics(det_scores >= thresholds[fold], y),
        "orientation": {"mode": cfg_detector.orientation, "entropy_sign_per_fold": det_fit["entropy_sign"],
                        "churn_sign_per_fold": det_fit["churn_sign"]},
        "calibrated_out_of_fold_per_fold": det_fit["out_of_fold_calibration"],
        "components": {k: boot.auroc(v, y).as_dict() for k, v in det_fit["components"].items()},
        "reliability": reliability_bins(det_scores, y, cfg_eval.n_bins),
    })
    baselines: dict[str, dict[str, Any]] = {}
    scores: dict[str, np.ndarray] = {"detector": det_scores}
    probe_auc: dict[str, float] = {}
    for m in methods[1:]:
        if m.name.startswith("probe_L"):
            probe_auc[m.name] = float(weighted_auroc(oof[m.name], y, np.ones((1, y.size)))[0])
            continue
        if m.name == "shuffled":
            entry = report.method_entry(oof[m.name], m.labels, fold, boot, kind=m.kind,  # type: ignore[arg-type]
                                        description=m.description, **common)
            entry["verdict"] = report.chance_verdict(entry)
        else:
            entry = report.method_entry(oof[m.name], y, fold, boot, kind=m.kind, description=m.description,
                                        detector_scores=det_scores, **common)
        entry.update(m.extra or {})
        baselines[m.name] = entry
        scores[m.name] = oof[m.name]
    if probe_auc:
        best = max(probe_auc, key=lambda k: probe_auc[k])
        m_best = next(m for m in methods if m.name == best)
        entry = report.method_entry(oof[best], y, fold, boot, kind="baseline", detector_scores=det_scores,
                                    description="logistic-regression probe on the raw residual stream; best layer "
                                    "chosen on the evaluation folds (optimistic for the baseline)", **common)
        entry["layer"] = (m_best.extra or {})["layer"]
        entry["per_layer_auroc"] = {k.removeprefix("probe_L"): v for k, v in probe_auc.items()}
        baselines["probe"] = entry
        scores["probe"] = oof[best]

    # competitors first, then the controls (the order of the report, the CSV columns and the summary table)
    baselines = dict(sorted(baselines.items(), key=lambda kv: kv[1]["kind"] == "control"))
    scores = {"detector": det_scores, **{k: scores[k] for k in baselines}}
    warnings = list(notes)
    rng = detector["probability_range"]
    if rng["collapsed"]:
        warnings.append(f"probability collapse: 90% of the detector's probabilities lie in [{rng['p05']:.3f}, "
                        f"{rng['p95']:.3f}] (width {rng['central_width']:.3f} < {cfg_eval.collapse_width}; "
                        f"full range [{rng['min']:.3f}, {rng['max']:.3f}])")
    if "shuffled" in baselines and baselines["shuffled"]["verdict"] != report.NEAR_CHANCE:
        warnings.append("shuffled-label control away from chance: suspect a leak in the protocol")
    for w in warnings:
        logger.warning(w)
    fold_sizes = np.bincount(fold).tolist()
    metrics = {
        "schema_version": report.SCHEMA_VERSION,
        "dataset": {"n_examples": int(y.size), "n_groups": int(np.unique(g).size), "n_positive": int(y.sum()),
                    "positive_rate": float(y.mean())},
        "protocol": {
            "splitter": "StratifiedGroupKFold", "n_folds": len(fold_sizes), "n_folds_requested": cfg_eval.n_folds,
            "fold_sizes": fold_sizes, "fold_positive_rates": [float(y[fold == k].mean()) for k in
                                                              range(len(fold_sizes))],
            "seed": cfg_eval.seed, "threshold_rule": cfg_eval.threshold_rule, "n_bins": cfg_eval.n_bins,
            "collapse_width": cfg_eval.collapse_width,
            "bootstrap": {"unit": "group", "n_resamples": cfg_eval.n_bootstrap, "confidence": cfg_eval.confidence,
                          "interval": "percentile", "paired": True},
        },
        "detector": detector,
        "baselines": baselines,
        "skipped": skipped,
        "conclusion": report.conclusion(detector, baselines),
        "warnings": warnings,
    }
    logger.info(metrics["conclusion"]["statement"])
    extra = {"shuffled_label": next(m.labels for m in methods if m.name == "shuffled")} if "shuffled" in scores else {}
    return EvaluationResult(metrics, ids, [str(x) for x in g], fold, y, scores, extra)
