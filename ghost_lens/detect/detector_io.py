"""A fitted :class:`~ghost_lens.detect.HallucinationDetector` on disk: safetensors arrays + a JSON document.

No pickle: a run folder is shared between researchers, and unpickling runs whatever code the file names. Everything
a fitted detector holds is numbers, so it is written as

- ``detector.safetensors``: the arrays (sorted training columns behind the entropy / churn ECDFs, the scaler's mean
  and scale, the logistic coefficients, the knots of an isotonic calibrator, the nodes of gradient-boosted trees);
- ``detector.json``: the format version, the constructor parameters, the scalars (signs, weights, Platt ``a, b``,
  temperature), the feature names and feature groups it was fitted on, and the hash of the run config it belongs
  to (:func:`config_hash`).

Steps of :func:`load_detector`: read the JSON (format and version checked), refuse it when ``expected_hash`` is
given and differs (a detector left over from another config), read the arrays, rebuild the estimator's fitted
attributes. Probabilities of the loaded detector equal the saved one's (tested).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ghost_lens.constants import DETECTOR_ARRAYS, DETECTOR_META
from ghost_lens.detect.calibration import calibrator_from_state, calibrator_state
from ghost_lens.detect.detector import HallucinationDetector, _Components
from ghost_lens.errors import RunFolderError
from ghost_lens.io import atomic_write_bytes

FORMAT = "ghost-lens-detector"
FORMAT_VERSION = 1
_TREE_FIELDS = ("value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf")


def config_hash(cfg: Any) -> str:
    """sha256 (16 hex digits) of a run config as sorted JSON: the detector belongs to exactly this config."""
    from ghost_lens.config_io import to_dict

    data = to_dict(cfg) if not isinstance(cfg, dict) else cfg
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


class TreeEnsemble:
    """Binary gradient-boosted trees evaluated from their node arrays (what ``HistGradientBoostingClassifier``
    computes on numeric, NaN-free or NaN-aware input: ``baseline + sum of leaf values``, then the sigmoid)."""

    def __init__(self, baseline: float, offsets: np.ndarray, nodes: dict[str, np.ndarray]) -> None:
        self.baseline, self.offsets, self.nodes = float(baseline), offsets, nodes

    @classmethod
    def from_sklearn(cls, model: Any) -> TreeEnsemble:
        if int(model.n_trees_per_iteration_) != 1:
            raise ValueError("only binary gradient boosting can be saved")
        trees = [p[0].nodes for p in model._predictors]
        offsets = np.cumsum([0] + [t.size for t in trees]).astype(np.int64)
        nodes = {f: np.concatenate([np.asarray(t[f]) for t in trees]) for f in _TREE_FIELDS}
        return cls(float(np.asarray(model._baseline_prediction).ravel()[0]), offsets, nodes)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        raw = np.full(X.shape[0], self.baseline)
        rows = np.arange(X.shape[0])
        n = self.nodes
        for t in range(self.offsets.size - 1):
            base = int(self.offsets[t])
            node = np.zeros(X.shape[0], dtype=np.int64)
            while True:
                inner = n["is_leaf"][base + node] == 0
                if not inner.any():
                    break
                g = base + node
                x = X[rows, n["feature_idx"][g]]
                left = np.where(np.isnan(x), n["missing_go_to_left"][g] == 1, x <= n["num_threshold"][g])
                node = np.where(inner, np.where(left, n["left"][g], n["right"][g]).astype(np.int64), node)
            raw += n["value"][base + node]
        return raw

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])


def _classifier_state(clf: Any) -> tuple[str, dict[str, Any], dict[str, np.ndarray]]:
    if clf is None:
        return "none", {}, {}
    if isinstance(clf, Pipeline):
        scaler, lr = clf.steps[0][1], clf.steps[-1][1]
        arrays = {"mean": scaler.mean_, "scale": scaler.scale_, "var": scaler.var_, "coef": lr.coef_,
                  "intercept": lr.intercept_, "classes": lr.classes_.astype(np.float64)}
        return "logistic", {"n_samples_seen": int(np.max(scaler.n_samples_seen_))}, arrays
    ens = clf if isinstance(clf, TreeEnsemble) else TreeEnsemble.from_sklearn(clf)
    arrays = {"offsets": ens.offsets, **{f"node_{k}": v for k, v in ens.nodes.items()}}
    return "gradient_boosting", {"baseline": ens.baseline}, arrays


def _classifier_from_state(kind: str, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
    if kind == "none":
        return None
    if kind == "logistic":
        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = arrays["mean"], arrays["scale"], arrays["var"]
        scaler.n_features_in_ = int(arrays["mean"].size)
        scaler.n_samples_seen_ = int(scalars["n_samples_seen"])
        lr = LogisticRegression(C=1.0, solver="newton-cholesky")
        lr.coef_, lr.intercept_ = arrays["coef"], arrays["intercept"]
        lr.classes_ = arrays["classes"].astype(np.int64)
        lr.n_features_in_ = int(arrays["coef"].shape[1])
        lr.n_iter_ = np.zeros(1, dtype=np.int32)
        return make_pipeline(scaler, lr)
    if kind == "gradient_boosting":
        nodes = {k.removeprefix("node_"): v for k, v in arrays.items() if k.startswith("node_")}
        return TreeEnsemble(float(scalars["baseline"]), arrays["offsets"], nodes)
    raise RunFolderError(f"unknown classifier {kind!r} in the saved detector")


def save_detector(
    det: HallucinationDetector, folder: str | Path, *, feature_names: list[str], feature_groups: list[str],
    cfg_hash: str,
) -> dict[str, Path]:
    """Write a fitted detector as ``detector.safetensors`` + ``detector.json`` into ``folder`` (each atomically;
    the JSON last, so a detector is complete once its JSON is there)."""
    from safetensors.numpy import save

    comp: _Components = det.components_
    arrays: dict[str, np.ndarray] = {}
    for name, srt in (("entropy_sorted", comp.entropy_sorted), ("churn_sorted", comp.churn_sorted)):
        if srt is not None:
            arrays[name] = srt
    kind, clf_scalars, clf_arrays = _classifier_state(comp.classifier)
    arrays |= {f"classifier.{k}": v for k, v in clf_arrays.items()}
    cal_kind, cal_scalars, cal_arrays = calibrator_state(det.calibrator_)
    arrays |= {f"calibrator.{k}": v for k, v in cal_arrays.items()}
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "config_hash": cfg_hash,
        "feature_names": list(feature_names), "feature_groups": list(feature_groups),
        "params": det.get_params(), "n_features_in": int(det.n_features_in_),
        "classes": det.classes_.tolist(), "weights": det.weights_.tolist(),
        "entropy_sign": float(comp.entropy_sign), "churn_sign": float(comp.churn_sign),
        "calibrated_out_of_fold": bool(det.calibrated_out_of_fold_),
        "classifier": {"kind": kind, **clf_scalars}, "calibrator": {"method": cal_kind, **cal_scalars},
    }
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"arrays": folder / DETECTOR_ARRAYS, "meta": folder / DETECTOR_META}
    atomic_write_bytes(paths["arrays"], save({k: np.ascontiguousarray(v) for k, v in arrays.items()}))
    atomic_write_bytes(paths["meta"], json.dumps(meta, indent=1).encode())
    return paths


def load_detector(folder: str | Path, expected_hash: str | None = None) -> tuple[HallucinationDetector, dict]:
    """``(detector, meta)`` from :func:`save_detector`'s files; one-line :class:`RunFolderError` when they are
    missing, malformed, of another format, or (with ``expected_hash``) fitted under another config."""
    from safetensors.numpy import load_file

    folder = Path(folder)
    meta_path, arr_path = folder / DETECTOR_META, folder / DETECTOR_ARRAYS
    if not meta_path.is_file() or not arr_path.is_file():
        raise RunFolderError(f"{folder} has no {DETECTOR_META} + {DETECTOR_ARRAYS} (the run did not finish, or it "
                             "was made by an older ghost-lens): rerun `ghost-lens track`")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RunFolderError(f"{meta_path} is not valid JSON: rerun `ghost-lens track`") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        raise RunFolderError(f"{meta_path} is not a ghost-lens detector of format version {FORMAT_VERSION}")
    if expected_hash is not None and meta.get("config_hash") != expected_hash:
        raise RunFolderError(f"{folder}: the saved detector was fitted under another config (hash "
                             f"{meta.get('config_hash')} != {expected_hash} of config.yaml): rerun `ghost-lens track`")
    try:
        arrays = load_file(str(arr_path))
        det = HallucinationDetector(**meta["params"])
        clf = _classifier_from_state(meta["classifier"]["kind"], meta["classifier"],
                                     {k.removeprefix("classifier."): v for k, v in arrays.items()
                                      if k.startswith("classifier.")})
        det.components_ = _Components(float(meta["entropy_sign"]), float(meta["churn_sign"]),
                                      arrays.get("entropy_sorted"), arrays.get("churn_sorted"), clf)
        cal = dict(meta["calibrator"])
        det.calibrator_ = calibrator_from_state(cal.pop("method"), cal, {
            k.removeprefix("calibrator."): v for k, v in arrays.items() if k.startswith("calibrator.")})
    except (KeyError, TypeError, ValueError) as exc:
        raise RunFolderError(f"{folder}: the saved detector is incomplete or malformed ({exc})") from None
    det.classes_ = np.asarray(meta["classes"])
    det.n_features_in_ = int(meta["n_features_in"])
    det.weights_ = np.asarray(meta["weights"], dtype=np.float64)
    det.entropy_sign_, det.churn_sign_ = det.components_.entropy_sign, det.components_.churn_sign
    det.calibrated_out_of_fold_ = bool(meta["calibrated_out_of_fold"])
    return det, meta
