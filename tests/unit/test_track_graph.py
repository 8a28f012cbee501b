"""TrackGraph: node ids, tracks(), node-link JSON and GraphML round trips, the plot."""

from __future__ import annotations

import networkx as nx
import pytest

from ghost_lens.config import TrackerConfig
from ghost_lens.tracking import Node, TrackGraph, format_node_id, parse_node_id, plot_tracks, track_trace
from tests.helpers.trace import random_trace


@pytest.fixture(scope="module")
def graph() -> TrackGraph:
    trace = random_trace(n_examples=1, n_layers=5, seed=7)
    return track_trace(trace, TrackerConfig(positions="all"), progress=False).graphs[0]


@pytest.mark.parametrize("node", [Node(0, 0, 0), Node(23, 24575, 1023), Node(3, 10, 12)])
def test_node_id_round_trip(node):
    text = format_node_id(node)
    assert parse_node_id(text) == node and isinstance(parse_node_id(text), Node)


@pytest.mark.parametrize("bad", ["L1/F2", "L1/F2/P-3", "3/4/5", "L1/F2/P3/x", "l1/f2/p3", ""])
def test_parse_node_id_rejects_other_strings(bad):
    with pytest.raises(ValueError, match="node id"):
        parse_node_id(bad)


def test_distinct_nodes_get_distinct_ids():
    nodes = [Node(1, 12, 3), Node(11, 2, 3), Node(1, 1, 23), Node(11, 23, 0)]
    assert len({format_node_id(n) for n in nodes}) == len(nodes)


def test_graph_carries_documented_attributes(graph):
    g = graph.graph
    assert g.number_of_edges() > 0 and g.number_of_nodes() > g.number_of_edges()
    for n, d in g.nodes(data=True):
        assert isinstance(n, Node) and set(d) == {"layer_pos", "activation", "norm_activation", "track"}
        assert graph.layers[d["layer_pos"]] == n.layer and 0 < d["norm_activation"] <= 1
    for u, v, d in g.edges(data=True):
        assert set(d) == {"score", "semantic", "activation", "position"}
        assert (
            g.nodes[u]["track"] == g.nodes[v]["track"]
            and g.nodes[v]["layer_pos"] == g.nodes[u]["layer_pos"] + 1
        )
    assert len(graph.clutter) == len(graph.layers) and graph.example == "ex0"


def test_tracks_are_chains_in_layer_order(graph):
    tracks = graph.tracks()
    assert sorted(tracks) == list(range(len(tracks)))
    for nodes in tracks.values():
        assert [n.layer for n in nodes] == sorted(n.layer for n in nodes)
        assert all(graph.graph.has_edge(a, b) for a, b in zip(nodes, nodes[1:], strict=False))


@pytest.mark.parametrize("suffix", [".json", ".graphml"])
def test_export_and_load_give_an_equal_graph(graph, tmp_path, suffix):
    path = tmp_path / f"g{suffix}"
    (graph.to_node_link if suffix == ".json" else graph.to_graphml)(path)
    back = TrackGraph.load(path)
    assert nx.utils.graphs_equal(back.graph, graph.graph)
    assert back == graph
    assert all(isinstance(n, Node) for n in back.graph.nodes)
    for n, d in back.graph.nodes(data=True):
        assert d == graph.graph.nodes[n]
        assert type(d["track"]) is int and type(d["activation"]) is float
    for u, v, d in back.graph.edges(data=True):
        assert d == graph.graph.edges[u, v]
    assert back.layers == graph.layers and back.clutter == graph.clutter and back.tracks() == graph.tracks()


def test_plot_writes_a_png(graph, tmp_path):
    path = plot_tracks(graph, tmp_path / "tracks.png", title="example 0", max_tracks=10)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_plot_of_an_empty_graph(tmp_path):
    empty = TrackGraph(nx.DiGraph(layers=[0, 1], clutter=[0, 0], example="e"))
    assert plot_tracks(empty, tmp_path / "e.png").stat().st_size > 0
