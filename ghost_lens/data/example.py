"""The unit of data: one (prompt, answer) pair with a hallucination label."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
