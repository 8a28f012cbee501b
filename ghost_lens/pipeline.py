"""The pipeline, stage by stage, with TransformerLens and SAELens objects in and out.

1. :func:`load_model_and_bundle` — a :class:`~transformer_lens.HookedTransformer` and an
   :class:`~ghost_lens.saes.bundle.SAEBundle` (layer -> SAELens ``SAE``) from a config, checked against each other.
2. :func:`capture_trace` — one batched forward pass per example -> :class:`~ghost_lens.capture.trace.FeatureTrace`.
3. :func:`track` — hypothesis tracks per example -> graphs and per-example track metrics.
4. :func:`evaluate` — the detector and every baseline on the same grouped folds.

:func:`run_pipeline` chains 2-4 for a model and SAEs you already hold (how other projects plug in)::

    from ghost_lens import run_pipeline
    result = run_pipeline(model, {0: sae0, 1: sae1}, examples)
    result.evaluation.summary_rows(); result.tracking.graphs[0]
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ghost_lens.config import CaptureConfig, RunConfig, TrackerConfig
from ghost_lens.data.example import Example

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from ghost_lens.capture.trace import FeatureTrace
    from ghost_lens.detect.evaluation import EvaluationResult
    from ghost_lens.detect.features import FeatureGroup
    from ghost_lens.saes.bundle import SAEBundle
    from ghost_lens.tracking import TrackingResult

logger = logging.getLogger(__name__)


@dataclass
class PipelineResult:
    trace: FeatureTrace
    tracking: TrackingResult
    evaluation: EvaluationResult | None
    random_tracking: TrackingResult | None = None


def load_model_and_bundle(
    cfg: RunConfig, progress: bool = True, model: HookedTransformer | None = None, *, dtype: str | None = None
) -> tuple[HookedTransformer, SAEBundle]:
    """The config's model (unless ``model``, already loaded, is given) and SAE bundle, validated (d_in, hooks,
    layers, one hook kind), on ``cfg.device`` (``auto`` resolved, :func:`ghost_lens.model_loader.resolve_device`) and in
    ``dtype`` (default ``cfg.capture.dtype``: the capture's forward pass and SAE encoding run in it; a given
    ``model`` is converted in place)."""
    from ghost_lens.model_loader import load_model, resolve_device, to_dtype
    from ghost_lens.saes.sources import load_bundle

    device = resolve_device(cfg.device)
    dtype = dtype or cfg.capture.dtype
    if model is None:
        model = load_model(cfg.model, device=device, world_cfg=cfg.world, dtype=dtype)
    elif str(model.cfg.dtype).removeprefix("torch.") != dtype:
        model = to_dtype(model, dtype)
    bundle = load_bundle(
        model,
        release=None if cfg.sae_dir else cfg.sae_release,
        sae_dir=cfg.sae_dir,
        id_template=cfg.sae_id_template,
        layers=cfg.capture.layers,
        device=device,
        world_cfg=cfg.world,
    )
    for sae in bundle.values():  # load_bundle validated the bundle against the model; a dtype changes nothing of it
        if str(sae.dtype).removeprefix("torch.") != dtype:
            to_dtype(sae, dtype)
    return model, bundle


def capture_trace(
    model: HookedTransformer,
    saes: Mapping[int, SAE],
    examples: Sequence[Example],
    cfg: CaptureConfig | None = None,
    *,
    progress: Any = False,
    model_name: str | None = None,
) -> FeatureTrace:
    """Run the model once over ``examples`` and keep the top-k SAE features of every token per layer."""
    from ghost_lens.capture.capture import capture_examples

    cfg = cfg or CaptureConfig()
    trace = capture_examples(
        model, saes, examples, cfg, progress=progress, model_name=model_name or getattr(model.cfg, "model_name", None)
    )
    add_vocab(trace, model)
    trace.meta["example_meta"] = [example_meta(ex) for ex in examples]
    return trace


def example_meta(example: Example) -> dict[str, Any]:
    """The JSON-scalar entries of an example's ``meta`` (``kind``, ``relation``...), kept in the capture so the
    evaluation can break its AUROCs down by kind."""
    return {str(k): v for k, v in (example.meta or {}).items() if v is None or isinstance(v, str | int | float | bool)}


def add_vocab(trace: FeatureTrace, model: HookedTransformer) -> None:
    """Store the strings of the token ids that occur, so ``interpret`` never needs the tokenizer again."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return
    ids = sorted({int(t) for t in trace.tokens.unique().tolist()})
    trace.meta["vocab"] = {str(i): tok.decode([i]) for i in ids}


def track(trace: FeatureTrace, cfg: TrackerConfig | None = None, *, decoder_mode: str = "sae", seed: int = 0,
          progress: Any = False, keep_graphs: bool = True, n_jobs: int = 1) -> TrackingResult:
    """Hypothesis tracks of every example (graphs and per-example metrics); ``n_jobs`` batches at once in threads
    (the same result)."""
    from ghost_lens.tracking import track_trace

    return track_trace(trace, cfg or TrackerConfig(), decoder_mode=decoder_mode, seed=seed, progress=progress,
                       keep_graphs=keep_graphs, n_jobs=n_jobs)


