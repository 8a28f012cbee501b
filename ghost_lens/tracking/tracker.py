"""The hypothesis tracker: births, continuations and deaths of SAE features across the tracked layers.

Multi-object tracking with layers as frames (SORT-style: score, assign one-to-one, birth, death), per example:

1. Detections per tracked layer (:mod:`ghost_lens.tracking.detections`): the top ``top_k_features`` (feature,
   position) activations in the tracked span, with activations normalised (``normalization``; default per example
   and layer, largest = 1).
2. Layer 0: every detection with normalised activation >= ``birth_threshold`` starts a track; the rest is clutter.
3. Layer j > 0: the live tracks are exactly the tracked detections of layer j-1 (no skipping: a track continues at
   every consecutive tracked layer or dies). Score every (track tail, detection) pair
   (:mod:`ghost_lens.tracking.association`), keep the admissible ones (score >= ``association_threshold``,
   detection's normalised activation >= ``death_threshold``), match one-to-one (optimal or greedy); a matched
   detection continues its track (an edge carrying the score and its parts).
4. A live track left unmatched dies at layer j-1 (its last detection). An unmatched detection at layer j with
   normalised activation >= ``birth_threshold`` starts a track; one below is clutter (counted, not in the graph).
   ``birth_threshold`` > ``death_threshold`` is hysteresis: strong evidence to start a hypothesis, weak evidence
   keeps it.
5. Track ids follow the order of birth (layer, then activation descending).

Vectorised over a batch of examples: the only loop is over layers (steps 3-4 need layer j-1's outcome), plus one
``linear_sum_assignment`` per example and layer where admissible pairs compete. Per layer: one batched
``[B, n_live, d_model] @ [B, d_model, M]`` matmul (n_live <= M = ``top_k_features``) and elementwise score parts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from typing import Any

import numpy as np
import torch
from threadpoolctl import ThreadpoolController

from ghost_lens.capture.trace import FeatureTrace
from ghost_lens.config import TrackerConfig
from ghost_lens.tracking.arrays import EDGE_PARTS, TrackArrays, TrackBatch
from ghost_lens.tracking.association import THRESHOLD_TOL, admissible_pairs, association_scores, match
from ghost_lens.tracking.detections import Detections, TraceArrays
from ghost_lens.tracking.graph import TrackGraph


class DecoderTable:
    """Per tracked layer: sorted feature ids and their unit-norm decoder directions, as numpy (float32)."""

    def __init__(self, idx: list[torch.Tensor], dirs: list[torch.Tensor]):
        if len(idx) != len(dirs):
            raise ValueError(f"{len(idx)} decoder id tables but {len(dirs)} direction tables")
        self.idx = [t.to(torch.int64).numpy() for t in idx]
        self.dirs = [t.float().numpy() for t in dirs]
        for j, (i, d) in enumerate(zip(self.idx, self.dirs, strict=True)):
            if d.shape[0] != i.shape[0]:
                raise ValueError(f"layer position {j}: {i.shape[0]} feature ids but {d.shape[0]} directions")

    @classmethod
    def from_trace(cls, trace: FeatureTrace, decoders: list[torch.Tensor] | None = None) -> DecoderTable:
        """The trace's SAE decoder directions, or ``decoders`` (rows aligned with ``trace.dec_idx``) instead."""
        return cls(trace.dec_idx, trace.dec_dir if decoders is None else decoders)

    def lookup(self, j: int, features: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Directions ``[..., d_model]`` of ``features`` at layer position ``j`` (arbitrary rows where not ``valid``:
        padding never enters an admissible pair)."""
        idx = self.idx[j]
        rows = np.searchsorted(idx, features).clip(max=max(idx.size - 1, 0))
        if valid.any() and (idx.size == 0 or not np.array_equal(idx[rows][valid], features[valid])):
            raise KeyError(f"feature id(s) missing from the decoder table of layer position {j}")
        if idx.size == 0:
            return np.zeros((*features.shape, self.dirs[j].shape[-1]), np.float32)
        # np.take: one contiguous gather, about 1.4x faster than fancy indexing on [B, M] row ids
        return np.take(self.dirs[j], rows.reshape(-1), axis=0).reshape(*features.shape, self.dirs[j].shape[-1])


def random_decoders(trace: FeatureTrace, seed: int = 0) -> list[torch.Tensor]:
    """A control: random unit-norm directions (Gaussian, independent per layer) aligned with ``trace.dec_idx``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for idx, d in zip(trace.dec_idx, trace.dec_dir, strict=True):
        r = torch.randn(idx.numel(), d.shape[-1], generator=g)
        out.append(r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12))
    return out


