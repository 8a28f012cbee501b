"""`ghost-lens tune`, `explain` and `interpret` on the session's tiny toy-world run (see conftest.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import pytest

from ghost_lens import constants as C
from tests.helpers.cli import assert_one_line_error, invoke

RUN_FILES = (C.CONFIG, C.MANIFEST, C.REPORT, C.DETECTION_METRICS, C.PREDICTIONS, C.TRACK_METRICS,
             C.TRACKING_SUMMARY, C.DETECTOR_ARRAYS, C.DETECTOR_META)


def _digest(run) -> dict[str, str]:
    """Hashes of the run's own files and its capture: what tune / explain / interpret must never change."""
    paths = [run / n for n in RUN_FILES] + sorted(p for p in (run / "capture").rglob("*") if p.is_file())
    return {p.relative_to(run).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


@pytest.fixture
def run(tiny_run, tmp_path):
    """A private copy of the session's run, so tests that add files stay independent."""
    return shutil.copytree(tiny_run, tmp_path / "run")


def _meta(run) -> dict:
    """The capture's metadata (a sharded capture's per-example lists merged from its shards)."""
    from ghost_lens.capture.shards import CaptureShards, is_sharded

    if is_sharded(run / "capture"):
        return CaptureShards.open(run / "capture").meta
    return json.loads((run / "capture" / C.CAPTURE_META).read_text())


# ---- tune ----------------------------------------------------------------------------------------------------------


def test_tune_default_grid(run):
    before = _digest(run)
    result = invoke("tune", "--run", run)
    assert result.exit_code == 0, result.output
    assert _digest(run) == before  # the run's own results untouched
    data = json.loads((run / C.TUNE_RESULTS).read_text())
    names = [p["name"] for p in data["points"]]
    assert sorted(names) == ["baseline", "high_precision", "high_recall", "semantic_lean"]
    aurocs = [p["auroc"]["value"] for p in data["points"]]
    assert aurocs == sorted(aurocs, reverse=True) and data["best"] == names[0]
    assert "optimistic" in data["caveat"] and "optimistic" in result.output
    run_metrics = json.loads((run / C.DETECTION_METRICS).read_text())
    assert data["protocol"]["n_bootstrap"] == 50 and data["protocol"]["n_folds"] == 5
    assert data["protocol"]["baselines"] == [run_metrics["conclusion"]["best_baseline"]]
    # the seed baseline is the run's own config: same folds, same resamples -> the run's AUROC and interval
    base = next(p for p in data["points"] if p["name"] == "baseline")
    assert base["same_as_run"] and base["auroc"] == pytest.approx(run_metrics["detector"]["auroc"])
    for p in data["points"]:
        assert p["verdict"] in ("detector above", "baseline above", "not separable")
        assert p["same_as_run"] or p["verdict_vs_run"] in ("above run", "below run", "not separable")
    assert "semantic_lean" in result.output and "AUROC" in result.output


def test_tune_never_overwrites_results_without_force(run, tmp_path):
    (run / C.TUNE_RESULTS).write_text("{}")
    assert_one_line_error(invoke("tune", "--run", run), "exists", "--force", code=2)
    assert (run / C.TUNE_RESULTS).read_text() == "{}"
    assert_one_line_error(invoke("tune", "--run", run, "--out", run / C.DETECTION_METRICS, "--force"),
                          "run's own files", code=2)
    out = tmp_path / "elsewhere.json"
    result = invoke("tune", "--run", run, "--n-bootstrap", "20", "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["protocol"]["n_bootstrap"] == 20
    result = invoke("tune", "--run", run, "--n-bootstrap", "20", "--force")
    assert result.exit_code == 0, result.output
    assert len(json.loads((run / C.TUNE_RESULTS).read_text())["points"]) == 4


def test_tune_grid_from_yaml(run, tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "- name: strict\n  tracker.association_threshold: 0.7\n"
        "- name: loose\n  tracker: {association_threshold: 0.3, top_k_features: 20}\n"
        "- detector.entropy_weight: 1.0\n  detector.churn_weight: 0\n  detector.ml_weight: 0\n"
    )
    result = invoke("tune", "--run", run, "--grid", grid, "--n-bootstrap", "20")
    assert result.exit_code == 0, result.output
    points = {p["name"]: p for p in json.loads((run / C.TUNE_RESULTS).read_text())["points"]}
    # no point equals the run's config: it is added as the reference every point is compared with
    assert set(points) == {"strict", "loose", "point_3", "run"}
    assert points["run"]["same_as_run"] and points["run"]["source"] == "run"
    assert points["loose"]["config"]["tracker"]["top_k_features"] == 20
    assert points["point_3"]["config"]["detector"]["ml_weight"] == 0


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("- tracker.top_kk: 3\n", ["unknown config key 'tracker.top_kk'", "top_k_features"]),
        ("- name: cap\n  capture.top_k: 3\n", ["'cap'", "capture.top_k", "tracker.* or detector.*"]),
        ("- tracker.association_threshold: 2\n", ["association_threshold must be in (0, 1]"]),
        ("- tracker.top_k_features: lots\n", ["expected an integer"]),
        ("[]\n", ["non-empty list"]),
        ("- 3\n", ["not a mapping"]),
        ("- tracker: [1\n", ["malformed YAML"]),
    ],
)
def test_tune_bad_grid(tiny_run, tmp_path, text, needles):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    assert_one_line_error(invoke("tune", "--run", tiny_run, "--grid", grid), *needles, code=2)
    assert not (tiny_run / C.TUNE_RESULTS).exists()


