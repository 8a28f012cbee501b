"""The world-facts benchmark: real facts with exact answers, asked of a real model.

Facts come from two registry data packages: ``countryinfo`` (capital and demonym of each country or territory) and
``periodictable`` (symbol, atomic number and, from the symbol, the name of elements 1-118). Every fact has a gold
answer and hand-checked aliases (``Washington D.C.`` / ``Washington``; ``Kyiv`` / ``Kiev``; ``79`` /
``seventy-nine``; ``aluminum`` / ``aluminium``). The group of a fact is its entity (``country:Japan``,
``element:gold``), so a split never puts one entity on both sides.

Steps of :func:`world_facts_examples`:

1. **Facts** (:func:`load_facts`): one per (entity, relation) of :data:`RELATIONS`.
2. **Subsample by groups first** (:func:`select_facts`), so ``num_samples=100`` asks about 100 questions only.
3. **Prompts** (:func:`build_prompt`): with the model's chat template when its tokenizer has one (an instruct model;
   a leading BOS string is dropped from the rendered text when the model prepends BOS itself), else
   ``Q: ...\\nA:``. The question asks for a short answer ("Answer with the city name only.").
4. **Generation mode**: the model answers greedily (:func:`ghost_lens.generate.generate`, batched, stopping at a
   line break or the end-of-turn token), through a cache (:mod:`ghost_lens.data.generation_cache`): a rerun never
   generates again. Each answer is judged by :func:`ghost_lens.data.answer_match.judge` (whose docstring defines
   correct / hallucinated / evasion precisely): correct -> label 0, hallucinated -> label 1, evasion -> left out of
   the examples and counted. ``prompt + answer`` is exactly the text the model read and wrote (the answer keeps a
   leading space in the ``Q:/A:`` format).
5. **Statement mode**: each fact once with its gold answer (label 0) and once with a false answer drawn, seeded,
   from the gold answers of the same relation (label 1). It needs no model (the model only picks the prompt format).

Every example's ``meta`` holds ``relation``, ``kind`` (= the relation, for the evaluation's per-kind table),
``entity``, ``gold`` and, in generation mode, the judgement's ``reason``. Generation statistics (questions, labelled,
hallucinated, evasions, per relation) are returned beside the examples for the run's manifest and report.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ghost_lens.data.answer_match import AnswerKind, judge, normalize, number_to_words
from ghost_lens.data.example import Example, take_whole_groups
from ghost_lens.errors import DatasetError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

NAMES = {"world-facts": "generation", "world-facts-statement": "statement"}
"""Dataset names -> mode."""
QA_FORMAT = "Q: {question}\nA:"


@dataclass(frozen=True)
class Relation:
    question: str
    """The question, with ``{subject}``."""
    instruction: str
    """Appended to the question: asks for a short answer."""
    kind: AnswerKind
    keywords: tuple[str, ...]
    """Words of the question besides the subject (an answer made only of these restates the question)."""


RELATIONS: dict[str, Relation] = {
    "capital": Relation("What is the capital of {subject}?", "Answer with the city name only.", "name",
                        ("capital", "capital city", "city")),
    "demonym": Relation("What is the demonym for people from {subject}?", "Answer with the demonym only.", "name",
                        ("demonym", "people", "person", "citizen", "nationality")),
    "element_symbol": Relation("What is the chemical symbol of {subject}?", "Answer with the symbol only.",
                               "symbol", ("chemical symbol", "element", "symbol")),
    "atomic_number": Relation("What is the atomic number of {subject}?", "Answer with the number only.", "number",
                              ("atomic number", "element", "number")),
    "element_name": Relation("Which chemical element has the symbol {subject}?",
                             "Answer with the element name only.", "name", ("chemical element", "symbol", "element")),
}


@dataclass(frozen=True)
class Fact:
    id: str
    group: str
    relation: str
    entity: str
    """The entity's name (``Japan``, ``gold``)."""
    subject: str
    """What the question names (the entity, or the element's symbol for ``element_name``)."""
    gold: str
    aliases: tuple[str, ...] = ()

    @property
    def question(self) -> str:
        rel = RELATIONS[self.relation]
        return f"{rel.question.format(subject=self.subject)} {rel.instruction}"

    def judge(self, answer: str):
        rel = RELATIONS[self.relation]
        return judge(answer, self.gold, self.aliases, kind=rel.kind, subject=self.subject, keywords=rel.keywords)


# ---- curation of countryinfo --------------------------------------------------------------------------------------

