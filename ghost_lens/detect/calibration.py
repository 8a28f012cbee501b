"""Probability calibration of a score in [0, 1], and threshold choice.

Every calibrator maps a raw score ``s`` in [0, 1] (higher = more likely hallucinated) to a probability:

- ``platt``: ``sigmoid(a * logit(s) + b)``, ``a, b`` by logistic regression on ``logit(s)`` (Platt, 1999);
  it can both stretch and shift, so it cures a score squeezed around an off-centre value. ``a`` is constrained to
  be >= 0: a calibrator must not flip the score (that would be a sign learned behind the orientation's back);
  when the fit wants ``a < 0`` the score carries no usable signal and the calibrator returns the base rate.
- ``isotonic``: a non-decreasing step function fitted by isotonic regression (Zadrozny & Elkan, 2002); flexible,
  needs a few hundred examples, can produce ties.
- ``temperature``: ``sigmoid(logit(s) / T)`` with one ``T > 0`` minimising log loss (Guo et al., 2017); it only
  stretches around 0.5 and never moves the decision point, so it fixes over/under-confidence, not bias.
- ``none``: the score itself.

All four are monotone non-decreasing, so none changes the ranking (AUROC) of the score they calibrate.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

CalibrationMethod = Literal["platt", "isotonic", "temperature", "none"]
ThresholdRule = Literal["youden", "f1", "half"]
_EPS = 1e-6


def _logit(s: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(s, dtype=np.float64), _EPS, 1.0 - _EPS))


class Calibrator(Protocol):
    def transform(self, scores: np.ndarray) -> np.ndarray: ...


class IdentityCalibrator:
    def transform(self, scores: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)


class PlattCalibrator:
    def __init__(self, scores: np.ndarray, y: np.ndarray) -> None:
        lr = LogisticRegression(C=1e4, solver="newton-cholesky")
        lr.fit(_logit(scores).reshape(-1, 1), y)
        self.a = float(lr.coef_[0, 0])
        self.b = float(lr.intercept_[0])
        if self.a < 0:  # constrained to a >= 0 (monotone): the optimum then lies at a = 0, the base rate
            rate = float(np.clip(np.mean(y), _EPS, 1.0 - _EPS))
            self.a, self.b = 0.0, float(logit(rate))

    def transform(self, scores: np.ndarray) -> np.ndarray:
        return expit(self.a * _logit(scores) + self.b)


class IsotonicCalibrator:
    def __init__(self, scores: np.ndarray, y: np.ndarray) -> None:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(np.asarray(scores, dtype=np.float64), np.asarray(y, dtype=np.float64))
        # the fitted step function's knots: transform interpolates them itself, so a saved calibrator is two arrays
        self.x = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y = np.asarray(iso.y_thresholds_, dtype=np.float64)

    def transform(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, dtype=np.float64), self.x, self.y)


class TemperatureCalibrator:
    def __init__(self, scores: np.ndarray, y: np.ndarray) -> None:
        z = _logit(scores)
        y = np.asarray(y, dtype=np.float64)

        def nll(log_t: float) -> float:
            p = np.clip(expit(z / np.exp(log_t)), _EPS, 1.0 - _EPS)
            return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))

        res = minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded")
        self.temperature = float(np.exp(res.x))

    def transform(self, scores: np.ndarray) -> np.ndarray:
        return expit(_logit(scores) / self.temperature)


def fit_calibrator(method: CalibrationMethod, scores: np.ndarray, y: np.ndarray) -> Calibrator:
    """Fit the calibrator ``method`` on raw scores ``[n]`` and 0/1 labels ``[n]`` (both classes present)."""
    if method == "none":
        return IdentityCalibrator()
    if method == "platt":
        return PlattCalibrator(scores, y)
    if method == "isotonic":
        return IsotonicCalibrator(scores, y)
    if method == "temperature":
        return TemperatureCalibrator(scores, y)
    raise ValueError(f"unknown calibration {method!r}: expected platt, isotonic, temperature or none")


def calibrator_state(cal: Calibrator) -> tuple[str, dict[str, float], dict[str, np.ndarray]]:
    """``(method, scalars, arrays)``: everything a fitted calibrator holds, as numbers (no pickle)."""
    if isinstance(cal, PlattCalibrator):
        return "platt", {"a": cal.a, "b": cal.b}, {}
    if isinstance(cal, IsotonicCalibrator):
        return "isotonic", {}, {"x": cal.x, "y": cal.y}
    if isinstance(cal, TemperatureCalibrator):
        return "temperature", {"temperature": cal.temperature}, {}
    if isinstance(cal, IdentityCalibrator):
        return "none", {}, {}
    raise TypeError(f"unknown calibrator {type(cal).__name__}")


def calibrator_from_state(method: str, scalars: dict[str, float], arrays: dict[str, np.ndarray]) -> Calibrator:
    """The inverse of :func:`calibrator_state`."""
    cal: Any
    if method == "platt":
        cal = PlattCalibrator.__new__(PlattCalibrator)
        cal.a, cal.b = float(scalars["a"]), float(scalars["b"])
    elif method == "isotonic":
        cal = IsotonicCalibrator.__new__(IsotonicCalibrator)
        cal.x, cal.y = np.asarray(arrays["x"], dtype=np.float64), np.asarray(arrays["y"], dtype=np.float64)
    elif method == "temperature":
        cal = TemperatureCalibrator.__new__(TemperatureCalibrator)
        cal.temperature = float(scalars["temperature"])
    elif method == "none":
        cal = IdentityCalibrator()
    else:
        raise ValueError(f"unknown calibration {method!r}")
    return cal


def choose_threshold(proba: np.ndarray, y: np.ndarray, rule: ThresholdRule) -> float:
    """Decision threshold on ``proba`` (predict positive when ``proba >= threshold``) chosen on training data.

    ``youden`` maximises TPR - FPR (balanced accuracy); ``f1`` maximises F1 of the positive class; ``half`` is 0.5.
    Candidates are the midpoints between consecutive distinct scores (plus both ends), so the threshold generalises
    to unseen scores rather than sitting on a training value.
    """
    if rule == "half":
        return 0.5
    p = np.asarray(proba, dtype=np.float64)
    yb = np.asarray(y).astype(bool)
    u, inv = np.unique(p, return_inverse=True)
    cands = np.concatenate([[u[0] - _EPS], (u[:-1] + u[1:]) / 2.0, [u[-1] + _EPS]])
    pos_u = np.bincount(inv, weights=yb.astype(np.float64), minlength=u.size)
    neg_u = np.bincount(inv, weights=(~yb).astype(np.float64), minlength=u.size)
    # candidate k predicts positive for the distinct values u[k:], so tp/fp are reverse cumulative sums
    tp = np.concatenate([np.cumsum(pos_u[::-1])[::-1], [0.0]])
    fp = np.concatenate([np.cumsum(neg_u[::-1])[::-1], [0.0]])
    n_pos, n_neg = max(yb.sum(), 1), max((~yb).sum(), 1)
    if rule == "youden":
        objective = tp / n_pos - fp / n_neg
    elif rule == "f1":
        objective = 2 * tp / np.maximum(2 * tp + fp + (n_pos - tp), 1.0)
    else:
        raise ValueError(f"unknown threshold rule {rule!r}: expected youden, f1 or half")
    return float(cands[int(np.argmax(objective))])
