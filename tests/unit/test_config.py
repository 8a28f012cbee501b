import dataclasses

import pytest

from ghost_lens.config import RunConfig, TrackerConfig, load_config, packaged_config_path, save_config
from ghost_lens.config_io import apply_overrides, flatten, from_dict, load_yaml_dict, to_dict
from ghost_lens.errors import ConfigError


def _keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, prefix + k + ".")
    return out


@pytest.mark.parametrize("name", ["default", "gpt2-medium", "toy"])
def test_packaged_configs_load_strictly(name):
    cfg = load_config(name)
    assert isinstance(cfg, RunConfig)
    # every key in the YAML is a dataclass field (strict load would have raised otherwise)
    assert _keys(load_yaml_dict(packaged_config_path(name))) <= _keys(to_dict(cfg))


def test_default_yaml_is_the_seed_baseline_and_mirrors_the_dataclasses():
    cfg = load_config("default")
    assert cfg.tracker == TrackerConfig()
    assert (cfg.tracker.top_k_features, cfg.tracker.association_threshold) == (50, 0.5)
    assert (cfg.detector.entropy_weight, cfg.detector.churn_weight, cfg.detector.ml_weight) == (0.4, 0.3, 0.3)
    # default.yaml spells out every field of every stage except the toy world's
    yaml_keys = _keys(load_yaml_dict(packaged_config_path("default")))
    expected = {k for k in _keys(to_dict(RunConfig())) if not k.startswith("world")}
    assert expected == yaml_keys


def test_gpt2_medium_best_guess():
    t = load_config("gpt2-medium").tracker
    assert (t.top_k_features, t.association_threshold) == (100, 0.45)
    assert (t.semantic_weight, t.activation_weight, t.position_weight) == (0.7, 0.2, 0.1)


def test_unknown_key_names_the_key(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("tracker:\n  top_k_feature: 10\n")
    with pytest.raises(ConfigError, match="tracker.top_k_feature"):
        load_config(p)
    p.write_text("modle: gpt2\n")
    with pytest.raises(ConfigError, match="'modle'"):
        load_config(p)


def test_malformed_yaml_and_bad_values(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("tracker: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config(p)
    with pytest.raises(ConfigError, match="tracker.assignment"):
        from_dict(RunConfig, {"tracker": {"assignment": "random"}})
    with pytest.raises(ConfigError, match="top_k_features"):
        from_dict(RunConfig, {"tracker": {"top_k_features": "many"}})
    with pytest.raises(ConfigError, match="no config file"):
        load_config("no-such-config")


def test_set_overrides():
    cfg = apply_overrides(RunConfig(), ["tracker.top_k_features=100", "capture.layers=[0, 2]", "model=gpt2"])
    assert cfg.tracker.top_k_features == 100 and cfg.capture.layers == [0, 2] and cfg.model == "gpt2"
    cfg = apply_overrides(cfg, ["capture.layers=null", "num_samples=5"])
    assert cfg.capture.layers is None and cfg.num_samples == 5
    with pytest.raises(ConfigError, match="tracker.nope"):
        apply_overrides(cfg, ["tracker.nope=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["tracker.top_k_features"])


def test_validation_in_post_init():
    with pytest.raises(ConfigError):
        TrackerConfig(top_k_features=0)
    with pytest.raises(ConfigError):
        from_dict(RunConfig, {"eval": {"n_folds": 1}})


def test_save_and_reload_round_trip(tmp_path):
    cfg = apply_overrides(RunConfig(), ["tracker.assignment=greedy", "capture.store_fp16=true"])
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


def test_lenient_reread_of_saved_artifacts():
    data = to_dict(RunConfig()) | {"from_a_future_version": 1}
    assert from_dict(RunConfig, data, strict=False) == RunConfig()
    assert dataclasses.is_dataclass(from_dict(RunConfig, {}, strict=True))


def test_flatten_dotted_keys_and_sections():
    nested = {"model": "m", "tracker": {"top_k": 5, "w": {"a": 1}}, "extra": {"x": 2}}
    assert flatten(nested) == {"model": "m", "tracker.top_k": 5, "tracker.w.a": 1, "extra.x": 2}
    # only the named top-level sections open, one level deep (what a tuning grid point holds)
    assert flatten(nested, sections=("tracker",)) == {"model": "m", "tracker.top_k": 5, "tracker.w": {"a": 1},
                                                      "extra": {"x": 2}}
    assert flatten(to_dict(RunConfig()))["tracker.top_k_features"] == RunConfig().tracker.top_k_features


def test_run_config_from_options_order_file_typed_set(tmp_path):
    from ghost_lens.config import run_config_from_options

    path = tmp_path / "c.yaml"
    path.write_text("model: gpt2\nsae_dir: saes/x\ntracker:\n  top_k_features: 7\n")
    cfg = run_config_from_options(str(path), ["tracker.top_k_features=9"], model="gpt2-medium", sae_release="org/r",
                                  num_samples=None, dataset="1")
    assert cfg.model == "gpt2-medium" and cfg.tracker.top_k_features == 9 and cfg.dataset == "1"
    assert cfg.sae_release == "org/r" and cfg.sae_dir is None  # the typed source clears the file's other one
    assert run_config_from_options(None).sae_release == "toy-facts-res"  # the model's built-in bundle
