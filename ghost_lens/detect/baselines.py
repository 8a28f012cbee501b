"""Baselines the detector must beat, built as scikit-learn estimators evaluated on the detector's own folds.

Every baseline is *fitted on the training folds*, including the single-score ones (answer length, log-prob,
output entropy, max probability): a one-feature logistic regression learns their orientation, so no baseline gets
a free sign flip from looking at the test fold, and each outputs a probability, like the detector.

- ``length``: answer length in tokens.
- ``text``: TF-IDF of the answer text (word 1-2-grams + character 2-4-grams) + logistic regression. It never sees
  the model: whatever it reaches is in the answers themselves.
- ``logprob`` / ``mean_logprob``: the model's summed / per-token log-probability of its answer.
- ``entropy`` / ``max_prob``: mean entropy / mean max softmax probability of the model's next-token distribution.
- ``output_combined``: one logistic regression on all of the above numbers together.
- ``kind`` / ``confidence_kind`` (when the examples carry a ``meta["kind"]``: the toy world's known /
  held-out relation / unknown entity, world-facts' relation): the kind alone (one-hot: its error rate learned in
  the training folds), and the model-output scores together with it. A pooled AUROC over kinds with different
  error rates rewards any score that merely tells the kinds apart; these two say how much of a pooled number is
  "which kind is this", and whether the SAE features beat confidence once the kind is known.
- ``probe``: a dense logistic-regression probe on the raw residual stream (:class:`SelectingProbe`): standardised,
  class-balanced, L2; the residual (last prompt token or answer mean), the layer and ``C`` are chosen by grouped
  inner cross-validation *inside the training folds*, so no choice ever sees a test row.
- ``sparse_probe``: an L1 logistic regression on the SAE activations at the last prompt token (a
  ``scipy.sparse`` matrix per layer from the captured top-k features, max-abs scaled, class-balanced), its layer
  and ``C`` chosen the same way (the SAE-probe comparison of Kantamneni et al. 2025).

Why class-balanced: a probe with nothing to find predicts its training folds' prevalence; pooled out-of-fold, a
test fold with more positives then gets *lower* scores (its training folds had fewer), which drives the AUROC
below 0.5. Balanced class weights make the uninformed prediction 0.5 in every fold.

The controls that reuse the detector (random decoder directions, shuffled labels) live in
:mod:`ghost_lens.detect.evaluation`.
"""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, StandardScaler

from ghost_lens.detect.folds import inner_splits
from ghost_lens.detect.probe_kernels import l1_logistic_c_path, logistic_c_path, ridge_screen_scores

if TYPE_CHECKING:
    from ghost_lens.capture.trace import FeatureTrace

logger = logging.getLogger(__name__)

MethodKind = Literal["detector", "baseline", "control"]

DENSE_CS = (1e-3, 1e-2, 1e-1, 1.0)
"""Inverse L2 strengths the dense probe chooses among (with ``eval.probe_c``)."""
SPARSE_CS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
"""Inverse L1 strengths the sparse SAE probe chooses among."""
PROBE_INNER_FOLDS = 3
"""Grouped inner folds (inside each training part) that choose a probe's layer and C."""
PROBE_SCREEN = 3
"""Candidates (layer x position) kept after the closed-form ridge screen (:class:`SelectingProbe`)."""

# an L1 penalty: ``l1_ratio=1`` since scikit-learn 1.8 (``penalty`` is deprecated there), ``penalty="l1"`` before
_L1: dict[str, Any] = (
    {"l1_ratio": 1.0} if inspect.signature(LogisticRegression).parameters["penalty"].default == "deprecated"
    else {"penalty": "l1"}
)

_SCORES: dict[str, tuple[str, str]] = {
    "length": ("answer_length", "answer length in tokens"),
    "logprob": ("answer_logprob", "the model's summed log-probability of the answer"),
    "mean_logprob": ("answer_mean_logprob", "the model's mean per-token log-probability of the answer"),
    "entropy": ("output_entropy", "mean entropy of the model's next-token distribution over the answer"),
    "max_prob": ("max_prob", "mean max softmax probability over the answer"),
}


