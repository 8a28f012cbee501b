"""The world-facts dataset: fact tables, answer judging, the two modes, subsampling, the generation cache."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from ghost_lens.data import load_examples
from ghost_lens.data.answer_match import first_number, judge, normalize, number_to_words
from ghost_lens.data.world_facts import (
    RELATIONS,
    build_prompt,
    cut_answer,
    generation_examples,
    load_facts,
    select_facts,
    statement_examples,
)
from ghost_lens.errors import DatasetError
from ghost_lens.run_report import dataset_paragraph
from tests.helpers import tiny_model
from tests.helpers.hub import tiny_tokenizer

CAPITAL = {"kind": "name", "keywords": RELATIONS["capital"].keywords}
CHATML = ("{% for m in messages %}{{ '<|endoftext|>' + m['role'] + '\n' + m['content'] + '<|endoftext|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|endoftext|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="module")
def facts():
    return load_facts()


def fact(facts, relation, entity):
    return next(f for f in facts if f.relation == relation and f.entity == entity)


# ---- fact tables ----------------------------------------------------------------------------------------------


def test_fact_tables(facts):
    by_rel = Counter(f.relation for f in facts)
    assert len(facts) >= 800 and len(by_rel) >= 4
    assert set(by_rel) == set(RELATIONS) and min(by_rel.values()) >= 100
    assert len({f.id for f in facts}) == len(facts)
    entities_of_group: dict[str, set[str]] = {}
    groups_of_entity: dict[str, set[str]] = {}
    for f in facts:
        entities_of_group.setdefault(f.group, set()).add(f.entity)
        groups_of_entity.setdefault(f.entity, set()).add(f.group)
    assert all(len(v) == 1 for v in entities_of_group.values())
    assert all(len(v) == 1 for v in groups_of_entity.values())
    assert all(f.gold.strip() and f.question.endswith("only.") for f in facts)


def test_known_facts_and_aliases(facts):
    assert fact(facts, "capital", "Japan").gold == "Tokyo"
    us = fact(facts, "capital", "United States")
    assert us.subject == "the United States" and "Washington" in us.aliases
    assert fact(facts, "element_symbol", "gold").gold == "Au"
    assert fact(facts, "atomic_number", "gold").aliases == ("seventy-nine",)
    assert fact(facts, "element_name", "gold").subject == "Au"
    assert "aluminium" in fact(facts, "element_name", "aluminum").aliases
    assert fact(facts, "demonym", "Antigua and Barbuda").gold == "Antiguan"  # "Antiguan,Barbudan" in the data
    assert not [f for f in facts if f.relation == "demonym" and f.entity == "Martinique"]  # "French": skipped


# ---- normalisation and matching --------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b", [("Bogotá", "bogota"), ("Sana'a", "Sanaa"), ("St. John's", "Saint Johns"),
                                  ("The Valley", "valley"), ("Porto-Novo", "porto novo"), ("Chișinău", "chisinau"),
                                  ("Washington, D.C.", "Washington DC")])
def test_normalize(a, b):
    assert normalize(a) == normalize(b)


def test_numbers():
    assert number_to_words(79) == "seventy-nine" and number_to_words(100) == "one hundred"
    assert first_number(normalize("Seventy-nine")) == 79
    assert first_number(normalize("one hundred and eighteen")) == 118
    assert first_number("atomic number 26 iron") == 26 and first_number("iron") is None


@pytest.mark.parametrize("subject, gold, aliases, answer, verdict", [
    ("Japan", "Tokyo", (), "Tokyo", "correct"),
    ("Japan", "Tokyo", (), " tokyo.", "correct"),
    ("Japan", "Tokyo", (), "Tokyo, Japan", "correct"),
    ("Japan", "Tokyo", (), "The capital of Japan is Tokyo.", "correct"),
    ("Japan", "Tokyo", (), "Tokyo is the capital city of Japan.", "correct"),
    ("the United States", "Washington D.C.", ("Washington",), "Washington", "correct"),
    ("the United States", "Washington D.C.", ("Washington",), "Washington, D.C.", "correct"),
    ("Colombia", "Bogotá", (), "BOGOTA", "correct"),
    ("Luxembourg", "Luxembourg", ("Luxembourg City",), "Luxembourg City", "correct"),
    ("Australia", "Canberra", (), "Sydney", "hallucinated"),
    ("Australia", "Canberra", (), "The capital of Australia is Sydney.", "hallucinated"),
    ("Australia", "Canberra", (), "Sydney is the capital of Australia.", "hallucinated"),
    ("Australia", "Canberra", (), "I think it's Melbourne", "hallucinated"),
    ("Albania", "Tirana", (), "Tiranë Durrës", "hallucinated"),
])
def test_judge_capitals(subject, gold, aliases, answer, verdict):
    assert judge(answer, gold, aliases, subject=subject, **CAPITAL).verdict == verdict


@pytest.mark.parametrize("answer, reason", [
    ("", "empty"), ("   ", "empty"), (".", "empty"),
    ("I don't know.", "refusal"), ("I'm not sure.", "refusal"), ("Sorry, I cannot answer that.", "refusal"),
    ("Unknown", "refusal"),
    ("the capital of Albania", "restatement"), ("Albania", "restatement"), ("The capital city", "restatement"),
    ("Albania is a small country in southeastern Europe with mountains", "wrong_type"),
    ("42", "wrong_type"),
])
def test_evasions(answer, reason):
    j = judge(answer, "Tirana", subject="Albania", **CAPITAL)
    assert (j.verdict, j.reason, j.label) == ("evasion", reason, None)


def test_luxembourg_restatement_is_not_a_match():
    j = judge("The capital of Luxembourg", "Luxembourg", subject="Luxembourg", **CAPITAL)
    assert j.verdict == "evasion"


@pytest.mark.parametrize("relation, entity, answer, verdict", [
    ("atomic_number", "gold", "79", "correct"),
    ("atomic_number", "gold", "Seventy-nine", "correct"),
    ("atomic_number", "gold", "The atomic number of gold is 79.", "correct"),
    ("atomic_number", "gold", "80", "hallucinated"),
    ("atomic_number", "gold", "Gold is a shiny metal.", "evasion"),
    ("element_symbol", "gold", "Au", "correct"),
    ("element_symbol", "gold", "AU", "correct"),
    ("element_symbol", "gold", "The symbol for gold is Ag.", "hallucinated"),
    ("element_symbol", "gold", "Gold", "evasion"),
    ("element_symbol", "gold", "It is a precious metal", "evasion"),
    ("element_name", "gold", "Gold", "correct"),
    ("element_name", "gold", "Silver", "hallucinated"),
    ("element_name", "gold", "Au", "evasion"),
    ("element_name", "aluminum", "Aluminium", "correct"),
    ("demonym", "Japan", "Japanese", "correct"),
    ("demonym", "Japan", "People from Japan are called Japanese.", "correct"),
    ("demonym", "Japan", "Chinese", "hallucinated"),
    ("demonym", "Japan", "Japan", "evasion"),
    ("demonym", "Argentina", "Argentinian", "correct"),
])
def test_judge_other_relations(facts, relation, entity, answer, verdict):
    assert fact(facts, relation, entity).judge(answer).verdict == verdict


# ---- prompts ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok_model(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    tiny_tokenizer().save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = tiny_model(d_vocab=len(tok), n_ctx=256)
    model.set_tokenizer(tok)
    return model


def test_prompts(tok_model, facts):
    q = fact(facts, "capital", "Japan").question
    assert build_prompt(q, None) == f"Q: {q}\nA:"
    assert build_prompt(q, tok_model) == f"Q: {q}\nA:"  # no chat template
    tok_model.tokenizer.chat_template = CHATML
    try:
        chat = build_prompt(q, tok_model)
    finally:
        tok_model.tokenizer.chat_template = None
    # the BOS string the template renders first is dropped: the model prepends it itself
    assert chat == f"user\n{q}<|endoftext|>\n<|endoftext|>assistant\n"
    assert cut_answer(" Tokyo\nQ: next", ("\n",)) == " Tokyo"
    assert cut_answer("Tokyo<|im_end|>junk", ("\n", "<|im_end|>")) == "Tokyo"


# ---- the two modes, subsampling and the cache ---------------------------------------------------------------------


def test_statement_mode(facts):
    sub = select_facts(facts, 60, seed=3)
    ex, stats = statement_examples(sub, None, seed=3)
    assert len(ex) == 2 * len(sub) and stats.n_evasions == 0
    by_id = {e.id: e for e in ex}
    for f in sub:
        true, false = by_id[f"{f.id}-true"], by_id[f"{f.id}-false"]
        assert (true.label, false.label) == (0, 1) and true.group == false.group == f.group
        assert true.answer == f" {f.gold}" and f.judge(false.answer).verdict == "hallucinated"
        assert false.meta == {"relation": f.relation, "kind": f.relation, "entity": f.entity, "gold": f.gold}
    again, _ = statement_examples(sub, None, seed=3)
    assert [e.answer for e in again] == [e.answer for e in ex]
    via_loader = load_examples("world-facts-statement", num_samples=60, seed=3)
    assert len(via_loader) == 60 and {e.label for e in via_loader} == {0, 1}


def test_generation_needs_a_model():
    with pytest.raises(DatasetError, match="pass the model"):
        load_examples("world-facts", num_samples=5)


class CannedGenerate:
    """A stand-in for ghost_lens.generate.generate: answers from a table, counting calls and prompts."""

    def __init__(self, facts):
        self.by_question = {}
        for f in facts:
            self.by_question[f.question] = {"capital": " Sydney", "demonym": " I don't know.", "element_symbol":
                                            f" {f.gold}", "atomic_number": " 7", "element_name": " the element"
                                            }[f.relation]
        self.calls, self.prompts = 0, []

    def __call__(self, model, prompts, **kwargs):
        assert kwargs["temperature"] == 0.0 and kwargs["stop"]
        self.calls += 1
        self.prompts += list(prompts)
        return [self.by_question[p[len("Q: "):-len("\nA:")]] + "\nQ: more" for p in prompts]


def test_generation_labels_subsample_and_cache(tmp_path, facts, tok_model):
    gen = CannedGenerate(facts)
    sub = select_facts(facts, 40, seed=1)
    assert 40 <= len(sub) <= 42 and len({f.group for f in sub}) < 40  # whole groups, chosen before generating
    ex, stats = generation_examples(sub, tok_model, cache_dir=tmp_path, generate_fn=gen, model_name="tiny")
    assert gen.calls == 1 and len(gen.prompts) == len(sub)  # only the subsample is generated
    assert stats.n_questions == len(sub) == stats.n_labelled + stats.n_evasions and stats.n_generated == len(sub)
    for e in ex:
        f = next(f for f in sub if f.id == e.id)
        want = {"capital": 1 if f.gold != "Sydney" else 0, "element_symbol": 0,
                "atomic_number": int(f.gold != "7")}[f.relation]
        assert e.label == want and e.answer in (" Sydney", f" {f.gold}", " 7") and e.meta["kind"] == f.relation
        assert e.prompt.endswith("\nA:") and not e.answer.endswith("\n")
    n_ev = sum(f.relation in ("demonym", "element_name") for f in sub)
    assert stats.n_evasions == n_ev and set(stats.evasion_reasons) <= {"refusal", "restatement"}
    assert sum(v["n_questions"] for v in stats.per_relation.values()) == len(sub)
    # a second load (and a smaller subsample of the same questions) reads the cache: no generation at all
    ex2, stats2 = generation_examples(sub, tok_model, cache_dir=tmp_path, generate_fn=gen, model_name="tiny")
    generation_examples(sub[:10], tok_model, cache_dir=tmp_path, generate_fn=gen, model_name="tiny")
    assert gen.calls == 1 and stats2.n_generated == 0 and [e.answer for e in ex2] == [e.answer for e in ex]
    # other settings are another cache entry
    from ghost_lens.data.world_facts import GenerationSettings

    generation_examples(sub[:3], tok_model, cache_dir=tmp_path, generate_fn=gen, model_name="tiny",
                        settings=GenerationSettings(max_new_tokens=4))
    assert gen.calls == 2
    text = " ".join(dataset_paragraph(stats.to_dict()))
    assert f"{stats.n_evasions} answers" in text and "kept out of the labelled set" in text


def test_loader_end_to_end_with_a_tiny_model(tmp_path, monkeypatch, tok_model, facts):
    pytest.importorskip("ghost_lens.generate")
    import ghost_lens.generate as gen_module

    monkeypatch.setenv("GHOST_LENS_CACHE", str(tmp_path))
    calls = []
    real = gen_module.generate
    monkeypatch.setattr(gen_module, "generate", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    torch.manual_seed(0)
    info: dict = {}
    ex = load_examples("world-facts", model=tok_model, num_samples=12, seed=0, info=info)
    assert calls and sum(calls) == info["n_questions"] <= 14
    assert 0 < info["n_labelled"] == len(ex) and info["n_questions"] == len(ex) + info["n_evasions"]
    by_id = {f.id: f for f in facts}
    for e in ex:  # garbage answers, but every kept one is an attempt, labelled by its own judgement
        j = by_id[e.id].judge(e.answer)
        assert j.label == e.label and j.verdict != "evasion"
        assert e.prompt.startswith("Q: ") and set(e.meta) >= {"relation", "entity", "gold", "kind"}
    again = load_examples("world-facts", model=tok_model, num_samples=12, seed=0)
    assert len(calls) == 1 and [e.answer for e in again] == [e.answer for e in ex]


def test_interrupted_generation_keeps_finished_chunks(tmp_path, facts, tok_model):
    from ghost_lens.data.world_facts import GenerationSettings

    gen = CannedGenerate(facts)
    sub = select_facts(facts, 20, seed=2)
    settings = GenerationSettings(batch_size=2)  # chunks of 4 batches = 8 prompts, the cache saved after each

    def failing(model, prompts, **kwargs):
        if gen.calls == 1:
            raise KeyboardInterrupt
        return gen(model, prompts, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        generation_examples(sub, tok_model, cache_dir=tmp_path, generate_fn=failing, model_name="tiny",
                            settings=settings)
    assert gen.calls == 1 and len(gen.prompts) == 8
    _, stats = generation_examples(sub, tok_model, cache_dir=tmp_path, generate_fn=gen, model_name="tiny",
                                   settings=settings)
    assert stats.n_generated == len(sub) - 8 and len(gen.prompts) == len(sub)
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary file left behind
