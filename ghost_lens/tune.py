"""``ghost-lens tune``: tracker (and detector) settings compared on a run's saved capture; the model never reruns.

1. Read the run folder: ``config.yaml``, the capture (:class:`~ghost_lens.capture.trace.FeatureTrace`) and the best
   baseline named in ``detection_metrics.json`` (when the run got that far).
2. The grid: the seed research's four settings (:data:`SEED_GRID`) or a YAML file, a list of ``--set``-style
   override dicts on ``tracker.*`` / ``detector.*`` (an optional ``name`` each), e.g.::

       - name: high_recall
         tracker.top_k_features: 100
         tracker.association_threshold: 0.4
       - detector: {entropy_weight: 0.6, churn_weight: 0.2, ml_weight: 0.2}

   Each point is applied to the run's config and validated strictly (an unknown key or a bad value is one
   :class:`~ghost_lens.errors.ConfigError` naming the point and the key).
3. Per point: :func:`~ghost_lens.tracking.track_trace` (no graphs), then :func:`~ghost_lens.detect.evaluate` on the
   run's folds with the run's eval config (``n_bootstrap`` may be lowered), the best baseline beside the detector,
   so the verdict is the run's paired group bootstrap of ``AUROC(detector) - AUROC(baseline)``.
4. Optionally ``optuna_trials`` Optuna TPE trials (``pip install ghost-lens[tune]``) over ``top_k_features``,
   ``association_threshold`` and the three association weights, maximising the detector's out-of-fold AUROC.
   With ``storage`` (an Optuna RDB URL: ``sqlite:///study.db`` on one host, ``postgresql://user:pw@host/db`` for
   many) several workers share one study: start the same command in as many processes or hosts as you like; each
   runs its ``optuna_trials`` trials, the sampler sees every worker's finished trials, and each worker's results
   list every finished trial of the study (their summaries live in the trials' user attributes). The grid then
   defaults to the run's own config only (the reference), so workers do not repeat the seed grid. Trial order
   across workers depends on timing: a shared study is not bit-reproducible, a single worker is.
5. Every point against the run's own config (a paired group bootstrap of the AUROC difference on the same
   resamples; the run's config is evaluated as point ``run`` when no grid point equals it).
6. Points sorted by AUROC -> ``tune_results.json`` (:data:`~ghost_lens.constants.TUNE_RESULTS`); the run's own files
   are never touched. Picking the best point on the folds that scored it is optimistic: the file says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ghost_lens import constants as C
from ghost_lens.config import RunConfig
from ghost_lens.config_io import flatten, from_dict, to_dict
from ghost_lens.errors import ConfigError, GhostLensError, RunFolderError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SECTIONS = ("tracker", "detector")
CONTROLS = ("random_decoder", "shuffled")
CAVEAT = (
    "Every point is scored on the run's own grouped folds and the best one is picked on those same scores, so the "
    "best AUROC is optimistic (selection on the evaluation folds). Confirm a chosen setting on data it was not "
    "picked on before reporting it."
)
RUN_FILES = (C.CONFIG, C.MANIFEST, C.REPORT, C.TRACK_METRICS, C.TRACKING_SUMMARY, C.DETECTION_METRICS,
             C.PREDICTIONS, C.ROC_PLOT, C.RELIABILITY_PLOT, C.TRACK_PLOT, C.DETECTOR_ARRAYS, C.DETECTOR_META)


@dataclass
class GridPoint:
    """One setting: a name and dotted overrides (``{"tracker.top_k_features": 100}``) on the run's config."""

    name: str
    overrides: dict[str, Any]
    source: str = "grid"


SEED_GRID = (
    GridPoint("baseline", {"tracker.top_k_features": 50, "tracker.association_threshold": 0.5}),
    GridPoint("high_recall", {"tracker.top_k_features": 100, "tracker.association_threshold": 0.4}),
    GridPoint("high_precision", {"tracker.top_k_features": 30, "tracker.association_threshold": 0.6}),
    GridPoint("semantic_lean", {"tracker.semantic_weight": 0.8, "tracker.activation_weight": 0.1,
                                "tracker.position_weight": 0.1}),
)
"""The seed research's settings (GPT-2 small): baseline, high recall, high precision, semantic lean."""


