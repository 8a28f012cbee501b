"""Capture: run the model once over the examples and keep what every later stage needs, as a FeatureTrace.

Steps (:func:`capture_examples` does 1, then calls :func:`capture_tokens` for the rest):

1. Tokenize ``prompt + answer`` so the answer's token span is exact (:mod:`ghost_lens.capture.tokenize`).
2. Left-truncate to ``cfg.max_length`` (at most ``n_ctx``) keeping the answer whole (and the BOS); one warning
   gives the number of truncated examples.
3. Sort by length, batch ``cfg.batch_size`` sequences with right padding (:mod:`ghost_lens.capture.batching`).
4. One forward pass per batch, with one TransformerLens forward hook per tracked hook point. The hook works in
   place: it picks the real (unpadded) tokens, encodes them with the SAE's own ``sae.encode`` (so its input
   normalisation applies), keeps ``torch.topk(k=cfg.top_k)`` (values descending) and the residual vectors at the
   last prompt token and averaged over the answer, plus per-token totals of the full activation vector (L1 mass,
   L0, entropy of the activation shares: ``FeatureTrace.sae_totals``). No activation cache is built: at gpt2-medium shape this is
   measurably faster than ``run_with_cache(names_filter=...)`` followed by encoding
   (``benchmarks/bench_capture.py``). The hooks leave their results on the model's device; after the forward
   they go to the CPU in one copy per kind for all layers (on a GPU, per-layer copies would stall it 5 times a layer).
5. The forward stops after the last block (``stop_at_layer``); ``ln_final`` and ``unembed`` then run only at the
   positions that predict answer tokens: answer log-prob (sum and mean), mean output entropy, mean max probability.
6. Decoder tables: the unit-norm ``W_dec`` rows of every feature that occurred with a non-zero value (at a kept
   token), stored in ``cfg.decoder_dtype`` (float16 by default).

The model and the SAEs run in whatever dtype they are in (``capture.dtype``, applied by
:func:`ghost_lens.pipeline.load_model_and_bundle`: ``sae.encode`` casts its input to the SAE's dtype); every value
is cast to float32 before it is stored (feature values and residuals then to ``store_fp16`` /
``cfg.residual_dtype``, float16 by default for the residuals, which only the dense probe reads).

What is kept per token follows ``cfg.positions``: ``tracked`` (default) keeps, per example, the window from its last
prompt token to the end of its answer (what the tracker, the SAE statistics and the baselines read; the SAEs then
encode only those tokens), ``all`` every token (``interpret``'s full contexts); ``FeatureTrace.window_start`` says
where the window starts. Memory is the output (preallocated once, filled batch by batch) plus one batch's
activations; :func:`ghost_lens.capture.shards.capture_sharded` calls :func:`capture_examples` once per shard of
``cfg.shard_size`` examples, so a whole dataset never sits in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from rich.progress import Progress
from torch import Tensor

from ghost_lens._version import __version__
from ghost_lens.capture.batching import Batch, plan_batches
from ghost_lens.capture.tokenize import answer_separator, tokenize_example, truncate_left
from ghost_lens.capture.trace import SAE_TOTALS, FeatureTrace
from ghost_lens.config import CaptureConfig
from ghost_lens.data.example import Example
from ghost_lens.errors import DatasetError
from ghost_lens.saes.bundle import SAEBundle, as_bundle

if TYPE_CHECKING:  # importing sae_lens takes seconds; the capture needs only the objects it is given
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

ProgressArg = bool | Progress | Callable[[], None]
"""``False``: none; ``True``: a bar of its own; a ``Progress``: a task added to it; a callable: called per batch."""


def capture_examples(
    model: HookedTransformer,
    saes: Mapping[int, SAE],
    examples: Sequence[Example],
    cfg: CaptureConfig = CaptureConfig(),
    *,
    progress: ProgressArg = True,
    model_name: str | None = None,
) -> FeatureTrace:
    """Capture the top-k SAE features (and the baselines' inputs) of every example; see the module docstring.

    ``saes`` maps layer -> SAELens ``SAE``: an :class:`~ghost_lens.saes.bundle.SAEBundle`, or a plain dict that is
    wrapped into one (:func:`~ghost_lens.saes.bundle.as_bundle`: each SAE reads the hook in its
    ``cfg.metadata.hook_name``, else ``blocks.{layer}.hook_{cfg.hook}``). The text the model reads is
    ``prompt + sep + answer`` with ``sep`` one space unless the prompt ends or the answer starts with whitespace
    (:func:`~ghost_lens.capture.tokenize.answer_separator`).
    """
    if not examples:
        raise DatasetError("no examples to capture")
    sequences, spans = [], []
    for ex in examples:
        try:
            tokens, start = tokenize_example(model, ex.prompt, ex.answer, cfg.resolved_prepend_bos(model))
        except DatasetError as exc:
            raise DatasetError(f"example {ex.id!r}: {exc}") from None
        sequences.append(tokens)
        spans.append((start, tokens.numel()))
    meta = {
        "ids": [ex.id for ex in examples],
        "groups": [ex.group for ex in examples],
        "labels": [ex.label for ex in examples],
        "prompts": [ex.prompt for ex in examples],
        "answers": [ex.answer for ex in examples],
        "answer_separators": [answer_separator(ex.prompt, ex.answer) for ex in examples],
    }
    return capture_tokens(
        model, saes, sequences, spans, cfg, progress=progress, model_name=model_name, meta=meta
    )


def capture_tokens(
    model: HookedTransformer,
    saes: Mapping[int, SAE],
    sequences: Sequence[Tensor],
    answer_spans: Sequence[tuple[int, int]],
    cfg: CaptureConfig = CaptureConfig(),
    *,
    progress: ProgressArg = True,
    model_name: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> FeatureTrace:
    """Capture from token ids: ``sequences[i]`` (1-d, BOS included when ``cfg.prepend_bos``) with the answer at
    ``sequences[i][start:end]`` for ``(start, end) = answer_spans[i]`` (``start >= 1``).

    ``meta`` is merged into the trace's metadata (``ids``/``groups`` default to ``"0", "1", ...``). Steps 2-6 of
    the module docstring: truncate and window the sequences, preallocate the output (:class:`_Recorder`), one
    forward pass per batch (:func:`_forward`), then the decoder tables and the trace.
    """
    if len(sequences) != len(answer_spans):
        raise ValueError(f"{len(sequences)} sequences but {len(answer_spans)} answer spans")
    if not sequences:
        raise DatasetError("no examples to capture")
    bundle = resolve_hooks(model, saes, cfg)
    layers, names = bundle.layers, [bundle.hook_names[layer] for layer in bundle.layers]
    ids = list((meta or {}).get("ids", [str(i) for i in range(len(sequences))]))
    sequences, spans, n_truncated = _truncate_all(
        [torch.as_tensor(s).reshape(-1).long().cpu() for s in sequences], answer_spans, ids,
        min(cfg.max_length or model.cfg.n_ctx, model.cfg.n_ctx), cfg.resolved_prepend_bos(model),
    )
    # the kept window of each sequence: from its last prompt token on (``positions="tracked"``), or every token
    keep = [0 if cfg.positions == "all" else start - 1 for start, _ in spans]
    lengths = torch.tensor([s.numel() - lo for s, lo in zip(sequences, keep, strict=True)], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    sae_list = [bundle[layer] for layer in layers]
    k = _top_k(cfg.top_k, sae_list)
    store = torch.float16 if cfg.store_fp16 else torch.float32
    resid_store = torch.float16 if cfg.store_fp16 or cfg.residual_dtype == "float16" else torch.float32
    rec = _Recorder(sae_list, int(offsets[-1]), len(sequences), k, model.cfg.d_model, store, resid_store)
    batches = plan_batches(sequences, spans, offsets.tolist(), cfg.batch_size, keep_from=keep)
    n_batches = -(-len(sequences) // cfg.batch_size)
    logger.info(
        "capturing %d examples (%d tokens) at %d layers in %d batches", len(sequences), int(offsets[-1]), len(layers),
        n_batches,
    )
    hint = batch_size_hint(next(model.parameters()).device.type, cfg.batch_size, len(sequences))
    if hint:
        _warn_once(hint)  # once per process, not once per shard
    _forward(model, rec, names, batches, _progress(progress, n_batches))
    dec_idx, dec_dir = rec.decoder_tables(torch.float16 if cfg.decoder_dtype == "float16" else torch.float32)
    trace_meta = _trace_meta(model, bundle, cfg, ids, meta, model_name, k, n_truncated, store, resid_store)
    return _to_trace(sequences, spans, keep, offsets, rec, dec_idx, dec_dir, trace_meta)


GPU_BATCH_SIZE = 128
"""The capture batch size worth using on a GPU: at the gpt2-medium shape on an H200 in bfloat16 it ran at 0.93x a
bare forward pass (153k tokens/s), the default 8 at 20.6k tokens/s (``benchmarks/README.md``)."""


def batch_size_hint(device_type: str, batch_size: int, n_sequences: int) -> str | None:
    """A warning when a GPU capture of more than one small batch runs at a CPU-sized ``batch_size``, else ``None``."""
    if device_type != "cuda" or batch_size >= GPU_BATCH_SIZE // 4 or n_sequences <= batch_size:
        return None
    return (f"capture.batch_size={batch_size} leaves the GPU mostly idle; --set capture.batch_size="
            f"{GPU_BATCH_SIZE} captured 7x more tokens/s at the gpt2-medium shape (benchmarks/README.md)")


@functools.cache
def _warn_once(message: str) -> None:
    logger.warning(message)


def _to_trace(
    sequences: list[Tensor], spans: list[tuple[int, int]], keep: list[int], offsets: Tensor, rec: _Recorder,
    dec_idx: list[Tensor], dec_dir: list[Tensor], trace_meta: dict[str, Any],
) -> FeatureTrace:
    """The trace of the kept windows (``sequences[i][keep[i]:]``, spans shifted to match) from the filled
    recorder."""
    return FeatureTrace(
        tokens=torch.cat([s[lo:] for s, lo in zip(sequences, keep, strict=True)]),
        offsets=offsets,
        answer_start=torch.tensor([s - lo for (s, _), lo in zip(spans, keep, strict=True)], dtype=torch.long),
        answer_end=torch.tensor([e - lo for (_, e), lo in zip(spans, keep, strict=True)], dtype=torch.long),
        feat_idx=rec.feat_idx,
        feat_val=rec.feat_val,
        answer_logprob=rec.logprob_sum,
        answer_mean_logprob=rec.logprob_sum / torch.tensor([e - s for s, e in spans], dtype=torch.float32),
        output_entropy=rec.entropy,
        max_prob=rec.max_prob,
        resid_last_prompt=rec.resid_last,
        resid_answer_mean=rec.resid_mean,
        dec_idx=dec_idx,
        dec_dir=dec_dir,
        meta=trace_meta,
        sae_totals=rec.totals,
        window_start=torch.tensor(keep, dtype=torch.long),
    )


def _top_k(top_k: int, saes: Sequence[SAE]) -> int:
    """``top_k``, capped at the narrowest SAE's width (with a warning)."""
    k = min(top_k, *(sae.cfg.d_sae for sae in saes))
    if k < top_k:
        logger.warning("top_k=%d exceeds the narrowest SAE's width; keeping %d features per token", top_k, k)
    return k


def _forward(
    model: HookedTransformer, rec: _Recorder, names: list[str], batches: Iterator[Batch],
    progress: contextlib.AbstractContextManager[Callable[[], None]],
) -> None:
    """Steps 4-5: one forward pass per batch with ``rec``'s hooks at ``names``, then the answer statistics from the
    logits at the positions predicting answer tokens."""
    # Stop after the last block unless a hook lives after it (ln_final / unembed): logits are only needed at the
    # positions predicting answer tokens.
    full = any(not (n.startswith("blocks.") or n.startswith("hook_")) for n in names)
    stop_at = None if full else model.cfg.n_layers
    device = next(model.parameters()).device
    hooks = [(name, rec.hook(j)) for j, name in enumerate(names)]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks), progress as advance:
        for batch in batches:
            b = batch.to(device)
            rec.batch = b
            out = model(b.tokens, padding_side="right", stop_at_layer=stop_at)
            rec.flush()
            pred = b.answer - 1
            if full:
                logits = out.reshape(-1, out.shape[-1]).index_select(0, pred)
            else:
                logits = final_logits(model, out.reshape(-1, out.shape[-1]).index_select(0, pred))
            rec.answer_stats(logits, b)
            rec.batch = None
            advance()


