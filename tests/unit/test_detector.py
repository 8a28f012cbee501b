import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_classifiers_train,
    check_estimators_pickle,
    check_fit_idempotent,
    parametrize_with_checks,
)

from ghost_lens.config import DetectorConfig
from ghost_lens.detect import HallucinationDetector
from ghost_lens.detect.calibration import fit_calibrator
from ghost_lens.errors import DatasetError
from tests.helpers.detect import FEATURE_NAMES, make_synthetic


# Every scikit-learn estimator check on the default detector (logistic + Platt). None is skipped; the only
# check scikit-learn itself skips is check_array_api_input (needs SCIPY_ARRAY_API=1).
@parametrize_with_checks([HallucinationDetector()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# The other configurations share every code path with the default except the classifier and the calibrator, so
# they run the checks those two touch (training accuracy and predict/predict_proba agreement, determinism,
# pickling) instead of the full suite. Gradient boosting takes ~40 s even for these on a loaded 2-core machine:
# slow-marked (``--runslow``); test_gradient_boosting_learns covers it in the default run.
_TARGETED = [check_classifiers_train, check_fit_idempotent, check_estimators_pickle]


@pytest.mark.parametrize(
    "estimator",
    [
        HallucinationDetector(calibration="isotonic"),
        HallucinationDetector(calibration="temperature"),
        HallucinationDetector(calibration="none", calibration_cv=0),
    ],
    ids=repr,
)
@pytest.mark.parametrize("check", _TARGETED)
def test_targeted_estimator_checks(estimator, check):
    check(type(estimator).__name__, estimator)


@pytest.mark.slow
@pytest.mark.parametrize("check", _TARGETED)
def test_targeted_estimator_checks_gradient_boosting(check):
    estimator = HallucinationDetector(classifier="gradient_boosting", calibration="isotonic")
    check(type(estimator).__name__, estimator)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_groups=100, per_group=3, signal=1.0, seed=5)


def _auc(det, X, y):
    return roc_auc_score(y, det.predict_proba(X)[:, 1])


def test_entropy_weight_alone_is_the_entropy_ecdf(data):
    det = HallucinationDetector(entropy_weight=1.0, churn_weight=0.0, ml_weight=0.0, calibration="none")
    det.fit(data.X, data.labels)
    p = det.predict_proba(data.X)[:, 1]
    ranks = (np.argsort(np.argsort(data.X[:, 0])) + 0.5) / data.labels.size
    np.testing.assert_allclose(p, ranks)
    assert set(det.component_scores(data.X)) == {"entropy", "raw"}


def test_weights_mix_components(data):
    det = HallucinationDetector(entropy_weight=0.4, churn_weight=0.3, ml_weight=0.3, calibration="none")
    det.fit(data.X, data.labels)
    parts = det.component_scores(data.X)
    np.testing.assert_allclose(parts["raw"], 0.4 * parts["entropy"] + 0.3 * parts["churn"] + 0.3 * parts["ml"])
    np.testing.assert_allclose(det.predict_proba(data.X)[:, 1], parts["raw"])
    with pytest.raises(ValueError, match="not all zero"):
        HallucinationDetector(entropy_weight=0, churn_weight=0, ml_weight=0).fit(data.X, data.labels)


def test_orientation_learned_on_training_data_or_assumed(data):
    X = data.X.copy()
    X[:, 0] = -X[:, 0]  # entropy now *falls* with hallucination
    only_entropy = {"entropy_weight": 1, "churn_weight": 0, "ml_weight": 0}
    learned = HallucinationDetector(**only_entropy).fit(X, data.labels)
    assumed = HallucinationDetector(**only_entropy, orientation="hypothesis", calibration="none")
    assumed.fit(X, data.labels)
    assert learned.entropy_sign_ == -1 and _auc(learned, X, data.labels) > 0.7
    assert assumed.entropy_sign_ == 1 and _auc(assumed, X, data.labels) < 0.3
    # and no calibrator flips a wrong sign back behind the orientation's back: Platt falls to the base rate
    platt = HallucinationDetector(**only_entropy, orientation="hypothesis").fit(X, data.labels)
    p = platt.predict_proba(X)[:, 1]
    assert p.max() - p.min() < 1e-9 and p[0] == pytest.approx(data.labels.mean())


@pytest.mark.parametrize("calibration", ["platt", "isotonic", "temperature", "none"])
def test_calibrations_are_monotone_probabilities(data, calibration):
    det = HallucinationDetector(calibration=calibration).fit(data.X, data.labels, groups=data.groups)
    p = det.predict_proba(data.X)[:, 1]
    raw = det.component_scores(data.X)["raw"]
    assert np.all((p >= 0) & (p <= 1)) and det.oof_proba_.shape == data.labels.shape
    order = np.argsort(raw)
    assert np.all(np.diff(p[order]) >= -1e-12)  # calibration never reorders
    assert det.calibrated_out_of_fold_


def test_calibrators_fix_what_they_should():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.05, 0.95, size=5000)
    y = (rng.uniform(size=truth.size) < truth).astype(int)
    squeezed = 0.55 + 0.1 * truth  # the seed research's collapse: right order, squeezed off-centre
    for method in ("platt", "isotonic"):
        p = fit_calibrator(method, squeezed, y).transform(squeezed)
        assert np.mean((p - y) ** 2) < np.mean((squeezed - y) ** 2) - 0.01
        assert p.max() - p.min() > 0.6
    temp = fit_calibrator("temperature", squeezed, y)
    assert temp.transform(np.array([0.5]))[0] == pytest.approx(0.5)  # temperature only stretches around 0.5


def test_gradient_boosting_learns(data):
    det = HallucinationDetector(classifier="gradient_boosting", calibration_cv=0).fit(data.X, data.labels)
    assert _auc(det, data.X, data.labels) > 0.7


def test_composes_in_a_pipeline_with_groups(data):
    pipe = make_pipeline(StandardScaler(), HallucinationDetector())
    pipe.fit(data.X, data.labels, hallucinationdetector__groups=data.groups)
    assert pipe.predict(data.X).shape == data.labels.shape and _auc(pipe, data.X, data.labels) > 0.7


def test_from_config_locates_entropy_and_churn():
    names = ["track_count", "churn", "entropy"]
    det = HallucinationDetector.from_config(DetectorConfig(calibration="isotonic"), names)
    assert (det.entropy_col, det.churn_col, det.calibration) == (2, 1, "isotonic")
    with pytest.raises(DatasetError, match="'entropy'"):
        HallucinationDetector.from_config(DetectorConfig(), ["churn", "x"])
    assert HallucinationDetector.from_config(DetectorConfig(), FEATURE_NAMES).entropy_col == 0
