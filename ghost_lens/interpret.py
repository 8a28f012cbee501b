"""``ghost-lens interpret``: what the SAE features of one layer fire on, read from a run's capture (no model).

For tracked layer ``L`` of a :class:`~ghost_lens.capture.trace.FeatureTrace`:

1. The occurrences: every (token, feature, activation) among the top-k features kept per token (``capture.top_k``),
   with the example and the token position each belongs to.
2. Per feature (vectorised with ``bincount``): active tokens and examples, mean / std / max activation, activation
   mass, and the hallucinated share of the examples it fires in (beside the capture's base rate).
3. Per feature, its top-activating examples (the strongest token of each example, strongest examples first) with
   a window of token context decoded through the capture's ``vocab``, the activating token marked ``«...»``, and
   the tokens it fires on most often.
4. Dead features: the SAE's features (width from ``sae_info``) never among the kept top-k of any token. The capture
   keeps only the top-k per token, so "dead" and every count here are relative to that: a feature can fire weakly
   below the top-k and not be seen.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ghost_lens import constants as C
from ghost_lens.errors import ConfigError, RunFolderError

if TYPE_CHECKING:
    from ghost_lens.capture.trace import FeatureTrace

logger = logging.getLogger(__name__)

INTERPRET_DIR = "interpret"
MARK = ("«", "»")


def _occurrences(trace: FeatureTrace, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token rows, feature ids and activations of every kept non-zero top-k entry at layer position ``j``."""
    idx = trace.feat_idx[j].numpy()  # [T, k]
    val = trace.feat_val[j].float().numpy()
    rows, slots = np.nonzero((val > 0) & (idx >= 0))
    return rows, idx[rows, slots].astype(np.int64), val[rows, slots].astype(np.float64)


def _decoder(vocab: dict[str, str]) -> tuple[Any, str]:
    """Token id -> string, and the joiner: "" for sub-word vocabularies whose pieces carry their spaces, " " for
    word-level ones (no piece starts with whitespace)."""
    joiner = "" if any(v[:1].isspace() for v in vocab.values()) else " "
    return (lambda t: vocab.get(str(t), f"<{t}>")), joiner


def context(tokens: Sequence[int], pos: int, window: int, decode: Any, joiner: str) -> str:
    """The tokens around ``pos`` (``window`` each side) with the token at ``pos`` marked ``«...»``."""
    lo, hi = max(0, pos - window), min(len(tokens), pos + window + 1)
    parts = []
    for p in range(lo, hi):
        s = decode(tokens[p])
        if p == pos:
            stripped = s.lstrip()
            s = f"{s[: len(s) - len(stripped)]}{MARK[0]}{stripped}{MARK[1]}"
        parts.append(s)
    return ("..." if lo > 0 else "") + joiner.join(parts) + ("..." if hi < len(tokens) else "")


def interpret_run(run_dir: str | Path, layer: int, **kwargs: Any) -> dict[str, Any]:
    """:func:`interpret_layer` on the saved capture of a run folder (``kwargs``: its keyword options)."""
    from ghost_lens.capture.trace import FeatureTrace
    from ghost_lens.run_folder import check_not_being_written

    check_not_being_written(run_dir)  # a track replacing the capture: one line, not a half-read capture
    return interpret_layer(FeatureTrace.load(Path(run_dir) / C.CAPTURE_DIR), layer, **kwargs)


def interpret_layer(
    trace: FeatureTrace,
    layer: int,
    *,
    top: int = 10,
    features: Sequence[int] | None = None,
    window: int = 5,
    n_common: int = 5,
) -> dict[str, Any]:
    """Per-feature statistics and top-activating examples at model layer ``layer`` (module docstring).

    ``features``: only these feature ids (default: every feature active in the capture, by activation mass).
    """
    j, info = _layer_position(trace, layer)
    d_sae = info.get("d_sae")
    npd_id = info.get("neuronpedia_id")
    _check_options(layer, top, window, features, d_sae)

    rows, feat, act = _occurrences(trace, j)
    offsets = trace.offsets.numpy()
    ex = np.searchsorted(offsets, rows, side="right") - 1  # example of each occurrence
    n_tok = int(trace.tokens.numel())
    labels = np.asarray(trace.meta.get("labels", [0] * trace.n_examples), dtype=np.int64)
    size = int(max(feat.max(initial=-1) + 1, d_sae or 0, max(features or [], default=-1) + 1))
    stats = _feature_stats(feat, act, ex, labels, size, trace.n_examples)
    if features is not None:
        chosen = list(dict.fromkeys(int(f) for f in features))
    else:
        active = np.flatnonzero(stats.count)
        chosen = active[np.argsort(-stats.mass[active], kind="stable")].tolist()

    decode, joiner = _decoder(trace.meta.get("vocab", {}))
    tokens = trace.tokens.numpy()
    ids = trace.meta.get("ids", [str(i) for i in range(trace.n_examples)])
    tops = _top_occurrences(stats.best, feat, act, chosen, top)
    commons = _common_tokens(tokens[rows], feat, chosen, n_common)
    entries = []
    for f, occ, common in zip(chosen, tops, commons, strict=True):
        examples = [_example(trace, tokens, offsets, ids, labels, int(ex[o]), int(rows[o]), float(act[o]), window,
                             decode, joiner) for o in occ]
        entries.append(_feature_entry(f, stats, n_tok, common, examples, decode, npd_id))
    return _layer_summary(trace, layer, info, n_tok, labels, stats.count, window, entries)


