"""The residual and SAE-feature probes (ghost_lens/detect/baselines.py): planted signals are found out of fold,
their layer and C are chosen inside the training rows only, and an uninformed probe does not fall below chance."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from ghost_lens.detect.baselines import (
    DENSE_CS,
    SPARSE_CS,
    BaselineInputs,
    LayerStack,
    SelectingProbe,
    build_baselines,
    record_choice,
    sae_at_last_prompt,
)
from ghost_lens.detect.folds import make_folds
from tests.helpers.trace import make_trace, unit


def grouped_labels(n_groups: int = 70, per_group: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group).astype(str)
    latent = 0.8 * rng.normal(size=n_groups)[np.repeat(np.arange(n_groups), per_group)]
    y = ((latent + rng.normal(size=groups.size)) > 0).astype(np.int64)
    return y, groups, rng


def dense_stack(y, rng, layer: int = 2, n_layers: int = 3, d: int = 16, strength: float = 1.2):
    """Residuals whose layer ``layer`` carries the label along one direction (weak per coordinate)."""
    w = rng.normal(size=d)
    w /= np.linalg.norm(w)
    mats = [rng.normal(size=(y.size, d)) * rng.uniform(0.5, 20.0, size=d) for _ in range(n_layers)]  # mixed scales
    mats[layer] = mats[layer] + strength * np.outer(2 * y - 1, w) * 3.0
    return LayerStack(mats, [f"L{j}" for j in range(n_layers)])


def sparse_stack(y, rng, layer: int = 1, n_layers: int = 3, d_sae: int = 60, planted: int = 7):
    """SAE-like activations (5 random features per example); at ``layer`` feature ``planted`` fires for 90% of
    the positives and 5% of the negatives."""
    mats = []
    for j in range(n_layers):
        dense = np.zeros((y.size, d_sae))
        for i in range(y.size):
            dense[i, rng.choice(d_sae, size=5, replace=False)] = rng.gamma(2.0, 1.0, size=5)
        if j == layer:
            fire = rng.uniform(size=y.size) < np.where(y == 1, 0.9, 0.05)
            dense[:, planted] = np.where(fire, rng.gamma(4.0, 1.0, size=y.size), 0.0)
        mats.append(sp.csr_matrix(dense))
    return LayerStack(mats, [f"L{j}" for j in range(n_layers)])


def out_of_fold(make, X, y, groups, fold):
    """The evaluation's loop: fit on the training folds (groups passed), score the test fold."""
    p = np.empty(y.size)
    fitted = []
    for k in range(int(fold.max()) + 1):
        train, test = fold != k, fold == k
        est = make().fit(X[train], y[train], groups=groups[train])
        p[test] = est.predict_proba(X[test])[:, 1]
        fitted.append(est)
    return p, fitted


def test_dense_probe_finds_a_planted_linear_direction_out_of_fold():
    y, groups, rng = grouped_labels(seed=0)
    X = dense_stack(y, rng, layer=2)
    fold, _ = make_folds(y, groups, 5, 0)
    p, fitted = out_of_fold(lambda: SelectingProbe("dense", DENSE_CS), X, y, groups, fold)
    assert roc_auc_score(y, p) > 0.9
    assert [e.candidate_ for e in fitted] == ["L2"] * 5
    assert all(e.C_ in DENSE_CS for e in fitted) and fitted[0].selection_auroc_.shape == (3, len(DENSE_CS))


def test_sparse_probe_finds_a_planted_feature_and_its_layer():
    y, groups, rng = grouped_labels(seed=1)
    X = sparse_stack(y, rng, layer=1, planted=7)
    fold, _ = make_folds(y, groups, 5, 0)
    p, fitted = out_of_fold(lambda: SelectingProbe("sparse", SPARSE_CS), X, y, groups, fold)
    assert roc_auc_score(y, p) > 0.85
    assert [e.candidate_ for e in fitted] == ["L1"] * 5
    for e in fitted:  # L1 keeps the planted feature, among few others
        coef = e.estimator_[-1].coef_[0]
        assert np.argmax(np.abs(coef)) == 7 and np.count_nonzero(coef) <= 20


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_selection_never_touches_the_test_rows(kind):
    y, groups, rng = grouped_labels(seed=2)
    X = dense_stack(y, rng, layer=1, strength=0.4) if kind == "dense" else sparse_stack(y, rng, layer=2)
    cs = DENSE_CS if kind == "dense" else SPARSE_CS
    fold, _ = make_folds(y, groups, 5, 0)
    y_shuffled = y.copy()
    test = fold == 0
    y_shuffled[test] = np.random.default_rng(9).permutation(y[test])[::-1]  # other test labels, same training ones
    assert not np.array_equal(y_shuffled, y)
    a = SelectingProbe(kind, cs).fit(X[~test], y[~test], groups=groups[~test])
    b = SelectingProbe(kind, cs).fit(X[~test], y_shuffled[~test], groups=groups[~test])
    assert (a.candidate_, a.C_) == (b.candidate_, b.C_)
    np.testing.assert_array_equal(a.selection_auroc_, b.selection_auroc_)
    np.testing.assert_allclose(a.predict_proba(X[test]), b.predict_proba(X[test]))


