"""Detection: the entropy/churn detector (a scikit-learn estimator) and its honest evaluation.

:class:`HallucinationDetector` scores per-example track metrics; :func:`evaluate` runs it, its baselines and its
controls on the same grouped folds and returns an :class:`EvaluationResult` (``detection_metrics.json``, schema in
``docs/detection_metrics.md``).
"""

from ghost_lens.detect.baselines import BaselineInputs
from ghost_lens.detect.detector import HallucinationDetector
from ghost_lens.detect.evaluation import evaluate
from ghost_lens.detect.result import EvaluationResult

__all__ = ["BaselineInputs", "EvaluationResult", "HallucinationDetector", "evaluate"]
