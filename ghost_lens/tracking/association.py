"""Association of live tracks with the next layer's detections: the score matrix and one-to-one matching.

1. Score parts, vectorised over all ``[..., n_prev, n_cur]`` pairs, in float32 (the directions' precision):
   ``semantic`` = cosine of the two features' unit-norm SAE decoder directions (one batched matmul);
   ``activation`` = ``1 - |a - b|`` of the normalised activations (in [0, 1]); ``position`` =
   ``exp(-|p - q| / position_scale)`` (1 at the same token).
2. Score = the weighted sum, with the three weights divided by their sum (so the defaults 0.6 / 0.2 / 0.2 are used
   as they are, any other weights keep the score in [-1, 1] and the thresholds keep their meaning).
3. Admissible pairs: score >= ``association_threshold`` and the candidate's normalised activation >=
   ``death_threshold``, both up to :data:`THRESHOLD_TOL` (so a value meant to sit exactly on a threshold reaches it
   despite float rounding).
4. Matching, one-to-one, per example of a batch: ``optimal`` maximises the total score of the accepted pairs
   (isolated pairs taken directly; scipy's ``linear_sum_assignment`` on the contended part, inadmissible pairs
   weighted 0 and dropped afterwards);
   ``greedy`` takes pairs by descending score (ties: lower row, then lower column), computed as rounds of mutually
   best pairs, which yields exactly the global greedy matching.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ghost_lens.config import TrackerConfig

THRESHOLD_TOL = 1e-6
"""A score or activation within this of a threshold counts as reaching it."""


@dataclass
class ScoreParts:
    """Association score ``[..., n_prev, n_cur]`` and its unweighted parts (float32)."""

    score: np.ndarray
    semantic: np.ndarray
    activation: np.ndarray
    position: np.ndarray


def normalised_weights(cfg: TrackerConfig) -> tuple[float, float, float]:
    """``(semantic, activation, position)`` weights divided by their sum."""
    total = cfg.semantic_weight + cfg.activation_weight + cfg.position_weight
    return cfg.semantic_weight / total, cfg.activation_weight / total, cfg.position_weight / total


def association_scores(
    prev_dirs: np.ndarray,
    cur_dirs: np.ndarray,
    prev_norm: np.ndarray,
    cur_norm: np.ndarray,
    prev_pos: np.ndarray,
    cur_pos: np.ndarray,
    cfg: TrackerConfig,
) -> ScoreParts:
    """Score every (track tail, detection) pair: ``[..., n_prev, n_cur]`` from directions ``[..., n, d_model]``
    (unit-norm rows), normalised activations and positions ``[..., n]`` (any leading batch dimensions)."""
    ws, wa, wp = normalised_weights(cfg)
    semantic = np.matmul(prev_dirs, cur_dirs.swapaxes(-1, -2))  # float32, like the directions
    pn, cn = prev_norm.astype(np.float32), cur_norm.astype(np.float32)
    activation = 1.0 - np.abs(pn[..., :, None] - cn[..., None, :])
    dist = np.abs(prev_pos[..., :, None] - cur_pos[..., None, :])
    locality = np.exp(np.arange(int(dist.max(initial=0)) + 1) * (-1.0 / cfg.position_scale)).astype(
        np.float32
    )
    position = locality[dist]  # token distances are small integers: a table lookup, not an exp per pair
    score = np.float32(ws) * semantic + np.float32(wa) * activation + np.float32(wp) * position
    return ScoreParts(score, semantic, activation, position)


def admissible_pairs(score: np.ndarray, cur_norm: np.ndarray, cfg: TrackerConfig) -> np.ndarray:
    """Boolean ``[..., n_prev, n_cur]``: pairs that may continue a track (before masking padding / dead rows)."""
    ok_score = score >= cfg.association_threshold - THRESHOLD_TOL
    ok_act = cur_norm >= cfg.death_threshold - THRESHOLD_TOL
    return ok_score & ok_act[..., None, :]


def match(
    score: np.ndarray, admissible: np.ndarray, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching per batch item of ``[B, n, m]`` among admissible pairs: ``(batch, rows, cols)``."""
    if method == "optimal":
        return match_optimal(score, admissible)
    if method == "greedy":
        return match_greedy(score, admissible)
    raise ValueError(f"unknown assignment {method!r} (optimal or greedy)")


def match_optimal(score: np.ndarray, admissible: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximum total score over admissible pairs, per batch item (admissible scores are > 0: the threshold is).

    An isolated pair (its row and its column admit nothing else) is in every optimal matching: those are taken
    for all items at once; ``linear_sum_assignment`` then runs per item on the rows and columns left in contention.
    """
    row_n, col_n = admissible.sum(axis=2), admissible.sum(axis=1)  # [B, n], [B, m]
    isolated = admissible & (row_n == 1)[:, :, None] & (col_n == 1)[:, None, :]
    rest = admissible & ~isolated
    rest_rows, rest_cols = rest.any(axis=2), rest.any(axis=1)
    b, r, c = np.nonzero(isolated)
    out_b, out_r, out_c = [b], [r], [c]
    hard = np.flatnonzero(rest_rows.any(axis=1))
    if hard.size:
        weight = np.where(rest[hard], np.maximum(score[hard], 1e-12), 0.0)
        for k, i in enumerate(hard.tolist()):
            rows, cols = np.flatnonzero(rest_rows[i]), np.flatnonzero(rest_cols[i])
            w = weight[k, rows[:, None], cols]
            ri, ci = linear_sum_assignment(w, maximize=True)
            keep = w[ri, ci] > 0  # inadmissible pairs weigh 0
            out_b.append(np.full(int(keep.sum()), i))
            out_r.append(rows[ri[keep]])
            out_c.append(cols[ci[keep]])
    return _sorted(*(np.concatenate(x).astype(np.int64) for x in (out_b, out_r, out_c)))


def match_greedy(score: np.ndarray, admissible: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy by descending score (ties: lower row, then lower column), per batch item, as rounds of mutually
    best pairs on the pairs' rank matrix (the locally-dominant-pair construction of the global greedy matching)."""
    pb, pr, pc = np.nonzero(admissible)
    empty = np.zeros(0, dtype=np.int64)
    if pb.size == 0:
        return empty, empty, empty
    order = np.lexsort((pc, pr, -score[pb, pr, pc]))  # the within-item order is what matters
    big = np.iinfo(np.int64).max
    rank = np.full(score.shape, big, dtype=np.int64)
    rank[pb[order], pr[order], pc[order]] = np.arange(order.size)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    while True:
        best_c = rank.argmin(axis=2)  # [B, n]: each row's best column
        best_r = rank.argmin(axis=1)  # [B, m]: each column's best row
        rows = np.arange(rank.shape[1])[None, :]
        bi = np.arange(rank.shape[0])[:, None]
        mutual = (np.take_along_axis(best_r, best_c, axis=1) == rows) & (rank[bi, rows, best_c] < big)
        if not mutual.any():
            break
        b, r = np.nonzero(mutual)
        c = best_c[b, r]
        out.append((b, r, c))
        rank[b, r, :] = big
        rank[b, :, c] = big
    return _sorted(*(np.concatenate(x).astype(np.int64) for x in zip(*out, strict=True)))


def _sorted(b: np.ndarray, r: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    o = np.lexsort((r, b))
    return b[o], r[o], c[o]
