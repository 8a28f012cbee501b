"""Detections: the strongest (feature, position) activations of each example at each tracked layer.

Vectorised over a batch of examples and all layers at once (arrays padded to ``[B, L, M]``, ``M`` =
``top_k_features``, with a ``valid`` mask):

1. Positions: ``cfg.positions`` picks the token positions that provide detections (``answer``: the answer span;
   ``last_prompt_and_answer``: the last prompt token and the answer span; ``last_prompt``: the last prompt token
   alone; ``all``: every token, BOS included, which needs a capture made with ``capture.positions: all``).
   Positions are reported in the example's full token sequence (a capture that kept only the tracked window
   stores where it starts, ``FeatureTrace.window_start``), so graphs do not depend on what the capture kept.
2. Candidates: every captured (feature, value) of those positions with value > 0 (the capture keeps the top-k
   features per token, so a (feature, position) pair occurs at most once).
3. The top ``top_k_features`` per example and layer by activation (``partition``, then ties with the cut value
   in candidate order, i.e. earlier position, then higher-ranked feature of that token), sorted by activation,
   descending (stable).
4. Normalisation: raw SAE activations have per-layer scales, so each detection also gets a ``norm_activation``
   (``cfg.normalization``): ``max`` = activation / (that layer's largest detection activation of this example),
   in (0, 1], scale-free; ``layer`` = activation / a per-layer constant (:meth:`TraceArrays.layer_scale`: the mean
   over examples of their largest detection at that layer), which keeps the differences of scale between
   examples; ``none`` = the raw activation. Activation similarity and the birth / death thresholds use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ghost_lens.capture.trace import FeatureTrace
from ghost_lens.errors import ConfigError


@dataclass
class Detections:
    """A batch's detections, ``[B, L, M]`` each, per (example, layer) sorted by activation, descending."""

    feature: np.ndarray  # int64
    pos: np.ndarray  # int64, relative to the example's first token
    activation: np.ndarray  # float64, raw SAE activation
    norm_activation: np.ndarray  # float64, the activation normalised (default: / the largest of its example, layer)
    valid: np.ndarray  # bool: False where an (example, layer) has fewer than M detections


def tracked_positions(n_tokens: int, answer_start: int, answer_end: int, mode: str) -> np.ndarray:
    """Token positions (relative to the example's start) that provide detections, ascending."""
    lo, hi = _span(np.asarray([n_tokens]), np.asarray([answer_start]), np.asarray([answer_end]), mode)
    return np.arange(int(lo[0]), int(hi[0]), dtype=np.int64)


