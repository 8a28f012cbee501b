"""Input guards and the grouped, stratified folds every method is evaluated on.

One split for all methods: ``StratifiedGroupKFold`` assigns whole groups (a question, an entity) to folds, so no
group is ever on both sides of a split, while keeping the label balance of the folds close to the whole set's.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ghost_lens.errors import DatasetError

logger = logging.getLogger(__name__)


def check_labels(labels: Sequence[int] | np.ndarray, n: int | None = None) -> np.ndarray:
    """Labels as an int array of 0/1 with both classes present; one-line :class:`DatasetError` otherwise."""
    y = np.asarray(labels)
    if n is not None and y.shape != (n,):
        raise DatasetError(f"expected {n} labels, got shape {y.shape}")
    if y.size == 0:
        raise DatasetError("no examples to evaluate")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise DatasetError(f"labels must be 0 (faithful) or 1 (hallucinated), got {sorted(values)[:5]}")
    if len(values) < 2:
        raise DatasetError(f"all {y.size} labels are {values.pop()}: detection needs both classes")
    return y.astype(np.int64)


def check_finite(name: str, features: np.ndarray, feature_names: Sequence[str] | None = None) -> np.ndarray:
    """A 2-D float array without NaN/inf; the error names the first offending columns."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise DatasetError(f"{name} must be 2-D [examples, features], got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=0))
    if bad.size:
        cols = [feature_names[i] if feature_names is not None else str(i) for i in bad[:3]]
        n_rows = int((~np.isfinite(x)).any(axis=1).sum())
        raise DatasetError(f"{name} has NaN/inf in {n_rows} example(s), column(s) {', '.join(cols)}")
    return x


def make_folds(
    labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """``(fold [N], warnings)``: the test fold of every example under stratified group k-fold.

    Fewer groups than ``n_folds`` reduces the folds to the number of groups (with a warning) when that is >= 2,
    and is an error otherwise. A split whose training part lacks a class is an error (groups too label-pure).
    """
    notes: list[str] = []
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise DatasetError(f"only {n_groups} group: grouped cross-validation needs at least 2")
    if n_groups < n_folds:
        notes.append(f"only {n_groups} groups: folds reduced from {n_folds} to {n_groups}")
        logger.warning(notes[-1])
        n_folds = n_groups
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    fold = np.full(labels.size, -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(np.zeros(labels.size), labels, groups))
    for k, (train, test) in enumerate(splits):
        if np.unique(labels[train]).size < 2:
            raise DatasetError(
                f"fold {k}: its training part has one class only (groups too label-pure for {n_folds} folds)"
            )
        fold[test] = k
    empty = [k for k in range(n_folds) if not np.any(fold == k)]
    if empty:
        raise DatasetError(f"fold(s) {empty} received no examples ({n_groups} groups, {n_folds} folds)")
    return fold, notes


def group_codes(groups: Sequence[object] | np.ndarray, n: int) -> np.ndarray:
    """Groups as strings ``[N]`` (ints and strings alike), checked for length."""
    g = np.asarray([str(x) for x in groups], dtype=object)
    if g.shape != (n,):
        raise DatasetError(f"expected {n} groups, got {g.shape[0]}")
    return g


def inner_splits(
    y: np.ndarray, groups: np.ndarray | None, k: int, seed: int | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner folds inside a training set (the detector's calibration): grouped when ``groups`` is given.

    ``k`` is capped by the smaller class count (and the number of groups); an empty list means "too few for
    inner folds" (fewer than 2, or a split whose training part lacks a class). Memoised on the exact
    ``(y, groups, k, seed)``: within one outer training part the detector, the ablations, the stacked scorer and
    the probes all ask for the same inner folds, and ``StratifiedGroupKFold`` takes ~0.1-0.5 s per call at a few
    hundred groups. The returned index arrays are read-only.
    """
    y = np.asarray(y).astype(np.int64, copy=False)
    key_groups = None if groups is None else tuple(str(x) for x in np.asarray(groups).tolist())
    return _inner_splits_cached(y.tobytes(), y.size, key_groups, int(k), seed)


@functools.lru_cache(maxsize=64)
def _inner_splits_cached(
    y_bytes: bytes, n: int, groups: tuple[str, ...] | None, k: int, seed: int | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    y = np.frombuffer(y_bytes, dtype=np.int64, count=n)
    g = None if groups is None else np.asarray(groups, dtype=object)
    k = min(k, int(np.bincount(y).min()))
    if g is not None:
        k = min(k, np.unique(g).size)
    if k < 2:
        return []
    splitter = (
        StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        if g is not None
        else StratifiedKFold(k, shuffle=True, random_state=seed)
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(np.zeros(y.size), y, g))
    if any(np.unique(y[tr]).size < 2 for tr, _ in splits):
        return []
    for tr, te in splits:
        tr.setflags(write=False)
        te.setflags(write=False)
    return splits
