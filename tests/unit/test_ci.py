"""`.ci/run` runs the README's test command verbatim, and that command lints before it tests."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command_with_ruff_first():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"Install the test extras and run the tests:\s*```bash\n(.+?)\n```", readme, re.S)
    assert block, "the README's test command block"
    command = block.group(1).strip()
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
    steps = [s.strip() for s in command.split("&&")]
    assert "ruff check ." in steps and steps.index("ruff check .") < steps.index("pytest -q")
    assert steps.index("ruff check .") > next(i for i, s in enumerate(steps) if '".[test]"' in s)  # ruff installed