def track_batch(
    det: Detections, table: DecoderTable, cfg: TrackerConfig, layers: list[int], ids: list[str]
) -> TrackBatch:
    """Steps 2-5 on a batch of detections ``[B, L, M]``."""
    n_b, n_layers, m = det.feature.shape
    track = np.full((n_b, n_layers, m), -1, dtype=np.int64)
    clutter = np.zeros((n_b, n_layers), dtype=np.int64)
    next_id = np.zeros((n_b, 1), dtype=np.int64)
    edges: list[tuple[np.ndarray, ...]] = []
    live = np.zeros((n_b, m), dtype=bool)
    prev_dirs = None
    for j in range(n_layers):
        valid, norm, pos = det.valid[:, j], det.norm_activation[:, j], det.pos[:, j]
        dirs = table.lookup(j, det.feature[:, j], valid)  # [B, M, d_model]
        matched = np.zeros((n_b, m), dtype=bool)
        if j > 0 and live.any():
            # rows: the live tracks only, compacted to [B, n_live_max] (slot order kept; padding masked out). When
            # some example keeps all M tracks alive nothing can be dropped: the slots are used as they are, which
            # spares re-gathering [B, M, d_model] directions (the matching sees the live rows in the same order)
            n_rows = int(live.sum(axis=1).max())
            bi = np.arange(n_b)[:, None]
            if n_rows == m:
                rows = np.broadcast_to(np.arange(m), (n_b, m))
                row_live, row_dirs, row_norm, row_pos = live, prev_dirs, det.norm_activation[:, j - 1], det.pos[:, j - 1]
            else:
                rows = np.argsort(~live, axis=1, kind="stable")[:, :n_rows]
                row_live, row_dirs = live[bi, rows], prev_dirs[bi, rows]
                row_norm, row_pos = det.norm_activation[bi, j - 1, rows], det.pos[bi, j - 1, rows]
            parts = association_scores(row_dirs, dirs, row_norm, norm, row_pos, pos, cfg)
            adm = admissible_pairs(parts.score, norm, cfg) & row_live[:, :, None] & valid[:, None, :]
            b, rr, c = match(parts.score, adm, cfg.assignment)
            r = rows[b, rr]
            track[b, j, c] = track[b, j - 1, r]
            matched[b, c] = True
            edges.append((b, np.full(b.size, j), r, c, *(getattr(parts, k)[b, rr, c] for k in EDGE_PARTS)))
        born = valid & ~matched & (norm >= cfg.birth_threshold - THRESHOLD_TOL)
        ids_j = next_id + np.cumsum(born, axis=1) - 1
        track[:, j][born] = ids_j[born]
        next_id += born.sum(axis=1, keepdims=True)
        clutter[:, j] = valid.sum(axis=1) - matched.sum(axis=1) - born.sum(axis=1)
        live = matched | born
        prev_dirs = dirs
    cols = (
        [np.concatenate(x) for x in zip(*edges, strict=True)]
        if edges
        else [np.zeros(0)] * (4 + len(EDGE_PARTS))
    )
    return TrackBatch(
        layers=list(layers),
        ids=list(ids),
        det=det,
        track=track,
        clutter=clutter,
        edge_b=cols[0].astype(np.int64),
        edge_j=cols[1].astype(np.int64),
        edge_r=cols[2].astype(np.int64),
        edge_c=cols[3].astype(np.int64),
        edge_parts={k: cols[4 + i].astype(np.float64) for i, k in enumerate(EDGE_PARTS)},
    )


