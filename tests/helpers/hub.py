"""Offline Hugging Face hub caches, so tests run the libraries' real hub loaders without a network.

What :func:`build_offline_hub` writes (a hub cache layout: ``<repo dir>/refs/main`` holds a 40-hex sha,
``<repo dir>/snapshots/<sha>/`` the files):

- ``models--gpt2``: a tiny random GPT-2 saved by ``transformers`` (``config.json`` with ``n_ctx`` added, which
  transformers 5 no longer writes but TransformerLens reads) and a tiny byte-level BPE tokenizer; so
  ``HookedTransformer.from_pretrained("gpt2")`` runs its real path and its logits match the HF model's.
- ``models--jbloom--GPT2-Small-SAEs-Reformatted``: tiny standard SAEs at ``blocks.{L}.hook_resid_pre`` for every
  layer, i.e. the real SAELens release ``gpt2-small-res-jb`` (``SAE.from_pretrained(release, id)``).
- ``models--my-org--tiny-saes``: tiny TopK SAEs at ``blocks.{L}.hook_resid_post``, a raw repo id.
- ``models--gpt2-medium`` (a tiny random GPT-2 under the real name) and ``models--my-org--tiny-gpt2-medium-saes``
  (TopK SAEs at ``blocks.{L}.hook_resid_post`` for it): the design card's ``--model gpt2-medium`` command, which
  has no SAELens release, with SAEs from a raw repo id.

How the cache is switched on, and why this way (checked by experiment with huggingface_hub 2.4, transformers 5,
TransformerLens 3.9, SAELens 6.54): ``huggingface_hub.constants`` reads ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``
from the environment once, at import; but every download function (``hf_hub_download``, ``snapshot_download``,
used by transformers, TransformerLens and SAELens) reads ``constants.HF_HUB_CACHE`` and
``constants.is_offline_mode()`` at call time. So :func:`use_offline_hub` patches those two module attributes (plus
``datasets.config.HF_HUB_OFFLINE``, which datasets copies at import) and sets the environment variables for
subprocesses and late importers; it works whether or not the libraries were imported before. Nothing mocks a
loader.

Use: the ``offline_hub`` fixture (function scope: patches for one test) over ``offline_hub_cache`` (session
scope: builds once, 0.2 s). Register both with ``pytest_plugins = ["tests.helpers.hub"]`` in ``tests/conftest.py``
or import them into a test module (``from tests.helpers.hub import offline_hub, offline_hub_cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

GPT2 = "gpt2"
RELEASE = "gpt2-small-res-jb"
RELEASE_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
RAW_REPO = "my-org/tiny-saes"
GPT2_MEDIUM = "gpt2-medium"
MEDIUM_REPO = "my-org/tiny-gpt2-medium-saes"

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "A language model predicts the next token of a text from the tokens before it.",
    "Sparse autoencoders find features in the residual stream of a transformer.",
    "Hallucinations are fluent answers that are not true.",
]


def repo_snapshot(cache_dir: Path, repo_id: str, kind: str = "model") -> Path:
    """Create ``<cache>/<kind>s--org--name/refs/main`` and return the (empty) snapshot folder it points to."""
    repo_dir = Path(cache_dir) / f"{kind}s--{repo_id.replace('/', '--')}"
    sha = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(sha)
    snapshot = repo_dir / "snapshots" / sha
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def tiny_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer in the GPT-2 format (``<|endoftext|>`` is BOS, EOS and UNK)."""
    from transformers import GPT2TokenizerFast

    from tests.helpers import bpe_tokenizer

    eot = "<|endoftext|>"
    tok = bpe_tokenizer(_CORPUS * 4, vocab_size=vocab_size, special_tokens=[eot])
    return GPT2TokenizerFast(tokenizer_object=tok, bos_token=eot, eos_token=eot, unk_token=eot)


