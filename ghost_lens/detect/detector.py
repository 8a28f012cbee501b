"""The entropy/churn hallucination detector: a scikit-learn classifier on per-example track metrics.

``fit(X, y)`` with ``X`` the track metrics ``[n, F]`` and ``y`` binary (the second class, ``classes_[1]``, is
"hallucinated"):

1. **Orientation.** Each of the entropy and churn columns gets a sign, +1 when higher values mean hallucination.
   With ``orientation="learned"`` (default) the sign is the side of 0.5 of the column's AUROC *on the training
   data*; with ``"hypothesis"`` it is +1, DESIGN's bet (many short-lived, evenly weighted hypotheses). Learning it
   costs nothing in honesty (it is fitted inside the training folds, like every baseline's orientation) and keeps
   a wrong bet from being scored as a failure of the whole detector; the learned signs are reported per fold, so a
   bet that does not hold shows up as signs that disagree with it or flip between folds.
2. **Entropy and churn scores.** The empirical CDF (mid-ranks) of the training column, mirrored when the sign is
   -1: the share of training examples that look *less* like a hallucination. In [0, 1], fitted on training only.
3. **Classifier** on all columns: standardised logistic regression, or histogram gradient boosting.
4. **Raw score** = ``(entropy_weight * entropy + churn_weight * churn + ml_weight * ml) / sum(weights)``.
5. **Calibration.** Raw scores of the training examples are computed out-of-fold (``calibration_cv`` inner folds,
   grouped when ``groups`` is passed to ``fit``; steps 1-4 refitted per fold), the calibrator (Platt, isotonic,
   temperature, or none) is fitted on them, then steps 1-4 are refitted on all training data (as
   ``CalibratedClassifierCV(ensemble=False)`` does). Those out-of-fold calibrated probabilities are kept as
   ``oof_proba_`` so that a decision threshold can be chosen on training data without in-sample optimism.

``predict_proba`` returns the calibrated probability; ``predict`` thresholds it at 0.5 (scikit-learn's contract:
``predict`` agrees with the argmax of ``predict_proba``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ghost_lens.config import DetectorConfig
from ghost_lens.detect.calibration import Calibrator, fit_calibrator
from ghost_lens.detect.folds import inner_splits
from ghost_lens.detect.metrics import weighted_auroc
from ghost_lens.detect.rowspace import standardised_logistic
from ghost_lens.errors import DatasetError

logger = logging.getLogger(__name__)

_CLASSIFIERS = ("logistic", "gradient_boosting")
_CALIBRATIONS = ("platt", "isotonic", "temperature", "none")
_ORIENTATIONS = ("learned", "hypothesis")


def _ecdf(sorted_train: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Mid-rank empirical CDF of the training values at ``x``, in [0, 1]."""
    left = np.searchsorted(sorted_train, x, side="left")
    right = np.searchsorted(sorted_train, x, side="right")
    return (left + right) / (2.0 * sorted_train.size)


@dataclass
class _Components:
    """Steps 1-3 fitted on one training set."""

    entropy_sign: float
    churn_sign: float
    entropy_sorted: np.ndarray | None
    churn_sorted: np.ndarray | None
    classifier: Any | None


