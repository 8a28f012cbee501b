"""The vectorised track metrics agree with a slow loop reference on random traces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ghost_lens.config import TrackerConfig
from ghost_lens.tracking import TrackGraph, feature_names, metrics_dict, track_example, track_trace
from ghost_lens.tracking.metrics import batch_metrics
from ghost_lens.tracking.tracker import Tracker
from tests.helpers.trace import random_trace


def reference_metrics(graph: TrackGraph) -> dict[str, float]:
    """Loop-by-loop definitions, written from the metrics module's docstring."""
    g, layers = graph.graph, graph.layers
    last = len(layers) - 1
    tracks = graph.tracks()
    out = dict.fromkeys(feature_names(layers), 0.0)
    spans, masses = [], []
    for nodes in tracks.values():
        lps = [g.nodes[n]["layer_pos"] for n in nodes]
        spans.append((min(lps), max(lps), len(nodes)))
        masses.append(sum(g.nodes[n]["norm_activation"] for n in nodes))
    turnover, live_total = 0.0, 0.0
    for j, layer in enumerate(layers):
        births = sum(1 for s, _, _ in spans if s == j)
        deaths = sum(1 for _, e, _ in spans if e == j and j < last)
        at_j = [d["norm_activation"] for _, d in g.nodes(data=True) if d["layer_pos"] == j]
        out[f"births_L{layer}"], out[f"deaths_L{layer}"], out[f"live_L{layer}"] = births, deaths, len(at_j)
        out[f"clutter_L{layer}"] = graph.clutter[j]
        t = (births if j > 0 else 0) + deaths
        out[f"churn_L{layer}"] = t / len(at_j) if at_j else 0.0
        turnover += t
        live_total += len(at_j)
        out[f"entropy_L{layer}"] = -sum(a / sum(at_j) * math.log(a / sum(at_j)) for a in at_j)
    n = len(tracks)
    out["n_tracks"], out["n_detections"], out["n_clutter"] = n, g.number_of_nodes(), sum(graph.clutter)
    out["births"] = sum(out[f"births_L{layer}"] for layer in layers)
    out["deaths"] = sum(out[f"deaths_L{layer}"] for layer in layers)
    out["churn"] = turnover / live_total if live_total else 0.0
    if n:
        shares = [m / sum(masses) for m in masses]
        out["entropy"] = -sum(p * math.log(p) for p in shares)
        out["entropy_norm"] = out["entropy"] / math.log(n) if n > 1 else 0.0
        out["dominant_share"] = max(shares)
        out["survivors"] = sum(1 for _, e, _ in spans if e == last)
        out["survival"] = out["survivors"] / n
        lengths = [k for _, _, k in spans]
        out["mean_track_length"] = sum(lengths) / n
        out["std_track_length"] = math.sqrt(sum((k - out["mean_track_length"]) ** 2 for k in lengths) / n)
        out["max_track_length"] = max(lengths)
        for k in lengths:
            out[f"len_hist_{k}"] += 1
    return out


@pytest.mark.parametrize(
    "cfg",
    [
        TrackerConfig(positions="all"),
        TrackerConfig(positions="last_prompt_and_answer", top_k_features=5, assignment="greedy"),
        TrackerConfig(positions="all", association_threshold=0.3, birth_threshold=0.2, death_threshold=0.05),
    ],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_metrics_match_the_loop_reference(cfg, seed):
    trace = random_trace(n_examples=5, n_layers=4 + seed, seed=seed)
    result = track_trace(trace, cfg, progress=False, keep_graphs=True)
    lengths = set()
    for i, graph in enumerate(result.graphs):
        ref = reference_metrics(graph)
        assert list(ref) == result.feature_names
        np.testing.assert_allclose(result.metrics[i], list(ref.values()), rtol=1e-9, atol=1e-12)
        assert metrics_dict(graph) == pytest.approx(ref, rel=1e-9, abs=1e-12)
        lengths |= {len(nodes) for nodes in graph.tracks().values()}
    assert len(lengths) >= 3  # the random traces do exercise tracks of several lengths


def test_metric_vector_is_fixed_length_and_named_for_the_detector():
    trace = random_trace(n_examples=4, n_layers=3, seed=3)
    result = track_trace(trace, TrackerConfig(positions="all"), progress=False, keep_graphs=False)
    assert result.metrics.shape == (4, len(feature_names([0, 1, 2])))
    assert {"entropy", "churn", "births_L2", "len_hist_3"} <= set(result.feature_names)
    assert np.isfinite(result.metrics).all()


def test_metrics_dict_accepts_track_ids_that_are_not_contiguous():
    trace = random_trace(n_examples=1, n_layers=4, seed=4)
    graph = track_trace(trace, TrackerConfig(positions="all"), progress=False).graphs[0]
    shifted = graph.graph.copy()
    for _, d in shifted.nodes(data=True):
        d["track"] = d["track"] * 7 + 3
    assert metrics_dict(TrackGraph(shifted)) == pytest.approx(metrics_dict(graph))
    with pytest.raises(ValueError, match="layers"):
        metrics_dict(graph, n_layers=9)


@pytest.mark.parametrize("assignment", ["optimal", "greedy"])
def test_batching_does_not_change_the_outcome(assignment):
    trace = random_trace(n_examples=7, n_layers=4, n_tokens=(2, 14), seed=5)
    cfg = TrackerConfig(positions="last_prompt_and_answer", top_k_features=8, assignment=assignment)
    batched = track_trace(trace, cfg, progress=False)
    tracker = Tracker(trace, cfg)
    for i in range(trace.n_examples):
        alone, together = track_example(trace, i, cfg).graph, batched.graphs[i].graph
        assert set(alone.edges) == set(together.edges) and dict(alone.nodes(data="track")) == dict(
            together.nodes(data="track")
        )
        for u, v, d in alone.edges(data=True):
            assert d == pytest.approx(together.edges[u, v], rel=1e-6)
        single = batch_metrics(tracker.batch(np.asarray([i])))
        np.testing.assert_allclose(single, batched.metrics[i : i + 1], rtol=1e-9)
    split = np.concatenate([batch_metrics(tracker.batch(ex)) for ex in tracker.batches(max_batch=3)])
    np.testing.assert_allclose(split, batched.metrics, rtol=1e-9)
