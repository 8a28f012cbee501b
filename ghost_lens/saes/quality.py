"""SAE quality on held-out tokens: fraction of variance unexplained, L0, dead features, MSE.

For each batch of token sequences: run the model up to the deepest SAE's block (``run_with_cache`` with only the
SAEs' hooks), encode each hook's activations with its SAE, decode, and accumulate

- FVU = 1 - explained variance, with SAELens's own streaming :class:`sae_lens.evals.ExplainedVarianceCalculator`
  (``E||x - x_hat||^2 / (E||x||^2 - ||E x||^2)``, float64 sums): 0 for a perfect reconstruction, 1 for
  reconstructing every token as the mean;
- MSE = mean over tokens of ``||x - x_hat||^2`` (summed over d_model, SAELens's training convention);
- L0 = mean number of non-zero features per token;
- dead fraction = share of features never active on any of the tokens.

SAELens's ``run_evals`` needs an ``ActivationsStore`` (a dataset pipeline); ghost-lens evaluates on a token tensor
it already holds, so it reuses SAELens's calculator and computes the rest here. Results are saved as
``quality.json`` beside the SAE's ``cfg.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ghost_lens.constants import SAE_QUALITY
from ghost_lens.errors import SAEError
from ghost_lens.hooks import parse_hook_name

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

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


@torch.no_grad()
def saes_quality(
    model: HookedTransformer,
    saes: Mapping[str, SAE],
    tokens: Int[Tensor, "n_seq ctx"],
    batch_size: int = 8,
) -> dict[str, dict[str, float | int]]:
    """Quality of several SAEs (hook name -> SAE) on ``tokens`` with one forward pass per batch."""
    if tokens.ndim != 2 or tokens.shape[0] == 0:
        raise SAEError(f"SAE quality needs a [n_seq, ctx] token tensor, got shape {tuple(tokens.shape)}")
    missing = [h for h in saes if h not in model.hook_dict]
    if missing:
        raise SAEError(f"the model has no hook {missing[0]!r}")
    try:
        stop_at = max(parse_hook_name(h).layer for h in saes) + 1
    except ValueError:
        stop_at = None
    if stop_at is not None and stop_at >= model.cfg.n_layers:
        stop_at = None
    names = list(saes)
    accs = {h: QualityAccumulator(int(sae.cfg.d_sae)) for h, sae in saes.items()}
    device = model.cfg.device
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size].to(device)
        _, cache = model.run_with_cache(batch, names_filter=names, stop_at_layer=stop_at)
        for h, sae in saes.items():
            x = cache[h].reshape(-1, cache[h].shape[-1])  # [batch*pos, d_model]
            acts = sae.encode(x.to(sae.device, sae.dtype))
            x_hat = sae.decode(acts).to(x.device)
            accs[h].add(x, x_hat, acts)
    return {h: acc.result() for h, acc in accs.items()}


def sae_quality(
    model: HookedTransformer, sae: SAE, tokens: Int[Tensor, "n_seq ctx"], batch_size: int = 8
) -> dict[str, float | int]:
    """FVU, L0, dead-feature fraction, MSE and token count of one SAE on ``tokens`` (see the module docstring)."""
    from ghost_lens.saes.bundle import sae_hook_name

    hook = sae_hook_name(sae)
    if hook is None:
        raise SAEError("the SAE has no hook name in its cfg metadata")
    return saes_quality(model, {hook: sae}, tokens, batch_size)[hook]


def bundle_quality(
    model: HookedTransformer, bundle: SAEBundle, tokens: Int[Tensor, "n_seq ctx"], batch_size: int = 8
) -> dict[int, dict[str, float | int]]:
    """Layer -> :func:`sae_quality` for every SAE of ``bundle`` (one forward pass per batch for all layers)."""
    by_hook = saes_quality(model, {bundle.hook_names[L]: bundle[L] for L in bundle}, tokens, batch_size)
    return {L: by_hook[bundle.hook_names[L]] for L in bundle}


def save_quality(sae_dir: str | Path, quality: Mapping[str, Any]) -> Path:
    """Write ``quality.json`` into an SAE's folder (beside its ``cfg.json``); returns the path."""
    path = Path(sae_dir) / SAE_QUALITY
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(quality), indent=2, sort_keys=True))
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
