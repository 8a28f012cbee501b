"""The capture file: what one forward pass per example leaves for every later stage.

A :class:`FeatureTrace` holds, for N examples and L tracked layers, the top-k SAE features of every token of
``prompt + answer`` (ragged over examples, flattened over tokens with ``offsets``), the answer's token span, the
baselines' inputs (answer log-prob, output entropy, residual vectors) and the unit-norm decoder directions of
every feature that appears, so the tracker never needs the model or the SAEs again.

Layout (T = total tokens over all examples, k = ``top_k``, D = d_model):

==================  ======================  ==========================================================
tensor              shape                   meaning
==================  ======================  ==========================================================
tokens              [T] int64               token ids of prompt+answer (after left truncation, with BOS)
offsets             [N+1] int64             example i owns tokens[offsets[i]:offsets[i+1]]
answer_start        [N] int64               first answer token, relative to the example's own start
answer_end          [N] int64               one past the last answer token (relative)
feat_idx            [L, T, k] int32         top-k SAE feature ids per token, sorted by value, descending (-1 in a
                                            slot whose value is 0: fewer than k features active)
feat_val            [L, T, k] float         their activations (>= 0; 0 where fewer than k are active)
answer_logprob      [N] float               sum of log p(answer token | prefix) over the answer
answer_mean_logprob [N] float               the same, averaged over answer tokens
output_entropy      [N] float               mean entropy (nats) of the next-token distribution at answer positions
max_prob            [N] float               mean max softmax probability at answer positions
resid_last_prompt   [L, N, D] float         residual (the tracked hook) at the last prompt token
resid_answer_mean   [L, N, D] float         residual averaged over the answer tokens
sae_totals          [L, T, 3] float32       per token, over the *full* SAE activation (before top-k):
                                            L1 mass, L0 (active count), entropy (nats) of the activation
                                            shares (columns :data:`SAE_TOTALS`); optional: older
                                            captures lack it (``None`` then)
==================  ======================  ==========================================================

Decoder directions (``decoders.safetensors``): for each tracked layer position ``j`` (0..L-1),
``dec_idx.{j}`` [F_j] int64 (sorted feature ids that occur in ``feat_idx[j]`` with a non-zero value) and
``dec_dir.{j}`` [F_j, D] float (their ``W_dec`` rows, L2-normalised). :meth:`FeatureTrace.decoder_directions`
looks rows up by feature id.

``float`` is float32, or float16 for values, residuals and decoder directions when ``store_fp16`` is set
(``meta["dtype"]``). Row ``i`` of ``[N]`` / ``[L, N, D]`` tensors is example ``i``, in the order given to capture.

Metadata (``capture.json``): ``ids``, ``groups``, ``labels``, ``prompts``, ``answers``, ``answer_separators``
(the text the model read is ``prompt + separator + answer``), ``layers``, ``hook_names``, ``model_name``,
``sae_info`` (per layer: architecture, width, hook, release / id / neuronpedia id when known), ``top_k``,
``d_model``, ``n_truncated`` (examples left-truncated to fit ``max_length``), ``dtype``, ``capture_config`` (the
:class:`~ghost_lens.config.CaptureConfig` used), ``ghost_lens_version``. Written by
:func:`ghost_lens.capture.capture.capture_examples` (text) or :func:`~ghost_lens.capture.capture.capture_tokens`
(token ids; the text keys are then absent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from ghost_lens.constants import CAPTURE_DECODERS, CAPTURE_META, CAPTURE_TENSORS
from ghost_lens.errors import RunFolderError
from ghost_lens.io import atomic_save_file, atomic_write_json

_TENSOR_FIELDS = (
    "tokens", "offsets", "answer_start", "answer_end", "feat_idx", "feat_val", "answer_logprob",
    "answer_mean_logprob", "output_entropy", "max_prob", "resid_last_prompt", "resid_answer_mean",
)
_OPTIONAL_FIELDS = ("sae_totals",)

SAE_TOTALS = ("l1", "l0", "entropy")
"""Columns of ``FeatureTrace.sae_totals``: per token and layer, statistics of the full SAE activation vector."""


@dataclass
class FeatureTrace:
    tokens: torch.Tensor
    offsets: torch.Tensor
    answer_start: torch.Tensor
    answer_end: torch.Tensor
    feat_idx: torch.Tensor
    feat_val: torch.Tensor
    answer_logprob: torch.Tensor
    answer_mean_logprob: torch.Tensor
    output_entropy: torch.Tensor
    max_prob: torch.Tensor
    resid_last_prompt: torch.Tensor
    resid_answer_mean: torch.Tensor
    dec_idx: list[torch.Tensor]
    dec_dir: list[torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    sae_totals: torch.Tensor | None = None
    """``[L, T, 3]`` full-activation L1 / L0 / entropy per token (:data:`SAE_TOTALS`); ``None`` in old captures."""

    # ---- convenience views -------------------------------------------------------------------------------------
    @property
    def n_examples(self) -> int:
        return int(self.offsets.numel() - 1)

    @property
    def n_layers(self) -> int:
        return int(self.feat_idx.shape[0])

    @property
    def layers(self) -> list[int]:
        return list(self.meta["layers"])

    @property
    def labels(self) -> list[int]:
        return list(self.meta["labels"])

    @property
    def ids(self) -> list[str]:
        return list(self.meta["ids"])

    @property
    def groups(self) -> list[str]:
        return list(self.meta["groups"])

    def example_slice(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def example_features(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(feat_idx, feat_val)`` of example ``i``: ``[L, n_tokens_i, k]`` each."""
        s = self.example_slice(i)
        return self.feat_idx[:, s], self.feat_val[:, s]

    def decoder_directions(self, layer_pos: int, feature_ids: torch.Tensor) -> torch.Tensor:
        """Unit-norm decoder rows ``[..., D]`` for feature ids at tracked-layer position ``layer_pos``."""
        idx = self.dec_idx[layer_pos]
        flat = feature_ids.reshape(-1).to(torch.int64)
        rows = torch.searchsorted(idx, flat)
        rows = rows.clamp(max=max(idx.numel() - 1, 0))
        if idx.numel() == 0 or not torch.equal(idx[rows], flat):
            raise KeyError(f"feature id(s) missing from the decoder table of layer position {layer_pos}")
        return self.dec_dir[layer_pos][rows].reshape(*feature_ids.shape, -1).float()

    # ---- persistence -------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).contiguous() for k in _TENSOR_FIELDS}
        tensors.update({k: getattr(self, k).contiguous() for k in _OPTIONAL_FIELDS if getattr(self, k) is not None})
        atomic_save_file(tensors, folder / CAPTURE_TENSORS)
        dec: dict[str, torch.Tensor] = {}
        for j, (i, d) in enumerate(zip(self.dec_idx, self.dec_dir, strict=True)):
            dec[f"dec_idx.{j}"] = i.contiguous()
            dec[f"dec_dir.{j}"] = d.contiguous()
        atomic_save_file(dec, folder / CAPTURE_DECODERS)
        atomic_write_json(folder / CAPTURE_META, self.meta)  # last: a capture.json means the rest is there
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> FeatureTrace:
        folder = Path(folder)
        for name in (CAPTURE_TENSORS, CAPTURE_META, CAPTURE_DECODERS):
            if not (folder / name).is_file():
                raise RunFolderError(f"no capture in {folder}: {name} is missing (run `ghost-lens track` first)")
        tensors = load_file(str(folder / CAPTURE_TENSORS))
        dec = load_file(str(folder / CAPTURE_DECODERS))
        n_layers = tensors["feat_idx"].shape[0]
        meta = json.loads((folder / CAPTURE_META).read_text())
        return cls(
            **{k: tensors[k] for k in _TENSOR_FIELDS},
            dec_idx=[dec[f"dec_idx.{j}"] for j in range(n_layers)],
            dec_dir=[dec[f"dec_dir.{j}"] for j in range(n_layers)],
            meta=meta,
            **{k: tensors.get(k) for k in _OPTIONAL_FIELDS},  # lenient: older captures lack them
        )
