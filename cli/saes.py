"""``ghost-lens saes list|eval`` and ``ghost-lens train-saes``."""

from __future__ import annotations

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
)

app = typer.Typer(help="SAE bundles: list SAELens releases, evaluate a bundle's quality.", no_args_is_help=True)


@app.command("list")
@handle_errors
def list_cmd(model: ModelOpt = None) -> None:
    """SAELens registry releases, with their hooks, layers and widths (filter with --model)."""
    from rich.table import Table

    from ghost_lens.saes.sources import list_releases, no_release_hint

    rows = list_releases(model)
    if not rows:
        console.print(escape(no_release_hint(model)))
        return
    table = Table(title=f"SAELens releases{f' for {model}' if model else ''}", header_style="bold")
    for col in ("release", "model", "hooks", "layers", "widths", "repo"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["release"], r["model"], ", ".join(r["hooks"]), _span(r["layers"]),
                      ", ".join(map(str, r["widths"])) or "?", r["repo"])
    console.print(table)
    if model:
        console.print(escape(no_release_hint(model, some=True)))


def _span(layers: list[int]) -> str:
    if not layers:
        return "?"
    return f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else ",".join(map(str, layers))


@app.command("eval")
@handle_errors
def eval_cmd(
    model: ModelOpt = None,
    sae_release: ReleaseOpt = None,
    sae_dir: SaeDirOpt = None,
    layers: LayersOpt = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="Held-out text (a dataset name or path) to measure on; default: the quality "
                                       "saved beside each SAE at training, else the run config's dataset."),
    ] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", help="Examples of held-out text.")] = 200,
    ce_sequences: Annotated[
        int, typer.Option("--ce-sequences", help="Rows of text the CE loss recovered is measured on (0: skip).")
    ] = 32,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Per-layer SAE quality (FVU, L0, dead features, CE loss recovered) as a table.

    SAEs trained by ghost-lens (train-saes, the built-in smollm2-135m-res) carry the quality measured on their
    held-out text; it is shown unless --dataset asks for a new measurement."""
    from ghost_lens.saes.quality import run_bundle_quality

    cfg = load_run_config(config, set_, model=model, sae_release=sae_release, sae_dir=sae_dir,
                          dataset=dataset, **{"capture.layers": parse_layers(layers)})
    report = run_bundle_quality(cfg, remeasure=dataset is not None, num_samples=num_samples,
                                ce_sequences=ce_sequences, progress=True)
    where = ("saved at training, on held-out text" if report.measured_on is None
             else f"measured on {report.measured_on}")
    console.print(quality_table(report.quality, report.bundle, escape(f"SAE quality: {report.bundle.source} ({where})")))


def quality_table(quality: dict, bundle, title: str):
    """Layer, hook, width, FVU, L0, dead features, CE loss recovered (first position excluded where recorded)."""
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for col in ("layer", "hook", "d_sae", "FVU", "L0", "dead features", "CE loss recovered"):
        table.add_column(col, justify="right")
    for layer, q in sorted(quality.items()):
        ce = q.get("ce_loss_recovered")
        table.add_row(str(layer), bundle.hook_names[layer], str(bundle[layer].cfg.d_sae), f"{q['fvu']:.3f}",
                      f"{q['l0']:.1f}", f"{q['dead_fraction']:.1%}", "-" if ce is None else f"{ce:.3f}")
    return table


@handle_errors
def train_saes_cmd(
    model: ModelOpt = None,
    layers: LayersOpt = None,
    dataset: Annotated[str, typer.Option("--dataset", help="Training text: .txt, .jsonl (text field) or hub name.")] = "",
    architecture: Annotated[
        str | None, typer.Option("--architecture", help="standard | topk | jumprelu  [default: topk]")
    ] = None,
    expansion: Annotated[int | None, typer.Option("--expansion", help="d_sae = expansion x d_model.  [default: 5]")] = None,
    training_tokens: Annotated[int | None, typer.Option("--training-tokens", help="[default: 2000000]")] = None,
    context_size: Annotated[int | None, typer.Option("--context-size", help="[default: 128]")] = None,
    hook: Annotated[
        str | None, typer.Option("--hook", help="resid_pre | resid_mid | resid_post  [default: resid_post]")
    ] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the SAEs (one sub-folder per layer).")] = "",
    force: Annotated[bool, typer.Option("--force", help="Replace the trained layers' SAEs in a non-empty --out.")] = False,
    seed: Annotated[int | None, typer.Option("--seed", help="[default: 0]")] = None,
    training_config: Annotated[
        str | None,
        typer.Option("--training-config", help="SAE training YAML (path, or packaged: default); the flags above "
                                               "win over it. Keys: ghost_lens.saes.config.SAETrainingConfig."),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train one SAE per layer, all layers from one model forward per batch (SAELens's MultiSAETrainingRunner);
    writes a folder --sae-dir reads, each SAE with its quality.json. The SAEs are trained in a temporary folder and
    swapped into --out only when all succeeded."""
    from ghost_lens.errors import ConfigError
    from ghost_lens.saes.config import load_sae_training_config
    from ghost_lens.saes.training import train_saes_on_dataset

    if not dataset:
        raise ConfigError("--dataset is required: a .txt or .jsonl file, or a hub dataset name")
    if not out:
        raise ConfigError("--out is required: the folder the SAEs are written to")
    train_cfg = load_sae_training_config(
        training_config, layers=parse_layers(layers), hook=hook, architecture=architecture, expansion=expansion,
        training_tokens=training_tokens, context_size=context_size, seed=seed,
    )
    cfg = load_run_config(config, set_, model=model)
    bundle = train_saes_on_dataset(cfg, dataset, out, train_cfg, force=force, progress=True)
    console.print(quality_table(bundle.saved_quality(), bundle, escape(f"trained {len(bundle)} SAEs into {out}")))
    console.print(escape(f"use them with --sae-dir {out}"), highlight=False)
