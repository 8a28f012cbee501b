"""``ghost-lens explain``: one prompt and answer scored by a run's detector, with the tracks that drive the score."""

from __future__ import annotations

from typing import Annotated

import typer

from ghost_lens_cli._common import RunOpt, console, handle_errors


def _pct(p: float) -> str:
    n = round(p)
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _comparison_table(title: str, rows: dict):
    from rich.table import Table

    signs = [f"{'higher' if r['detector_sign'] > 0 else 'lower'} {name}" for name, r in rows.items()
             if r.get("detector_sign") is not None]
    caption = f"the run's detector scores {' and '.join(signs)} as more hallucinated" if signs else None
    table = Table(title=title, title_justify="left", header_style="bold", caption=caption, caption_justify="left")
    for col in ("signal", "value", "run pctl", "run median", "mean faithful", "mean halluc."):
        table.add_column(col, justify="left" if col == "signal" else "right", no_wrap=col == "signal")
    for name, r in rows.items():
        table.add_row(name, _fmt(r["value"]), _pct(r["run_percentile"]), _fmt(r["run_median"]),
                      _fmt(r.get("run_mean_faithful")), _fmt(r.get("run_mean_hallucinated")))
    return table


def _tracks_table(result):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"tracks driving the score (top {len(result.tracks)} of {result.n_tracks} by activation "
                  "mass)", title_justify="left", header_style="bold")
    for col in ("track", "layers", "share", "features per layer (feature@token: activation)"):
        table.add_column(col, justify="right" if col in ("track", "share") else "left", overflow="fold")
    for t in result.tracks:
        feats = "  ->  ".join(
            f"L{n['layer']} F{n['feature']}@{escape(repr(n['token']))}{'*' if n['in_answer'] else ''}: "
            f"{n['activation']:.2f}" for n in t["nodes"])
        table.add_row(f"#{t['track']}", f"{t['layers'][0]}-{t['layers'][1]}", f"{t['share']:.0%}", feats)
    return table


def print_explanation(result) -> None:
    from rich.markup import escape

    console.print(f"[bold]{escape(repr(result.prompt))} -> {escape(repr(result.answer))}[/]  [dim](unlabeled)[/]")
    line = f"hallucination probability: [bold]{result.probability:.3f}[/]"
    if result.threshold is not None:
        line += (f" (run's decision threshold {result.threshold:.3f}: "
                 f"{'flagged as hallucinated' if result.flagged else 'not flagged'})")
    console.print(line)
    parts = ", ".join(f"{k} {v:.3f}" for k, v in result.components.items())
    console.print(f"[dim]score parts: {parts}[/]")
    if result.run_auroc:
        a = result.run_auroc
        console.print(f"[dim]the run's detector: out-of-fold AUROC {a['value']:.3f} "
                      f"[{a['ci_low']:.3f}, {a['ci_high']:.3f}][/]", highlight=False)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(_comparison_table("track metrics vs the run's examples", result.track_metrics))
    if result.output_signals:
        console.print(_comparison_table("the model's own output signals (the baselines) vs the run's examples",
                                        result.output_signals))
    console.print(_tracks_table(result))
    console.print("[dim]* = a token of the answer[/]")
    links = {(n["layer"], n["feature"]): n["neuronpedia"] for t in result.tracks for n in t["nodes"]
             if n["neuronpedia"]}
    if links:
        console.print("Neuronpedia:")
        for (layer, feat), url in links.items():
            console.print(f"  L{layer} F{feat}: {url}", highlight=False, soft_wrap=True)
    else:
        console.print("[dim]no Neuronpedia ids for these SAEs[/]")
    if result.plot is not None:
        console.print(f"track plot: [bold]{escape(str(result.plot))}[/]  (record: {escape(str(result.record))})",
                      soft_wrap=True)


def explain(
    prompt: Annotated[str, typer.Argument(help="The prompt the model reads.")],
    answer: Annotated[str, typer.Option("--answer", "-a", help="The answer to score.")],
    run: RunOpt = None,
    top: Annotated[int, typer.Option("--top", help="Tracks to show.", min=1)] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON (machine output).")] = False,
) -> None:
    """Score one prompt + answer with a run's detector and show the tracks behind the score."""
    _explain(prompt, answer, run, top, as_json)


@handle_errors
def _explain(prompt, answer, run, top, as_json) -> None:
    import contextlib
    import json
    import sys

    from ghost_lens.detect.verdicts import clean_json
    from ghost_lens.explain import explain as explain_example
    from ghost_lens.run_folder import existing_run_dir

    run_dir = existing_run_dir(run)  # --run, else the bare `ghost-lens track` run; missing: one line
    # libraries print while loading (e.g. "Moving model to device"): keep stdout clean for --json
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        result = explain_example(run_dir, prompt, answer, n_tracks=top, progress=not as_json)
    if as_json:
        typer.echo(json.dumps(clean_json(result.as_dict()), indent=1))
    else:
        print_explanation(result)
