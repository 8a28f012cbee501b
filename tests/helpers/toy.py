"""A tiny toy-facts world config for tests (builds in ~2 s on one CPU thread)."""

from __future__ import annotations

from ghost_lens.config import WorldConfig

TINY_WORLD = dict(
    n_entities=24, n_relations=3, n_families=3, n_layers=2, d_model=32, n_heads=2, d_mlp=64, train_steps=300,
    target_accuracy=0.9, batch_size=32, lr=1e-2, eval_every=20, sae_training_tokens=2048, sae_batch_tokens=128,
    n_eval_known=10,
)


def tiny_world_cfg(**overrides) -> WorldConfig:
    return WorldConfig(**(TINY_WORLD | overrides))
