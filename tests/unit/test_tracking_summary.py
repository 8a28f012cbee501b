"""tracking_summary.json: pooled statistics, the tuning hints, save / load of the metrics."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from ghost_lens.config import TrackerConfig
from ghost_lens.constants import TRACK_METRICS, TRACKING_SUMMARY
from ghost_lens.tracking import (
    TrackingResult,
    track_trace,
    tracking_summary,
    tuning_hints,
    write_tracking_summary,
)
from tests.helpers.trace import make_trace, random_trace, unit

ALL = TrackerConfig(positions="all")


def _chain_trace(n_layers: int, orthogonal: bool):
    dirs = {
        j: unit(*([0.0] * j + [1.0]), dim=n_layers) if orthogonal else unit(1.0, dim=n_layers)
        for j in range(n_layers)
    }
    return make_trace([[[(j, 0, 1.0)] for j in range(n_layers)]] * 2, dirs)


def test_short_tracks_hint_lower_the_threshold(caplog):
    result = track_trace(_chain_trace(5, orthogonal=True), ALL, progress=False)
    with caplog.at_level(logging.WARNING):
        s = tracking_summary(result)
    assert s["avg_track_length"] == 1.0
    assert len(s["hints"]) == 1 and "lower tracker.association_threshold" in s["hints"][0]
    assert "lower tracker.association_threshold" in caplog.text


def test_long_tracks_hint_raise_the_threshold():
    s = track_trace(_chain_trace(22, orthogonal=False), ALL, progress=False).summary()
    assert s["avg_track_length"] == 22.0
    assert len(s["hints"]) == 1 and "raise tracker.association_threshold" in s["hints"][0]


def test_hint_bounds():
    assert tuning_hints(3.0, 12, 0.5) == [] and tuning_hints(20.0, 24, 0.5) == []
    assert len(tuning_hints(2.99, 12, 0.5)) == 1 and len(tuning_hints(20.01, 24, 0.5)) == 1
    assert tuning_hints(1.0, 3, 0.5) == []  # with 3 layers no track can be longer: no hint


def test_summary_is_pooled_over_tracks_and_json_ready(tmp_path):
    result = track_trace(random_trace(n_examples=6, n_layers=5, seed=2), ALL, progress=False)
    summary = write_tracking_summary(result, tmp_path)
    on_disk = json.loads((tmp_path / TRACKING_SUMMARY).read_text())
    assert on_disk == summary
    lengths = [len(t) for g in result.graphs for t in g.tracks().values()]
    assert summary["avg_track_length"] == pytest.approx(np.mean(lengths))
    assert summary["track_count"]["total"] == len(lengths)
    assert summary["histograms"]["track_length"] == {str(n): lengths.count(n) for n in range(1, 6)}
    assert set(summary["births_per_layer"]) == {f"L{j}" for j in range(5)}
    assert summary["churn"]["mean"] == pytest.approx(result.column("churn").mean())
    assert set(summary["by_label"]) <= {"0", "1"} and summary["config"]["association_threshold"] == 0.5


def test_metrics_save_and_load(tmp_path):
    result = track_trace(random_trace(n_examples=3, seed=4), ALL, progress=False, keep_graphs=False)
    result.save(tmp_path)
    assert (tmp_path / TRACK_METRICS).is_file()
    back = TrackingResult.load(tmp_path)
    assert np.array_equal(back.metrics, result.metrics) and back.feature_names == result.feature_names
    assert back.config == result.config and back.ids == result.ids and back.labels == result.labels
    assert back.summary() == result.summary()
