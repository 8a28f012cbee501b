"""``ghost-lens tune``: tracker settings compared on a run's saved capture (the model is not run again)."""

from __future__ import annotations

from typing import Annotated

import typer

from ghost_lens_cli._common import RunOpt, console, handle_errors

SHORT = {"top_k_features": "k", "association_threshold": "assoc", "semantic_weight": "sem",
         "activation_weight": "act", "position_weight": "pos", "birth_threshold": "birth",
         "death_threshold": "death"}


def _changes(overrides: dict) -> str:
    """``{"tracker.top_k_features": 30, ...}`` -> ``"k=30 assoc=0.6"``."""
    parts = []
    for key, v in overrides.items():
        name = key.split(".", 1)[-1]
        parts.append(f"{SHORT.get(name, name)}={v:g}" if isinstance(v, float) else f"{SHORT.get(name, name)}={v}")
    return " ".join(parts) or "(the run's config)"


def results_table(result):
    """Points by AUROC with its interval, average track length, and the verdicts against the run's own config and
    against the best baseline."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from ghost_lens.tune import CAVEAT

    names = {p.baseline for p in result.points}
    baseline = names.pop() if len(names) == 1 and None not in names else "best baseline"
    conf = result.protocol["confidence"]
    table = Table(title=f"tune: {escape(str(result.run))} ({len(result.points)} points, {result.n_bootstrap} bootstrap resamples)",
                  caption=f"[yellow]caveat:[/] {CAVEAT}", caption_justify="left", title_justify="left",
                  header_style="bold", box=box.SIMPLE_HEAD)
    for col, just in (("point (changes)", "left"), (f"AUROC [{conf:.0%} CI]", "right"), ("len", "right"),
                      ("vs run", "left"), (f"vs {baseline}", "left")):
        table.add_column(col, justify=just, no_wrap=col != "point (changes)")
    for rank, p in enumerate(result.points, 1):
        a = p.auroc
        name = escape(p.name) + (" *" if p.same_as_run else "")
        table.add_row(f"{name}\n[dim]{escape(_changes(p.overrides))}[/]",
                      f"{a['value']:.3f} [{a['ci_low']:.3f}, {a['ci_high']:.3f}]", f"{p.avg_track_length:.2f}",
                      p.verdict_vs_run or "-", p.verdict, style="bold" if rank == 1 else None)
    return table


def tune(
    run: RunOpt = None,
    grid: Annotated[str | None, typer.Option("--grid", help="YAML list of override dicts on tracker.* / "
                                             "detector.* (default: the seed research's four settings).")] = None,
    optuna: Annotated[int, typer.Option("--optuna", help="Also run N Optuna TPE trials (pip install "
                                        "'ghost-lens[tune]').", min=0)] = 0,
    storage: Annotated[str | None, typer.Option("--storage", help="Optuna RDB URL shared by several workers "
                                                "(sqlite:///study.db on one host, postgresql://user:pw@host/db "
                                                "for many); start the same command in each worker.")] = None,
    study_name: Annotated[str | None, typer.Option("--study-name", help="Study in --storage (default: from the "
                                                   "run folder's name).")] = None,
    n_bootstrap: Annotated[int | None, typer.Option("--n-bootstrap", help="Bootstrap resamples per point "
                                                    "(default: the run's).")] = None,
    out: Annotated[str | None, typer.Option("--out", "-o", help="Results JSON (default RUN/tune_results.json).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing results file.")] = False,
) -> None:
    """Compare tracker settings on a run's saved capture and folds, sorted by the detector's AUROC."""
    _tune(run, grid, optuna, storage, study_name, n_bootstrap, out, force)


@handle_errors
def _tune(run, grid, optuna, storage, study_name, n_bootstrap, out, force) -> None:
    from rich.markup import escape

    from ghost_lens.run_folder import existing_run_dir
    from ghost_lens.tune import tune_to_file

    run_dir = existing_run_dir(run)
    result, path = tune_to_file(run_dir, grid, out, force=force, n_bootstrap=n_bootstrap, optuna_trials=optuna,
                                storage=storage, study_name=study_name, progress=True)
    console.print(results_table(result))
    if any(p.same_as_run for p in result.points):
        console.print("[dim]* = the run's own tracker and detector config; len = average track length (layers); "
                      "vs run / vs baseline: paired group bootstrap of the AUROC difference[/]")
    console.print(f"results: [bold]{escape(str(path))}[/]", soft_wrap=True)
