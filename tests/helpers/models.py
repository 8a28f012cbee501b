"""Tiny local checkpoints for the local-model loaders: a Llama folder, a GGUF file, their shared tokenizer.

- :func:`llama_tokenizer`: a byte-level BPE tokenizer trained on a few sentences, with ``<unk>`` (0), ``<s>`` (1,
  BOS) and ``</s>`` (2, EOS) like the SmolLM2 / Llama-3 family; ``add_bos=True`` adds ``<s>`` itself (Llama-2 style).
- :func:`save_tiny_llama`: a random ``LlamaForCausalLM`` (grouped-query attention) + tokenizer, saved with
  ``save_pretrained`` - a Hugging Face model folder.
- :func:`write_tiny_gguf`: the same kind of model written as a llama GGUF with ``gguf.GGUFWriter`` the way llama.cpp's
  converter does it (q/k rows permuted for its rotary layout, tied embeddings left out, byte-level vocabulary,
  merges and special token ids in the metadata), so transformers' GGUF loader reads it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.hub import _CORPUS

UNK, BOS, EOS = "<unk>", "<s>", "</s>"


def llama_tokenizer(vocab_size: int = 300, *, add_bos: bool = False):
    """A byte-level BPE tokenizer with ``<unk>``, ``<s>``, ``</s>`` as ids 0, 1, 2 (saved-and-reloadable)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from tests.helpers import bpe_tokenizer

    tok = bpe_tokenizer(_CORPUS * 4, vocab_size=vocab_size, special_tokens=[UNK, BOS, EOS])
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, add_bos_token=add_bos
    )


def tiny_llama(
    vocab_size: int, *, tie: bool, seed: int = 0, n_layers: int = 2, d_model: int = 64, max_pos: int = 128
):
    """A random LlamaForCausalLM: 4 query heads sharing 2 KV heads, rope theta 1e4, weights large enough that
    greedy continuations vary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_pos,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
        initializer_range=0.3,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).eval()


def save_tiny_llama(folder: Path, *, add_bos: bool = True, tie: bool = False, seed: int = 0) -> Any:
    """A Hugging Face Llama folder (config.json, model.safetensors, tokenizer files); returns the HF model."""
    tokenizer = llama_tokenizer(add_bos=add_bos)
    tokenizer.save_pretrained(folder)
    model = tiny_llama(len(tokenizer), tie=tie, seed=seed)
    model.save_pretrained(folder)
    return model


def _llama_cpp_permute(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (its ``convert_hf_to_gguf.py``); transformers' GGUF loader reverses it."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _merges(tokenizer) -> list[str]:
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def write_tiny_gguf(path: Path, *, seed: int = 1) -> Any:
    """A llama GGUF (float32 tensors, tied embeddings, ``add_bos_token`` false) with tokenizer metadata; returns
    the random HF model it was written from."""
    from gguf import GGUFWriter, TokenType

    tokenizer = llama_tokenizer(add_bos=False)
    model = tiny_llama(len(tokenizer), tie=True, seed=seed)
    cfg = model.config
    n_heads, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    special = {UNK, BOS, EOS}

    writer = GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_heads)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // n_heads)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list([t for t, _ in vocab])
    writer.add_token_types([TokenType.CONTROL if t in special else TokenType.NORMAL for t, _ in vocab])
    writer.add_token_merges(_merges(tokenizer))
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)  # like SmolLM2: the pad doubles as EOS
    writer.add_add_bos_token(False)

    def put(name: str, tensor) -> None:
        writer.add_tensor(name, tensor.detach().float().numpy().copy())

    put("token_embd.weight", model.model.embed_tokens.weight)
    put("output_norm.weight", model.model.norm.weight)
    for i, layer in enumerate(model.model.layers):
        attn, mlp = layer.self_attn, layer.mlp
        put(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight)
        writer.add_tensor(
            f"blk.{i}.attn_q.weight", _llama_cpp_permute(attn.q_proj.weight.detach().numpy(), n_heads)
        )
        writer.add_tensor(
            f"blk.{i}.attn_k.weight", _llama_cpp_permute(attn.k_proj.weight.detach().numpy(), n_kv)
        )
        put(f"blk.{i}.attn_v.weight", attn.v_proj.weight)
        put(f"blk.{i}.attn_output.weight", attn.o_proj.weight)
        put(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight)
        put(f"blk.{i}.ffn_gate.weight", mlp.gate_proj.weight)
        put(f"blk.{i}.ffn_up.weight", mlp.up_proj.weight)
        put(f"blk.{i}.ffn_down.weight", mlp.down_proj.weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model
