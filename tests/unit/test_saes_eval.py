"""``ghost-lens saes eval`` as a library function (ghost_lens.saes.quality.run_bundle_quality): the quality saved at
training when every SAE has one, else measured on the run config's dataset; bad counts refused before any load."""

from __future__ import annotations

import dataclasses

import pytest

from ghost_lens.config import RunConfig
from ghost_lens.errors import ConfigError
from ghost_lens.saes.quality import load_quality, run_bundle_quality, save_quality
from tests.helpers.capture import build_model, build_saes, build_tokenizer
from tests.helpers.cli import generic_rows, write_csv


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model with a tokenizer, its SAEs saved in a folder (no quality.json yet) and a generic CSV."""
    root = tmp_path_factory.mktemp("saes_eval")
    model = build_model(build_tokenizer(root / "tok"), n_layers=2)
    sae_dir = root / "saes"
    for layer, sae in build_saes(model, topk_layer=None).items():
        sae.save_model(sae_dir / f"blocks.{layer}.hook_resid_post")
    csv = write_csv(root / "qa.csv", generic_rows())
    return model, RunConfig(model="tiny", sae_dir=str(sae_dir), dataset=str(csv)), sae_dir


def test_without_saved_quality_it_is_measured_on_the_dataset(setup):
    model, cfg, _ = setup
    report = run_bundle_quality(cfg, num_samples=40, ce_sequences=0, progress=False, model=model)
    assert report.measured_on == cfg.dataset
    assert sorted(report.quality) == sorted(report.bundle) == [0, 1]
    for q in report.quality.values():
        assert 0 <= q["dead_fraction"] <= 1 and q["l0"] > 0 and q["fvu"] >= 0
        assert q.get("ce_loss_recovered") is None  # ce_sequences=0: not measured


def test_saved_quality_is_shown_unless_asked_to_measure_again(setup, tmp_path):
    model, cfg, sae_dir = setup
    folder = tmp_path / "saes"
    for sub in sae_dir.iterdir():  # a copy: the other tests keep SAEs without quality.json
        (folder / sub.name).mkdir(parents=True)
        for f in sub.iterdir():
            (folder / sub.name / f.name).write_bytes(f.read_bytes())
    cfg = dataclasses.replace(cfg, sae_dir=str(folder))
    save_quality(folder / "blocks.0.hook_resid_post", {"fvu": 0.25, "l0": 3.0, "dead_fraction": 0.5})
    partly = run_bundle_quality(cfg, num_samples=40, ce_sequences=0, progress=False, model=model)
    assert partly.measured_on == cfg.dataset  # one layer has none: every layer is measured
    assert partly.quality[0]["fvu"] != 0.25
    save_quality(folder / "blocks.1.hook_resid_post", {"fvu": 0.5, "l0": 2.0, "dead_fraction": 0.0})
    saved = run_bundle_quality(cfg, num_samples=40, ce_sequences=0, progress=False, model=model)
    assert saved.measured_on is None
    assert saved.quality == {L: load_quality(folder / f"blocks.{L}.hook_resid_post") for L in (0, 1)}
    again = run_bundle_quality(cfg, remeasure=True, num_samples=40, ce_sequences=0, progress=False, model=model)
    assert again.measured_on == cfg.dataset and again.quality[0]["fvu"] == partly.quality[0]["fvu"]


@pytest.mark.parametrize(("kwargs", "needle"), [({"num_samples": 0}, "--num-samples must be >= 1, got 0"),
                                                ({"ce_sequences": -1}, "--ce-sequences must be >= 0, got -1")])
def test_bad_counts_are_refused_before_anything_is_loaded(tmp_path, kwargs, needle):
    cfg = RunConfig(model="not-a-model", sae_dir=str(tmp_path / "missing"))  # loading would fail otherwise
    with pytest.raises(ConfigError, match=needle):
        run_bundle_quality(cfg, progress=False, **kwargs)
