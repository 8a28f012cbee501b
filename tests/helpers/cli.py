"""What the CLI tests share: in-process invocation, the one-line-error check, small datasets, the tiny world."""

from __future__ import annotations

import csv
from pathlib import Path

from typer.testing import CliRunner

from ghost_lens_cli.main import app
from tests.helpers.toy import TINY_WORLD

runner = CliRunner(env={"COLUMNS": "200"})  # wide: rich tables keep their cells on one line

TINY_SETS = [arg for k, v in TINY_WORLD.items() for arg in ("--set", f"world.{k}={v}")]
"""``--set world.k=v`` for every field of the tiny world (pass to any command that reads the world)."""
RUN_SETS = [*TINY_SETS, "--set", "eval.n_bootstrap=50", "--set", "capture.positions=all"]
"""The overrides of the session's tiny run (tiny world, 50 bootstrap resamples, every token kept for
``interpret``)."""


def invoke(*args: str, **kwargs):
    """Run ``ghost-lens ARGS`` in-process (stdout and stderr both end up in ``result.output``)."""
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def assert_one_line_error(result, *needles: str, code: int | None = None) -> str:
    """A non-zero exit through the CLI's error handler: exactly one ``error:`` line, no traceback; returns the
    line. ``needles`` must all appear in it."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # handled, not a crash
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write_csv(path: Path, rows: list[dict], fieldnames: list[str] | None = None) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


CAPITALS = [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Norway", "Oslo"), ("Greece", "Athens"),
            ("Ireland", "Dublin"), ("Poland", "Warsaw"), ("Czechia", "Prague"), ("Hungary", "Budapest"),
            ("Finland", "Helsinki"), ("Sweden", "Stockholm"), ("Denmark", "Copenhagen"), ("Belgium", "Brussels"),
            ("Switzerland", "Bern"), ("Bulgaria", "Sofia"), ("Latvia", "Riga"), ("Lithuania", "Vilnius")]


def generic_rows() -> list[dict]:
    """40 examples in 20 groups (one true, one false capital per country): the generic CSV layout."""
    rows = []
    for i, (country, city) in enumerate(CAPITALS):
        wrong = CAPITALS[(i + 3) % len(CAPITALS)][1]
        prompt = f"The capital of {country} is"
        rows.append({"id": f"q{i}-0", "group": f"q{i}", "prompt": prompt, "answer": city, "label": 0})
        rows.append({"id": f"q{i}-1", "group": f"q{i}", "prompt": prompt, "answer": wrong, "label": 1})
    return rows
