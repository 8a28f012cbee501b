"""The evaluation protocol: the detector, its baselines and controls on the same grouped folds, one report.

Steps of :func:`evaluate`:

1. Guards: labels 0/1 with both classes, finite features, ids and groups of the right length.
2. Feature groups: the detector sees the concatenation of the groups named in ``detector.features``
   (:mod:`ghost_lens.detect.features`); a group that was not given is left out with a warning.
3. Folds: stratified group k-fold over ``groups`` (:func:`ghost_lens.detect.folds.make_folds`), drawn
   ``eval.n_repeats`` times with the seeds ``seed, seed + 1, ...``, shared by every method: no question or entity
   is ever on both sides of a split.
4. Per repeat, fold and method: everything (scalers, classifiers, orientations, calibration, threshold, the
   stacked scorer's ``C``) is fitted on the training folds only; the test fold gets probabilities. Every example
   ends with one out-of-fold score per method and repeat. The methods: the detector; the detector on each feature
   group alone and on all groups together (the ablation); the baselines; the stacked scorer (confidence baselines
   + the detector's feature groups, :mod:`ghost_lens.detect.stacked`); the controls.
5. The detector's decision threshold is chosen per fold from its inner out-of-fold probabilities on the training
   folds (``HallucinationDetector.oof_proba_``, rule ``cfg_eval.threshold_rule``) and applied to that test fold.
6. Metrics per method: AUROC / AUPRC are the mean over repeats; their group-bootstrap intervals score each
   resample on a randomly drawn repeat (the same resamples and draws for all, so differences are paired).
   Verdicts against the detector, controls, the ablation table, "does it add to confidence?" (stacked scorer
   against the best confidence baseline), the per-kind breakdown and the conclusion
   (:mod:`ghost_lens.detect.verdicts`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ghost_lens.config import DetectorConfig, EvalConfig
from ghost_lens.detect import verdicts
from ghost_lens.detect.baselines import BaselineInputs, Method, build_baselines, kind_one_hot, record_choice
from ghost_lens.detect.calibration import choose_threshold
from ghost_lens.detect.detector import HallucinationDetector
from ghost_lens.detect.folds import check_finite, check_labels, group_codes, make_folds
from ghost_lens.detect.metrics import (
    group_bootstrap_counts,
    reliability_bins,
    repeat_draws,
    threshold_metrics,
)
from ghost_lens.detect.result import EvaluationResult
from ghost_lens.detect.stacked import StackedScorer
from ghost_lens.errors import DatasetError

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]
"""``progress(done, total, what)``, called after each (repeat, fold, method) fit."""

CONFIDENCE_BASELINES = ("logprob", "mean_logprob", "entropy", "max_prob")
"""The model's own confidence: the baselines the stacked scorer is compared with (and stacks)."""
_CONFIDENCE_INPUTS = {"logprob": "answer_logprob", "mean_logprob": "answer_mean_logprob",
                      "entropy": "output_entropy", "max_prob": "max_prob"}


@dataclasses.dataclass
class _Group:
    """A feature group as the evaluation needs it (any object with these attributes will do)."""

    name: str
    values: np.ndarray
    names: list[str]
    description: str


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


@dataclasses.dataclass
class _FoldFit:
    """Every method fitted on one training part (repeat ``r``, fold ``k``) and scored on its test part."""

    r: int
    k: int
    proba: dict[str, np.ndarray]
    """Method -> hallucination probabilities of the test rows."""
    detector: dict[str, Any] | None
    """The detector's threshold, orientation signs, calibration kind and component scores of the test rows."""
    choices: dict[str, tuple[str, float]]
    """Probe -> the (candidate, C) it chose inside the training part."""
    failed: dict[str, str]
    """Baseline -> why it could not be fitted here."""
    methods: list[str] = dataclasses.field(default_factory=list)
    """The methods this fit was given (all, or one job's share of them)."""


