"""Track metrics per example: a fixed-length float vector, vectorised over all tracked detections of a batch.

With L tracked layers (positions j = 0..L-1, column names use the model layer number l), tracks t, and each
track's start / end layer position and length (its number of detections; no skipping, so end - start + 1):

1. ``births_L{l}`` = tracks starting at j; ``deaths_L{l}`` = tracks ending at j < L-1 (a track reaching the last
   layer survives, it does not die); ``live_L{l}`` = tracks with a detection at j; ``clutter_L{l}`` = untracked
   detections at j.
2. Churn = turnover relative to live tracks. Births at the first layer and ends at the last are the edges of the
   tracking window, not turnover: ``churn_L{l}`` = (births_j [j > 0] + deaths_j) / live_j and ``churn`` =
   (sum of those births + deaths) / (sum of live_j). One track spanning every layer: 0; all length-1 tracks:
   2 (L-1) / L.
3. Activation mass of a track = sum of its detections' normalised activations; ``entropy`` = Shannon entropy
   (nats) of the mass shares over tracks, ``entropy_norm`` = entropy / log(track count) in [0, 1] (0 for <= 1
   track), ``entropy_L{l}`` = entropy of the shares of the detections at layer j, ``dominant_share`` = the
   largest share.
4. ``survivors`` = tracks reaching the last layer, ``survival`` = survivors / track count.
5. Lengths: ``mean_track_length``, ``std_track_length``, ``max_track_length``, ``len_hist_{n}`` = tracks of length
   n (n = 1..L).
6. Scale (optional, :func:`scale_metrics`; the metrics above see normalised activations only): from the *raw*
   SAE activations of the tracked detections, ``raw_mass`` (their sum), ``raw_max`` (the largest),
   ``raw_dominant_mass`` (the raw mass of the track with the largest raw mass), ``raw_mass_L{l}`` and
   ``raw_max_L{l}`` per layer.
Empty examples (no tracks) get zeros everywhere. Every quantity is a ``bincount`` over (example, track) or
(example, layer) keys: no Python loop over examples, tracks or detections.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ghost_lens.tracking.arrays import TrackBatch
from ghost_lens.tracking.graph import TrackGraph

OVERALL = (
    "n_tracks",
    "n_detections",
    "n_clutter",
    "births",
    "deaths",
    "churn",
    "entropy",
    "entropy_norm",
    "dominant_share",
    "survivors",
    "survival",
    "mean_track_length",
    "std_track_length",
    "max_track_length",
)
PER_LAYER = ("births", "deaths", "live", "clutter", "churn", "entropy")


def feature_names(layers: list[int]) -> list[str]:
    """Column names of the metric vector for these tracked model layers."""
    per_layer = [f"{m}_L{layer}" for m in PER_LAYER for layer in layers]
    return [*OVERALL, *per_layer, *(f"len_hist_{n}" for n in range(1, len(layers) + 1))]


SCALE_OVERALL = ("raw_mass", "raw_max", "raw_dominant_mass")
SCALE_PER_LAYER = ("raw_mass", "raw_max")


def scale_feature_names(layers: list[int]) -> list[str]:
    """Column names of :func:`scale_metrics` for these tracked model layers."""
    return [*SCALE_OVERALL, *(f"{m}_L{layer}" for m in SCALE_PER_LAYER for layer in layers)]


def _entropy_terms(p: np.ndarray) -> np.ndarray:
    return np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def compute_metrics(
    example: np.ndarray,
    layer_pos: np.ndarray,
    track: np.ndarray,
    norm_activation: np.ndarray,
    clutter: np.ndarray,
) -> np.ndarray:
    """Metric rows ``[B, F]`` (order of :func:`feature_names`) from tracked nodes ``[n]`` (their example index,
    layer position, track id: any integers unique within an example, normalised activation) and clutter ``[B, L]``."""
    n_b, n_layers = clutter.shape
    tr = _global_tracks(example, layer_pos, track, n_layers)
    n_tracks = np.bincount(tr.example, minlength=n_b).astype(np.float64)
    node_key = example * n_layers + layer_pos
    births, deaths, live, churn_l, churn = _turnover(tr, node_key, n_b, n_layers)
    entropy, entropy_norm, entropy_l, dominant = _mass_shares(tr, node_key, norm_activation, n_tracks, n_b, n_layers)
    survivors, mean_len, std_len, max_len, len_hist = _lengths(tr, n_tracks, n_b, n_layers)
    overall = [
        n_tracks,
        np.bincount(example, minlength=n_b),
        clutter.sum(axis=1),
        births.sum(axis=1),
        deaths.sum(axis=1),
        churn,
        entropy,
        entropy_norm,
        dominant,
        survivors,
        _ratio(survivors, n_tracks),
        mean_len,
        std_len,
        max_len,
    ]
    return np.concatenate(
        [
            np.stack(overall, axis=1).astype(np.float64),
            births,
            deaths,
            live,
            clutter,
            churn_l,
            entropy_l,
            len_hist,
        ],
        axis=1,
        dtype=np.float64,
    )


class _Tracks(NamedTuple):
    """The tracks of a batch, numbered globally: each node's track ``g`` and, per track, its example, first and
    last layer position and length."""

    g: np.ndarray
    example: np.ndarray
    start: np.ndarray
    end: np.ndarray
    length: np.ndarray


def _global_tracks(example: np.ndarray, layer_pos: np.ndarray, track: np.ndarray, n_layers: int) -> _Tracks:
    """Number the (example, track id) pairs globally and measure each track."""
    t = track - track.min() if track.size else track
    span = int(t.max()) + 1 if t.size else 1
    uniq, g = np.unique(example * span + t, return_inverse=True)  # g: global track index of each node
    n_g = uniq.size
    start = np.full(n_g, n_layers, dtype=np.int64)
    end = np.full(n_g, -1, dtype=np.int64)
    np.minimum.at(start, g, layer_pos)
    np.maximum.at(end, g, layer_pos)
    length = np.bincount(g, minlength=n_g).astype(np.float64)
    return _Tracks(g, uniq // span, start, end, length)


def _per_layer(key: np.ndarray, n_b: int, n_layers: int, weights: np.ndarray | None = None) -> np.ndarray:
    """A ``[B, L]`` count (or sum of ``weights``) over (example, layer) keys ``example * L + layer``."""
    return np.bincount(key, weights=weights, minlength=n_b * n_layers).reshape(n_b, n_layers)


def _turnover(
    tr: _Tracks, node_key: np.ndarray, n_b: int, n_layers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 1-2: births, deaths and live tracks per layer ``[B, L]``, churn per layer and overall ``[B]``."""
    births = _per_layer(tr.example * n_layers + tr.start, n_b, n_layers).astype(np.float64)
    dies = tr.end < n_layers - 1
    deaths = _per_layer(tr.example[dies] * n_layers + tr.end[dies], n_b, n_layers).astype(np.float64)
    live = _per_layer(node_key, n_b, n_layers).astype(np.float64)
    turnover = births.copy()
    turnover[:, 0] = 0.0
    turnover += deaths
    return births, deaths, live, _ratio(turnover, live), _ratio(turnover.sum(axis=1), live.sum(axis=1))


