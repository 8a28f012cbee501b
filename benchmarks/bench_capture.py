"""Capture throughput against a bare forward pass (issue target: capture >= 0.7x bare at gpt2-medium shape).

Variants, timed side by side on the same tokens (``--batches`` batches of ``--batch`` x ``--seq`` random tokens per
timing, so that per-call fixed costs are amortised as over a dataset), interleaved, median of ``--repeats``:

- ``bare``: ``model(tokens)`` (full logits);
- ``run_with_cache``: ``model.run_with_cache(tokens, names_filter=<the SAEs' hooks>)``;
- ``cache+encode``: the naive capture (run_with_cache, then ``sae.encode`` + top-k per layer at every position);
- ``capture``: ghost-lens ``capture_tokens`` (in-place hooks: encode + top-k of the real tokens, residuals, answer
  log-prob / entropy / max-prob, decoder tables).

Wall-clock and process CPU time are both reported: on a machine shared with other jobs, CPU time (one torch thread)
is the steadier measure of the work done; wall time is what a user waits.

Shapes: ``medium`` = a random gpt2-medium-shaped HookedTransformer (24 layers, d_model 1024, 16 heads, d_mlp 4096,
d_vocab 50257, n_ctx 1024) with one random SAELens SAE of 5120 features per layer; ``toy`` = 4 layers, d_model 128,
vocab 600, SAEs of 512 features (``--toy-world``: the toy-facts world's own model and SAEs instead). No download.

    python benchmarks/bench_capture.py                      # both shapes, 1 thread, batch 8 x 64 tokens
    python benchmarks/bench_capture.py --shape toy --threads 2
    python benchmarks/bench_capture.py --shape medium --device cuda --dtype bfloat16 --batch 32 --seq 128

``--device`` / ``--dtype`` put the model and the SAEs on that device in that dtype (``capture.dtype``: every variant
runs in it, so ``capture`` vs ``bare`` compares like with like); on CUDA each timing ends with a synchronize.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from sae_lens import SAE, StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ghost_lens.capture.capture import capture_tokens
from ghost_lens.config import CaptureConfig
from ghost_lens.hooks import hook_name

SHAPES = {
    "medium": dict(n_layers=24, d_model=1024, n_heads=16, d_mlp=4096, d_vocab=50257, n_ctx=1024, d_sae=5120),
    "toy": dict(n_layers=4, d_model=128, n_heads=4, d_mlp=512, d_vocab=600, n_ctx=128, d_sae=512),
}


def build(shape: str) -> tuple[HookedTransformer, dict[int, SAE]]:
    s = SHAPES[shape]
    cfg = HookedTransformerConfig(
        n_layers=s["n_layers"], d_model=s["d_model"], n_heads=s["n_heads"], d_head=s["d_model"] // s["n_heads"],
        d_mlp=s["d_mlp"], d_vocab=s["d_vocab"], n_ctx=s["n_ctx"], act_fn="gelu_new", normalization_type="LN",
        seed=0, device="cpu",  # built on the CPU (TL would pick CUDA); main() moves it to --device
    )
    model = HookedTransformer(cfg).eval()
    names = [hook_name(layer, "resid_post") for layer in range(s["n_layers"])]
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.randint(0, s["d_vocab"], (2, 32)), names_filter=names)
    saes = {}
    g = torch.Generator().manual_seed(0)
    for layer, name in enumerate(names):
        sae = StandardSAE(StandardSAEConfig(d_in=s["d_model"], d_sae=s["d_sae"], metadata=SAEMetadata(hook_name=name)))
        # random encoder; a bias that leaves ~4% of the features active per token, as in trained SAEs
        with torch.no_grad():
            sae.W_enc.copy_(torch.randn(s["d_model"], s["d_sae"], generator=g))
            sae.b_enc.fill_(-1.75 * float((cache[name] @ sae.W_enc).std()))
        saes[layer] = sae.eval()
    return model, saes


def toy_world() -> tuple[HookedTransformer, dict[int, SAE]]:
    """The toy-facts world's model and SAEs (built into the cache first if needed: a few minutes)."""
    from ghost_lens.toy.world import get_world

    world = get_world()
    return world.model, world.load_saes()