def _fit_all(
    methods: list[Method], y: np.ndarray, groups: np.ndarray, folds: np.ndarray, seeds: list[int], rule: str,
    progress: Any, n_jobs: int = 1,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, str]]:
    """Out-of-fold probabilities ``[R, N]`` of every method, what the detector learned in each repeat and fold,
    and the baselines that failed to fit (name -> reason; a failing detector is an error, a baseline is reported).

    ``n_jobs > 1``: the (repeat, fold) training parts are fitted in that many worker processes (joblib's loky
    backend, one BLAS thread each; ``-1``: one per CPU), merged in order: the same numbers as one process. Each
    part is two jobs, its probes and the rest, and every part's probes go first: the longest jobs start first
    and the last ones are short, so fewer workers wait at the end (longest-first scheduling; each method's parts
    still merge in part order)."""
    n_rep, n_folds = folds.shape[0], int(folds.max()) + 1
    parts = [(r, k) for r in range(n_rep) for k in range(n_folds)]
    oof = {m.name: np.empty(folds.shape) for m in methods}
    det: dict[str, Any] = {"threshold": [[] for _ in range(n_rep)], "entropy_sign": [[] for _ in range(n_rep)],
                           "churn_sign": [[] for _ in range(n_rep)],
                           "out_of_fold_calibration": [[] for _ in range(n_rep)], "components": {}}
    failed: dict[str, str] = {}
    extras = {m.name: m.extra for m in methods}
    total = len(parts) * len(methods)
    with _progress(progress, total) as report_progress, contextlib.ExitStack() as stack:
        if n_jobs == 1:
            fits: Iterator[_FoldFit] = (
                _fit_fold(methods, y, groups, folds, r, k, seeds[r], rule, skip=failed,
                          on_method=lambda i, what, base=(r * n_folds + k) * len(methods): report_progress(
                              base + i, total, what))
                for r, k in parts)
        else:
            from joblib import Parallel, delayed, parallel_config

            stack.enter_context(parallel_config(backend="loky", inner_max_num_threads=1))
            jobs = [(r, k, subset) for subset in _longest_first(methods) for r, k in parts]
            fits = Parallel(n_jobs=n_jobs, return_as="generator")(
                delayed(_fit_fold)(subset, y, groups, folds, r, k, seeds[r], rule) for r, k, subset in jobs)
        done = 0
        for fit in fits:
            _merge(fit, folds, oof, det, failed, extras)
            if n_jobs != 1:  # one process reports after each method (on_method)
                done += len(fit.methods)
                report_progress(done, total, f"repeat {fit.r + 1}/{n_rep}, fold {fit.k + 1}/{n_folds}")
    return oof, det, failed


_LONG_METHODS = ("probe", "sparse_probe")
"""The methods whose fit is most of a training part's time (their inner selection over every layer)."""


def _longest_first(methods: list[Method]) -> list[list[Method]]:
    """The methods in two jobs per training part: the probes (:data:`_LONG_METHODS`) and the rest; a list
    without probes stays one job."""
    probes = [m for m in methods if m.name in _LONG_METHODS]
    rest = [m for m in methods if m.name not in _LONG_METHODS]
    return [subset for subset in (probes, rest) if subset]


def _fit_fold(
    methods: list[Method], y: np.ndarray, groups: np.ndarray, folds: np.ndarray, r: int, k: int, seed: int,
    rule: str, skip: Mapping[str, str] | None = None, on_method: Callable[[int, str], None] | None = None,
) -> _FoldFit:
    """Fit every method (but those in ``skip``) on training part ``(r, k)`` and score its test part."""
    train, test = folds[r] != k, folds[r] == k
    out = _FoldFit(r, k, {}, None, {}, {}, [m.name for m in methods])
    for i, m in enumerate(methods):
        if skip is None or m.name not in skip:
            _fit_one(m, y, groups, train, test, r, k, seed, rule, out)
        if on_method is not None:
            on_method(i + 1, f"repeat {r + 1}, fold {k + 1}: {m.name}")
    return out


def _fit_one(
    m: Method, y: np.ndarray, groups: np.ndarray, train: np.ndarray, test: np.ndarray, r: int, k: int, seed: int,
    rule: str, out: _FoldFit,
) -> None:
    """Fit one method on one training part and score its test part (fills ``out``)."""
    ym = y if m.labels is None else (m.labels[r] if m.labels.ndim == 2 else m.labels)
    est = m.make()
    if "random_state" in est.get_params(deep=False):
        est.set_params(random_state=seed)  # the repeat's seed: inner folds differ between repeats too
    try:
        est.fit(m.X[train], ym[train], **({"groups": groups[train]} if m.pass_groups else {}))
        out.proba[m.name] = est.predict_proba(m.X[test])[:, 1]
    except ValueError as exc:
        if m.kind == "detector":
            raise
        out.failed[m.name] = f"failed to fit in repeat {r}, fold {k}: {str(exc).splitlines()[0]}"
        return
    if hasattr(est, "candidate_") and hasattr(est, "C_"):
        out.choices[m.name] = (str(est.candidate_), float(est.C_))
    if m.name == "detector":
        out.detector = {
            "threshold": choose_threshold(est.oof_proba_, ym[train], rule),  # type: ignore[arg-type]
            "entropy_sign": int(est.entropy_sign_), "churn_sign": int(est.churn_sign_),
            "out_of_fold_calibration": bool(est.calibrated_out_of_fold_),
            "components": est.component_scores(m.X[test]),
        }


