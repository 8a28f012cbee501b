"""SAE bundles from every source (registry release and repo through an offline hub cache, local folder, the toy
world) and every validation error, each a one-line SAEError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ghost_lens.errors import SAEError
from ghost_lens.saes import SAEBundle, list_releases, load_bundle, no_release_hint
from ghost_lens.saes.sae_ids import choose_ids, parse_sae_id
from tests.helpers import tiny_model
from tests.helpers.hub import tiny_sae

D_MODEL = 32


@pytest.fixture(scope="module")
def model():
    """A tiny random 2-layer model (d_model 32), no hub needed."""
    return tiny_model(d_model=D_MODEL, d_head=8, d_mlp=64, d_vocab=40, model_name="tiny")


def save_saes(root: Path, specs: dict[str, tuple[str, int]]) -> Path:
    """``{folder: (hook_name, d_in)}`` -> SAELens-saved SAEs under ``root``."""
    for i, (folder, (hook, d_in)) in enumerate(specs.items()):
        tiny_sae(d_in, 48, hook, seed=i).save_model(root / folder)
    return root


def one_line_error(excinfo: pytest.ExceptionInfo) -> str:
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


# ----------------------------------------------------------------------------------------------------------------
# sources


def test_registry_release_through_offline_cache(offline_hub):
    from sae_lens import SAE

    from ghost_lens.model_loader import load_model

    gpt2 = load_model("gpt2")
    bundle = load_bundle(gpt2, release="gpt2-small-res-jb")
    assert bundle.layers == [0, 1]  # the model's 2 layers of the release's 12
    assert bundle.hook_names == {0: "blocks.0.hook_resid_pre", 1: "blocks.1.hook_resid_pre"}
    assert bundle.hook_kind == "resid_pre"
    assert bundle.d_sae == {0: offline_hub["d_sae"], 1: offline_hub["d_sae"]}
    assert bundle.release == "gpt2-small-res-jb" and "gpt2-small-res-jb" in bundle.source
    assert bundle.neuronpedia_id(1) == "gpt2-small/1-res-jb"  # from the registry
    assert bundle[1].cfg.metadata.neuronpedia_id == "gpt2-small/1-res-jb"
    saved = SAE.load_from_disk(
        next(offline_hub["cache_dir"].glob("models--jbloom--*/snapshots/*/blocks.1.*"))
    )
    torch.testing.assert_close(bundle[1].W_dec, saved.W_dec)
    assert bundle.describe()["layers"]["0"]["sae_id"] == "blocks.0.hook_resid_pre"

    only_one = load_bundle(
        gpt2, release="gpt2-small-res-jb", layers=[1], id_template="blocks.{layer}.hook_resid_pre"
    )
    assert only_one.layers == [1]
    with pytest.raises(SAEError, match="no SAE 'blocks.1.hook_mlp_out'") as info:
        load_bundle(gpt2, release="gpt2-small-res-jb", layers=[1], id_template="blocks.{layer}.hook_mlp_out")
    one_line_error(info)


def test_registry_release_missing_from_cache(offline_hub):
    from ghost_lens.model_loader import load_model

    with pytest.raises(SAEError, match="could not load SAE 'blocks.0.hook_resid_post'") as info:
        load_bundle(load_model("gpt2"), release="gpt2-small-resid-post-v5-32k")
    one_line_error(info)


def test_hugging_face_repo_id(offline_hub):
    from ghost_lens.model_loader import load_model

    gpt2 = load_model("gpt2")
    bundle = load_bundle(gpt2, release=offline_hub["repo"])
    assert bundle.layers == [0, 1] and bundle.hook_kind == "resid_post"
    assert bundle.sae_ids == dict(enumerate(offline_hub["repo_folders"]))
    assert bundle[0].cfg.architecture() == "topk"
    assert bundle.neuronpedia_id(0) is None
    # with a template and explicit layers the repo is not even listed
    direct = load_bundle(
        gpt2, release=offline_hub["repo"], id_template="blocks.{layer}.hook_resid_post", layers=[0]
    )
    torch.testing.assert_close(direct[0].W_dec, bundle[0].W_dec)
    with pytest.raises(SAEError, match="my-org/absent") as info:
        load_bundle(gpt2, release="my-org/absent")
    one_line_error(info)


def test_local_folder_layer_from_metadata_or_folder_name(model, tmp_path):
    root = save_saes(
        tmp_path / "saes",
        {"first": ("blocks.0.hook_resid_post", D_MODEL), "second": ("blocks.1.hook_resid_post", D_MODEL)},
    )
    (root / "notes.txt").write_text("not an SAE")
    bundle = load_bundle(model, sae_dir=root)
    assert bundle.layers == [0, 1] and bundle.sae_ids == {0: "first", 1: "second"}
    assert bundle.source == f"folder {root}"
    # a folder passed as --sae-release works too
    assert load_bundle(model, release=str(root)).layers == [0, 1]

    # an old cfg without metadata.hook_name: the folder name gives layer and hook
    old = tmp_path / "old"
    save_saes(old, {"blocks.1.hook_resid_post": ("blocks.1.hook_resid_post", D_MODEL)})
    cfg_path = old / "blocks.1.hook_resid_post" / "cfg.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["metadata"]["hook_name"]
    cfg_path.write_text(json.dumps(cfg))
    assert load_bundle(model, sae_dir=old).hook_names == {1: "blocks.1.hook_resid_post"}


def test_several_saes_per_layer_need_a_template(model, tmp_path):
    root = save_saes(
        tmp_path,
        {
            "narrow/blocks.0.hook_resid_post": ("blocks.0.hook_resid_post", D_MODEL),
            "wide/blocks.0.hook_resid_post": ("blocks.0.hook_resid_post", D_MODEL),
        },
    )
    with pytest.raises(SAEError, match="2 SAEs for layer 0.*'narrow/blocks.{layer}.hook_resid_post'") as info:
        load_bundle(model, sae_dir=root)
    one_line_error(info)
    bundle = load_bundle(model, sae_dir=root, id_template="wide/blocks.{layer}.hook_resid_post")
    assert bundle.sae_ids == {0: "wide/blocks.0.hook_resid_post"}


def test_several_kinds_per_layer_keep_the_most_common():
    # gpt2-small-res-jb: resid_pre at 0-11 plus resid_post at 11
    ids = {f"blocks.{L}.hook_resid_pre": None for L in range(12)} | {"blocks.11.hook_resid_post": None}
    chosen = choose_ids(ids, source="release x", n_layers=12)
    assert chosen == {L: f"blocks.{L}.hook_resid_pre" for L in range(12)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("blocks.8.hook_resid_pre", (8, "resid_pre")),
        ("blocks.12.hook_resid_post__trainer_0", (12, "resid_post")),
        ("layer_12/width_16k/canonical", (12, None)),
        ("l3r_8x", (3, None)),
        ("v5_32k_layer_0", (0, None)),
        ("e-res-sm", (None, None)),
    ],
)
def test_parse_sae_id(text, expected):
    assert parse_sae_id(text) == expected


def test_toy_facts_release(monkeypatch, tmp_path):
    world_mod = pytest.importorskip("ghost_lens.toy.world", reason="the toy world is not available")
    from ghost_lens.config import WorldConfig
    from ghost_lens.constants import CACHE_ENV
    from ghost_lens.errors import ModelError
    from ghost_lens.model_loader import check_coverage, load_model

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    cfg = WorldConfig(
        n_entities=20, n_layers=2, d_model=32, n_heads=2, d_mlp=64, train_steps=20, sae_training_tokens=4096
    )
    world_mod.get_world(cfg, progress=False)  # built once into the temporary cache
    toy = load_model("toy-facts", world_cfg=cfg)
    bundle = load_bundle(toy, release="toy-facts-res", world_cfg=cfg)
    assert bundle.layers == [0, 1] and bundle.hook_kind == "resid_post"
    assert "toy-facts-res" in bundle.source
    # English text does not fit the toy world's word-level vocabulary
    with pytest.raises(ModelError, match="unknown to the tokenizer"):
        check_coverage(toy, ["What happens to you if you eat watermelon seeds?"])


# ----------------------------------------------------------------------------------------------------------------
# validation errors


def test_d_in_mismatch(model, tmp_path):
    root = save_saes(tmp_path, {"a": ("blocks.0.hook_resid_post", 16)})
    with pytest.raises(SAEError, match="d_in 16 but 'tiny' has d_model 32") as info:
        load_bundle(model, sae_dir=root)
    one_line_error(info)


def test_missing_hook(model, tmp_path):
    root = save_saes(tmp_path, {"deep": ("blocks.5.hook_resid_post", D_MODEL)})
    with pytest.raises(
        SAEError, match="reads hook 'blocks.5.hook_resid_post', which 'tiny' does not have"
    ) as info:
        load_bundle(model, sae_dir=root, layers=[5])
    one_line_error(info)
    with pytest.raises(SAEError, match="only at layers 5, but the model has 2 layers"):
        load_bundle(model, sae_dir=root)
    bundle = SAEBundle({5: tiny_sae(D_MODEL, 48, "blocks.5.hook_resid_post")}, source="test")
    with pytest.raises(SAEError, match="does not have"):
        bundle.validate(model)


def test_uncovered_layer(model, tmp_path):
    root = save_saes(tmp_path, {"a": ("blocks.0.hook_resid_post", D_MODEL)})
    with pytest.raises(SAEError, match="layers 1 are not covered by folder .* \\(it covers 0\\)") as info:
        load_bundle(model, sae_dir=root, layers=[0, 1])
    one_line_error(info)
    bundle = load_bundle(model, sae_dir=root)
    with pytest.raises(SAEError, match="layers 1 are not covered"):
        bundle.validate(model, layers=[0, 1])


def test_mixed_hook_kinds(model, tmp_path):
    root = save_saes(
        tmp_path, {"a": ("blocks.0.hook_resid_pre", D_MODEL), "b": ("blocks.1.hook_resid_post", D_MODEL)}
    )
    with pytest.raises(
        SAEError, match="different kinds of hook \\(resid_post at layers 1; resid_pre at layers 0\\)"
    ) as info:
        load_bundle(model, sae_dir=root)
    one_line_error(info)
    assert load_bundle(model, sae_dir=root, validate=False).hook_kind is None


def test_unknown_release_and_missing_sources(model, tmp_path):
    with pytest.raises(
        SAEError, match="unknown SAE release 'gpt2-small-res-jbb'.*close: gpt2-small-res-jb"
    ) as info:
        load_bundle(model, release="gpt2-small-res-jbb")
    one_line_error(info)
    with pytest.raises(SAEError, match="has no built-in SAE bundle: pass --sae-release.*--sae-dir.*train-saes"):
        load_bundle(model)
    with pytest.raises(SAEError, match="SAE folder not found"):
        load_bundle(model, sae_dir=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SAEError, match="no SAELens-saved SAE"):
        load_bundle(model, sae_dir=tmp_path / "empty")


def test_list_releases():
    rows = {r["release"]: r for r in list_releases("gpt2")}
    assert "gpt2-small-res-jb" in rows and "toy-facts-res" not in rows
    jb = rows["gpt2-small-res-jb"]
    assert jb["repo"] == "jbloom/GPT2-Small-SAEs-Reformatted" and jb["layers"] == list(range(12))
    assert jb["hooks"] == ["resid_post", "resid_pre"]
    assert rows["gpt2-small-resid-post-v5-32k"]["widths"] == ["32k"]
    assert list_releases("gpt2-medium") == []
    assert "train-saes" in no_release_hint("gpt2-medium") and "gpt2-medium" in no_release_hint("gpt2-medium")
    assert [r["release"] for r in list_releases("toy-facts")] == ["toy-facts-res"]
    assert len(list_releases()) > 100


def test_bad_id_templates(model, tmp_path):
    root = save_saes(tmp_path, {"a": ("blocks.0.hook_resid_post", D_MODEL)})
    with pytest.raises(SAEError, match="must contain '{layer}'"):
        load_bundle(model, sae_dir=root, id_template="blocks.0.hook_resid_post")
    with pytest.raises(SAEError, match="no other"):
        load_bundle(model, release="org/repo", id_template="layer_{layer}/width_{width}", layers=[0])
    with pytest.raises(SAEError, match="no SAE id of folder .* matches the template"):
        load_bundle(model, sae_dir=root, id_template="x/{layer}")