def cache_then_encode(model: HookedTransformer, saes: dict[int, SAE], names: list[str], tokens, k: int) -> None:
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=names)
        for layer, name in zip(sorted(saes), names, strict=True):
            torch.topk(saes[layer].encode(cache[name]), k, dim=-1)


def run(
    model: HookedTransformer, saes: dict[int, SAE], batch: int, seq: int, n_batches: int, repeats: int, top_k: int,
    dtype: str = "float32",
) -> None:
    names = [saes[layer].cfg.metadata.hook_name or hook_name(layer) for layer in sorted(saes)]
    device = next(model.parameters()).device
    tokens = torch.randint(0, model.cfg.d_vocab, (n_batches * batch, seq), generator=torch.Generator().manual_seed(1))
    batches = [b.to(device) for b in tokens.split(batch)]  # the capture moves its own batches
    spans = [(seq - 4, seq)] * len(tokens)  # a 4-token answer at the end of each sequence
    cfg = CaptureConfig(batch_size=batch, top_k=top_k, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def bare() -> None:
        with torch.inference_mode():
            for b in batches:
                model(b)

    def rwc() -> None:
        with torch.inference_mode():
            for b in batches:
                model.run_with_cache(b, names_filter=names)

    variants: dict[str, Callable[[], object]] = {
        "bare": bare,
        "run_with_cache": rwc,
        "cache+encode": lambda: [cache_then_encode(model, saes, names, b, top_k) for b in batches],
        "capture": lambda: capture_tokens(model, saes, list(tokens), spans, cfg, progress=False),
    }
    # short calls (the toy) are repeated inside one timing so each timing lasts >= ~0.3 s
    t0 = time.perf_counter()
    bare()
    inner = max(1, int(0.3 / max(time.perf_counter() - t0, 1e-6)))
    for fn in variants.values():  # warm-up
        fn()
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(inner):
                fn()
            sync()
            wall[name].append((time.perf_counter() - t0) / inner)
            cpu[name].append((time.process_time() - c0) / inner)
    n_tok = n_batches * batch * seq
    base_wall, base_cpu = statistics.median(wall["bare"]), statistics.median(cpu["bare"])
    print(f"{'variant':<16}{'wall s':>9}{'tokens/s':>10}{'vs bare':>9}{'cpu s':>9}{'tokens/s':>10}{'vs bare':>9}")
    for name in variants:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<16}{w:>9.4f}{n_tok / w:>10.1f}{base_wall / w:>9.2f}{c:>9.4f}{n_tok / c:>10.1f}{base_cpu / c:>9.2f}")

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=["medium", "toy", "both"], default="both")
    ap.add_argument("--toy-world", action="store_true", help="toy shape: the toy-facts world's model and SAEs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batches", type=int, default=4, help="batches per timing (one capture call over all of them)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                    help="the model's and the SAEs' dtype (capture.dtype)")
    args = ap.parse_args()
    from ghost_lens.model_loader import resolve_device, to_dtype

    device = resolve_device(args.device)
    torch.set_num_threads(args.threads)
    shapes = ["toy", "medium"] if args.shape == "both" else [args.shape]
    for shape in shapes:
        model, saes = toy_world() if shape == "toy" and args.toy_world else build(shape)
        model = to_dtype(model.to(device, print_details=False), args.dtype)
        saes = {layer: to_dtype(sae.to(device), args.dtype) for layer, sae in saes.items()}
        c = model.cfg
        d_sae = next(iter(saes.values())).cfg.d_sae
        seq = min(args.seq, c.n_ctx)
        print(f"\n== {shape}{' (toy world)' if shape == 'toy' and args.toy_world else ''}: {c.n_layers} layers, "
              f"d_model {c.d_model}, d_vocab {c.d_vocab}, {len(saes)} SAEs x {d_sae} features; {args.batches} "
              f"batches of {args.batch} x {seq} tokens per timing, top_k {args.top_k}, "
              f"torch threads {torch.get_num_threads()}, median of {args.repeats}, {device} {args.dtype}"
              + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else ""))
        run(model, saes, args.batch, seq, args.batches, args.repeats, args.top_k, args.dtype)
        del model, saes


if __name__ == "__main__":
    main()
