"""Train one SAE per layer on a model's activations and save them as a loadable SAE folder.

1. Check every argument (layers, hook, architecture, expansion, token budget, held-out share, the output folder)
   before anything is written (:func:`check_training_options`, :func:`check_layers`): a bad one is one :class:`~ghost_lens.errors.ConfigError` line.
2. Split the token sequences: the last ``held_out_fraction`` (at least one sequence) is kept out of training.
3. :func:`ghost_lens.saes.train.train_saes_multi` trains all layers' SAEs on ``blocks.{L}.hook_{hook}`` together
   with SAELens's ``MultiSAETrainingRunner``: one model forward per batch whatever the number of layers.
4. Each SAE is saved with ``sae.save_model`` (SAELens's ``cfg.json`` + weights) beside a ``quality.json`` measured on
   the held-out sequences (:mod:`ghost_lens.saes.quality`: FVU, L0, dead features, CE loss recovered), all in a
   temporary sibling folder of ``out_dir``.
5. Only after every layer succeeded, each trained layer's folder is swapped into ``out_dir`` (the old one moved
   aside, the new one renamed in, the old one deleted): a crash or Ctrl-C leaves the earlier SAEs as they were, and
   layers that were not trained are never touched.

The folder is then a source like any other: ``load_bundle(model, sae_dir=out_dir)`` / ``--sae-dir out_dir``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jaxtyping import Int
from torch import Tensor

from ghost_lens.errors import ConfigError, RunFolderError
from ghost_lens.hooks import RESID_KINDS, hook_name
from ghost_lens.saes.bundle import SAEBundle
from ghost_lens.saes.quality import saes_quality, save_quality

if TYPE_CHECKING:
    from rich.progress import Progress
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

Architecture = Literal["standard", "topk", "jumprelu"]
ARCHITECTURES = ("standard", "topk", "jumprelu")


def split_held_out(tokens: Tensor, held_out_fraction: float) -> tuple[Tensor, Tensor]:
    """(train, held-out) rows of ``tokens``; the held-out part is the last ``ceil``-ish share, at least one row."""
    n = tokens.shape[0]
    if n < 2 or held_out_fraction <= 0:
        return tokens, tokens[:0]
    n_held = min(n - 1, max(1, round(n * held_out_fraction)))
    return tokens[: n - n_held], tokens[n - n_held :]


def check_training_options(
    *,
    hook: str = "resid_post",
    architecture: str = "topk",
    expansion: int = 1,
    training_tokens: int = 1,
    held_out_fraction: float = 0.0,
    tokens_shape: tuple[int, ...] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Check the model-independent training arguments; a bad one raises a one-line ConfigError naming it."""
    if hook not in RESID_KINDS:
        raise ConfigError(f"hook must be one of {', '.join(RESID_KINDS)}, got {hook!r}")
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture must be standard, topk or jumprelu, got {architecture!r}")
    if isinstance(expansion, bool) or not isinstance(expansion, int) or expansion < 1:
        raise ConfigError(f"expansion (d_sae = expansion x d_model) must be an integer >= 1, got {expansion!r}")
    if isinstance(training_tokens, bool) or not isinstance(training_tokens, int) or training_tokens < 1:
        raise ConfigError(f"training tokens must be an integer >= 1, got {training_tokens!r}")
    if not 0.0 <= held_out_fraction < 1.0:
        raise ConfigError(f"held_out_fraction must be in [0, 1), got {held_out_fraction!r}")
    if tokens_shape is not None and (len(tokens_shape) != 2 or tokens_shape[0] < 1 or tokens_shape[1] < 2):
        raise ConfigError(f"tokens must be [n_seq >= 1, ctx >= 2], got shape {tuple(tokens_shape)}")
    kw = dict(train_kwargs or {})
    for key in ("k", "train_batch_size_tokens", "n_batches_for_norm_estimate"):
        if key in kw and (not isinstance(kw[key], int) or isinstance(kw[key], bool) or kw[key] < 1):
            raise ConfigError(f"{key} must be an integer >= 1, got {kw[key]!r}")
    for key in ("lr", "l1_coefficient"):
        if key in kw and not (isinstance(kw[key], int | float) and kw[key] > 0):
            raise ConfigError(f"{key} must be > 0, got {kw[key]!r}")


def check_layers(n_layers: int, layers: Sequence[int]) -> list[int]:
    """``layers`` sorted and unique, or a one-line ConfigError unless they are a non-empty subset of the model's."""
    layer_list = sorted(set(layers))
    bad = [L for L in layer_list if not 0 <= L < n_layers]
    if bad or not layer_list:
        raise ConfigError(f"layers must be a non-empty subset of 0..{n_layers - 1}, got {list(layers)}")
    return layer_list


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