# ---- grid ----------------------------------------------------------------------------------------------------------


def apply_point(cfg: RunConfig, point: GridPoint) -> RunConfig:
    """``cfg`` with the point's overrides, validated strictly (ConfigError naming the point and the key)."""
    data = to_dict(cfg)
    for key, value in point.overrides.items():
        section, _, name = str(key).partition(".")
        if section not in SECTIONS or not name:
            raise ConfigError(f"grid point {point.name!r}: {key!r} is not a tracker.* or detector.* key "
                              "(tune reuses the run's capture and evaluation protocol)")
        if name not in data[section]:
            valid = ", ".join(sorted(data[section]))
            raise ConfigError(f"grid point {point.name!r}: unknown config key {key!r} (valid keys here: {valid})")
        data[section][name] = value
    try:
        return from_dict(RunConfig, data, strict=True)
    except ConfigError as exc:
        raise ConfigError(f"grid point {point.name!r}: {exc}") from None


def parse_grid(raw: Any, source: str = "grid") -> list[GridPoint]:
    """Grid points from parsed YAML: a list of override dicts (optional ``name``), or a mapping name -> dict."""
    if isinstance(raw, dict):  # name -> overrides
        bad = [str(k) for k, v in raw.items() if not isinstance(v, dict)]
        if bad:
            raise ConfigError(f"{source}: point {bad[0]!r} is not a mapping of config keys")
        raw = [{**v, "name": str(k)} for k, v in raw.items()]
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{source}: expected a non-empty list of override mappings (tracker.* / detector.* keys)")
    points: list[GridPoint] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: point {i + 1} is not a mapping of config keys (got {item!r})")
        item = dict(item)
        name = str(item.pop("name", f"point_{i + 1}"))
        if name in seen:
            raise ConfigError(f"{source}: two grid points are named {name!r}")
        seen.add(name)
        points.append(GridPoint(name, flatten(item, sections=SECTIONS)))
    return points


def load_grid(path: str | Path) -> list[GridPoint]:
    """Grid points from a YAML file (see the module docstring)."""
    from ghost_lens.config_io import read_yaml

    return parse_grid(read_yaml(path, "grid"), str(path))


# ---- results -------------------------------------------------------------------------------------------------------


@dataclass
class PointResult:
    """One evaluated point: AUROC / AUPRC with intervals and the verdict against the best baseline."""

    name: str
    source: str
    overrides: dict[str, Any]
    config: dict[str, Any]
    auroc: dict[str, Any]
    auprc: dict[str, Any]
    baseline: str | None
    baseline_auroc: dict[str, Any] | None
    auroc_diff_vs_baseline: dict[str, Any] | None
    verdict: str
    avg_track_length: float
    same_as_run: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)
    auroc_diff_vs_run: dict[str, Any] | None = None
    """Paired group bootstrap of ``AUROC(point) - AUROC(the run's own config)`` on the same resamples."""
    verdict_vs_run: str | None = None


@dataclass
class TuneResult:
    run: Path
    points: list[PointResult]
    """Sorted by detector AUROC, best first."""
    n_bootstrap: int
    protocol: dict[str, Any]
    run_detector_auroc: dict[str, Any] | None

    @property
    def best(self) -> PointResult:
        return self.points[0]

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "run": str(self.run),
            "caveat": CAVEAT,
            "selection": "points sorted by the detector's out-of-fold AUROC on the run's folds",
            "protocol": self.protocol,
            "run_detector_auroc": self.run_detector_auroc,
            "best": self.best.name,
            "points": [dataclasses.asdict(p) for p in self.points],
        }

    def save(self, path: str | Path) -> Path:
        from ghost_lens.detect.verdicts import clean_json

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        from ghost_lens.io import atomic_write_text

        atomic_write_text(path, json.dumps(clean_json(self.as_dict()), indent=1, allow_nan=False))
        logger.info("tune results written to %s", path)
        return path


