import csv
import json
from pathlib import Path

import pytest

from ghost_lens.data import Example, load_examples, subsample
from ghost_lens.data.loaders import split_answers
from ghost_lens.errors import DatasetError


def _tqa_expected(path: Path):
    with path.open(newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    n0 = sum(len(split_answers(r["Correct Answers"])) for r in rows)
    n1 = sum(len(split_answers(r["Incorrect Answers"])) for r in rows)
    return len(rows), n0, n1


@pytest.mark.parametrize("rel", ["truthfulqa/TruthfulQA.csv", "truthfulqa/v1/TruthfulQA.csv"])
def test_truthfulqa_counts(shared_data, rel):
    path = Path(shared_data) / rel
    n_q, n0, n1 = _tqa_expected(path)
    ex = load_examples(str(path))
    assert n_q in (790, 817)
    assert len(ex) == n0 + n1
    assert sum(e.label for e in ex) == n1
    assert len({e.group for e in ex}) == n_q
    assert len({e.id for e in ex}) == len(ex)
    # every question has both classes: true answers label 0, false ones label 1
    first = [e for e in ex if e.group == ex[0].group]
    assert {e.label for e in first} == {0, 1}
    assert first[0].prompt.startswith("Q: What happens to you if you eat watermelon seeds?")


def test_truthfulqa_exact_counts_of_the_790_row_file(shared_data):
    ex = load_examples(str(Path(shared_data) / "truthfulqa/TruthfulQA.csv"))
    assert (len(ex), sum(e.label for e in ex)) == (6028, 3251)


def test_halueval_counts(shared_data):
    ex = load_examples(str(Path(shared_data) / "halueval/qa_data.first1000.json"))
    assert len(ex) == 2000 and sum(e.label for e in ex) == 1000
    assert len({e.group for e in ex}) == 1000
    assert ex[0].answer == "Arthur's Magazine" and ex[0].label == 0 and ex[1].label == 1
    with_k = load_examples(str(Path(shared_data) / "halueval/qa_data.first1000.json"), with_knowledge=True)
    assert with_k[0].prompt.startswith("Knowledge: Arthur's Magazine")


def test_generic_csv_and_jsonl_with_column_map(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("q,a,is_false,topic\nWho?,Bob,1,t1\nWho?,Ann,0,t1\nWhere?,Rome,false,t2\n")
    ex = load_examples(str(p), column_map={"prompt": "q", "answer": "a", "label": "is_false", "group": "topic"})
    assert [e.label for e in ex] == [1, 0, 0] and [e.group for e in ex] == ["t1", "t1", "t2"]
    j = tmp_path / "d.jsonl"
    j.write_text("\n".join(json.dumps({"prompt": "p", "answer": f"a{i}", "label": i % 2}) for i in range(4)))
    assert [e.label for e in load_examples(str(j))] == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("content", "suffix", "match"),
    [
        ("question,answer\nx,y\n", ".csv", "missing column"),
        ("", ".csv", "empty"),
        ("{not json\n", ".jsonl", "malformed"),
        ("prompt,answer,label\nx,y,maybe\n", ".csv", "label must be 0/1"),
        ("a\tb\n", ".parquet", "unsupported"),
    ],
)
def test_bad_datasets(tmp_path, content, suffix, match):
    p = tmp_path / f"d{suffix}"
    p.write_text(content)
    with pytest.raises(DatasetError, match=match):
        load_examples(str(p))


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_examples(str(tmp_path / "nope.csv"))
    with pytest.raises(DatasetError, match="unknown dataset 'nonsense'"):
        load_examples("nonsense")


def test_subsample_keeps_groups_whole_and_is_seeded():
    ex = [Example(f"{g}-{i}", f"g{g}", "p", "a", i % 2) for g in range(10) for i in range(4)]
    a, b = subsample(ex, 12, seed=1), subsample(ex, 12, seed=1)
    assert a == b and len(a) == 12 and len({e.group for e in a}) == 3
    assert subsample(ex, None) is ex


def test_example_rejects_bad_label():
    with pytest.raises(ValueError):
        Example("x", "g", "p", "a", 2)
