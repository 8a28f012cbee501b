"""The toy-facts world: built on first use, cached per user, loaded in a second afterwards.

Addressable like a hub model: model ``toy-facts``, SAE release ``toy-facts-res``. The cache lives in
``$GHOST_LENS_CACHE`` (else ``~/.cache/ghost-lens``) under ``toy-facts/<hash of the WorldConfig>/``:

==================================  =======================================================================
kb.json                             the knowledge base (:class:`~ghost_lens.toy.kb.KnowledgeBase`)
tokenizer/                          the word-level tokenizer (Hugging Face files)
model.safetensors, model_cfg.json   the HookedTransformer's weights (safetensors, no pickle) and config
saes/blocks.{L}.hook_resid_post/    one SAELens SAE per layer (``sae.save_model``)
examples_{generation,statement}.jsonl  labelled examples (:mod:`ghost_lens.toy.examples`)
info.json                           accuracies, hallucination rates, counts, SAE quality, build time, config
==================================  =======================================================================

A world is built in a temporary sibling folder and renamed into place (:func:`ghost_lens.io.atomic_dir`), so an
interrupted build leaves nothing. Builders of one world take turns on a lock (``.<hash>.lock`` beside it, naming
the holder's pid and host): a second builder waits for the first and then uses its world, so a finished world is
never deleted by another builder; ``force`` rebuilds a world that was there before the lock was taken, and the old
world goes only once the new one is complete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from ghost_lens.config import WorldConfig
from ghost_lens.config_io import to_dict
from ghost_lens.constants import CACHE_ENV
from ghost_lens.data.example import Example
from ghost_lens.errors import DatasetError, ModelError
from ghost_lens.io import atomic_dir, clean_stale_temps, exclusive_lock

logger = logging.getLogger(__name__)

MODEL_NAME = "toy-facts"
SAE_RELEASE = "toy-facts-res"
WORLD_FORMAT = 2
"""Bumped whenever the build changes what a given WorldConfig produces (it is part of the cache hash)."""
KB_FILE, TOKENIZER_DIR, MODEL_FILE, MODEL_CFG_FILE = "kb.json", "tokenizer", "model.safetensors", "model_cfg.json"
SAES_DIR, INFO_FILE = "saes", "info.json"
EXAMPLE_FILES = {"generation": "examples_generation.jsonl", "statement": "examples_statement.jsonl"}


def world_hash(cfg: WorldConfig) -> str:
    blob = json.dumps({"format": WORLD_FORMAT, **to_dict(cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$GHOST_LENS_CACHE``, else ``~/.cache/ghost-lens``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "ghost-lens"


def world_path(cfg: WorldConfig, cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / MODEL_NAME / world_hash(cfg)


class ToyWorld:
    """A built world on disk; the model, tokenizer and knowledge base load on first access."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / INFO_FILE).is_file():
            raise ModelError(f"no toy-facts world in {self.path} (run `ghost-lens toy build`)")

    def __repr__(self) -> str:
        return f"ToyWorld({str(self.path)!r})"

    @property
    def sae_dir(self) -> Path:
        """Folder of SAELens SAEs, one sub-folder per layer (``blocks.{L}.hook_resid_post``)."""
        return self.path / SAES_DIR

    @functools.cached_property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @functools.cached_property
    def model(self) -> Any:
        """The HookedTransformer in eval mode, with the world's tokenizer attached."""
        from ghost_lens.toy.model import build_model, load_weights
        from ghost_lens.toy.tokenizer import load_tokenizer

        cfg = json.loads((self.path / MODEL_CFG_FILE).read_text())
        model = build_model(cfg, load_tokenizer(self.path / TOKENIZER_DIR))
        load_weights(model, self.path / MODEL_FILE)
        return model.eval()

    @functools.cached_property
    def kb(self) -> Any:
        from ghost_lens.toy.kb import KnowledgeBase

        return KnowledgeBase.load(self.path / KB_FILE)

    def load_saes(self, layers: list[int] | None = None, device: str = "cpu") -> dict[int, Any]:
        """``{layer: SAE}`` for ``layers`` (default: all), read with ``SAE.load_from_disk``."""
        from sae_lens import SAE

        from ghost_lens.hooks import hook_name

        layers = list(range(self.info()["n_layers"])) if layers is None else layers
        out = {}
        for layer in layers:
            folder = self.sae_dir / hook_name(layer)
            if not folder.is_dir():
                raise ModelError(f"the toy-facts world has no SAE for layer {layer} ({folder})")
            out[layer] = SAE.load_from_disk(folder, device=device)
        return out

    def examples(self, mode: Literal["generation", "statement"] = "generation") -> list[Example]:
        from ghost_lens.toy.examples import read_examples

        if mode not in EXAMPLE_FILES:
            raise DatasetError(f"toy-facts examples come in modes generation and statement, not {mode!r}")
        return read_examples(self.path / EXAMPLE_FILES[mode])

    def info(self) -> dict[str, Any]:
        return json.loads((self.path / INFO_FILE).read_text())


def get_world(
    cfg: WorldConfig | None = None,
    *,
    force: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> ToyWorld:
    """The world of ``cfg`` (default config if ``None``): from the cache, or built (``force`` rebuilds)."""
    cfg = cfg or WorldConfig()
    final = world_path(cfg, cache_dir)
    if (final / INFO_FILE).is_file() and not force:
        logger.info("loading the toy-facts world from %s", final)
        return ToyWorld(final)
    existed = (final / INFO_FILE).is_file()
    with exclusive_lock(final.parent / f".{final.name}.lock", f"the toy-facts world {final}", timeout=None):
        if (final / INFO_FILE).is_file() and (not force or not existed):
            logger.info("another process built %s meanwhile; using it", final)
            return ToyWorld(final)
        clean_stale_temps(final)  # leftovers of a build that was killed (we hold the lock: nobody else builds)
        for legacy in final.parent.glob(f".{final.name}-building-*"):  # the build folders of earlier versions
            shutil.rmtree(legacy, ignore_errors=True)
        from ghost_lens.toy.build import build_world

        with atomic_dir(final) as tmp:
            build_world(cfg, tmp, progress=progress)
    logger.info("toy-facts world built in %s", final)
    return ToyWorld(final)
