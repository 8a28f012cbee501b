"""Labelled examples of the toy world, in two modes.

- **generation**: the model answers each evaluation prompt greedily; label 1 when its answer is not the fact.
- **statement**: each evaluation fact shown once with its true answer (label 0) and once with a false answer from
  the same relation's vocabulary (label 1), TruthfulQA-style.

The evaluation facts: ``n_eval_known`` training facts (a seeded sample), every held-out fact of a known entity and
every fact of an unknown entity. The group of an example is its entity's name, so splits never divide an entity.
Answers carry a leading space (``" velmora"``), so ``prompt + answer`` is the sentence.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from transformer_lens import HookedTransformer

from ghost_lens.config import WorldConfig
from ghost_lens.data.example import Example
from ghost_lens.toy.kb import Fact, KnowledgeBase
from ghost_lens.toy.model import next_token_logprobs

KINDS = {"train": "known", "held_out": "held_out_relation", "unknown": "unknown_entity"}
"""Fact split -> the ``meta["kind"]`` of its examples."""


def eval_facts(kb: KnowledgeBase, cfg: WorldConfig) -> list[Fact]:
    known = kb.facts_in("train")
    rng = random.Random(f"toy-facts-eval-{cfg.seed}")
    sample = sorted(rng.sample(range(len(known)), min(cfg.n_eval_known, len(known))))
    return [known[i] for i in sample] + kb.facts_in("held_out") + kb.facts_in("unknown")


def _meta(kb: KnowledgeBase, fact: Fact) -> dict[str, Any]:
    ent = kb.entities[fact.entity]
    look = None if ent.lookalike_of is None else kb.entities[ent.lookalike_of].name
    return {"kind": KINDS[fact.split], "relation": fact.relation, "gold": fact.answer, "entity": ent.index,
            "region": ent.family, "lookalike_of": look}


def generation_examples(
    kb: KnowledgeBase, model: HookedTransformer, facts: list[Fact]
) -> tuple[list[Example], list[float]]:
    """The model's greedy answer to each fact's prompt, labelled; also the probability it gave that answer."""
    prompts = [kb.prompt(f) for f in facts]
    max_logprob, pred_ids = next_token_logprobs(model, prompts).max(-1)
    answers = model.tokenizer.convert_ids_to_tokens(pred_ids.tolist())
    out = []
    for fact, prompt, answer in zip(facts, prompts, answers, strict=True):
        out.append(Example(f"toy-gen-{fact.entity:04d}-{fact.relation}", kb.entities[fact.entity].name, prompt,
                           f" {answer}", int(answer != fact.answer), _meta(kb, fact)))
    return out, max_logprob.exp().tolist()


def statement_examples(kb: KnowledgeBase, facts: list[Fact], seed: int) -> list[Example]:
    rng = random.Random(f"toy-facts-statement-{seed}")
    out = []
    for fact in facts:
        wrong = rng.choice([a for a in kb.relation(fact.relation).answers if a != fact.answer])
        group, prompt, meta = kb.entities[fact.entity].name, kb.prompt(fact), _meta(kb, fact)
        stem = f"toy-stmt-{fact.entity:04d}-{fact.relation}"
        out.append(Example(f"{stem}-true", group, prompt, f" {fact.answer}", 0, meta))
        out.append(Example(f"{stem}-false", group, prompt, f" {wrong}", 1, meta))
    return out


def save_examples(examples: list[Example], path: str | Path) -> None:
    lines = (json.dumps({"id": e.id, "group": e.group, "prompt": e.prompt, "answer": e.answer, "label": e.label,
                         "meta": e.meta}) for e in examples)
    Path(path).write_text("\n".join(lines) + "\n")


def read_examples(path: str | Path) -> list[Example]:
    return [Example(**json.loads(line)) for line in Path(path).read_text().splitlines() if line.strip()]
