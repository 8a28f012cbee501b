"""Builders of hand-made and random FeatureTraces for the tracker's tests (no model, no SAE)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ghost_lens.capture.trace import FeatureTrace

Detection = tuple[int, int, float]  # (feature, position, activation)


def unit(*xs: float, dim: int = 8) -> np.ndarray:
    """A vector of length ``dim`` starting with ``xs`` (not renormalised: pass unit vectors for exact cosines)."""
    v = np.zeros(dim)
    v[: len(xs)] = xs
    return v


def make_trace(
    detections: Sequence[Sequence[Sequence[Detection]]],
    directions: Sequence[dict[int, np.ndarray]] | dict[int, np.ndarray],
    *,
    n_tokens: int | Sequence[int] = 8,
    answer_start: int | Sequence[int] = 0,
    answer_end: int | Sequence[int] | None = None,
    k: int = 4,
    layers: Sequence[int] | None = None,
    labels: Sequence[int] | None = None,
) -> FeatureTrace:
    """A trace whose example ``i`` has, at tracked layer position ``j``, exactly ``detections[i][j]`` active.

    ``directions``: per layer position (or one mapping for all layers) feature id -> decoder direction, stored as
    given (so cosines of exactly representable unit vectors stay exact). ``answer_end`` defaults to ``n_tokens``.
    """
    n_ex, n_layers = len(detections), len(detections[0])
    per = lambda x, default=None: [x] * n_ex if x is None or isinstance(x, int) else list(x)  # noqa: E731
    n_tok = per(n_tokens)
    a_start = per(answer_start)
    a_end = [n if e is None else e for n, e in zip(n_tok, per(answer_end), strict=True)]
    offsets = np.concatenate([[0], np.cumsum(n_tok)])
    total = int(offsets[-1])
    feat_idx = np.full((n_layers, total, k), -1, dtype=np.int32)  # -1: empty slot, as capture writes
    feat_val = np.zeros((n_layers, total, k), dtype=np.float32)
    dirs = [directions] * n_layers if isinstance(directions, dict) else list(directions)
    d_model = len(next(iter(dirs[0].values())))
    for i, ex in enumerate(detections):
        for j, dets in enumerate(ex):
            by_pos: dict[int, list[tuple[int, float]]] = {}
            for f, p, v in dets:
                by_pos.setdefault(p, []).append((f, v))
            for p, fv in by_pos.items():
                fv.sort(key=lambda t: -t[1])
                assert len(fv) <= k and p < n_tok[i], (
                    "too many features at one token, or position out of range"
                )
                for r, (f, v) in enumerate(fv):
                    feat_idx[j, offsets[i] + p, r] = f
                    feat_val[j, offsets[i] + p, r] = v
    dec_idx, dec_dir = [], []
    for j in range(n_layers):
        used = np.unique(feat_idx[j][feat_val[j] > 0]).astype(np.int64)
        dec_idx.append(torch.from_numpy(used))
        rows = np.stack([dirs[j][int(f)] for f in used]) if used.size else np.zeros((0, d_model))
        dec_dir.append(torch.from_numpy(rows.astype(np.float32)))
    return _assemble(feat_idx, feat_val, offsets, a_start, a_end, dec_idx, dec_dir, layers, labels)


def random_trace(
    n_examples: int = 6,
    n_layers: int = 5,
    *,
    n_tokens: tuple[int, int] = (4, 12),
    k: int = 6,
    d_sae: int = 40,
    d_model: int = 16,
    correlation: float = 0.9,
    seed: int = 0,
) -> FeatureTrace:
    """Random features per token; a feature's decoder direction at each layer is ``correlation`` x a shared base
    direction + noise, so the same feature tends to continue across layers (tracks of every length occur)."""
    rng = np.random.default_rng(seed)
    n_tok = rng.integers(n_tokens[0], n_tokens[1] + 1, size=n_examples)
    offsets = np.concatenate([[0], np.cumsum(n_tok)])
    total = int(offsets[-1])
    feat_idx = np.full((n_layers, total, k), -1, dtype=np.int32)  # -1: empty slot, as capture writes
    feat_val = np.zeros((n_layers, total, k), dtype=np.float32)
    for j in range(n_layers):
        for t in range(total):
            n_active = rng.integers(0, k + 1)
            feat_idx[j, t, :n_active] = rng.choice(d_sae, size=n_active, replace=False)
            feat_val[j, t, :n_active] = np.sort(rng.gamma(2.0, 1.0 + j, size=n_active))[::-1]
    base = rng.standard_normal((d_sae, d_model))
    dec_idx, dec_dir = [], []
    for j in range(n_layers):
        used = np.unique(feat_idx[j][feat_val[j] > 0]).astype(np.int64)
        d = correlation * base[used] + np.sqrt(1 - correlation**2) * rng.standard_normal((used.size, d_model))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        dec_idx.append(torch.from_numpy(used))
        dec_dir.append(torch.from_numpy(d.astype(np.float32)))
    a_start = [int(rng.integers(1, n)) for n in n_tok]
    labels = rng.integers(0, 2, size=n_examples).tolist()
    return _assemble(
        feat_idx, feat_val, offsets, a_start, list(map(int, n_tok)), dec_idx, dec_dir, None, labels
    )


def _assemble(feat_idx, feat_val, offsets, a_start, a_end, dec_idx, dec_dir, layers, labels) -> FeatureTrace:
    n_layers, total, _ = feat_idx.shape
    n_ex = len(offsets) - 1
    d_model = dec_dir[0].shape[1] if dec_dir else 1
    zeros = torch.zeros(n_ex)
    return FeatureTrace(
        tokens=torch.zeros(total, dtype=torch.int64),
        offsets=torch.as_tensor(np.asarray(offsets), dtype=torch.int64),
        answer_start=torch.as_tensor(a_start, dtype=torch.int64),
        answer_end=torch.as_tensor(a_end, dtype=torch.int64),
        feat_idx=torch.from_numpy(feat_idx),
        feat_val=torch.from_numpy(feat_val),
        answer_logprob=zeros,
        answer_mean_logprob=zeros,
        output_entropy=zeros,
        max_prob=zeros,
        resid_last_prompt=torch.zeros(n_layers, n_ex, d_model),
        resid_answer_mean=torch.zeros(n_layers, n_ex, d_model),
        dec_idx=dec_idx,
        dec_dir=dec_dir,
        meta={
            "layers": list(layers) if layers is not None else list(range(n_layers)),
            "ids": [f"ex{i}" for i in range(n_ex)],
            "groups": [f"g{i}" for i in range(n_ex)],
            "labels": list(labels) if labels is not None else [0] * n_ex,
        },
    )
