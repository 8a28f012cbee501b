"""Train one SAE per layer on a model's activations and save them as a loadable SAE folder.

1. Split the token sequences: the last ``held_out_fraction`` (at least one sequence) is kept out of training.
2. For each layer, :func:`ghost_lens.saes.train.train_sae` trains an SAE on ``blocks.{L}.hook_{hook}`` with SAELens.
3. Each SAE is saved with ``sae.save_model(out_dir / hook_name)`` (SAELens's ``cfg.json`` + weights) beside a
   ``quality.json`` measured on the held-out sequences (:mod:`ghost_lens.saes.quality`).

The folder is then a source like any other: ``load_bundle(model, sae_dir=out_dir)`` / ``--sae-dir out_dir``.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from jaxtyping import Int
from torch import Tensor

from ghost_lens.constants import SAE_CFG
from ghost_lens.errors import ConfigError, RunFolderError
from ghost_lens.hooks import RESID_KINDS, hook_name
from ghost_lens.saes.bundle import SAEBundle
from ghost_lens.saes.quality import saes_quality, save_quality

if TYPE_CHECKING:
    from rich.progress import Progress
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

Architecture = Literal["standard", "topk", "jumprelu"]


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise RunFolderError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not force:
            raise RunFolderError(f"{out_dir} is not empty: pass force=True (--force) to overwrite its SAEs")
        # remove earlier SAE folders only, never unrelated files
        for folder in sorted({cfg.parent for cfg in out_dir.rglob(SAE_CFG)} - {out_dir}):
            shutil.rmtree(folder, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)


def split_held_out(tokens: Tensor, held_out_fraction: float) -> tuple[Tensor, Tensor]:
    """(train, held-out) rows of ``tokens``; the held-out part is the last ``ceil``-ish share, at least one row."""
    n = tokens.shape[0]
    if n < 2 or held_out_fraction <= 0:
        return tokens, tokens[:0]
    n_held = min(n - 1, max(1, round(n * held_out_fraction)))
    return tokens[: n - n_held], tokens[n - n_held :]


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
    force: bool = False,
    device: str = "cpu",
    progress: bool | Progress = True,
    **train_kwargs: Any,
) -> SAEBundle:
    """Train, evaluate and save one SAE per layer; returns the bundle (its ``sae_ids`` are the folder names).

    Args:
        model: the model whose activations the SAEs learn.
        layers: block indices to train an SAE for.
        tokens: training token sequences ``[n_seq, ctx]`` (e.g. from :func:`~ghost_lens.saes.datasets.tokenize_corpus`).
        out_dir: where the SAE folders go (``out_dir/blocks.{L}.hook_{hook}/``); must be empty unless ``force``.
        hook: residual hook kind read at each layer.
        architecture: ``standard`` (ReLU + L1), ``topk`` or ``jumprelu``.
        expansion: SAE width as a multiple of ``d_model``.
        training_tokens: activation tokens seen per SAE.
        seed: seeds every SAE (the same seed for each layer).
        held_out_fraction: share of ``tokens`` rows kept out of training for ``quality.json``.
        force: replace the SAE folders of a non-empty ``out_dir``.
        device: training device.
        progress: a rich progress bar over layers (``True``), an existing ``Progress`` to add to, or ``False``.
        train_kwargs: passed on to :func:`ghost_lens.saes.train.train_sae` (``k``, ``l1_coefficient``, ``lr`` ...).
    """
    from ghost_lens.saes.train import train_sae

    if hook not in RESID_KINDS:
        raise ConfigError(f"hook must be one of {', '.join(RESID_KINDS)}, got {hook!r}")
    layer_list = sorted(set(layers))
    bad = [L for L in layer_list if not 0 <= L < model.cfg.n_layers]
    if bad or not layer_list:
        raise ConfigError(
            f"layers must be a non-empty subset of 0..{model.cfg.n_layers - 1}, got {list(layers)}"
        )
    if tokens.ndim != 2:
        raise ConfigError(f"tokens must be [n_seq, ctx], got shape {tuple(tokens.shape)}")
    out = Path(out_dir).expanduser()
    _prepare_out_dir(out, force)
    train_tokens, held_out = split_held_out(tokens, held_out_fraction)
    if held_out.shape[0] == 0:
        logger.warning("no held-out sequences: quality.json is measured on the training tokens")
        held_out = tokens

    saes = {}
    names: dict[int, str] = {}
    with _layer_progress(progress, len(layer_list)) as bars:
        for layer in layer_list:
            name = hook_name(layer, hook)
            logger.info("training %s SAE on %s (%d tokens)", architecture, name, training_tokens)
            sae = train_sae(
                model,
                name,
                train_tokens,
                architecture=architecture,
                expansion=expansion,
                training_tokens=training_tokens,
                seed=seed,
                device=device,
                progress=bars.start_layer(name),
                **train_kwargs,
            )
            sae.eval()
            folder = out / name
            sae.save_model(folder)
            quality = saes_quality(model, {name: sae}, held_out)[name]
            quality.update(
                {
                    "architecture": architecture,
                    "expansion": expansion,
                    "training_tokens": training_tokens,
                    "seed": seed,
                    "held_out_sequences": int(held_out.shape[0]),
                }
            )
            save_quality(folder, quality)
            logger.info(
                "%s: FVU %.3f, L0 %.1f, dead %.1f%%",
                name,
                quality["fvu"],
                quality["l0"],
                100 * quality["dead_fraction"],
            )
            saes[layer], names[layer] = sae, name
            bars.advance()
    return SAEBundle(saes, source=f"trained, folder {out}", hook_names=names, sae_ids=names)


class _Bars:
    """A rich task over layers plus one over the current SAE's training tokens (or no-ops without a bar)."""

    def __init__(self, bar: Progress | None, n_layers: int) -> None:
        self.bar = bar
        self.layers_task = bar.add_task("train SAEs", total=n_layers) if bar is not None else None
        self.tokens_task = None

    def start_layer(self, name: str) -> Callable[[int, int], None] | None:
        """A ``progress(tokens_done, tokens_total)`` callback for :func:`train_sae` on hook ``name``."""
        bar = self.bar
        if bar is None:
            return None
        if self.tokens_task is not None:
            bar.remove_task(self.tokens_task)
        task = self.tokens_task = bar.add_task(f"  {name}", total=None)
        return lambda done, total: bar.update(task, completed=done, total=total)

    def advance(self) -> None:
        if self.bar is not None and self.layers_task is not None:
            self.bar.advance(self.layers_task)


@contextlib.contextmanager
def _layer_progress(progress: bool | Progress, n_layers: int) -> Iterator[_Bars]:
    """Bars added to a given ``Progress``, to a new transient one (``True``), or none (``False``)."""
    from rich.progress import Progress

    if progress is False:
        yield _Bars(None, n_layers)
    elif isinstance(progress, Progress):
        bars = _Bars(progress, n_layers)
        yield bars
        if bars.tokens_task is not None:
            progress.remove_task(bars.tokens_task)
    else:
        with Progress(transient=True) as bar:
            yield _Bars(bar, n_layers)
