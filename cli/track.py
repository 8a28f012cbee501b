"""``ghost-lens track``: capture, tracking, detection and evaluation into one run folder."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.markup import escape

from ghost_lens_cli._common import (
    ConfigOpt,
    LayersOpt,
    ModelOpt,
    ReleaseOpt,
    SaeDirOpt,
    SetOpt,
    console,
    handle_errors,
    load_run_config,
    parse_layers,
    state,
)

DatasetOpt = Annotated[
    str | None,
    typer.Option("--dataset", "-d",
                 help="toy-facts | toy-facts-statement | world-facts (the model answers real fact questions) | "
                      "world-facts-statement | truthfulqa | halueval | a .csv/.jsonl path."),
]
NumOpt = Annotated[int | None, typer.Option("--num-samples", "-n", help="Use at most N examples (whole groups).")]
DeviceOpt = Annotated[
    str | None,
    typer.Option("--device", help="cpu | cuda | cuda:N | auto (CUDA when available); beats the config's `device`. "
                                  "The capture's dtype is `--set capture.dtype=bfloat16` (float32 / float16)."),
]


def summary_table(rows: list[tuple], title: str):
    """The detector and every baseline: AUROC with its interval, AUPRC, and the verdict."""
    from rich.table import Table

    table = Table(title=title, header_style="bold", title_justify="left")
    for col, just in (("scorer", "left"), ("AUROC", "right"), ("95% CI", "right"), ("AUPRC", "right"),
                      ("detector vs this", "left")):
        table.add_column(col, justify=just)
    for name, auroc, lo, hi, auprc, verdict in rows:
        table.add_row(name, f"{auroc:.3f}", f"[{lo:.3f}, {hi:.3f}]", f"{auprc:.3f}", verdict,
                      style="bold" if name == "detector" else None)
    return table


def ablation_table(rows: dict):
    """The detector on each feature group alone and on all of them (same folds); its own setting in bold."""
    from rich.table import Table

    table = Table(title="feature groups (ablation, same folds)", header_style="bold", title_justify="left")
    for col, just in (("features", "left"), ("AUROC", "right"), ("95% CI", "right"), ("vs detector", "right")):
        table.add_column(col, justify=just)
    for name, r in rows.items():
        a, d = r["auroc"], r.get("auroc_diff_vs_detector")
        table.add_row(f"{name} (detector)" if r["is_detector"] else name, f"{a['value']:.3f}",
                      f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}]",
                      "" if d is None else f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]",
                      style="bold" if r["is_detector"] else None)
    return table


def track(
    model: ModelOpt = None,
    sae_release: ReleaseOpt = None,
    sae_dir: SaeDirOpt = None,
    dataset: DatasetOpt = None,
    config: ConfigOpt = None,
    layers: LayersOpt = None,
    num_samples: NumOpt = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Run folder (default runs/MODEL_DATASET).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute everything, capture included.")] = False,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Track SAE features across layers and evaluate the hallucination detector against its baselines.

    With no arguments it runs on the embedded toy-facts world (built on first use). Under
    `torchrun --nproc-per-node N` the capture is split over the N processes; rank 0 writes the run."""
    _track(model, sae_release, sae_dir, dataset, config, layers, num_samples, out, force, device, set_)


@handle_errors
def _track(model, sae_release, sae_dir, dataset, config, layers, num_samples, out, force, device, set_) -> None:
    from ghost_lens.constants import REPORT
    from ghost_lens.run_report import split_description
    from ghost_lens.track_run import run_track

    fields = {"model": model, "sae_release": sae_release, "sae_dir": sae_dir, "dataset": dataset,
              "num_samples": num_samples, "capture.layers": parse_layers(layers), "device": device}
    cfg = load_run_config(config, set_, **fields)
    jobs = min(state.threads or 1, os.cpu_count() or 1)  # evaluation processes: --threads, at most one per CPU
    run = run_track(cfg, out, force=force, progress=True, argv=sys.argv, n_jobs=jobs)  # no --out: runs/MODEL_DATASET
    if run is None:  # a data-parallel rank other than 0: its shards are written, rank 0 writes the run
        return
    ev = run.evaluation
    console.print(summary_table(ev.summary_rows(), escape(f"{cfg.model} on {cfg.dataset}")))
    console.print(f"[dim]split: {split_description(ev.metrics)}[/]", highlight=False)
    console.print(ev.metrics["conclusion"]["statement"], highlight=False)
    if ev.metrics.get("headline"):
        console.print(f"[bold]Does it add to confidence?[/] {ev.metrics['headline']}", highlight=False)
    ablation = (ev.metrics.get("ablation") or {}).get("rows") or {}
    if len(ablation) > 1:
        console.print(ablation_table(ablation))
    console.print(f"run folder: [bold]{escape(str(run.path))}[/]  (read {escape(str(run.path / REPORT))} first)",
                  soft_wrap=True)
