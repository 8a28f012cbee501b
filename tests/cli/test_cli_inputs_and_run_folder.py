"""Bad inputs that used to slip through (issue 12, item 5) and the run folder's rules seen from the command line:
each bad input ends in one ``error:`` line and a non-zero exit, before anything is computed or written."""

from __future__ import annotations

import json
import os
import socket

import pytest

from ghost_lens import constants as C
from ghost_lens.config import RunConfig, save_config
from ghost_lens.io import exclusive_lock
from ghost_lens.run_folder import RUN_LOCK
from tests.helpers.cli import RUN_SETS, assert_one_line_error, generic_rows, invoke, write_csv

FAST_SETS = [*RUN_SETS, "--set", "eval.n_repeats=1", "--set", "eval.baselines=[logprob,random_decoder]",
             "--set", "detector.calibration_cv=0"]
"""The session's tiny world with a cheap evaluation (these tests check the run folder, not the numbers)."""


def _jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ---- data ---------------------------------------------------------------------------------------------------------


def test_jsonl_rows_with_different_keys_name_the_row(tmp_path):
    rows = generic_rows()[:4]
    rows[2] = {"prompt": rows[2]["prompt"], "answer": rows[2]["answer"], "lable": 1, "group": "q1", "id": "x"}
    result = invoke("track", "--dataset", _jsonl(tmp_path / "d.jsonl", rows), "--out", tmp_path / "run")
    assert_one_line_error(result, "row 3", "lacks label", "lable", code=2)


def test_null_prompt_is_not_the_text_none(tmp_path):
    rows = generic_rows()[:4]
    rows[1]["prompt"] = None
    result = invoke("track", "--dataset", _jsonl(tmp_path / "d.jsonl", rows), "--out", tmp_path / "run")
    assert_one_line_error(result, "row 2", "prompt must be non-empty text", "None", code=2)


def test_one_class_dataset_is_rejected_before_the_capture(tmp_path):
    rows = [r | {"label": 0} for r in generic_rows()]
    result = invoke("track", "--dataset", write_csv(tmp_path / "pos.csv", rows), "--out", tmp_path / "run")
    assert_one_line_error(result, "all 40 examples are labelled 0", "both labels", code=2)
    assert not (tmp_path / "run" / "capture").exists()


# ---- config and options ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["track", "train-saes"])
def test_reversed_layer_range(command, tmp_path):
    (tmp_path / "corpus.txt").write_text("some text to train on\n")
    args = ["--out", tmp_path / "out"] + (["--dataset", tmp_path / "corpus.txt"] if command == "train-saes" else [])
    result = invoke(command, "--layers", "8-4", *args)
    assert_one_line_error(result, "--layers", "'8-4' runs backwards", "'4-8'", code=2)
    assert not (tmp_path / "out").exists()  # nothing trained, nothing claimed


@pytest.mark.parametrize("override", ["world.n_heads=0", "world.eval_every=0"])
def test_world_sizes_of_zero(override):
    key = override.split("=")[0]
    assert_one_line_error(invoke("toy", "build", "--set", override), f"{key} must be >= 1", code=2)
    assert_one_line_error(invoke("track", "--set", override), f"{key} must be >= 1", code=2)


def test_empty_value_for_a_text_field_is_not_the_text_none():
    assert_one_line_error(invoke("track", "--set", "model="), "model: needs a value", code=2)


def test_saes_eval_with_zero_samples():
    assert_one_line_error(invoke("saes", "eval", "--num-samples", "0"), "--num-samples must be >= 1", code=2)


# ---- the run folder -------------------------------------------------------------------------------------------


def test_run_folder_of_an_older_format(tmp_path, small_csv):
    out = tmp_path / "run"
    out.mkdir()
    cfg = RunConfig(dataset=str(small_csv))
    save_config(cfg, out / C.CONFIG)
    (out / C.MANIFEST).write_text(json.dumps({"ghost_lens_run": 1, "finished": "2025-01-01T00:00:00"}))
    result = invoke("track", "--dataset", small_csv, "--out", out)
    assert_one_line_error(result, "older ghost-lens run format (1;", "--force", "new --out", code=2)


def test_run_folder_in_use(tmp_path, small_csv):
    out = tmp_path / "run"
    with exclusive_lock(out / RUN_LOCK, f"run folder {out}"):
        result = invoke("track", "--dataset", small_csv, "--out", out)
    assert_one_line_error(result, f"run folder {out} is in use by pid {os.getpid()} on host {socket.gethostname()}",
                          code=2)


def test_forced_run_with_new_layers_interrupted_before_capture_is_not_reused(tmp_path, monkeypatch):
    """The issue's scenario, in a folder whose name is rich markup (printed literally, not eaten)."""
    import ghost_lens.pipeline

    out = tmp_path / "[bold]run"
    first = invoke("--threads", "1", "track", "--out", out, "--layers", "0-1", *FAST_SETS)
    assert first.exit_code == 0, first.output
    assert f"run folder: {out}" in first.output.replace("\n", "")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(ghost_lens.pipeline, "load_model_and_bundle", interrupted)
        forced = invoke("--threads", "1", "track", "--out", out, "--layers", "1", "--force", *FAST_SETS)
    assert forced.exit_code == 130, forced.output
    assert json.loads((out / "capture" / C.CAPTURE_META).read_text())["layers"] == [0, 1]  # not deleted

    rerun = invoke("--threads", "1", "track", "--out", out, "--layers", "1", *FAST_SETS)
    assert rerun.exit_code == 0, rerun.output
    assert json.loads((out / C.MANIFEST).read_text())["capture_reused"] is False
    assert json.loads((out / "capture" / C.CAPTURE_META).read_text())["layers"] == [1]
    assert [p.name for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []


def test_threads_fit_the_evaluation_in_processes_with_the_same_numbers(tmp_path):
    """``--threads 2`` on the saved capture: the evaluation's folds in two processes (and the tracker's batches,
    for the random-decoder control and the feature groups, two at a time in threads), the same metrics file."""
    out = tmp_path / "run"
    sets = [*RUN_SETS, "--set", "eval.n_repeats=1", "--set", "eval.baselines=[logprob,probe,shuffled,random_decoder]"]
    first = invoke("--threads", "1", "track", "--out", out, "--layers", "0-1", *sets)
    assert first.exit_code == 0, first.output
    one = (out / C.DETECTION_METRICS).read_text()
    second = invoke("--threads", "2", "track", "--out", out, "--layers", "0-1", *sets)
    assert second.exit_code == 0, second.output
    assert json.loads((out / C.MANIFEST).read_text())["capture_reused"] is True
    assert (out / C.DETECTION_METRICS).read_text() == one


# ---- options ------------------------------------------------------------------------------------------------------


def test_threads_limits_numpy_blas_as_well_as_torch():
    """``--threads N`` caps numpy / scikit-learn's BLAS and OpenMP pools too (tracking and the evaluation run
    there), not only torch's; checked in a fresh interpreter, since the pools are process-wide."""
    import subprocess
    import sys

    code = ("import threadpoolctl, torch\nfrom ghost_lens_cli.main import app\n"
            "app(['--threads', '1', 'saes', '--help'], standalone_mode=False)\n"
            "pools = threadpoolctl.threadpool_info()\n"
            "print('POOLS', len(pools), max(p['num_threads'] for p in pools), torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}).stdout
    n_pools, most, torch_threads = map(int, out.split("POOLS", 1)[1].split())
    assert n_pools >= 1 and most == 1 and torch_threads == 1