def test_tune_bad_inputs(tiny_run, tmp_path):
    assert_one_line_error(invoke("tune", "--run", tmp_path / "none"), "no run folder", "ghost-lens track", code=2)
    assert_one_line_error(invoke("tune", "--run", tiny_run, "--grid", tmp_path / "none.yaml"), "grid file not found",
                          code=2)
    assert_one_line_error(invoke("tune", "--run", tiny_run, "--n-bootstrap", "3"), "n_bootstrap", code=2)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(invoke("tune", "--run", empty), "not a ghost-lens run folder", code=2)


def test_tune_optuna_missing_names_the_extra(tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    result = invoke("tune", "--run", tiny_run, "--optuna", "2")
    assert_one_line_error(result, "pip install 'ghost-lens[tune]'", code=2)
    assert not (tiny_run / C.TUNE_RESULTS).exists()


def test_tune_optuna_trials_join_the_table(run):
    pytest.importorskip("optuna")
    result = invoke("tune", "--run", run, "--optuna", "2", "--n-bootstrap", "20")
    assert result.exit_code == 0, result.output
    points = json.loads((run / C.TUNE_RESULTS).read_text())["points"]
    trials = [p for p in points if p["source"] == "optuna"]
    assert [t["name"] for t in sorted(trials, key=lambda t: t["name"])] == ["optuna_000", "optuna_001"]
    assert trials[0]["overrides"].keys() >= {"tracker.top_k_features", "tracker.association_threshold",
                                              "tracker.semantic_weight"}
    assert len(points) == 6


def _tune_worker(run, storage, out, env):
    import subprocess

    code = "from ghost_lens_cli.main import main; main()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "--threads", "1", "tune", "--run", str(run), "--optuna", "2", "--storage",
         storage, "--study-name", "shared", "--n-bootstrap", "20", "--out", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_two_tune_workers_share_one_sqlite_study(run, tmp_path):
    """Two processes against one SQLite file: one study with both workers' trials, each worker's results list
    all of them, and every trial is compared with the run's own config."""
    import os

    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    env = dict(os.environ)
    workers = [_tune_worker(run, storage, tmp_path / f"w{i}.json", env) for i in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=300)
        assert w.returncode == 0, out
    study = optuna.load_study(study_name="shared", storage=storage)
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 4
    names = {f"optuna_{t.number:03d}" for t in done}
    for i in range(2):
        data = json.loads((tmp_path / f"w{i}.json").read_text())
        points = data["points"]
        assert {p["name"] for p in points if p["source"] == "optuna"} <= names
        ref = [p for p in points if p["same_as_run"]]
        assert len(ref) == 1 and ref[0]["source"] == "run"  # the grid is the run's own config only
        for p in points:
            assert p["same_as_run"] or p["verdict_vs_run"] in ("above run", "below run", "not separable")
    # the worker that finished last saw every trial of the study
    assert max(len([p for p in json.loads((tmp_path / f"w{i}.json").read_text())["points"]
                    if p["source"] == "optuna"]) for i in range(2)) == 4


def test_tune_storage_needs_trials(run, tmp_path):
    result = invoke("tune", "--run", run, "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert_one_line_error(result, "--storage shares an Optuna study", code=2)


# ---- explain -------------------------------------------------------------------------------------------------------


def test_explain_prints_and_saves_without_overwriting(run):
    meta = _meta(run)
    before = _digest(run)
    prompt, answer = meta["prompts"][0], meta["answers"][0].strip()
    result = invoke("explain", prompt, "--answer", answer, "--run", run)
    assert result.exit_code == 0, result.output
    assert "hallucination probability" in result.output and "unlabeled" in result.output
    assert "entropy" in result.output and "churn" in result.output and "run pctl" in result.output
    assert "tracks driving the score" in result.output
    again = invoke("explain", prompt, "--answer", answer, "--run", run)
    assert again.exit_code == 0, again.output
    pngs = sorted(p.name for p in (run / "explain").glob("*.png"))
    assert len(pngs) == 2 and len(set(pngs)) == 2  # a second explanation never overwrites the first
    assert _digest(run) == before


def test_explain_json(run):
    meta = _meta(run)
    i = meta["labels"].index(1)
    result = invoke("explain", meta["prompts"][i], "--answer", meta["answers"][i], "--run", run, "--json",
                    "--top", "3")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["labeled"] is False and data["label"] is None
    assert 0.0 <= data["hallucination_probability"] <= 1.0
    assert {"entropy", "churn"} <= data["track_metrics"].keys()
    for m in data["track_metrics"].values():
        assert 0.0 <= m["run_percentile"] <= 100.0
    assert {"answer_logprob", "max_prob"} <= data["output_signals"].keys()
    assert 1 <= len(data["top_tracks"]) <= 3
    track = data["top_tracks"][0]
    assert track["nodes"] and {"layer", "feature", "token", "activation", "neuronpedia"} <= track["nodes"][0].keys()
    shares = [t["share"] for t in data["top_tracks"]]
    assert shares == sorted(shares, reverse=True)
    assert data["plot"].endswith(".png") and (run / "explain").is_dir()
    # the same example as in the run: its track metrics match the run's row
    row = json.loads((run / C.TRACK_METRICS).read_text())
    j = row["feature_names"].index("entropy")
    assert data["track_metrics"]["entropy"]["value"] == pytest.approx(row["metrics"][i][j], abs=1e-5)


def test_explain_default_run_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("explain", "the capital of x is", "--answer", "y")
    assert_one_line_error(result, "runs/toy-facts_toy-facts", "run `ghost-lens track` first", code=2)


def test_explain_bad_inputs(run, tmp_path):
    # text the toy world's word-level tokenizer cannot read
    result = invoke("explain", "What is the capital of France?", "--answer", "Paris", "--run", run)
    assert_one_line_error(result, "unknown to the tokenizer", code=2)
    # a run folder without its final detector (an unfinished run)
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(run / C.CONFIG, half / C.CONFIG)
    assert_one_line_error(invoke("explain", "a", "--answer", "b", "--run", half), C.DETECTOR_META, code=2)
    # a detector fitted under another config (its recorded config hash differs from config.yaml's): refused
    for name in (C.DETECTOR_ARRAYS, C.DETECTOR_META):
        shutil.copy(run / name, half / name)
    meta = json.loads((half / C.DETECTOR_META).read_text())
    (half / C.DETECTOR_META).write_text(json.dumps({**meta, "config_hash": "0" * 16}))
    assert_one_line_error(invoke("explain", "a", "--answer", "b", "--run", half), "another config", code=2)
    missing = invoke("explain", "the capital of x is", "--run", run)  # --answer is required
    assert missing.exit_code != 0 and "--answer" in missing.output


# ---- interpret -----------------------------------------------------------------------------------------------------


def test_interpret_layer(run):
    before = _digest(run)
    meta = _meta(run)
    result = invoke("interpret", "--layer", "1", "--run", run, "--top", "3")
    assert result.exit_code == 0, result.output
    assert _digest(run) == before
    data = json.loads((run / "interpret" / "layer_1.json").read_text())
    d_sae = meta["sae_info"]["layers"]["1"]["d_sae"]
    assert data["layer"] == 1 and data["d_sae"] == d_sae
    assert data["n_active_features"] + data["n_dead_features"] == d_sae == \
        len(data["features"]) + len(data["dead_features"])
    masses = [f["activation_mass"] for f in data["features"]]
    assert masses == sorted(masses, reverse=True)
    f = data["features"][0]
    assert 1 <= len(f["top_examples"]) <= 3 and f["common_tokens"]
    acts = [e["activation"] for e in f["top_examples"]]
    assert acts == sorted(acts, reverse=True) and acts[0] == pytest.approx(f["max_activation"])
    assert len({e["example"] for e in f["top_examples"]}) == len(f["top_examples"])  # one token per example
    for e in f["top_examples"]:
        assert f"«{e['token'].strip()}»" in e["context"]
    assert str(f["feature"]) in result.output  # the table of the most active features
    # the file is not overwritten without --force
    assert_one_line_error(invoke("interpret", "--layer", "1", "--run", run), "exists", "--force", code=2)
    assert invoke("interpret", "--layer", "1", "--run", run, "--force").exit_code == 0


def test_interpret_chosen_features(run, tmp_path):
    result = invoke("interpret", "--layer", "0", "--run", run, "--out", tmp_path / "all.json")
    assert result.exit_code == 0, result.output
    data_all = json.loads((tmp_path / "all.json").read_text())
    alive, dead = data_all["features"][0]["feature"], data_all["dead_features"]
    chosen = [alive] + dead[:1]
    out = tmp_path / "some.json"
    result = invoke("interpret", "--layer", "0", "--run", run, "--features", ",".join(map(str, chosen)),
                    "--out", out)
    assert result.exit_code == 0, result.output
    feats = json.loads(out.read_text())["features"]
    assert [f["feature"] for f in feats] == chosen
    assert feats[0] == data_all["features"][0]
    if dead:
        assert feats[1]["dead"] and feats[1]["top_examples"] == [] and feats[1]["active_tokens"] == 0


def test_interpret_bad_inputs(tiny_run, tmp_path):
    layers = _meta(tiny_run)["layers"]
    result = invoke("interpret", "--layer", "7", "--run", tiny_run, "--out", tmp_path / "x.json")
    assert_one_line_error(result, "layer 7", "layers available: " + ", ".join(map(str, layers)), code=2)
    d_sae = _meta(tiny_run)["sae_info"]["layers"]["0"]["d_sae"]
    result = invoke("interpret", "--layer", "0", "--run", tiny_run, "--features", str(d_sae), "--out",
                    tmp_path / "x.json")
    assert_one_line_error(result, f"--features: {d_sae}", code=2)
    result = invoke("interpret", "--layer", "0", "--run", tiny_run, "--features", "a,b", "--out", tmp_path / "x.json")
    assert_one_line_error(result, "--features: cannot parse", code=2)
    assert_one_line_error(invoke("interpret", "--layer", "0", "--run", tmp_path / "none"), "no run folder", code=2)
    assert not (tiny_run / "interpret").exists() and not (tmp_path / "x.json").exists()
