"""SAE training for every layer: one SAELens runner per layer vs one multi-SAE runner (issue 9 target: model
forwards per batch = 1 whatever the number of layers; report the speedup at 24 layers).

Variants, timed side by side on the same tokens, interleaved, median of ``--repeats``:

- ``per-layer``: :func:`ghost_lens.saes.runners.train_sae` once per layer (SAELens's ``LanguageModelSAETrainingRunner``,
  as ``train-saes`` did before): the model runs over every batch once per layer;
- ``multi``: :func:`ghost_lens.saes.runners.train_saes_multi` (SAELens's ``MultiSAETrainingRunner``, what
  ``train-saes`` uses now): one forward per batch feeds every layer's SAE.

Both train TopK SAEs (expansion 4, k 16) on ``blocks.{L}.hook_resid_post`` of every layer with the same token budget
per SAE. "forwards per batch" counts the model forwards over token batches (a pre-hook on the model), divided by the
number of distinct token batches. Wall-clock and process CPU time are both reported (CPU time, one torch thread, is
the steadier measure on a shared machine).

Shapes: ``toy`` = 4 layers, d_model 128 (the toy-facts world's shape); ``deep`` = 24 layers, d_model 256, 4 heads,
d_mlp 1024, random weights (the depth of gpt2-medium at a width a CPU trains in seconds). No download.

    python benchmarks/bench_sae_training.py                     # both shapes, 1 thread, 3 repeats
    python benchmarks/bench_sae_training.py --shape deep --tokens 8192 --repeats 5
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ghost_lens.hooks import hook_name
from ghost_lens.saes.config import SAETrainingConfig
from ghost_lens.saes.runners import train_sae, train_saes_multi

SHAPES = {
    "toy": dict(n_layers=4, d_model=128, n_heads=4, d_mlp=512, d_vocab=600),
    "deep": dict(n_layers=24, d_model=256, n_heads=4, d_mlp=1024, d_vocab=2000),
}


def build(shape: str, ctx: int) -> HookedTransformer:
    s = SHAPES[shape]
    cfg = HookedTransformerConfig(
        n_layers=s["n_layers"], d_model=s["d_model"], n_heads=s["n_heads"], d_head=s["d_model"] // s["n_heads"],
        d_mlp=s["d_mlp"], d_vocab=s["d_vocab"], n_ctx=ctx, act_fn="gelu_new", normalization_type="LN", seed=0,
        device="cpu",
    )
    return HookedTransformer(cfg).eval()


class ForwardCounter:
    """Counts full model forwards on token batches and the distinct batches among them."""

    def __init__(self, model: HookedTransformer, min_rows: int) -> None:
        self.batches: list[bytes] = []
        self.min_rows = min_rows
        self.handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs) -> None:  # noqa: ANN001, ARG002
        inp = args[0] if args else kwargs.get("input")
        if isinstance(inp, torch.Tensor) and inp.dtype == torch.long and inp.shape[0] >= self.min_rows:
            self.batches.append(inp.numpy().tobytes())

    def per_batch(self) -> float:
        return len(self.batches) / max(1, len(set(self.batches)))

    def close(self) -> None:
        self.handle.remove()


def run_variant(name: str, model: HookedTransformer, tokens: torch.Tensor, n_tokens: int) -> tuple[float, float, float]:
    hooks = [hook_name(layer, "resid_post") for layer in range(model.cfg.n_layers)]
    cfg = SAETrainingConfig(expansion=4, k=16, training_tokens=n_tokens, train_batch_size_tokens=1024, seed=0,
                            skip_first=False)  # both variants train on every position
    counter = ForwardCounter(model, min_rows=8)  # the width probes run on 2 rows
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        if name == "multi":
            train_saes_multi(model, hooks, tokens, cfg)
        else:
            for h in hooks:
                train_sae(model, h, tokens, cfg)
    finally:
        counter.close()
    return time.perf_counter() - wall, time.process_time() - cpu, counter.per_batch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=[*SHAPES, "both"], default="both")
    parser.add_argument("--tokens", type=int, default=None, help="training tokens per SAE (default: toy 16384, "
                                                                 "deep 8192)")
    parser.add_argument("--ctx", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("sae_lens").setLevel(logging.ERROR)
    print(f"torch threads: {torch.get_num_threads()}, repeats: {args.repeats} (median), interleaved")
    for shape in (SHAPES if args.shape == "both" else [args.shape]):
        n_tokens = args.tokens or (16_384 if shape == "toy" else 8_192)
        model = build(shape, args.ctx)
        # enough distinct rows for every batch the runners draw (norm estimate + training + buffer)
        n_rows = 4 * n_tokens // args.ctx + 256
        tokens = torch.randint(0, SHAPES[shape]["d_vocab"], (n_rows, args.ctx), generator=torch.Generator().manual_seed(0))
        results: dict[str, list[tuple[float, float, float]]] = {"per-layer": [], "multi": []}
        for _ in range(args.repeats):
            for name in results:
                results[name].append(run_variant(name, model, tokens, n_tokens))
        s = SHAPES[shape]
        print(f"\n{shape}: {s['n_layers']} layers, d_model {s['d_model']}, {n_tokens} training tokens per SAE, "
              f"context {args.ctx}")
        print(f"{'variant':<10} {'wall s':>8} {'cpu s':>8} {'forwards/batch':>15}")
        med = {}
        for name, rows in results.items():
            med[name] = tuple(statistics.median(r[i] for r in rows) for i in range(3))
            print(f"{name:<10} {med[name][0]:>8.2f} {med[name][1]:>8.2f} {med[name][2]:>15.1f}")
        print(f"speedup multi vs per-layer: {med['per-layer'][0] / med['multi'][0]:.2f}x wall, "
              f"{med['per-layer'][1] / med['multi'][1]:.2f}x cpu")


if __name__ == "__main__":
    main()
