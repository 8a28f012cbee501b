"""The one-call library entries of ``interpret`` and ``tune`` (interpret_to_file, tune_to_file): the output file
and the grid are checked before the run folder is read, so a refused ``--out`` costs nothing."""

from __future__ import annotations

import pytest

from ghost_lens import constants as C
from ghost_lens.errors import ConfigError, RunFolderError
from ghost_lens.interpret import interpret_to_file
from ghost_lens.tune import tune_to_file


@pytest.fixture
def not_a_run(tmp_path):
    """A folder holding no run: reading it as one fails (no capture, no config)."""
    run = tmp_path / "run"
    run.mkdir()
    return run


def test_interpret_refuses_an_existing_output_before_reading_the_run(not_a_run, tmp_path):
    out = tmp_path / "layer.json"
    out.write_text("{}")
    with pytest.raises(RunFolderError, match="exists: pass --force to overwrite it"):
        interpret_to_file(not_a_run, 0, out)
    with pytest.raises(RunFolderError, match="no capture in"):  # --force: the run is read, and fails
        interpret_to_file(not_a_run, 0, out, force=True)
    assert out.read_text() == "{}"


def test_tune_checks_its_output_and_grid_before_reading_the_run(not_a_run, tmp_path):
    out = tmp_path / "tune.json"
    out.write_text("{}")
    with pytest.raises(RunFolderError, match="exists: pass --force to overwrite it"):
        tune_to_file(not_a_run, None, out)
    with pytest.raises(RunFolderError, match="one of the run's own files"):
        tune_to_file(not_a_run, None, not_a_run / C.CONFIG, force=True)
    grid = tmp_path / "grid.yaml"
    grid.write_text("- name: twice\n  tracker.top_k_features: 10\n- name: twice\n  tracker.top_k_features: 20\n")
    with pytest.raises(ConfigError, match="two grid points are named 'twice'"):
        tune_to_file(not_a_run, grid, out, force=True)
    with pytest.raises(RunFolderError, match="not a ghost-lens run folder"):  # a good grid: the run is read
        tune_to_file(not_a_run, None, out, force=True)
    assert out.read_text() == "{}"
