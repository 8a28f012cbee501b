"""SAE quality on held-out tokens: FVU, L0, dead features, MSE and CE loss recovered.

For each batch of token sequences: run the model (``run_with_cache`` with only the SAEs' hooks; up to the deepest
SAE's block when no CE loss is measured), encode each hook's activations with its SAE, decode, and accumulate

- FVU = 1 - explained variance, with SAELens's own streaming :class:`sae_lens.evals.ExplainedVarianceCalculator`
  (``E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)``, float64 sums): 0 for a perfect reconstruction, 1 for
  reconstructing every token as the mean;
- MSE = mean over tokens of ``||x - x_hat||^2`` (summed over d_model, SAELens's training convention);
- L0 = mean number of non-zero features per token;
- dead fraction = share of features never active on any of the tokens;
- CE loss recovered = ``(CE_zero - CE_sae) / (CE_zero - CE_clean)``: the next-token loss with the hook's
  activation replaced by the SAE's reconstruction (``CE_sae``), by zeros (``CE_zero``, zero ablation) and left
  alone (``CE_clean``); 1 means splicing the SAE in costs nothing, 0 means it is as bad as deleting the activation.
  SAELens's ``run_evals`` reports the same quantity. A residual hook is spliced by rerunning only the blocks after
  it from the replaced residual (``forward(start_at_layer=...)``); other hooks by a full forward with a hook
  (:func:`spliced_loss_with_hook`, also the reference the fast path is tested against).

With ``skip_first`` the first position of every row is left out of all measures (and out of the splice): it is
where most LMs park attention (BOS), with a residual norm many times the others', and SAEs trained with
``seqpos_slice=(1, None)`` never saw it. SAELens's ``run_evals`` needs an ``ActivationsStore`` (a dataset pipeline);
ghost-lens evaluates on a token tensor it already holds, so it reuses SAELens's calculator and computes the rest
here. Results are saved as ``quality.json`` beside the SAE's ``cfg.json``. :func:`run_bundle_quality` is
``ghost-lens saes eval``: a run config's bundle with the quality saved at training, or measured anew.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ghost_lens.constants import SAE_QUALITY
from ghost_lens.errors import ConfigError, SAEError
from ghost_lens.hooks import parse_hook_name

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from ghost_lens.config import RunConfig
    from ghost_lens.saes.bundle import SAEBundle


class QualityAccumulator:
    """Streams (activations, reconstructions, feature activations) batches into the quality metrics."""

    def __init__(self, d_sae: int) -> None:
        from sae_lens.evals import ExplainedVarianceCalculator

        self._ev = ExplainedVarianceCalculator()
        self._fired = torch.zeros(d_sae, dtype=torch.bool)
        self._l0_sum = 0.0
        self._sq_err_sum = 0.0
        self.n_tokens = 0

    @torch.no_grad()
    def add(
        self,
        x: Float[Tensor, "n d_model"],
        x_hat: Float[Tensor, "n d_model"],
        acts: Float[Tensor, "n d_sae"],
    ) -> None:
        x, x_hat = x.float(), x_hat.float()
        self._ev.add_batch(sae_output=x_hat, hidden_acts=x)
        active = acts != 0
        self._fired |= active.any(dim=0).cpu()
        self._l0_sum += active.sum().item()
        self._sq_err_sum += (x - x_hat).pow(2).sum().item()
        self.n_tokens += x.shape[0]

    def result(self) -> dict[str, float | int]:
        if self.n_tokens == 0:
            raise SAEError("no tokens to measure SAE quality on")
        return {
            "fvu": 1.0 - self._ev.compute(),
            "l0": self._l0_sum / self.n_tokens,
            "dead_fraction": 1.0 - self._fired.float().mean().item(),
            "mse": self._sq_err_sum / self.n_tokens,
            "n_tokens": self.n_tokens,
            "d_sae": int(self._fired.numel()),
        }


class CELossAccumulator:
    """Sums of per-token next-token losses: clean, zero-ablated and with the SAE spliced in (float64)."""

    def __init__(self) -> None:
        self.clean = self.zero = self.sae = 0.0
        self.n_tokens = 0

    def add(self, clean: Tensor, zero: Tensor, sae: Tensor) -> None:
        self.clean += clean.double().sum().item()
        self.zero += zero.double().sum().item()
        self.sae += sae.double().sum().item()
        self.n_tokens += clean.numel()

    def result(self) -> dict[str, float | int | None]:
        if self.n_tokens == 0:
            return {}
        clean, zero, sae = (v / self.n_tokens for v in (self.clean, self.zero, self.sae))
        gap = zero - clean
        return {
            "ce_loss_clean": clean,
            "ce_loss_zero_ablation": zero,
            "ce_loss_with_sae": sae,
            "ce_loss_recovered": (zero - sae) / gap if abs(gap) > 1e-9 else None,
            "ce_tokens": self.n_tokens,
        }


def _splice_start(model: HookedTransformer, hook: str) -> int | None:
    """The block a forward can restart at from ``hook``'s activation (a residual hook), else ``None``."""
    if getattr(model.cfg, "positional_embedding_type", None) == "shortformer":
        return None
    try:
        point = parse_hook_name(hook)
    except ValueError:
        return None
    if point.kind == "resid_pre":
        return point.layer
    if point.kind == "resid_post":
        return point.layer + 1
    return None


