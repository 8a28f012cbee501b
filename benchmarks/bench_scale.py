"""Capture at scale: peak memory and throughput against the number of examples, and bytes per example.

Issue 11's targets, measured on random-weight models and SAEs with GPT-2-like example lengths (no download):

- peak RSS of a capture of the large size within 10% of that of the small size (streaming shards);
- capture throughput (examples/s) at the large size >= 0.9x that at the small size;
- capture bytes per example >= 5x smaller with the default ``capture.positions: tracked`` (and float16 decoder
  tables) than with what every capture kept before (every token, float32 decoder tables, one file).

Each measurement runs in a fresh subprocess (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is the peak of that
process alone): build the model and SAEs, make ``n`` examples, capture them into a folder with
:func:`ghost_lens.capture.shards.capture_sharded`, report the capture's wall time, the peak RSS and the bytes
written. Variants:

- ``sharded``: the default config (``shard_size`` 256, tracked positions, float16 decoders and residuals), at every
  size;
- ``before``: the layout before sharding (``positions: all``, float32 decoders and residuals, int32 feature ids,
  one shard holding everything in memory), at the small size, for the bytes-per-example ratio
  (``--before-all-sizes``: also its RSS at each size).

Shapes (``bench_capture.py``'s builders): ``medium`` = gpt2-medium (24 layers, d_model 1024, vocab 50257, SAEs of
5120 features); ``small`` = 6 layers, d_model 256, vocab 50257, SAEs of 2048 (runs on a laptop in minutes);
``toy`` = 4 layers, d_model 128, vocab 600, SAEs of 512. Examples: a prompt of 20-80 and an answer of 2-12 random
word tokens (a word-level tokenizer over the model's vocabulary), seeded.

    python benchmarks/bench_scale.py                                   # medium, 200 vs 3200 examples
    python benchmarks/bench_scale.py --shape small --sizes 100 800     # what runs on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHAPES_EXTRA = {
    "small": dict(n_layers=6, d_model=256, n_heads=4, d_mlp=1024, d_vocab=50257, n_ctx=256, d_sae=2048),
}


def _tokenizer(d_vocab: int):
    """A word-level tokenizer whose words ``w2 .. w{d_vocab-1}`` are the model's token ids (0: BOS, 1: unknown)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<bos>": 0, "<unk>": 1, **{f"w{i}": i for i in range(2, d_vocab)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<bos>", unk_token="<unk>",
                                   pad_token="<bos>")
    folder = tempfile.mkdtemp(prefix="bench-scale-tok-")
    fast.save_pretrained(folder)  # TransformerLens re-creates the tokenizer from its path
    return PreTrainedTokenizerFast.from_pretrained(folder)


def _build(shape: str):
    sys.path.insert(0, str(HERE))
    import bench_capture
    from transformer_lens import HookedTransformer

    bench_capture.SHAPES.update(SHAPES_EXTRA)
    random_model, saes = bench_capture.build(shape)  # SAE biases calibrated on this model's activations
    model = HookedTransformer(random_model.cfg, tokenizer=_tokenizer(random_model.cfg.d_vocab))
    model.load_state_dict(random_model.state_dict())
    return model.eval(), saes


def _examples(n: int, d_vocab: int, seed: int = 0):
    import random

    from ghost_lens.data.example import Example

    rng = random.Random(seed)
    out = []
    for i in range(n):
        prompt = " ".join(f"w{rng.randrange(2, d_vocab)}" for _ in range(rng.randint(20, 80)))
        answer = " ".join(f"w{rng.randrange(2, d_vocab)}" for _ in range(rng.randint(2, 12)))
        out.append(Example(id=str(i), group=str(i // 2), prompt=prompt, answer=answer, label=i % 2))
    return out


def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from ghost_lens.capture.shards import capture_sharded
    from ghost_lens.config import CaptureConfig

    model, saes = _build(args.shape)
    examples = _examples(args.n, model.cfg.d_vocab)
    if args.variant == "before":
        cfg = CaptureConfig(positions="all", decoder_dtype="float32", residual_dtype="float32", shard_size=args.n,
                            batch_size=args.batch)
    else:
        cfg = CaptureConfig(shard_size=args.shard_size, batch_size=args.batch)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        capture_sharded(model, saes, examples, cfg, Path(tmp) / "capture", key="bench")
        seconds = time.perf_counter() - t0
        if args.variant == "before":
            _widen_feature_ids(Path(tmp) / "capture")
        files = [p for p in Path(tmp).rglob("*") if p.is_file()]
        nbytes = sum(p.stat().st_size for p in files)
        tensor_bytes = sum(p.stat().st_size for p in files if p.name == "capture.safetensors")
        decoder_bytes = sum(p.stat().st_size for p in files if p.name == "decoders.safetensors")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"variant": args.variant, "n": args.n, "seconds": seconds, "examples_per_s": args.n / seconds,
                      "peak_rss_mb": peak / 1024, "rss_before_capture_mb": rss_before / 1024, "bytes": nbytes,
                      "tensor_bytes": tensor_bytes, "decoder_bytes": decoder_bytes}))


