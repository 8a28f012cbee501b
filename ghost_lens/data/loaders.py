"""Dataset loaders: every source becomes a list of :class:`~ghost_lens.data.example.Example`.

Sources
- ``toy-facts`` / ``toy-facts-generation``: the toy world's generation mode (label 1 = the model answered wrong);
  ``toy-facts-statement``: a true and a false answer per fact (label 1 = false).
- ``world-facts``: real facts (countries, elements) the given ``model`` answers; label 1 = its answer is wrong,
  evasions left out (:mod:`ghost_lens.data.world_facts`); ``world-facts-statement``: a true and a false answer per
  fact, no model needed.
- ``truthfulqa``: the hub dataset ``truthfulqa/truthful_qa`` (config ``generation``) when online, or a local
  ``TruthfulQA.csv`` (either the 790-row or the 817-row v1 layout). Every correct answer is an example with label 0,
  every incorrect answer label 1; the group is the question.
- ``halueval``: HaluEval QA JSON lines (``right_answer`` -> 0, ``hallucinated_answer`` -> 1, group = question), from a
  local file or the hub dataset ``pminervini/HaluEval`` (config ``qa``).
- any other CSV / JSONL path: TruthfulQA and HaluEval layouts are recognised by their columns; otherwise a generic
  table with ``prompt``, ``answer``, ``label`` and optional ``group`` / ``id`` columns (rename with ``column_map``).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ghost_lens.data.example import Example, take_whole_groups
from ghost_lens.errors import DatasetError

logger = logging.getLogger(__name__)

QA_TEMPLATE = "Q: {question}\nA:"
TRUTHFULQA_HUB = ("truthfulqa/truthful_qa", "generation")
HALUEVAL_HUB = ("pminervini/HaluEval", "qa")
TOY_NAMES = {"toy-facts": "generation", "toy-facts-generation": "generation", "toy-facts-statement": "statement"}
GENERIC_COLUMNS = ("prompt", "answer", "label")


def split_answers(cell: str) -> list[str]:
    """TruthfulQA keeps several answers in one cell separated by ``"; "``."""
    return [a.strip() for a in (cell or "").split(";") if a.strip()]


# ---- TruthfulQA -------------------------------------------------------------------------------------------------


def truthfulqa_examples(rows: Iterable[dict[str, Any]], source: str = "truthfulqa") -> list[Example]:
    """Rows with ``Question``/``Correct Answers``/``Incorrect Answers`` (CSV) or the hub's lower-case fields."""
    out: list[Example] = []
    for q_idx, row in enumerate(rows):
        row = {str(k).lstrip("\ufeff").strip().lower().replace(" ", "_"): v for k, v in row.items()}
        question = (row.get("question") or "").strip()
        correct, incorrect = row.get("correct_answers"), row.get("incorrect_answers")
        if not question or correct is None or incorrect is None:
            raise DatasetError(f"{source}: row {q_idx + 1} lacks Question / Correct Answers / Incorrect Answers")
        correct = split_answers(correct) if isinstance(correct, str) else [str(a) for a in correct]
        incorrect = split_answers(incorrect) if isinstance(incorrect, str) else [str(a) for a in incorrect]
        prompt = QA_TEMPLATE.format(question=question)
        meta = {"category": row.get("category"), "type": row.get("type")}
        for label, answers in ((0, correct), (1, incorrect)):
            for a_idx, answer in enumerate(answers):
                out.append(Example(f"tqa-{q_idx}-{label}-{a_idx}", f"tqa-{q_idx}", prompt, answer, label, meta))
    return out


# ---- HaluEval ---------------------------------------------------------------------------------------------------


