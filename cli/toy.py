"""``ghost-lens toy``: build and summarise the embedded toy-facts world."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from ghost_lens_cli._common import ConfigOpt, SetOpt, console, handle_errors, load_run_config

app = typer.Typer(help="The toy-facts world: a tiny model trained here on a generated knowledge base.",
                  no_args_is_help=True)


def _info_table(info: dict) -> None:
    from rich.table import Table

    table = Table(title="toy-facts world", show_header=True, header_style="bold")
    table.add_column("property")
    table.add_column("value", justify="right")
    for key, value in info.items():
        if key == "fingerprint_parts":  # one hash per file: for comparing two machines' info.json, not for reading
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
        table.add_row(key, escape(_fmt(value)))
    console.print(table)


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


@app.command("build")
@handle_errors
def build(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if a cached world exists.")] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Build (or load from the cache) the toy-facts world, then summarise it."""
    from ghost_lens.toy.world import get_world

    cfg = load_run_config(config, set_)
    world = get_world(cfg.world, force=force, progress=True)
    console.print(f"world cached in [bold]{escape(str(world.path))}[/]", soft_wrap=True)
    _info_table(world.info())


@app.command("info")
@handle_errors
def info(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Summarise the toy-facts world (builds it first if it is not cached)."""
    from ghost_lens.toy.world import get_world

    cfg = load_run_config(config, set_)
    world = get_world(cfg.world, progress=True)
    console.print(f"world cached in [bold]{escape(str(world.path))}[/]", soft_wrap=True)
    _info_table(world.info())