def results_path(run_dir: str | Path, out: str | Path | None = None, *, force: bool = False) -> Path:
    """Where the results go (``run/tune_results.json`` by default); refuses an existing file without ``force``
    and, even with it, any file the run itself wrote."""
    run_dir = Path(run_dir)
    path = Path(out) if out is not None else run_dir / C.TUNE_RESULTS
    if path.name in RUN_FILES and path.resolve().parent == run_dir.resolve():
        raise RunFolderError(f"{path} is one of the run's own files: tune never overwrites them; choose another --out")
    if path.exists() and not force:
        raise RunFolderError(f"{path} exists: pass --force to overwrite it, or --out to write elsewhere")
    return path


# ---- evaluation of points ------------------------------------------------------------------------------------------


class _Context:
    """What every point shares: the run's config, capture, competitor baselines and eval config."""

    def __init__(self, run_dir: Path, n_bootstrap: int | None) -> None:
        from ghost_lens.capture.trace import FeatureTrace
        from ghost_lens.run_folder import read_run_config

        self.run_dir = run_dir
        self.cfg = read_run_config(run_dir)
        self.trace = FeatureTrace.load(run_dir / C.CAPTURE_DIR)
        metrics_path = run_dir / C.DETECTION_METRICS
        run_metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        best = (run_metrics.get("conclusion") or {}).get("best_baseline")
        competitors = [b for b in self.cfg.eval.baselines if b not in CONTROLS]
        # the run's best baseline alone when known (cheap); else every competitor, and the best per point
        self.baselines = [best] if best in competitors else competitors
        self.run_detector_auroc = (run_metrics.get("detector") or {}).get("auroc")
        self.scores: dict[str, Any] = {}
        n_boot = self.cfg.eval.n_bootstrap if n_bootstrap is None else n_bootstrap
        try:
            self.eval = dataclasses.replace(self.cfg.eval, baselines=self.baselines, n_bootstrap=n_boot)
        except ConfigError as exc:
            raise ConfigError(f"--n-bootstrap: {exc}") from None

    def compare_to_run(self, results: list[PointResult]) -> None:
        """Each point against the run's own config (evaluated as point ``run`` when no point equals it)."""
        from ghost_lens.detect.folds import group_codes
        from ghost_lens.detect.metrics import group_bootstrap_counts
        from ghost_lens.detect.verdicts import Bootstrap

        ref = next(r for r in results if r.same_as_run)
        y = (np.asarray(self.trace.labels) == 1).astype(np.int64)
        counts, codes = group_bootstrap_counts(group_codes(self.trace.groups, y.size), self.eval.n_bootstrap,
                                               self.eval.seed)
        boot = Bootstrap(counts, codes, self.eval.confidence)
        for r in results:
            if r.same_as_run or r.name not in self.scores:
                continue
            d = boot.auroc(self.scores[r.name], y, diff_with=self.scores[ref.name])
            r.auroc_diff_vs_run = d.as_dict()
            r.verdict_vs_run = "above run" if d.ci_low > 0 else "below run" if d.ci_high < 0 else "not separable"

    def protocol(self) -> dict[str, Any]:
        e = self.eval
        return {"n_folds": e.n_folds, "seed": e.seed, "n_bootstrap": e.n_bootstrap, "confidence": e.confidence,
                "threshold_rule": e.threshold_rule, "baselines": self.baselines,
                "n_examples": self.trace.n_examples, "splitter": "StratifiedGroupKFold (the run's folds)"}

    def evaluate(self, point: GridPoint) -> PointResult:
        from ghost_lens.pipeline import evaluate, track

        t0 = time.perf_counter()
        cfg = dataclasses.replace(apply_point(self.cfg, point), eval=self.eval)
        tracking = track(self.trace, cfg.tracker, keep_graphs=False)
        ev = evaluate(self.trace, tracking, cfg)
        self.scores[point.name] = ev.scores["detector"]
        m = ev.metrics
        best = m["conclusion"]["best_baseline"]
        entry = m["baselines"].get(best) if best else None
        n_tracks = tracking.column("n_tracks")
        total = float(n_tracks.sum())
        avg_len = float((tracking.column("mean_track_length") * n_tracks).sum() / total) if total else 0.0
        return PointResult(
            name=point.name, source=point.source, overrides=dict(point.overrides),
            config={"tracker": to_dict(cfg.tracker), "detector": to_dict(cfg.detector)},
            auroc=m["detector"]["auroc"], auprc=m["detector"]["auprc"], baseline=best,
            baseline_auroc=entry["auroc"] if entry else None,
            auroc_diff_vs_baseline=entry.get("auroc_diff_vs_detector") if entry else None,
            verdict=entry["verdict"] if entry else "no baseline",
            avg_track_length=avg_len,
            same_as_run=_same_config(cfg, self.cfg),
            seconds=round(time.perf_counter() - t0, 3), warnings=list(m["warnings"]),
        )


