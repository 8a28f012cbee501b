"""Train one SAE per layer on a model's activations and save them as a loadable SAE folder.

1. Every setting comes from one :class:`~ghost_lens.saes.config.SAETrainingConfig` (validated when built: a bad
   value is one :class:`~ghost_lens.errors.ConfigError` line); the layers (every layer when it names none), the
   tokens and the output folder are checked before anything is written.
2. Split the token sequences: the last ``held_out_fraction`` (at least one sequence) is kept out of training.
3. :func:`ghost_lens.saes.runners.train_saes_multi` trains all layers' SAEs on ``blocks.{L}.hook_{hook}`` together
   with SAELens's ``MultiSAETrainingRunner``: one model forward per batch whatever the number of layers.
4. Each SAE is saved with ``sae.save_model`` (SAELens's ``cfg.json`` + weights) beside a ``quality.json`` measured on
   the held-out sequences (:mod:`ghost_lens.saes.quality`: FVU, L0, dead features, CE loss recovered), all in a
   temporary sibling folder of ``out_dir``.
5. Only after every layer succeeded, each trained layer's folder is swapped into ``out_dir`` (the old one moved
   aside, the new one renamed in, the old one deleted): a crash or Ctrl-C leaves the earlier SAEs as they were, and
   layers that were not trained are never touched.

The folder is then a source like any other: ``load_bundle(model, sae_dir=out_dir)`` / ``--sae-dir out_dir``.
:func:`train_saes_on_dataset` is ``ghost-lens train-saes``: a run config's model, a text corpus cut into rows, then
:func:`train_saes`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jaxtyping import Int
from torch import Tensor

from ghost_lens.errors import ConfigError, RunFolderError
from ghost_lens.hooks import hook_name
from ghost_lens.saes.bundle import SAEBundle
from ghost_lens.saes.config import SAETrainingConfig
from ghost_lens.saes.quality import saes_quality, save_quality

if TYPE_CHECKING:
    from rich.progress import Progress
    from transformer_lens import HookedTransformer

    from ghost_lens.config import RunConfig

logger = logging.getLogger(__name__)


def split_held_out(tokens: Tensor, held_out_fraction: float) -> tuple[Tensor, Tensor]:
    """(train, held-out) rows of ``tokens``; the held-out part is the last ``ceil``-ish share, at least one row."""
    n = tokens.shape[0]
    if n < 2 or held_out_fraction <= 0:
        return tokens, tokens[:0]
    n_held = min(n - 1, max(1, round(n * held_out_fraction)))
    return tokens[: n - n_held], tokens[n - n_held :]


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise RunFolderError(
            f"{out_dir} is not empty: pass force=True (--force) to replace the SAEs of the layers you train"
        )


def swap_in(staging: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Move ``staging/<name>`` to ``out_dir/<name>`` for each name, replacing what was there (nothing else).

    The old folder is renamed aside first and deleted only once the new one is in place.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-old-", dir=out_dir.parent))
    try:
        for name in names:
            target = out_dir / name
            if target.exists():
                os.replace(target, trash / name)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _check_tokens(tokens: Tensor, held_out: Tensor | None) -> None:
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 2:
        raise ConfigError(f"tokens must be [n_seq >= 1, ctx >= 2], got shape {tuple(tokens.shape)}")
    if held_out is not None and (held_out.ndim != 2 or held_out.shape[0] < 1 or held_out.shape[1] < 2):
        raise ConfigError(f"held-out tokens must be [n_seq >= 1, ctx >= 2], got shape {tuple(held_out.shape)}")


def train_saes(
    model: HookedTransformer,
    tokens: Int[Tensor, "n_seq ctx"],
    out_dir: str | Path,
    cfg: SAETrainingConfig | None = None,
    *,
    held_out: Int[Tensor, "n_held ctx"] | None = None,
    force: bool = False,
    progress: bool | Progress = True,
    model_name: str | None = None,
    extra_quality: Mapping[str, Any] | None = None,
) -> SAEBundle:
    """Train (all layers from one forward per batch), evaluate and save one SAE per layer; returns the bundle.

    Args:
        model: the model whose activations the SAEs learn.
        tokens: training token sequences ``[n_seq, ctx]`` (e.g. from :func:`~ghost_lens.saes.datasets.tokenize_corpus`).
        out_dir: where the SAE folders go (``out_dir/blocks.{L}.hook_{hook}/``); must be empty unless ``force``.
        cfg: every training setting (:class:`~ghost_lens.saes.config.SAETrainingConfig`; default: its defaults),
            the layers included (``None``: every layer of ``model``).
        held_out: held-out rows for ``quality.json`` (then every row of ``tokens`` is trained on and
            ``cfg.held_out_fraction`` is unused).
        force: replace the SAE folders of the trained layers in a non-empty ``out_dir`` (other files stay).
        progress: a rich progress bar over training tokens (``True``), an existing ``Progress`` to add to, or
            ``False``.
        model_name: the model name the SAEs' metadata records (default: the model's own).
        extra_quality: more keys for every ``quality.json`` (e.g. how the training text was made).
    """
    from ghost_lens.saes.runners import train_saes_multi

    cfg = cfg or SAETrainingConfig()
    _check_tokens(tokens, held_out)
    layer_list = cfg.resolved_layers(model.cfg.n_layers)
    out = Path(out_dir).expanduser()
    _check_out_dir(out, force)
    train_tokens, held_out = _train_and_held_out(tokens, held_out, cfg.held_out_fraction)
    names = {layer: hook_name(layer, cfg.hook) for layer in layer_list}

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-training-", dir=out.parent))
    try:
        with _token_progress(progress, cfg.training_tokens, len(layer_list)) as bar:
            saes = train_saes_multi(model, list(names.values()), train_tokens, cfg, progress=bar,
                                    model_name=model_name)
        qualities = saes_quality(model, saes, held_out, skip_first=cfg.skip_first, ce_sequences=cfg.ce_sequences)
        for name in names.values():
            saes[name].save_model(staging / name)
            quality = _quality_record(qualities[name], cfg, layer_list, int(held_out.shape[0]), extra_quality)
            save_quality(staging / name, quality)
            logger.info("%s: %s", name, format_quality(quality))
        swap_in(staging, out, list(names.values()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SAEBundle({L: saes[n] for L, n in names.items()}, source=f"trained, folder {out}", hook_names=names,
                     sae_ids=names, folder=out)


def _train_and_held_out(
    tokens: Tensor, held_out: Tensor | None, held_out_fraction: float
) -> tuple[Tensor, Tensor]:
    """(training rows, rows ``quality.json`` is measured on): every row and the given held-out rows, else the split
    of :func:`split_held_out`; the training rows themselves (with a warning) when nothing is held out."""
    if held_out is not None:
        train_tokens = tokens
    else:
        train_tokens, held_out = split_held_out(tokens, held_out_fraction)
    if held_out.shape[0] == 0:
        logger.warning("no held-out sequences: quality.json is measured on the training tokens")
        held_out = tokens
    return train_tokens, held_out


def _quality_record(
    measured: Mapping[str, Any], cfg: SAETrainingConfig, layers: list[int], n_held: int,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One SAE's ``quality.json``: the measures, then how it was trained, then the caller's extra keys."""
    return {
        **measured,
        "architecture": cfg.architecture,
        "expansion": cfg.expansion,
        "training_tokens": cfg.training_tokens,
        "trained_with": "MultiSAETrainingRunner",
        "layers_trained_together": layers,
        "skip_first_position": cfg.skip_first,
        "seed": cfg.seed,
        "held_out_sequences": n_held,
        **(extra or {}),
    }


