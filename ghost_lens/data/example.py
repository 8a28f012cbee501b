"""The unit of data: one (prompt, answer) pair with a hallucination label."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Example:
    """One answer to one prompt.

    ``label`` is 1 when the answer is hallucinated / false, 0 when faithful / true. ``group`` is the question or
    entity the example belongs to: evaluation splits never put one group on both sides.
    """

    id: str
    group: str
    prompt: str
    answer: str
    label: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise ValueError(f"example {self.id!r}: label must be 0 or 1, got {self.label!r}")


def take_whole_groups(items: Sequence[T], n: int, seed: int = 0) -> list[T]:
    """Whole groups of ``items`` (anything with a ``.group``) in a seeded random order of the group names, until
    at least ``n`` items are taken (the last group is kept whole: callers cut it if they need exactly ``n``)."""
    by_group: dict[str, list[T]] = {}
    for item in items:
        by_group.setdefault(item.group, []).append(item)  # type: ignore[attr-defined]
    order = sorted(by_group)
    random.Random(seed).shuffle(order)
    out: list[T] = []
    for g in order:
        out.extend(by_group[g])
        if len(out) >= n:
            break
    return out
