"""What every command shares: the console, the debug switch, one-line errors, config loading."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from ghost_lens.run_folder import DEFAULT_RUN_DIR

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


class _State:
    debug: bool = False
    threads: int | None = None
    """``--threads``: also the evaluation's worker processes and the tracker's threads (``track``)."""


state = _State()

ConfigOpt = Annotated[
    str | None,
    typer.Option("--config", "-c", help="YAML config path, or a packaged config name (default, toy, gpt2-medium)."),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config field, e.g. --set tracker.top_k_features=100 (repeatable)."),
]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="toy-facts or a TransformerLens model name.")]
ReleaseOpt = Annotated[
    str | None, typer.Option("--sae-release", help="SAELens release, Hugging Face repo id, or toy-facts-res.")
]
SaeDirOpt = Annotated[str | None, typer.Option("--sae-dir", help="Folder of SAELens-saved SAEs, one per layer.")]
LayersOpt = Annotated[str | None, typer.Option("--layers", help="Layers, e.g. '0,4,8' or '0-11'.")]
RunOpt = Annotated[
    str | None,
    typer.Option("--run", "-r", help=f"Run folder written by `ghost-lens track` (default {DEFAULT_RUN_DIR})."),
]


def setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )


def handle_errors(fn: F) -> F:
    """Turn user errors into one red line and a non-zero exit; the traceback only under ``--debug``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ghost_lens.errors import GhostLensError

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except GhostLensError as exc:
            if state.debug:
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except Exception as exc:  # an unexpected failure: still one line unless --debug
            if state.debug:
                raise
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            err_console.print(
                f"[bold red]error:[/] {type(exc).__name__}: {escape(msg)} (rerun with --debug for the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def load_run_config(config: str | None, overrides: list[str] | None, **fields: Any):
    """The options as a run config (:func:`ghost_lens.config.run_config_from_options`)."""
    from ghost_lens.config import run_config_from_options

    return run_config_from_options(config, overrides, **fields)


def parse_int_list(
    spec: str | None, option: str, example: str = "'0,4,8' or '0-11'", *, sort: bool = True
) -> list[int] | None:
    """``"0,2,5-7"`` -> ``[0, 2, 5, 6, 7]`` (``sort``: sorted and unique, else as given); ``None`` / empty / ``all``
    -> ``None``."""
    from ghost_lens.errors import ConfigError

    if spec is None or spec.strip() in ("", "all"):
        return None
    out: list[int] = []
    try:
        for part in spec.replace(" ", "").split(","):
            if "-" in part[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise ConfigError(f"{option}: the range {part!r} runs backwards; write '{hi}-{lo}'")
                out.extend(range(lo, hi + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ConfigError(f"{option}: cannot parse {spec!r}; use e.g. {example}") from None
    return sorted(set(out)) if sort else out


def parse_layers(spec: str | None) -> list[int] | None:
    """``"0,2,5-7"`` -> ``[0, 2, 5, 6, 7]``."""
    return parse_int_list(spec, "--layers")
