import pytest
import torch
from transformer_lens import HookedTransformer

from ghost_lens.config import WorldConfig
from ghost_lens.errors import ConfigError
from ghost_lens.toy.kb import RELATION_CATALOGUE, KnowledgeBase, generate_kb
from ghost_lens.toy.model import build_model, config_from_dict, config_to_dict, encode, model_config
from ghost_lens.toy.tokenizer import BOS, PAD, UNK, build_tokenizer, load_tokenizer
from tests.helpers.toy import tiny_world_cfg


def test_same_seed_same_kb_and_other_seed_differs():
    a, b = generate_kb(WorldConfig()), generate_kb(WorldConfig())
    assert a.to_dict() == b.to_dict()
    assert generate_kb(WorldConfig(seed=1)).to_dict() != a.to_dict()


def test_kb_shape_and_splits():
    cfg = WorldConfig()
    kb = generate_kb(cfg)
    names = [e.name for e in kb.entities]
    assert len(names) == len(set(names)) == cfg.n_entities
    assert all(2 <= len(n.split()) <= 3 for n in names)
    n_unknown = round(cfg.n_entities * cfg.unknown_fraction)
    assert sum(not e.known for e in kb.entities) == n_unknown
    assert len(kb.facts) == cfg.n_entities * cfg.n_relations
    assert [r.name for r in kb.relations] == [n for n, _, _ in RELATION_CATALOGUE[: cfg.n_relations]]
    n_known = cfg.n_entities - n_unknown
    for rel in kb.relations:  # held out stratified per relation; unknown entities have only unknown facts
        held = [f for f in kb.facts_in("held_out") if f.relation == rel.name]
        assert len(held) == round(n_known * cfg.held_out_relation_fraction)
        assert all(f.answer in rel.answers for f in kb.facts if f.relation == rel.name)
    assert all((f.split == "unknown") == (not kb.entities[f.entity].known) for f in kb.facts)
    looks = [e for e in kb.entities if e.lookalike_of is not None]
    assert len(looks) == round(n_unknown * cfg.lookalike_fraction)
    for e in looks:  # one syllable away from a known entity's name
        src = kb.entities[e.lookalike_of].name.split()
        assert kb.entities[e.lookalike_of].known and len(src) == len(e.name.split())
        assert sum(x != y for x, y in zip(src, e.name.split(), strict=True)) == 1


def test_regional_structure_is_in_the_facts():
    kb = generate_kb(WorldConfig())
    lang = kb.relation("language")
    facts = [f for f in kb.facts if f.relation == "language"]
    typical = sum(f.answer == lang.typical[kb.entities[f.entity].family] for f in facts) / len(facts)
    assert typical > 0.8
    capital = [f for f in kb.facts if f.relation == "capital"]
    typical_cap = sum(f.answer == kb.relation("capital").typical[kb.entities[f.entity].family] for f in capital)
    assert typical_cap / len(capital) < 0.3


def test_kb_json_round_trip(tmp_path):
    kb = generate_kb(tiny_world_cfg())
    kb.save(tmp_path / "kb.json")
    again = KnowledgeBase.load(tmp_path / "kb.json")
    assert again == kb
    assert again.prompt(again.facts[0]).startswith(f"the {again.facts[0].relation} of ")


def test_world_config_validates():
    with pytest.raises(ConfigError, match="n_relations"):
        WorldConfig(n_relations=9)
    with pytest.raises(ConfigError, match="name_cue"):
        WorldConfig(name_cue=1.5)


def test_tokenizer_round_trip(tmp_path):
    kb = generate_kb(tiny_world_cfg())
    tok = build_tokenizer(kb.vocabulary(), tmp_path / "tok")
    assert len(tok) == len(kb.vocabulary()) + 4
    assert tok.convert_tokens_to_ids(PAD) == tok.pad_token_id == 0
    text = kb.prompt(kb.facts[0]) + " " + kb.facts[0].answer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.split()) and tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert tok("zzzz")["input_ids"][-1] == tok.convert_tokens_to_ids(UNK)
    assert load_tokenizer(tmp_path / "tok").get_vocab() == tok.get_vocab()


def test_transformer_lens_integration(tmp_path):
    cfg = tiny_world_cfg()
    kb = generate_kb(cfg)
    tok = build_tokenizer(kb.vocabulary(), tmp_path / "tok")
    model = build_model(model_config(cfg, len(tok)), tok)
    assert isinstance(model, HookedTransformer) and model.cfg.d_vocab == len(tok)
    prompt = kb.prompt(kb.facts[0])
    tokens = model.to_tokens(prompt)
    assert tokens.shape == (1, len(prompt.split()) + 1)
    assert tokens[0, 0].item() == tok.convert_tokens_to_ids(BOS)
    assert model.to_string(tokens[0]) == f"{BOS} {prompt}"
    assert model.to_tokens(prompt, prepend_bos=False).shape[1] == len(prompt.split())
    assert model.to_str_tokens(prompt)[1:] == prompt.split()
    batch, last = encode(model, [prompt, kb.prompt(kb.facts[-1])], ["a", "b"])
    assert batch.shape[0] == 2 and (last >= len(prompt.split()) - 1).all()
    assert config_from_dict(config_to_dict(model.cfg)).dtype == torch.float32
    assert model.cfg.dtype == torch.float32
