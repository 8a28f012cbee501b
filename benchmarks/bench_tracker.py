"""Tracking + metrics time per example, as a share of capture time per example (issue target: <= 10%).

Per shape, timed interleaved on one thread, median of ``--repeats``:

- ``capture``: ghost-lens ``capture_tokens`` on a batch of ``--batch`` x ``--seq`` random tokens (an answer of 4
  tokens, toy: 2, at the end), with a random model of that shape and one random SAELens SAE per layer; divided by
  the batch size.
- ``bare forward``: ``model(tokens)`` on the same batch, for reference (what capture cannot be faster than).
- ``track``: ``track_trace(..., keep_graphs=False)`` (detections, association, assignment, metrics) on a run-sized
  trace (``--track-examples``, default 64: the capture tiled), per example; ``track+graph`` also builds the
  networkx graphs. Timed on two traces:
  ``captured`` = the FeatureTrace that capture just produced (random SAEs: decoder cosines ~0, short tracks), and
  ``persistent`` = a synthetic trace of the same shape whose tokens keep ~80% of their features from one layer to the
  next and whose decoder directions of a feature are 0.9-correlated across layers: long tracks, ~``top_k_features``
  live tracks per layer, the tracker's worst case.

Shapes: ``medium`` = gpt2-medium (24 layers, d_model 1024, 16 heads, d_mlp 4096, d_vocab 50257; SAEs of 5120
features), ``top_k_features`` 100, 64 tokens per example; ``toy`` = 4 layers, d_model 128 (SAEs of 512), the
default ``top_k_features`` 50, 16 tokens per example (the toy-facts world's n_ctx). Capture keeps top-k 64 per
token. No download.

    python benchmarks/bench_tracker.py                     # both shapes, positions last_prompt_and_answer and all
    python benchmarks/bench_tracker.py --shape toy --seq 64
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from threadpoolctl import threadpool_limits
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ghost_lens.capture.capture import capture_tokens
from ghost_lens.capture.trace import FeatureTrace
from ghost_lens.config import CaptureConfig, TrackerConfig
from ghost_lens.hooks import hook_name
from ghost_lens.tracking import track_trace

SHAPES = {
    "medium": dict(
        n_layers=24, d_model=1024, n_heads=16, d_mlp=4096, d_vocab=50257, d_sae=5120, top_k_features=100
    ),
    "toy": dict(n_layers=4, d_model=128, n_heads=4, d_mlp=512, d_vocab=600, d_sae=512, top_k_features=50),
}
SEQ = {"medium": (64, 4), "toy": (16, 2)}  # tokens per example, answer tokens at the end


def build(s: dict) -> tuple[HookedTransformer, dict[int, SAE]]:
    cfg = HookedTransformerConfig(
        n_layers=s["n_layers"],
        d_model=s["d_model"],
        n_heads=s["n_heads"],
        d_head=s["d_model"] // s["n_heads"],
        d_mlp=s["d_mlp"],
        d_vocab=s["d_vocab"],
        n_ctx=256,
        act_fn="gelu_new",
        normalization_type="LN",
        seed=0,
    )
    model = HookedTransformer(cfg).eval()
    names = [hook_name(layer, "resid_post") for layer in range(s["n_layers"])]
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.randint(0, s["d_vocab"], (2, 32)), names_filter=names)
    g = torch.Generator().manual_seed(0)
    saes = {}
    for layer, name in enumerate(names):
        sae = StandardSAE(
            StandardSAEConfig(d_in=s["d_model"], d_sae=s["d_sae"], metadata=SAEMetadata(hook_name=name))
        )
        with torch.no_grad():  # random encoder, bias leaving a few % of the features active per token
            sae.W_enc.copy_(torch.randn(s["d_model"], s["d_sae"], generator=g))
            sae.b_enc.fill_(-1.75 * float((cache[name] @ sae.W_enc).std()))
        saes[layer] = sae.eval()
    return model, saes


def persistent_trace(
    like: FeatureTrace, d_sae: int, keep: float = 0.8, rho: float = 0.9, seed: int = 0
) -> FeatureTrace:
    """``like``'s layout with features that persist across layers and correlated decoder directions."""
    rng = np.random.default_rng(seed)
    n_layers, total, k = like.feat_idx.shape
    d_model = like.resid_last_prompt.shape[-1]
    # slot s of a token walks its own run of unique ids: a feature is replaced with probability 1 - keep per layer
    pool = np.argsort(rng.random((total, d_sae)), axis=1)[:, : k * (n_layers + 1)].reshape(
        total, k, n_layers + 1
    )
    step = np.cumsum(rng.random((n_layers, total, k)) >= keep, axis=0)
    step[0] = 0
    idx = np.take_along_axis(pool[None], step[..., None], axis=3)[..., 0]  # [L, T, k], unique per token
    val = np.sort(rng.gamma(2.0, 1.0, size=(n_layers, total, k)), axis=2)[..., ::-1].astype(np.float32)
    base = rng.standard_normal((d_sae, d_model)).astype(np.float32)
    dec_idx, dec_dir = [], []
    for j in range(n_layers):
        used = np.unique(idx[j])
        d = rho * base[used] + np.sqrt(1 - rho**2) * rng.standard_normal((used.size, d_model))
        dec_idx.append(torch.from_numpy(used))
        dec_dir.append(torch.from_numpy((d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)))
    fields = {f: getattr(like, f) for f in like.__dataclass_fields__}
    return FeatureTrace(
        **{
            **fields,
            "feat_idx": torch.from_numpy(idx.astype(np.int32)),
            "feat_val": torch.from_numpy(val.copy()),
            "dec_idx": dec_idx,
            "dec_dir": dec_dir,
        }
    )


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tile_trace(trace: FeatureTrace, reps: int) -> FeatureTrace:
    """``reps`` copies of a capture's examples in one trace (same decoder tables): a run-sized trace to track."""
    n = trace.n_examples
    lengths = torch.diff(trace.offsets).repeat(reps)
    per_example = {
        "answer_start",
        "answer_end",
        "answer_logprob",
        "answer_mean_logprob",
        "output_entropy",
        "max_prob",
    }
    fields = {f: getattr(trace, f) for f in trace.__dataclass_fields__}
    fields.update({f: getattr(trace, f).repeat(reps) for f in per_example})
    fields.update(
        tokens=trace.tokens.repeat(reps),
        offsets=torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lengths, 0)]),
        feat_idx=trace.feat_idx.repeat(1, reps, 1),
        feat_val=trace.feat_val.repeat(1, reps, 1),
        resid_last_prompt=trace.resid_last_prompt.repeat(1, reps, 1),
        resid_answer_mean=trace.resid_answer_mean.repeat(1, reps, 1),
        meta={**trace.meta, "ids": [f"{r}.{i}" for r in range(reps) for i in range(n)]},
    )
    return FeatureTrace(**fields)