SKIP_COUNTRIES = frozenset({
    "Antarctica", "Bouvet Island", "United States Minor Outlying Islands", "Heard Island and McDonald Islands",
    "Antilles néerlandaises", "Serbia and Montenegro", "Burma", "Palestine, State of", "Vatican City State",
    "Bonaire, Sint Eustatius and Saba", "Scotland", "Wales", "Hong Kong", "Macau",
})
"""Duplicates (Burma = Myanmar), dissolved states, places without a capital, and parts of one country."""
RENAME = {
    "Swaziland": "Eswatini", "Republic of Macedonia": "North Macedonia", "Holy See (Vatican City State)":
    "Vatican City", "Virgin Islands, British": "the British Virgin Islands", "Virgin Islands, U.S.":
    "the U.S. Virgin Islands", "Saint Martin (French part)": "Saint Martin", "Sint Maarten (Dutch part)":
    "Sint Maarten", "The Bahamas": "the Bahamas", "The Gambia": "the Gambia", "Czech Republic": "the Czech Republic",
    "Netherlands": "the Netherlands", "Philippines": "the Philippines", "United States": "the United States",
    "United Kingdom": "the United Kingdom", "United Arab Emirates": "the United Arab Emirates",
    "Democratic Republic of the Congo": "the Democratic Republic of the Congo", "Republic of the Congo":
    "the Republic of the Congo", "Central African Republic": "the Central African Republic",
    "Dominican Republic": "the Dominican Republic", "Maldives": "the Maldives", "Comoros": "the Comoros",
    "Seychelles": "the Seychelles", "Marshall Islands": "the Marshall Islands", "Solomon Islands":
    "the Solomon Islands", "Cayman Islands": "the Cayman Islands", "Falkland Islands": "the Falkland Islands",
    "Faroe Islands": "the Faroe Islands", "Cook Islands": "the Cook Islands", "Åland Islands": "the Åland Islands",
    "Turks and Caicos Islands": "the Turks and Caicos Islands", "Northern Mariana Islands":
    "the Northern Mariana Islands", "Pitcairn Islands": "the Pitcairn Islands", "Cocos (Keeling) Islands":
    "the Cocos (Keeling) Islands", "Isle of Man": "the Isle of Man", "Federated States of Micronesia":
    "the Federated States of Micronesia", "French Southern and Antarctic Lands": "the French Southern Lands",
}
CAPITAL_ALIASES = {
    "Washington D.C.": ("Washington", "Washington DC", "Washington, D.C."), "Nur-Sultan": ("Astana",),
    "Kyiv": ("Kiev",), "Naypyidaw": ("Nay Pyi Taw", "Naypyitaw", "Naypyidaw City"), "Sucre": ("La Paz",),
    "Yamoussoukro": ("Abidjan",), "Pretoria": ("Cape Town", "Bloemfontein", "Tshwane"),
    "Colombo": ("Sri Jayawardenepura Kotte", "Kotte"), "Lobamba": ("Mbabane",), "Kuala Lumpur": ("Putrajaya",),
    "Ulaanbaatar": ("Ulan Bator",), "Ashgabat": ("Ashkhabad",), "Bern": ("Berne",), "El Aaiún": ("Laayoune",),
    "Hagåtña": ("Agana",), "Papeetē": ("Papeete",), "Ramallah": ("East Jerusalem", "Jerusalem"),
    "Vatican City State": ("Vatican City", "Vatican"), "City of San Marino": ("San Marino",),
    "Luxembourg": ("Luxembourg City",), "Djibouti": ("Djibouti City",), "Singapore": ("Singapore City",),
    "Monaco": ("Monaco City", "Monte Carlo"), "South Tarawa": ("Tarawa",), "Brasília": ("Brasilia",),
    "Chișinău": ("Kishinev",), "Tórshavn": ("Torshavn",), "Mata-Utu": ("Matautu",),
}
DEMONYM_FIX = {"Djibouti": "Djiboutian", "Gibraltar": "Gibraltarian"}
DEMONYM_SKIP = frozenset({
    "Martinique", "Mayotte", "Réunion", "Saint Pierre and Miquelon", "French Southern and Antarctic Lands",
    "Northern Mariana Islands", "Svalbard and Jan Mayen", "British Indian Ocean Territory", "Christmas Island",
    "Guernsey", "Jersey", "French Guiana", "Holy See (Vatican City State)", "South Georgia",
})
"""Territories whose listed demonym is their sovereign's nationality (``French`` for Martinique) or not a demonym."""
DEMONYM_ALIASES = {
    "Argentinean": ("Argentine", "Argentinian"), "Cape Verdian": ("Cape Verdean",), "Ecuadorean": ("Ecuadorian",),
    "Kirghiz": ("Kyrgyz", "Kyrgyzstani"), "Tadzhik": ("Tajik", "Tajikistani"), "Slovene": ("Slovenian",),
    "Slovak": ("Slovakian",), "Maldivan": ("Maldivian",), "Comoran": ("Comorian",), "Nepalese": ("Nepali",),
    "Kazakhstani": ("Kazakh",), "Uzbekistani": ("Uzbek",), "Icelander": ("Icelandic",),
    "Luxembourger": ("Luxembourgish",), "Surinamer": ("Surinamese",), "Filipino": ("Filipina", "Philippine"),
    "Laotian": ("Lao",), "Saudi Arabian": ("Saudi",), "Emirati": ("Emirian",), "Danish": ("Dane",),
    "Finnish": ("Finn",), "Polish": ("Pole",), "Swedish": ("Swede",), "Spanish": ("Spaniard",),
    "Turkish": ("Turk",), "Scottish": ("Scot",), "British": ("Briton", "Brit"), "Irish": ("Irishman", "Irishwoman"),
    "Dutch": ("Netherlander",), "Motswana": ("Batswana", "Botswanan"), "Mosotho": ("Basotho", "Lesothan"),
    "Guinea-Bissauan": ("Bissau-Guinean",), "Sao Tomean": ("Santomean",), "Monegasque": ("Monacan",),
    "Sammarinese": ("San Marinese",), "Kittian and Nevisian": ("Kittitian", "Kittian", "Nevisian"),
    "Trinidadian": ("Tobagonian", "Trinidadian and Tobagonian"), "Burmese": ("Myanmar", "Myanmarese"),
    "Swazi": ("Eswatini", "Liswati", "Swati"), "Macedonian": ("North Macedonian",), "Czech": ("Czechian",),
    "Guadeloupian": ("Guadeloupean",), "Bahraini": ("Bahrainian",), "Malagasy": ("Madagascan",),
    "Ni-Vanuatu": ("Vanuatuan",), "I-Kiribati": ("Kiribatian",), "Manx": ("Manxman", "Manxwoman"),
    "Azerbaijani": ("Azeri",), "Bosnian": ("Herzegovinian", "Bosnian and Herzegovinian"),
    "Antiguan": ("Barbudan", "Antiguan and Barbudan"), "American": ("US", "U.S."), "New Zealander": ("Kiwi",),
    "Palestinian": ("Palestinian Arab",), "East Timorese": ("Timorese",), "Congolese": (), "Thai": (),
}
ELEMENT_ALIASES = {"aluminum": ("aluminium",), "cesium": ("caesium",), "sulfur": ("sulphur",)}