def evaluate(trace: FeatureTrace, tracking: TrackingResult, cfg: RunConfig | None = None, *,
             random_tracking: TrackingResult | None = None, progress: Any = False,
             feature_groups: Mapping[str, FeatureGroup] | None = None, n_jobs: int = 1) -> EvaluationResult:
    """The detector (on its feature groups), the ablation, the stacked scorer and the baselines on the same
    group-wise folds, broken down by ``meta["kind"]`` when the capture's examples carry one. ``feature_groups``:
    the groups of ``trace`` and ``tracking`` when already built (:func:`ghost_lens.detect.features.build_feature_groups`;
    the ``position_tracks`` group runs the tracker again). ``n_jobs``: processes fitting the folds, and threads for the
    tracker where the control and the groups run it here (the same numbers)."""
    from ghost_lens.detect.evaluation import BaselineInputs
    from ghost_lens.detect.evaluation import evaluate as _evaluate
    from ghost_lens.detect.features import build_feature_groups

    cfg = cfg or RunConfig()
    if random_tracking is None:
        random_tracking = control_tracking(trace, cfg, n_jobs=n_jobs)
    groups = (dict(feature_groups) if feature_groups is not None
              else build_feature_groups(trace, tracking, cfg, n_jobs=n_jobs))
    random_groups = None
    if random_tracking is not None and "tracks" in cfg.detector.features:
        # the tracks group from random decoder directions; the other groups as they are (see the control's text)
        random_groups = {**{k: groups[k] for k in cfg.detector.features if k in groups},
                         **build_feature_groups(trace, random_tracking, cfg, names=["tracks"])}
    return _evaluate(
        labels=trace.labels,
        groups=trace.groups,
        ids=trace.ids,
        feature_groups=groups,
        baseline_inputs=BaselineInputs.from_trace(trace),
        cfg_detector=cfg.detector,
        cfg_eval=cfg.eval,
        random_decoder_features=random_groups,
        random_decoder_description=(
            f"the detector on its groups ({' + '.join(cfg.detector.features)}) with the tracks group recomputed by "
            "the tracker on random decoder directions (the other groups unchanged)"),
        kinds=example_kinds(trace),
        progress=progress,
        n_jobs=n_jobs,
    )


def example_kinds(trace: FeatureTrace) -> list[Any] | None:
    """``meta["kind"]`` of every example when the capture recorded the examples' meta (else ``None``)."""
    metas = trace.meta.get("example_meta")
    if not isinstance(metas, list) or len(metas) != trace.n_examples:
        return None
    kinds = [m.get("kind") if isinstance(m, dict) else None for m in metas]
    return None if all(k is None for k in kinds) else kinds


def detector_features(trace: FeatureTrace, tracking: TrackingResult, cfg: RunConfig, *,
                      feature_groups: Mapping[str, FeatureGroup] | None = None) -> tuple[Any, list[str]]:
    """``(X [N, F], column names)``: the detector's feature groups side by side (``group.column``), as evaluated
    (taken from ``feature_groups`` when given and holding them all, else built)."""
    import numpy as np

    from ghost_lens.detect.features import build_feature_groups

    names = list(cfg.detector.features)
    if feature_groups is not None and all(n in feature_groups for n in names):
        groups = {n: feature_groups[n] for n in names}
    else:
        groups = build_feature_groups(trace, tracking, cfg, names=names)
    X = np.concatenate([g.values for g in groups.values()], axis=1)
    return X, [f"{name}.{c}" for name, g in groups.items() for c in g.names]


def control_tracking(trace: FeatureTrace, cfg: RunConfig, *, progress: Any = False,
                     n_jobs: int = 1) -> TrackingResult | None:
    """The tracker on random decoder directions (the ``random_decoder`` control), when the config asks for it."""
    if "random_decoder" not in cfg.eval.baselines:
        return None
    return track(trace, cfg.tracker, decoder_mode="random", seed=cfg.eval.seed, progress=progress, keep_graphs=False,
                 n_jobs=n_jobs)


def run_pipeline(
    model: HookedTransformer,
    saes: Mapping[int, SAE],
    examples: Sequence[Example],
    cfg: RunConfig | None = None,
    *,
    progress: Any = False,
) -> PipelineResult:
    """Capture, track and evaluate in memory: graphs, metrics and scores come back as Python objects."""
    cfg = cfg or RunConfig()
    trace = capture_trace(model, saes, examples, cfg.capture, progress=progress)
    tracking = track(trace, cfg.tracker, progress=progress)
    evaluation = None
    if len(set(trace.labels)) > 1:
        random_tracking = control_tracking(trace, cfg)
        evaluation = evaluate(trace, tracking, cfg, random_tracking=random_tracking, progress=progress)
        return PipelineResult(trace, tracking, evaluation, random_tracking)
    logger.warning("all examples carry one label: tracking done, evaluation skipped")
    return PipelineResult(trace, tracking, evaluation)


def tokens_for_quality(model: HookedTransformer, cfg: RunConfig, num_samples: int, context: int = 64):
    """Held-out text for SAE quality: the run's dataset (BOS + prompt + answer per example), concatenated and cut
    into rows of ``context`` tokens."""
    import torch

    from ghost_lens.data.loaders import load_examples
    from ghost_lens.errors import DatasetError

    examples = load_examples(cfg.dataset, num_samples=num_samples, seed=cfg.seed, world_cfg=cfg.world)
    ids = torch.cat([model.to_tokens(f"{ex.prompt} {ex.answer}")[0] for ex in examples])
    ctx = min(context, model.cfg.n_ctx)
    n_rows = len(ids) // ctx
    if n_rows == 0:
        raise DatasetError(f"dataset {cfg.dataset!r} has fewer than {ctx} tokens: too little text for SAE quality")
    return ids[: n_rows * ctx].view(n_rows, ctx)