def _trace_meta(
    model: HookedTransformer, bundle: SAEBundle, cfg: CaptureConfig, ids: list[str], meta: Mapping[str, Any] | None,
    model_name: str | None, k: int, n_truncated: int, store: torch.dtype, resid_store: torch.dtype,
) -> dict[str, Any]:
    """The trace's metadata: the caller's ``meta``, then what was captured, how and with what."""
    return {
        "ids": ids,
        "groups": list((meta or {}).get("groups", ids)),
        **{key: value for key, value in (meta or {}).items() if key not in ("ids", "groups")},
        "layers": bundle.layers,
        "hook_names": [bundle.hook_names[layer] for layer in bundle.layers],
        "model_name": model_name or model.cfg.model_name,
        "sae_info": bundle.describe(),
        "top_k": k,
        "d_model": model.cfg.d_model,
        "n_truncated": n_truncated,
        "dtype": str(store).removeprefix("torch."),
        "residual_dtype": str(resid_store).removeprefix("torch."),
        "compute_dtype": cfg.dtype,
        "decoder_dtype": cfg.decoder_dtype,
        "positions": cfg.positions,
        "capture_config": dataclasses.asdict(cfg),
        "ghost_lens_version": __version__,
    }


def resolve_hooks(model: HookedTransformer, saes: Mapping[int, SAE], cfg: CaptureConfig) -> SAEBundle:
    """The bundle of the tracked layers (``cfg.layers`` or every layer of ``saes``), each SAE reading its
    metadata's hook (else ``blocks.{layer}.hook_{cfg.hook}``), validated against the model by
    :meth:`SAEBundle.validate` (hook exists, ``d_in == d_model``, one hook kind); raises :class:`SAEError`."""
    bundle = as_bundle(saes, hook=cfg.hook).restrict(cfg.layers)
    bundle.validate(model)
    return bundle


