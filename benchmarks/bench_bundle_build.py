"""First-use build time of a built-in SAE bundle (issue 9's target: ``smollm2-135m-res`` <= 15 min on 2 CPU cores).

Builds the bundle from scratch into a scratch cache (``--cache``, default a fresh temporary folder; the user's cache
is never touched) with ``--threads`` torch and BLAS threads, exactly as ``ghost-lens --threads T track --model
smollm2-135m`` does on first use, and prints:

1. the wall time of the build and its two parts from the bundle's ``info.json`` (the model writing its training text;
   training with SAELens's ``MultiSAETrainingRunner`` + the quality measures);
2. the quality per layer (FVU, L0, dead fraction, CE loss recovered);
3. with ``--compare DIR`` (a built bundle's ``saes/`` folder, e.g. the one in ``~/.cache/ghost-lens``), how many SAE
   tensors are bitwise equal to that bundle's: the replay of the first epoch's activations (``replay_mb``) must give
   the SAEs a build that runs the model every epoch gives.

    python benchmarks/bench_bundle_build.py --threads 2
    python benchmarks/bench_bundle_build.py --threads 1 --compare ~/.cache/ghost-lens/smollm2-135m-res/<hash>/saes
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--release", default="smollm2-135m-res")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=None, help="scratch cache root (default: a new temporary folder)")
    p.add_argument("--compare", type=Path, default=None, help="a built bundle's saes/ folder to compare tensors with")
    args = p.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)
    from ghost_lens.model_loader import load_model
    from ghost_lens.saes import builtin

    cache = args.cache or Path(tempfile.mkdtemp(prefix="ghost-lens-bundle-bench-"))
    t0 = time.perf_counter()
    model = load_model(builtin.SPECS[args.release].model)
    t1 = time.perf_counter()
    saes = builtin.get_builtin_bundle(args.release, model, cache_dir=cache, force=True, progress=False)
    t2 = time.perf_counter()
    info = json.loads((saes.parent / builtin.INFO_FILE).read_text())
    print(f"{args.release}: {args.threads} thread(s); model load {t1 - t0:.1f} s; build {t2 - t1:.1f} s "
          f"({(t2 - t1) / 60:.1f} min; target <= 15 min on 2 cores) -> {saes}")
    print(f"  parts: {info['times']}; corpus: {info['corpus']}")
    for layer, q in info["quality"].items():
        print(f"  L{layer}: FVU {q['fvu']:.3f}  L0 {q['l0']:.1f}  dead {q['dead_fraction']:.3f}  "
              f"CE recovered {q['ce_loss_recovered']:.3f}")
    if args.compare is not None:
        from safetensors.torch import load_file

        n = same = 0
        for f in sorted(args.compare.glob("*/*.safetensors")):
            ours = load_file(saes / f.parent.name / f.name)
            for name, tensor in load_file(f).items():
                n += 1
                same += int(torch.equal(tensor, ours[name]))
        print(f"  tensors bitwise equal to {args.compare}: {same} of {n}")


if __name__ == "__main__":
    main()
