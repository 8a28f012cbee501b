"""Fast kernels behind :class:`ghost_lens.detect.baselines.SelectingProbe`'s choice of candidate and ``C``.

The probe calls everything here on the rows of one outer training part only, so no choice ever sees an evaluation
row; each score is fitted on an inner fold's training rows and scored on its held-out rows (the ridge screen's
label-free scaling alone is fitted on the whole training part).

1. :func:`ridge_screen_scores`: a closed-form ridge screen. For one candidate matrix, the features are scaled once
   on the rows given (the probe's training rows; standardised, or max-abs for sparse SAE activations; the
   statistics read no label), the linear kernel of those rows is built once (a sparse-sparse product for sparse
   SAE activations), and for each inner fold the kernel of the rows centred on the fold's training rows follows
   from it, and the held-out scores of every ridge penalty in closed form (the dual solution
   ``(K + lambda I)^-1 y``, one Cholesky factorisation per penalty); their AUROCs come from one vectorised rank
   computation (:func:`auroc_columns`). Cost: one ``n x n`` Gram matrix per candidate and a few Cholesky
   factorisations per fold, instead of one iterative logistic fit per candidate, fold and ``C``. (Scaling and a
   kernel per inner fold instead cost 2.5x the time at the gpt2-medium shape, for a choice among candidates that
   the scaling's statistics barely move; the C path and the final fit still scale on their own training rows.)
2. :func:`logistic_c_path`: the class-balanced L2 logistic regression of scikit-learn
   (``StandardScaler`` + ``LogisticRegression(class_weight="balanced", solver="lbfgs")``, the same objective, the
   same unpenalised intercept and the same stopping rule) along a path of ``C`` values, warm-started from the
   previous ``C``, with the standardisation computed once per fold. A lean L-BFGS on a numpy loss: scikit-learn's
   per-iteration overhead dominates at probe sizes (a few hundred rows).

3. :func:`l1_logistic_c_path`: the sparse probe's L1 path (liblinear, as before) with the max-abs scaling done
   once per fold, and no fit for a ``C`` under the exact threshold below which the class-balanced L1 solution is
   all zeros (a constant score, AUROC 0.5): ``C < 2 / max_j |sum_i w_i s_i x_ij|``.

Each kernel has a slow reference built from scikit-learn estimators (:func:`ridge_screen_scores_reference`,
:func:`logistic_c_path_reference`); ``tests/unit/test_probe_kernels.py`` checks that they agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
from jaxtyping import Float
from scipy.linalg import cho_factor, cho_solve
from scipy.optimize import minimize
from scipy.special import expit
from scipy.stats import rankdata

Splits = Sequence[tuple[np.ndarray, np.ndarray]]

RELATIVE_LAMBDAS = (0.01, 0.1, 1.0, 10.0)
"""Ridge penalties of the screen when none are given, in units of the mean squared norm of the centred rows."""


def auroc_columns(scores: Float[np.ndarray, "n m"], y: np.ndarray) -> Float[np.ndarray, " m"]:
    """AUROC of every column of ``scores`` against binary ``y`` (ties count one half; NaN without both classes)."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[1], np.nan)
    ranks = rankdata(scores, axis=0)  # mid-ranks for ties
    return (ranks[y].sum(axis=0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def scale_rows(mat: Any, rows: np.ndarray | slice, kind: str) -> tuple[Any, np.ndarray | None, np.ndarray]:
    """``(matrix, mean or None, scale)`` fitted on ``mat[rows]`` as the probe's scaler does: ``"dense"``
    standardises (``StandardScaler``: population std, a constant column keeps scale 1); ``"sparse"`` divides by
    the column's max absolute value (``MaxAbsScaler``: no centring, sparsity kept). The matrix returned is all rows
    scaled (centred for dense)."""
    if kind == "dense":
        x = np.asarray(mat[rows], dtype=np.float64)
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std < 10 * np.finfo(np.float64).eps * np.maximum(1.0, np.abs(mean))] = 1.0
        return (np.asarray(mat, dtype=np.float64) - mean) / std, mean, std
    if kind == "sparse":
        m = sp.csr_matrix(mat, dtype=np.float64)
        scale = np.asarray(abs(m[rows]).max(axis=0).todense()).reshape(-1)
        scale[scale == 0] = 1.0
        return m @ sp.diags(1.0 / scale), None, scale
    raise ValueError(f"unknown probe kind {kind!r} (dense or sparse)")


def _dense(a: Any) -> np.ndarray:
    return np.asarray(a.todense()) if sp.issparse(a) else np.asarray(a)


SPARSE_KERNEL_DENSITY = 0.05
"""Sparse rows at most this dense (stored entries / cells) get their kernel from a sparse-sparse product."""


def _gram(a: Any) -> np.ndarray:
    """``A A^T`` as a dense array. Dense rows: BLAS. Sparse rows: a sparse-sparse product when they are sparse (SAE
    activations at the gpt2-medium shape, 64 of 5120 features per row: 8x faster than the next), else sparse @
    dense with the dense factor C-ordered (scipy copies a transposed, F-ordered factor on every product)."""
    if not sp.issparse(a):
        a = np.asarray(a)
        return a @ a.T
    if a.nnz <= SPARSE_KERNEL_DENSITY * a.shape[0] * a.shape[1]:
        return (a @ sp.csr_matrix(a.T)).toarray()
    return np.asarray(a @ np.ascontiguousarray(_dense(a).T))


def _centred_kernel_scores(kern: np.ndarray, tr: np.ndarray, te: np.ndarray, yc: np.ndarray,
                           lambdas: Sequence[float] | None) -> np.ndarray:
    """``[n_te, n_lambdas]`` held-out dual ridge scores (intercept left out) from the linear kernel ``kern`` of all
    rows: the kernel of the rows centred on the ``tr`` rows' mean follows from ``kern`` alone
    (``K_ij - m_i - m_j + c``, ``m_i`` the mean of row i's kernel over ``tr``, ``c`` their mean over ``tr``), then
    ``K_te,tr (K_tr,tr + l I)^-1 y`` with one Cholesky factorisation per penalty."""
    cols = kern.take(tr, axis=1)  # [n, n_tr]: two takes, 2.5x faster than one np.ix_ gather
    m = cols.mean(axis=1)
    m_tr = m[tr]
    c = float(m_tr.mean())
    gram = cols.take(tr, axis=0)
    gram -= m_tr[:, None]
    gram -= m_tr[None, :] - c
    project = cols.take(te, axis=0)
    project -= m[te][:, None]
    project -= m_tr[None, :] - c
    return project @ _ridge_solutions(gram, yc, lambdas, tr.size)


def _ridge_solutions(gram: np.ndarray, rhs: np.ndarray, lambdas: Sequence[float] | None, n: int) -> np.ndarray:
    """``[k, n_lambdas]``: ``(gram + l I)^-1 rhs`` for every penalty (``None``: ``RELATIVE_LAMBDAS`` times the mean
    squared norm ``trace(gram) / n`` of the ``n`` centred rows), one Cholesky factorisation each."""
    lam = (np.asarray(lambdas, dtype=np.float64) if lambdas is not None
           else np.array(RELATIVE_LAMBDAS) * max(float(np.trace(gram)) / n, 1e-12))
    out = np.empty((gram.shape[0], lam.size))
    for i, pen in enumerate(lam):
        shifted = gram.copy(order="F")  # Fortran order: LAPACK factorises it in place, no second copy
        shifted.flat[:: gram.shape[0] + 1] += float(pen)  # the diagonal
        out[:, i] = cho_solve(cho_factor(shifted, overwrite_a=True, check_finite=False), rhs, check_finite=False)
    return out


def ridge_screen_scores(
    mat: Any, y: np.ndarray, splits: Splits, lambdas: Sequence[float] | None, kind: str = "dense",
) -> Float[np.ndarray, " n_lambdas"]:
    """Mean held-out AUROC over ``splits`` of ridge regression on one candidate matrix, for every penalty at once.

    A screen, so cheap: the rows are scaled once on all of ``mat``'s rows (:func:`scale_rows`; the probe passes its
    training rows only, and the scaling statistics read no label), not once per split. Then, fewer columns than
    any split's training rows: per split, the primal ``(A^T A + l I) w = A^T y`` on the rows centred on the split's
    training rows (``d x d``); else one linear kernel of all rows (sparse rows stay sparse: :func:`_gram`), and per
    split the dual solution on its centred sub-kernel (:func:`_centred_kernel_scores`). One Cholesky factorisation
    per split and penalty; the held-out scores of every penalty get their AUROC in one rank computation.
    ``lambdas=None``: relative to the mean squared row norm of the split's centred training rows,
    ``RELATIVE_LAMBDAS x trace(A^T A) / n``. Splits whose held-out rows lack a class are skipped; NaN when none is
    left.
    """
    y = np.asarray(y).astype(np.float64)
    n_lam = len(RELATIVE_LAMBDAS) if lambdas is None else len(lambdas)
    splits = [(tr, te) for tr, te in splits if np.unique(y[te]).size == 2]
    if not splits:
        return np.full(n_lam, np.nan)
    scaled, _, _ = scale_rows(mat, slice(None), kind)  # all rows: no gathered copy
    dual = mat.shape[1] >= max(tr.size for tr, _ in splits)  # the smaller system
    kern, a = (_gram(scaled), None) if dual else (None, _dense(scaled))
    per_fold = []
    for tr, te in splits:
        yc = y[tr] - y[tr].mean()
        if kern is not None:
            scores = _centred_kernel_scores(kern, tr, te, yc, lambdas)
        else:
            mu = a[tr].mean(axis=0)
            a_tr, a_te = a[tr] - mu, a[te] - mu
            scores = a_te @ _ridge_solutions(a_tr.T @ a_tr, a_tr.T @ yc, lambdas, tr.size)
        per_fold.append(auroc_columns(scores, y[te]))
    return np.mean(per_fold, axis=0)


def _mean_fold_auroc(mat: Any, y: np.ndarray, splits: Splits, kind: str, n_cols: int,
                     fold_scores: Any) -> Float[np.ndarray, " n_cols"]:
    """Mean over ``splits`` of the held-out AUROC of each column of ``fold_scores(x_train, y_train, x_test)``
    (``[n_test, n_cols]``), the rows scaled on the fold's training rows (:func:`scale_rows`); folds whose held-out
    rows lack a class are skipped, NaN when none is left."""
    per_fold = []
    for tr, te in splits:
        if np.unique(y[te]).size != 2:
            continue
        scaled, _, _ = scale_rows(mat, tr, kind)
        per_fold.append(auroc_columns(fold_scores(scaled[tr], y[tr], scaled[te]), y[te]))
    return np.mean(per_fold, axis=0) if per_fold else np.full(n_cols, np.nan)


def ridge_screen_scores_reference(
    mat: Any, y: np.ndarray, splits: Splits, lambdas: Sequence[float], kind: str = "dense",
) -> np.ndarray:
    """Slow reference of :func:`ridge_screen_scores` (explicit ``lambdas``): the probe's own scaler fitted on all
    rows, then one scikit-learn ``Ridge`` (with its intercept) per split and penalty, scored with
    ``roc_auc_score``."""
    from sklearn.linear_model import Ridge
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    x = (StandardScaler() if kind == "dense" else MaxAbsScaler()).fit_transform(mat)
    x = _dense(x) if sp.issparse(x) else np.asarray(x)
    per_fold = []
    for tr, te in splits:
        if np.unique(y[te]).size != 2:
            continue
        per_fold.append([roc_auc_score(y[te], Ridge(alpha=float(lam), solver="svd").fit(x[tr], y[tr].astype(float))
                                       .predict(x[te])) for lam in lambdas])
    return np.mean(per_fold, axis=0) if per_fold else np.full(len(lambdas), np.nan)


def _balanced_weights(y: np.ndarray) -> np.ndarray:
    """scikit-learn's ``class_weight="balanced"``: ``n / (2 * count(class))`` per row."""
    counts = np.bincount(y, minlength=2).astype(np.float64)
    return (y.size / (2.0 * counts))[y]


def fit_balanced_logistic(
    x: Float[np.ndarray, "n d"], y: np.ndarray, c: float, init: np.ndarray | None = None,
    tol: float = 1e-4, max_iter: int = 2000,
) -> np.ndarray:
    """``[d + 1]`` (coefficients, intercept) of the class-balanced L2 logistic regression on already scaled ``x``.

    The objective and stopping rule of scikit-learn's ``LogisticRegression(solver="lbfgs")``: the weighted mean
    log-loss plus ``||w||^2 / (2 C sum(weights))``, intercept unpenalised, L-BFGS-B until the largest gradient
    entry is under ``tol`` (or the relative decrease under 64 machine epsilons)."""
    y = np.asarray(y).astype(np.int64)
    sw = _balanced_weights(y)
    sw_sum = float(sw.sum())
    sign = 2.0 * y - 1.0
    d = x.shape[1]
    l2 = 1.0 / (c * sw_sum)

    def loss_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:d], theta[d]
        margin = sign * (x @ w + b)
        loss = float(sw @ np.logaddexp(0.0, -margin)) / sw_sum + 0.5 * l2 * float(w @ w)
        dz = -sign * expit(-margin) * sw / sw_sum  # d loss / d decision
        grad = np.empty(d + 1)
        grad[:d] = x.T @ dz + l2 * w
        grad[d] = dz.sum()
        return loss, grad

    theta0 = np.zeros(d + 1) if init is None else np.asarray(init, dtype=np.float64)
    res = minimize(loss_grad, theta0, method="L-BFGS-B", jac=True,
                   options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    return res.x


def logistic_c_path(
    mat: Any, y: np.ndarray, splits: Splits, cs: Sequence[float],
) -> Float[np.ndarray, " n_cs"]:
    """Mean held-out AUROC over ``splits`` of the standardised, class-balanced L2 logistic regression for every C in
    ``cs`` (module docstring, step 2): per fold the scaling is fitted once on the training rows, and the Cs are
    walked from the strongest penalty up, each fit starting from the previous solution. NaN where no fold has both
    classes in its held-out rows."""
    order = np.argsort(cs)

    def path(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray) -> np.ndarray:
        theta = None
        dec = np.empty((xte.shape[0], len(cs)))
        for i in order:
            theta = fit_balanced_logistic(xtr, ytr, float(cs[i]), init=theta)
            dec[:, i] = xte @ theta[:-1] + theta[-1]
        return dec

    return _mean_fold_auroc(mat, np.asarray(y).astype(np.int64), splits, "dense", len(cs), path)


def l1_zero_c(x: Any, y: np.ndarray) -> float:
    """The largest C at which the class-balanced L1 logistic regression (liblinear, intercept as a penalised
    column) has the all-zero solution on scaled rows ``x``: at ``w = 0`` the loss gradient is
    ``-C / 2 * sum_i w_i s_i x_ij`` (the intercept's is 0 under balanced weights), so ``w = 0`` is optimal while
    ``C * max_j |sum_i w_i s_i x_ij| / 2 <= 1``."""
    y = np.asarray(y).astype(np.int64)
    corr = np.abs(np.asarray(x.T @ (_balanced_weights(y) * (2.0 * y - 1.0))).reshape(-1))
    top = float(corr.max()) if corr.size else 0.0
    return np.inf if top == 0 else 2.0 / top


def l1_logistic_c_path(
    mat: Any, y: np.ndarray, splits: Splits, cs: Sequence[float], make: Any,
) -> Float[np.ndarray, " n_cs"]:
    """Mean held-out AUROC over ``splits`` of the max-abs scaled L1 probe for every C in ``cs`` (module docstring,
    step 3). ``make(c)``: the unfitted classifier for one C (the probe's liblinear model without its scaler).
    A C under :func:`l1_zero_c` of the fold is not fitted: its solution is all zeros, its AUROC 0.5."""
    def path(xtr: Any, ytr: np.ndarray, xte: Any) -> np.ndarray:
        zero_c = l1_zero_c(xtr, ytr) * (1.0 - 1e-6)
        dec = np.zeros((xte.shape[0], len(cs)))
        for i, c in enumerate(cs):
            if float(c) >= zero_c:
                dec[:, i] = make(float(c)).fit(xtr, ytr).decision_function(xte)
        return dec

    return _mean_fold_auroc(mat, np.asarray(y).astype(np.int64), splits, "sparse", len(cs), path)


def logistic_c_path_reference(mat: Any, y: np.ndarray, splits: Splits, cs: Sequence[float]) -> np.ndarray:
    """Slow reference of :func:`logistic_c_path`: an independent scikit-learn pipeline per fold and C."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    per_fold = []
    for tr, te in splits:
        if np.unique(y[te]).size != 2:
            continue
        per_fold.append([roc_auc_score(y[te], make_pipeline(StandardScaler(), LogisticRegression(
            C=float(c), class_weight="balanced", solver="lbfgs", max_iter=2000)).fit(mat[tr], y[tr])
            .decision_function(mat[te])) for c in cs])
    return np.mean(per_fold, axis=0) if per_fold else np.full(len(cs), np.nan)