def _same_config(a: RunConfig, b: RunConfig) -> bool:
    return a.tracker == b.tracker and a.detector == b.detector


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise GhostLensError("--optuna needs Optuna, which is not installed: pip install 'ghost-lens[tune]'") from None
    return optuna


def _open_study(ctx: _Context, storage: str | None, study_name: str | None) -> Any:
    """A new in-memory study, or the shared one at ``storage`` (created by the first worker, joined by the rest).

    Workers of a shared study get different sampler seeds (the eval seed plus the process id), so their random
    start-up trials differ; a single in-memory study is seeded with the eval seed alone (reproducible)."""
    import os

    optuna = _import_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if storage is None:
        return optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=ctx.eval.seed))
    name = study_name or f"ghost-lens-tune-{ctx.run_dir.resolve().name}"
    sampler = optuna.samplers.TPESampler(seed=ctx.eval.seed + os.getpid())
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            return optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                       load_if_exists=True)
        except Exception as exc:  # bad URL, missing driver, unreachable server: one line
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt + 1 < _OPEN_ATTEMPTS and any(m in first for m in _RACE_MESSAGES):
                # workers started together race to create the storage's schema / the study; the loser retries
                # and finds them made (Optuna's RDB storage has no cross-process lock for its first use)
                time.sleep(0.2 * (attempt + 1))
                continue
            raise ConfigError(f"--storage {storage!r}: cannot open the Optuna study ({first})") from None
    raise AssertionError("unreachable")


_OPEN_ATTEMPTS = 6
_RACE_MESSAGES = ("UNIQUE constraint failed", "database is locked", "already exists", "duplicate key")


def _study_points(ctx: _Context, study: Any, own: list[PointResult]) -> list[PointResult]:
    """Every finished trial of a shared study as a :class:`PointResult`: this worker's own, plus the other
    workers' read back from the trials' ``point`` and ``scores`` user attributes (the out-of-fold scores, so the
    paired comparison with the run's config covers them too)."""
    mine = {r.name for r in own}
    out = list(own)
    for trial in study.get_trials(deepcopy=False):
        data, scores = trial.user_attrs.get("point"), trial.user_attrs.get("scores")
        if trial.state.name != "COMPLETE" or not data or data["name"] in mine:
            continue
        out.append(PointResult(**data))
        if scores is not None and len(scores) == ctx.trace.n_examples:
            ctx.scores[data["name"]] = np.asarray(scores, dtype=np.float64)
    return out