def _merge(fit: _FoldFit, folds: np.ndarray, oof: dict[str, np.ndarray], det: dict[str, Any],
           failed: dict[str, str], extras: Mapping[str, dict[str, Any] | None]) -> None:
    """Fold one training part's fits into the run's out-of-fold scores, detector facts, probe logs and failures
    (a method that failed in an earlier part stays failed)."""
    test = folds[fit.r] == fit.k
    for name, why in fit.failed.items():
        if name not in failed:
            failed[name] = why
            logger.warning("method %s %s", name, why)
    for name, proba in fit.proba.items():
        if name not in failed:
            oof[name][fit.r, test] = proba
    for name, (candidate, c) in fit.choices.items():
        if name not in failed and extras.get(name) is not None:
            record_choice(extras[name], candidate, c)  # type: ignore[arg-type]
    if fit.detector is not None:
        for key in ("threshold", "entropy_sign", "churn_sign", "out_of_fold_calibration"):
            det[key][fit.r].append(fit.detector[key])
        for part, values in fit.detector["components"].items():
            det["components"].setdefault(part, np.empty(folds.shape))[fit.r, test] = values


def _as_groups(
    feature_groups: Mapping[str, Any] | None, track_features: np.ndarray | None,
    feature_names: Sequence[str] | None, n: int,
) -> dict[str, _Group]:
    """Feature groups checked for shape and finiteness; a bare track-metric matrix becomes the ``tracks`` group."""
    raw: dict[str, Any] = dict(feature_groups or {})
    if track_features is not None and "tracks" not in raw:
        if feature_names is None:
            raise DatasetError("track features were given without their feature names")
        raw["tracks"] = _Group("tracks", track_features, list(feature_names), "track metrics")
    if not raw:
        raise DatasetError("no features for the detector: give feature_groups or track_features")
    out: dict[str, _Group] = {}
    for name, grp in raw.items():
        names = list(grp.names)
        X = check_finite(f"feature group {name!r}", grp.values, names)
        if X.shape != (n, len(names)):
            raise DatasetError(f"feature group {name!r} has shape {X.shape}, expected ({n}, {len(names)})")
        out[name] = _Group(name, X, names, str(grp.description))
    return out


