"""Hypothesis tracking: SAE features followed across layers as tracks (births, continuations, deaths)."""

from ghost_lens.tracking.graph import Node, TrackGraph, format_node_id, parse_node_id
from ghost_lens.tracking.metrics import compute_metrics, feature_names, metrics_dict
from ghost_lens.tracking.result import TrackingResult, track_trace
from ghost_lens.tracking.summary import tracking_summary, tuning_hints, write_tracking_summary
from ghost_lens.tracking.tracker import Tracker, random_decoders, track_example


def __getattr__(name: str):  # plot_tracks imports matplotlib: only when asked for
    if name == "plot_tracks":
        from ghost_lens.tracking.track_plot import plot_tracks

        return plot_tracks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Node",
    "TrackGraph",
    "Tracker",
    "TrackingResult",
    "compute_metrics",
    "feature_names",
    "format_node_id",
    "metrics_dict",
    "parse_node_id",
    "plot_tracks",
    "random_decoders",
    "track_example",
    "track_trace",
    "tracking_summary",
    "tuning_hints",
    "write_tracking_summary",
]