def train_saes_on_dataset(
    run_cfg: RunConfig,
    dataset: str | Path,
    out_dir: str | Path,
    cfg: SAETrainingConfig | None = None,
    *,
    force: bool = False,
    progress: bool | Progress = True,
    model: HookedTransformer | None = None,
) -> SAEBundle:
    """``ghost-lens train-saes``: SAEs for ``run_cfg``'s model on a text corpus, saved into ``out_dir``.

    The output folder is checked first (not empty without ``force``: one line, nothing loaded); then the model
    (``run_cfg.model`` on ``run_cfg.device``, unless ``model`` is given), the corpus ``dataset`` (``.txt``,
    ``.jsonl`` with a ``text`` field, a dataset folder or a hub name) cut into rows of ``cfg.context_size`` tokens
    (:func:`~ghost_lens.saes.datasets.tokenize_corpus`), and :func:`train_saes` with ``cfg``.
    """
    from ghost_lens.model_loader import load_model
    from ghost_lens.saes.datasets import tokenize_corpus

    cfg = cfg or SAETrainingConfig()
    _check_out_dir(Path(out_dir).expanduser(), force)
    if model is None:
        model = load_model(run_cfg.model, device=run_cfg.device, world_cfg=run_cfg.world)
    cfg.resolved_layers(model.cfg.n_layers)  # a layer the model lacks: one line before the corpus is read
    tokens = tokenize_corpus(model, dataset, cfg.context_size)
    return train_saes(model, tokens, out_dir, cfg, force=force, progress=progress, model_name=run_cfg.model)


def format_quality(q: Mapping[str, Any]) -> str:
    """``FVU 0.123, L0 32.0, dead 1.2%, CE recovered 0.95`` (CE part only when measured)."""
    text = f"FVU {q['fvu']:.3f}, L0 {q['l0']:.1f}, dead {100 * q['dead_fraction']:.1f}%"
    if q.get("ce_loss_recovered") is not None:
        text += f", CE recovered {q['ce_loss_recovered']:.3f}"
    return text


@contextlib.contextmanager
def _token_progress(progress: bool | Progress, total: int, n_saes: int) -> Iterator[Callable[[int, int], None] | None]:
    """A ``progress(done, total)`` callback on a rich task (a new transient bar, a given ``Progress``, or none)."""
    from rich.progress import Progress

    if progress is False:
        yield None
        return
    label = f"train {n_saes} SAE{'s' if n_saes != 1 else ''} (one forward per batch)"
    if isinstance(progress, Progress):
        task = progress.add_task(label, total=total)
        yield lambda done, tot: progress.update(task, completed=done, total=tot)
        progress.remove_task(task)
    else:
        with Progress(transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda done, tot: bar.update(task, completed=done, total=tot)
