"""Work-arounds for the TransformerLens version ghost-lens runs on (3.9), in one place.

- :func:`linear_friendly_layout`: TL 3.9's ``GatedMLP`` and ``Unembed`` compute ``F.linear(x, W.T.contiguous())``
  (to match Hugging Face's ``nn.Linear`` layout, so bfloat16 accumulates in the same order), which copies every
  MLP weight and the whole unembedding on every forward. For one-token decoding steps that copy costs more than the
  matmul: generating with SmolLM2-135M spent ~40% of its time in ``contiguous``. Storing those parameters as the
  transpose of a contiguous ``[out, in]`` tensor makes ``W.T`` contiguous already, so ``.contiguous()`` returns it
  without a copy; values, shapes and the order of accumulation are unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

_LINEAR_WEIGHTS = {"GatedMLP": ("W_gate", "W_in", "W_out"), "Unembed": ("W_U",)}


def linear_friendly_layout(model: HookedTransformer) -> HookedTransformer:
    """Re-store the weights TL 3.9 transposes per forward as ``[out, in]``-contiguous (in place; returns ``model``)."""
    for module in model.modules():
        for name in _LINEAR_WEIGHTS.get(type(module).__name__, ()):
            param = getattr(module, name, None)
            if param is not None and param.dim() == 2 and not param.T.is_contiguous():
                param.data = param.data.T.contiguous().T
    return model
