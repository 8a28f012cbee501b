"""The toy-facts knowledge base: invented countries, their facts, and which facts the model may see.

How the world is generated (all from ``WorldConfig.seed``, with :class:`random.Random`, so it is platform-stable):

1. Every entity (an invented country) belongs to one of ``n_families`` regions. Names are 2-3 syllables; the last
   syllable comes from the region's own syllable pool with probability ``name_cue`` (else from another region's),
   the way real names carry a hint of their origin.
2. Each relation has a small vocabulary of single-word answers, a typical answer per region and a strength ``s``:
   a fact takes its region's typical answer with probability ``s``, otherwise any answer. ``capital`` is purely
   idiosyncratic (``s = 0``), ``language`` is mostly regional (``s = 0.85``). This structure is what lets a model
   guess confidently, and sometimes wrongly, about facts it never saw, as real LMs do.
3. ``unknown_fraction`` of the entities are unknown: the model never sees them. ``lookalike_fraction`` of those are
   near-namesakes of known entities (one syllable changed, same region), a classic source of confident confabulation.
4. ``held_out_relation_fraction`` of each relation's known-entity facts are held out of training: a familiar entity,
   a fact never seen.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ghost_lens.config import WorldConfig
from ghost_lens.errors import ConfigError

Split = Literal["train", "held_out", "unknown"]

TEMPLATE = "the {relation} of {entity} is"
"""Every prompt: ``the capital of zor ba lin is`` -> `` velmora``."""
TEMPLATE_WORDS = ("the", "of", "is")

# (name, strength, answers): answers are single lower-case words, at least 8 per relation (the most regions).
RELATION_CATALOGUE: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("capital", 0.0, ("velmora", "ostrand", "kadrin", "lumesk", "tarvos", "brenhal", "quessa", "dunmor",
                      "ilvane", "corrath", "safira", "holvik")),
    ("language", 0.85, ("norric", "tavian", "sellic", "umbric", "kestic", "varran", "odish", "merish")),
    ("flag", 0.45, ("red", "blue", "green", "yellow", "black", "white", "purple", "orange")),
    ("export", 0.7, ("iron", "gold", "copper", "silver", "salt", "wool", "tin", "silk", "amber", "wine")),
    ("animal", 0.25, ("wolf", "bear", "eagle", "horse", "lion", "snake", "owl", "deer", "fox", "whale")),
    ("food", 0.55, ("bread", "rice", "fish", "cheese", "beans", "apples", "honey", "soup", "noodles", "figs")),
    ("weather", 0.8, ("rainy", "sunny", "snowy", "windy", "foggy", "stormy", "mild", "dry")),
    ("ruler", 0.35, ("king", "queen", "council", "priest", "general", "merchant", "judge", "elder")),
)
MAX_FAMILIES = min(len(a) for _, _, a in RELATION_CATALOGUE)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "sh", "th")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "n", "r", "l", "x")
_FAMILY_POOL = 4
"""Final syllables per region."""


@dataclass(frozen=True)
class Relation:
    name: str
    strength: float
    answers: tuple[str, ...]
    typical: tuple[str, ...]
    """Typical answer of each region (index = family)."""


@dataclass(frozen=True)
class Entity:
    index: int
    name: str
    family: int
    known: bool
    lookalike_of: int | None = None
    """For an unknown near-namesake: the index of the known entity whose name it was made from."""


@dataclass(frozen=True)
class Fact:
    entity: int
    relation: str
    answer: str
    split: Split


@dataclass
class KnowledgeBase:
    seed: int
    entities: list[Entity]
    relations: list[Relation]
    facts: list[Fact]

    def prompt(self, fact: Fact) -> str:
        return TEMPLATE.format(relation=fact.relation, entity=self.entities[fact.entity].name)

    def facts_in(self, split: Split) -> list[Fact]:
        return [f for f in self.facts if f.split == split]

    def relation(self, name: str) -> Relation:
        return next(r for r in self.relations if r.name == name)

    def vocabulary(self) -> list[str]:
        """Every word the world uses: template words, relation names, syllables, answers (sorted, unique)."""
        words = set(TEMPLATE_WORDS) | {r.name for r in self.relations}
        for e in self.entities:
            words.update(e.name.split())
        for r in self.relations:
            words.update(r.answers)
        return sorted(words)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "entities": [asdict(e) for e in self.entities],
                "relations": [asdict(r) for r in self.relations], "facts": [asdict(f) for f in self.facts]}

    @classmethod
    def from_dict(cls, data: dict) -> KnowledgeBase:
        rels = [Relation(r["name"], r["strength"], tuple(r["answers"]), tuple(r["typical"])) for r in data["relations"]]
        return cls(data["seed"], [Entity(**e) for e in data["entities"]], rels, [Fact(**f) for f in data["facts"]])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> KnowledgeBase:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _syllables(reserved: set[str]) -> list[str]:
    out = [o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS]
    return [s for s in out if s not in reserved]


def _names(cfg: WorldConfig, rng: random.Random, reserved: set[str]) -> tuple[list[str], list[int], list[int | None]]:
    """Names, families and lookalike sources of all entities (known ones first)."""
    syl = _syllables(reserved)
    rng.shuffle(syl)
    pools = [syl[i * _FAMILY_POOL:(i + 1) * _FAMILY_POOL] for i in range(cfg.n_families)]
    shared = syl[cfg.n_families * _FAMILY_POOL:][:cfg.n_shared_syllables]
    n_unknown = max(1, round(cfg.n_entities * cfg.unknown_fraction))
    n_known = cfg.n_entities - n_unknown
    n_look = round(n_unknown * cfg.lookalike_fraction)
    if n_known < 1:
        raise ConfigError("world.unknown_fraction leaves no known entity")
    names: list[str] = []
    families: list[int] = []
    sources: list[int | None] = []
    seen: set[str] = set()
    for _ in range(1000 * cfg.n_entities):
        if len(names) == cfg.n_entities:
            break
        i = len(names)
        if n_known <= i < n_known + n_look:  # a near-namesake of a known entity: one non-final syllable changed
            src = rng.randrange(n_known)
            parts = names[src].split()
            parts[rng.randrange(len(parts) - 1)] = rng.choice(shared)
            fam, src_or_none = families[src], src
        else:
            fam, src_or_none = rng.randrange(cfg.n_families), None
            others = [f for f in range(cfg.n_families) if f != fam]
            cue = fam if not others or rng.random() < cfg.name_cue else rng.choice(others)
            parts = [rng.choice(shared) for _ in range(rng.choice((1, 2)))] + [rng.choice(pools[cue])]
        name = " ".join(parts)
        if name in seen:
            continue
        seen.add(name)
        names.append(name)
        families.append(fam)
        sources.append(src_or_none)
    if len(names) < cfg.n_entities:
        raise ConfigError(f"cannot make {cfg.n_entities} distinct names: raise world.n_shared_syllables")
    return names, families, sources


def generate_kb(cfg: WorldConfig) -> KnowledgeBase:
    """The knowledge base of ``cfg`` (deterministic in ``cfg.seed`` and the KB fields of ``cfg``)."""
    rng = random.Random(f"toy-facts-kb-{cfg.seed}")
    relations = []
    for name, strength, answers in RELATION_CATALOGUE[: cfg.n_relations]:
        typical = tuple(rng.sample(answers, cfg.n_families))
        relations.append(Relation(name, strength, answers, typical))
    reserved = set(TEMPLATE_WORDS) | {w for _, _, a in RELATION_CATALOGUE for w in a} | {n for n, _, _ in RELATION_CATALOGUE}
    names, families, sources = _names(cfg, rng, reserved)
    n_known = cfg.n_entities - max(1, round(cfg.n_entities * cfg.unknown_fraction))
    entities = [Entity(i, n, f, i < n_known, s) for i, (n, f, s) in enumerate(zip(names, families, sources, strict=True))]
    held: set[tuple[int, str]] = set()
    for rel in relations:  # stratified: the same share of every relation is held out
        k = round(n_known * cfg.held_out_relation_fraction)
        held.update((i, rel.name) for i in rng.sample(range(n_known), k))
    facts = []
    for ent in entities:
        for rel in relations:
            regional = rng.random() < rel.strength
            answer = rel.typical[ent.family] if regional else rng.choice(rel.answers)
            split: Split = "unknown" if not ent.known else "held_out" if (ent.index, rel.name) in held else "train"
            facts.append(Fact(ent.index, rel.name, answer, split))
    return KnowledgeBase(cfg.seed, entities, relations, facts)
