"""The toy world's model: a small HookedTransformer that memorises the training facts.

A training sequence is ``[BOS] the capital of zor ba lin is velmora [EOS]``; the loss is the cross-entropy of the
answer at the last prompt token and of ``[EOS]`` after it (names are random, so predicting them teaches nothing).
Training stops once greedy accuracy on the training facts reaches ``WorldConfig.target_accuracy``.

``HookedTransformerConfig(seed=...)`` reseeds the global ``random``, NumPy and torch generators whenever a config is
built; every config and model here is built inside :func:`isolated_rng`, so building or loading the model leaves a
caller's generators exactly as they were (the weights still follow from the seed alone).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerBase

from ghost_lens.config import WorldConfig

logger = logging.getLogger(__name__)

N_CTX = 16
"""Context of the toy model: prompts are 8-9 tokens with BOS, 10-11 with answer and EOS."""


@contextlib.contextmanager
def isolated_rng() -> Iterator[None]:
    """Run a block with the global ``random``, NumPy and torch generators forked: whatever the block seeds or draws,
    they are restored afterwards (torch's CUDA generators too, where CUDA is initialised)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def model_config(cfg: WorldConfig, d_vocab: int) -> HookedTransformerConfig:
    with isolated_rng():
        return HookedTransformerConfig(
            n_layers=cfg.n_layers, d_model=cfg.d_model, n_heads=cfg.n_heads, d_head=cfg.d_model // cfg.n_heads,
            d_mlp=cfg.d_mlp, d_vocab=d_vocab, n_ctx=N_CTX, act_fn="gelu", normalization_type="LN", seed=cfg.seed,
            model_name="toy-facts", default_prepend_bos=True,
            device="cpu",  # built and loaded on the CPU (TL would pick CUDA when it sees one); runs move it
        )


def config_to_dict(config: HookedTransformerConfig) -> dict[str, Any]:
    """JSON-ready ``config.to_dict()`` (the dtype as its name, ``"float32"``)."""
    data = dict(config.to_dict())  # to_dict() is the live __dict__: never mutate it
    data["dtype"] = str(config.dtype).removeprefix("torch.")
    return json.loads(json.dumps(data, default=str))


def config_from_dict(data: dict[str, Any]) -> HookedTransformerConfig:
    data = dict(data)
    data["dtype"] = getattr(torch, str(data.get("dtype", "float32")).removeprefix("torch."))
    data["device"] = "cpu"  # the world loads on the CPU wherever it was built; a run moves it to its --device
    with isolated_rng():
        return HookedTransformerConfig.from_dict(data)


def build_model(config: HookedTransformerConfig | dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> HookedTransformer:
    """A HookedTransformer of ``config`` with ``tokenizer`` attached (random weights: train or load them).

    The initial weights follow from ``config.seed`` alone (seeded here, as the config's constructor would, on
    forked generators: the caller's global RNG state is untouched)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    with isolated_rng(), warnings.catch_warnings():  # TL 3.9 deprecates HookedTransformer (see ECOSYSTEM.md)
        warnings.filterwarnings("ignore", message="HookedTransformer is deprecated", category=DeprecationWarning)
        if config.seed is not None:
            config.set_seed_everywhere(config.seed)
        return HookedTransformer(config, tokenizer)


def encode(model: HookedTransformer, prompts: Sequence[str], answers: Sequence[str] | None = None):
    """Right-padded tokens ``[N, T]`` of ``prompt (+ answer [EOS])`` and the last prompt position of each ``[N]``."""
    n_prompt = (model.to_tokens(list(prompts), padding_side="right") != model.tokenizer.pad_token_id).sum(-1)
    texts = list(prompts) if answers is None else [f"{p} {a} {model.tokenizer.eos_token}" for p, a in zip(prompts, answers, strict=True)]
    tokens = model.to_tokens(texts, padding_side="right")
    return tokens, n_prompt - 1


@torch.no_grad()
def next_token_logprobs(model: HookedTransformer, prompts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """Log-probabilities ``[N, d_vocab]`` of the token after each prompt."""
    out = []
    for i in range(0, len(prompts), batch_size):
        tokens, last = encode(model, prompts[i:i + batch_size])
        logits = model(tokens, return_type="logits")
        out.append(logits[torch.arange(len(last)), last].float().log_softmax(-1))
    return torch.cat(out) if out else torch.empty(0, model.cfg.d_vocab)


def greedy_accuracy(model: HookedTransformer, prompts: Sequence[str], answers: Sequence[str]) -> float:
    if not prompts:
        return float("nan")
    pred = next_token_logprobs(model, prompts).argmax(-1)
    gold = torch.tensor(model.tokenizer.convert_tokens_to_ids(list(answers)))
    return (pred == gold).float().mean().item()


def train_model(
    model: HookedTransformer,
    prompts: Sequence[str],
    answers: Sequence[str],
    cfg: WorldConfig,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``(prompt, answer)`` pairs; returns steps, final loss and training accuracy."""
    tokens, last = encode(model, prompts, answers)
    n = tokens.shape[0]
    rows = torch.arange(n)
    answer_ids = tokens[rows, last + 1]
    eos_ids = tokens[rows, last + 2]
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = 50
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    acc, loss_val, step = 0.0, math.nan, 0
    perm = torch.randperm(n, generator=gen)
    cursor = 0
    model.train()
    for step in range(1, cfg.train_steps + 1):
        if cursor + cfg.batch_size > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
        idx = perm[cursor:cursor + cfg.batch_size]
        cursor += cfg.batch_size
        logits = model(tokens[idx], return_type="logits")
        b = torch.arange(len(idx))
        loss = F.cross_entropy(logits[b, last[idx]], answer_ids[idx]) + 0.2 * F.cross_entropy(
            logits[b, last[idx] + 1], eos_ids[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_val = loss.item()
        if step % cfg.eval_every == 0 or step == cfg.train_steps:
            model.eval()
            acc = greedy_accuracy(model, prompts, answers)
            model.train()
            logger.debug("step %d loss %.4f train accuracy %.3f", step, loss_val, acc)
            if progress is not None:
                progress(step, acc)
            if acc >= cfg.target_accuracy:
                break
    model.eval()
    if acc < cfg.target_accuracy:
        logger.warning("toy model reached only %.1f%% training accuracy in %d steps", 100 * acc, step)
    return {"steps": step, "final_loss": loss_val, "train_accuracy": acc}


def save_weights(model: HookedTransformer, path: str | Path) -> None:
    """The model's weights as safetensors (no pickle; tensors shared in the state dict are stored once)."""
    from safetensors.torch import save_model

    save_model(model, str(path))


def load_weights(model: HookedTransformer, path: str | Path) -> None:
    """Load :func:`save_weights`'s file into ``model`` (strict: every tensor must match)."""
    from safetensors.torch import load_model

    load_model(model, str(path), strict=True, device="cpu")
