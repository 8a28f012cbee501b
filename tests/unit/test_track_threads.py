"""Tracking batches at once in threads (``track_trace(n_jobs=...)``): the same metrics and graphs as one batch at a
time, and numpy's BLAS thread count left as it was."""

from __future__ import annotations

import dataclasses

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from ghost_lens.config import TrackerConfig
from ghost_lens.tracking import track_trace
from ghost_lens.tracking.tracker import Tracker
from tests.helpers.trace import random_trace


def _blas_threads() -> list[int]:
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_threaded_batches_equal_one_batch_at_a_time_and_restore_blas(monkeypatch):
    trace = random_trace(n_examples=40, n_layers=4, seed=5)
    cfg = TrackerConfig()
    original = Tracker.batches
    # small batches, so that several run at once
    monkeypatch.setattr(Tracker, "batches", lambda self, max_batch=64, budget=200: original(self, max_batch, budget))
    assert len(list(Tracker(trace, cfg).batches())) > 3
    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        one = track_trace(trace, cfg, progress=False)
        for n_jobs in (2, 3, -1):
            many = track_trace(trace, cfg, progress=False, n_jobs=n_jobs)
            assert many.ids == one.ids
            np.testing.assert_array_equal(many.metrics, one.metrics)
            assert [sorted(g.graph.edges(data=True), key=str) for g in many.graphs] == \
                [sorted(g.graph.edges(data=True), key=str) for g in one.graphs]
            assert _blas_threads() == before  # held at one thread while tracking, restored after
        layer = dataclasses.replace(cfg, normalization="layer")
        np.testing.assert_array_equal(
            track_trace(trace, layer, progress=False, keep_graphs=False, scale=True, n_jobs=2).metrics,
            track_trace(trace, layer, progress=False, keep_graphs=False, scale=True).metrics)
        rnd = {"decoder_mode": "random", "seed": 4, "progress": False, "keep_graphs": False}
        np.testing.assert_array_equal(track_trace(trace, cfg, n_jobs=2, **rnd).metrics,
                                      track_trace(trace, cfg, **rnd).metrics)
