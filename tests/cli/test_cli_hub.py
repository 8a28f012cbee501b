"""The real hub loading path end to end through the CLI, offline: a tiny `gpt2` and the SAELens release
`gpt2-small-res-jb` from a pre-populated Hugging Face cache (tests/helpers/hub.py), then tune / explain /
interpret on that run (Neuronpedia ids come from the SAELens registry), and `train-saes` -> `track --sae-dir`."""

from __future__ import annotations

import json

import pytest

from ghost_lens import constants as C
from tests.helpers.cli import invoke
from tests.helpers.hub import use_offline_hub

HUB_SETS = ["--set", "eval.n_bootstrap=50", "--set", "eval.n_folds=2", "--set", "capture.positions=all"]


@pytest.fixture(scope="module")
def hub_run(offline_hub_cache, small_csv, cli_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("hub_runs") / "gpt2"
    with use_offline_hub(offline_hub_cache["cache_dir"]), pytest.MonkeyPatch.context() as mp:
        mp.setenv(C.CACHE_ENV, str(cli_cache))
        result = invoke("track", "--model", "gpt2", "--sae-release", "gpt2-small-res-jb", "--dataset", small_csv,
                        "--num-samples", "40", *HUB_SETS, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_track_through_the_hub(hub_run, offline_hub_cache):
    for name in (C.CONFIG, C.REPORT, C.DETECTION_METRICS, C.PREDICTIONS, C.TRACK_METRICS, C.DETECTOR_ARRAYS, C.DETECTOR_META):
        assert (hub_run / name).is_file(), name
    meta = json.loads((hub_run / "capture" / C.CAPTURE_META).read_text())
    n_layers = offline_hub_cache["n_layers"]
    assert meta["layers"] == list(range(n_layers)) and meta["n_examples"] == 40  # the sharded capture's index
    assert meta["hook_names"] == [f"blocks.{L}.hook_resid_pre" for L in range(n_layers)]
    info = meta["sae_info"]
    assert "gpt2-small-res-jb" in info["source"]
    assert [info["layers"][str(L)]["neuronpedia_id"] for L in range(n_layers)] == \
        [f"gpt2-small/{L}-res-jb" for L in range(n_layers)]
    metrics = json.loads((hub_run / C.DETECTION_METRICS).read_text())
    assert metrics["protocol"]["n_folds"] == 2 and metrics["protocol"]["bootstrap"]["n_resamples"] == 50
    assert metrics["dataset"]["n_groups"] == 20


def test_explain_on_the_hub_run_links_neuronpedia(hub_run, offline_hub):
    result = invoke("explain", "The capital of France is", "--answer", "Paris", "--run", hub_run, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["neuronpedia_ids"] == {"0": "gpt2-small/0-res-jb", "1": "gpt2-small/1-res-jb"}
    node = data["top_tracks"][0]["nodes"][0]
    assert node["neuronpedia"] == f"https://www.neuronpedia.org/gpt2-small/{node['layer']}-res-jb/{node['feature']}"
    printed = invoke("explain", "The capital of France is", "--answer", "Paris", "--run", hub_run)
    assert printed.exit_code == 0, printed.output
    assert "https://www.neuronpedia.org/gpt2-small/" in printed.output


def test_interpret_and_tune_on_the_hub_run(hub_run, tmp_path):
    result = invoke("interpret", "--layer", "1", "--run", hub_run, "--out", tmp_path / "l1.json")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "l1.json").read_text())
    f = data["features"][0]
    assert f["neuronpedia"] == f"https://www.neuronpedia.org/gpt2-small/1-res-jb/{f['feature']}"
    assert any("capital" in e["context"] for ff in data["features"] for e in ff["top_examples"])
    result = invoke("tune", "--run", hub_run, "--n-bootstrap", "20", "--out", tmp_path / "tune.json")
    assert result.exit_code == 0, result.output
    assert len(json.loads((tmp_path / "tune.json").read_text())["points"]) == 4


def test_train_saes_then_track_with_sae_dir(offline_hub, small_csv, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(f"The capital of {c} is {k}." for c, k in
                                [("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome")] * 20))
    saes = tmp_path / "saes"
    training_yaml = tmp_path / "train.yaml"  # the typed flags win over the file's expansion and layers
    training_yaml.write_text("architecture: standard\nexpansion: 3\nlayers: [1]\n")
    result = invoke("train-saes", "--model", "gpt2", "--dataset", corpus, "--layers", "0,1", "--training-tokens",
                    "1024", "--context-size", "16", "--expansion", "2", "--out", saes, "--training-config",
                    training_yaml)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in saes.iterdir() if p.is_dir()) == ["blocks.0.hook_resid_post",
                                                                    "blocks.1.hook_resid_post"]
    quality = json.loads((saes / "blocks.1.hook_resid_post" / C.SAE_QUALITY).read_text())
    assert (quality["architecture"], quality["expansion"]) == ("standard", 2)
    out = tmp_path / "run"
    result = invoke("track", "--model", "gpt2", "--sae-dir", saes, "--dataset", small_csv, *HUB_SETS, "--set",
                    "eval.baselines=[length,logprob]", "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "capture" / C.CAPTURE_META).read_text())
    assert meta["hook_names"] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def test_design_card_command_with_the_packaged_gpt2_medium_config(offline_hub, small_csv, cli_cache, tmp_path,
                                                                   monkeypatch):
    """`track --model gpt2-medium --sae-release ORG/REPO --config gpt2-medium`: the packaged config names
    `sae_dir: saes/gpt2-medium`, and the typed --sae-release must win over it (it used to fail with
    "SAE folder not found: saes/gpt2-medium")."""
    monkeypatch.setenv(C.CACHE_ENV, str(cli_cache))
    monkeypatch.chdir(tmp_path)  # no saes/gpt2-medium here
    out = tmp_path / "medium"
    result = invoke("track", "--model", "gpt2-medium", "--sae-release", offline_hub["medium_repo"], "--config",
                    "gpt2-medium", "--dataset", small_csv, "--num-samples", "30", *HUB_SETS, "--set",
                    "eval.baselines=[length,logprob]", "--out", out)
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "capture" / C.CAPTURE_META).read_text())
    assert offline_hub["medium_repo"] in meta["sae_info"]["source"]
    assert meta["hook_names"] == [f"blocks.{L}.hook_resid_post" for L in range(offline_hub["n_layers"])]
    saved = (out / C.CONFIG).read_text()
    assert "sae_dir: null" in saved and "top_k_features: 100" in saved  # the config's tracker settings kept
