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
- ``probe``: a logistic-regression probe on the raw residual stream, one per layer (the best layer is reported).

The controls that reuse the detector (random decoder directions, shuffled labels) live in
:mod:`ghost_lens.detect.evaluation`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler

if TYPE_CHECKING:
    from ghost_lens.capture.trace import FeatureTrace

MethodKind = Literal["detector", "baseline", "control"]

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

    @classmethod
    def from_trace(
        cls, trace: FeatureTrace, residual: Literal["answer_mean", "last_prompt"] = "answer_mean"
    ) -> BaselineInputs:
        """Fill from a capture. ``residual="answer_mean"`` (default) probes the residual averaged over the answer,
        which sees the answer in both generation and statement mode; ``"last_prompt"`` probes the last prompt
        token (before any answer: "does the model know?", blind to the answer shown in statement mode)."""

        def arr(t: Any) -> np.ndarray:
            return t.detach().to("cpu").double().numpy()

        res = trace.resid_answer_mean if residual == "answer_mean" else trace.resid_last_prompt
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
        )


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


def _probe_model(c: float) -> Callable[[], Any]:
    return lambda: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


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

    ``probe_layers`` holds one method per residual layer (``probe_L{layer}``); the evaluation reports the best of
    them as the ``probe`` baseline.
    """
    methods: list[Method] = []
    skipped: dict[str, str] = {}
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
    if "text" in names:
        texts = inputs.answer_text
        if texts is None or len(texts) != n:
            skipped["text"] = "no answer texts (or a count that does not match the examples)"
        elif not any(str(t).strip() for t in texts):
            skipped["text"] = "every answer text is empty"
        else:
            methods.append(Method("text", "baseline",
                                  "TF-IDF of the answer text (word 1-2 + char 2-4 grams) + logistic regression",
                                  np.asarray([str(t) for t in texts], dtype=object), _text_model))
    probes: list[Method] = []
    if "probe" in names:
        res = inputs.residuals
        if res is None or res.ndim != 3 or res.shape[1] != n:
            skipped["probe"] = "no residual vectors [L, N, D] in the baseline inputs"
        elif not np.all(np.isfinite(res)):
            skipped["probe"] = "residual vectors contain NaN/inf"
        else:
            layers = inputs.layers if inputs.layers is not None else list(range(res.shape[0]))
            for j, layer in enumerate(layers):
                probes.append(Method(f"probe_L{layer}", "baseline", f"logistic-regression probe on layer {layer}",
                                     np.asarray(res[j], dtype=np.float64), _probe_model(probe_c),
                                     extra={"layer": int(layer)}))
    return methods, skipped, probes