@dataclass
class BaselineInputs:
    """What the baselines read, one entry per example (``None``: that baseline is skipped, with the reason)."""

    answer_length: np.ndarray | None = None
    """[N] answer length in tokens."""
    answer_text: list[str] | None = None
    answer_logprob: np.ndarray | None = None
    answer_mean_logprob: np.ndarray | None = None
    output_entropy: np.ndarray | None = None
    max_prob: np.ndarray | None = None
    residuals: np.ndarray | None = None
    """[L, N, D] residual-stream vectors, one matrix per layer in ``layers``."""
    layers: list[int] | None = None
    residuals_last_prompt: np.ndarray | None = None
    """[L, N, D] residuals at the last prompt token, further candidates of the dense probe (``None``: only
    ``residuals``)."""
    sae_last_prompt: list[sp.csr_matrix] | None = None
    """Per layer in ``layers``: the SAE activations at the last prompt token, ``[N, d_sae]`` sparse (the
    captured top-k features; the sparse probe's input)."""
    kind: list[str | None] | None = None
    """[N] the examples' ``meta["kind"]`` (``None`` where unknown): the ``kind`` baselines' input."""

    @classmethod
    def from_trace(
        cls, trace: FeatureTrace, residual: Literal["answer_mean", "last_prompt", "both"] = "both"
    ) -> BaselineInputs:
        """Fill from a capture. ``residual`` names the residuals the dense probe may choose among (inside the
        training folds): ``"both"`` (default) the residual averaged over the answer and the one at the last prompt
        token; ``"answer_mean"`` only the former (it sees the answer in both generation and statement mode);
        ``"last_prompt"`` only the latter (before any answer: "does the model know?", blind to the answer shown
        in statement mode)."""

        def arr(t: Any) -> np.ndarray:
            return t.detach().to("cpu").double().numpy()

        res = trace.resid_last_prompt if residual == "last_prompt" else trace.resid_answer_mean
        last = trace.resid_last_prompt.detach().to("cpu").float().numpy() if residual == "both" else None
        answers = trace.meta.get("answers")
        return cls(
            answer_length=arr(trace.answer_end - trace.answer_start),
            answer_text=[str(a) for a in answers] if answers is not None else None,
            answer_logprob=arr(trace.answer_logprob),
            answer_mean_logprob=arr(trace.answer_mean_logprob),
            output_entropy=arr(trace.output_entropy),
            max_prob=arr(trace.max_prob),
            residuals=res.detach().to("cpu").float().numpy(),
            layers=trace.layers,
            residuals_last_prompt=last,
            sae_last_prompt=sae_at_last_prompt(trace),
        )


def sae_at_last_prompt(trace: FeatureTrace) -> list[sp.csr_matrix]:
    """Per tracked layer, ``[N, d_sae]`` sparse: the captured top-k SAE activations at each example's last prompt
    token (``d_sae`` from the capture's SAE info, else the layer's largest captured feature id + 1)."""
    n = trace.n_examples
    tok = (trace.offsets[:-1] + trace.answer_start - 1).numpy()
    info = trace.meta.get("sae_info") or {}
    out = []
    for j, layer in enumerate(trace.layers):
        idx = trace.feat_idx[j, tok].numpy().astype(np.int64)  # [N, k]
        val = trace.feat_val[j, tok].float().numpy().astype(np.float64)
        keep = (idx >= 0) & (val > 0)
        width = int((info.get(str(layer)) or {}).get("d_sae") or 0)
        width = max(width, int(trace.feat_idx[j].max()) + 1, 1)
        rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
        out.append(sp.csr_matrix((val[keep], (rows[keep], idx[keep])), shape=(n, width)))
    return out


@dataclass
class Method:
    """One scored method: an estimator factory and its input (``[N, F]`` array, or ``[N]`` texts)."""

    name: str
    kind: MethodKind
    description: str
    X: Any
    make: Callable[[], Any]
    pass_groups: bool = False
    """Whether ``fit`` takes ``groups=`` (the detector's grouped inner calibration folds)."""
    extra: dict[str, Any] | None = None
    labels: np.ndarray | None = None
    """Labels to fit and score against when not the true ones (the shuffled-label control)."""


def _score_model() -> Any:
    return make_pipeline(StandardScaler(), LogisticRegression(solver="newton-cholesky"))


def _text_model() -> Any:
    union = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), token_pattern=r"(?u)\b\w+\b", sublinear_tf=True)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)),
    ])
    return make_pipeline(union, LogisticRegression(C=1.0, max_iter=1000))