@torch.no_grad()
def spliced_loss_with_hook(
    model: HookedTransformer, hook: str, replacement: Float[Tensor, "batch pos d"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos_minus_1"]:
    """Per-token loss of a full forward whose ``hook`` activation is replaced by ``replacement``."""

    def replace(act: Tensor, hook: Any) -> Tensor:  # noqa: ARG001
        return replacement.to(act.dtype).reshape(act.shape)

    return model.run_with_hooks(
        tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(hook, replace)],
        attention_mask=torch.ones_like(tokens),
    )


@torch.no_grad()
def spliced_loss(
    model: HookedTransformer, hook: str, replacement: Float[Tensor, "batch pos d"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos_minus_1"]:
    """Per-token loss with ``hook``'s activation replaced: only the blocks after a residual hook are rerun."""
    start = _splice_start(model, hook)
    if start is None:
        return spliced_loss_with_hook(model, hook, replacement, tokens)
    return model(
        replacement, start_at_layer=start, tokens=tokens, return_type="loss", loss_per_token=True,
        attention_mask=torch.ones_like(tokens),
    )


@torch.no_grad()
def saes_quality(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    tokens: Int[Tensor, "n_seq ctx"],
    batch_size: int = 8,
    *,
    skip_first: bool = True,
    ce_sequences: int | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Quality of several SAEs (hook name -> SAE) on ``tokens``, one model forward per batch for all of them.

    ``skip_first`` leaves each row's first position out (see the module docstring). The CE loss recovered is
    measured on the first ``ce_sequences`` rows (``None``: all rows, ``0``: not measured); it costs two partial
    forwards per SAE and batch on top of the shared one.
    """
    first = 1 if skip_first else 0
    _check_quality_inputs(model, saes, tokens, batch_size, first)
    stop_at = _stop_layer(model, saes)
    names = list(saes)
    accs = {h: QualityAccumulator(int(sae.cfg.d_sae)) for h, sae in saes.items()}
    ces = {h: CELossAccumulator() for h in saes}
    device = model.cfg.device
    n = tokens.shape[0]
    n_ce = n if ce_sequences is None else max(0, min(int(ce_sequences), n))
    ranges = [(s, min(s + batch_size, n_ce)) for s in range(0, n_ce, batch_size)]
    ranges += [(s, min(s + batch_size, n)) for s in range(n_ce, n, batch_size)]
    for lo, hi in ranges:
        batch = tokens[lo:hi].to(device)
        with_ce = lo < n_ce
        if with_ce:
            clean, cache = model.run_with_cache(
                batch, names_filter=names, return_type="loss", loss_per_token=True,
                attention_mask=torch.ones_like(batch),
            )
        else:
            _, cache = model.run_with_cache(batch, names_filter=names, stop_at_layer=stop_at)
        for h, sae in saes.items():
            _measure_batch(model, h, sae, cache[h], batch, first, accs[h], ces[h] if with_ce else None,
                           clean if with_ce else None)
    return {h: {**acc.result(), **ces[h].result()} for h, acc in accs.items()}


def _check_quality_inputs(
    model: HookedTransformer, saes: Mapping[str, SAE], tokens: Tensor, batch_size: int, first: int
) -> None:
    """A ``[n_seq, ctx]`` token tensor with rows long enough, a positive batch size, hooks the model has."""
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise SAEError(f"SAE quality needs a [n_seq, ctx] token tensor, got shape {tuple(tokens.shape)}")
    if tokens.shape[1] < first + 2:
        raise SAEError(f"SAE quality needs rows of at least {first + 2} tokens, got {tokens.shape[1]}")
    if batch_size < 1:
        raise SAEError(f"batch_size must be >= 1, got {batch_size}")
    missing = [h for h in saes if h not in model.hook_dict]
    if missing:
        raise SAEError(f"the model has no hook {missing[0]!r}")


def _stop_layer(model: HookedTransformer, saes: Mapping[str, SAE]) -> int | None:
    """Where a forward without the CE loss may stop: after the deepest SAE's block (``None``: run it whole)."""
    try:
        stop_at = max(parse_hook_name(h).layer for h in saes) + 1
    except ValueError:
        stop_at = None
    if stop_at is not None and stop_at >= model.cfg.n_layers:
        stop_at = None
    return stop_at


def _measure_batch(
    model: HookedTransformer, h: str, sae: SAE, act: Float[Tensor, "batch pos d"], batch: Int[Tensor, "batch pos"],
    first: int, acc: QualityAccumulator, ce: CELossAccumulator | None, clean: Tensor | None,
) -> None:
    """Add one batch's reconstruction of hook ``h`` to ``acc`` and, given the clean loss, its spliced losses to
    ``ce``."""
    x = act[:, first:].reshape(-1, act.shape[-1])  # [batch*(pos-first), d]
    feats = sae.encode(x.to(sae.device, sae.dtype))
    x_hat = sae.decode(feats).to(x.device, x.dtype)
    acc.add(x, x_hat, feats)
    if ce is not None and clean is not None:
        with_sae, zeroed = act.clone(), act.clone()
        with_sae[:, first:] = x_hat.reshape(act[:, first:].shape)
        zeroed[:, first:] = 0.0
        ce.add(  # loss at position p predicts p+1 from positions <= p: those before `first` are equal
            clean[:, first:],
            spliced_loss(model, h, zeroed, batch)[:, first:],
            spliced_loss(model, h, with_sae, batch)[:, first:],
        )


def sae_quality(
    model: HookedTransformer, sae: SAE, tokens: Int[Tensor, "n_seq ctx"], batch_size: int = 8, **kwargs: Any
) -> dict[str, float | int | None]:
    """FVU, L0, dead-feature fraction, MSE, CE loss recovered of one SAE on ``tokens`` (see :func:`saes_quality`)."""
    from ghost_lens.saes.bundle import sae_hook_name

    hook = sae_hook_name(sae)
    if hook is None:
        raise SAEError("the SAE has no hook name in its cfg metadata")
    return saes_quality(model, {hook: sae}, tokens, batch_size, **kwargs)[hook]


def bundle_quality(
    model: HookedTransformer, bundle: SAEBundle, tokens: Int[Tensor, "n_seq ctx"], batch_size: int = 8,
    **kwargs: Any,
) -> dict[int, dict[str, float | int | None]]:
    """Layer -> :func:`sae_quality` for every SAE of ``bundle`` (one forward pass per batch for all layers)."""
    by_hook = saes_quality(model, {bundle.hook_names[L]: bundle[L] for L in bundle}, tokens, batch_size, **kwargs)
    return {L: by_hook[bundle.hook_names[L]] for L in bundle}


def save_quality(sae_dir: str | Path, quality: Mapping[str, Any]) -> Path:
    """Write ``quality.json`` into an SAE's folder (beside its ``cfg.json``); returns the path."""
    path = Path(sae_dir) / SAE_QUALITY
    path.parent.mkdir(parents=True, exist_ok=True)
    from ghost_lens.io import atomic_write_text

    atomic_write_text(path, json.dumps(dict(quality), indent=2, sort_keys=True))
    return path


def load_quality(sae_dir: str | Path) -> dict[str, Any] | None:
    """The SAE folder's ``quality.json``, or ``None`` when there is none (or it is unreadable)."""
    path = Path(sae_dir) / SAE_QUALITY
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class BundleQualityReport:
    """A run config's SAE bundle with the per-layer quality ``ghost-lens saes eval`` shows."""

    bundle: SAEBundle
    quality: dict[int, dict[str, Any]]
    """Layer -> FVU, L0, dead fraction, MSE, CE loss recovered (as :func:`bundle_quality` / ``quality.json``)."""
    measured_on: str | None
    """The dataset the quality was measured on; ``None``: the quality saved beside each SAE at training."""


def run_bundle_quality(
    cfg: RunConfig, *, remeasure: bool = False, num_samples: int = 200, ce_sequences: int = 32, progress: bool = True,
    model: HookedTransformer | None = None,
) -> BundleQualityReport:
    """``ghost-lens saes eval``: the quality of ``cfg``'s SAE bundle, loaded with its model as a run loads them.

    1. ``num_samples`` (>= 1) and ``ce_sequences`` (>= 0) are checked first (one line, nothing loaded).
    2. The model (unless ``model`` is given) and the bundle: :func:`ghost_lens.pipeline.load_model_and_bundle`.
    3. When every SAE carries the ``quality.json`` saved at training (measured on its held-out text) and
       ``remeasure`` is false, that is the quality; else it is measured with :func:`bundle_quality` on
       ``num_samples`` examples of ``cfg.dataset`` (:func:`ghost_lens.pipeline.tokens_for_quality`), the CE loss
       recovered on ``ce_sequences`` rows (0: not measured).
    """
    from ghost_lens.pipeline import load_model_and_bundle, tokens_for_quality

    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    if ce_sequences < 0:
        raise ConfigError(f"--ce-sequences must be >= 0, got {ce_sequences}")
    model, bundle = load_model_and_bundle(cfg, progress=progress, model=model)
    saved = bundle.saved_quality()
    if not remeasure and all(q is not None for q in saved.values()):
        return BundleQualityReport(bundle, {L: q for L, q in saved.items() if q is not None}, None)
    tokens = tokens_for_quality(model, cfg, num_samples)
    return BundleQualityReport(bundle, bundle_quality(model, bundle, tokens, ce_sequences=ce_sequences), cfg.dataset)
