"""The tracker's layer step equals the straightforward computation it replaced.

``track_batch`` skips compacting the live rows (and re-gathering their decoder directions) when some example keeps
all ``M`` tracks alive, gathers directions with ``np.take`` and runs its products on one BLAS thread. The reference
below is the previous loop, kept verbatim in its logic: always compact the live rows to ``[B, n_live_max]``, gather
their directions again, score, match. Both run on random batches whose feature ids repeat across positions (and
across examples), with thresholds low enough for many continuations, under both assignment methods.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ghost_lens.config import TrackerConfig
from ghost_lens.tracking.arrays import EDGE_PARTS
from ghost_lens.tracking.association import THRESHOLD_TOL, admissible_pairs, association_scores, match
from ghost_lens.tracking.detections import Detections
from ghost_lens.tracking.tracker import DecoderTable, Tracker, track_batch


def reference_track_batch(det: Detections, table: DecoderTable, cfg: TrackerConfig):
    """The previous layer loop (always compacting the live rows): ``(track, clutter, edges, parts)``."""
    n_b, n_layers, m = det.feature.shape
    track = np.full((n_b, n_layers, m), -1, dtype=np.int64)
    clutter = np.zeros((n_b, n_layers), dtype=np.int64)
    next_id = np.zeros((n_b, 1), dtype=np.int64)
    edges, parts_out = [], []
    live = np.zeros((n_b, m), dtype=bool)
    prev_dirs = None
    for j in range(n_layers):
        valid, norm, pos = det.valid[:, j], det.norm_activation[:, j], det.pos[:, j]
        rows_idx = np.searchsorted(table.idx[j], det.feature[:, j])
        dirs = table.dirs[j][rows_idx]
        matched = np.zeros((n_b, m), dtype=bool)
        if j > 0 and live.any():
            n_rows = int(live.sum(axis=1).max())
            rows = np.argsort(~live, axis=1, kind="stable")[:, :n_rows]
            bi = np.arange(n_b)[:, None]
            row_live = live[bi, rows]
            parts = association_scores(
                prev_dirs[bi, rows], dirs, det.norm_activation[bi, j - 1, rows], norm, det.pos[bi, j - 1, rows],
                pos, cfg,
            )  # fmt: skip
            adm = admissible_pairs(parts.score, norm, cfg) & row_live[:, :, None] & valid[:, None, :]
            b, rr, c = match(parts.score, adm, cfg.assignment)
            r = rows[b, rr]
            track[b, j, c] = track[b, j - 1, r]
            matched[b, c] = True
            edges.append(np.stack([b, np.full(b.size, j), r, c], axis=1))
            parts_out.append(np.stack([getattr(parts, k)[b, rr, c] for k in EDGE_PARTS], axis=1))
        born = valid & ~matched & (norm >= cfg.birth_threshold - THRESHOLD_TOL)
        ids_j = next_id + np.cumsum(born, axis=1) - 1
        track[:, j][born] = ids_j[born]
        next_id += born.sum(axis=1, keepdims=True)
        clutter[:, j] = valid.sum(axis=1) - matched.sum(axis=1) - born.sum(axis=1)
        live = matched | born
        prev_dirs = dirs
    return track, clutter, np.concatenate(edges), np.concatenate(parts_out)


def random_case(seed: int, n_b: int = 6, n_layers: int = 5, m: int = 12, n_feat: int = 9, d: int = 16):
    """Detections with few feature ids (so each repeats across positions), directions drifting across layers."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n_feat, d))
    idx, dirs = [], []
    for _ in range(n_layers):
        base = base + 0.3 * rng.standard_normal((n_feat, d))
        u = base / np.linalg.norm(base, axis=1, keepdims=True)
        idx.append(torch.arange(n_feat) * 3 + 1)  # sparse, sorted ids
        dirs.append(torch.from_numpy(u.astype(np.float32)))
    feature = (rng.integers(0, n_feat, (n_b, n_layers, m)) * 3 + 1).astype(np.int64)
    pos = rng.integers(4, 9, (n_b, n_layers, m)).astype(np.int64)
    act = -np.sort(-rng.uniform(0.05, 2.0, (n_b, n_layers, m)), axis=-1)
    valid = np.ones_like(act, dtype=bool)
    valid[0, :, -3:] = False  # padding at the end of one example's layers
    valid[1, 2, :] = False  # one layer with no detection at all
    act[~valid] = 0.0
    norm = act / np.where(act[..., :1] > 0, act[..., :1], 1.0)
    det = Detections(feature, pos, act, norm, valid)
    return det, DecoderTable(idx, dirs)


