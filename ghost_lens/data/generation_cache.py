"""A model's greedy answers, generated once and kept: the cache behind generated datasets (``world-facts``).

1. The cache file is ``<cache root>/generations/<model name>-<hash>.jsonl``, where the cache root is the toy
   world's (``$GHOST_LENS_CACHE``, else ``~/.cache/ghost-lens``) and the hash covers the generation settings and the
   model's shape (so two different models that share a name do not share answers).
2. Each line is ``{"prompt": ..., "answer": ...}``: answers are keyed by their exact prompt text, so a rerun, or a
   smaller subsample of the same questions, generates nothing; only prompts not yet in the file are generated.
3. Missing prompts are generated in chunks of :data:`CHUNK_BATCHES` batches; after each chunk the new answers are
   merged in and the file is rewritten atomically (a temporary file in the same folder, then ``os.replace``): an
   interrupted run leaves a whole file that keeps every finished chunk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
CHUNK_BATCHES = 4
"""Batches generated between two saves of the cache file."""
SUBDIR = "generations"


def cache_file(model: HookedTransformer, model_name: str, settings: dict[str, Any],
               cache_dir: str | Path | None = None) -> Path:
    from ghost_lens.toy.world import cache_root

    c = model.cfg
    key = {"format": CACHE_FORMAT, "model": model_name, "settings": settings,
           "shape": [c.n_layers, c.d_model, c.d_vocab, c.n_heads]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("_") or "model"
    return cache_root(cache_dir) / SUBDIR / f"{safe}-{digest}.jsonl"


def read_cache(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["prompt"]] = row["answer"]
    return out


def write_cache(path: Path, answers: dict[str, str]) -> None:
    """All ``prompt -> answer`` pairs as JSON lines, written to a temporary file and renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for prompt, answer in answers.items():
                fh.write(json.dumps({"prompt": prompt, "answer": answer}, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_generate(
    model: HookedTransformer,
    prompts: Sequence[str],
    *,
    model_name: str,
    settings: dict[str, Any],
    cache_dir: str | Path | None = None,
    generate_fn: Callable[..., list[str]] | None = None,
    progress: Any = None,
) -> tuple[list[str], int, Path]:
    """``(answer per prompt, number generated now, cache file)``; ``settings`` go to ``generate_fn`` as keywords.

    ``generate_fn`` defaults to :func:`ghost_lens.generate.generate` (``model, prompts, **settings``).
    """
    path = cache_file(model, model_name, settings, cache_dir)
    known = read_cache(path)
    missing = list(dict.fromkeys(p for p in prompts if p not in known))
    if missing:
        if generate_fn is None:
            from ghost_lens.generate import generate as generate_fn
        logger.info("generating %d answers with %s (%d cached in %s)", len(missing), model_name,
                    len(prompts) - len(missing), path)
        chunk = CHUNK_BATCHES * int(settings.get("batch_size", 32))
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            new = generate_fn(model, part, **settings)
            if len(new) != len(part):
                raise RuntimeError(f"generate returned {len(new)} answers for {len(part)} prompts")
            known.update(zip(part, new, strict=True))
            write_cache(path, known)
            if progress is not None:
                progress(start + len(part), len(missing))
    else:
        logger.info("all %d answers read from %s", len(prompts), path)
    return [known[p] for p in prompts], len(missing), path
