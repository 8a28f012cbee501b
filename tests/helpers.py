"""Shared test builders (tiny models from a config, no hub, fixed seed)."""

from __future__ import annotations

from typing import Any


def tiny_model(**overrides: Any):
    """A tiny random HookedTransformer (2 layers, d_model 16, LN, gelu, seed 0); any config field can be overridden."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    fields: dict[str, Any] = dict(
        n_layers=2, d_model=16, n_ctx=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=50,
        act_fn="gelu", normalization_type="LN", seed=0,
    )
    fields.update(overrides)
    return HookedTransformer(HookedTransformerConfig(**fields)).eval()
