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
                                            slot whose value is 0: fewer than k features active); int16 on
                                            disk when every id fits (read back as int32)
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
window_start        [N] int64               position in the example's full sequence of its first kept token
                                            (``capture.positions: tracked`` keeps the last prompt token and
                                            the answer: ``answer_start == 1``; optional, ``None`` = 0)
==================  ======================  ==========================================================

T counts the *kept* tokens: every token with ``capture.positions: all``, else each example's window from its last
prompt token to its answer's end (``tokens``, ``answer_start`` and ``answer_end`` are then relative to the window).
A run's capture is sharded (:mod:`ghost_lens.capture.shards`: one such file set per shard of examples and an index
``capture.json``); :meth:`FeatureTrace.load` reads both layouts. Layout and measurements: ``docs/capture_format.md``.

Decoder directions (``decoders.safetensors``): for each tracked layer position ``j`` (0..L-1),
``dec_idx.{j}`` [F_j] int64 (sorted feature ids that occur in ``feat_idx[j]`` with a non-zero value) and
``dec_dir.{j}`` [F_j, D] float (their ``W_dec`` rows, L2-normalised). :meth:`FeatureTrace.decoder_directions`
looks rows up by feature id.

``float`` is float32, or float16 for values and residuals when ``store_fp16`` is set (``meta["dtype"]``); the
residuals are stored in ``capture.residual_dtype`` (float16 by default, ``meta["residual_dtype"]``) and read back as
float32; decoder directions are stored in ``capture.decoder_dtype`` (float16 by default, ``meta["decoder_dtype"]``). Row ``i`` of ``[N]`` / ``[L, N, D]`` tensors is example ``i``, in the order given to capture.

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
_OPTIONAL_FIELDS = ("sae_totals", "window_start")