def save_tiny_gpt2(
    folder: Path, *, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, n_ctx: int = 64, seed: int = 0,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Save a random GPT-2 and its tokenizer the way ``save_pretrained`` does, plus ``n_ctx`` in config.json.

    ``tokenizer``: a GPT-2-style fast tokenizer to save with it (default :func:`tiny_tokenizer`); the model's
    vocabulary is its length."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tokenizer if tokenizer is not None else tiny_tokenizer()
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_ctx,
        n_embd=d_model,
        n_layer=n_layers,
        n_head=n_heads,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["n_ctx"] = n_ctx
    config_path.write_text(json.dumps(config, indent=2))
    return {"n_layers": n_layers, "d_model": d_model, "n_ctx": n_ctx, "d_vocab": len(tokenizer)}


def tiny_sae(
    d_in: int,
    d_sae: int,
    hook_name: str,
    *,
    architecture: str = "standard",
    k: int = 8,
    model_name: str = "gpt2-small",
    seed: int = 0,
):
    """A SAELens SAE with random weights (encoder = decoder transposed, so it reconstructs a little)."""
    import torch

    from tests.helpers import sae_from_config

    sae = sae_from_config(d_in, d_sae, hook_name, k=k if architecture == "topk" else None, model_name=model_name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w_dec = torch.randn(d_sae, d_in, generator=gen)
        sae.W_dec.copy_(w_dec / w_dec.norm(dim=-1, keepdim=True))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def build_offline_hub(
    cache_dir: str | Path, *, n_layers: int = 2, d_model: int = 32, n_ctx: int = 64, d_sae: int = 64
) -> dict[str, Any]:
    """Write the tiny gpt2, the ``gpt2-small-res-jb`` release and ``my-org/tiny-saes`` into ``cache_dir``.

    Returns what tests need: ``cache_dir``, ``model`` ("gpt2"), ``hf_model_dir``, ``n_layers``, ``d_model``,
    ``n_ctx``, ``d_vocab``, ``d_sae``, ``release``, ``release_repo``, ``release_ids``, ``repo``, ``repo_folders``.
    """
    cache_dir = Path(cache_dir)
    model_dir = repo_snapshot(cache_dir, GPT2)
    info = save_tiny_gpt2(model_dir, n_layers=n_layers, d_model=d_model, n_ctx=n_ctx)
    release_dir = repo_snapshot(cache_dir, RELEASE_REPO)
    release_ids = [f"blocks.{L}.hook_resid_pre" for L in range(n_layers)]
    for L, sae_id in enumerate(release_ids):
        tiny_sae(d_model, d_sae, sae_id, seed=L).save_model(release_dir / sae_id)
    raw_dir = repo_snapshot(cache_dir, RAW_REPO)
    repo_folders = [f"blocks.{L}.hook_resid_post" for L in range(n_layers)]
    for L, folder in enumerate(repo_folders):
        tiny_sae(d_model, d_sae, folder, architecture="topk", seed=100 + L).save_model(raw_dir / folder)
    medium_dir = repo_snapshot(cache_dir, GPT2_MEDIUM)
    save_tiny_gpt2(medium_dir, n_layers=n_layers, d_model=d_model, n_ctx=n_ctx, seed=1)
    medium_saes = repo_snapshot(cache_dir, MEDIUM_REPO)
    for L in range(n_layers):
        folder = f"blocks.{L}.hook_resid_post"
        tiny_sae(d_model, d_sae, folder, architecture="topk", model_name=GPT2_MEDIUM, seed=200 + L).save_model(
            medium_saes / folder
        )
    return {
        "cache_dir": cache_dir,
        "model": GPT2,
        "medium_model": GPT2_MEDIUM,
        "medium_repo": MEDIUM_REPO,
        "hf_model_dir": model_dir,
        **info,
        "d_sae": d_sae,
        "release": RELEASE,
        "release_repo": RELEASE_REPO,
        "release_ids": release_ids,
        "repo": RAW_REPO,
        "repo_folders": repo_folders,
    }


@contextlib.contextmanager
def use_offline_hub(cache_dir: str | Path, monkeypatch: pytest.MonkeyPatch | None = None) -> Iterator[None]:
    """Point huggingface_hub (and through it transformers, TransformerLens, SAELens, datasets) at ``cache_dir``,
    offline, for the duration of the block (see the module docstring for why these attributes)."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    mp = monkeypatch or pytest.MonkeyPatch()
    try:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_DATASETS_OFFLINE", "1")
        mp.setenv("HF_HUB_CACHE", str(cache_dir))
        mp.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        mp.setattr(hub_constants, "HF_HUB_CACHE", str(cache_dir))
        mp.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        yield
    finally:
        if monkeypatch is None:
            mp.undo()


_SESSION_HUB: dict[str, Any] = {}


@pytest.fixture(scope="session")
def offline_hub_cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the offline hub cache once per session (:func:`build_offline_hub`); not yet switched on.

    Memoised per process, so importing this fixture into several modules or conftests never builds it twice.
    """
    if not _SESSION_HUB:
        _SESSION_HUB.update(build_offline_hub(tmp_path_factory.mktemp("hf_hub_cache")))
    return _SESSION_HUB


@pytest.fixture
def offline_hub(
    offline_hub_cache: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """The offline hub cache, switched on for this test (env vars and huggingface_hub constants)."""
    with use_offline_hub(offline_hub_cache["cache_dir"], monkeypatch):
        yield offline_hub_cache


def hub_env(cache_dir: str | Path) -> dict[str, str]:
    """Environment for a subprocess (e.g. the ``ghost-lens`` CLI) that should use the offline cache."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_CACHE": str(cache_dir),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
    )
    return env