def _slug(text: str) -> str:
    return normalize(text).replace(" ", "-")


def _capital_aliases(capital: str) -> tuple[str, ...]:
    extra = list(CAPITAL_ALIASES.get(capital, ()))
    if capital.endswith(" City"):
        extra.append(capital[: -len(" City")])
    if capital.startswith("City of "):
        extra.append(capital[len("City of ") :])
    return tuple(extra)


def country_facts() -> list[Fact]:
    """Capital and demonym of each country or territory in ``countryinfo`` (curated: :data:`SKIP_COUNTRIES` ...)."""
    import countryinfo

    facts: list[Fact] = []
    seen: set[str] = set()
    for country in countryinfo.all_countries():
        info = country.info()
        raw = info.get("name")
        if not raw or raw in SKIP_COUNTRIES or raw in seen:
            continue
        seen.add(raw)
        name = RENAME.get(raw, raw)
        entity = name.removeprefix("the ")
        group = f"country:{entity}"
        capital = info.get("capital")
        if isinstance(capital, str) and capital.strip() and "/" not in capital:
            facts.append(Fact(f"wf-capital-{_slug(entity)}", group, "capital", entity, name, capital.strip(),
                              _capital_aliases(capital.strip())))
        demonym = DEMONYM_FIX.get(raw, info.get("demonym"))
        if isinstance(demonym, str) and demonym.strip() and raw not in DEMONYM_SKIP:
            first, *others = [d.strip() for d in demonym.split(",") if d.strip()]
            aliases = (*others, *DEMONYM_ALIASES.get(first, ()))
            facts.append(Fact(f"wf-demonym-{_slug(entity)}", group, "demonym", entity, name, first, aliases))
    return facts


