"""``ghost-lens saes list|eval`` and ``ghost-lens train-saes``."""

from __future__ import annotations

from typing import Annotated

import typer

from ghost_lens_cli._common import ConfigOpt, SetOpt, console, handle_errors, load_run_config, parse_int_list

app = typer.Typer(help="SAE bundles: list SAELens releases, evaluate a bundle's quality.", no_args_is_help=True)

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="toy-facts or a TransformerLens model name.")]
ReleaseOpt = Annotated[
    str | None, typer.Option("--sae-release", help="SAELens release, Hugging Face repo id, or toy-facts-res.")
]
SaeDirOpt = Annotated[str | None, typer.Option("--sae-dir", help="Folder of SAELens-saved SAEs, one per layer.")]
LayersOpt = Annotated[str | None, typer.Option("--layers", help="Layers, e.g. '0,4,8' or '0-11'.")]


def parse_layers(spec: str | None) -> list[int] | None:
    """``"0,2,5-7"`` -> ``[0, 2, 5, 6, 7]``."""
    return parse_int_list(spec, "--layers")


@app.command("list")
@handle_errors
def list_cmd(model: ModelOpt = None) -> None:
    """SAELens registry releases, with their hooks, layers and widths (filter with --model)."""
    from rich.table import Table

    from ghost_lens.saes.sources import list_releases, no_release_hint

    rows = list_releases(model)
    if not rows:
        console.print(no_release_hint(model))
        return
    table = Table(title=f"SAELens releases{f' for {model}' if model else ''}", header_style="bold")
    for col in ("release", "model", "hooks", "layers", "widths", "repo"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["release"], r["model"], ", ".join(r["hooks"]), _span(r["layers"]),
                      ", ".join(map(str, r["widths"])) or "?", r["repo"])
    console.print(table)
    if model:
        console.print(no_release_hint(model, some=True))


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
    dataset: Annotated[str | None, typer.Option("--dataset", help="Held-out text: a dataset name or path.")] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", help="Examples of held-out text.")] = 200,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Per-layer SAE quality (FVU, L0, dead features) on held-out text, as a table."""
    from rich.table import Table

    from ghost_lens.pipeline import load_model_and_bundle, tokens_for_quality

    cfg = load_run_config(config, set_, model=model, sae_release=sae_release, sae_dir=sae_dir,
                          dataset=dataset, **{"capture.layers": parse_layers(layers)})
    model_obj, bundle = load_model_and_bundle(cfg, progress=True)
    from ghost_lens.saes.quality import bundle_quality

    tokens = tokens_for_quality(model_obj, cfg, num_samples)
    quality = bundle_quality(model_obj, bundle, tokens)
    table = Table(title=f"SAE quality: {bundle.source}", header_style="bold")
    for col in ("layer", "hook", "d_sae", "FVU", "L0", "dead features"):
        table.add_column(col, justify="right")
    for layer, q in sorted(quality.items()):
        table.add_row(str(layer), bundle.hook_names[layer], str(bundle[layer].cfg.d_sae), f"{q['fvu']:.3f}",
                      f"{q['l0']:.1f}", f"{q['dead_fraction']:.1%}")
    console.print(table)


@handle_errors
def train_saes_cmd(
    model: ModelOpt = None,
    layers: LayersOpt = None,
    dataset: Annotated[str, typer.Option("--dataset", help="Training text: .txt, .jsonl (text field) or hub name.")] = "",
    architecture: Annotated[str, typer.Option("--architecture", help="standard | topk | jumprelu")] = "topk",
    expansion: Annotated[int, typer.Option("--expansion", help="d_sae = expansion x d_model.")] = 5,
    training_tokens: Annotated[int, typer.Option("--training-tokens")] = 2_000_000,
    context_size: Annotated[int, typer.Option("--context-size")] = 128,
    hook: Annotated[str, typer.Option("--hook", help="resid_pre | resid_mid | resid_post")] = "resid_post",
    out: Annotated[str, typer.Option("--out", "-o", help="Folder for the SAEs (one sub-folder per layer).")] = "",
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty --out folder.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train one SAE per layer with SAELens's LanguageModelSAETrainingRunner; writes a folder --sae-dir reads."""
    from pathlib import Path

    from ghost_lens.errors import ConfigError
    from ghost_lens.models import load_model
    from ghost_lens.saes.datasets import tokenize_corpus
    from ghost_lens.saes.training import train_saes

    if not dataset:
        raise ConfigError("--dataset is required: a .txt or .jsonl file, or a hub dataset name")
    if not out:
        raise ConfigError("--out is required: the folder the SAEs are written to")
    if architecture not in ("standard", "topk", "jumprelu"):
        raise ConfigError(f"--architecture must be standard, topk or jumprelu, got {architecture!r}")
    cfg = load_run_config(config, set_, model=model)
    model_obj = load_model(cfg.model, device=cfg.device, world_cfg=cfg.world)
    tokens = tokenize_corpus(model_obj, dataset, context_size)
    layer_list = parse_layers(layers) or list(range(model_obj.cfg.n_layers))
    bundle = train_saes(model_obj, layer_list, tokens, Path(out), hook=hook, architecture=architecture,
                        expansion=expansion, training_tokens=training_tokens, seed=seed, progress=True, force=force)
    console.print(f"trained {len(bundle)} SAEs into [bold]{out}[/]; use them with --sae-dir {out}")
