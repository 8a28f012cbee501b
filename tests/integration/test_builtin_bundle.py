"""Built-in SAE bundles: the default source of a model, and a bundle built on first use, cached and reused (a tiny
GPT-2 from the offline hub cache stands in for SmolLM2; the real bundle is built by the benchmarks, not tests)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ghost_lens.config import RunConfig, with_default_sae_source
from ghost_lens.errors import SAEError
from ghost_lens.saes import builtin
from ghost_lens.saes.quality import load_quality
from ghost_lens.saes.sources import BUILTIN_RELEASES, default_release, list_releases, load_bundle

TINY_SPEC = builtin.BundleSpec(
    release="tiny-gpt2-res", model="gpt2", n_layers=2, d_model=32, layers=(0, 1), expansion=2, k=4,
    training_tokens=2048, train_batch_size_tokens=256, context_size=16, n_prompts=16, held_out_fraction=0.25,
    max_new_tokens=8, generation_batch_size=8, ce_sequences=2,
)


def test_default_source_is_the_models_builtin_bundle():
    assert with_default_sae_source(RunConfig()).sae_release == "toy-facts-res"  # toy-facts runs unchanged
    assert with_default_sae_source(RunConfig(model="smollm2-135m")).sae_release == "smollm2-135m-res"
    named = RunConfig(model="gpt2", sae_release="gpt2-small-res-jb")
    assert with_default_sae_source(named) is named
    folder = RunConfig(model="gpt2", sae_dir="saes/x")
    assert with_default_sae_source(folder) is folder
    plain = RunConfig(model="gpt2")
    assert with_default_sae_source(plain) is plain  # no bundle: loading the SAEs says what to pass
    with pytest.raises(SAEError, match=r"model 'gpt2' has no built-in SAE bundle: pass --sae-release .* --sae-dir"):
        default_release("gpt2")
    assert default_release("SmolLM2-135M") == "smollm2-135m-res"
    assert set(BUILTIN_RELEASES.values()) == {"toy-facts-res", "smollm2-135m-res"}
    rows = {r["release"]: r for r in list_releases("smollm2-135m")}
    assert rows["smollm2-135m-res"]["layers"] == list(builtin.SMOLLM2_RES.layers)


def test_builtin_spec_is_smollm2_shaped():
    spec = builtin.SMOLLM2_RES
    assert (spec.model, spec.n_layers, spec.d_model) == ("smollm2-135m", 30, 576)
    assert all(0 <= L < 30 for L in spec.layers) and len(spec.layers) >= 8
    assert spec.training_tokens // spec.train_batch_size_tokens >= 200  # enough optimiser steps


@pytest.fixture
def tiny_spec(monkeypatch):
    monkeypatch.setitem(builtin.SPECS, TINY_SPEC.release, TINY_SPEC)
    # the tiny GPT-2 has 64 positions and a 320-token vocabulary: short prompts (the real ones are tested below)
    monkeypatch.setattr("ghost_lens.saes.corpus_prompts.corpus_prompts",
                        lambda n, seed=0: [f"Tell me about the capital {i}." for i in range(n)])
    return TINY_SPEC


def test_corpus_prompts_are_varied_and_stay_off_the_benchmark():
    from ghost_lens.saes.corpus_prompts import corpus_prompts

    prompts = corpus_prompts(320, seed=0)
    assert len(prompts) == len(set(prompts)) == 320
    assert corpus_prompts(320, seed=0) == prompts and corpus_prompts(320, seed=1) != prompts
    kinds = ("story", "explain", "list", "poem", "?")
    assert all(sum(k in p.lower() for p in prompts) >= 10 for k in kinds)
    banned = ("capital", "currency", "currencies", "element", "symbol", "atomic", "language spoken")
    assert not [p for p in prompts if any(b in p.lower() for b in banned)]


def test_bundle_built_once_cached_and_loadable(offline_hub, tiny_spec, tmp_path, monkeypatch):
    from ghost_lens.model_loader import load_model

    model = load_model("gpt2")
    folder = builtin.get_builtin_bundle(tiny_spec.release, model, cache_dir=tmp_path, progress=False)
    root = folder.parent
    assert root == builtin.bundle_path(tiny_spec, tmp_path)
    info = json.loads((root / builtin.INFO_FILE).read_text())
    assert info["spec"] == dataclasses.asdict(tiny_spec) | {"layers": [0, 1]}
    assert info["corpus"]["held_out_prompts"] == 4 and info["corpus"]["held_out_rows"] >= 1
    docs = [json.loads(line) for line in (root / builtin.CORPUS_FILE).read_text().splitlines()]
    assert len(docs) == 16 and sum(d["held_out"] for d in docs) == 4
    assert all(d["text"].startswith("Q: ") for d in docs)  # no chat template: the benchmark's own QA format
    for layer in (0, 1):
        q = load_quality(folder / f"blocks.{layer}.hook_resid_post")
        assert q is not None and q["bundle"] == tiny_spec.release and q["skip_first_position"] is True
        assert {"fvu", "l0", "dead_fraction", "ce_loss_recovered"} <= set(q)
        assert info["quality"][str(layer)] == q
    leftovers = [p.name for p in root.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temporary build folder was renamed into place

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a built bundle must be reused")

    monkeypatch.setattr(builtin, "build_bundle", no_rebuild)
    assert builtin.get_builtin_bundle(tiny_spec.release, model, cache_dir=tmp_path) == folder
    bundle = load_bundle(model, sae_dir=folder)
    assert bundle.layers == [0, 1] and bundle.saved_quality()[1]["bundle"] == tiny_spec.release


def test_interrupted_build_leaves_nothing(offline_hub, tiny_spec, tmp_path, monkeypatch):
    from ghost_lens.model_loader import load_model

    def interrupted(*args, **kwargs):  # Ctrl-C in the middle of SAE training
        raise KeyboardInterrupt

    monkeypatch.setattr("ghost_lens.saes.runners.train_saes_multi", interrupted)
    with pytest.raises(KeyboardInterrupt):
        builtin.get_builtin_bundle(tiny_spec.release, load_model("gpt2"), cache_dir=tmp_path, progress=False)
    assert not builtin.is_built(builtin.bundle_path(tiny_spec, tmp_path))
    left = [p.name for p in (tmp_path / tiny_spec.release).iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_wrong_model_for_a_bundle_is_one_line(offline_hub, tiny_spec, tmp_path):
    from ghost_lens.model_loader import load_model

    other = dataclasses.replace(tiny_spec, d_model=64)
    with pytest.raises(SAEError, match="is built for gpt2 .*d_model 64.*d_model 32"):
        builtin.build_bundle(other, load_model("gpt2"), tmp_path, progress=False)
