"""End to end: `ghost-lens track` with no model arguments on the embedded toy-facts world (built on first use).

This is the README's main command; CI runs it with GHOST_LENS_CACHE inside the clone."""

import json

import pytest
from typer.testing import CliRunner

from ghost_lens import constants as C
from ghost_lens_cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "toy"
    result = runner.invoke(app, ["track", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_bare_track_writes_a_complete_run_folder(toy_run):
    out, output = toy_run
    for name in (C.CONFIG, C.MANIFEST, C.REPORT, C.TRACKING_SUMMARY, C.DETECTION_METRICS, C.PREDICTIONS,
                 C.ROC_PLOT, C.RELIABILITY_PLOT, C.TRACK_PLOT, C.TRACK_METRICS, C.DETECTOR_ARRAYS, C.DETECTOR_META):
        assert (out / name).is_file(), name
    assert (out / C.CAPTURE_DIR / C.CAPTURE_SHARDS_DIR / "00000" / C.CAPTURE_TENSORS).is_file()
    assert (out / C.GRAPHS_DIR / C.GRAPHS_FILE).is_file()
    manifest = json.loads((out / C.MANIFEST).read_text())
    assert {"versions", "dataset_hash", "timings_s", "seed", "config"} <= manifest.keys()
    assert manifest["versions"]["sae-lens"] != "not installed"
    metrics = json.loads((out / C.DETECTION_METRICS).read_text())
    # every baseline of the issue is in the same report, on the same folds
    assert {"length", "text", "logprob", "entropy", "probe", "random_decoder", "shuffled"} <= metrics["baselines"].keys()
    assert metrics["protocol"]["splitter"] == "StratifiedGroupKFold"
    report = (out / C.REPORT).read_text()
    assert "AUROC" in report and "95% CI" in report and metrics["conclusion"]["statement"] in report
    assert "detector" in output and "shuffled" in output  # the rich summary table


def test_rerun_reuses_capture_and_other_config_is_refused(toy_run):
    out, _ = toy_run
    stamp = (out / C.CAPTURE_DIR / C.CAPTURE_SHARDS_DIR / "00000" / C.CAPTURE_TENSORS).stat().st_mtime_ns
    again = runner.invoke(app, ["track", "--out", str(out), "--set", "eval.n_bootstrap=50"])
    assert again.exit_code == 2 and "another config" in again.output and "eval.n_bootstrap" in again.output
    assert "Traceback" not in again.output
    same = runner.invoke(app, ["track", "--out", str(out)])
    assert same.exit_code == 0, same.output
    assert json.loads((out / C.MANIFEST).read_text())["capture_reused"] is True
    assert (out / C.CAPTURE_DIR / C.CAPTURE_SHARDS_DIR / "00000" / C.CAPTURE_TENSORS).stat().st_mtime_ns == stamp