def train_saes(
    model: HookedTransformer,
    layers: Sequence[int],
    tokens: Int[Tensor, "n_seq ctx"],
    out_dir: str | Path,
    *,
    hook: str = "resid_post",
    architecture: Architecture = "topk",
    expansion: int = 5,
    training_tokens: int = 1_000_000,
    seed: int = 0,
    held_out_fraction: float = 0.1,
    held_out: Int[Tensor, "n_held ctx"] | None = None,
    skip_first: bool = True,
    ce_sequences: int | None = 32,
    force: bool = False,
    device: str = "cpu",
    progress: bool | Progress = True,
    extra_quality: Mapping[str, Any] | None = None,
    **train_kwargs: Any,
) -> SAEBundle:
    """Train (all layers from one forward per batch), evaluate and save one SAE per layer; returns the bundle.

    Args:
        model: the model whose activations the SAEs learn.
        layers: block indices to train an SAE for.
        tokens: training token sequences ``[n_seq, ctx]`` (e.g. from :func:`~ghost_lens.saes.datasets.tokenize_corpus`).
        out_dir: where the SAE folders go (``out_dir/blocks.{L}.hook_{hook}/``); must be empty unless ``force``.
        hook: residual hook kind read at each layer.
        architecture: ``standard`` (ReLU + L1), ``topk`` or ``jumprelu``.
        expansion: SAE width as a multiple of ``d_model``.
        training_tokens: activation tokens every SAE is trained on (all SAEs see the same tokens).
        seed: seeds the SAEs' initialisation and the activation buffer's shuffling.
        held_out_fraction: share of ``tokens`` rows kept out of training for ``quality.json``.
        held_out: the held-out rows themselves (then every row of ``tokens`` is trained on; the fraction is unused).
        skip_first: leave each row's first position (BOS, an attention sink with an outsized norm) out of training
            (SAELens ``seqpos_slice=(1, None)``) and out of the quality measures.
        ce_sequences: held-out rows used for the CE loss recovered (``None``: all, ``0``: not measured).
        force: replace the SAE folders of the trained layers in a non-empty ``out_dir`` (other files stay).
        device: training device.
        progress: a rich progress bar over training tokens (``True``), an existing ``Progress`` to add to, or
            ``False``.
        extra_quality: more keys for every ``quality.json`` (e.g. how the training text was made).
        train_kwargs: passed on to :func:`ghost_lens.saes.train.train_saes_multi` (``k``, ``l1_coefficient``,
            ``lr``, ``train_batch_size_tokens``, ``lr_decay_steps`` ...).
    """
    from ghost_lens.saes.train import train_saes_multi

    check_training_options(
        hook=hook, architecture=architecture, expansion=expansion, training_tokens=training_tokens,
        held_out_fraction=held_out_fraction, tokens_shape=tuple(tokens.shape), train_kwargs=train_kwargs,
    )
    layer_list = check_layers(model.cfg.n_layers, layers)
    out = Path(out_dir).expanduser()
    _check_out_dir(out, force)
    if held_out is not None:
        if held_out.ndim != 2 or held_out.shape[0] < 1 or held_out.shape[1] < 2:
            raise ConfigError(f"held-out tokens must be [n_seq >= 1, ctx >= 2], got shape {tuple(held_out.shape)}")
        train_tokens = tokens
    else:
        train_tokens, held_out = split_held_out(tokens, held_out_fraction)
    if held_out.shape[0] == 0:
        logger.warning("no held-out sequences: quality.json is measured on the training tokens")
        held_out = tokens
    names = {layer: hook_name(layer, hook) for layer in layer_list}

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-training-", dir=out.parent))
    try:
        with _token_progress(progress, training_tokens, len(layer_list)) as bar:
            saes = train_saes_multi(
                model, list(names.values()), train_tokens, architecture=architecture, expansion=expansion,
                training_tokens=training_tokens, seed=seed, device=device, progress=bar,
                seqpos_slice=(1, None) if skip_first else (None,), **train_kwargs,
            )
        qualities = saes_quality(model, saes, held_out, skip_first=skip_first, ce_sequences=ce_sequences)
        for name in names.values():
            sae = saes[name]
            sae.save_model(staging / name)
            quality = {
                **qualities[name],
                "architecture": architecture,
                "expansion": expansion,
                "training_tokens": training_tokens,
                "trained_with": "MultiSAETrainingRunner",
                "layers_trained_together": layer_list,
                "skip_first_position": skip_first,
                "seed": seed,
                "held_out_sequences": int(held_out.shape[0]),
                **(extra_quality or {}),
            }
            save_quality(staging / name, quality)
            logger.info("%s: %s", name, format_quality(quality))
        swap_in(staging, out, list(names.values()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SAEBundle({L: saes[n] for L, n in names.items()}, source=f"trained, folder {out}", hook_names=names,
                     sae_ids=names, folder=out)


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
