"""Where does the SAE lose the dense probe's signal? Probes on the residual, its SAE reconstruction and the SAE error.

On world-facts the dense residual probe beats every SAE-based scorer (README). This script asks why, on a saved
capture and the SAEs it was captured with (no model run): at the last prompt token of every example, per tracked
layer, it splits the residual ``x`` into the SAE's reconstruction ``x_hat = sae(x)`` and the error ``x - x_hat``,
and runs the same dense probe (:class:`ghost_lens.detect.baselines.SelectingProbe`: standardised, class-balanced
L2 logistic regression, layer and C chosen by grouped inner CV inside the training folds) on each, plus the sparse
probe on the full SAE code ``sae.encode(x)``. Same grouped folds for all (StratifiedGroupKFold, ``--repeats`` fold
seeds), AUROC with a 95% group-bootstrap interval, and the paired difference to the residual probe.

It also prints, per layer, the reconstruction error relative to |x|^2 and relative to the variance of ``x``
*across examples* at that position: at a chat template's last prompt token every example ends with the same
tokens, so the part of ``x`` that differs between questions is small, and an error larger than it (ratio > 1)
means the SAE cannot resolve what distinguishes one question from another there.

Reading: reconstruction ~ residual -> the SAE keeps the signal and the loss is downstream (top-k capture, the
tracker's summaries); reconstruction << residual with error ~ residual -> the signal sits in the part of the
residual the SAE does not reconstruct ("dark matter"), and no SAE-feature detector at this width can reach it.

    python benchmarks/probe_sae_reconstruction.py --run runs/smollm2_wf \
        --sae-dir ~/.cache/ghost-lens/smollm2-135m-res/<hash>/saes
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from sae_lens import SAE  # noqa: E402

from ghost_lens.capture.trace import FeatureTrace  # noqa: E402
from ghost_lens.detect.baselines import DENSE_CS, SPARSE_CS, LayerStack, SelectingProbe  # noqa: E402
from ghost_lens.detect.folds import make_folds  # noqa: E402
from ghost_lens.detect.metrics import bootstrap_metric, group_bootstrap_counts, repeat_draws, weighted_auroc  # noqa: E402
from ghost_lens.hooks import hook_name  # noqa: E402


def split_residuals(trace: FeatureTrace, sae_dir: Path) -> dict[str, list[np.ndarray]]:
    """Per tracked layer: residual, reconstruction, error ``[N, D]`` and the SAE code ``[N, d_sae]`` at the last
    prompt token (the capture's ``resid_last_prompt``)."""
    out: dict[str, list] = {"residual": [], "reconstruction": [], "error": [], "code": []}
    for j, layer in enumerate(trace.layers):
        sae = SAE.load_from_disk(str(sae_dir / hook_name(layer, "resid_post")), device="cpu").eval()
        x = trace.resid_last_prompt[j].float()
        with torch.inference_mode():
            code = sae.encode(x)
            x_hat = sae.decode(code)
        err = float(((x - x_hat) ** 2).sum())
        rel = err / float((x**2).sum())
        between = err / float(((x - x.mean(0)) ** 2).sum())
        print(f"layer {layer}: |x - x_hat|^2 / |x|^2 = {rel:.3f}; / variance across examples = {between:.2f}; "
              f"L0 {float((code > 0).sum(1).float().mean()):.1f}")
        out["residual"].append(x.numpy().astype(np.float64))
        out["reconstruction"].append(x_hat.numpy().astype(np.float64))
        out["error"].append((x - x_hat).numpy().astype(np.float64))
        out["code"].append(sp.csr_matrix(code.numpy()))
    return out


def out_of_fold(stack: LayerStack, kind: str, y: np.ndarray, g: np.ndarray, folds: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``[R, N]`` out-of-fold probe scores and the candidate each outer fit chose."""
    scores, chosen = np.empty(folds.shape), []
    for r in range(folds.shape[0]):
        for k in range(int(folds[r].max()) + 1):
            te = folds[r] == k
            probe = SelectingProbe(kind, DENSE_CS if kind == "dense" else SPARSE_CS)
            probe.fit(stack[~te], y[~te], groups=g[~te])
            scores[r, te] = probe.decision_function(stack[te])
            chosen.append(probe.candidate_)
    return scores, chosen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="run folder of `ghost-lens track` (its capture is read)")
    ap.add_argument("--sae-dir", required=True, help="folder with one SAELens-saved SAE per hook (blocks.L.hook_...)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    trace = FeatureTrace.load(Path(args.run) / "capture")
    y, g = np.asarray(trace.labels, dtype=np.int64), np.asarray(trace.groups)
    parts = split_residuals(trace, Path(args.sae_dir).expanduser())
    names = [f"L{layer}" for layer in trace.layers]
    folds = np.stack([make_folds(y, g, args.folds, seed)[0] for seed in range(args.repeats)])
    counts, codes = group_bootstrap_counts(g, args.bootstrap, 0)
    draws = repeat_draws(args.bootstrap, args.repeats, 0)

    def interval(s: np.ndarray, diff: np.ndarray | None = None) -> str:
        iv = bootstrap_metric(weighted_auroc, s, y, counts, codes, 0.95, diff_with=diff, repeat=draws)
        return f"{iv.value:+.3f} [{iv.ci_low:+.3f}, {iv.ci_high:+.3f}]" if diff is not None else \
            f"{iv.value:.3f} [{iv.ci_low:.3f}, {iv.ci_high:.3f}]"

    results = {}
    for name, kind in (("residual", "dense"), ("reconstruction", "dense"), ("error", "dense"), ("code", "sparse")):
        t = time.time()
        results[name] = out_of_fold(LayerStack(parts[name], names), kind, y, g, folds)
        print(f"{name}: {time.time() - t:.0f} s")
    print(f"\n{len(y)} examples, {np.unique(g).size} groups, {args.folds} grouped folds x {args.repeats} fold seeds, "
          f"{args.bootstrap} group-bootstrap resamples; last prompt token\n")
    print("| probe input | AUROC [95% CI] | minus residual probe | layers chosen |")
    print("|---|---|---|---|")
    base = results["residual"][0]
    for name, (s, chosen) in results.items():
        layers = ", ".join(f"{c} x{chosen.count(c)}" for c in sorted(set(chosen), key=chosen.count, reverse=True))
        diff = "" if name == "residual" else interval(s, base)
        label = {"code": "SAE code (sparse probe, full activations)"}.get(name, f"{name} (dense probe)")
        print(f"| {label} | {interval(s)} | {diff} | {layers} |")


if __name__ == "__main__":
    main()