def element_facts() -> list[Fact]:
    """Symbol, atomic number and name-from-symbol of elements 1-118 in ``periodictable``."""
    import periodictable

    facts: list[Fact] = []
    for el in periodictable.elements:
        if not 1 <= el.number <= 118:
            continue
        name, group, slug = el.name, f"element:{el.name}", el.name
        aliases = ELEMENT_ALIASES.get(name, ())
        facts.append(Fact(f"wf-element_symbol-{slug}", group, "element_symbol", name, name, el.symbol))
        facts.append(Fact(f"wf-atomic_number-{slug}", group, "atomic_number", name, name, str(el.number),
                          (number_to_words(el.number),)))
        facts.append(Fact(f"wf-element_name-{slug}", group, "element_name", name, el.symbol, name.capitalize(),
                          aliases))
    return facts


def load_facts(relations: Sequence[str] | None = None) -> list[Fact]:
    """Every fact of ``relations`` (default: all of :data:`RELATIONS`), countries first, in a fixed order."""
    unknown = set(relations or ()) - set(RELATIONS)
    if unknown:
        raise DatasetError(f"unknown world-facts relation(s) {sorted(unknown)}: use {', '.join(RELATIONS)}")
    facts = country_facts() + element_facts()
    return [f for f in facts if relations is None or f.relation in relations]


def select_facts(facts: list[Fact], num_samples: int | None, seed: int = 0) -> list[Fact]:
    """Whole groups in the seeded order of :func:`ghost_lens.data.loaders.subsample`, until ``num_samples`` facts."""
    if num_samples is None or num_samples >= len(facts):
        return facts
    return take_whole_groups(facts, num_samples, seed)


# ---- prompts ------------------------------------------------------------------------------------------------------


def prompt_format(model: HookedTransformer | None) -> Literal["chat", "qa"]:
    tok = getattr(model, "tokenizer", None)
    return "chat" if getattr(tok, "chat_template", None) else "qa"


def build_prompt(question: str, model: HookedTransformer | None) -> str:
    """The model's chat template around ``question`` (generation prompt added), else ``Q: {question}\\nA:``.

    When the model prepends BOS itself (``cfg.default_prepend_bos``) and the rendered chat text starts with the
    BOS string (SmolLM2's ``<|im_start|>``), that string is dropped, so the model reads it once.
    """
    if prompt_format(model) == "qa":
        return QA_FORMAT.format(question=question)
    tok = model.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                   add_generation_prompt=True)
    bos = getattr(tok, "bos_token", None)
    if bos and getattr(model.cfg, "default_prepend_bos", True) and text.startswith(bos):
        text = text[len(bos) :]
    return text


def stop_strings(model: HookedTransformer | None) -> tuple[str, ...]:
    """A line break, and the tokenizer's end-of-turn / end-of-text token."""
    eos = getattr(getattr(model, "tokenizer", None), "eos_token", None)
    return ("\n", eos) if eos else ("\n",)


def cut_answer(text: str, stops: Sequence[str]) -> str:
    """The continuation up to its first stop string, trailing whitespace removed (leading kept)."""
    for s in stops:
        if s and s in text:
            text = text[: text.index(s)]
    return text.rstrip()


# ---- the two modes ------------------------------------------------------------------------------------------------


@dataclass
class GenerationSettings:
    max_new_tokens: int = 16
    """Names, numbers and symbols need few tokens; a longer answer is cut (and judged on its first sentence)."""
    batch_size: int = 32


@dataclass
class WorldFactsStats:
    """What :func:`world_facts_examples` asked and how the answers were judged (saved in the run's manifest)."""

    mode: str
    n_questions: int = 0
    n_labelled: int = 0
    n_correct: int = 0
    n_hallucinated: int = 0
    n_evasions: int = 0
    evasion_reasons: dict[str, int] = field(default_factory=dict)
    per_relation: dict[str, dict[str, int]] = field(default_factory=dict)
    prompt_format: str = "qa"
    model: str | None = None
    n_generated: int = 0
    """Answers generated by this call (0 when every answer came from the cache)."""
    generation_s: float = 0.0
    cache_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {"dataset": "world-facts" if self.mode == "generation" else "world-facts-statement", **asdict(self)}


def _meta(fact: Fact, **extra: Any) -> dict[str, Any]:
    return {"relation": fact.relation, "kind": fact.relation, "entity": fact.entity, "gold": fact.gold, **extra}


