"""``ghost-lens explain``: one (prompt, answer) scored by a run's detector, and the tracks behind the score.

1. Read the run folder: its config, the detector refitted on all its examples (``detector.safetensors`` +
   ``detector.json``, written by :func:`ghost_lens.track_run._save_final_detector`; never pickle, and refused when
   its config hash is not the hash of the run's ``config.yaml``) and its per-example track metrics
   (``track_metrics.json``).
2. Load the run's model and SAE bundle (:func:`~ghost_lens.pipeline.load_model_and_bundle`), capture the single
   example (label 0 as a placeholder: the example is unlabeled), track it with the run's tracker config and build
   the detector's feature groups (:func:`~ghost_lens.pipeline.detector_features`).
3. Score it: the calibrated hallucination probability, its parts (entropy, churn, classifier), and the run's decision
   threshold (median of the per-fold thresholds in ``detection_metrics.json``) with the run's AUROC for context.
4. Place its track metrics (entropy, churn, ...) and the model's own output signals (answer log-prob, output
   entropy, max probability: the baselines) among the run's examples as mid-rank percentiles.
5. The tracks that drive it: the heaviest tracks by activation mass, each with its layer span and its features per
   layer (with Neuronpedia links where the SAEs have Neuronpedia ids); the track plot is saved under
   ``RUN/explain/`` (never overwriting: a numbered name when one exists).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ghost_lens import constants as C
from ghost_lens.errors import RunFolderError

if TYPE_CHECKING:
    from ghost_lens.tracking import TrackingResult
    from ghost_lens.tracking.graph import TrackGraph

logger = logging.getLogger(__name__)

EXPLAIN_DIR = "explain"
NEURONPEDIA_URL = "https://www.neuronpedia.org/{neuronpedia_id}/{feature}"
TRACK_METRICS_SHOWN = ("entropy", "churn", "n_tracks", "mean_track_length", "survival", "dominant_share")
OUTPUT_SIGNALS = ("answer_logprob", "answer_mean_logprob", "output_entropy", "max_prob")


def percentile(values: np.ndarray, x: float) -> float:
    """Mid-rank percentile of ``x`` among ``values`` (0-100; ties count half)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan")
    return float(100.0 * ((values < x).sum() + 0.5 * (values == x).sum()) / values.size)


def neuronpedia_url(neuronpedia_id: str | None, feature: int) -> str | None:
    return NEURONPEDIA_URL.format(neuronpedia_id=neuronpedia_id, feature=feature) if neuronpedia_id else None


def unique_path(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem.suffix``, or ``stem-2``, ``stem-3`` ... when taken (also when ``stem.json`` is taken)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        name = stem if n == 1 else f"{stem}-{n}"
        if not any((folder / f"{name}{s}").exists() for s in (suffix, ".json", ".png")):
            return folder / f"{name}{suffix}"
        n += 1


def slug(text: str, max_len: int = 48) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:max_len].strip("-") or "example"


@dataclass
class Explanation:
    """Everything ``explain`` reports (:meth:`as_dict` is the ``--json`` output)."""

    run: Path
    prompt: str
    answer: str
    probability: float
    components: dict[str, float]
    threshold: float | None
    run_auroc: dict[str, Any] | None
    track_metrics: dict[str, dict[str, Any]]
    output_signals: dict[str, dict[str, Any]]
    n_tracks: int
    tracks: list[dict[str, Any]]
    neuronpedia_ids: dict[int, str | None]
    plot: Path | None = None
    record: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool | None:
        return None if self.threshold is None else bool(self.probability >= self.threshold)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run),
            "prompt": self.prompt,
            "answer": self.answer,
            "label": None,
            "labeled": False,
            "hallucination_probability": self.probability,
            "components": self.components,
            "run_threshold": self.threshold,
            "flagged": self.flagged,
            "run_detector_auroc": self.run_auroc,
            "track_metrics": self.track_metrics,
            "output_signals": self.output_signals,
            "n_tracks": self.n_tracks,
            "top_tracks": self.tracks,
            "neuronpedia_ids": {str(k): v for k, v in self.neuronpedia_ids.items()},
            "plot": None if self.plot is None else str(self.plot),
            "record": None if self.record is None else str(self.record),
            "notes": self.notes,
        }


