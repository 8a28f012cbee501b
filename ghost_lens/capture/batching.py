"""Length-sorted, right-padded batches and the flat index maps the capture hooks read.

Right padding needs no attention mask: attention is causal and positions are absolute, so a real token never sees
the padding that follows it, and whatever the model computes at padded positions is simply never read. Positions
are addressed "flat" (``row * pos + position``) so one ``index_select`` on ``act.reshape(-1, d_model)`` picks them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch
from jaxtyping import Int
from torch import Tensor


@dataclass
class Batch:
    """One padded batch: its tokens, and where its positions come from and go to."""

    examples: Int[Tensor, " batch"]
    """Example indices (into the capture) of the rows. Stays on the CPU."""
    tokens: Int[Tensor, "batch pos"]
    """Right-padded token ids (the padding id is irrelevant: no real token attends to it)."""
    dst: Int[Tensor, " n_tok"]
    """Index in the capture's flat token axis of each kept token, row by row. Stays on the CPU."""
    src: Int[Tensor, " n_tok"]
    """Flat position in the batch of each kept token (same order as ``dst``)."""
    last_prompt: Int[Tensor, " batch"]
    """Flat position of each row's last prompt token."""
    answer: Int[Tensor, " n_ans"]
    """Flat positions of the answer tokens (row by row); ``answer - 1`` are the positions that predict them."""
    answer_row: Int[Tensor, " n_ans"]
    """Row of each answer token."""
    answer_len: Int[Tensor, " batch"]

    def to(self, device: torch.device | str) -> Batch:
        """A copy with the model-side tensors on ``device`` (``examples`` and ``dst`` stay on the CPU)."""
        keep = {"examples", "dst"}
        return Batch(**{f.name: getattr(self, f.name) if f.name in keep else getattr(self, f.name).to(device)
                        for f in fields(self)})


def plan_batches(
    sequences: Sequence[Tensor],
    spans: Sequence[tuple[int, int]],
    offsets: Sequence[int],
    batch_size: int,
    pad_id: int = 0,
    keep_from: Sequence[int] | None = None,
) -> Iterator[Batch]:
    """Batches of ``batch_size`` sequences, longest first (little padding; an out-of-memory shows up at once).

    ``spans[i] = (answer_start, answer_end)`` within sequence ``i``; ``offsets[i]`` is where the kept tokens of
    sequence ``i`` start in the capture's flat token axis. Tokens ``keep_from[i]:`` are kept (default: all); the
    model still reads the whole sequence.
    """
    order = sorted(range(len(sequences)), key=lambda i: -sequences[i].numel())
    for b0 in range(0, len(order), batch_size):
        rows = order[b0 : b0 + batch_size]
        width = max(sequences[i].numel() for i in rows)
        tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
        dst, src, last, ans, ans_row, ans_len = [], [], [], [], [], []
        for r, i in enumerate(rows):
            n = sequences[i].numel()
            start, end = spans[i]
            lo = 0 if keep_from is None else keep_from[i]
            tokens[r, :n] = sequences[i]
            dst.append(torch.arange(offsets[i], offsets[i] + n - lo))
            src.append(torch.arange(r * width + lo, r * width + n))
            last.append(r * width + start - 1)
            ans.append(torch.arange(r * width + start, r * width + end))
            ans_row.append(torch.full((end - start,), r))
            ans_len.append(end - start)
        yield Batch(
            examples=torch.tensor(rows),
            tokens=tokens,
            dst=torch.cat(dst),
            src=torch.cat(src),
            last_prompt=torch.tensor(last),
            answer=torch.cat(ans),
            answer_row=torch.cat(ans_row),
            answer_len=torch.tensor(ans_len),
        )
