"""SAETrainingConfig: every setting of SAE training in one dataclass, mirrored one-to-one by YAML.

1. :class:`SAETrainingConfig` holds what :func:`ghost_lens.saes.training.train_saes` (one SAE per layer, SAELens's
   ``MultiSAETrainingRunner``) and :func:`ghost_lens.saes.runners.train_sae` (one SAE on one hook) need besides the
   model and the tokens; ``__post_init__`` validates only (a bad value is one :class:`~ghost_lens.errors.ConfigError`
   line naming the key and its ``ghost-lens train-saes`` flag), :meth:`~SAETrainingConfig.resolved_layers` checks the
   layers against a model and picks every layer when none are named.
2. :func:`load_sae_training_config` reads a YAML file or a packaged one (``configs/sae_training/<name>.yaml``; an
   unknown key is an error naming it, as for :func:`ghost_lens.config.load_config`), then applies ``key=value``
   overrides and then the fields given as keyword arguments (the command line's typed flags win over the file).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ghost_lens.errors import ConfigError

Architecture = Literal["standard", "topk", "jumprelu"]
ARCHITECTURES: tuple[str, ...] = ("standard", "topk", "jumprelu")
PACKAGED_DIR = "sae_training"
"""Sub-folder of the packaged configs holding SAE-training YAML (``default.yaml``)."""


def _key(name: str) -> str:
    """``training_tokens (--training-tokens)``: the config key and the ``train-saes`` flag of the same name."""
    return f"{name} (--{name.replace('_', '-')})"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class SAETrainingConfig:
    """How ghost-lens trains SAEs with SAELens (``ghost-lens train-saes``, the built-in bundles, the toy world)."""

    layers: list[int] | None = None
    """Blocks to train one SAE each on (``blocks.{L}.hook_{hook}``); ``None``: every layer of the model."""
    hook: Literal["resid_pre", "resid_mid", "resid_post"] = "resid_post"
    """Residual hook kind read at each layer."""
    architecture: Architecture = "topk"
    """``standard`` (ReLU + L1), ``topk`` or ``jumprelu``."""
    expansion: int = 5
    """SAE width as a multiple of the hook's width (``d_sae = expansion x d_model``)."""
    training_tokens: int = 2_000_000
    """Activation tokens every SAE is trained on (SAEs trained together all see the same tokens)."""
    context_size: int = 128
    """Tokens per training row: a text corpus is cut into rows of this length; rows of a token tensor given
    directly are used whole when shorter and cut to this length when longer."""
    k: int = 16
    """Active features per token of a TopK SAE (at most ``d_sae``)."""
    l1_coefficient: float = 5.0
    """L1 coefficient of a standard SAE, L0 coefficient of a JumpReLU one."""
    lr: float = 1e-3
    """Adam learning rate."""
    train_batch_size_tokens: int = 1024
    """Activation tokens per training step (at most ``training_tokens``)."""
    lr_warm_up_steps: int | None = None
    """Linear warm-up steps; ``None``: a tenth of the steps, at least 1 and at most 50."""
    lr_decay_steps: int = 0
    """Steps at the end over which the learning rate decays linearly to ``lr / 10`` (0: none)."""
    n_batches_for_norm_estimate: int = 4
    """Activation batches SAELens reads to estimate the activation scale (``expected_average_only_in``)."""
    seed: int = 0
    """Seeds the SAEs' initialisation and the activation buffer's shuffling."""
    held_out_fraction: float = 0.1
    """Share of the token rows kept out of training for ``quality.json`` (unused when held-out rows are given)."""
    skip_first: bool = True
    """Leave each row's first position (BOS, an attention sink with an outsized norm) out of training (SAELens
    ``seqpos_slice=(1, None)``) and out of the quality measures (SAEs trained together; the one-SAE
    :func:`~ghost_lens.saes.runners.train_sae` trains on every position)."""
    ce_sequences: int | None = 32
    """Held-out rows the CE loss recovered is measured on (``None``: all, ``0``: not measured)."""
    exclude_token_ids: list[int] | None = None
    """Token ids (e.g. padding) left out of training."""
    replay_mb: int = 2048
    """SAEs trained together (:func:`~ghost_lens.saes.runners.train_saes_multi`) over more than one epoch of the
    tokens: keep the first epoch's activations of every hook in memory, up to this many MB, and replay them for the
    later epochs instead of running the model again (the same activations in the same order: the same SAEs). A first
    epoch larger than this: the model runs every epoch. ``0``: never replay."""
    device: str | None = None
    """Training device; ``None``: the model's device."""

    def __post_init__(self) -> None:
        if self.layers is not None and (not self.layers or any(not isinstance(L, int) or L < 0 for L in self.layers)):
            raise ConfigError(f"{_key('layers')} must be a non-empty list of layers >= 0, got {self.layers!r}")
        if self.hook not in ("resid_pre", "resid_mid", "resid_post"):
            raise ConfigError(f"{_key('hook')} must be one of resid_pre, resid_mid, resid_post, got {self.hook!r}")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"{_key('architecture')} must be standard, topk or jumprelu, got {self.architecture!r}")
        if not _positive_int(self.expansion):
            raise ConfigError(f"{_key('expansion')} must be an integer >= 1, got {self.expansion!r} "
                              "(d_sae = expansion x d_model)")
        for name in ("training_tokens", "k", "train_batch_size_tokens", "n_batches_for_norm_estimate"):
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"{_key(name)} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (isinstance(self.replay_mb, int) and not isinstance(self.replay_mb, bool) and self.replay_mb >= 0):
            raise ConfigError(f"{_key('replay_mb')} must be an integer >= 0, got {self.replay_mb!r}")
        if not _positive_int(self.context_size) or self.context_size < 2:
            raise ConfigError(f"{_key('context_size')} must be an integer >= 2, got {self.context_size!r}")
        for name in ("lr", "l1_coefficient"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{_key(name)} must be > 0, got {value!r}")
        if self.lr_warm_up_steps is not None and not _positive_int(self.lr_warm_up_steps):
            raise ConfigError(f"{_key('lr_warm_up_steps')} must be an integer >= 1 or null, got {self.lr_warm_up_steps!r}")
        if not (isinstance(self.lr_decay_steps, int) and self.lr_decay_steps >= 0):
            raise ConfigError(f"{_key('lr_decay_steps')} must be an integer >= 0, got {self.lr_decay_steps!r}")
        if not (isinstance(self.seed, int) and not isinstance(self.seed, bool)):
            raise ConfigError(f"{_key('seed')} must be an integer, got {self.seed!r}")
        if not (isinstance(self.held_out_fraction, int | float) and 0.0 <= self.held_out_fraction < 1.0):
            raise ConfigError(f"{_key('held_out_fraction')} must be in [0, 1), got {self.held_out_fraction!r}")
        if self.ce_sequences is not None and not (isinstance(self.ce_sequences, int) and self.ce_sequences >= 0):
            raise ConfigError(f"{_key('ce_sequences')} must be an integer >= 0 or null, got {self.ce_sequences!r}")

    def resolved_layers(self, n_layers: int) -> list[int]:
        """:attr:`layers` sorted and unique (every layer when ``None``), or a one-line ConfigError when one is not
        a layer of a model with ``n_layers`` layers."""
        layer_list = list(range(n_layers)) if self.layers is None else sorted(set(self.layers))
        bad = [L for L in layer_list if not 0 <= L < n_layers]
        if bad or not layer_list:
            raise ConfigError(f"layers must be a non-empty subset of 0..{n_layers - 1}, got {self.layers}")
        return layer_list

    def with_fields(self, **fields: Any) -> SAETrainingConfig:
        """A copy with the fields that are not ``None`` replaced (typed command-line flags over a file)."""
        return dataclasses.replace(self, **{k: v for k, v in fields.items() if v is not None})


def packaged_sae_training_config_path(name: str) -> Path:
    """Path of a packaged SAE-training config (``default``)."""
    from importlib.resources import files

    return Path(str(files("ghost_lens.configs").joinpath(PACKAGED_DIR, f"{name}.yaml")))


def load_sae_training_config(
    path_or_name: str | Path | None = None, overrides: Sequence[str] | None = None, **fields: Any
) -> SAETrainingConfig:
    """An :class:`SAETrainingConfig` from a YAML path or a packaged name (``None``: the dataclass defaults), then
    ``key=value`` ``overrides``, then ``fields`` that are not ``None``; an unknown key is a one-line ConfigError."""
    from ghost_lens.config_io import apply_overrides, from_dict, load_yaml_dict

    if path_or_name is None:
        cfg = SAETrainingConfig()
    else:
        p = Path(path_or_name)
        if not p.suffix and not p.exists():
            p = packaged_sae_training_config_path(str(path_or_name))
            if not p.is_file():
                raise ConfigError(f"no SAE training config file or packaged one named {str(path_or_name)!r}")
        cfg = from_dict(SAETrainingConfig, load_yaml_dict(p), strict=True)
    cfg = apply_overrides(cfg, list(overrides or []))
    unknown = [k for k in fields if k not in {f.name for f in dataclasses.fields(SAETrainingConfig)}]
    if unknown:
        raise ConfigError(f"unknown SAE training config key {unknown[0]!r}")
    return cfg.with_fields(**fields)