def _concat(groups: Mapping[str, _Group], names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """The columns of ``names`` side by side, named ``group.column``."""
    X = np.concatenate([groups[g].values for g in names], axis=1)
    return X, [f"{g}.{c}" for g in names for c in groups[g].names]


def _kind_array(kinds: Sequence[Any] | None, n: int) -> np.ndarray | None:
    if kinds is None:
        return None
    k = [None if v is None else str(v) for v in kinds]
    if len(k) != n:
        raise DatasetError(f"expected {n} kinds, got {len(k)}")
    return None if all(v is None for v in k) else np.asarray(k, dtype=object)


def evaluate(
    *,
    labels: Sequence[int] | np.ndarray,
    groups: Sequence[Any] | np.ndarray,
    ids: Sequence[Any],
    baseline_inputs: BaselineInputs,
    cfg_detector: DetectorConfig,
    cfg_eval: EvalConfig,
    track_features: np.ndarray | None = None,
    feature_names: Sequence[str] | None = None,
    feature_groups: Mapping[str, Any] | None = None,
    random_decoder_features: np.ndarray | Mapping[str, Any] | None = None,
    random_decoder_description: str | None = None,
    kinds: Sequence[Any] | None = None,
    progress: Any = None,
    n_jobs: int = 1,
) -> EvaluationResult:
    """Evaluate the detector against its baselines and controls on shared grouped folds (module docstring).

    ``feature_groups``: name -> a :class:`~ghost_lens.detect.features.FeatureGroup` (``values [N, F]``, ``names``,
    ``description``); every group given enters the ablation, the ones in ``cfg_detector.features`` the detector.
    ``track_features`` / ``feature_names``: a bare matrix of track metrics, taken as the ``tracks`` group.
    ``random_decoder_features``: the detector's columns (or groups) computed on random decoder directions;
    ``random_decoder_description`` says how (the report's text for that control).
    ``kinds``: one kind per example (``meta["kind"]``; ``None`` where unknown) for the per-kind breakdown.
    ``progress``: a :data:`ProgressFn`, a ``rich.progress.Progress`` (an "evaluate" task is added), ``True`` (a
    transient bar) or ``None`` / ``False``.
    ``n_jobs``: worker processes fitting the (repeat, fold) training parts in parallel (joblib; ``-1``: one per
    CPU). The same numbers whatever its value.
    """
    y = check_labels(labels)
    n = y.size
    g = group_codes(groups, n)
    id_list = _id_list(ids, n)
    grps = _as_groups(feature_groups, track_features, feature_names, n)
    kind = _kind_array(kinds, n)
    selected, warnings = _select_groups(cfg_detector.features, grps)
    X, names = _concat(grps, selected)
    seeds, folds, notes = _repeat_folds(y, g, cfg_eval)
    requested = list(cfg_eval.baselines)
    detector_on = _detector_on(cfg_detector, cfg_eval.seed)
    detector_on(names)()  # a half-present tracks group (entropy without churn) fails here, before any fitting
    methods = [Method("detector", "detector", f"the detector on {' + '.join(selected)}", X, detector_on(names),
                      True)]
    settings, own = ablation_settings(list(grps), selected)
    methods += _ablation_methods(grps, settings, own, detector_on)
    competitors, skipped = _competitors(baseline_inputs, kind, requested, X, selected, n, cfg_eval.probe_c)
    methods += competitors
    if "random_decoder" in requested:
        _add_random_decoder(methods, skipped, random_decoder_features, selected, X, names, detector_on,
                            random_decoder_description)
    if "shuffled" in requested:
        methods.append(Method("shuffled", "control", "the detector fitted and scored on labels permuted within "
                              "each fold", X, detector_on(names), True,
                              labels=_shuffled_labels(y, folds, cfg_eval.seed)))
    for name, reason in skipped.items():
        logger.info("method %s skipped: %s", name, reason)

    # one BLAS thread: every fit and bootstrap here is small (a few hundred rows), where BLAS threads cost more in
    # start-up and contention than they save (a 330 x 576 SVD: 0.19 s on one thread, 5 s on two on a busy 2-core
    # machine; the world-facts evaluation: half the CPU time)
    with threadpool_limits(limits=1, user_api="blas"):
        oof, det_fit, failed = _fit_all(methods, y, g, folds, seeds, cfg_eval.threshold_rule, progress, n_jobs)
        skipped.update({m.name: failed[m.name] for m in methods if m.name in failed})  # in method order
        methods = [m for m in methods if m.name not in failed]
        ctx = _Context(y, g, folds, kind, cfg_detector, cfg_eval, selected, grps, names, settings, own)
        return _assemble(ctx, methods, oof, det_fit, id_list, notes + warnings, skipped, X)


def _id_list(ids: Sequence[Any], n: int) -> list[str]:
    """The example ids as strings, one per example."""
    id_list = [str(i) for i in ids]
    if len(id_list) != n:
        raise DatasetError(f"expected {n} ids, got {len(id_list)}")
    return id_list


def _detector_on(cfg_detector: DetectorConfig, seed: int) -> Callable[[list[str]], Callable[[], HallucinationDetector]]:
    """``detector_on(columns)``: the factory of fresh detectors on those columns that a :class:`Method` fits."""

    def detector_on(cols: list[str]) -> Callable[[], HallucinationDetector]:
        return lambda: HallucinationDetector.from_config(cfg_detector, cols, random_state=seed)

    return detector_on


def _select_groups(wanted: Sequence[str], grps: Mapping[str, _Group]) -> tuple[list[str], list[str]]:
    """The detector's feature groups among those given (in its configured order) and a warning for the missing."""
    selected = [name for name in wanted if name in grps]
    if not selected:
        raise DatasetError(f"none of the detector's feature groups {wanted} was given "
                           f"(given: {', '.join(grps)})")
    warnings = []
    if len(selected) < len(wanted):
        missing = [name for name in wanted if name not in grps]
        warnings.append(f"feature group(s) {', '.join(missing)} not available: the detector uses "
                        f"{', '.join(selected)}")
    return selected, warnings


def _repeat_folds(y: np.ndarray, g: np.ndarray, cfg_eval: EvalConfig) -> tuple[list[int], np.ndarray, list[str]]:
    """The repeats' seeds, their folds ``[R, N]`` and the first repeat's notes on the split (step 3)."""
    seeds = [cfg_eval.seed + r for r in range(cfg_eval.n_repeats)]
    fold_rows, notes = [], []
    for s in seeds:
        f, nt = make_folds(y, g, cfg_eval.n_folds, s)
        fold_rows.append(f)
        notes = notes or nt
    return seeds, np.stack(fold_rows), notes


def _competitors(
    inputs: BaselineInputs, kind: np.ndarray | None, requested: list[str], X: np.ndarray, selected: list[str], n: int,
    probe_c: float,
) -> tuple[list[Method], dict[str, str]]:
    """The baselines, the per-layer probes and the stacked scorers, and the methods skipped (name -> reason);
    ``kind`` (the examples' kinds) fills the baseline inputs' when they have none."""
    if inputs.kind is None and kind is not None:
        inputs = dataclasses.replace(inputs, kind=[None if k is None else str(k) for k in kind])
    baselines, skipped, probes = build_baselines(inputs, requested, n, probe_c)
    methods = baselines + probes
    stacked, why = _stacked_method(inputs, X, selected, n)
    if stacked is not None:
        methods.append(stacked)
        onehot, _ = kind_one_hot(inputs.kind, n)
        if onehot is not None and "confidence_kind" in requested:  # "given the kind": vs confidence_kind
            methods.append(Method("stacked_kind", "stacked", stacked.description.replace(
                "the confidence scores", "the confidence scores, the example's kind (one-hot)", 1),
                np.column_stack([stacked.X, onehot]), StackedScorer, True, extra=stacked.extra))
    else:
        skipped["stacked"] = why or "unavailable"
    return methods, skipped


def _shuffled_labels(y: np.ndarray, folds: np.ndarray, seed: int) -> np.ndarray:
    """Labels ``[R, N]`` permuted within each fold of each repeat: every fold keeps its label count, so a fold-level
    prevalence offset (which a pooled AUROC would turn into a below-chance score) cannot masquerade as a leak."""
    rng = np.random.default_rng(seed)
    y_perm = np.tile(y, (folds.shape[0], 1))
    for r in range(folds.shape[0]):
        for k in range(int(folds[r].max()) + 1):
            y_perm[r, folds[r] == k] = rng.permutation(y[folds[r] == k])
    return y_perm


def ablation_settings(groups: Sequence[str], selected: Sequence[str]) -> tuple[dict[str, list[str]], str]:
    """``(label -> groups, label of the detector's own setting)``: each group alone, then ``all`` together (when
    there are several); the detector's setting is added under ``a+b`` when it is neither."""
    settings = {name: [name] for name in groups}
    if len(groups) > 1:
        settings["all"] = list(groups)
    own = next((label for label, gs in settings.items() if set(gs) == set(selected)), "+".join(selected))
    settings.setdefault(own, list(selected))
    return settings, own


def _ablation_methods(
    grps: Mapping[str, _Group], settings: dict[str, list[str]], own: str,
    detector_on: Callable[[list[str]], Callable[[], Any]],
) -> list[Method]:
    """The detector on every ablation setting but its own (which is the detector itself, not refitted)."""
    out = []
    for label, setting in settings.items():
        if label == own:
            continue
        Xs, cols = _concat(grps, setting)
        out.append(Method(f"ablation:{label}", "ablation", f"the detector on {' + '.join(setting)}",  # type: ignore
                          Xs, detector_on(cols), True, extra={"groups": setting}))
    return out


def _stacked_method(
    inputs: BaselineInputs, X: np.ndarray, selected: list[str], n: int
) -> tuple[Method | None, str | None]:
    cols, used = [], []
    for name, attr in _CONFIDENCE_INPUTS.items():
        v = getattr(inputs, attr, None)
        if v is None:
            continue
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.size == n and np.all(np.isfinite(v)):
            cols.append(v)
            used.append(name)
    if not cols:
        return None, "no confidence scores (log-prob, entropy, max prob) in the baseline inputs"
    Xs = np.column_stack([*cols, X])
    desc = (f"logistic regression on the confidence scores ({', '.join(used)}) + the detector's feature groups "
            f"({' + '.join(selected)}); L2 strength chosen on grouped inner folds")
    return Method("stacked", "stacked", desc, Xs, StackedScorer, True,  # type: ignore[arg-type]
                  extra={"confidence_inputs": used, "feature_groups": selected}), None


def _add_random_decoder(
    methods: list[Method], skipped: dict[str, str], random: Any, selected: list[str], X: np.ndarray,
    names: list[str], detector_on: Callable[[list[str]], Callable[[], Any]], description: str | None,
) -> None:
    if random is None:
        skipped["random_decoder"] = "no features from random-decoder SAEs were given"
        return
    if isinstance(random, Mapping):
        rgroups = _as_groups(random, None, None, X.shape[0])
        missing = [s for s in selected if s not in rgroups]
        if missing:
            raise DatasetError(f"random-decoder features lack the group(s) {missing}")
        Xr, rnames = _concat(rgroups, selected)
        if rnames != names:
            raise DatasetError("random-decoder feature groups have other columns than the detector's")
        desc = (f"the detector on its groups ({' + '.join(selected)}) recomputed with the tracker on random "
                "decoder directions")
    else:
        Xr = check_finite("random-decoder features", random, names)
        desc = "the detector on features from SAEs whose decoder directions are replaced by random ones"
    if Xr.shape != X.shape:
        raise DatasetError(f"random-decoder features have shape {Xr.shape}, expected {X.shape}")
    methods.append(Method("random_decoder", "control", description or desc, Xr, detector_on(names), True))


@dataclasses.dataclass
class _Context:
    y: np.ndarray
    g: np.ndarray
    folds: np.ndarray
    kind: np.ndarray | None
    cfg_detector: DetectorConfig
    cfg_eval: EvalConfig
    selected: list[str]
    groups: dict[str, _Group]
    feature_names: list[str]
    settings: dict[str, list[str]]
    own: str


def _assemble(
    ctx: _Context, methods: list[Method], oof: dict[str, np.ndarray], det_fit: dict[str, Any], ids: list[str],
    notes: list[str], skipped: dict[str, str], X: np.ndarray,
) -> EvaluationResult:
    """The result from the out-of-fold scores (step 6 of the module docstring).

    1. The group-bootstrap resamples and repeat draws, shared by every method (paired differences).
    2. Entries: the detector, the baselines and controls (the probes as one best-layer baseline), the stacked scorer.
    3. Verdicts: "does it add to confidence?", the ablation table, the conclusion; the warnings; the per-kind breakdown.
    4. The metrics dict (dataset, protocol, entries, verdicts) and the per-example arrays.
    """
    y, folds, cfg_eval = ctx.y, ctx.folds, ctx.cfg_eval
    counts, codes = group_bootstrap_counts(ctx.g, cfg_eval.n_bootstrap, cfg_eval.seed)
    boot = verdicts.Bootstrap(counts, codes, cfg_eval.confidence, repeat_draws(cfg_eval.n_bootstrap, folds.shape[0],
                                                                             cfg_eval.seed))
    common = {"n_bins": cfg_eval.n_bins, "collapse_width": cfg_eval.collapse_width}
    det_scores = oof["detector"]
    detector = _detector_entry(ctx, methods[0].description, det_fit, det_scores, boot, common)
    by_name = {m.name: m for m in methods}
    baselines, baseline_scores = _baseline_entries(methods[1:], oof, y, folds, boot, det_scores, common)
    stacked = _stacked_entry(by_name.get("stacked"), oof, y, folds, boot, det_scores, common)
    scores = {"detector": det_scores, **({"stacked": oof["stacked"]} if stacked else {}), **baseline_scores}
    conf = verdicts.adds_to_confidence(scores, y, boot, [b for b in CONFIDENCE_BASELINES if b in baselines])
    if conf.get("available") and "stacked_kind" in by_name and "confidence_kind" in baselines:
        conf["given_kind"] = verdicts.adds_given_kind(oof["stacked_kind"], scores["confidence_kind"], y, boot)
    ablation = verdicts.ablation_table(
        ctx.settings, ctx.own, {m.name.removeprefix("ablation:"): oof[m.name] for m in methods if m.kind ==
                                "ablation"}, det_scores, y, boot, {n: ctx.groups[n].description for n in ctx.groups},
    )
    concl = verdicts.conclusion(detector, baselines)
    warnings = _warnings(notes, detector, baselines, cfg_eval.collapse_width)
    for w in warnings:
        logger.warning(w)
    by_kind = None
    if ctx.kind is not None:
        shown = ["detector", *(["stacked"] if stacked else []),
                 *dict.fromkeys(b for b in (concl["best_baseline"], conf.get("best_confidence_baseline")) if b)]
        by_kind = verdicts.kind_breakdown(ctx.kind, {k: scores[k] for k in shown}, y, ctx.g, boot)
    metrics = {
        "schema_version": verdicts.SCHEMA_VERSION, **_dataset_and_protocol(y, ctx.g, folds, cfg_eval),
        "detector": detector, "stacked": stacked, "adds_to_confidence": conf, "ablation": ablation,
        "by_kind": by_kind, "baselines": baselines, "skipped": skipped, "conclusion": concl,
        "headline": conf.get("statement"), "warnings": warnings,
    }
    logger.info(concl["statement"])
    if conf.get("statement"):
        logger.info(conf["statement"])
    extra: dict[str, np.ndarray] = {}
    if "shuffled" in scores:
        extra["shuffled_label"] = by_name["shuffled"].labels[0]  # type: ignore[index]
    if ctx.kind is not None:
        extra["kind"] = np.asarray(["" if k is None else k for k in ctx.kind], dtype=object)
    return EvaluationResult(metrics, ids, [str(x) for x in ctx.g], folds[0], y, {k: v[0] for k, v in scores.items()},
                            extra, repeat_scores=scores, repeat_folds=folds,
                            detector_inputs=(X, ctx.feature_names, ctx.selected))


def _detector_entry(
    ctx: _Context, description: str, det_fit: dict[str, Any], det_scores: np.ndarray, boot: verdicts.Bootstrap,
    common: dict[str, Any],
) -> dict[str, Any]:
    """The detector's entry: its metrics, then its configuration and what it learned per fold and repeat."""
    y, folds, cfg_eval = ctx.y, ctx.folds, ctx.cfg_eval
    detector = verdicts.method_entry(det_scores, y, folds, boot, kind="detector", description=description, **common)
    thresholds = np.asarray(det_fit["threshold"][0])
    detector.update({
        "config": dataclasses.asdict(ctx.cfg_detector),
        "feature_groups": {name: {"n_features": len(ctx.groups[name].names), "description":
                                  ctx.groups[name].description} for name in ctx.selected},
        "feature_names": ctx.feature_names,
        "threshold": {"rule": cfg_eval.threshold_rule, "per_fold": thresholds.tolist(),
                      "per_repeat": det_fit["threshold"]},
        "at_threshold": threshold_metrics(det_scores[0] >= thresholds[folds[0]], y),
        "orientation": {"mode": ctx.cfg_detector.orientation, "entropy_sign_per_fold": det_fit["entropy_sign"][0],
                        "churn_sign_per_fold": det_fit["churn_sign"][0],
                        "entropy_sign_per_repeat": det_fit["entropy_sign"],
                        "churn_sign_per_repeat": det_fit["churn_sign"]},
        "calibrated_out_of_fold_per_fold": det_fit["out_of_fold_calibration"][0],
        "components": {k: boot.auroc(v, y).as_dict() for k, v in det_fit["components"].items()},
        "reliability": reliability_bins(det_scores[0], y, cfg_eval.n_bins),
    })
    return detector


def _baseline_entries(
    others: list[Method], oof: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray, boot: verdicts.Bootstrap,
    det_scores: np.ndarray, common: dict[str, Any],
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """The entries of the baselines and controls (competitors first, then the controls: the order of the report, the
    CSV columns and the summary table) and their scores ``[R, N]`` in that order; the per-layer probes become one
    ``probe`` baseline, the best layer's."""
    baselines: dict[str, dict[str, Any]] = {}
    scores: dict[str, np.ndarray] = {}
    probe_auc: dict[str, float] = {}
    probe_extra: dict[str, Any] = {}
    for m in others:
        if m.kind in ("ablation", "stacked"):
            continue
        if m.name.startswith("probe_L"):
            probe_auc[m.name] = boot.auroc(oof[m.name], y, point_only=True).value
            probe_extra[m.name] = m.extra
            continue
        if m.name == "shuffled":
            entry = verdicts.method_entry(oof[m.name], m.labels, folds, boot, kind=m.kind,  # type: ignore[arg-type]
                                        description=m.description, **common)
            entry["verdict"] = verdicts.chance_verdict(entry)
        else:
            entry = verdicts.method_entry(oof[m.name], y, folds, boot, kind=m.kind, description=m.description,
                                        detector_scores=det_scores, **common)
        entry.update(m.extra or {})
        baselines[m.name] = entry
        scores[m.name] = oof[m.name]
    if probe_auc:
        best = max(probe_auc, key=lambda k: probe_auc[k])
        entry = verdicts.method_entry(oof[best], y, folds, boot, kind="baseline", detector_scores=det_scores,
                                    description="logistic-regression probe on the raw residual stream; best layer "
                                    "chosen on the evaluation folds (optimistic for the baseline)", **common)
        entry["layer"] = (probe_extra[best] or {})["layer"]
        entry["per_layer_auroc"] = {k.removeprefix("probe_L"): v for k, v in probe_auc.items()}
        baselines["probe"] = entry
        scores["probe"] = oof[best]
    baselines = dict(sorted(baselines.items(), key=lambda kv: kv[1]["kind"] == "control"))
    return baselines, {k: scores[k] for k in baselines}


def _stacked_entry(
    m: Method | None, oof: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray, boot: verdicts.Bootstrap,
    det_scores: np.ndarray, common: dict[str, Any],
) -> dict[str, Any] | None:
    """The stacked scorer's entry (``None`` when it was skipped or failed to fit)."""
    if m is None:
        return None
    stacked = verdicts.method_entry(oof["stacked"], y, folds, boot, kind="stacked", description=m.description,
                                    detector_scores=det_scores, **common)
    stacked.update(m.extra or {})
    return stacked


def _warnings(
    notes: list[str], detector: dict[str, Any], baselines: dict[str, dict[str, Any]], collapse_width: float
) -> list[str]:
    """The report's warnings: the protocol's notes, a collapsed probability range, a shuffled control off chance."""
    warnings = list(notes)
    rng = detector["probability_range"]
    if rng["collapsed"]:
        warnings.append(f"probability collapse: 90% of the detector's probabilities lie in [{rng['p05']:.3f}, "
                        f"{rng['p95']:.3f}] (width {rng['central_width']:.3f} < {collapse_width}; "
                        f"full range [{rng['min']:.3f}, {rng['max']:.3f}])")
    if "shuffled" in baselines and baselines["shuffled"]["verdict"] != verdicts.NEAR_CHANCE:
        warnings.append("shuffled-label control away from chance: suspect a leak in the protocol")
    return warnings


def _dataset_and_protocol(y: np.ndarray, g: np.ndarray, folds: np.ndarray, cfg_eval: EvalConfig) -> dict[str, Any]:
    """The ``dataset`` and ``protocol`` sections of the metrics."""
    fold_sizes = np.bincount(folds[0]).tolist()
    return {
        "dataset": {"n_examples": int(y.size), "n_groups": int(np.unique(g).size), "n_positive": int(y.sum()),
                    "positive_rate": float(y.mean())},
        "protocol": {
            "splitter": "StratifiedGroupKFold", "n_folds": len(fold_sizes), "n_folds_requested": cfg_eval.n_folds,
            "n_repeats": int(folds.shape[0]), "fold_seeds": [cfg_eval.seed + r for r in range(folds.shape[0])],
            "fold_sizes": fold_sizes, "fold_positive_rates": [float(y[folds[0] == k].mean()) for k in
                                                              range(len(fold_sizes))],
            "seed": cfg_eval.seed, "threshold_rule": cfg_eval.threshold_rule, "n_bins": cfg_eval.n_bins,
            "collapse_width": cfg_eval.collapse_width,
            "bootstrap": {"unit": "group", "n_resamples": cfg_eval.n_bootstrap, "confidence": cfg_eval.confidence,
                          "interval": "percentile", "paired": True,
                          "repeats": "each resample is scored on one repeat drawn uniformly at random"},
        },
    }
