"""File names of every artifact ghost-lens writes (one place, so save_* and load_* agree)."""

# capture stage
CAPTURE_DIR = "capture"
"""The run folder's capture sub-folder."""
CAPTURE_TENSORS = "capture.safetensors"
CAPTURE_META = "capture.json"
CAPTURE_DECODERS = "decoders.safetensors"
CAPTURE_SHARDS_DIR = "shards"
"""Sub-folder of a sharded capture holding one folder per shard (``00000``, ``00001``...)."""
CAPTURE_PARTIAL = "capture.partial"
"""Run-folder sibling of ``capture/`` where a capture is built shard by shard (and resumed) until it is complete."""

# tracking stage
GRAPHS_DIR = "graphs"
GRAPHS_FILE = "graphs.jsonl.gz"
"""All of a run's track graphs, one gzip node-link JSON line per example (:mod:`ghost_lens.tracking.graph_io`)."""
TRACK_METRICS = "track_metrics.json"
TRACKING_SUMMARY = "tracking_summary.json"

# detection / evaluation stage
DETECTION_METRICS = "detection_metrics.json"
PREDICTIONS = "predictions.csv"
ROC_PLOT = "roc.png"
RELIABILITY_PLOT = "reliability.png"
TRACK_PLOT = "tracks_example.png"
DETECTOR_ARRAYS = "detector.safetensors"
DETECTOR_META = "detector.json"

# run folder
MANIFEST = "manifest.json"
CONFIG = "config.yaml"
REPORT = "report.md"
TUNE_RESULTS = "tune_results.json"

# SAE folders (SAELens's own names, written by sae.save_model)
SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
SAE_QUALITY = "quality.json"

# environment
CACHE_ENV = "GHOST_LENS_CACHE"