def halueval_examples(rows: Iterable[dict[str, Any]], source: str = "halueval", with_knowledge: bool = False):
    out: list[Example] = []
    for i, row in enumerate(rows):
        missing = [k for k in ("question", "right_answer", "hallucinated_answer") if not row.get(k)]
        if missing:
            raise DatasetError(f"{source}: row {i + 1} lacks {', '.join(missing)}")
        question = row["question"].strip()
        prompt = QA_TEMPLATE.format(question=question)
        if with_knowledge and row.get("knowledge"):
            prompt = f"Knowledge: {row['knowledge'].strip()}\n{prompt}"
        out.append(Example(f"halu-{i}-0", f"halu-{i}", prompt, row["right_answer"].strip(), 0))
        out.append(Example(f"halu-{i}-1", f"halu-{i}", prompt, row["hallucinated_answer"].strip(), 1))
    return out


# ---- generic tables ---------------------------------------------------------------------------------------------


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".json"):
            text = path.read_text(encoding="utf-8-sig")
            stripped = text.lstrip()
            if suffix == ".json" and stripped.startswith("["):
                rows = json.loads(stripped)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
            if not all(isinstance(r, dict) for r in rows):
                raise DatasetError(f"{path}: every JSON line must be an object")
            return rows
        if suffix in (".csv", ".tsv"):
            with path.open(newline="", encoding="utf-8-sig") as fh:
                return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: malformed {suffix[1:].upper()} ({exc})") from None
    raise DatasetError(f"{path}: unsupported dataset format {suffix or '(no suffix)'}; use .csv, .tsv or .jsonl")


def _parse_label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        return int(value)
    text = str(value).strip().lower()
    mapping = {"1": 1, "0": 0, "true": 1, "false": 0, "hallucinated": 1, "faithful": 0, "1.0": 1, "0.0": 0}
    if text not in mapping:
        raise DatasetError(f"{where}: label must be 0/1 (1 = hallucinated), got {value!r}")
    return mapping[text]


def _check_row(row: dict[str, Any], first: dict[str, Any], where: str) -> None:
    """Every row has row 1's keys, and a prompt and an answer that are text (a null is not the text "None")."""
    if row.keys() != first.keys():
        if None in row:  # csv.DictReader's key for the fields beyond the header
            raise DatasetError(f"{where} has more fields than the header")
        lacks, extra = sorted(first.keys() - row.keys(), key=str), sorted(row.keys() - first.keys(), key=str)
        parts = ([f"lacks {', '.join(map(str, lacks))}"] if lacks else []) + (
            [f"has {', '.join(map(str, extra))} that row 1 lacks"] if extra else [])
        raise DatasetError(f"{where} has other keys than row 1 ({'; '.join(parts)}): every row needs the same keys")


def generic_examples(rows: list[dict[str, Any]], source: str, column_map: dict[str, str] | None = None):
    cmap = {c: c for c in ("prompt", "answer", "label", "group", "id")} | dict(column_map or {})
    columns = set(rows[0]) if rows else set()
    missing = [cmap[c] for c in GENERIC_COLUMNS if cmap[c] not in columns]
    if missing:
        raise DatasetError(
            f"{source}: missing column(s) {', '.join(missing)} (found: {', '.join(sorted(columns)) or 'none'}); "
            "rename yours to prompt, answer, label (optional group, id), or pass column_map= to load_examples"
        )
    out = []
    for i, row in enumerate(rows):
        where = f"{source} row {i + 1}"
        _check_row(row, rows[0], where)
        group = str(row.get(cmap["group"]) or row[cmap["prompt"]])
        ex_id = str(row.get(cmap["id"]) or f"row-{i}")
        for col in ("prompt", "answer"):
            value = row[cmap[col]]
            if value is None or not isinstance(value, str | int | float) or not str(value).strip():
                raise DatasetError(f"{where}: {cmap[col]} must be non-empty text, got {value!r}")
        out.append(Example(ex_id, group, str(row[cmap["prompt"]]), str(row[cmap["answer"]]),
                           _parse_label(row[cmap["label"]], where)))
    return out


