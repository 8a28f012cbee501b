"""Tracker options for per-position tracks: the ``last_prompt`` position set, the ``layer`` / ``none``
normalisations, and the raw-scale metrics (vectorised kernels checked against slow loop references)."""

from __future__ import annotations

import numpy as np
import pytest

from ghost_lens.config import TrackerConfig
from ghost_lens.errors import ConfigError
from ghost_lens.tracking import track_example, track_trace
from ghost_lens.tracking.detections import TraceArrays, tracked_positions
from ghost_lens.tracking.metrics import feature_names, scale_feature_names
from ghost_lens.tracking.tracker import Tracker
from tests.helpers.trace import make_trace, random_trace, unit
from tests.unit.test_track_metrics import reference_metrics


def reference_scale(graph) -> dict[str, float]:
    """Loop-by-loop raw-scale metrics of one example's graph (module docstring of tracking/metrics.py, step 6)."""
    g, layers = graph.graph, graph.layers
    out = dict.fromkeys(scale_feature_names(layers), 0.0)
    for _, d in g.nodes(data=True):
        a, layer = d["activation"], layers[d["layer_pos"]]
        out["raw_mass"] += a
        out[f"raw_mass_L{layer}"] += a
        out["raw_max"] = max(out["raw_max"], a)
        out[f"raw_max_L{layer}"] = max(out[f"raw_max_L{layer}"], a)
    for nodes in graph.tracks().values():
        out["raw_dominant_mass"] = max(out["raw_dominant_mass"], sum(g.nodes[n]["activation"] for n in nodes))
    return out


def reference_layer_scale(trace, mode: str) -> np.ndarray:
    """Per layer: the mean over examples (with any activation) of the largest activation in the tracked span."""
    out = []
    for j in range(trace.n_layers):
        tops = []
        for i in range(trace.n_examples):
            s = trace.example_slice(i)
            n_tok = s.stop - s.start
            pos = tracked_positions(n_tok, int(trace.answer_start[i]), int(trace.answer_end[i]), mode)
            vals = [float(trace.feat_val[j, s.start + p].max()) for p in pos]
            if vals and max(vals) > 0:
                tops.append(max(vals))
        out.append(sum(tops) / len(tops) if tops else 1.0)
    return np.asarray(out)


CFGS = [
    TrackerConfig(positions="last_prompt", normalization="none"),
    TrackerConfig(positions="answer", normalization="layer", top_k_features=6),
    TrackerConfig(positions="last_prompt_and_answer", normalization="max", assignment="greedy"),
    TrackerConfig(positions="all", normalization="layer", birth_threshold=0.3, death_threshold=0.05),
]


@pytest.mark.parametrize("cfg", CFGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_scale_and_track_metrics_match_the_loop_references(cfg, seed):
    trace = random_trace(n_examples=6, n_layers=4, seed=seed)
    result = track_trace(trace, cfg, progress=False, keep_graphs=True, scale=True)
    names = feature_names(result.layers) + scale_feature_names(result.layers)
    assert result.feature_names == names
    for i, graph in enumerate(result.graphs):
        ref = {**reference_metrics(graph), **reference_scale(graph)}
        np.testing.assert_allclose(result.metrics[i], [ref[n] for n in names], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["answer", "last_prompt", "last_prompt_and_answer", "all"])
def test_layer_scale_matches_the_loop_reference(mode):
    trace = random_trace(n_examples=7, n_layers=3, n_tokens=(2, 10), seed=3)
    np.testing.assert_allclose(TraceArrays(trace).layer_scale(mode), reference_layer_scale(trace, mode), rtol=1e-6)


def test_last_prompt_positions_and_normalisations_by_hand():
    assert tracked_positions(10, 6, 9, "last_prompt").tolist() == [5]
    assert tracked_positions(4, 0, 2, "last_prompt").tolist() == [0]
    e = {f: unit(1.0) for f in range(1, 9)}
    # example 0: last prompt token 2 carries features 1 (4.0) and 2 (2.0) at every layer; the answer (3) carries 3
    # example 1: the same with everything halved
    ex = lambda s: [[(1, 2, 4.0 * s), (2, 2, 2.0 * s), (3, 3, 8.0 * s)] for _ in range(2)]  # noqa: E731
    trace = make_trace([ex(1.0), ex(0.5)], e, n_tokens=4, answer_start=3, k=2)
    data = TraceArrays(trace)
    idx = np.arange(2)
    d_max = data.detections(idx, "last_prompt", 10, "max")
    assert d_max.pos[d_max.valid].tolist() == [2] * 8  # only the last prompt token
    np.testing.assert_allclose(d_max.norm_activation[:, :, :2], [[[1.0, 0.5]] * 2] * 2)  # scale-free: equal
    d_none = data.detections(idx, "last_prompt", 10, "none")
    np.testing.assert_allclose(d_none.norm_activation[:, 0, :2], [[4.0, 2.0], [2.0, 1.0]])
    assert data.layer_scale("last_prompt").tolist() == [3.0, 3.0]  # mean of the tops 4.0 and 2.0
    d_layer = data.detections(idx, "last_prompt", 10, "layer")
    np.testing.assert_allclose(d_layer.norm_activation[:, 0, :2], [[4 / 3, 2 / 3], [2 / 3, 1 / 3]])
    # "max": both examples start two tracks through both layers; "layer": the halved example's weaker feature
    # (1/3 < birth_threshold 0.5) is clutter, so it keeps one track only
    for norm, nodes in (("max", [4, 4]), ("layer", [4, 2])):
        cfg = TrackerConfig(positions="last_prompt", normalization=norm)
        assert [track_example(trace, i, cfg).graph.number_of_nodes() for i in (0, 1)] == nodes
    with pytest.raises(ValueError, match="normalization"):
        data.detections(idx, "last_prompt", 10, "softmax")
    with pytest.raises(ConfigError):
        from ghost_lens.config_io import from_dict

        from_dict(TrackerConfig, {"normalization": "softmax"})


def test_layer_normalisation_does_not_depend_on_batching():
    trace = random_trace(n_examples=7, n_layers=4, n_tokens=(2, 14), seed=5)
    cfg = TrackerConfig(positions="answer", normalization="layer", top_k_features=8)
    whole = track_trace(trace, cfg, progress=False, keep_graphs=False, scale=True)
    tracker = Tracker(trace, cfg)
    from ghost_lens.tracking.metrics import batch_metrics, batch_scale_metrics

    for i in range(trace.n_examples):
        b = tracker.batch(np.asarray([i]))
        np.testing.assert_allclose(np.concatenate([batch_metrics(b), batch_scale_metrics(b)], 1),
                                   whole.metrics[i : i + 1], rtol=1e-9)
