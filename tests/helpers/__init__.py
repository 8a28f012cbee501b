"""Every test builder, in one package (tiny models from a config, no hub, fixed seeds).

This module holds the one tiny HookedTransformer, the one byte-level BPE tokenizer trainer and the one SAELens SAE
constructor; the sub-modules build on them, one per kind of fixture:

- :mod:`tests.helpers.capture`: a tiny model with a GPT-2-style tokenizer, tiny random SAEs, a few examples;
- :mod:`tests.helpers.trace`: hand-made and random FeatureTraces for the tracker (no model);
- :mod:`tests.helpers.detect`: synthetic detection datasets with known structure;
- :mod:`tests.helpers.toy`: a tiny toy-facts world config;
- :mod:`tests.helpers.models`: a tiny Llama folder and GGUF file for the local-checkpoint loaders;
- :mod:`tests.helpers.hub`: offline Hugging Face hub caches (pytest fixtures, loaded by ``conftest.py``);
- :mod:`tests.helpers.cli`: in-process CLI invocation and the one-line-error check.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def tiny_model(tokenizer: Any = None, **overrides: Any):
    """A tiny random HookedTransformer (2 layers, d_model 16, LN, gelu, seed 0) in eval mode, with ``tokenizer`` if
    given; any config field can be overridden."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    fields: dict[str, Any] = dict(
        n_layers=2, d_model=16, n_ctx=16, d_head=4, n_heads=4, d_mlp=32, d_vocab=50,
        act_fn="gelu", normalization_type="LN", seed=0,
        device="cpu",  # TL would pick CUDA where it sees one; tests move models themselves
    )
    fields.update(overrides)
    return HookedTransformer(HookedTransformerConfig(**fields), tokenizer).eval()


def bpe_tokenizer(corpus: Sequence[str], *, vocab_size: int, special_tokens: Sequence[str]):
    """A byte-level BPE ``tokenizers.Tokenizer`` (GPT-2's leading-space convention, no prefix space) trained in
    milliseconds on ``corpus``, ``special_tokens`` first in the vocabulary; deterministic for the same arguments."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return tok


def sae_from_config(d_in: int, d_sae: int, hook_name: str, *, k: int | None = None, model_name: str = "tiny",
                    normalize: str = "none"):
    """A SAELens inference SAE reading ``hook_name`` (standard ReLU, or TopK with ``k`` active), SAELens's own
    initial weights; the builders set weights of their own."""
    from sae_lens import StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    meta = SAEMetadata(hook_name=hook_name, model_name=model_name)
    if k is None:
        return StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, normalize_activations=normalize, metadata=meta))
    return TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, normalize_activations=normalize, metadata=meta))