def load_path(path: str | Path, column_map: dict[str, str] | None = None, with_knowledge: bool = False):
    """A local file, recognised by its columns (TruthfulQA, HaluEval) or read as a generic table."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    rows = _read_rows(path)
    if not rows:
        raise DatasetError(f"{path}: the dataset is empty")
    cols = {str(c).lstrip("\ufeff").strip().lower() for c in rows[0]}
    if column_map is None and {"question", "correct answers", "incorrect answers"} <= cols:
        return truthfulqa_examples(rows, str(path))
    if column_map is None and {"question", "right_answer", "hallucinated_answer"} <= cols:
        return halueval_examples(rows, str(path), with_knowledge=with_knowledge)
    return generic_examples(rows, str(path), column_map)


def _load_hub(name: str, config: str, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        return list(datasets.load_dataset(name, config, split=split))
    except Exception as exc:  # offline, unknown name, ...: one line, with what to do instead
        raise DatasetError(
            f"could not load hub dataset {name!r} ({type(exc).__name__}); offline? pass a local file path instead"
        ) from None


def subsample(examples: list[Example], n: int | None, seed: int = 0) -> list[Example]:
    """Keep ``n`` examples, taking whole groups in a seeded random order (the last group may be cut)."""
    if n is None or n >= len(examples):
        return examples
    return take_whole_groups(examples, n, seed)[:n]


def dataset_uses_model(source: str) -> bool:
    """Whether ``load_examples(source)`` takes the model: ``world-facts`` needs it (the model answers every question),
    ``world-facts-statement`` uses its chat template for the prompts."""
    from ghost_lens.data.world_facts import NAMES as WORLD_FACTS_NAMES

    return source in WORLD_FACTS_NAMES


def load_examples(
    source: str,
    *,
    num_samples: int | None = None,
    seed: int = 0,
    column_map: dict[str, str] | None = None,
    world_cfg: Any = None,
    with_knowledge: bool = False,
    model: Any = None,
    info: dict[str, Any] | None = None,
    progress: Any = None,
) -> list[Example]:
    """Load ``source`` (a name from the module docstring or a file path) as a list of Examples.

    ``model`` (a HookedTransformer) answers the questions of ``world-facts``; ``info``, when given, receives the
    dataset's statistics (``world-facts``: questions, labelled, hallucinated, evasions, per relation);
    ``progress(done, total)`` is called while the model answers.
    """
    from ghost_lens.data.world_facts import NAMES as WORLD_FACTS_NAMES

    if source in WORLD_FACTS_NAMES:
        from ghost_lens.data.world_facts import world_facts_examples

        mode = WORLD_FACTS_NAMES[source]
        kwargs = {"progress": progress} if mode == "generation" else {}
        examples, stats = world_facts_examples(mode, model, num_samples=num_samples, seed=seed, **kwargs)
        if info is not None:
            info.update(stats.to_dict())
    elif source in TOY_NAMES:
        from ghost_lens.toy.world import get_world

        examples = get_world(world_cfg).examples(TOY_NAMES[source])
    elif source == "truthfulqa":
        examples = truthfulqa_examples(_load_hub(*TRUTHFULQA_HUB, split="validation"), "truthfulqa")
    elif source == "halueval":
        examples = halueval_examples(_load_hub(*HALUEVAL_HUB, split="data"), "halueval", with_knowledge)
    elif Path(source).suffix or Path(source).exists():
        examples = load_path(source, column_map, with_knowledge)
    else:
        known = ", ".join([*TOY_NAMES, *WORLD_FACTS_NAMES, "truthfulqa", "halueval"])
        raise DatasetError(f"unknown dataset {source!r}: use one of {known} or a path to a .csv/.jsonl file")
    if not examples:
        raise DatasetError(f"dataset {source!r} has no examples")
    examples = subsample(examples, num_samples, seed)
    n_pos = sum(ex.label for ex in examples)
    logger.info("loaded %d examples (%d labelled hallucinated) from %s", len(examples), n_pos, source)
    return examples
