"""ghost-lens: detect hallucinations by tracking SAE features across layers (TransformerLens + SAELens).

The pipeline with TransformerLens and SAELens objects in and out::

    from ghost_lens import RunConfig, load_examples, run_pipeline
    result = run_pipeline(model, {layer: sae, ...}, examples, RunConfig())
    result.evaluation.summary_rows()      # detector and baselines, AUROC with 95% CIs
    result.tracking.graphs[0]             # a TrackGraph (networkx DiGraph inside)

Stage by stage: :func:`capture_trace`, :func:`track`, :func:`evaluate`; a whole run folder: :func:`run_track`.
``ghost_lens.capture`` is the capture subpackage (``ghost_lens.capture.FeatureTrace``...), never a function: the
capture stage is :func:`capture_trace`, so importing a ``ghost_lens.capture.*`` module cannot shadow it.
"""

from ghost_lens._version import __version__
from ghost_lens.config import (
    CaptureConfig,
    DetectorConfig,
    EvalConfig,
    RunConfig,
    TrackerConfig,
    WorldConfig,
    load_config,
)
from ghost_lens.data import Example, load_examples
from ghost_lens.errors import GhostLensError
from ghost_lens.pipeline import (
    PipelineResult,
    capture_trace,
    evaluate,
    load_model_and_bundle,
    run_pipeline,
    track,
)
from ghost_lens.track_run import run_track

_LAZY = {
    "FeatureTrace": "ghost_lens.capture.trace",
    "load_model": "ghost_lens.model_loader",
    "load_bundle": "ghost_lens.saes.sources",
    "SAEBundle": "ghost_lens.saes.bundle",
    "SAETrainingConfig": "ghost_lens.saes.config",
    "train_saes": "ghost_lens.saes.training",
    "get_world": "ghost_lens.toy.world",
    "HallucinationDetector": "ghost_lens.detect.detector",
    "TrackGraph": "ghost_lens.tracking.graph",
    "TrackingResult": "ghost_lens.tracking.result",
    "load_graphs": "ghost_lens.tracking.graph_io",
}


_SUBPACKAGES = ("capture", "data", "detect", "saes", "toy", "tracking")


def __getattr__(name: str):  # heavy modules (torch, sae_lens, sklearn) load only when asked for
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBPACKAGES:  # `ghost_lens.capture` is the subpackage, also before anything imported it
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'ghost_lens' has no attribute {name!r}")


__all__ = [
    "CaptureConfig",
    "DetectorConfig",
    "EvalConfig",
    "Example",
    "FeatureTrace",
    "GhostLensError",
    "PipelineResult",
    "RunConfig",
    "TrackerConfig",
    "WorldConfig",
    "__version__",
    "capture_trace",
    "evaluate",
    "load_config",
    "load_examples",
    "load_model_and_bundle",
    "run_pipeline",
    "run_track",
    "track",
    *_LAZY,
]