class LayerStack:
    """Candidate feature matrices of the same N examples (one per layer, or per layer and residual position),
    dense or ``scipy.sparse``; indexing by rows (a boolean mask or indices) selects the rows of every matrix."""

    def __init__(self, mats: Sequence[Any], names: Sequence[str]):
        if not mats or len(mats) != len(names):
            raise ValueError(f"{len(mats)} matrices but {len(names)} names")
        self.mats, self.names = list(mats), [str(x) for x in names]
        n = {m.shape[0] for m in self.mats}
        if len(n) != 1:
            raise ValueError(f"candidate matrices differ in rows: {sorted(n)}")

    def __len__(self) -> int:
        return int(self.mats[0].shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_examples, n_candidates)``."""
        return len(self), len(self.mats)

    def __getitem__(self, rows: Any) -> LayerStack:
        return LayerStack([m[rows] for m in self.mats], self.names)


class SelectingProbe(ClassifierMixin, BaseEstimator):
    """Logistic-regression probe that chooses its candidate matrix (layer) and ``C`` inside the data it is fitted on.

    ``fit(X, y, groups=)``: for every candidate of ``X`` (a :class:`LayerStack`) and every C in ``Cs``, the mean
    AUROC over grouped stratified inner folds of the *training rows* (:func:`ghost_lens.detect.folds.inner_splits`);
    the best pair (ties: earlier candidate, smaller C) is refitted on all training rows. ``kind="dense"``:
    standardised features, L2; ``kind="sparse"``: max-abs scaled (keeps sparsity and the sign), L1 (liblinear).
    Both class-balanced (module docstring). ``log``: an optional dict that receives each fit's choice
    (``log["selected"]`` list, ``log["layer"]`` the most frequent candidate's layer), for the report.

    ``screen``: with more candidates than this, every candidate is first scored by a closed-form ridge regression
    on the same inner folds, for every penalty at once
    (:func:`ghost_lens.detect.probe_kernels.ridge_screen_scores`: dense, the ridge twin ``lambda = 4 / C`` of each
    C, from the quadratic approximation of the logistic loss; sparse, a grid relative to the kernel's scale), and
    only the ``screen`` best (by their best penalty) go on to the logistic C path; the others keep NaN in
    ``selection_auroc_`` (their ridge scores are in ``screen_auroc_``). Still inside the training rows. ``None``:
    every candidate on the logistic C path. The dense C path runs on
    :func:`ghost_lens.detect.probe_kernels.logistic_c_path` (the scikit-learn objective, a lean solver); the final
    refit is scikit-learn's.
    """

    def __init__(
        self, kind: str = "dense", Cs: Sequence[float] = DENSE_CS, inner_folds: int = PROBE_INNER_FOLDS,
        random_state: int = 0, log: dict[str, Any] | None = None, screen: int | None = PROBE_SCREEN,
    ):
        self.kind = kind
        self.screen = screen
        self.Cs = Cs
        self.inner_folds = inner_folds
        self.random_state = random_state
        self.log = log

    def _model(self, c: float, warm_start: bool = False) -> Any:
        if self.kind == "dense":
            # lbfgs: at residual widths (d ~ 500-1000, a few hundred rows) it is 3-8x faster than newton-cholesky
            # (measured on the SmolLM2 world-facts residuals), and it warm-starts along the C path
            return make_pipeline(StandardScaler(), LogisticRegression(
                C=c, class_weight="balanced", solver="lbfgs", max_iter=2000, warm_start=warm_start))
        if self.kind == "sparse":
            return make_pipeline(MaxAbsScaler(), LogisticRegression(
                C=c, solver="liblinear", class_weight="balanced", max_iter=2000, random_state=self.random_state,
                **_L1))
        raise ValueError(f"unknown probe kind {self.kind!r} (dense or sparse)")

    def _path_scores(self, mat: Any, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                     cs: Sequence[float]) -> np.ndarray:
        """Mean inner-fold AUROC of every C in ``cs`` for one candidate matrix (NaN where no fold has both
        classes). Dense: :func:`~ghost_lens.detect.probe_kernels.logistic_c_path` (scaling once per fold, warm
        start along the Cs); sparse: :func:`~ghost_lens.detect.probe_kernels.l1_logistic_c_path` (liblinear per C,
        scaling once per fold, no fit where the solution is known to be all zeros). Both agree with
        :meth:`_path_scores_reference`."""
        if self.kind == "dense":
            return logistic_c_path(mat, y, splits, cs)
        if self.kind == "sparse":
            return l1_logistic_c_path(mat, y, splits, cs, lambda c: self._model(c)[-1])
        return self._path_scores_reference(mat, y, splits, cs)

    def _path_scores_reference(self, mat: Any, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                               cs: Sequence[float]) -> np.ndarray:
        """:meth:`_path_scores` with the scikit-learn pipelines of :meth:`_model`: each inner fold walks the Cs
        from the strongest penalty up; the dense probe warm-starts every fit from the previous C's solution."""
        order = np.argsort(cs)
        per_fold = []
        for tr, te in splits:
            if np.unique(y[te]).size != 2:
                continue
            model = self._model(float(cs[order[0]]), warm_start=self.kind == "dense")
            aucs = np.empty(len(cs))
            for i in order:
                model.set_params(logisticregression__C=float(cs[i]))
                model.fit(mat[tr], y[tr])
                aucs[i] = roc_auc_score(y[te], model.decision_function(mat[te]))
            per_fold.append(aucs)
        return np.mean(per_fold, axis=0) if per_fold else np.full(len(cs), np.nan)

    def fit(self, X: LayerStack, y: np.ndarray, groups: np.ndarray | None = None) -> SelectingProbe:
        X = X if isinstance(X, LayerStack) else LayerStack([X], ["0"])
        y = np.asarray(y).astype(np.int64)
        self.classes_ = np.unique(y)
        if self.classes_.size != 2:
            raise ValueError("the probe needs both classes in its training rows")
        cs = list(self.Cs)
        splits = inner_splits(y, None if groups is None else np.asarray(groups), self.inner_folds, self.random_state)
        pool = range(len(X.mats))
        self.screen_auroc_ = None
        if self.screen is not None and len(X.mats) > self.screen and len(splits) > 1:
            lambdas = [4.0 / c for c in cs] if self.kind == "dense" else None
            screen = np.stack([ridge_screen_scores(mat, y, splits, lambdas, self.kind) for mat in X.mats])
            best = np.nan_to_num(screen, nan=-1.0).max(axis=1)
            pool = sorted(np.argsort(-best, kind="stable")[: self.screen].tolist())
            self.screen_auroc_ = screen
        scores = np.full((len(X.mats), len(cs)), np.nan)
        for j in pool:
            scores[j] = self._path_scores(X.mats[j], y, splits, cs)
        if np.isnan(scores).all():  # too few rows or groups for inner folds: last candidate, middle C
            logger.warning("probe: too few training rows for inner folds; using the last candidate, C=%g",
                           cs[len(cs) // 2])
            best_j, best_c = len(X.mats) - 1, len(cs) // 2
        else:
            order = sorted(range(len(cs)), key=lambda i: cs[i])  # ties: the smaller C (stronger penalty)
            flat = [(j, c_i) for j in range(len(X.mats)) for c_i in order]
            best_j, best_c = max(flat, key=lambda jc: (np.nan_to_num(scores[jc], nan=-1.0), -flat.index(jc)))
        self.candidate_ = X.names[best_j]
        self.candidate_index_ = best_j
        self.C_ = float(cs[best_c])
        self.selection_auroc_ = scores
        self.estimator_ = self._model(self.C_).fit(X.mats[best_j], y)
        if self.log is not None:
            record_choice(self.log, self.candidate_, self.C_)
        return self

    def predict_proba(self, X: LayerStack) -> np.ndarray:
        X = X if isinstance(X, LayerStack) else LayerStack([X], ["0"])
        return self.estimator_.predict_proba(X.mats[self.candidate_index_])

    def decision_function(self, X: LayerStack) -> np.ndarray:
        X = X if isinstance(X, LayerStack) else LayerStack([X], ["0"])
        return self.estimator_.decision_function(X.mats[self.candidate_index_])


def record_choice(log: dict[str, Any], candidate: str, c: float) -> None:
    """Append one fit's choice to ``log["selected"]`` and set ``log["candidate"]`` / ``log["layer"]`` to the most
    frequent candidate so far (ties: the first chosen)."""
    log.setdefault("selected", []).append({"candidate": candidate, "C": c})
    top, _ = Counter(s["candidate"] for s in log["selected"]).most_common(1)[0]
    log["candidate"], log["layer"] = top, _layer_of(top)


def _layer_of(candidate: str) -> int | str:
    """``"last_prompt/L3"`` or ``"L3"`` -> 3 (the layer number the report prints)."""
    tail = candidate.rsplit("/", 1)[-1].removeprefix("L")
    return int(tail) if tail.lstrip("-").isdigit() else candidate


def _column(values: Any, n: int, name: str) -> tuple[np.ndarray | None, str | None]:
    if values is None:
        return None, f"no {name} in the baseline inputs"
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if x.size != n:
        return None, f"{name} has {x.size} entries for {n} examples"
    if not np.all(np.isfinite(x)):
        return None, f"{name} has NaN/inf in {int((~np.isfinite(x)).sum())} example(s)"
    return x, None


def build_baselines(
    inputs: BaselineInputs, names: Sequence[str], n: int, probe_c: float
) -> tuple[list[Method], dict[str, str], list[Method]]:
    """``(baselines, skipped {name: reason}, probe_layers)`` for the requested baseline ``names``.

    The probes (``probe``, ``sparse_probe``) choose their layer and C inside the training folds
    (:class:`SelectingProbe`, ``pass_groups=True``); their ``extra`` dict fills with each fit's choice.
    ``probe_layers`` (per-layer probes whose best layer the evaluation would pick on the evaluation folds) is empty.
    """
    methods: list[Method] = []
    skipped: dict[str, str] = {}
    columns = _score_baselines(inputs, names, n, methods, skipped)
    _kind_baselines(inputs, names, n, columns, methods, skipped)
    for key, build in (("text", lambda: _text_baseline(inputs.answer_text, n)),
                       ("probe", lambda: _dense_probe(inputs, n, probe_c)),
                       ("sparse_probe", lambda: _sparse_probe(inputs, n))):
        if key in names:
            method, why = build()
            if method is None:
                skipped[key] = why or "unavailable"
            else:
                methods.append(method)
    probes: list[Method] = []  # per-layer probes picked on the evaluation folds: no more (see SelectingProbe)
    return methods, skipped, probes


def _score_baselines(
    inputs: BaselineInputs, names: Sequence[str], n: int, methods: list[Method], skipped: dict[str, str]
) -> dict[str, np.ndarray]:
    """The one-score baselines and ``output_combined`` among ``names`` (appended to ``methods``, or to ``skipped``
    with the reason); returns the usable score columns."""
    columns: dict[str, np.ndarray] = {}
    for key, (attr, _) in _SCORES.items():
        col, why = _column(getattr(inputs, attr), n, attr)
        if col is not None:
            columns[key] = col
        elif key in names:
            skipped[key] = why or "unavailable"
    for key, (_, desc) in _SCORES.items():
        if key in names and key in columns:
            methods.append(Method(key, "baseline", f"{desc} (1-feature logistic regression)",
                                  columns[key].reshape(-1, 1), _score_model))
    if "output_combined" in names:
        if len(columns) >= 2:
            used = list(columns)
            methods.append(Method("output_combined", "baseline",
                                  f"logistic regression on {', '.join(used)} together",
                                  np.column_stack([columns[k] for k in used]), _score_model, extra={"inputs": used}))
        else:
            skipped["output_combined"] = "fewer than 2 model-output scores available"
    return columns


def _text_baseline(texts: Sequence[str] | None, n: int) -> tuple[Method | None, str | None]:
    """The TF-IDF baseline on the answer texts, or ``(None, why)``."""
    if texts is None or len(texts) != n:
        return None, "no answer texts (or a count that does not match the examples)"
    if not any(str(t).strip() for t in texts):
        return None, "every answer text is empty"
    return Method("text", "baseline", "TF-IDF of the answer text (word 1-2 + char 2-4 grams) + logistic regression",
                  np.asarray([str(t) for t in texts], dtype=object), _text_model), None


def _dense_probe(inputs: BaselineInputs, n: int, probe_c: float) -> tuple[Method | None, str | None]:
    """The probe on the raw residual stream (candidates and C chosen inside the training folds), or
    ``(None, why)``."""
    stack, why = _dense_candidates(inputs, n)
    if stack is None:
        return None, why
    cs = tuple(sorted({*DENSE_CS, float(probe_c)}))
    log: dict[str, Any] = {"candidates": stack.names, "Cs": list(cs),
                           "selection": "inside each training part: grouped inner CV over candidates x C"}
    return Method(
        "probe", "baseline", "logistic-regression probe on the raw residual stream (standardised, "
        "class-balanced; residual, layer and C chosen by grouped inner CV in the training folds)",
        stack, _probe_factory("dense", cs), pass_groups=True, extra=log), None


def _sparse_probe(inputs: BaselineInputs, n: int) -> tuple[Method | None, str | None]:
    """The L1 probe on the SAE activations at the last prompt token (layer and C chosen inside the training
    folds), or ``(None, why)``."""
    mats = inputs.sae_last_prompt
    if mats is None or not mats:
        return None, "no SAE activations at the last prompt token in the baseline inputs"
    if any(m.shape[0] != n for m in mats):
        return None, "SAE activation matrices do not match the number of examples"
    layers = inputs.layers if inputs.layers is not None else list(range(len(mats)))
    stack = LayerStack([sp.csr_matrix(m) for m in mats], [f"L{layer}" for layer in layers])
    log = {"candidates": stack.names, "Cs": list(SPARSE_CS),
           "selection": "inside each training part: grouped inner CV over layers x C"}
    return Method(
        "sparse_probe", "baseline", "L1 logistic regression on the SAE activations at the last prompt "
        "token (max-abs scaled, class-balanced; layer and C chosen by grouped inner CV in the training "
        "folds)", stack, _probe_factory("sparse", SPARSE_CS), pass_groups=True, extra=log), None


def kind_one_hot(kinds: Sequence[str | None] | None, n: int) -> tuple[np.ndarray | None, str | None]:
    """``[N, n_kinds]`` one-hot of the examples' kinds (unknown kinds: all zeros), or ``(None, why)``."""
    if kinds is None:
        return None, "the examples carry no meta['kind']"
    if len(kinds) != n:
        return None, f"{len(kinds)} kinds for {n} examples"
    values = sorted({str(k) for k in kinds if k is not None})
    if len(values) < 2:
        return None, f"fewer than 2 kinds ({values})"
    index = {v: i for i, v in enumerate(values)}
    out = np.zeros((n, len(values)))
    for i, k in enumerate(kinds):
        if k is not None:
            out[i, index[str(k)]] = 1.0
    return out, None


def _kind_baselines(inputs: BaselineInputs, names: Sequence[str], n: int, columns: dict[str, np.ndarray],
                    methods: list[Method], skipped: dict[str, str]) -> None:
    wanted = [b for b in ("kind", "confidence_kind") if b in names]
    if not wanted:
        return
    onehot, why = kind_one_hot(inputs.kind, n)
    if onehot is None:
        skipped.update(dict.fromkeys(wanted, why or "unavailable"))
        return
    if "kind" in wanted:
        methods.append(Method("kind", "baseline", "the example's kind alone (one-hot logistic regression: the "
                              "kind's error rate in the training folds)", onehot, _score_model))
    if "confidence_kind" in wanted:
        used = [k for k in ("logprob", "mean_logprob", "entropy", "max_prob") if k in columns]
        if not used:
            skipped["confidence_kind"] = "no model-output scores available"
        else:
            methods.append(Method("confidence_kind", "baseline", f"logistic regression on {', '.join(used)} and "
                                  "the example's kind (one-hot)", np.column_stack([*(columns[k] for k in used), onehot]),
                                  _score_model, extra={"inputs": [*used, "kind"]}))


def _probe_factory(kind: str, cs: Sequence[float]) -> Callable[[], SelectingProbe]:
    """Probes for the evaluation. Each fit's choice reaches the method's ``extra`` log through the evaluation
    (:func:`record_choice`; the fits may run in other processes, see ``n_jobs`` of
    :func:`ghost_lens.detect.evaluation.evaluate`), not from inside ``fit``."""
    return lambda: SelectingProbe(kind, cs)


def _dense_candidates(inputs: BaselineInputs, n: int) -> tuple[LayerStack | None, str | None]:
    """The dense probe's candidates: one matrix per layer of ``residuals`` (and of ``residuals_last_prompt``)."""
    sets = [("answer_mean", inputs.residuals), ("last_prompt", inputs.residuals_last_prompt)]
    sets = [(name, r) for name, r in sets if r is not None]
    if not sets or any(r.ndim != 3 or r.shape[1] != n for _, r in sets):
        return None, "no residual vectors [L, N, D] in the baseline inputs"
    if any(not np.all(np.isfinite(r)) for _, r in sets):
        return None, "residual vectors contain NaN/inf"
    layers = inputs.layers if inputs.layers is not None else list(range(sets[0][1].shape[0]))
    mats, names = [], []
    for name, res in sets:
        for j, layer in enumerate(layers):
            mats.append(np.asarray(res[j], dtype=np.float64))
            names.append(f"{name}/L{layer}" if len(sets) > 1 else f"L{layer}")
    return LayerStack(mats, names), None