def _span(
    n_tok: np.ndarray, a_start: np.ndarray, a_end: np.ndarray, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    if mode == "all":
        lo, hi = np.zeros_like(n_tok), n_tok
    elif mode == "answer":
        lo, hi = a_start, a_end
    elif mode == "last_prompt_and_answer":
        lo, hi = np.maximum(a_start - 1, 0), a_end
    elif mode == "last_prompt":
        lo = np.maximum(a_start - 1, 0)
        hi = lo + 1
    else:
        raise ValueError(f"unknown positions mode {mode!r}")
    lo = np.clip(lo, 0, n_tok)
    return lo, np.clip(hi, lo, n_tok)


class TraceArrays:
    """Numpy views of a trace's per-token features and answer spans (converted once, shared by all batches)."""

    def __init__(self, trace: FeatureTrace):
        self.offsets = trace.offsets.numpy()
        self.answer_start = trace.answer_start.numpy()
        self.answer_end = trace.answer_end.numpy()
        self.feat_idx = _np(trace.feat_idx)
        val = _np(trace.feat_val)
        self.feat_val = val if val.dtype in (np.float32, np.float64) else val.astype(np.float32)
        self.window_start = trace.window_starts().numpy().astype(np.int64)
        self.full_contexts = trace.full_contexts

    def spans(self, examples: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """Tracked token range ``[lo, hi)`` of each example, relative to its first kept token."""
        if mode == "all" and not self.full_contexts:
            raise ConfigError("tracker.positions 'all' needs every token, but this capture kept only the last prompt "
                              "token and the answer: capture again with capture.positions=all")
        n_tok = self.offsets[examples + 1] - self.offsets[examples]
        return _span(n_tok, self.answer_start[examples], self.answer_end[examples], mode)

    def layer_scale(self, mode: str) -> np.ndarray:
        """``[L]`` per-layer scale of ``normalization="layer"``: the mean, over the examples with any activation
        there, of each example's largest activation in its tracked span (1 for a layer where nothing is active)."""
        total, count = self.layer_scale_parts(mode)
        return combine_layer_scale([(total, count)])

    def layer_scale_parts(self, mode: str) -> tuple[np.ndarray, np.ndarray]:
        """``(sum [L], count [L])`` of :meth:`layer_scale` over these examples (parts of a sharded capture add up:
        :func:`combine_layer_scale`)."""
        n = self.offsets.size - 1
        lo, hi = self.spans(np.arange(n), mode)
        width = int((hi - lo).max(initial=0))
        rel = lo[:, None] + np.arange(width)
        ok = rel < hi[:, None]
        tok = np.where(ok, self.offsets[:-1, None] + rel, 0)  # [N, P]
        top = np.where(ok, self.feat_val[:, tok, 0], 0.0).max(axis=-1, initial=0.0)  # [L, N]: values sorted desc
        active = top > 0
        return np.where(active, top, 0.0).sum(axis=1).astype(np.float64), active.sum(axis=1).astype(np.int64)

    def detections(
        self, examples: np.ndarray, mode: str, top_k: int, normalization: str = "max",
        scale: np.ndarray | None = None,
    ) -> Detections:
        """Steps 1-4 for a batch of example indices (``scale`` [L]: the per-layer constants of
        ``normalization="layer"``, default :meth:`layer_scale` over all examples)."""
        if normalization not in ("max", "layer", "none"):
            raise ValueError(f"unknown normalization {normalization!r} (max, layer or none)")
        if normalization == "layer" and scale is None:
            scale = self.layer_scale(mode)
        lo, hi = self.spans(examples, mode)
        n_layers, _, k = self.feat_idx.shape
        n_b = examples.size
        width = int((hi - lo).max()) if n_b else 0
        rel = lo[:, None] + np.arange(width)  # [B, P] relative positions
        ok = rel < hi[:, None]
        tok = np.where(ok, self.offsets[examples, None] + rel, 0)  # absolute token index (0 = padding)
        idx = self.feat_idx[:, tok].reshape(n_layers, n_b, width * k).swapaxes(0, 1)  # [B, L, P*k]
        val = self.feat_val[:, tok]  # [L, B, P, k], float32 (float16 captures are widened once, on load)
        val[:, ~ok] = 0.0
        val = val.reshape(n_layers, n_b, width * k).swapaxes(0, 1)
        n_cand = width * k
        m = min(top_k, n_cand)
        if m == 0:
            z = np.zeros((n_b, n_layers, 0))
            return Detections(z.astype(np.int64), z.astype(np.int64), z, z, z.astype(bool))
        if m < n_cand:
            kth = np.partition(val, n_cand - m, axis=-1)[
                ..., n_cand - m : n_cand - m + 1
            ]  # m-th largest, [B, L, 1]
            above, tied = val > kth, val == kth
            need = m - above.sum(axis=-1, keepdims=True)
            if not np.array_equal(tied.sum(axis=-1, keepdims=True), need):  # take ties in candidate order
                tied &= np.cumsum(tied, axis=-1) <= need
            cand = np.nonzero(above | tied)[-1].reshape(
                n_b, n_layers, m
            )  # exactly m per (example, layer), ascending
        else:
            cand = np.broadcast_to(np.arange(m), (n_b, n_layers, m))
        act = np.take_along_axis(val, cand, axis=-1)
        order = np.argsort(-act, axis=-1, kind="stable")
        cand = np.take_along_axis(cand, order, axis=-1)
        act = np.take_along_axis(act, order, axis=-1)
        act = act.astype(np.float64)
        if normalization == "max":
            top = act[..., :1]
            norm = act / np.where(top > 0, top, 1.0)
        elif normalization == "layer":
            norm = act / np.asarray(scale, dtype=np.float64)[None, :, None]
        else:
            norm = act.copy()
        return Detections(
            feature=np.take_along_axis(idx, cand, axis=-1).astype(np.int64),
            pos=np.take_along_axis(rel, (cand // k).reshape(n_b, -1), axis=1).reshape(cand.shape)
            + self.window_start[examples, None, None],
            activation=act,
            norm_activation=norm,
            valid=act > 0,
        )


def combine_layer_scale(parts: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """:meth:`TraceArrays.layer_scale` from the ``(sum, count)`` parts of disjoint sets of examples."""
    total = np.sum([p[0] for p in parts], axis=0)
    count = np.sum([p[1] for p in parts], axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0).astype(np.float64)


def _np(t: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