def _layer_position(trace: FeatureTrace, layer: int) -> tuple[int, dict[str, Any]]:
    """The position of ``layer`` among the capture's layers and its SAE's ``sae_info`` (a capture with full
    contexts only)."""
    if not trace.full_contexts:
        raise ConfigError("this capture kept only the last prompt token and the answer (capture.positions: tracked); "
                          "interpret needs full contexts: rerun `ghost-lens track` with --set capture.positions=all")
    layers = trace.layers
    if layer not in layers:
        raise ConfigError(f"layer {layer} is not in the capture (layers available: {', '.join(map(str, layers))})")
    return layers.index(layer), (trace.meta.get("sae_info") or {}).get("layers", {}).get(str(layer), {})


def _check_options(layer: int, top: int, window: int, features: Sequence[int] | None, d_sae: int | None) -> None:
    """``top`` / ``window`` in range, every requested feature a feature of the layer's SAE."""
    if top < 1 or window < 0:
        raise ConfigError("--top must be >= 1 and --window >= 0")
    if features is not None:
        bad = [f for f in features if f < 0 or (d_sae is not None and f >= d_sae)]
        if bad:
            raise ConfigError(f"--features: {bad[0]} is not a feature of the layer-{layer} SAE (width {d_sae})")


@dataclass
class _FeatureStats:
    """Per-feature statistics ``[size]`` of the occurrences, and the strongest occurrence of each (feature,
    example)."""

    count: np.ndarray
    mass: np.ndarray
    sq: np.ndarray
    peak: np.ndarray
    n_ex: np.ndarray
    n_ex_halluc: np.ndarray
    best: np.ndarray
    """Occurrence indices, one per (feature, example), grouped by feature."""


def _feature_stats(
    feat: np.ndarray, act: np.ndarray, ex: np.ndarray, labels: np.ndarray, size: int, n_examples: int
) -> _FeatureStats:
    """Step 2 of the module docstring, vectorised with ``bincount``."""
    count = np.bincount(feat, minlength=size)
    mass = np.bincount(feat, weights=act, minlength=size)
    sq = np.bincount(feat, weights=act**2, minlength=size)
    peak = np.zeros(size)
    np.maximum.at(peak, feat, act)
    # the strongest occurrence of each (feature, example): sort by feature, then activation descending
    order = np.lexsort((-act, feat))
    key = feat[order] * n_examples + ex[order]
    _, first = np.unique(key, return_index=True)
    best = order[first]  # one occurrence per (feature, example), grouped by feature
    n_ex = np.bincount(feat[best], minlength=size)
    n_ex_halluc = np.bincount(feat[best], weights=labels[ex[best]], minlength=size)
    return _FeatureStats(count, mass, sq, peak, n_ex, n_ex_halluc, best)