def _mass_shares(
    tr: _Tracks, node_key: np.ndarray, norm_activation: np.ndarray, n_tracks: np.ndarray, n_b: int, n_layers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 3: entropy and normalised entropy of the tracks' mass shares ``[B]``, entropy per layer ``[B, L]``,
    dominant share ``[B]``."""
    ex_t = tr.example
    mass = np.bincount(tr.g, weights=norm_activation, minlength=ex_t.size)
    share = _ratio(mass, np.bincount(ex_t, weights=mass, minlength=n_b)[ex_t])
    entropy = np.bincount(ex_t, weights=_entropy_terms(share), minlength=n_b)
    entropy_norm = _ratio(entropy, np.log(np.maximum(n_tracks, 1.0)))
    node_share = _ratio(norm_activation, _per_layer(node_key, n_b, n_layers, norm_activation).reshape(-1)[node_key])
    entropy_l = _per_layer(node_key, n_b, n_layers, _entropy_terms(node_share))
    dominant = np.zeros(n_b)
    np.maximum.at(dominant, ex_t, share)
    return entropy, entropy_norm, entropy_l, dominant


def _lengths(
    tr: _Tracks, n_tracks: np.ndarray, n_b: int, n_layers: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Steps 4-5: survivors, mean / std / max track length ``[B]`` and the length histogram ``[B, L]``."""
    ex_t, length = tr.example, tr.length
    survivors = np.bincount(ex_t[tr.end == n_layers - 1], minlength=n_b).astype(np.float64)
    mean_len = _ratio(np.bincount(ex_t, weights=length, minlength=n_b), n_tracks)
    dev2 = (length - mean_len[ex_t]) ** 2
    std_len = np.sqrt(_ratio(np.bincount(ex_t, weights=dev2, minlength=n_b), n_tracks))
    max_len = np.zeros(n_b)
    np.maximum.at(max_len, ex_t, length)
    len_key = ex_t * (n_layers + 1) + length.astype(np.int64)
    len_hist = np.bincount(len_key, minlength=n_b * (n_layers + 1)).reshape(n_b, n_layers + 1)[:, 1:]
    return survivors, mean_len, std_len, max_len, len_hist


def scale_metrics(
    example: np.ndarray, layer_pos: np.ndarray, track: np.ndarray, activation: np.ndarray, n_b: int, n_layers: int
) -> np.ndarray:
    """Rows ``[B, F]`` (order of :func:`scale_feature_names`) from tracked nodes ``[n]`` (example index, layer
    position, track id unique within an example, raw activation): step 6 of the module docstring."""
    t = track - track.min() if track.size else track
    span = int(t.max()) + 1 if t.size else 1
    uniq, g = np.unique(example * span + t, return_inverse=True)
    ex_t = uniq // span
    act = activation.astype(np.float64)
    track_mass = np.bincount(g, weights=act, minlength=uniq.size)
    dominant = np.zeros(n_b)
    np.maximum.at(dominant, ex_t, track_mass)
    top = np.zeros(n_b)
    np.maximum.at(top, example, act)
    key = example * n_layers + layer_pos
    mass_l = np.bincount(key, weights=act, minlength=n_b * n_layers).reshape(n_b, n_layers)
    max_l = np.zeros(n_b * n_layers)
    np.maximum.at(max_l, key, act)
    overall = np.stack([mass_l.sum(axis=1), top, dominant], axis=1)
    return np.concatenate([overall, mass_l, max_l.reshape(n_b, n_layers)], axis=1, dtype=np.float64)


def batch_scale_metrics(batch: TrackBatch) -> np.ndarray:
    """Scale rows ``[B, F]`` of a tracked batch."""
    b, j, slot = batch.nodes()
    n_b, n_layers = batch.clutter.shape
    return scale_metrics(b, j, batch.track[b, j, slot], batch.det.activation[b, j, slot], n_b, n_layers)


def batch_metrics(batch: TrackBatch) -> np.ndarray:
    """Metric rows ``[B, F]`` of a tracked batch."""
    b, j, slot = batch.nodes()
    return compute_metrics(
        b, j, batch.track[b, j, slot], batch.det.norm_activation[b, j, slot], batch.clutter
    )


def metrics_dict(graph: TrackGraph, n_layers: int | None = None) -> dict[str, float]:
    """Metrics of one example's graph, by name. ``n_layers`` is needed only for a graph without ``layers``."""
    layers = graph.layers or list(range(n_layers or 0))
    if n_layers is not None and n_layers != len(layers):
        raise ValueError(f"the graph tracks {len(layers)} layers, not {n_layers}")
    rows = list(graph.graph.nodes(data=True))
    layer_pos = np.array([a["layer_pos"] for _, a in rows], dtype=np.int64)
    track = np.array([a["track"] for _, a in rows], dtype=np.int64)
    norm = np.array([a["norm_activation"] for _, a in rows], dtype=np.float64)
    clutter = np.asarray([graph.clutter or [0] * len(layers)], dtype=np.float64).reshape(1, len(layers))
    values = compute_metrics(np.zeros(len(rows), dtype=np.int64), layer_pos, track, norm, clutter)[0]
    return dict(zip(feature_names(layers), values.tolist(), strict=True))