class Tracker:
    """A trace prepared for tracking (numpy views, decoder table, layers, ids); :meth:`batch` tracks examples."""

    def __init__(self, trace: FeatureTrace, cfg: TrackerConfig, decoders: list[torch.Tensor] | None = None, *,
                 table: DecoderTable | None = None, scale: np.ndarray | None = None):
        """``table`` (built once for a sharded capture's shards) replaces the trace's own decoder table and
        ``decoders``; ``scale`` the per-layer constants of ``normalization="layer"`` (default: over ``trace``)."""
        self.cfg = cfg
        self.data = TraceArrays(trace)
        self.table = table if table is not None else DecoderTable.from_trace(trace, decoders)
        self.layers = [int(x) for x in trace.meta.get("layers", range(trace.n_layers))]
        self.ids = [str(x) for x in trace.meta.get("ids", range(trace.n_examples))]
        # the per-layer constants of normalization="layer", over the whole trace (label-free), so a batch's
        # normalisation never depends on which other examples share the batch
        self.scale = scale
        if cfg.normalization == "layer" and scale is None:
            self.scale = self.data.layer_scale(cfg.positions)

    def batches(self, max_batch: int = 64, budget: int = 2**21) -> Iterator[np.ndarray]:
        """Consecutive example indices in batches whose candidate arrays stay under ``budget`` elements."""
        n = len(self.ids)
        lo, hi = self.data.spans(np.arange(n), self.cfg.positions)
        per_example = len(self.layers) * max(int((hi - lo).max(initial=0)), 1) * self.data.feat_idx.shape[-1]
        size = int(np.clip(budget // per_example, 1, max_batch))
        for s in range(0, n, size):
            yield np.arange(s, min(s + size, n))

    def batch(self, examples: np.ndarray, limit_blas: bool = True) -> TrackBatch:
        """Steps 1-5 for these example indices. ``limit_blas=False``: the caller already holds BLAS at one thread
        (:func:`one_blas_thread`; threads tracking batches at once must not each set and restore it)."""
        det = self.data.detections(
            examples, self.cfg.positions, self.cfg.top_k_features, self.cfg.normalization, self.scale
        )
        with one_blas_thread() if limit_blas else contextlib.nullcontext():
            return track_batch(det, self.table, self.cfg, self.layers, [self.ids[i] for i in examples.tolist()])

    def arrays(self, i: int) -> TrackArrays:
        return self.batch(np.asarray([i])).example(0)


@cache
def _blas_controller() -> ThreadpoolController:
    """The process's thread pools, inspected once (a ``limit`` context is then ~0.04 ms instead of ~1.4 ms)."""
    return ThreadpoolController()


def one_blas_thread() -> Any:
    """A context holding numpy's BLAS at one thread. The tracker's products are small
    (``[n_live, d_model] @ [d_model, M]``), where BLAS threads cost more in wake-ups and contention than they save
    (gpt2-medium shape, 27 examples x one layer: 11.8 ms on one thread, 44 ms on two on a busy 2-core machine);
    more cores go to batches tracked at once instead (``n_jobs`` of :func:`ghost_lens.tracking.track_trace`).
    Entered in one thread, the limit holds for every thread with a pthreads BLAS (OpenBLAS / MKL / BLIS of the pip
    wheels); an OpenMP-built OpenBLAS keeps a per-thread setting, so other threads may use more (speed only)."""
    return _blas_controller().limit(limits=1, user_api="blas")


def track_example(
    trace: FeatureTrace, i: int, cfg: TrackerConfig, *, decoders: list[torch.Tensor] | None = None
) -> TrackGraph:
    """Track example ``i``; ``decoders`` (aligned with ``trace.dec_idx``) replaces the SAE decoder directions."""
    return Tracker(trace, cfg, decoders).arrays(i).to_graph()