def run(shape: str, batch: int, seq: int | None, repeats: int, positions: list[str], n_track: int) -> None:
    s = SHAPES[shape]
    seq = seq or SEQ[shape][0]
    model, saes = build(s)
    tokens = list(torch.randint(0, s["d_vocab"], (batch, seq), generator=torch.Generator().manual_seed(1)))
    spans = [(seq - SEQ[shape][1], seq)] * batch
    ccfg = CaptureConfig(batch_size=batch, top_k=64)
    capture = lambda: capture_tokens(model, saes, tokens, spans, ccfg, progress=False)  # noqa: E731
    captured = capture()
    tiled = tile_trace(captured, max(1, n_track // batch))
    traces = {"captured": tiled, "persistent": persistent_trace(tiled, s["d_sae"])}
    batch_tokens = torch.stack(tokens)

    def bare() -> None:
        with torch.inference_mode():
            model(batch_tokens)

    variants: dict[str, tuple[Callable[[], object], int]] = {
        "capture": (capture, batch),
        "bare forward": (bare, batch),
    }
    for pos in positions:
        tcfg = TrackerConfig(top_k_features=s["top_k_features"], positions=pos)
        for tname, trace in traces.items():
            fn = lambda t=trace, c=tcfg: track_trace(t, c, progress=False, keep_graphs=False)  # noqa: E731
            variants[f"track {tname} {pos}"] = (fn, trace.n_examples)
        fn = lambda c=tcfg: track_trace(traces["persistent"], c, progress=False, keep_graphs=True)  # noqa: E731
        variants[f"track+graph persistent {pos}"] = (fn, tiled.n_examples)
    for fn, _ in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, (fn, n) in variants.items():
            times[name].append(timed(fn) / n)
    cap, fwd = statistics.median(times["capture"]), statistics.median(times["bare forward"])
    print(
        f"\n== {shape}: {s['n_layers']} layers, d_model {s['d_model']}, d_sae {s['d_sae']}, top_k_features "
        f"{s['top_k_features']}; capture: batch {batch} x {seq} tokens; tracking: {tiled.n_examples} examples "
        f"(the capture tiled); 1 thread, median of {repeats}"
    )
    for tname, trace in traces.items():
        res = track_trace(
            trace, TrackerConfig(top_k_features=s["top_k_features"]), progress=False, keep_graphs=False
        )
        live = res.metrics[:, [res.feature_names.index(f"live_L{layer}") for layer in res.layers]].mean()
        print(
            f"   {tname:<11} trace: mean track length {res.column('mean_track_length').mean():.2f}, "
            f"live tracks per layer {live:.1f} (last_prompt_and_answer)"
        )
    print(f"{'variant':<46}{'ms/example':>12}{'vs capture':>12}{'vs bare':>10}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<46}{med * 1e3:>12.2f}{med / cap:>11.1%}{med / fwd:>10.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["medium", "toy", "both"], default="both")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=None, help="tokens per example (default: 64 medium, 16 toy)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--track-examples", type=int, default=64, help="examples per tracking call (capture tiled)"
    )
    ap.add_argument("--positions", nargs="+", default=["last_prompt_and_answer", "all"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # numpy's BLAS too
    for shape in ("toy", "medium") if args.shape == "both" else (args.shape,):
        run(shape, args.batch, args.seq, args.repeats, args.positions, args.track_examples)


if __name__ == "__main__":
    main()