def statement_examples(facts: list[Fact], model: HookedTransformer | None = None, seed: int = 0):
    """Gold answer (label 0) and a seeded false answer of the same relation (label 1) per fact."""
    rng = random.Random(f"world-facts-statement-{seed}")
    golds: dict[str, list[str]] = {}
    for f in facts:
        golds.setdefault(f.relation, []).append(f.gold)
    lead = " " if prompt_format(model) == "qa" else ""
    out: list[Example] = []
    for f in facts:
        right = {normalize(a) for a in (f.gold, *f.aliases)}
        pool = sorted({g for g in golds[f.relation] if normalize(g) not in right})
        if not pool:
            raise DatasetError(f"world-facts relation {f.relation!r} has no false answer for {f.entity!r}")
        prompt = build_prompt(f.question, model)
        out.append(Example(f"{f.id}-true", f.group, prompt, lead + f.gold, 0, _meta(f)))
        out.append(Example(f"{f.id}-false", f.group, prompt, lead + rng.choice(pool), 1, _meta(f)))
    stats = WorldFactsStats("statement", n_questions=len(facts), n_labelled=len(out), n_correct=len(facts),
                            n_hallucinated=len(facts), prompt_format=prompt_format(model))
    return out, stats


def generation_examples(
    facts: list[Fact],
    model: HookedTransformer,
    *,
    settings: GenerationSettings | None = None,
    model_name: str | None = None,
    cache_dir: str | None = None,
    generate_fn: Callable[..., list[str]] | None = None,
    progress: Any = None,
) -> tuple[list[Example], WorldFactsStats]:
    """The model's greedy answer to every fact, judged; evasions are counted and left out."""
    from ghost_lens.data.generation_cache import cached_generate

    if getattr(model, "tokenizer", None) is None:
        raise DatasetError("world-facts generation needs a model with a tokenizer")
    settings = settings or GenerationSettings()
    model_name = model_name or getattr(model.cfg, "model_name", None) or "model"
    prompts = [build_prompt(f.question, model) for f in facts]
    stops = stop_strings(model)
    gen_kwargs = {"max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size,
                  "temperature": 0.0, "stop": list(stops)}
    t0 = time.perf_counter()
    raw, n_new, cache_file = cached_generate(model, prompts, model_name=model_name, settings=gen_kwargs,
                                             cache_dir=cache_dir, generate_fn=generate_fn, progress=progress)
    stats = WorldFactsStats("generation", n_questions=len(facts), prompt_format=prompt_format(model),
                            model=model_name, n_generated=n_new, generation_s=round(time.perf_counter() - t0, 2),
                            cache_file=str(cache_file))
    reasons: Counter[str] = Counter()
    out: list[Example] = []
    for fact, prompt, text in zip(facts, prompts, raw, strict=True):
        answer = cut_answer(text, stops)
        j = fact.judge(answer)
        rel = stats.per_relation.setdefault(fact.relation, {"n_questions": 0, "n_correct": 0,
                                                             "n_hallucinated": 0, "n_evasions": 0})
        rel["n_questions"] += 1
        if j.label is None:
            rel["n_evasions"] += 1
            reasons[j.reason] += 1
            continue
        rel["n_correct" if j.label == 0 else "n_hallucinated"] += 1
        out.append(Example(fact.id, fact.group, prompt, answer, j.label, _meta(fact, reason=j.reason)))
    stats.n_labelled = len(out)
    stats.n_hallucinated = sum(e.label for e in out)
    stats.n_correct = stats.n_labelled - stats.n_hallucinated
    stats.n_evasions = stats.n_questions - stats.n_labelled
    stats.evasion_reasons = dict(reasons)
    logger.info("world-facts: %d questions, %d labelled (%d hallucinated), %d evasions left out",
                stats.n_questions, stats.n_labelled, stats.n_hallucinated, stats.n_evasions)
    return out, stats


def world_facts_examples(
    mode: Literal["generation", "statement"] = "generation",
    model: HookedTransformer | None = None,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    relations: Sequence[str] | None = None,
    **generation_kwargs: Any,
) -> tuple[list[Example], WorldFactsStats]:
    """Examples of one mode and their statistics; ``num_samples`` facts are chosen by groups before generating."""
    facts = select_facts(load_facts(relations), num_samples, seed)
    if mode == "statement":
        return statement_examples(facts, model, seed)
    if mode != "generation":
        raise DatasetError(f"world-facts comes in modes generation and statement, not {mode!r}")
    if model is None:
        raise DatasetError("dataset 'world-facts' has the model answer every question: pass the model "
                           "(load_examples(..., model=...)), or use 'world-facts-statement', which needs none")
    return generation_examples(facts, model, **generation_kwargs)