def _widen_feature_ids(folder: Path) -> None:
    """Rewrite each shard's ``capture.safetensors`` with ``feat_idx`` in int32, as every capture stored it before
    issue 11 (int16 when the SAEs have < 32768 features came with it), so ``before`` is the old layout on disk."""
    import torch
    from safetensors.torch import load_file, save_file

    for path in folder.rglob("capture.safetensors"):
        tensors = load_file(str(path))
        tensors["feat_idx"] = tensors["feat_idx"].to(torch.int32)
        save_file(tensors, str(path))


def _run(args: argparse.Namespace, variant: str, n: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--n", str(n), "--shape", args.shape,
           "--threads", str(args.threads), "--batch", str(args.batch), "--shard-size", str(args.shard_size)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    if out.returncode != 0:
        raise SystemExit(f"worker {variant} n={n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="medium", choices=["medium", "small", "toy"])
    p.add_argument("--sizes", type=int, nargs=2, default=[200, 3200], metavar=("SMALL", "LARGE"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--shard-size", type=int, default=256)
    p.add_argument("--before-all-sizes", action="store_true", help="also the old layout's RSS at the large size")
    p.add_argument("--runs", nargs="+", metavar="VARIANT:N",
                   help="only these runs (e.g. sharded:200 before:200); the ratios whose runs are there are printed")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default="sharded", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    small, large = args.sizes
    plan = [("sharded", small), ("sharded", large), ("before", small)] + [("before", large)] * args.before_all_sizes
    if args.runs:
        plan = [(r.split(":")[0], int(r.split(":")[1])) for r in args.runs]
    runs = [_run(args, variant, n) for variant, n in plan]
    print(f"shape {args.shape}, {args.threads} thread(s), batch {args.batch}, shard_size {args.shard_size}")
    print(f"{'variant':<8} {'n':>6} {'capture s':>10} {'ex/s':>8} {'peak RSS MB':>12} {'bytes/ex':>10} "
          f"{'capture/ex':>11} {'decoders/ex':>12}")
    for r in runs:
        print(f"{r['variant']:<8} {r['n']:>6} {r['seconds']:>10.1f} {r['examples_per_s']:>8.2f} "
              f"{r['peak_rss_mb']:>12.0f} {r['bytes'] / r['n']:>10.0f} {r['tensor_bytes'] / r['n']:>11.0f} "
              f"{r['decoder_bytes'] / r['n']:>12.0f}")
    _verdicts(runs)


def _verdicts(runs: list[dict]) -> None:
    """The issue's three ratios, each printed when its runs are there."""
    sharded = sorted((r for r in runs if r["variant"] == "sharded"), key=lambda r: r["n"])
    before = [r for r in runs if r["variant"] == "before"]
    if len(sharded) >= 2:
        s, lg = sharded[0], sharded[-1]
        rss = lg["peak_rss_mb"] / s["peak_rss_mb"]
        thr = lg["examples_per_s"] / s["examples_per_s"]
        print(f"peak RSS {lg['n']} / {s['n']}: {rss:.3f} (target <= 1.10) {'ok' if rss <= 1.10 else 'MISSED'}")
        print(f"throughput {lg['n']} / {s['n']}: {thr:.3f} (target >= 0.90) {'ok' if thr >= 0.9 else 'MISSED'}")
    same = [(b, s) for b in before for s in sharded if s["n"] == b["n"]]
    for b, s in same:
        by = (b["bytes"] / b["n"]) / (s["bytes"] / s["n"])
        by_t = (b["tensor_bytes"] / b["n"]) / (s["tensor_bytes"] / s["n"])
        print(f"bytes per example at {b['n']}, before / now: {by_t:.1f}x capture tensors (capture.safetensors, "
              f"target >= 5) {'ok' if by_t >= 5 else 'MISSED'}; {by:.1f}x all files (decoder tables included)")


if __name__ == "__main__":
    main()
