"""The ``ghost-lens`` command: a thin Typer app; each command parses, loads a config, calls one library function.

Heavy imports (torch, transformer_lens, sae_lens) happen inside commands so ``ghost-lens --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ghost_lens._version import __version__
from ghost_lens_cli import explain, interpret, saes, toy, track, tune
from ghost_lens_cli._common import setup_logging, state

app = typer.Typer(
    name="ghost-lens",
    help="Detect hallucinations by tracking SAE features across layers (TransformerLens + SAELens).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(toy.app, name="toy")
app.add_typer(saes.app, name="saes")
app.command("train-saes")(saes.train_saes_cmd)
app.command("track")(track.track)
app.command("tune")(tune.tune)
app.command("explain")(explain.explain)
app.command("interpret")(interpret.interpret)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ghost-lens {__version__}")
        raise typer.Exit()


@app.callback()
def callback(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", min=1, help="CPU threads for torch and for numpy/scikit-learn's BLAS and OpenMP "
                     "pools (1 is fastest for small models on a busy machine); `track` also fits its evaluation's "
                     "folds in this many processes and tracks this many batches at once, in threads (the same "
                     "numbers)."),
    ] = None,
) -> None:
    state.debug = debug
    state.threads = threads
    setup_logging(verbose)
    if threads is not None:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(threads)
        # numpy's BLAS (tracking's matmuls, the evaluation's fits) would otherwise start one thread per core
        # whatever torch was told: on a busy 2-core machine that oversubscription made tracking 3-10x slower
        threadpool_limits(limits=threads)  # process-wide, for the rest of the command


def main() -> None:
    app()


if __name__ == "__main__":
    main()
