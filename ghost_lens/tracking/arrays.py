"""The tracker's output as arrays: a whole batch (:class:`TrackBatch`, what the metrics read) and one example
(:class:`TrackArrays`, what becomes a :class:`~ghost_lens.tracking.graph.TrackGraph`)."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from ghost_lens.tracking.detections import Detections
from ghost_lens.tracking.graph import Node, TrackGraph

EDGE_PARTS = ("score", "semantic", "activation", "position")


@dataclass
class TrackArrays:
    """One example: tracked nodes (layer by layer, activation descending), edges (node indices), clutter per layer."""

    layers: list[int]
    layer_pos: np.ndarray
    feature: np.ndarray
    pos: np.ndarray
    activation: np.ndarray
    norm_activation: np.ndarray
    track: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_parts: dict[str, np.ndarray]  # EDGE_PARTS -> [n_edges]
    clutter: np.ndarray
    example: str = ""

    def to_graph(self) -> TrackGraph:
        g = nx.DiGraph(layers=list(self.layers), clutter=[int(c) for c in self.clutter], example=self.example)
        lps = self.layer_pos.tolist()
        nodes = [
            Node(self.layers[lp], f, p)
            for lp, f, p in zip(lps, self.feature.tolist(), self.pos.tolist(), strict=True)
        ]
        attrs = zip(
            lps, self.activation.tolist(), self.norm_activation.tolist(), self.track.tolist(), strict=True
        )
        g.add_nodes_from(
            (n, {"layer_pos": lp, "activation": a, "norm_activation": na, "track": t})
            for n, (lp, a, na, t) in zip(nodes, attrs, strict=True)
        )
        parts = [
            dict(zip(EDGE_PARTS, vals, strict=True))
            for vals in zip(*(self.edge_parts[k].tolist() for k in EDGE_PARTS), strict=True)
        ]
        g.add_edges_from(
            (nodes[s], nodes[d], a)
            for s, d, a in zip(self.edge_src.tolist(), self.edge_dst.tolist(), parts, strict=True)
        )
        return TrackGraph(g)


@dataclass
class TrackBatch:
    """A batch of examples ``[B, L, M]``: detections, their track id (-1: clutter or padding), clutter counts
    ``[B, L]``, and edges from detection ``(b, j - 1, r)`` to ``(b, j, c)`` with their score parts."""

    layers: list[int]
    ids: list[str]
    det: Detections
    track: np.ndarray
    clutter: np.ndarray
    edge_b: np.ndarray
    edge_j: np.ndarray
    edge_r: np.ndarray
    edge_c: np.ndarray
    edge_parts: dict[str, np.ndarray]

    def nodes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(example, layer_pos, slot)`` of every tracked detection, ordered by example, layer, slot."""
        return np.nonzero(self.track >= 0)

    def example(self, b: int) -> TrackArrays:
        """Example ``b``'s tracked nodes and edges, compacted."""
        lp, slot = np.nonzero(self.track[b] >= 0)
        index = np.full(self.track.shape[1:], -1, dtype=np.int64)
        index[lp, slot] = np.arange(lp.size)
        e = self.edge_b == b
        j, r, c = self.edge_j[e], self.edge_r[e], self.edge_c[e]
        d = self.det
        return TrackArrays(
            layers=self.layers,
            layer_pos=lp,
            feature=d.feature[b, lp, slot],
            pos=d.pos[b, lp, slot],
            activation=d.activation[b, lp, slot],
            norm_activation=d.norm_activation[b, lp, slot],
            track=self.track[b, lp, slot],
            edge_src=index[j - 1, r],
            edge_dst=index[j, c],
            edge_parts={k: v[e] for k, v in self.edge_parts.items()},
            clutter=self.clutter[b],
            example=self.ids[b],
        )