CFGS = [
    TrackerConfig(association_threshold=0.45, birth_threshold=0.0, death_threshold=0.0, assignment="optimal"),
    TrackerConfig(association_threshold=0.45, birth_threshold=0.0, death_threshold=0.0, assignment="greedy"),
    TrackerConfig(association_threshold=0.4, birth_threshold=0.5, death_threshold=0.2, assignment="optimal"),
    TrackerConfig(association_threshold=0.4, birth_threshold=0.5, death_threshold=0.2, assignment="greedy"),
]


@pytest.mark.parametrize("cfg", CFGS, ids=lambda c: f"{c.assignment}-birth{c.birth_threshold}")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_track_batch_equals_the_reference(cfg, seed):
    det, table = random_case(seed)
    assert any(np.unique(det.feature[b, j]).size < det.feature.shape[2]  # ids repeat across positions
               for b in range(det.feature.shape[0]) for j in range(det.feature.shape[1]))
    track, clutter, edges, parts = reference_track_batch(det, table, cfg)
    assert edges.shape[0] > 10  # the case exercises continuations, not only births
    got = track_batch(det, table, cfg, layers=list(range(det.feature.shape[1])), ids=[str(i) for i in range(6)])
    np.testing.assert_array_equal(got.track, track)
    np.testing.assert_array_equal(got.clutter, clutter)
    np.testing.assert_array_equal(np.stack([got.edge_b, got.edge_j, got.edge_r, got.edge_c], axis=1), edges)
    for i, k in enumerate(EDGE_PARTS):
        np.testing.assert_allclose(got.edge_parts[k], parts[:, i], rtol=0, atol=1e-6)


def test_both_row_layouts_occur_in_the_cases():
    # birth_threshold 0: every valid detection is live, so some example keeps all M rows (the uncompacted layout);
    # birth_threshold 0.5: fewer live rows than M everywhere (the compacted layout)
    det, _ = random_case(0)
    full = det.valid & (det.norm_activation >= 0.0)
    part = det.valid & (det.norm_activation >= 0.5)
    assert full.sum(axis=2).max() == det.feature.shape[2]
    assert part.sum(axis=2).max() < det.feature.shape[2]


def test_lookup_gathers_the_rows_of_the_features():
    det, table = random_case(3)
    got = table.lookup(1, det.feature[:, 1], det.valid[:, 1])
    want = table.dirs[1][np.searchsorted(table.idx[1], det.feature[:, 1])]
    np.testing.assert_array_equal(got, want)
    with pytest.raises(KeyError, match="layer position 1"):
        table.lookup(1, det.feature[:, 1] + 1, det.valid[:, 1])


def test_batch_runs_on_one_blas_thread_and_restores_the_pool(monkeypatch):
    from threadpoolctl import threadpool_info

    seen = []
    import ghost_lens.tracking.tracker as tracker_mod

    real = tracker_mod.track_batch

    def spy(*args, **kwargs):
        seen.append([p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"])
        return real(*args, **kwargs)

    monkeypatch.setattr(tracker_mod, "track_batch", spy)
    before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
    from tests.helpers.trace import random_trace

    Tracker(random_trace(), TrackerConfig(positions="all")).batch(np.arange(2))
    assert seen and all(n == 1 for n in seen[0])
    assert [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"] == before
