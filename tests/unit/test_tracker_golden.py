"""Golden tests of the tracker on hand-built traces (semantics: ghost_lens/tracking/tracker.py docstring)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from ghost_lens.config import TrackerConfig
from ghost_lens.errors import ConfigError
from ghost_lens.tracking import Node, metrics_dict, random_decoders, track_example, track_trace
from ghost_lens.tracking.association import match_greedy, match_optimal
from ghost_lens.tracking.detections import tracked_positions
from tests.helpers.trace import make_trace, random_trace, unit

ALL = TrackerConfig(positions="all")
SEMANTIC_ONLY = TrackerConfig(
    positions="all", semantic_weight=1.0, activation_weight=0.0, position_weight=0.0
)
E = [unit(*([0.0] * i + [1.0])) for i in range(8)]  # orthonormal basis of R^8


def _edges(graph):
    return {(u, v): d for u, v, d in graph.graph.edges(data=True)}


def test_identical_directions_make_one_track_spanning_all_layers():
    n_layers = 6
    trace = make_trace(
        [[[(10 + j, 3, 1.0 + j)] for j in range(n_layers)]],
        {10 + j: E[0] for j in range(n_layers)},
        layers=[2, 4, 6, 8, 10, 12],
    )
    g = track_example(trace, 0, ALL)
    assert g.tracks() == {0: [Node(layer, 10 + j, 3) for j, layer in enumerate([2, 4, 6, 8, 10, 12])]}
    assert all(
        d["score"] == pytest.approx(1.0) and d["semantic"] == pytest.approx(1.0) for d in _edges(g).values()
    )
    m = metrics_dict(g)
    assert m["n_tracks"] == 1 and m["mean_track_length"] == n_layers and m["survival"] == 1.0
    assert m["churn"] == 0.0 and m["entropy"] == 0.0 and m["dominant_share"] == 1.0
    assert m["births_L2"] == 1 and sum(m[f"deaths_L{layer}"] for layer in g.layers) == 0


def test_each_feature_keeps_its_own_track_when_directions_are_shared_per_feature():
    # three features at the same token, orthogonal to each other, each with the same direction at every layer
    n_layers = 4
    dets = [[[(f, 1, 1.0) for f in (1, 2, 3)] for _ in range(n_layers)]]
    g = track_example(make_trace(dets, {1: E[0], 2: E[1], 3: E[2]}), 0, ALL)
    assert [[n.feature for n in nodes] for nodes in g.tracks().values()] == [[1] * 4, [2] * 4, [3] * 4]


def test_orthogonal_directions_make_a_birth_and_a_death_at_every_layer():
    n_layers = 5
    trace = make_trace([[[(j, 2, 1.0)] for j in range(n_layers)]], {j: E[j] for j in range(n_layers)})
    g = track_example(trace, 0, ALL)
    m = metrics_dict(g)
    assert g.graph.number_of_edges() == 0 and m["n_tracks"] == n_layers
    assert [m[f"births_L{j}"] for j in range(n_layers)] == [1] * n_layers
    # every track but the last layer's dies where it was born; the last layer's reaches the end (survives)
    assert [m[f"deaths_L{j}"] for j in range(n_layers)] == [1] * (n_layers - 1) + [0]
    assert m["survivors"] == 1 and m["len_hist_1"] == n_layers
    assert m["churn"] == pytest.approx(2 * (n_layers - 1) / n_layers)
    assert m["entropy"] == pytest.approx(math.log(n_layers)) and m["entropy_norm"] == pytest.approx(1.0)


COS_HALF = unit(0.5, math.sqrt(3) / 2)  # cosine with E[0] is exactly 0.5


@pytest.mark.parametrize(("threshold", "continues"), [(0.5, True), (0.5 + 1e-4, False)])
def test_score_exactly_at_association_threshold_continues(threshold, continues):
    trace = make_trace([[[(1, 0, 1.0)], [(2, 0, 1.0)]]], {1: E[0], 2: COS_HALF})
    cfg = TrackerConfig(
        positions="all",
        semantic_weight=1.0,
        activation_weight=0.0,
        position_weight=0.0,
        association_threshold=threshold,
    )
    g = track_example(trace, 0, cfg)
    assert g.graph.number_of_edges() == int(continues)
    assert g.n_tracks == (1 if continues else 2)


@pytest.mark.parametrize(("value", "born"), [(1.0, True), (0.999, False)])
def test_activation_exactly_at_birth_threshold_starts_a_track(value, born):
    # normalised activation = value / 2.0: exactly 0.5 is born, 0.4995 is clutter
    trace = make_trace([[[(1, 0, 2.0), (2, 1, value)]]], {1: E[0], 2: E[1]})
    g = track_example(trace, 0, ALL)
    assert g.n_tracks == (2 if born else 1)
    assert g.clutter == [0 if born else 1]


@pytest.mark.parametrize(("value", "continues"), [(0.1, True), (0.0999, False)])
def test_continuation_exactly_at_death_threshold_keeps_the_track(value, continues):
    # layer 1: feature 2 continues feature 2 with normalised activation value / 1.0
    dets = [[[(1, 0, 1.0), (2, 1, 1.0)], [(1, 0, 1.0), (2, 1, value)]]]
    g = track_example(make_trace(dets, {1: E[0], 2: E[1]}), 0, ALL)
    m = metrics_dict(g)
    assert g.graph.has_edge(Node(0, 2, 1), Node(1, 2, 1)) == continues
    assert m["deaths_L0"] == (0 if continues else 1)
    assert g.clutter == [0, 0 if continues else 1]  # below birth_threshold too: clutter


def test_raising_position_weight_pairs_the_nearby_detection():
    near = unit(0.6, 0.8)  # cos 0.6 with E[0], at the same token
    dets = [[[(1, 2, 1.0)], [(2, 2, 1.0), (3, 6, 1.0)]]]  # feature 3: same direction, 4 tokens away
    trace = make_trace(dets, [{1: E[0]}, {2: near, 3: E[0]}])
    default = track_example(trace, 0, ALL)
    assert set(_edges(default)) == {(Node(0, 1, 2), Node(1, 3, 6))}
    local = track_example(trace, 0, TrackerConfig(positions="all", position_weight=2.0))
    assert set(_edges(local)) == {(Node(0, 1, 2), Node(1, 2, 2))}
    (d,) = _edges(local).values()
    assert d["position"] == pytest.approx(1.0) and d["semantic"] == pytest.approx(0.6)
    assert d["score"] == pytest.approx((0.6 * 0.6 + 0.2 * 1.0 + 2.0 * 1.0) / 2.8)


def _vectors_with_gram(gram: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(gram)
    assert w.min() > 0
    return v @ np.diag(np.sqrt(w)) @ v.T  # rows have exactly this Gram matrix (up to rounding)


def test_optimal_and_greedy_differ_and_optimal_scores_higher():
    # cos(a,x)=0.9 cos(a,y)=0.8 cos(b,x)=0.8 cos(b,y)=0.1: greedy takes a-x and strands b; optimal takes a-y, b-x
    gram = np.array([[1, 0.6, 0.9, 0.8], [0.6, 1, 0.8, 0.1], [0.9, 0.8, 1, 0.6], [0.8, 0.1, 0.6, 1]])
    a, b, x, y = _vectors_with_gram(gram)
    trace = make_trace([[[(1, 0, 1.0), (2, 1, 1.0)], [(3, 0, 1.0), (4, 1, 1.0)]]], {1: a, 2: b, 3: x, 4: y})
    opt = track_example(trace, 0, SEMANTIC_ONLY)
    greedy = track_example(trace, 0, TrackerConfig(**{**SEMANTIC_ONLY.__dict__, "assignment": "greedy"}))
    assert set(_edges(opt)) == {(Node(0, 1, 0), Node(1, 4, 1)), (Node(0, 2, 1), Node(1, 3, 0))}
    assert set(_edges(greedy)) == {(Node(0, 1, 0), Node(1, 3, 0))}
    total = lambda g: sum(d["score"] for d in _edges(g).values())  # noqa: E731
    assert total(opt) == pytest.approx(1.6, abs=1e-5) and total(greedy) == pytest.approx(0.9, abs=1e-5)
    assert metrics_dict(greedy)["deaths_L0"] == 1 and metrics_dict(opt)["deaths_L0"] == 0


def _greedy_loop(score, adm):
    pairs = sorted(((-score[r, c], r, c) for r, c in zip(*np.nonzero(adm), strict=True)))
    used_r, used_c, out = set(), set(), []
    for _, r, c in pairs:
        if r not in used_r and c not in used_c:
            used_r.add(r), used_c.add(c), out.append((r, c))
    return sorted(out)


@pytest.mark.parametrize("seed", range(20))
def test_batched_matchers_against_loop_greedy_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, m = (int(x) for x in rng.integers(1, 6, size=2))
    score = np.round(rng.random((3, n, m)), 1 if seed % 2 else 6)  # a batch of 3; odd seeds: many ties
    adm = score >= 0.4
    adm[1] &= rng.random((n, m)) < 0.3  # a sparse item (often conflict-free: the no-assignment shortcut)
    gb, gr, gc = match_greedy(score, adm)
    ob, o_r, oc = match_optimal(score, adm)
    for i in range(3):
        greedy = list(zip(gr[gb == i].tolist(), gc[gb == i].tolist(), strict=True))
        assert greedy == _greedy_loop(score[i], adm[i])
        r, c = o_r[ob == i], oc[ob == i]
        assert adm[i][r, c].all() and len(set(r)) == len(r) and len(set(c)) == len(c)
        best = 0.0
        for perm in itertools.permutations(range(max(n, m)), max(n, m)):
            pairs = [(a, perm[a]) for a in range(n) if perm[a] < m and adm[i, a, perm[a]]]
            best = max(best, sum(score[i, a, b] for a, b in pairs))
        assert score[i][r, c].sum() == pytest.approx(best)


def test_positions_modes():
    assert tracked_positions(10, 6, 9, "answer").tolist() == [6, 7, 8]
    assert tracked_positions(10, 6, 9, "last_prompt_and_answer").tolist() == [5, 6, 7, 8]
    assert tracked_positions(10, 0, 2, "last_prompt_and_answer").tolist() == [0, 1]
    assert tracked_positions(4, 2, 4, "all").tolist() == [0, 1, 2, 3]


def test_top_k_features_keeps_the_strongest_in_the_tracked_span():
    # positions 0..3; answer = 2..3; a strong prompt feature at 0 is outside the span
    dets = [[[(1, 0, 9.0), (2, 1, 3.0), (3, 2, 2.0), (4, 3, 5.0), (5, 3, 1.0)]]]
    trace = make_trace(dets, {f: E[f] for f in range(1, 6)}, n_tokens=4, answer_start=2, answer_end=4)
    g = track_example(trace, 0, TrackerConfig(top_k_features=2, birth_threshold=0.0))
    assert sorted(n.feature for n in g.graph.nodes) == [2, 4]  # last prompt token (1) + answer (2, 3): top 2
    acts = {n.feature: d["norm_activation"] for n, d in g.graph.nodes(data=True)}
    assert acts == {4: 1.0, 2: pytest.approx(0.6)}


def test_empty_answer_gives_an_empty_graph_and_zero_metrics():
    trace = make_trace([[[(1, 0, 1.0)], [(1, 0, 1.0)]]], {1: E[0]}, n_tokens=3, answer_start=3, answer_end=3)
    g = track_example(trace, 0, TrackerConfig(positions="answer"))
    assert g.graph.number_of_nodes() == 0 and all(v == 0 for v in metrics_dict(g).values())


def test_random_decoder_control_is_seeded_and_changes_tracks():
    trace = random_trace(n_examples=3, seed=1, correlation=0.98)
    sae = track_trace(trace, ALL, progress=False, keep_graphs=False)
    r1 = track_trace(trace, ALL, decoder_mode="random", seed=5, progress=False, keep_graphs=False)
    r2 = track_trace(trace, ALL, decoder_mode="random", seed=5, progress=False, keep_graphs=False)
    assert np.array_equal(r1.metrics, r2.metrics) and r1.graphs is None
    assert sae.column("mean_track_length").mean() > r1.column("mean_track_length").mean()
    dec = random_decoders(trace, 0)
    assert [d.shape for d in dec] == [d.shape for d in trace.dec_dir]
    assert np.allclose(dec[0].norm(dim=-1).numpy(), 1.0, atol=1e-5)


def test_config_rejects_bad_thresholds():
    with pytest.raises(ConfigError, match="association_threshold"):
        TrackerConfig(association_threshold=0.0)
    with pytest.raises(ConfigError, match="birth_threshold"):
        TrackerConfig(birth_threshold=1.5)
