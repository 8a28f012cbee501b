"""Builders for capture tests: a tiny random HookedTransformer with a GPT-2-style tokenizer, tiny random SAEs.

The tokenizer is a byte-level BPE (GPT-2's leading-space convention) trained in milliseconds on a few sentences,
saved and reloaded through ``AutoTokenizer`` (TransformerLens needs a tokenizer that has a ``name_or_path``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from sae_lens import SAE
from transformer_lens import HookedTransformer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ghost_lens.data.example import Example
from ghost_lens.hooks import hook_name
from tests.helpers import bpe_tokenizer, sae_from_config, tiny_model

BOS = "<|endoftext|>"
CORPUS = [
    "The capital of France is Paris.",
    "The capital of Italy is Rome.",
    "Question: Who wrote Hamlet? Answer: William Shakespeare",
    "Question: What colour is the sky? Answer: blue",
    "Marie Curie discovered radium and polonium.",
    "The quick brown fox jumps over the lazy dog.",
] * 4


def build_tokenizer(folder: str | Path, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2 style, ``<|endoftext|>`` as BOS/EOS/pad), saved to and loaded from
    ``folder``."""
    tok = bpe_tokenizer(CORPUS, vocab_size=vocab_size, special_tokens=[BOS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=BOS, pad_token=BOS)
    fast.save_pretrained(str(folder))
    return AutoTokenizer.from_pretrained(str(folder))


def build_model(
    tokenizer: PreTrainedTokenizerFast | None = None, *, n_layers: int = 3, d_model: int = 32, n_ctx: int = 48,
    d_vocab: int | None = None, seed: int = 0,
) -> HookedTransformer:
    """A tiny random GPT-2-like HookedTransformer (with ``tokenizer`` if given)."""
    return tiny_model(
        tokenizer, n_layers=n_layers, d_model=d_model, n_ctx=n_ctx, d_head=8, n_heads=d_model // 8,
        d_mlp=4 * d_model, d_vocab=d_vocab or (len(tokenizer) if tokenizer is not None else 100), seed=seed,
    )


def build_sae(
    d_in: int, d_sae: int, layer: int, *, kind: str = "resid_post", topk: int | None = None, seed: int = 0,
    normalize: str = "none",
) -> SAE:
    """A random SAELens SAE (standard ReLU, or TopK when ``topk`` is given) reading ``blocks.{layer}.hook_{kind}``;
    decoder rows of random norms, a bias that leaves about half the features inactive."""
    sae: SAE = sae_from_config(d_in, d_sae, hook_name(layer, kind), k=topk, normalize=normalize)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=g) / d_in**0.5)
        sae.b_enc.copy_(torch.randn(d_sae, generator=g) * 0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=g) * torch.rand(d_sae, 1, generator=g))
        sae.b_dec.copy_(torch.randn(d_in, generator=g) * 0.1)
    return sae.eval()


def build_saes(model: HookedTransformer, d_sae: int = 48, topk_layer: int | None = 1) -> dict[int, SAE]:
    """One SAE per layer; layer ``topk_layer`` gets a TopK SAE (k=4) so some top-k slots are inactive."""
    d = model.cfg.d_model
    return {
        layer: build_sae(d, d_sae, layer, topk=4 if layer == topk_layer else None, seed=layer)
        for layer in range(model.cfg.n_layers)
    }


def build_examples() -> list[Example]:
    """Prompts of different lengths, answers of one to several tokens, both labels, a prompt ending in a space."""
    rows = [
        ("The capital of France is", "Paris", 0),
        ("The capital of France is", "Rome", 1),
        ("Question: Who wrote Hamlet? Answer:", "William Shakespeare", 0),
        ("Question: Who wrote Hamlet? Answer:", "Marie Curie", 1),
        ("Question: What colour is the sky? Answer: ", "blue", 0),
        ("The quick brown fox", "jumps over the lazy dog.", 0),
        ("Marie Curie discovered", "radium", 0),
        ("Marie Curie discovered", "the capital of Italy", 1),
        ("Rome", "is the capital of Italy.", 0),
    ]
    return [
        Example(id=f"ex{i}", group=prompt, prompt=prompt, answer=answer, label=label)
        for i, (prompt, answer, label) in enumerate(rows)
    ]
