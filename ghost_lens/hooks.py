"""TransformerLens hook names: the one place that builds and parses them.

Hook names are the identifiers throughout ghost-lens (``blocks.3.hook_resid_post``), exactly as
TransformerLens and SAELens write them.
"""

from __future__ import annotations

import re
from typing import NamedTuple

RESID_KINDS = ("resid_pre", "resid_mid", "resid_post")
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.hook_([a-z_]+)$")
_HOOK_IN_TEXT = re.compile(r"blocks\.(\d+)\.hook_([a-z]+(?:_[a-z]+)?)")


class HookPoint(NamedTuple):
    layer: int
    kind: str  # e.g. "resid_post", "mlp_out", "attn_out"

    @property
    def name(self) -> str:
        return hook_name(self.layer, self.kind)


def hook_name(layer: int, kind: str = "resid_post") -> str:
    """``hook_name(3, "resid_post") == "blocks.3.hook_resid_post"``."""
    if layer < 0:
        raise ValueError(f"layer must be >= 0, got {layer}")
    return f"blocks.{layer}.hook_{kind}"


def parse_hook_name(name: str) -> HookPoint:
    """Inverse of :func:`hook_name`; raises ``ValueError`` for a name that is not a per-block hook."""
    m = _BLOCK_HOOK.match(name)
    if m is None:
        raise ValueError(f"not a per-block TransformerLens hook name: {name!r}")
    return HookPoint(int(m.group(1)), m.group(2))


def find_hook_name(text: str) -> HookPoint | None:
    """The first per-block hook name inside a longer text (an SAE id, a folder path), or ``None``:
    ``find_hook_name("res/blocks.8.hook_resid_pre/width_16k") == HookPoint(8, "resid_pre")``."""
    m = _HOOK_IN_TEXT.search(text)
    return None if m is None else HookPoint(int(m.group(1)), m.group(2))
