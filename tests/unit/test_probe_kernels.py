"""The probe's fast selection kernels (ghost_lens/detect/probe_kernels.py) agree with their scikit-learn references,
and the ridge screen that narrows SelectingProbe's candidates keeps the planted one."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ghost_lens.detect.baselines import DENSE_CS, SPARSE_CS, LayerStack, SelectingProbe
from ghost_lens.detect.folds import inner_splits
from ghost_lens.detect.probe_kernels import (
    auroc_columns,
    fit_balanced_logistic,
    l1_zero_c,
    logistic_c_path,
    logistic_c_path_reference,
    ridge_screen_scores,
    ridge_screen_scores_reference,
    scale_rows,
)


def labelled(n: int = 150, d: int = 40, seed: int = 0, signal: float = 0.6):
    """Residual-like rows (mixed column scales, an offset, n < d or n > d) whose label is weak along one direction;
    grouped in pairs."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.6).astype(np.int64)
    w = rng.normal(size=d)
    x = rng.normal(size=(n, d)) + signal * np.outer(2 * y - 1, w / np.linalg.norm(w)) * 3.0
    x = x * rng.uniform(0.2, 30.0, size=d) + rng.normal(size=d) * 5.0
    groups = (np.arange(n) // 2).astype(str)
    return x, y, groups, rng


def test_auroc_columns_matches_roc_auc_score_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, size=80)
    scores = np.column_stack([rng.normal(size=80), rng.integers(0, 4, size=80), y + rng.normal(size=80)])
    want = [roc_auc_score(y, scores[:, j]) for j in range(3)]
    np.testing.assert_allclose(auroc_columns(scores, y), want, atol=1e-12)
    assert np.isnan(auroc_columns(scores, np.ones(80))).all()


@pytest.mark.parametrize("n", [60, 200])  # fewer rows than columns (the dual's regime) and more
def test_ridge_screen_equals_one_sklearn_ridge_per_fold_and_penalty(n):
    x, y, groups, _ = labelled(n=n, d=90)
    splits = inner_splits(y, groups, 3, 0)
    lambdas = [4.0 / c for c in DENSE_CS]
    np.testing.assert_allclose(ridge_screen_scores(x, y, splits, lambdas),
                               ridge_screen_scores_reference(x, y, splits, lambdas), atol=1e-9)


@pytest.mark.parametrize("d", [50, 150])  # primal and dual
def test_ridge_screen_on_sparse_sae_activations_equals_the_reference(d):
    x, y, groups, rng = labelled(n=120, d=d)
    x = sp.csr_matrix(np.where(rng.uniform(size=x.shape) < 0.15, np.abs(x), 0.0))
    splits = inner_splits(y, groups, 3, 2)
    fast = ridge_screen_scores(x, y, splits, None, "sparse")
    _, _, scale = scale_rows(x, splits[0][0], "sparse")
    assert fast.shape == (4,) and np.all((fast >= 0) & (fast <= 1))
    lambdas = [0.5, 5.0, 50.0]
    np.testing.assert_allclose(ridge_screen_scores(x, y, splits, lambdas, "sparse"),
                               ridge_screen_scores_reference(x, y, splits, lambdas, "sparse"), atol=1e-9)
    assert np.all(scale > 0)


@pytest.mark.parametrize("c", [1e-3, 0.1, 10.0])
def test_balanced_logistic_matches_sklearn_lbfgs(c):
    x, y, _, _ = labelled(n=120, d=30, seed=3)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", solver="lbfgs",
                                                             max_iter=5000, tol=1e-10)).fit(x, y)
    xs, _, _ = scale_rows(x, np.arange(y.size), "dense")
    theta = fit_balanced_logistic(xs, y, c, tol=1e-10)
    np.testing.assert_allclose(xs @ theta[:-1] + theta[-1], ref.decision_function(x), rtol=1e-4, atol=1e-4)


def test_logistic_c_path_equals_independent_sklearn_fits():
    x, y, groups, _ = labelled(n=150, d=60, seed=4)
    splits = inner_splits(y, groups, 3, 1)
    np.testing.assert_allclose(logistic_c_path(x, y, splits, DENSE_CS),
                               logistic_c_path_reference(x, y, splits, DENSE_CS), atol=2e-3)


def test_ridge_screen_ranks_the_informative_candidate_first_and_the_probe_picks_it():
    x, y, groups, rng = labelled(n=180, d=40, seed=6, signal=0.5)
    mats = [rng.normal(size=x.shape) * rng.uniform(0.5, 10.0, size=x.shape[1]) for _ in range(6)]
    mats[4] = x
    stack = LayerStack(mats, [f"L{j}" for j in range(6)])
    probe = SelectingProbe("dense", DENSE_CS, screen=2).fit(stack, y, groups=groups)
    assert probe.candidate_ == "L4"
    assert int(np.argmax(probe.screen_auroc_.max(axis=1))) == 4
    assert np.isnan(probe.selection_auroc_).all(axis=1).sum() == 4  # only 2 went on to the logistic path
    full = SelectingProbe("dense", DENSE_CS, screen=None).fit(stack, y, groups=groups)
    assert full.candidate_ == "L4" and full.screen_auroc_ is None


def test_sparse_probe_screen_keeps_the_planted_layer():
    rng = np.random.default_rng(7)
    n, d_sae = 160, 50
    y = (rng.uniform(size=n) < 0.5).astype(np.int64)
    groups = (np.arange(n) // 2).astype(str)
    mats = []
    for j in range(5):
        dense = np.where(rng.uniform(size=(n, d_sae)) < 0.1, rng.gamma(2.0, 1.0, size=(n, d_sae)), 0.0)
        if j == 3:
            dense[:, 9] = np.where(rng.uniform(size=n) < np.where(y == 1, 0.85, 0.05), rng.gamma(4.0, 1.0, size=n), 0)
        mats.append(sp.csr_matrix(dense))
    probe = SelectingProbe("sparse", SPARSE_CS, screen=2).fit(LayerStack(mats, [f"L{j}" for j in range(5)]), y,
                                                              groups=groups)
    assert probe.candidate_ == "L3"
    assert np.isnan(probe.selection_auroc_).all(axis=1).sum() == 3


def test_sparse_c_path_equals_the_sklearn_pipelines_and_skips_only_all_zero_fits():
    rng = np.random.default_rng(8)
    n, d_sae = 140, 40
    y = (rng.uniform(size=n) < 0.45).astype(np.int64)
    groups = (np.arange(n) // 2).astype(str)
    dense = np.where(rng.uniform(size=(n, d_sae)) < 0.15, rng.gamma(2.0, 1.0, size=(n, d_sae)), 0.0)
    dense[:, 3] += np.where(y == 1, rng.gamma(2.0, 1.0, size=n), 0.0)
    x = sp.csr_matrix(dense)
    splits = inner_splits(y, groups, 3, 0)
    probe = SelectingProbe("sparse", SPARSE_CS)
    np.testing.assert_allclose(probe._path_scores(x, y, splits, SPARSE_CS),
                               probe._path_scores_reference(x, y, splits, SPARSE_CS), atol=1e-9)
    tr = splits[0][0]
    xs, _, _ = scale_rows(x, tr, "sparse")
    c0 = l1_zero_c(xs[tr], y[tr])
    below = probe._model(0.99 * c0)[-1].fit(xs[tr], y[tr])
    above = probe._model(1.5 * c0)[-1].fit(xs[tr], y[tr])
    assert not below.coef_.any() and above.coef_.any()  # the threshold is where the solution leaves zero