def _optuna_points(ctx: _Context, n_trials: int, step: Any, *, storage: str | None = None,
                   study_name: str | None = None) -> list[PointResult]:
    """``n_trials`` TPE trials maximising the detector's AUROC (in a shared study when ``storage`` is given)."""
    study = _open_study(ctx, storage, study_name)
    results: list[PointResult] = []

    def objective(trial: Any) -> float:
        weights = {w: trial.suggest_float(w, 0.0, 1.0) for w in
                   ("semantic_weight", "activation_weight", "position_weight")}
        if sum(weights.values()) <= 1e-6:
            weights["semantic_weight"] = 1.0
        overrides = {"tracker.top_k_features": trial.suggest_int("top_k_features", 10, 150, log=True),
                     "tracker.association_threshold": round(trial.suggest_float("association_threshold", 0.2, 0.9), 4),
                     **{f"tracker.{k}": round(v, 4) for k, v in weights.items()}}
        res = ctx.evaluate(GridPoint(f"optuna_{trial.number:03d}", overrides, source="optuna"))
        results.append(res)
        if storage is not None:  # what other workers read back (JSON-safe: plain numbers and strings)
            from ghost_lens.detect.verdicts import clean_json

            trial.set_user_attr("point", clean_json(dataclasses.asdict(res)))
            trial.set_user_attr("scores", [float(x) for x in ctx.scores[res.name]])
        step(res.name)
        return float(res.auroc["value"])

    study.optimize(objective, n_trials=n_trials)
    return _study_points(ctx, study, results) if storage is not None else results


def tune(
    run_dir: str | Path,
    grid: list[GridPoint] | None = None,
    *,
    n_bootstrap: int | None = None,
    optuna_trials: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    progress: Any = None,
) -> TuneResult:
    """Evaluate every grid point (default :data:`SEED_GRID`; with ``storage``, only the run's own config), plus
    ``optuna_trials`` TPE trials, on the run's capture and folds (module docstring). ``storage``: an Optuna RDB URL
    shared by several workers; ``study_name``: the study in it (default: from the run folder's name).
    ``progress``: a ``rich.progress.Progress`` to add a "tune" task to."""
    from ghost_lens.run_folder import check_not_being_written

    run_dir = Path(run_dir)
    check_not_being_written(run_dir)
    if optuna_trials < 0:
        raise ConfigError("--optuna must be >= 0")
    if storage is not None and not optuna_trials:
        raise ConfigError("--storage shares an Optuna study: it needs --optuna N (N >= 1)")
    if optuna_trials:
        _import_optuna()  # fail before the grid, not after it
    points = list((SEED_GRID if storage is None else []) if grid is None else grid)
    ctx = _Context(run_dir, n_bootstrap)
    same = [_same_config(apply_point(ctx.cfg, p), ctx.cfg) for p in points]  # every point valid before any work
    if not any(same):  # the reference every point is compared with
        names = {p.name for p in points}
        points.insert(0, GridPoint(next(n for n in ("run", "run_config", "run_reference") if n not in names), {},
                                   source="run"))
    task = progress.add_task("tune", total=len(points) + optuna_trials) if progress is not None else None

    def step(name: str) -> None:
        if progress is not None:
            progress.update(task, advance=1, description=f"tune ({name})")

    results = []
    for p in points:
        results.append(ctx.evaluate(p))
        step(p.name)
    if optuna_trials:
        results += _optuna_points(ctx, optuna_trials, step, storage=storage, study_name=study_name)
    ctx.compare_to_run(results)
    results.sort(key=lambda r: -float(r.auroc["value"]))
    logger.info("best point %s: AUROC %.3f (optimistic: chosen on the evaluation folds)", results[0].name,
                results[0].auroc["value"])
    return TuneResult(run_dir, results, ctx.eval.n_bootstrap, ctx.protocol(), ctx.run_detector_auroc)


def tune_to_file(
    run_dir: str | Path, grid_file: str | Path | None = None, out: str | Path | None = None, *, force: bool = False,
    progress: bool = False, **kwargs: Any,
) -> tuple[TuneResult, Path]:
    """``ghost-lens tune``: :func:`results_path` checked first and the grid read from ``grid_file`` (:func:`load_grid`;
    ``None``: :func:`tune`'s default), nothing computed when either fails; then :func:`tune` (``kwargs``:
    ``n_bootstrap``, ``optuna_trials``, ``storage``, ``study_name``) under a progress bar when ``progress``, and the
    results saved; returns them and their path."""
    from ghost_lens.track_run import make_progress

    path = results_path(run_dir, out, force=force)
    points = load_grid(grid_file) if grid_file else None
    with make_progress(progress) as prog:
        result = tune(run_dir, points, progress=prog if progress else None, **kwargs)
    return result, result.save(path)