def test_an_uninformed_probe_does_not_fall_below_chance_from_fold_prevalence():
    # pure noise, folds of unequal prevalence: a prevalence-tracking intercept would rank the folds backwards
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(60), 4).astype(str)
    fold = np.repeat(np.arange(60) % 5, 4)
    y = (rng.uniform(size=groups.size) < np.array([0.2, 0.35, 0.5, 0.65, 0.8])[fold]).astype(np.int64)
    X = LayerStack([rng.normal(size=(y.size, 30))], ["L0"])
    p, _ = out_of_fold(lambda: SelectingProbe("dense", (1e-4,)), X, y, groups, fold)
    assert roc_auc_score(y, p) > 0.4


def test_build_baselines_makes_both_probes_with_grouped_selection():
    y, groups, rng = grouped_labels(n_groups=40, seed=4)
    inputs = BaselineInputs(
        residuals=rng.normal(size=(2, y.size, 6)), layers=[3, 5],
        residuals_last_prompt=rng.normal(size=(2, y.size, 6)),
        sae_last_prompt=[sp.csr_matrix(rng.gamma(1.0, size=(y.size, 9))) for _ in range(2)],
    )
    methods, skipped, per_layer = build_baselines(inputs, ["probe", "sparse_probe"], y.size, 0.05)
    assert skipped == {} and per_layer == []
    probe, sparse = methods
    assert (probe.name, sparse.name) == ("probe", "sparse_probe") and probe.pass_groups and sparse.pass_groups
    assert probe.X.names == ["answer_mean/L3", "answer_mean/L5", "last_prompt/L3", "last_prompt/L5"]
    assert 0.05 in probe.extra["Cs"] and sparse.X.names == ["L3", "L5"]
    est = probe.make().fit(probe.X[: y.size - 10], y[:-10], groups=groups[:-10])
    assert "selected" not in probe.extra  # the evaluation records each fit's choice (it may fit elsewhere)
    record_choice(probe.extra, est.candidate_, est.C_)
    assert probe.extra["selected"] == [{"candidate": est.candidate_, "C": est.C_}]
    assert probe.extra["layer"] in (3, 5)
    _, skipped, _ = build_baselines(BaselineInputs(), ["probe", "sparse_probe"], y.size, 0.1)
    assert set(skipped) == {"probe", "sparse_probe"}


def test_sae_activations_at_the_last_prompt_token_from_a_trace():
    e = {f: unit(1.0) for f in range(12)}
    # example 0: last prompt token 1 (answer starts at 2); example 1: last prompt token 2
    trace = make_trace(
        [[[(3, 1, 2.0), (5, 1, 1.0), (9, 2, 7.0)]], [[(4, 2, 0.5), (11, 0, 9.0), (6, 3, 1.0)]]], e,
        n_tokens=4, answer_start=[2, 3], k=2,
    )
    (m,) = sae_at_last_prompt(trace)
    assert m.shape == (2, 12)
    dense = m.toarray()
    assert dense[0].tolist() == [0, 0, 0, 2.0, 0, 1.0, 0, 0, 0, 0, 0, 0]
    assert dense[1].tolist() == [0, 0, 0, 0, 0.5, 0, 0, 0, 0, 0, 0, 0]
    inputs = BaselineInputs.from_trace(trace)
    assert inputs.residuals_last_prompt is not None and len(inputs.sae_last_prompt) == 1
    assert BaselineInputs.from_trace(trace, residual="answer_mean").residuals_last_prompt is None


def test_warm_started_c_path_scores_equal_independent_fits():
    """The selection's warm-started C path gives the inner-fold AUROCs of independent cold fits (same optimum)."""
    from ghost_lens.detect.folds import inner_splits

    y, groups, rng = grouped_labels()
    stack = dense_stack(y, rng)
    probe = SelectingProbe("dense", DENSE_CS)
    splits = inner_splits(y, groups, 3, 0)
    for mat in stack.mats:
        warm = probe._path_scores(mat, y, splits, DENSE_CS)
        cold = [np.mean([roc_auc_score(y[te], probe._model(c).fit(mat[tr], y[tr]).decision_function(mat[te]))
                         for tr, te in splits]) for c in DENSE_CS]
        np.testing.assert_allclose(warm, cold, atol=2e-3)


def test_inner_splits_are_memoised_read_only_and_equal_to_a_fresh_split():
    from sklearn.model_selection import StratifiedGroupKFold

    from ghost_lens.detect.folds import inner_splits

    y, groups, _ = grouped_labels(seed=4)
    a = inner_splits(y, groups, 3, 7)
    assert inner_splits(y.copy(), groups.copy(), 3, 7) is a  # same inputs: the cached list
    fresh = list(StratifiedGroupKFold(3, shuffle=True, random_state=7).split(np.zeros(y.size), y, groups))
    for (tr, te), (tr2, te2) in zip(a, fresh, strict=True):
        np.testing.assert_array_equal(tr, tr2)
        np.testing.assert_array_equal(te, te2)
        assert not tr.flags.writeable
    assert inner_splits(y, groups, 3, 8) is not a


def test_screening_keeps_the_planted_layer_among_many_candidates():
    y, groups, rng = grouped_labels(seed=5)
    stack = dense_stack(y, rng, layer=6, n_layers=9)
    screened = SelectingProbe("dense", DENSE_CS, screen=2).fit(stack, y, groups=groups)
    full = SelectingProbe("dense", DENSE_CS, screen=None).fit(stack, y, groups=groups)
    assert screened.candidate_ == full.candidate_ == "L6"
    assert np.isnan(screened.selection_auroc_).all(axis=1).sum() == 7  # only 2 candidates went past the screen
    assert not np.isnan(full.selection_auroc_).any()
