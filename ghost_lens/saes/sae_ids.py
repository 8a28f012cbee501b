"""SAE ids: reading the layer and hook kind out of an SAE id or folder name, and choosing one SAE per layer.

A release, repo or folder lists SAE ids (``blocks.8.hook_resid_pre``, ``layer_12/width_16k/canonical``,
``l12r_8x``); :func:`parse_sae_id` reads ``(layer, hook kind)`` from one, and :func:`choose_ids` groups a source's ids
by layer, narrows several per layer to the most common hook kind, or applies an ``id_template`` with ``{layer}``.
Hook names themselves are built and parsed in :mod:`ghost_lens.hooks`.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from ghost_lens.errors import SAEError
from ghost_lens.hooks import find_hook_name

logger = logging.getLogger(__name__)

_LAYER_IN_TEXT = (
    re.compile(r"(?:^|[^a-z])layers?[_\-.]?(\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z0-9])l(\d+)[a-z]?_", re.IGNORECASE),  # llama-scope "l12r_8x"
    re.compile(r"^(\d+)$"),
)
WIDTH_IN_TEXT = re.compile(
    r"(?:^|[^a-z0-9])(?:width[_\-]?|w)?(\d+(?:\.\d+)?[km])(?=$|[^a-z0-9])", re.IGNORECASE
)


def parse_sae_id(text: str) -> tuple[int | None, str | None]:
    """(layer, hook kind) read from an SAE id or folder name; either may be ``None``.

    ``blocks.8.hook_resid_pre`` -> (8, "resid_pre"); ``layer_12/width_16k/canonical`` -> (12, None).
    """
    hook = find_hook_name(text)
    if hook is not None:
        return hook.layer, hook.kind
    for pattern in _LAYER_IN_TEXT:
        m = pattern.search(text.split("/")[-1]) or pattern.search(text)
        if m:
            return int(m.group(1)), None
    return None, None


def _template_example(sae_id: str, layer: int) -> str:
    return re.sub(rf"(?<!\d){layer}(?!\d)", "{layer}", sae_id, count=1)


def check_template(id_template: str) -> None:
    """Raise :class:`SAEError` unless ``id_template`` holds ``{layer}`` and no other field."""
    if "{layer}" not in id_template:
        raise SAEError(f"the SAE id template {id_template!r} must contain '{{layer}}'")
    try:
        id_template.format(layer=0)
    except (KeyError, IndexError, ValueError):
        raise SAEError(
            f"the SAE id template {id_template!r} may hold no other {{...}} than {{layer}}"
        ) from None


def choose_ids(
    candidates: Mapping[str, str | None],
    *,
    source: str,
    n_layers: int,
    layers: Sequence[int] | None = None,
    id_template: str | None = None,
) -> dict[int, str]:
    """Pick one SAE id per layer among ``candidates`` (id -> hook name or ``None``).

    With ``id_template`` the id of layer L is ``id_template.format(layer=L)``. Without it ids are grouped by the
    layer they name; several per layer are narrowed to the most common hook kind, and an :class:`SAEError` asks
    for a template if a choice remains. ``layers=None`` takes every layer below ``n_layers``.
    """
    if id_template is not None:
        return _choose_by_template(candidates, source, n_layers, layers, id_template)
    by_layer = _ids_by_layer(candidates, source)
    wanted = _wanted_layers(by_layer, source, n_layers, layers)
    ambiguous = {L: by_layer[L] for L in wanted if len(by_layer[L]) > 1}
    if ambiguous:
        layer, ids = next(iter(ambiguous.items()))
        shown = ", ".join(repr(i) for i in ids[:4]) + (", ..." if len(ids) > 4 else "")
        raise SAEError(
            f"{source} has {len(ids)} SAEs for layer {layer} ({shown}): pick one per layer with an id template, "
            f"e.g. --sae-id-template {_template_example(ids[0], layer)!r}"
        )
    return {L: by_layer[L][0] for L in wanted}


def _choose_by_template(
    candidates: Mapping[str, str | None], source: str, n_layers: int, layers: Sequence[int] | None, id_template: str,
) -> dict[int, str]:
    """The ids ``id_template.format(layer=L)`` present among ``candidates``: every one of ``layers`` when given,
    else those of the model's layers that exist (at least one)."""
    check_template(id_template)
    wanted = list(layers) if layers is not None else range(n_layers)
    chosen = {L: id_template.format(layer=L) for L in wanted if id_template.format(layer=L) in candidates}
    missing = [L for L in wanted if L not in chosen]
    if layers is not None and missing:
        examples = ", ".join(repr(c) for c in list(candidates)[:3])
        raise SAEError(
            f"{source} has no SAE {id_template.format(layer=missing[0])!r} (template {id_template!r}, "
            f"layers {', '.join(map(str, missing))}); its ids look like {examples}"
        )
    if not chosen:
        raise SAEError(f"no SAE id of {source} matches the template {id_template!r}")
    return chosen


def _ids_by_layer(candidates: Mapping[str, str | None], source: str) -> dict[int, list[str]]:
    """The candidates grouped by the layer their hook name (else their id) names; where a layer has several, only
    those of the most common hook kind are kept."""
    parsed: dict[str, tuple[int | None, str | None]] = {}
    for sae_id, hook in candidates.items():
        layer, kind = parse_sae_id(hook) if hook else (None, None)
        if layer is None:
            layer, kind2 = parse_sae_id(sae_id)
            kind = kind or kind2
        parsed[sae_id] = (layer, kind)
    by_layer: dict[int, list[str]] = {}
    for sae_id, (layer, _) in parsed.items():
        if layer is not None:
            by_layer.setdefault(layer, []).append(sae_id)
    if not by_layer:
        raise SAEError(f"cannot tell the layer of any SAE in {source}: pass an id template with {{layer}}")
    if any(len(ids) > 1 for ids in by_layer.values()):
        kinds = Counter(kind for _, kind in parsed.values() if kind is not None)
        if kinds:
            top = kinds.most_common(1)[0][0]
            narrowed = {L: [i for i in ids if parsed[i][1] == top] for L, ids in by_layer.items()}
            by_layer = {L: ids for L, ids in narrowed.items() if ids}
    return by_layer


def _wanted_layers(
    by_layer: Mapping[int, list[str]], source: str, n_layers: int, layers: Sequence[int] | None
) -> list[int]:
    """``layers`` sorted (each must be covered), or by default every covered layer below ``n_layers`` (those
    above are skipped with a warning)."""
    if layers is not None:
        wanted = sorted(layers)
        missing = [L for L in wanted if L not in by_layer]
        if missing:
            raise SAEError(
                f"layers {', '.join(map(str, missing))} are not covered by {source} "
                f"(it covers {', '.join(map(str, sorted(by_layer)))})"
            )
        return wanted
    dropped = sorted(L for L in by_layer if L >= n_layers)
    if dropped:
        logger.warning(
            "%s: skipping SAEs at layers %s (the model has %d layers)",
            source,
            ", ".join(map(str, dropped)),
            n_layers,
        )
    wanted = [L for L in sorted(by_layer) if L < n_layers]
    if not wanted:
        raise SAEError(
            f"{source} has SAEs only at layers {', '.join(map(str, sorted(by_layer)))}, "
            f"but the model has {n_layers} layers"
        )
    return wanted
