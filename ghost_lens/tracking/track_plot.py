"""Plot of one example's tracks (for ``explain``): layers across, one lane per track, heaviest track on top.

Each track is a line over the layers it spans; a segment's width follows the mean normalised activation of its
two detections. Births are green triangles, deaths (tracks ending before the last layer) red crosses; a track of
one detection is a single marker. Only the ``max_tracks`` tracks of largest activation mass are drawn (the title
says how many there are). Rendered with the Agg canvas directly: no pyplot, no global backend switch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ghost_lens.tracking.graph import TrackGraph


def plot_tracks(
    graph: TrackGraph, path: str | Path, title: str | None = None, *, max_tracks: int = 40
) -> Path:
    """Write a PNG of ``graph``'s tracks to ``path`` and return the path."""
    layers = graph.layers
    last = len(layers) - 1
    g = graph.graph
    tracks = graph.tracks()
    mass = {t: sum(g.nodes[n]["norm_activation"] for n in nodes) for t, nodes in tracks.items()}
    order = sorted(tracks, key=lambda t: (-mass[t], t))[:max_tracks]

    fig = Figure(figsize=(max(6.0, 0.45 * len(layers) + 3), max(3.0, 0.22 * len(order) + 1.5)), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    segs, widths, colors = [], [], []
    births, deaths = [], []
    for lane, t in enumerate(order):
        nodes = tracks[t]
        y = -lane
        color = f"C{lane % 10}"
        xs = [g.nodes[n]["layer_pos"] for n in nodes]
        acts = [g.nodes[n]["norm_activation"] for n in nodes]
        for k in range(len(nodes) - 1):
            segs.append([(xs[k], y), (xs[k + 1], y)])
            widths.append(0.5 + 5.0 * (acts[k] + acts[k + 1]) / 2)
            colors.append(color)
        if len(nodes) == 1:
            ax.scatter([xs[0]], [y], s=10 + 60 * acts[0], color=color, zorder=2)
        births.append((xs[0], y))
        if xs[-1] < last:
            deaths.append((xs[-1], y))
    if segs:
        ax.add_collection(LineCollection(segs, linewidths=widths, colors=colors, capstyle="round", zorder=1))
    if births:
        b = np.asarray(births)
        ax.scatter(b[:, 0], b[:, 1], marker=">", color="tab:green", s=22, zorder=3, label="birth")
    if deaths:
        d = np.asarray(deaths)
        ax.scatter(d[:, 0], d[:, 1], marker="x", color="tab:red", s=26, zorder=3, label="death")
    ax.set_xlim(-0.5, max(last, 0) + 0.5)
    ax.set_ylim(-max(len(order), 1) + 0.5, 0.5)
    ax.set_xticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_yticks(
        [-lane for lane in range(len(order))],
        [f"#{t} F{tracks[t][0].feature}@{tracks[t][0].pos}" for t in order],
        fontsize=6,
    )
    ax.set_xlabel("layer")
    ax.set_ylabel("track (by activation mass)")
    shown = f"{len(order)} of {len(tracks)} tracks" if len(order) < len(tracks) else f"{len(tracks)} tracks"
    ax.set_title(f"{title or graph.example or 'tracks'} ({shown})", fontsize=9)
    if births or deaths:
        ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    from ghost_lens.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    return path
