"""``ghost-lens track`` as a library function: every stage into one run folder, with a progress bar per stage.

Run folder layout (names in :mod:`ghost_lens.constants`)::

    runs/NAME/
      config.yaml  manifest.json  report.md          <- read report.md first
      capture/   capture.json (the index, written last)  shards/00000/ ... (docs/capture_format.md)
      graphs/    graphs.jsonl.gz (node-link JSON, one line per example)
      track_metrics.json  tracking_summary.json  tracks_example.png
      detection_metrics.json  predictions.csv  roc.png  reliability.png  detector.safetensors  detector.json

Under ``torchrun --nproc-per-node N`` (``WORLD_SIZE > 1``) the capture is data-parallel
(:mod:`ghost_lens.capture.distributed` gives the steps): rank 0 alone locks and claims the folder and writes
everything but the other ranks' shards; the other ranks capture their shards into ``capture.partial/`` and return
``None`` after the barrier.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ghost_lens import constants as C
from ghost_lens.config import RunConfig
from ghost_lens.run_folder import RunFolder, capture_key, dataset_hash, default_run_dir, open_run_folder

logger = logging.getLogger(__name__)


@dataclass
class TrackRun:
    folder: RunFolder
    trace: Any
    tracking: Any
    evaluation: Any

    @property
    def path(self) -> Path:
        return self.folder.path


def make_progress(enabled: bool = True):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        disable=not enabled, transient=False,
    )


@contextmanager
def _stage(folder: RunFolder, name: str):
    t0 = time.perf_counter()
    yield
    folder.timed(name, time.perf_counter() - t0)


def save_graphs(graphs: list[Any], ids: list[str], folder: Path) -> Path:
    """All graphs as node-link JSON lines (gzip) in ``folder/graphs.jsonl.gz``: one file, not thousands; read back
    with :func:`ghost_lens.tracking.graph_io.load_graphs`."""
    from ghost_lens.tracking.graph_io import write_graphs

    return write_graphs(folder / C.GRAPHS_FILE, zip(ids, graphs, strict=True))


def _progress_callback(prog: Any, description: str):
    """A ``(done, total)`` callback that shows a bar, added on its first call (nothing shown when never called)."""
    task: list[Any] = []

    def update(done: int, total: int) -> None:
        if not task:
            task.append(prog.add_task(description, total=total))
        prog.update(task[0], completed=done, total=total)

    return update


def run_track(cfg: RunConfig, out: str | Path | None = None, *, force: bool = False, progress: bool = True,
              argv: list[str] | None = None, n_jobs: int = 1) -> TrackRun | None:
    """Every stage of ``cfg`` into the run folder ``out`` (``None``: :func:`ghost_lens.run_folder.default_run_dir`
    of the config's model and dataset), holding the folder's lock throughout
    (:func:`ghost_lens.run_folder.open_run_folder` says when a folder may be used and when its capture is reused).

    ``cfg.device`` is resolved first (``auto``; ``cuda`` where torch has none is a one-line error). Under torchrun
    (``WORLD_SIZE > 1``) only rank 0 opens the folder and returns the run; the other ranks capture their shards and
    return ``None`` (:mod:`ghost_lens.capture.distributed`)."""
    from ghost_lens.capture.distributed import DistContext, error_text
    from ghost_lens.model_loader import resolve_device

    out = Path(out) if out else default_run_dir(cfg.model, cfg.dataset)
    ctx = DistContext.from_env()
    device = resolve_device(cfg.device, ctx.local_rank_or_none)
    ctx.init(device)
    try:
        if not ctx.is_main:
            _run_rank(ctx, cfg, out, device)
            return None
        try:
            folder = open_run_folder(out, cfg, force=force, argv=argv)
        except Exception as exc:
            ctx.broadcast({"error": error_text(exc)})  # the other ranks stop with it instead of waiting
            raise
        try:
            return _run_stages(folder, cfg, progress, ctx, device, n_jobs)
        finally:
            folder.release()
    finally:
        ctx.close()


def _load_data(cfg: RunConfig, device: str, prog: Any, folder: RunFolder | None) -> tuple[Any, list[Any], str]:
    """The model when the dataset needs it (world-facts: it answers the questions), the examples (both labels
    required) and their hash."""
    from ghost_lens.data.loaders import dataset_uses_model, load_examples

    stage = (lambda name: _stage(folder, name)) if folder is not None else (lambda name: _no_stage())
    model = None
    if dataset_uses_model(cfg.dataset):
        from ghost_lens.model_loader import load_model

        with stage("load_model"):
            model = load_model(cfg.model, device=device, world_cfg=cfg.world)
    with stage("load_data"):
        dataset_info: dict[str, Any] = {}
        examples = load_examples(cfg.dataset, num_samples=cfg.num_samples, seed=cfg.seed, world_cfg=cfg.world,
                                 model=model, info=dataset_info,
                                 progress=_progress_callback(prog, "answer") if prog is not None else None)
    if dataset_info and folder is not None:
        folder.manifest.update(dataset_info=dataset_info)
    if len({e.label for e in examples}) < 2:  # before the capture: the evaluation would refuse it after
        from ghost_lens.errors import DatasetError

        raise DatasetError(f"dataset {cfg.dataset!r}: all {len(examples)} examples are labelled "
                           f"{examples[0].label}; detection needs both labels (0 = faithful, 1 = hallucinated)")
    return model, examples, dataset_hash(examples)


@contextmanager
def _no_stage():
    yield


def _run_stages(folder: RunFolder, cfg: RunConfig, progress: bool, ctx: Any, device: str, n_jobs: int = 1) -> TrackRun:
    from ghost_lens.capture.distributed import error_text
    from ghost_lens.capture.shards import CaptureShards, prepare_partial
    from ghost_lens.detect.features import build_feature_groups
    from ghost_lens.pipeline import control_tracking, evaluate, load_model_and_bundle, track

    load_cfg = dataclasses.replace(cfg, device=device)  # the saved config keeps what the user typed (``auto``)
    with make_progress(progress) as prog:
        try:
            model, examples, dhash = _load_data(cfg, device, prog, folder)
            source = _reusable_capture(folder, cfg, dhash) if folder.reuse_capture else None
            folder.manifest.update(dataset_hash=dhash, n_examples=len(examples),
                                   n_hallucinated=sum(e.label for e in examples), capture_reused=source is not None)
            if source is None:
                with _stage(folder, "load_model_and_saes"):
                    model, bundle = load_model_and_bundle(load_cfg, progress=progress, model=model)
                    from ghost_lens.model_loader import check_coverage

                    check_coverage(model, [f"{e.prompt} {e.answer}" for e in examples])
                if ctx.parallel:
                    prepare_partial(folder.path / C.CAPTURE_PARTIAL)  # before any rank writes a shard into it
            key = capture_key(cfg)  # after the SAEs were read (a toy world built now is in the key)
        except Exception as exc:
            ctx.broadcast({"error": error_text(exc)})
            raise
        ctx.broadcast({"error": None, "capture": source is None, "dataset_hash": dhash, "capture_key": key})
        if source is None:
            if ctx.parallel:
                mine: Any = None
                try:
                    with _stage(folder, "capture_rank0"):
                        mine = _capture_assigned(ctx, folder.path, cfg, model, bundle, examples, dhash, key, prog)
                except Exception as exc:
                    ctx.gather({"error": error_text(exc)})
                    raise
                statuses = ctx.gather({"error": None, "shards": mine})  # the barrier: every rank's shards written
                _raise_rank_errors(statuses)
                folder.manifest["capture_parallel"] = {"world_size": ctx.world_size,
                                                       "shards_by_rank": [st["shards"] for st in statuses]}
            with _stage(folder, "capture"):  # one process: every shard; data-parallel: the index (shards reused)
                source = _capture_shards(folder, cfg, model, bundle, examples, dhash, prog)
        folder.manifest["capture_key"] = source.meta.get("capture_key")
        # the evaluation's per-example inputs: every shard cut to the tracked window, concatenated
        trace = source.load().tracked_window(cfg.tracker.positions) if isinstance(source, CaptureShards) else source
        with _stage(folder, "tracking"):
            tracking = track(source, cfg.tracker, progress=prog, n_jobs=n_jobs)  # shard by shard
            save_graphs(tracking.graphs, trace.ids, folder.path / C.GRAPHS_DIR)
            _write_track_outputs(folder.path, trace, tracking)
        with _stage(folder, "evaluation"):
            random_tracking = control_tracking(trace, cfg, progress=prog, n_jobs=n_jobs)
            groups = build_feature_groups(trace, tracking, cfg, n_jobs=n_jobs)  # once: evaluation + final detector
            evaluation = evaluate(trace, tracking, cfg, random_tracking=random_tracking, progress=prog,
                                  feature_groups=groups, n_jobs=n_jobs)
            evaluation.save(folder.path)
            _save_final_detector(folder.path, tracking, trace, cfg, groups)
    run = TrackRun(folder, trace, tracking, evaluation)
    from ghost_lens.run_report import write_report

    with _stage(folder, "report"):
        write_report(run)
    folder.finish()
    return run


def _reusable_capture(folder: RunFolder, cfg: RunConfig, dhash: str) -> Any:
    """The run's saved capture (sharded, or an older single file) when it serves this config, else ``None``."""
    from ghost_lens.capture.shards import CaptureShards, is_sharded
    from ghost_lens.capture.trace import FeatureTrace

    source: Any = (CaptureShards.open(folder.capture_dir) if is_sharded(folder.capture_dir)
                   else FeatureTrace.load(folder.capture_dir))
    if source.meta.get("dataset_hash") != dhash:
        logger.warning("the dataset changed since the capture was made: capturing again")
        return None
    if cfg.tracker.positions == "all" and source.meta.get("positions", "all") != "all":
        logger.info("tracker.positions is 'all' but the capture kept only the tracked tokens: capturing again")
        return None
    logger.info("reusing the capture in %s", folder.capture_dir)
    return source


def _run_rank(ctx: Any, cfg: RunConfig, out: Path, device: str) -> None:
    """A rank other than 0: rank 0's decision, then (when a capture is needed) the dataset, the model and the SAEs,
    this rank's shards into ``out/capture.partial/``, and the barrier. Never touches anything else in ``out``.

    The dataset is loaded only after rank 0 has loaded it: a generated dataset (world-facts) is then read from the
    generation cache rank 0 just filled, not generated again on every rank; a toy world or SAE bundle built on first
    use is likewise built once, by rank 0, before the others look for it."""
    from ghost_lens.capture.distributed import RankError, error_text
    from ghost_lens.errors import DatasetError
    from ghost_lens.pipeline import load_model_and_bundle

    plan = ctx.broadcast()
    if plan["error"] is not None:
        raise RankError(f"rank 0 stopped: {plan['error']}")
    if not plan["capture"]:
        logger.info("rank %d: rank 0 reuses the saved capture; nothing to do", ctx.rank)
        return
    mine: Any = None
    try:
        model, examples, dhash = _load_data(cfg, device, None, None)
        if dhash != plan["dataset_hash"]:
            raise DatasetError(f"rank {ctx.rank} loaded another dataset than rank 0 (hash {dhash} vs "
                               f"{plan['dataset_hash']}): the dataset must load the same on every rank")
        model, bundle = load_model_and_bundle(dataclasses.replace(cfg, device=device), progress=False, model=model)
        mine = _capture_assigned(ctx, out, cfg, model, bundle, examples, dhash, plan["capture_key"], False)
    except Exception as exc:
        ctx.gather({"error": error_text(exc)})
        raise
    _raise_rank_errors(ctx.gather({"error": None, "shards": mine}))
    logger.info("rank %d: captured shards %s; rank 0 writes the run", ctx.rank, mine)


def _raise_rank_errors(statuses: list[dict[str, Any]]) -> None:
    from ghost_lens.capture.distributed import RankError

    failed = [(r, st["error"]) for r, st in enumerate(statuses) if st["error"] is not None]
    if failed:
        raise RankError("; ".join(f"rank {r} failed: {msg}" for r, msg in failed))


def _capture_cfg(cfg: RunConfig) -> Any:
    """The capture config as run: every token kept when the tracker reads every token."""
    if cfg.tracker.positions == "all" and cfg.capture.positions != "all":
        return dataclasses.replace(cfg.capture, positions="all")
    return cfg.capture


def _finisher(model: Any):
    """What each shard's trace gets before it is written: the vocabulary of its tokens and its examples' meta."""
    from ghost_lens.pipeline import add_vocab, example_meta

    def finish(trace: Any, part: list[Any]) -> None:
        add_vocab(trace, model)
        trace.meta["example_meta"] = [example_meta(ex) for ex in part]

    return finish


def _capture_assigned(ctx: Any, out: Path, cfg: RunConfig, model: Any, bundle: Any, examples: list[Any], dhash: str,
                      key: str, prog: Any) -> list[int]:
    """This rank's shards (``i % world_size == rank``) into ``out/capture.partial/``, with full decoder tables."""
    from ghost_lens.capture.shards import capture_assigned
    ccfg = _capture_cfg(cfg)
    return capture_assigned(model, bundle, examples, ccfg, out / C.CAPTURE_PARTIAL,
                            rank=ctx.rank, world_size=ctx.world_size, key=key, dataset_hash=dhash,
                            progress=prog if prog is not None else False, model_name=cfg.model,
                            finish=_finisher(model))


def _capture_shards(folder: RunFolder, cfg: RunConfig, model: Any, bundle: Any, examples: list[Any], dhash: str,
                    prog: Any) -> Any:
    """Capture shard by shard into ``capture.partial/`` (resuming the shards a killed run left there, reusing those
    the data-parallel ranks wrote), then move it over ``capture/`` once complete: the old capture goes only when the
    new one is whole."""
    from ghost_lens.capture.shards import CaptureShards, capture_sharded, promote
    ccfg = _capture_cfg(cfg)
    partial = folder.path / C.CAPTURE_PARTIAL
    capture_sharded(model, bundle, examples, ccfg, partial,
                    key=capture_key(cfg),  # the SAE files as just read (ghost_lens.run_folder)
                    dataset_hash=dhash, progress=prog, model_name=cfg.model, finish=_finisher(model))
    promote(partial, folder.capture_dir)
    return CaptureShards.open(folder.capture_dir)


def _write_track_outputs(path: Path, trace: Any, tracking: Any) -> None:
    from ghost_lens.tracking import plot_tracks, write_tracking_summary

    write_tracking_summary(tracking, path / C.TRACKING_SUMMARY)
    tracking.save(path)
    # plot the example with the most tracks among the hallucinated ones (else the first)
    labels = trace.labels
    cands = [i for i, y in enumerate(labels) if y == 1] or list(range(len(labels)))
    col = tracking.feature_names.index("n_tracks") if "n_tracks" in tracking.feature_names else 0
    best = max(cands, key=lambda i: tracking.metrics[i, col])
    plot_tracks(tracking.graphs[best], path / C.TRACK_PLOT,
                title=f"{trace.ids[best]}: {trace.meta['prompts'][best]!r} -> {trace.meta['answers'][best]!r}")


def _save_final_detector(path: Path, tracking: Any, trace: Any, cfg: RunConfig, groups: Any = None) -> None:
    """The detector refitted on every example, fitted like the evaluated ones (``random_state = eval.seed``,
    grouped inner calibration folds), saved as safetensors + JSON with the config's hash (for ``explain``); its
    scores are not used in the evaluation."""
    from ghost_lens.detect.detector import HallucinationDetector
    from ghost_lens.detect.detector_io import config_hash, save_detector
    from ghost_lens.pipeline import detector_features

    X, names = detector_features(trace, tracking, cfg, feature_groups=groups)
    det = HallucinationDetector.from_config(cfg.detector, names, random_state=cfg.eval.seed)
    det.fit(X, trace.labels, groups=trace.groups)
    save_detector(det, path, feature_names=names, feature_groups=list(cfg.detector.features),
                  cfg_hash=config_hash(cfg))
