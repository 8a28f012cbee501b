"""A run's graphs file: the one writer (``save_graphs`` -> ``graph_io.write_graphs``) and its reader round trip."""

from __future__ import annotations

import gzip
import json

import pytest

from ghost_lens import constants as C
from ghost_lens.config import TrackerConfig
from ghost_lens.errors import RunFolderError
from ghost_lens.track_run import save_graphs
from ghost_lens.tracking import Node, TrackGraph, track_trace
from ghost_lens.tracking.graph_io import graphs_path, load_graphs, read_graphs, write_graphs
from tests.helpers.trace import random_trace


@pytest.fixture(scope="module")
def graphs() -> list[TrackGraph]:
    trace = random_trace(n_examples=4, n_layers=4, seed=11)
    return track_trace(trace, TrackerConfig(positions="all"), progress=False).graphs


def test_run_graphs_round_trip(graphs, tmp_path):
    ids = [f"q{i}" for i in range(len(graphs))]
    path = save_graphs(graphs, ids, tmp_path / C.GRAPHS_DIR)
    assert path == graphs_path(tmp_path) and path.name == C.GRAPHS_FILE
    loaded = load_graphs(tmp_path)
    assert list(loaded) == ids  # the order written
    for ex_id, g in zip(ids, graphs, strict=True):
        back = loaded[ex_id]
        assert back == g and back.graph.graph == g.graph.graph  # nodes, edges, every attribute
        assert all(isinstance(n, Node) for n in back.graph.nodes)
        assert back.tracks() == g.tracks() and back.clutter == g.clutter and back.layers == g.layers
    assert sum(g.graph.number_of_edges() for g in graphs) > 0


def test_one_serialised_form_for_the_run_file_and_single_graph_files(graphs, tmp_path):
    """Each line of graphs.jsonl.gz holds what ``TrackGraph.to_node_link`` writes for that graph alone."""
    path = write_graphs(tmp_path / "g.jsonl.gz", [("a", graphs[0]), ("b", graphs[1])])
    with gzip.open(path, "rt") as fh:
        rows = [json.loads(line) for line in fh]
    single = json.loads(graphs[1].to_node_link(tmp_path / "b.json").read_text())
    assert [r["id"] for r in rows] == ["a", "b"] and rows[1]["graph"] == single
    assert TrackGraph.load(tmp_path / "b.json") == read_graphs(path)["b"] == graphs[1]
    assert read_graphs(write_graphs(tmp_path / "empty.jsonl.gz", [])) == {}


def test_bad_graph_files_are_one_line_errors(graphs, tmp_path):
    with pytest.raises(RunFolderError, match="no track graphs at .*run `ghost-lens track`"):
        load_graphs(tmp_path / "no-run")
    torn = tmp_path / "torn.jsonl.gz"
    torn.write_bytes(gzip.compress(b'{"id": "a", "graph": {"directed": true'))
    with pytest.raises(RunFolderError, match="unreadable track graphs"):
        read_graphs(torn)
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_text("{}\n")
    with pytest.raises(RunFolderError, match="unreadable track graphs"):
        read_graphs(not_gzip)
    with pytest.raises(RunFolderError, match="appears twice"):
        read_graphs(write_graphs(tmp_path / "dup.jsonl.gz", [("a", graphs[0]), ("a", graphs[1])]))
    wrong = tmp_path / "wrong.jsonl.gz"
    wrong.write_bytes(gzip.compress(b'{"name": "a"}\n'))
    with pytest.raises(RunFolderError, match="line 1 is not an"):
        read_graphs(wrong)