def final_logits(model: HookedTransformer, resid: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    """What ``HookedTransformer.forward`` computes after its last block (ln_final, unembed, soft-cap), for the
    given positions only."""
    x = resid[None]  # [1, n, d_model]: TL's components expect a batch and a position axis
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = model.unembed(x)[0]
    cap = getattr(model.cfg, "output_logits_soft_cap", None)
    if cap is not None and cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


def activation_totals(feats: Float[Tensor, "n_tok d_sae"]) -> Float[Tensor, "n_tok 3"]:
    """Per token, over the full SAE activation vector (negative values, if an SAE has any, count as 0): L1 mass,
    L0 (active features) and the entropy (nats) of the activation shares ``a_f / L1`` (0 when nothing is active)."""
    a = feats.float().clamp_min(0)
    l1 = a.sum(-1)
    l0 = (a > 0).sum(-1).float()
    shares = a / l1.clamp_min(torch.finfo(torch.float32).tiny)[:, None]
    entropy = torch.special.entr(shares).sum(-1)
    return torch.stack([l1, l0, entropy], dim=-1)


def _truncate_all(
    sequences: list[Tensor], spans: Sequence[tuple[int, int]], ids: Sequence[str], max_length: int, keep_bos: bool
) -> tuple[list[Tensor], list[tuple[int, int]], int]:
    out, out_spans, n_truncated = [], [], 0
    for seq, (start, end), ex_id in zip(sequences, spans, ids, strict=True):
        if not 1 <= start < end <= seq.numel():
            raise DatasetError(f"example {ex_id!r}: bad answer span ({start}, {end}) for {seq.numel()} tokens")
        try:
            seq, start, end, cut = truncate_left(seq, start, end, max_length, keep_bos)
        except DatasetError as exc:
            raise DatasetError(f"example {ex_id!r}: {exc}") from None
        n_truncated += cut
        out.append(seq)
        out_spans.append((start, end))
    if n_truncated:
        logger.warning(
            "left-truncated %d of %d examples to max_length=%d tokens (answers kept whole)",
            n_truncated, len(sequences), max_length,
        )
    return out, out_spans, n_truncated


@contextlib.contextmanager
def _progress(progress: ProgressArg, total: int) -> Iterator[Callable[[], None]]:
    """A rich progress task over batches: added to a given ``Progress``, in a new one (``True``), a caller's
    per-batch callback, or none."""
    if progress is False:
        yield lambda: None
    elif isinstance(progress, Progress):
        task = progress.add_task("capture", total=total)
        yield lambda: progress.advance(task)
    elif callable(progress):
        yield progress
    else:
        with Progress(transient=True) as bar:
            task = bar.add_task("capture", total=total)
            yield lambda: bar.advance(task)


class _Recorder:
    """The capture's output tensors (preallocated) and the hooks that fill them, one batch at a time."""

    def __init__(self, saes: list[SAE], n_tokens: int, n_examples: int, k: int, d_model: int, store: torch.dtype,
                 resid_store: torch.dtype = torch.float32):
        n_layers = len(saes)
        self.saes, self.k = saes, k
        self.batch: Batch | None = None
        self.pending: dict[int, tuple[Tensor, ...]] = {}
        """Per tracked layer, the current batch's results on the model's device until :meth:`flush`."""
        self.feat_idx = torch.empty(n_layers, n_tokens, k, dtype=torch.int32)
        self.feat_val = torch.empty(n_layers, n_tokens, k, dtype=store)
        self.totals = torch.empty(n_layers, n_tokens, len(SAE_TOTALS), dtype=torch.float32)
        self.resid_last = torch.empty(n_layers, n_examples, d_model, dtype=resid_store)
        self.resid_mean = torch.empty(n_layers, n_examples, d_model, dtype=resid_store)
        self.logprob_sum = torch.empty(n_examples)
        self.entropy = torch.empty(n_examples)
        self.max_prob = torch.empty(n_examples)
        self.seen = [torch.zeros(sae.cfg.d_sae, dtype=torch.int32, device=sae.W_dec.device) for sae in saes]

    def hook(self, j: int) -> Callable[[Tensor, Any], None]:
        """The forward hook of tracked layer ``j``: encode, top-k and residuals of the current batch."""
        sae = self.saes[j]

        def record(act: Float[Tensor, "batch pos d_model"], hook: Any) -> None:
            b = self.batch
            assert b is not None
            x = act.reshape(-1, act.shape[-1])  # [batch * pos, d_model]
            feats = sae.encode(x.index_select(0, b.src))  # [n_tok, d_sae]
            if feats.is_sparse:
                feats = feats.to_dense()
            vals, idx = torch.topk(feats, self.k, dim=-1)  # sorted, descending
            active = vals != 0
            # seen[f] = max(seen[f], active) over the slots holding f (4-10x faster than a boolean-mask index)
            self.seen[j].scatter_reduce_(0, idx.reshape(-1), active.reshape(-1).to(torch.int32), "amax")
            xf = x.float()
            total = xf.new_zeros(len(b.examples), x.shape[-1]).index_add_(0, b.answer_row, xf.index_select(0, b.answer))
            self.pending[j] = (
                activation_totals(feats),
                idx.to(torch.int32).masked_fill_(~active, -1),
                vals.to(self.feat_val.dtype),
                xf.index_select(0, b.last_prompt).to(self.resid_last.dtype),
                (total / b.answer_len[:, None]).to(self.resid_mean.dtype),
            )

        return record

    def flush(self) -> None:
        """Write the current batch's per-layer results (left on the model's device by the hooks) into the output
        tensors: one device-to-host copy per kind of result for all layers together, so a CUDA capture waits for
        the GPU 5 times per batch, not 5 times per layer (``benchmarks/bench_capture.py``; numbers in its README)."""
        b = self.batch
        assert b is not None and self.pending, "flush() after a forward pass that ran the hooks"
        layers = sorted(self.pending)
        totals, idx, vals, last, mean = (torch.stack(t).cpu() for t in zip(*(self.pending[j] for j in layers), strict=True))
        for row, j in enumerate(layers):
            self.totals[j].index_copy_(0, b.dst, totals[row])
            self.feat_idx[j].index_copy_(0, b.dst, idx[row])
            self.feat_val[j].index_copy_(0, b.dst, vals[row])
            self.resid_last[j, b.examples] = last[row]
            self.resid_mean[j, b.examples] = mean[row]
        self.pending.clear()

    def answer_stats(self, logits: Float[Tensor, "n_ans d_vocab"], b: Batch) -> None:
        """Answer log-prob (sum), mean entropy and mean max probability of the rows of batch ``b``."""
        logp = logits.float().log_softmax(-1)
        targets = b.tokens.reshape(-1).index_select(0, b.answer)
        per_tok = torch.stack([
            logp.gather(1, targets[:, None])[:, 0],
            torch.special.entr(logp.exp()).sum(-1),
            logp.max(-1).values.exp(),
        ], dim=1)  # [n_ans, 3]
        sums = per_tok.new_zeros(len(b.examples), 3).index_add_(0, b.answer_row, per_tok).cpu()
        n = b.answer_len.cpu().float()
        self.logprob_sum[b.examples] = sums[:, 0]
        self.entropy[b.examples] = sums[:, 1] / n
        self.max_prob[b.examples] = sums[:, 2] / n

    def decoder_tables(self, store: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
        """Per layer: sorted ids of the features seen active, and their unit-norm ``W_dec`` rows."""
        dec_idx, dec_dir = [], []
        for sae, seen in zip(self.saes, self.seen, strict=True):
            ids = seen.nonzero()[:, 0]
            with torch.no_grad():
                rows = sae.W_dec.index_select(0, ids).float()
                rows = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            dec_idx.append(ids.cpu())
            dec_dir.append(rows.to(store).cpu())
        return dec_idx, dec_dir
