"""``ghost-lens interpret``: what one layer's SAE features fire on, from a run's capture (no model)."""

from __future__ import annotations

from typing import Annotated

import typer

from ghost_lens_cli._common import RunOpt, console, handle_errors, parse_int_list


def parse_features(spec: str | None) -> list[int] | None:
    """``"0,5,7-9"`` -> ``[0, 5, 7, 8, 9]``."""
    return parse_int_list(spec, "--features", "'0,5,12' or '10-20'", sort=False)


def features_table(result: dict, rows: int):
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    feats = [f for f in result["features"] if not f["dead"]][:rows]
    base = result["hallucinated_rate"]
    title = (f"layer {result['layer']}: {result['n_active_features']} active features"
             + (f" of {result['d_sae']} ({result['n_dead_features']} never in the kept top-{result['top_k_kept']})"
                if result["d_sae"] is not None else "")
             + f"; {len(feats)} most active shown")
    table = Table(title=title, title_justify="left", header_style="bold",
                  caption=("tokens / examples: where it is among the kept top-k; max: largest activation; halluc.: "
                           f"share of hallucinated examples among those it fires in (base rate {base:.0%})"
                           if base is not None else None), caption_justify="left", box=box.SIMPLE_HEAD)
    for col in ("feature", "tokens", "examples", "max", "halluc.", "fires on", "top example"):
        table.add_column(col, justify="left" if col in ("fires on", "top example") else "right",
                         no_wrap=col not in ("fires on", "top example"), ratio=2 if col == "top example" else None)
    for f in feats:
        common = " ".join(repr(t["token"]) for t in f["common_tokens"][:3])
        top = f["top_examples"][0]["context"] if f["top_examples"] else ""
        share = f["hallucinated_share"]
        table.add_row(str(f["feature"]), str(f["active_tokens"]), str(f["active_examples"]),
                      f"{f['max_activation']:.2f}", "-" if share is None else f"{share:.0%}", escape(common),
                      escape(top))
    return table


def interpret(
    layer: Annotated[int, typer.Option("--layer", "-l", help="The model layer to read (one of the run's layers).")],
    run: RunOpt = None,
    top: Annotated[int, typer.Option("--top", help="Top-activating examples kept per feature.", min=1)] = 10,
    features: Annotated[str | None, typer.Option("--features", help="Only these features, e.g. '0,5,12' "
                                                 "(default: every active feature).")] = None,
    window: Annotated[int, typer.Option("--window", help="Context tokens on each side.", min=0)] = 5,
    rows: Annotated[int, typer.Option("--rows", help="Features shown in the table.", min=1)] = 15,
    out: Annotated[str | None, typer.Option("--out", "-o", help="JSON path (default RUN/interpret/layer_L.json).")]
    = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing JSON file.")] = False,
) -> None:
    """Top-activating examples, common tokens, activation stats and dead features of one layer's SAE."""
    _interpret(layer, run, top, features, window, rows, out, force)


@handle_errors
def _interpret(layer, run, top, features, window, rows, out, force) -> None:
    from rich.markup import escape

    from ghost_lens.interpret import interpret_to_file
    from ghost_lens.run_folder import existing_run_dir

    run_dir = existing_run_dir(run)
    feature_ids = parse_features(features)
    result, path = interpret_to_file(run_dir, layer, out, force=force, top=top, features=feature_ids, window=window)
    console.print(features_table(result, rows))
    console.print(f"per-feature JSON ({len(result['features'])} features): [bold]{escape(str(path))}[/]",
                  soft_wrap=True)