def _top_occurrences(
    best: np.ndarray, feat: np.ndarray, act: np.ndarray, chosen: list[int], top: int
) -> list[list[int]]:
    """Per chosen feature, its ``top`` strongest occurrences among ``best`` (one per example), strongest first."""
    best = best[np.lexsort((-act[best], feat[best]))]  # by (feature, activation descending)
    starts = np.searchsorted(feat[best], chosen, side="left")
    ends = np.searchsorted(feat[best], chosen, side="right")
    return [best[s:e][:top].tolist() for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def _common_tokens(tok_of: np.ndarray, feat: np.ndarray, chosen: list[int], n_common: int) -> list[list[Any]]:
    """Per chosen feature, the ``n_common`` token ids it fires on most often with their counts (``tok_of``: the
    token id of every occurrence)."""
    by_feat = np.argsort(feat, kind="stable")
    f_sorted = feat[by_feat]
    out = []
    for f in chosen:
        a, b = np.searchsorted(f_sorted, [f, f + 1])
        out.append(Counter(tok_of[by_feat[a:b]].tolist()).most_common(n_common))
    return out


def _example(
    trace: FeatureTrace, tokens: np.ndarray, offsets: np.ndarray, ids: Sequence[str], labels: np.ndarray, i: int,
    row: int, activation: float, window: int, decode: Any, joiner: str,
) -> dict[str, Any]:
    """One top example: example ``i``, its token at capture row ``row`` and the context around it."""
    lo = int(offsets[i])
    toks = tokens[lo: int(offsets[i + 1])].tolist()
    pos = row - lo
    return {
        "example": ids[i], "label": int(labels[i]), "pos": pos, "token": decode(toks[pos]),
        "in_answer": int(trace.answer_start[i]) <= pos < int(trace.answer_end[i]),
        "activation": activation, "context": context(toks, pos, window, decode, joiner),
    }


def _feature_entry(
    f: int, stats: _FeatureStats, n_tok: int, common: list[Any], examples: list[dict[str, Any]], decode: Any,
    npd_id: str | None,
) -> dict[str, Any]:
    """The report of feature ``f``: its statistics, common tokens, top examples and Neuronpedia page."""
    c = int(stats.count[f])
    mean = float(stats.mass[f] / c) if c else 0.0
    return {
        "feature": int(f),
        "active_tokens": c,
        "token_rate": c / n_tok if n_tok else 0.0,
        "active_examples": int(stats.n_ex[f]),
        "hallucinated_share": float(stats.n_ex_halluc[f] / stats.n_ex[f]) if stats.n_ex[f] else None,
        "mean_activation": mean,
        "std_activation": float(np.sqrt(max(stats.sq[f] / c - mean**2, 0.0))) if c else 0.0,
        "max_activation": float(stats.peak[f]) if c else 0.0,
        "activation_mass": float(stats.mass[f]) if c else 0.0,
        "dead": c == 0,
        "common_tokens": [{"token": decode(t), "count": int(k)} for t, k in common],
        "top_examples": examples,
        "neuronpedia": f"https://www.neuronpedia.org/{npd_id}/{f}" if npd_id else None,
    }


def _layer_summary(
    trace: FeatureTrace, layer: int, info: dict[str, Any], n_tok: int, labels: np.ndarray, count: np.ndarray,
    window: int, entries: list[dict[str, Any]],
) -> dict[str, Any]:
    """The layer's report around the feature entries, with its dead features (step 4)."""
    d_sae = info.get("d_sae")
    npd_id = info.get("neuronpedia_id")
    alive = set(np.flatnonzero(count).tolist())
    dead = None if d_sae is None else [f for f in range(int(d_sae)) if f not in alive]
    return {
        "layer": layer,
        "hook_name": info.get("hook_name"),
        "d_sae": d_sae,
        "neuronpedia_id": npd_id,
        "model": trace.meta.get("model_name"),
        "n_examples": trace.n_examples,
        "n_tokens": n_tok,
        "hallucinated_rate": float(labels.mean()) if labels.size else None,
        "top_k_kept": trace.meta.get("top_k"),
        "n_active_features": len(alive),
        "n_dead_features": None if dead is None else len(dead),
        "dead_features": dead,
        "note": ("counts, statistics and dead features are relative to the top-k features kept per token in the "
                 "capture (top_k_kept): a feature firing below the top-k is not seen"),
        "window": window,
        "marker": "".join(MARK),
        "features": entries,
    }


def output_path(run_dir: str | Path, layer: int, out: str | Path | None = None, *, force: bool = False) -> Path:
    """``out`` or ``RUN/interpret/layer_L.json``; an existing file is refused without ``force``."""
    path = Path(out) if out is not None else Path(run_dir) / INTERPRET_DIR / f"layer_{layer}.json"
    if path.exists() and not force:
        raise RunFolderError(f"{path} exists: pass --force to overwrite it, or --out to write elsewhere")
    return path


def write_interpretation(result: dict[str, Any], path: str | Path) -> Path:
    from ghost_lens.detect.verdicts import clean_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ghost_lens.io import atomic_write_text

    atomic_write_text(path, json.dumps(clean_json(result), indent=1, ensure_ascii=False))
    logger.info("feature interpretation written to %s", path)
    return path


def interpret_to_file(
    run_dir: str | Path, layer: int, out: str | Path | None = None, *, force: bool = False, **kwargs: Any
) -> tuple[dict[str, Any], Path]:
    """``ghost-lens interpret``: :func:`output_path` checked first (an existing file without ``force`` is one line,
    nothing computed), then :func:`interpret_run` (``kwargs``: ``top``, ``features``, ``window``) written there by
    :func:`write_interpretation`; returns the result and its path."""
    path = output_path(run_dir, layer, out, force=force)
    result = interpret_run(run_dir, layer, **kwargs)
    return result, write_interpretation(result, path)
