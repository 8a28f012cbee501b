"""The answer-joining rule and left truncation of the capture (pure functions)."""

from __future__ import annotations

import pytest
import torch

from ghost_lens.capture.batching import plan_batches
from ghost_lens.capture.tokenize import answer_separator, truncate_left
from ghost_lens.errors import DatasetError


@pytest.mark.parametrize(
    ("prompt", "answer", "sep"),
    [("The capital is", "Paris", " "), ("A: ", "Paris", ""), ("A:\n", "Paris", ""), ("Q", " x", ""), ("", "x", "")],
)
def test_answer_separator(prompt, answer, sep):
    assert answer_separator(prompt, answer) == sep


def test_truncate_left_keeps_bos_and_answer():
    toks = torch.arange(10)  # 0 = BOS, answer = 7..9
    out, start, end, cut = truncate_left(toks, 7, 10, 6, keep_first=True)
    assert cut and out.tolist() == [0, 5, 6, 7, 8, 9] and (start, end) == (3, 6)
    out, start, end, cut = truncate_left(toks, 7, 10, 6, keep_first=False)
    assert out.tolist() == [4, 5, 6, 7, 8, 9] and (start, end) == (3, 6)
    out, start, end, cut = truncate_left(toks, 7, 10, 4, keep_first=True)  # only the BOS before the answer
    assert out.tolist() == [0, 7, 8, 9] and start == 1
    assert truncate_left(toks, 7, 10, 10, keep_first=True) == (toks, 7, 10, False)
    with pytest.raises(DatasetError, match="do not fit"):
        truncate_left(toks, 7, 10, 3, keep_first=True)


def test_plan_batches_covers_every_token_once():
    seqs = [torch.arange(n) + 100 * i for i, n in enumerate([3, 7, 5, 2, 6])]
    spans = [(1, 3), (4, 7), (2, 5), (1, 2), (5, 6)]
    offsets = [0, 3, 10, 15, 17]
    flat = torch.cat(seqs)
    seen = torch.zeros(flat.numel(), dtype=torch.long)
    for b in plan_batches(seqs, spans, offsets, batch_size=2):
        assert b.tokens.shape[0] <= 2
        assert torch.equal(b.tokens.reshape(-1)[b.src], flat[b.dst])
        seen[b.dst] += 1
        for r, i in enumerate(b.examples.tolist()):
            start, end = spans[i]
            assert b.last_prompt[r] == r * b.tokens.shape[1] + start - 1
            assert torch.equal(b.tokens.reshape(-1)[b.answer[b.answer_row == r]], seqs[i][start:end])
    assert torch.all(seen == 1)
