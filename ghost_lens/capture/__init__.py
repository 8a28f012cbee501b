"""Capture: one forward pass per batch of examples -> a :class:`FeatureTrace` (top-k SAE features per token)."""

from ghost_lens.capture.capture import capture_examples, capture_tokens
from ghost_lens.capture.trace import FeatureTrace

__all__ = ["FeatureTrace", "capture_examples", "capture_tokens"]