SAE_TOTALS = ("l1", "l0", "entropy")
"""Columns of ``FeatureTrace.sae_totals``: per token and layer, statistics of the full SAE activation vector."""


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``capture.safetensors``, with ``feat_idx`` as int32 whatever its width on disk (int16 when it fits) and
    the residual vectors as float32 whatever their dtype on disk (``capture.residual_dtype``, float16 by default)."""
    tensors = load_file(str(path))
    tensors["feat_idx"] = tensors["feat_idx"].to(torch.int32)
    for name in ("resid_last_prompt", "resid_answer_mean"):
        tensors[name] = tensors[name].to(torch.float32)
    return tensors


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
    window_start: torch.Tensor | None = None
    """``[N]`` position, in the example's full token sequence, of its first kept token (``0`` when every token is
    kept; ``None`` in old captures, which kept every token)."""

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

    @property
    def full_contexts(self) -> bool:
        """Whether every token of every example was kept (``capture.positions: all``, or a capture made before
        positions existed)."""
        return self.meta.get("positions", "all") == "all"

    def window_starts(self) -> torch.Tensor:
        """``[N]`` int64 :attr:`window_start` (zeros for a capture that kept every token)."""
        if self.window_start is None:
            return torch.zeros(self.n_examples, dtype=torch.long)
        return self.window_start.to(torch.long)

    def tracked_window(self, positions: str = "last_prompt_and_answer") -> FeatureTrace:
        """This trace cut to what every stage but ``interpret`` reads: per example, its last prompt token and answer
        span (what ``capture.positions: tracked`` keeps). Itself when it already is, or when ``positions`` (the
        tracker's) is ``all``. Every per-example tensor and the decoder tables are shared, not copied."""
        if positions == "all" or not self.full_contexts:
            return self
        lo = self.answer_start.long() - 1
        length = self.answer_end.long() - lo
        starts = self.offsets[:-1].long() + lo
        row = torch.repeat_interleave(torch.arange(self.n_examples), length)
        within = torch.arange(int(length.sum())) - torch.repeat_interleave(length.cumsum(0) - length, length)
        keep = starts[row] + within
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), length.cumsum(0)])
        fields = {name: getattr(self, name) for name in (*_TENSOR_FIELDS, *_OPTIONAL_FIELDS)}
        fields |= {
            "tokens": self.tokens[keep], "offsets": offsets, "answer_start": torch.ones_like(self.answer_start),
            "answer_end": length.to(self.answer_end.dtype), "feat_idx": self.feat_idx[:, keep],
            "feat_val": self.feat_val[:, keep], "window_start": self.window_starts() + lo,
            "sae_totals": None if self.sae_totals is None else self.sae_totals[:, keep],
        }
        return FeatureTrace(**fields, dec_idx=self.dec_idx, dec_dir=self.dec_dir,
                            meta=self.meta | {"positions": "tracked"})

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
    def save(self, folder: str | Path, *, decoder_metadata: dict[str, str] | None = None) -> Path:
        """The three files into ``folder``, each atomically, ``capture.json`` last (``decoder_metadata``: the
        ``decoders.safetensors`` header's metadata, e.g. :data:`ghost_lens.capture.shards.FULL_TABLES`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).contiguous() for k in _TENSOR_FIELDS}
        tensors.update({k: getattr(self, k).contiguous() for k in _OPTIONAL_FIELDS if getattr(self, k) is not None})
        idx = tensors["feat_idx"]
        if idx.numel() == 0 or int(idx.max()) <= torch.iinfo(torch.int16).max:  # lossless: SAEs of < 32768 features
            tensors["feat_idx"] = idx.to(torch.int16)  # widened back to int32 on load
        atomic_save_file(tensors, folder / CAPTURE_TENSORS)
        dec: dict[str, torch.Tensor] = {}
        for j, (i, d) in enumerate(zip(self.dec_idx, self.dec_dir, strict=True)):
            dec[f"dec_idx.{j}"] = i.contiguous()
            dec[f"dec_dir.{j}"] = d.contiguous()
        atomic_save_file(dec, folder / CAPTURE_DECODERS, metadata=decoder_metadata)
        atomic_write_json(folder / CAPTURE_META, self.meta)  # last: a capture.json means the rest is there
        return folder

    @classmethod
    def concat(cls, parts: list[FeatureTrace], dec_idx: list[torch.Tensor], dec_dir: list[torch.Tensor],
               meta: dict[str, Any]) -> FeatureTrace:
        """The examples of ``parts`` one after the other (``offsets`` shifted), with the given decoder tables and
        metadata (a sharded capture's merged ones)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        tok_counts = torch.tensor([int(p.offsets[-1]) for p in parts], dtype=torch.long)
        shift = torch.cat([torch.zeros(1, dtype=torch.long), tok_counts.cumsum(0)[:-1]])
        offsets = torch.cat([parts[0].offsets[:1].long()]
                            + [p.offsets[1:].long() + s for p, s in zip(parts, shift, strict=True)])
        token_axis = {"tokens": 0, "feat_idx": 1, "feat_val": 1, "sae_totals": 1}
        example_axis = {"answer_start": 0, "answer_end": 0, "answer_logprob": 0, "answer_mean_logprob": 0,
                        "output_entropy": 0, "max_prob": 0, "resid_last_prompt": 1, "resid_answer_mean": 1,
                        "window_start": 0}
        out: dict[str, Any] = {"offsets": offsets}
        for name, axis in {**token_axis, **example_axis}.items():
            values = [getattr(p, name) for p in parts]
            if name in _OPTIONAL_FIELDS and any(v is None for v in values):
                if name == "window_start" and not all(v is None for v in values):
                    values = [p.window_starts() for p in parts]
                else:
                    out[name] = None
                    continue
            out[name] = torch.cat(values, dim=axis)
        return cls(**out, dec_idx=dec_idx, dec_dir=dec_dir, meta=meta)

    @classmethod
    def load(cls, folder: str | Path) -> FeatureTrace:
        """A saved capture: one file set, or a sharded capture's shards concatenated (:mod:`.shards`)."""
        folder = Path(folder)
        from ghost_lens.capture.shards import CaptureShards, is_sharded

        if is_sharded(folder):
            return CaptureShards.open(folder).load()
        for name in (CAPTURE_TENSORS, CAPTURE_META, CAPTURE_DECODERS):
            if not (folder / name).is_file():
                raise RunFolderError(f"no capture in {folder}: {name} is missing (run `ghost-lens track` first)")
        tensors = load_tensors(folder / CAPTURE_TENSORS)
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
