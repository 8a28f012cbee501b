"""The row-space logistic regression against scikit-learn's plain fit (the slow reference)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression

from ghost_lens.detect.detector import HallucinationDetector
from ghost_lens.detect.detector_io import load_detector, save_detector
from ghost_lens.detect.rowspace import RowSpaceLogisticRegression, row_basis, standardised_logistic


def _wide(n: int = 60, f: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f)) + rng.standard_normal(f)  # uncentred columns
    y = (x[:, :5].sum(axis=1) + rng.standard_normal(n) > x[:, :5].sum(axis=1).mean()).astype(np.int64)
    return x, y


def test_row_basis_spans_the_rows() -> None:
    x, _ = _wide()
    q, z = row_basis(x)
    assert q.shape == (150, 60) and z.shape == (60, 60)
    np.testing.assert_allclose(q.T @ q, np.eye(60), atol=1e-12)
    np.testing.assert_allclose(z, x @ q, atol=1e-10)
    np.testing.assert_allclose(z @ q.T, x, atol=1e-10)  # nothing of the rows is outside the basis


@pytest.mark.parametrize("params", [
    {"solver": "newton-cholesky"},
    {"solver": "lbfgs", "class_weight": "balanced", "C": 0.05},
    {"solver": "lbfgs", "C": 3.0, "fit_intercept": False},
])
def test_wide_fit_equals_the_plain_fit(params: dict) -> None:
    x, y = _wide()
    w = np.random.default_rng(1).uniform(0.5, 2.0, y.size)
    plain = LogisticRegression(tol=1e-10, max_iter=10_000, **params).fit(x, y, sample_weight=w)
    rot = RowSpaceLogisticRegression(tol=1e-10, max_iter=10_000, **params).fit(x, y, sample_weight=w)
    assert rot.coef_.shape == plain.coef_.shape == (1, 150)
    assert rot.n_features_in_ == 150 and list(rot.classes_) == [0, 1]
    np.testing.assert_allclose(rot.coef_, plain.coef_, atol=1e-6)
    np.testing.assert_allclose(rot.intercept_, plain.intercept_, atol=1e-6)
    x_new = _wide(seed=2)[0]
    np.testing.assert_allclose(rot.predict_proba(x_new), plain.predict_proba(x_new), atol=1e-7)


def test_multiclass_dataframe_and_float32_like_the_plain_fit() -> None:
    import pandas as pd

    x, _ = _wide()
    y3 = np.digitize(x[:, 0] + x[:, 1], np.quantile(x[:, 0] + x[:, 1], [1 / 3, 2 / 3]))
    for solver in ("lbfgs", "newton-cholesky"):
        plain = LogisticRegression(solver=solver, tol=1e-10, max_iter=10_000).fit(x, y3)
        rot = RowSpaceLogisticRegression(solver=solver, tol=1e-10, max_iter=10_000).fit(x, y3)
        assert rot.coef_.shape == plain.coef_.shape == (3, 150)
        np.testing.assert_allclose(rot.predict_proba(x), plain.predict_proba(x), atol=1e-6)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(150)])
    rot = RowSpaceLogisticRegression().fit(frame, y3)
    assert list(rot.feature_names_in_) == list(frame.columns) and rot.n_features_in_ == 150
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "X has feature names, but ... was fitted without feature names"
        rot.predict(frame)
    x32 = x.astype(np.float32)
    assert RowSpaceLogisticRegression().fit(x32, y3).coef_.dtype == LogisticRegression().fit(x32, y3).coef_.dtype
    warm = RowSpaceLogisticRegression(warm_start=True).fit(x, y3)
    with pytest.raises(ValueError, match="warm start"):
        warm.fit(x[:, :100], y3)


def test_tall_or_l1_fit_is_scikit_learns_own() -> None:
    x, y = _wide(n=200, f=20)
    plain = LogisticRegression(solver="newton-cholesky").fit(x, y)
    rot = RowSpaceLogisticRegression(solver="newton-cholesky").fit(x, y)
    assert np.array_equal(rot.coef_, plain.coef_) and np.array_equal(rot.intercept_, plain.intercept_)
    xw, yw = _wide()
    l1 = {"solver": "liblinear", "l1_ratio": 1.0, "C": 0.5}
    assert not RowSpaceLogisticRegression(**l1)._rowspace_applies(xw)  # a rotation changes an L1 norm
    assert RowSpaceLogisticRegression()._rowspace_applies(xw)


def test_warm_start_along_cs_reaches_the_cold_fits() -> None:
    x, y = _wide()
    model = RowSpaceLogisticRegression(C=0.01, warm_start=True, tol=1e-10, max_iter=10_000)
    for c in (0.01, 0.1, 1.0):
        model.set_params(C=c).fit(x, y)
        cold = LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(x, y)
        np.testing.assert_allclose(model.coef_, cold.coef_, atol=1e-6)


def test_pipeline_keeps_the_step_names_and_clones() -> None:
    pipe = clone(standardised_logistic(C=2.0, solver="newton-cholesky"))
    pipe.set_params(logisticregression__C=0.5)
    assert [name for name, _ in pipe.steps] == ["standardscaler", "logisticregression"]
    assert pipe.get_params()["logisticregression__C"] == 0.5


def test_wide_detector_round_trips_through_its_saved_state(tmp_path) -> None:
    x, y = _wide(n=50, f=120)
    det = HallucinationDetector(entropy_col=0, churn_col=1).fit(x, y)
    assert isinstance(det.components_.classifier.steps[-1][1], RowSpaceLogisticRegression)
    names = [f"c{i}" for i in range(120)]
    save_detector(det, tmp_path / "det", feature_names=names, feature_groups=["tracks"], cfg_hash="h")
    again, _ = load_detector(tmp_path / "det")
    np.testing.assert_allclose(again.predict_proba(x), det.predict_proba(x), atol=1e-12)