class HallucinationDetector(ClassifierMixin, BaseEstimator):
    """Weighted entropy score + churn score + classifier probability, calibrated (see the module docstring).

    Parameters are stored untouched by ``__init__``; ``entropy_col`` / ``churn_col`` index columns of ``X``
    (:meth:`from_config` finds them by name). ``calibration_cv`` < 2 calibrates on in-sample scores.
    """

    def __init__(
        self,
        entropy_weight: float = 0.4,
        churn_weight: float = 0.3,
        ml_weight: float = 0.3,
        classifier: str = "logistic",
        calibration: str = "platt",
        entropy_col: int = 0,
        churn_col: int = 1,
        orientation: str = "learned",
        calibration_cv: int = 3,
        random_state: int | None = 0,
    ) -> None:
        self.entropy_weight = entropy_weight
        self.churn_weight = churn_weight
        self.ml_weight = ml_weight
        self.classifier = classifier
        self.calibration = calibration
        self.entropy_col = entropy_col
        self.churn_col = churn_col
        self.orientation = orientation
        self.calibration_cv = calibration_cv
        self.random_state = random_state

    @classmethod
    def from_config(
        cls, cfg: DetectorConfig, feature_names: Sequence[str], random_state: int | None = 0
    ) -> HallucinationDetector:
        """Build from a :class:`DetectorConfig`, locating the ``entropy`` and ``churn`` columns by name.

        The columns are ``tracks.entropy`` / ``tracks.churn`` of the concatenated feature groups (or plain
        ``entropy`` / ``churn`` for a matrix of track metrics alone). Without either (the ``tracks`` group not
        selected), the entropy and churn weights go to the classifier: its weight becomes the sum of all three.
        """
        names = list(feature_names)
        cols = {m: next((names.index(c) for c in (f"tracks.{m}", m) if c in names), None) for m in ("entropy", "churn")}
        weights = (cfg.entropy_weight, cfg.churn_weight, cfg.ml_weight)
        if cols["entropy"] is None and cols["churn"] is None:
            weights = (0.0, 0.0, cfg.entropy_weight + cfg.churn_weight + cfg.ml_weight)
            cols = {"entropy": 0, "churn": 0}
        missing = [m for m, c in cols.items() if c is None]
        if missing:
            raise DatasetError(f"track metrics have no {' or '.join(map(repr, missing))} column (got {names})")
        return cls(
            entropy_weight=weights[0], churn_weight=weights[1], ml_weight=weights[2],
            classifier=cfg.classifier, calibration=cfg.calibration, entropy_col=int(cols["entropy"]),  # type: ignore
            churn_col=int(cols["churn"]), orientation=cfg.orientation,  # type: ignore[arg-type]
            calibration_cv=cfg.calibration_cv, random_state=random_state,
        )

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    # ---- fitting -----------------------------------------------------------------------------------------------
    def _check_params(self, n_features: int) -> np.ndarray:
        if self.classifier not in _CLASSIFIERS:
            raise ValueError(f"classifier={self.classifier!r}: expected one of {_CLASSIFIERS}")
        if self.calibration not in _CALIBRATIONS:
            raise ValueError(f"calibration={self.calibration!r}: expected one of {_CALIBRATIONS}")
        if self.orientation not in _ORIENTATIONS:
            raise ValueError(f"orientation={self.orientation!r}: expected one of {_ORIENTATIONS}")
        w = np.array([self.entropy_weight, self.churn_weight, self.ml_weight], dtype=np.float64)
        if np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"weights must be >= 0 and not all zero, got {w.tolist()}")
        for name, weight in (("entropy_col", w[0]), ("churn_col", w[1])):
            col = getattr(self, name)
            if weight > 0 and not 0 <= int(col) < n_features:
                raise ValueError(f"{name}={col} is out of range for X with {n_features} feature(s)")
        return w / w.sum()

    def _make_classifier(self) -> Any:
        if self.classifier == "gradient_boosting":
            return HistGradientBoostingClassifier(max_leaf_nodes=15, random_state=self.random_state)
        # more columns than rows (888 at the gpt2-medium shape): solved in the rows' span (:mod:`.rowspace`)
        return standardised_logistic(C=1.0, solver="newton-cholesky")

    def _fit_components(self, X: np.ndarray, y: np.ndarray, w: np.ndarray) -> _Components:
        signs, sorted_cols = [], []
        for col, weight in ((self.entropy_col, w[0]), (self.churn_col, w[1])):
            if weight == 0:
                signs.append(1.0)
                sorted_cols.append(None)
                continue
            values = X[:, int(col)]
            if self.orientation == "learned":
                auc = weighted_auroc(values, y, np.ones((1, y.size)))[0]
                signs.append(-1.0 if auc < 0.5 else 1.0)
            else:
                signs.append(1.0)
            sorted_cols.append(np.sort(values))
        clf = clone(self._make_classifier()).fit(X, y) if w[2] > 0 else None
        return _Components(signs[0], signs[1], sorted_cols[0], sorted_cols[1], clf)

    @staticmethod
    def _parts(comp: _Components, X: np.ndarray, cols: tuple[int, int]) -> dict[str, np.ndarray]:
        parts: dict[str, np.ndarray] = {}
        for name, sign, srt, col in (
            ("entropy", comp.entropy_sign, comp.entropy_sorted, cols[0]),
            ("churn", comp.churn_sign, comp.churn_sorted, cols[1]),
        ):
            if srt is not None:
                cdf = _ecdf(srt, X[:, col])
                parts[name] = cdf if sign > 0 else 1.0 - cdf
        if comp.classifier is not None:
            parts["ml"] = comp.classifier.predict_proba(X)[:, 1]
        return parts

    def _raw(self, comp: _Components, X: np.ndarray, w: np.ndarray) -> np.ndarray:
        parts = self._parts(comp, X, (int(self.entropy_col), int(self.churn_col)))
        weights = dict(zip(("entropy", "churn", "ml"), w, strict=True))
        return np.sum([weights[k] * v for k, v in parts.items()], axis=0)

    def fit(self, X: Any, y: Any, groups: Any = None) -> HallucinationDetector:
        """Fit on track metrics ``X`` ``[n, F]`` and binary labels ``y``; ``groups`` keeps inner folds grouped."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        y_type = type_of_target(y, input_name="y", raise_unknown=True)
        if y_type != "binary":
            raise ValueError(f"Only binary classification is supported. The type of the target is {y_type}.")
        self.classes_ = np.unique(y)
        if self.classes_.size < 2:
            raise ValueError("HallucinationDetector needs samples of 2 classes; got 1 class")
        yb = (y == self.classes_[1]).astype(np.int64)
        w = self._check_params(X.shape[1])
        g = None if groups is None else np.asarray(groups)
        if g is not None and g.shape[0] != yb.size:
            raise ValueError(f"groups has {g.shape[0]} entries for {yb.size} samples")

        self.components_ = self._fit_components(X, yb, w)
        splits = inner_splits(yb, g, int(self.calibration_cv), self.random_state)
        if splits:  # step 5: raw scores of the training examples from models that did not see them
            oof = np.empty(yb.size)
            for tr, te in splits:
                oof[te] = self._raw(self._fit_components(X[tr], yb[tr], w), X[te], w)
        else:
            logger.debug("calibrating on in-sample scores (too few samples or groups for inner folds)")
            oof = self._raw(self.components_, X, w)
        self.calibrator_: Calibrator = fit_calibrator(self.calibration, oof, yb)  # type: ignore[arg-type]
        self.oof_proba_ = self.calibrator_.transform(oof)
        self.weights_ = w
        self.entropy_sign_ = self.components_.entropy_sign
        self.churn_sign_ = self.components_.churn_sign
        self.calibrated_out_of_fold_ = bool(splits)
        return self

    # ---- prediction --------------------------------------------------------------------------------------------
    def component_scores(self, X: Any) -> dict[str, np.ndarray]:
        """The uncalibrated parts of the score: ``entropy``, ``churn``, ``ml`` (those with a non-zero weight)
        and ``raw`` (their weighted mean), each ``[n]`` in [0, 1]."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        parts = self._parts(self.components_, X, (int(self.entropy_col), int(self.churn_col)))
        parts["raw"] = self._raw(self.components_, X, self.weights_)
        return parts

    def predict_proba(self, X: Any) -> np.ndarray:
        """Calibrated probabilities ``[n, 2]`` in the order of ``classes_`` (column 1: hallucinated)."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        p = np.clip(self.calibrator_.transform(self._raw(self.components_, X, self.weights_)), 0.0, 1.0)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        """``classes_[1]`` where the calibrated probability exceeds 0.5."""
        p = self.predict_proba(X)[:, 1]
        return self.classes_[(p > 0.5).astype(np.int64)]
