"""TrackGraph: one example's hypothesis tracks as a networkx DiGraph, with typed node identity.

Nodes are keyed by :class:`Node` ``(layer, feature, pos)``: the model layer number (not its position among the
tracked layers), the SAE feature id and the token position relative to the example's first token. Node attributes:
``layer_pos`` (index among the tracked layers), ``activation`` (raw SAE activation), ``norm_activation``
(activation / the example's largest detection activation at that layer) and ``track`` (track id). Edges link a
track's detection at one tracked layer to its continuation at the next and carry ``score`` (the association score)
and its three unweighted parts ``semantic`` (decoder cosine), ``activation`` (activation similarity) and
``position`` (position locality). Graph attributes: ``layers`` (tracked model layers), ``clutter`` (per tracked
layer, detections neither continuing a track nor strong enough to start one) and ``example`` (the example id).

Files use the string id ``L{layer}/F{feature}/P{pos}`` (:func:`format_node_id` / :func:`parse_node_id`, the one
format/parse pair); node-link JSON keeps list-valued graph attributes as lists, GraphML stores them as JSON text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import networkx as nx

_NODE_ID = re.compile(r"^L(\d+)/F(\d+)/P(\d+)$")
_LIST_ATTRS = ("layers", "clutter")


class Node(NamedTuple):
    """A detection's identity: model layer, SAE feature id, token position within the example."""

    layer: int
    feature: int
    pos: int


def format_node_id(node: Node) -> str:
    """``format_node_id(Node(3, 1024, 7)) == "L3/F1024/P7"``."""
    return f"L{node.layer}/F{node.feature}/P{node.pos}"


def parse_node_id(text: str) -> Node:
    """Inverse of :func:`format_node_id`; raises ``ValueError`` for anything else."""
    m = _NODE_ID.match(text)
    if m is None:
        raise ValueError(f"not a track-graph node id (L<layer>/F<feature>/P<pos>): {text!r}")
    return Node(int(m.group(1)), int(m.group(2)), int(m.group(3)))


@dataclass
class TrackGraph:
    """Thin container around the ``nx.DiGraph``; the analysis lives in pure functions (metrics, plot)."""

    graph: nx.DiGraph

    @property
    def layers(self) -> list[int]:
        return list(self.graph.graph.get("layers", []))

    @property
    def example(self) -> str:
        return str(self.graph.graph.get("example", ""))

    @property
    def clutter(self) -> list[int]:
        return list(self.graph.graph.get("clutter", [0] * len(self.layers)))

    @property
    def n_tracks(self) -> int:
        return len({t for _, t in self.graph.nodes(data="track")})

    def tracks(self) -> dict[int, list[Node]]:
        """Track id -> its nodes in layer order (ids ascending: the order of birth)."""
        out: dict[int, list[Node]] = {}
        for node, t in self.graph.nodes(data="track"):
            out.setdefault(int(t), []).append(node)
        return {t: sorted(nodes, key=lambda n: n.layer) for t, nodes in sorted(out.items())}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrackGraph) and nx.utils.graphs_equal(self.graph, other.graph)

    # ---- export / load -------------------------------------------------------------------------------------------
    def node_link_data(self) -> dict[str, Any]:
        """The node-link dict (``nx.node_link_data(G, edges="edges")``) with string node ids: the one serialised
        form, in :meth:`to_node_link` files and in a run's ``graphs.jsonl.gz`` (:mod:`ghost_lens.tracking.graph_io`)."""
        return nx.node_link_data(_relabel(self.graph, format_node_id), edges="edges")

    @classmethod
    def from_node_link_data(cls, data: dict[str, Any]) -> TrackGraph:
        """Inverse of :meth:`node_link_data`."""
        g = nx.node_link_graph(data, directed=True, edges="edges")
        return cls(_relabel(nx.DiGraph(g), parse_node_id))

    def to_node_link(self, path: str | Path) -> Path:
        """Write node-link JSON (:meth:`node_link_data`) with string node ids."""
        path = Path(path)
        path.write_text(json.dumps(self.node_link_data()))
        return path

    def to_graphml(self, path: str | Path) -> Path:
        """Write GraphML with string node ids; list-valued graph attributes become JSON text."""
        g = _relabel(self.graph, format_node_id)
        for key in _LIST_ATTRS:
            if key in g.graph:
                g.graph[key] = json.dumps(list(g.graph[key]))
        path = Path(path)
        nx.write_graphml(g, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrackGraph:
        """Read a file written by :meth:`to_node_link` (``.json``) or :meth:`to_graphml` (``.graphml``)."""
        path = Path(path)
        if path.suffix == ".graphml":
            g = nx.read_graphml(path)
            for key in ("node_default", "edge_default"):  # added by the GraphML reader
                g.graph.pop(key, None)
            for key in _LIST_ATTRS:
                if isinstance(g.graph.get(key), str):
                    g.graph[key] = json.loads(g.graph[key])
        else:
            return cls.from_node_link_data(json.loads(path.read_text()))
        return cls(_relabel(nx.DiGraph(g), parse_node_id))


def _relabel(g: nx.DiGraph, fn: Any) -> nx.DiGraph:
    out = nx.relabel_nodes(g, {n: fn(n) for n in g.nodes}, copy=True)
    out.graph = dict(g.graph)
    return out
