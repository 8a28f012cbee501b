"""Examples and the loaders that produce them."""

from ghost_lens.data.example import Example
from ghost_lens.data.loaders import load_examples, load_path, subsample

__all__ = ["Example", "load_examples", "load_path", "subsample"]
