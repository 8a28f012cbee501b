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
