import json

import pytest
import torch

from ghost_lens.constants import CACHE_ENV
from ghost_lens.errors import DatasetError, SAEError
from ghost_lens.hooks import hook_name
from ghost_lens.toy.world import MODEL_NAME, ToyWorld, cache_root, get_world, world_hash, world_path
from tests.helpers.toy import tiny_world_cfg


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return get_world(tiny_world_cfg(), cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def test_world_contents(world):
    cfg = tiny_world_cfg()
    names = {p.name for p in world.path.iterdir()}
    assert {"kb.json", "tokenizer", "model.safetensors", "model_cfg.json", "saes", "examples_generation.jsonl",
            "examples_statement.jsonl", "info.json"} <= names
    assert world.path.name == world_hash(cfg) and world.path.parent.name == MODEL_NAME
    # no temp folders left; the builders' lock file stays (removing it would race with a waiting builder)
    assert [p.name for p in world.path.parent.iterdir() if p.name.startswith(".")] == [f".{world.path.name}.lock"]
    info = world.info()
    assert info["accuracy"]["train"] >= cfg.target_accuracy
    assert info["examples"]["statement"] == 2 * info["examples"]["generation"]
    assert sorted(p.name for p in world.sae_dir.iterdir()) == [hook_name(i) for i in range(cfg.n_layers)]


def test_examples(world):
    kb, model = world.kb, world.model
    gen, stmt = world.examples("generation"), world.examples("statement")
    assert len({e.id for e in gen}) == len(gen) and len({e.id for e in stmt}) == len(stmt)
    kinds = {e.meta["kind"] for e in gen}
    assert kinds == {"known", "held_out_relation", "unknown_entity"}
    names = {e.name for e in kb.entities}
    for e in gen:
        assert e.group in names and e.answer.startswith(" ")
        assert e.label == int(e.answer.strip() != e.meta["gold"])
    pred = model(model.to_tokens([e.prompt for e in gen[:5]], padding_side="right"))
    assert pred.shape[0] == 5
    for e in stmt:
        assert e.label == int(e.answer.strip() != e.meta["gold"])
    assert sum(e.label for e in stmt) == len(stmt) // 2
    with pytest.raises(DatasetError):
        world.examples("nonsense")


def test_cached_world_reloads_equal(world, tmp_path):
    again = get_world(tiny_world_cfg(), cache_dir=world.path.parent.parent, progress=False)
    assert again.path == world.path
    assert again.examples("generation") == world.examples("generation")
    for k, v in world.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])
    saes = again.load_saes()
    assert set(saes) == {0, 1}
    tokens = again.model.to_tokens(again.examples("generation")[0].prompt)
    _, cache = again.model.run_with_cache(tokens, names_filter=[hook_name(1)])
    acts = saes[1].encode(cache[hook_name(1)])
    assert acts.shape == (1, tokens.shape[1], saes[1].cfg.d_sae)
    assert saes[1].cfg.metadata.hook_name == hook_name(1) and saes[1].cfg.metadata.model_name == MODEL_NAME


def test_build_is_deterministic(world, tmp_path):
    rebuilt = get_world(tiny_world_cfg(), cache_dir=tmp_path, force=True, progress=False)
    assert rebuilt.info()["accuracy"] == world.info()["accuracy"]
    assert [(e.id, e.answer, e.label) for e in rebuilt.examples("generation")] == [
        (e.id, e.answer, e.label) for e in world.examples("generation")]
    assert rebuilt.examples("statement") == world.examples("statement")
    for k, v in world.model.state_dict().items():
        assert torch.equal(v, rebuilt.model.state_dict()[k])


def test_force_rebuild_replaces_in_place(tmp_path):
    cfg = tiny_world_cfg(n_layers=1, sae_training_tokens=512)
    first = get_world(cfg, cache_dir=tmp_path, progress=False)
    stamp = json.loads((first.path / "info.json").read_text())["build_seconds"]
    assert get_world(cfg, cache_dir=tmp_path, progress=False).info()["build_seconds"] == stamp  # cached
    again = get_world(cfg, cache_dir=tmp_path, force=True, progress=False)
    assert again.path == first.path and again.examples("generation") == first.examples("generation")
    assert sorted(p.name for p in tmp_path.joinpath(MODEL_NAME).iterdir()) == [f".{first.path.name}.lock",
                                                                               first.path.name]


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    assert cache_root() == tmp_path
    assert world_path(tiny_world_cfg()) == tmp_path / MODEL_NAME / world_hash(tiny_world_cfg())
    assert world_hash(tiny_world_cfg()) != world_hash(tiny_world_cfg(seed=1))
    monkeypatch.delenv(CACHE_ENV)
    assert cache_root().name == "ghost-lens"
    with pytest.raises(Exception, match="no toy-facts world"):
        ToyWorld(tmp_path)


@pytest.mark.parametrize("architecture", ["topk", "standard", "jumprelu"])
def test_train_sae_through_the_runner(world, architecture):
    from ghost_lens.saes.config import SAETrainingConfig
    from ghost_lens.saes.runners import train_sae

    model = world.model
    tokens = model.to_tokens([e.prompt for e in world.examples("statement")], padding_side="right")
    calls = []
    cfg = SAETrainingConfig(architecture=architecture, expansion=2, training_tokens=1024, train_batch_size_tokens=128,
                            seed=3, exclude_token_ids=[0])
    sae = train_sae(model, "blocks.0.hook_resid_mid", tokens, cfg, progress=lambda done, total: calls.append((done, total)))
    assert sae.cfg.d_in == model.cfg.d_model and sae.cfg.d_sae == 2 * model.cfg.d_model
    assert sae.W_dec.shape == (sae.cfg.d_sae, sae.cfg.d_in)
    assert sae.cfg.metadata.hook_name == "blocks.0.hook_resid_mid"
    assert sae.encode(torch.randn(3, 5, model.cfg.d_model)).shape == (3, 5, sae.cfg.d_sae)
    assert calls and calls[-1] == (1024, 1024)
    from sae_lens import SAE, TrainingSAE

    assert isinstance(sae, SAE) and not isinstance(sae, TrainingSAE)  # an inference SAE
    if architecture == "topk":
        sae2 = train_sae(model, "blocks.0.hook_resid_mid", tokens, cfg)
        assert torch.equal(sae.W_dec, sae2.W_dec)  # same seed, same SAE
    with pytest.raises(SAEError, match="no hook"):
        train_sae(model, "blocks.9.hook_resid_post", tokens, SAETrainingConfig(training_tokens=256))
