"""ghost-lens: detect hallucinations by tracking SAE features across layers (TransformerLens + SAELens)."""

from ghost_lens._version import __version__

__all__ = ["__version__"]