def load_detector(run_dir: Path, cfg: Any | None = None) -> tuple[Any, list[str]]:
    """The run's final detector and the feature columns it was fitted on; with ``cfg`` (the run's config) a
    detector fitted under another config is refused with one line."""
    from ghost_lens.detect.detector_io import config_hash
    from ghost_lens.detect.detector_io import load_detector as _load

    det, meta = _load(run_dir, expected_hash=None if cfg is None else config_hash(cfg))
    return det, list(meta["feature_names"])


def _run_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / C.DETECTION_METRICS
    return json.loads(path.read_text()) if path.is_file() else {}


def _run_output_signals(run_dir: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    from ghost_lens.capture.shards import CaptureShards, is_sharded

    folder = run_dir / C.CAPTURE_DIR
    paths = ([s.shard_dir(i) / C.CAPTURE_TENSORS for s in [CaptureShards.open(folder)] for i in range(s.n_shards)]
             if is_sharded(folder) else [folder / C.CAPTURE_TENSORS])  # a sharded capture: every shard, in order
    if not all(p.is_file() for p in paths):
        return {}
    parts: dict[str, list[np.ndarray]] = {}
    for path in paths:
        with safe_open(str(path), framework="pt") as fh:
            keys = set(fh.keys())
            for k in OUTPUT_SIGNALS:
                if k in keys:
                    parts.setdefault(k, []).append(fh.get_tensor(k).float().numpy())
    return {k: np.concatenate(v) for k, v in parts.items() if len(v) == len(paths)}


def _compare(value: float, values: np.ndarray, labels: np.ndarray | None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": float(value), "run_percentile": percentile(values, value),
                           "run_median": float(np.median(values)) if values.size else None}
    if labels is not None and labels.size == values.size:
        for lab, key in ((0, "run_mean_faithful"), (1, "run_mean_hallucinated")):
            sel = values[labels == lab]
            out[key] = float(sel.mean()) if sel.size else None
    return out


def top_tracks(graph: Any, trace: Any, n: int, neuronpedia_ids: dict[int, str | None]) -> list[dict[str, Any]]:
    """The ``n`` tracks of largest activation mass (sum of normalised activations), with their features."""
    g = graph.graph
    tracks = graph.tracks()
    vocab = trace.meta.get("vocab", {})
    tokens = trace.tokens[trace.example_slice(0)].tolist()
    w = int(trace.window_starts()[0])  # graph positions are in the full sequence; the capture may keep a window
    a_start = int(trace.answer_start[0]) + w
    mass = {t: float(sum(g.nodes[v]["norm_activation"] for v in nodes)) for t, nodes in tracks.items()}
    total = sum(mass.values()) or 1.0
    last = graph.layers[-1] if graph.layers else None
    out = []
    for t in sorted(tracks, key=lambda t: (-mass[t], t))[:n]:
        nodes = tracks[t]
        out.append({
            "track": int(t),
            "layers": [int(nodes[0].layer), int(nodes[-1].layer)],
            "length": len(nodes),
            "mass": mass[t],
            "share": mass[t] / total,
            "survives": nodes[-1].layer == last,
            "nodes": [{
                "layer": int(v.layer), "feature": int(v.feature), "pos": int(v.pos),
                "token": (vocab.get(str(tokens[v.pos - w]), str(tokens[v.pos - w]))
                          if 0 <= v.pos - w < len(tokens) else None),
                "in_answer": v.pos >= a_start,
                "activation": float(g.nodes[v]["activation"]),
                "norm_activation": float(g.nodes[v]["norm_activation"]),
                "neuronpedia": neuronpedia_url(neuronpedia_ids.get(int(v.layer)), int(v.feature)),
            } for v in nodes],
        })
    return out


def explain(
    run_dir: str | Path,
    prompt: str,
    answer: str,
    *,
    n_tracks: int = 5,
    save: bool = True,
    progress: bool = False,
) -> Explanation:
    """Score one example with a run's detector and explain the score (module docstring)."""
    from ghost_lens.data.example import Example
    from ghost_lens.model_loader import check_coverage
    from ghost_lens.pipeline import capture_trace, detector_features, load_model_and_bundle, track
    from ghost_lens.run_folder import check_not_being_written, read_run_config
    from ghost_lens.tracking import TrackingResult

    run_dir = Path(run_dir)
    check_not_being_written(run_dir)
    cfg = read_run_config(run_dir)
    detector, names = load_detector(run_dir, cfg)
    run_tracking = TrackingResult.load(run_dir)

    model, bundle = load_model_and_bundle(cfg, progress=progress)
    check_coverage(model, [f"{prompt} {answer}"])
    example = Example("explain", "explain", prompt, answer, 0)  # label: a placeholder, the example is unlabeled
    trace = capture_trace(model, bundle, [example], cfg.capture, progress=False, model_name=cfg.model)
    tracking = track(trace, cfg.tracker, progress=False)
    X, x_names = detector_features(trace, tracking, cfg)
    if x_names != names:
        raise RunFolderError(f"{run_dir}: the detector was fitted on other feature columns (other layers?) than "
                             "this run's config gives; rerun `ghost-lens track`")
    prob = float(detector.predict_proba(X)[0, 1])
    components = {k: float(v[0]) for k, v in detector.component_scores(X).items()}

    run_metrics = _run_metrics(run_dir)
    det = run_metrics.get("detector") or {}
    per_fold = (det.get("threshold") or {}).get("per_fold")
    threshold = float(np.median(per_fold)) if per_fold else None

    labels = np.asarray(run_tracking.labels) if run_tracking.labels is not None else None
    metrics = _compare_tracks(tracking, run_tracking, labels, detector)
    run_signals = _run_output_signals(run_dir)
    signals = {k: _compare(float(getattr(trace, k)[0]), v, labels) for k, v in run_signals.items()}

    npd = {layer: (bundle.neuronpedia_id(layer) if hasattr(bundle, "neuronpedia_id") else None)
           for layer in tracking.layers}
    graph = tracking.graphs[0]
    result = Explanation(
        run=run_dir, prompt=prompt, answer=answer, probability=prob, components=components, threshold=threshold,
        run_auroc=det.get("auroc"), track_metrics=metrics, output_signals=signals, n_tracks=graph.n_tracks,
        tracks=top_tracks(graph, trace, n_tracks, npd), neuronpedia_ids=npd,
    )
    if not (run_metrics.get("conclusion") or {}).get("detector_above_chance", True):
        result.notes.append("the run's detector is not above chance: read this probability as noise")
    if save:
        _save(result, graph)
    return result


def _compare_tracks(
    tracking: TrackingResult, run_tracking: TrackingResult, labels: np.ndarray | None, detector: Any
) -> dict[str, dict[str, Any]]:
    """The example's shown track metrics against the run's, with the sign the detector gives entropy and churn."""
    metrics = {m: _compare(float(tracking.column(m)[0]), run_tracking.column(m), labels)
               for m in TRACK_METRICS_SHOWN if m in tracking.feature_names}
    for m, sign in (("entropy", getattr(detector, "entropy_sign_", None)),
                    ("churn", getattr(detector, "churn_sign_", None))):
        if m in metrics and sign is not None:
            metrics[m]["detector_sign"] = int(sign)  # +1: higher is scored as more hallucinated
    return metrics


def _save(result: Explanation, graph: TrackGraph) -> None:
    """Write the explanation's track plot and JSON record under ``RUN/explain/`` (sets ``result.plot`` and
    ``result.record``)."""
    from ghost_lens.tracking import plot_tracks

    prompt, answer = result.prompt, result.answer
    result.plot = unique_path(result.run / EXPLAIN_DIR, slug(f"{prompt} {answer}"), ".png")
    plot_tracks(graph, result.plot, title=f"{prompt!r} -> {answer!r}: p(halluc.) {result.probability:.2f}")
    result.record = result.plot.with_suffix(".json")
    from ghost_lens.detect.verdicts import clean_json
    from ghost_lens.io import atomic_write_text

    atomic_write_text(result.record, json.dumps(clean_json(result.as_dict()), indent=1))
