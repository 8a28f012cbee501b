"""The command surface: help, version, every subcommand's help, and bad input -> one line, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer.main

from ghost_lens import constants as C
from ghost_lens_cli.main import app
from tests.helpers.cli import RUN_SETS, TINY_SETS, assert_one_line_error, invoke, write_csv

COMMANDS = ["track", "tune", "explain", "interpret", "train-saes", "toy build", "toy info", "saes list", "saes eval"]


def _leaf_commands(group, prefix: str = "") -> list[str]:
    out = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            out += _leaf_commands(cmd, f"{prefix}{name} ")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_every_command_is_covered_here():
    assert sorted(_leaf_commands(typer.main.get_command(app))) == sorted(COMMANDS)


def test_help_is_fast_and_imports_nothing_heavy():
    code = (
        "import sys; from typer.testing import CliRunner; from ghost_lens_cli.main import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = [m for m in ('torch', 'transformer_lens', 'sae_lens', 'sklearn', 'matplotlib') if m in sys.modules]; "
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("track", "tune", "explain", "interpret", "train-saes", "toy", "saes"):
        assert name in result.output


def test_version():
    from ghost_lens import __version__

    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"ghost-lens {__version__}"


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command):
    result = invoke(*command.split(), "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_no_args_shows_usage():
    result = invoke()
    assert "Usage" in result.output


# ---- bad input: the data and the config ------------------------------------------------------------------------


def test_dataset_path_missing(tmp_path):
    result = invoke("track", "--dataset", tmp_path / "nope.csv", "--out", tmp_path / "run")
    assert_one_line_error(result, "dataset file not found", "nope.csv", code=2)


def test_csv_without_needed_columns(tmp_path):
    path = write_csv(tmp_path / "qa.csv", [{"question": "q", "response": "a"}])
    result = invoke("track", "--dataset", path, "--out", tmp_path / "run")
    assert_one_line_error(result, "missing column(s) prompt, answer, label", "question, response", code=2)


def test_empty_dataset(tmp_path):
    path = write_csv(tmp_path / "empty.csv", [], fieldnames=["prompt", "answer", "label"])
    result = invoke("track", "--dataset", path, "--out", tmp_path / "run")
    assert_one_line_error(result, "empty", code=2)


def test_bad_label_in_csv(tmp_path):
    path = write_csv(tmp_path / "bad.csv", [{"prompt": "p", "answer": "a", "label": "maybe"}])
    result = invoke("track", "--dataset", path, "--out", tmp_path / "run")
    assert_one_line_error(result, "label", code=2)


def test_unknown_dataset_name(tmp_path):
    result = invoke("track", "--dataset", "not-a-dataset", "--out", tmp_path / "run")
    assert_one_line_error(result, "unknown dataset 'not-a-dataset'", code=2)


def test_yaml_with_unknown_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tracker:\n  top_kk: 3\n")
    result = invoke("track", "--config", cfg, "--out", tmp_path / "run")
    assert_one_line_error(result, "unknown config key 'tracker.top_kk'", "top_k_features", code=2)
    assert not (tmp_path / "run").exists()  # nothing claimed before the config is valid


def test_malformed_yaml_and_missing_config(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tracker: [1, 2\n")
    assert_one_line_error(invoke("track", "--config", cfg), "malformed YAML", code=2)
    assert_one_line_error(invoke("track", "--config", tmp_path / "none.yaml"), "config file not found", code=2)
    assert_one_line_error(invoke("track", "--config", "no-such-packaged"), "no config file or packaged config",
                          code=2)


def test_set_unknown_key_and_bad_value(tmp_path):
    assert_one_line_error(invoke("track", "--set", "tracker.nope=1"), "unknown config key 'tracker.nope'", code=2)
    assert_one_line_error(invoke("track", "--set", "tracker.top_k_features"), "--set expects key=value", code=2)
    assert_one_line_error(invoke("track", "--set", "tracker.association_threshold=2"),
                          "tracker.association_threshold must be in (0, 1]", code=2)
    assert_one_line_error(invoke("track", "--set", "tracker.top_k_features=many"), "expected an integer", code=2)
    assert_one_line_error(invoke("toy", "build", "--set", "world.n_entities=3"), "world.n_entities", code=2)


def test_bad_layers_spec(tmp_path):
    assert_one_line_error(invoke("track", "--layers", "zero-two", "--out", tmp_path / "run"), "--layers", code=2)


# ---- bad input: models and SAEs (the offline hub: nothing may touch the network) -------------------------------


def test_unknown_model_name(offline_hub, small_csv, tmp_path):
    result = invoke("track", "--model", "not-a-model", "--dataset", small_csv, "--out", tmp_path / "run")
    assert_one_line_error(result, "unknown model 'not-a-model'", code=2)


def test_failed_run_does_not_block_the_corrected_command(offline_hub, small_csv, tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(invoke("track", "--model", "not-a-model", "--dataset", small_csv, "--out", out), code=2)
    # the folder holds no capture: the corrected command may take it over (it then fails on the release, later)
    result = invoke("track", "--model", "gpt2", "--sae-release", "not-a-release", "--dataset", small_csv,
                    "--out", out)
    assert "another config" not in result.output


def test_unknown_release(offline_hub, small_csv, tmp_path):
    result = invoke("track", "--model", "gpt2", "--sae-release", "not-a-release", "--dataset", small_csv,
                    "--out", tmp_path / "run")
    assert_one_line_error(result, "not-a-release", code=2)


def test_saes_eval_unknown_model(offline_hub):
    assert_one_line_error(invoke("saes", "eval", "--model", "not-a-model"), "unknown model", code=2)


def test_saes_list():
    result = invoke("saes", "list", "--model", "gpt2")
    assert result.exit_code == 0, result.output
    assert "gpt2-small-res-jb" in result.output and "jbloom/GPT2-Small-SAEs-Reformatted" in result.output
    assert "gemma" not in result.output  # filtered by model
    assert "besides these releases" in result.output  # the train-your-own hint follows the table


def test_saes_list_without_release_prints_the_train_your_own_hint():
    result = invoke("saes", "list", "--model", "gpt2-medium")
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "no SAELens release covers 'gpt2-medium'" in flat and "ghost-lens train-saes" in flat
    assert "--sae-dir" in flat


def test_train_saes_needs_dataset_and_out(tmp_path):
    assert_one_line_error(invoke("train-saes", "--model", "gpt2"), "--dataset is required", code=2)
    assert_one_line_error(invoke("train-saes", "--dataset", tmp_path / "c.txt"), "--out is required", code=2)
    assert_one_line_error(invoke("train-saes", "--dataset", "x.txt", "--out", tmp_path, "--architecture", "nope"),
                          "--architecture", code=2)


def test_debug_flag_shows_the_traceback(tmp_path):
    result = invoke("--debug", "track", "--set", "tracker.nope=1")
    assert result.exit_code != 0
    from ghost_lens.errors import ConfigError

    assert isinstance(result.exception, ConfigError)


# ---- the toy world and the run folder rules (the session's tiny run) -------------------------------------------


def test_toy_info(tiny_run):
    result = invoke("toy", "info", *TINY_SETS)
    assert result.exit_code == 0, result.output
    assert "world cached in" in result.output and "toy-facts world" in result.output
    assert "accuracy" in result.output


def test_run_folder_with_another_config_is_not_overwritten(tiny_run):
    before = {p.name: p.read_bytes() for p in tiny_run.iterdir() if p.is_file()}
    result = invoke("track", "--out", tiny_run, *RUN_SETS, "--set", "tracker.top_k_features=20")
    assert_one_line_error(result, "another config", "tracker.top_k_features", "ghost-lens tune", code=2)
    after = {p.name: p.read_bytes() for p in tiny_run.iterdir() if p.is_file()}
    assert after == before


def test_non_run_folder_is_refused_even_with_force(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    result = invoke("track", "--out", tmp_path, "--force")
    assert_one_line_error(result, "not a ghost-lens run folder", code=2)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_tiny_run_is_complete(tiny_run):
    for name in (C.CONFIG, C.MANIFEST, C.REPORT, C.DETECTION_METRICS, C.TRACK_METRICS, C.DETECTOR_ARRAYS, C.DETECTOR_META):
        assert (tiny_run / name).is_file(), name
