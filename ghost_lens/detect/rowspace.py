"""L2 logistic regression solved in the span of its training rows when they have more columns than rows.

The detector's classifier (:mod:`ghost_lens.detect.detector`) fits an L2-penalised logistic regression with
scikit-learn's Newton solver on a few hundred standardised rows with more columns than rows (888 track and SAE
columns against 427 to 640 training rows at the gpt2-medium shape: an ``F x F`` Hessian per iteration). Such a fit
depends on the coefficients ``w`` only through ``X w`` and ``||w||``:

1. Every gradient of the objective, ``X^T r + w / C``, lies in the span of the training rows when ``w`` does, so
   a solver started at ``w = 0`` stays there, and so does the optimum (any part of ``w`` orthogonal to the rows
   only adds to the penalty).
2. With the thin QR factorisation ``X^T = Q R`` (``Q`` ``[F, n]`` with orthonormal columns, ``R`` ``[n, n]``):
   ``w = Q z`` gives ``X w = R^T z`` and ``||w|| = ||z||``. The problem on the ``n x n`` matrix ``R^T`` is the
   same problem (same loss, same penalty, same unpenalised intercept, same sample weights), on ``n`` columns
   instead of ``F``.
3. scikit-learn's own solver fits it; ``coef_`` is mapped back, ``Q z``, so the estimator is an ordinary fitted
   :class:`~sklearn.linear_model.LogisticRegression` (same ``coef_`` shape, same predictions, same saved state).

The solver's iterates are the same up to rounding; where they stop can differ: scikit-learn's stopping rules look
at the largest gradient entry, which a rotation changes. Both ends are within the solver's tolerance of the one
optimum (``tests/unit/test_rowspace.py`` compares with the plain fit at a tight tolerance).

Cost: one QR (``2 n^2 F``, about 40 ms at 427 x 888) instead of an ``n x F`` sandwich product and an ``F x F``
solve per Newton iteration: the detector's fit is 2x faster at the gpt2-medium shape (3x at the inner folds'
427 rows, 1.4x at 640). It does not pay for L-BFGS, whose iterations cost two ``n x F`` products: the QR costs
as much as about ``n / 2`` of them (the stacked scorer and the probes stay on scikit-learn's plain fit). With no
more columns than rows, with an L1 part in the penalty (a rotation changes an L1 norm), or sparse input, the fit is
scikit-learn's, unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from jaxtyping import Float
from scipy.linalg import qr
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import validate_data


def row_basis(x: Float[np.ndarray, "n d"]) -> tuple[Float[np.ndarray, "d n"], Float[np.ndarray, "n n"]]:
    """``(Q, Z)``: an orthonormal basis ``Q`` of the span of the rows of ``x`` (thin QR of ``x^T``) and the rows in
    it, ``Z = x Q = R^T``."""
    x = np.asarray(x)
    q, r = qr((x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)).T, mode="economic",
              check_finite=False)
    return q, np.ascontiguousarray(r.T)


class RowSpaceLogisticRegression(LogisticRegression):
    """:class:`~sklearn.linear_model.LogisticRegression` (same parameters) that solves an L2 fit with more columns
    than rows in the span of its training rows (module docstring); ``coef_`` is in the space of ``X``."""

    def _rowspace_applies(self, X: Any) -> bool:
        l2 = self.penalty in ("l2", "deprecated") and not self.l1_ratio  # sklearn 1.8+: penalty via l1_ratio
        return (l2 and not self.dual and not sp.issparse(X) and np.ndim(X) == 2
                and np.shape(X)[1] > np.shape(X)[0])

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> RowSpaceLogisticRegression:
        if not self._rowspace_applies(X):
            return super().fit(X, y, sample_weight=sample_weight)
        previous = getattr(self, "coef_", None) if self.warm_start else None
        # scikit-learn's own checks and bookkeeping: n_features_in_, feature_names_in_ (a DataFrame), dtype kept
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=True)
        q, z = row_basis(X)
        inner = LogisticRegression(**self.get_params())
        if previous is not None:
            if previous.shape[1] != X.shape[1]:
                raise ValueError(f"warm start: the previous coef_ has {previous.shape[1]} features, X has "
                                 f"{X.shape[1]}")
            # the previous solution, projected on the rows' span (exact when it was fitted on the same rows)
            inner.coef_, inner.intercept_ = previous @ q, np.array(self.intercept_, copy=True)
        inner.fit(z, y, sample_weight=sample_weight)
        self.coef_ = inner.coef_ @ q.T
        self.intercept_ = inner.intercept_
        self.classes_ = inner.classes_
        self.n_iter_ = inner.n_iter_
        return self


def standardised_logistic(**params: Any) -> Pipeline:
    """``StandardScaler`` + :class:`RowSpaceLogisticRegression`, with the step names of
    ``make_pipeline(StandardScaler(), LogisticRegression(...))`` (``logisticregression__C`` etc.)."""
    return Pipeline([("standardscaler", StandardScaler()), ("logisticregression", RowSpaceLogisticRegression(**params))])
