"""The stacked scorer: the model's own confidence and the SAE feature groups in one logistic regression.

It answers "do the SAE features add anything to what the model's confidence already says?". Fitted like every
other method on the training folds only:

1. Standardise every column (confidence scores and SAE features) on the training part.
2. Choose the L2 strength ``C`` among ``Cs`` by grouped inner cross-validation on the training part (AUROC of
   the inner test folds, pooled over the inner folds), so more SAE columns cannot buy in-sample optimism.
3. Refit with the chosen ``C`` on the whole training part.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted, validate_data

from ghost_lens.detect.folds import inner_splits
from ghost_lens.detect.metrics import weighted_auroc


class StackedScorer(ClassifierMixin, BaseEstimator):
    """Standardised L2 logistic regression with ``C`` chosen on grouped inner folds (module docstring)."""

    def __init__(self, Cs: Sequence[float] = (0.01, 0.1, 1.0), inner_cv: int = 3, random_state: int | None = 0):
        self.Cs = Cs
        self.inner_cv = inner_cv
        self.random_state = random_state

    def _model(self, c: float, warm_start: bool = False) -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, warm_start=warm_start))

    def fit(self, X: Any, y: Any, groups: Any = None) -> StackedScorer:
        X, y = validate_data(self, X, y, dtype=np.float64)
        self.classes_ = np.unique(y)
        if self.classes_.size != 2:
            raise ValueError(f"StackedScorer needs 2 classes, got {self.classes_.size}")
        yb = (y == self.classes_[1]).astype(np.int64)
        cs = [float(c) for c in self.Cs]
        splits = inner_splits(yb, None if groups is None else np.asarray(groups), int(self.inner_cv),
                              self.random_state) if len(cs) > 1 else []
        self.inner_auroc_: dict[float, float] = {}
        if splits:
            oof = {c: np.empty(yb.size) for c in cs}
            for tr, te in splits:  # each inner fold walks the Cs upwards, warm-starting from the previous solution
                model = self._model(min(cs), warm_start=True)
                for c in sorted(cs):
                    model.set_params(logisticregression__C=c)
                    oof[c][te] = model.fit(X[tr], yb[tr]).predict_proba(X[te])[:, 1]
            for c in cs:
                self.inner_auroc_[c] = float(weighted_auroc(oof[c], yb, np.ones((1, yb.size)))[0])
            self.C_ = max(cs, key=lambda c: (self.inner_auroc_[c], -c))  # ties: the stronger penalty
        else:
            self.C_ = cs[len(cs) // 2]
        self.model_ = self._model(self.C_).fit(X, yb)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.model_.predict_proba(X)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(np.int64)]
