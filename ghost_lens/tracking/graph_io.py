"""A run's track graphs in one file: ``graphs/graphs.jsonl.gz``, written and read back here.

1. :func:`write_graphs`: one JSON line per example, ``{"id": <example id>, "graph": <node-link dict>}``, gzip, written
   atomically (temporary file, fsync, rename). The node-link dict is :meth:`TrackGraph.node_link_data
   <ghost_lens.tracking.graph.TrackGraph.node_link_data>` (string node ids ``L{layer}/F{feature}/P{pos}``), the same
   form :meth:`~ghost_lens.tracking.graph.TrackGraph.to_node_link` writes for one graph.
2. :func:`read_graphs` / :func:`load_graphs`: the file (or a run folder's) back as example id -> :class:`TrackGraph`
   with typed :class:`~ghost_lens.tracking.graph.Node` keys, in the order written; ``TrackGraph.graph`` is the
   networkx ``DiGraph``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from pathlib import Path

from ghost_lens import constants as C
from ghost_lens.errors import RunFolderError
from ghost_lens.io import atomic_path
from ghost_lens.tracking.graph import TrackGraph


def graphs_path(run_folder: str | Path) -> Path:
    """``<run>/graphs/graphs.jsonl.gz``."""
    return Path(run_folder) / C.GRAPHS_DIR / C.GRAPHS_FILE


def write_graphs(path: str | Path, graphs: Iterable[tuple[str, TrackGraph]]) -> Path:
    """Write ``(example id, graph)`` pairs as gzip node-link JSON lines into ``path`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # gzip level 6 (zlib's default) rather than gzip.open's 9: 2.8x faster to compress for 2% more bytes
    # (gpt2-medium shape, 27 graphs: 0.23 s and 1.60 MB against 0.65 s and 1.57 MB), the same text read back
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8", compresslevel=6) as fh:
        for ex_id, graph in graphs:
            fh.write(json.dumps({"id": str(ex_id), "graph": graph.node_link_data()}) + "\n")
    return path


def read_graphs(path: str | Path) -> dict[str, TrackGraph]:
    """The graphs of a file written by :func:`write_graphs`, example id -> :class:`TrackGraph`, in file order."""
    path = Path(path)
    if not path.is_file():
        raise RunFolderError(f"no track graphs at {path}: run `ghost-lens track` (it writes them)")
    out: dict[str, TrackGraph] = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict) or "id" not in row or "graph" not in row:
                    raise RunFolderError(f"{path}: line {n} is not an {{'id', 'graph'}} record")
                if row["id"] in out:
                    raise RunFolderError(f"{path}: example id {row['id']!r} appears twice (line {n})")
                out[str(row["id"])] = TrackGraph.from_node_link_data(row["graph"])
    except (OSError, EOFError, json.JSONDecodeError, KeyError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable track graphs ({type(exc).__name__}: {exc})") from None
    return out


def load_graphs(run_folder: str | Path) -> dict[str, TrackGraph]:
    """The track graphs a ``ghost-lens track`` run saved in ``run_folder`` (example id -> :class:`TrackGraph`)."""
    return read_graphs(graphs_path(run_folder))
