"""Shared fixtures of the CLI tier: a private toy-world cache, one tiny `ghost-lens track` run per session, helpers.

Every CLI test runs with ``GHOST_LENS_CACHE`` pointing at a session temp folder (never the user's cache), and the
tiny toy world (``tests.helpers.toy.TINY_WORLD``) is passed as ``--set world.*=...`` overrides, so the world builds
once in a few seconds and the session's one ``track`` run reuses it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ghost_lens.constants import CACHE_ENV
from tests.helpers.cli import RUN_SETS, generic_rows, invoke, write_csv


@pytest.fixture(scope="session")
def cli_cache(tmp_path_factory) -> Path:
    """The session's ghost-lens cache folder (the tiny toy world is built into it on first use)."""
    return tmp_path_factory.mktemp("ghost_lens_cache")


@pytest.fixture(autouse=True)
def _private_cache(cli_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(cli_cache))


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "capitals.csv", generic_rows())


@pytest.fixture(scope="session")
def tiny_run(cli_cache: Path, tmp_path_factory) -> Path:
    """One `ghost-lens track` on the tiny toy world (built here on first use), shared by the session.

    Tests must not write into it except through the commands under test, which only add their own files."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(cli_cache))
        result = invoke("track", "--out", out, *RUN_SETS)
    assert result.exit_code == 0, result.output
    return out
