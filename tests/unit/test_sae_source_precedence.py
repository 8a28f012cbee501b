"""A typed SAE source beats the config file's other one (issue: the design card's gpt2-medium command)."""

from __future__ import annotations

from ghost_lens.config import load_config, prefer_typed_sae_source


def test_typed_release_clears_the_config_sae_dir():
    cfg = load_config("gpt2-medium")
    assert cfg.sae_dir == "saes/gpt2-medium"
    out = prefer_typed_sae_source(cfg, sae_release="org/repo")
    assert (out.sae_release, out.sae_dir) == ("org/repo", None)
    assert cfg.sae_dir == "saes/gpt2-medium"  # not modified in place


def test_typed_sae_dir_clears_the_config_release():
    cfg = load_config(None, ["sae_release=gpt2-small-res-jb"])
    out = prefer_typed_sae_source(cfg, sae_dir="my/saes")
    assert (out.sae_release, out.sae_dir) == (None, "my/saes")


def test_nothing_typed_or_both_typed_keeps_the_config():
    cfg = load_config("gpt2-medium")
    assert prefer_typed_sae_source(cfg) is cfg
    both = prefer_typed_sae_source(cfg, sae_release="a/b", sae_dir="c")
    assert both is cfg


def test_hook_names_inside_sae_ids_are_found_by_the_hooks_module():
    from ghost_lens.hooks import HookPoint, find_hook_name
    from ghost_lens.saes.sae_ids import parse_sae_id

    assert find_hook_name("res/blocks.8.hook_resid_pre/width_16k") == HookPoint(8, "resid_pre")
    assert find_hook_name("layer_12/width_16k/canonical") is None
    assert parse_sae_id("blocks.3.hook_mlp_out") == (3, "mlp_out")
    assert parse_sae_id("layer_12/width_16k/canonical") == (12, None)
