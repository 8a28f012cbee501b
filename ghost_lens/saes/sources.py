"""Where SAE bundles come from: the toy world, a SAELens release, a Hugging Face repo, or a local folder.

:func:`load_bundle` resolves one source to an :class:`~ghost_lens.saes.bundle.SAEBundle` and validates it against
the model. SAEs are always loaded by SAELens itself (``SAE.from_pretrained`` / ``SAE.load_from_disk``).

1. A built-in bundle (:data:`BUILTIN_RELEASES`, each model's default source when no release or folder is given):
   ``toy-facts-res``, the toy-facts world's SAEs (``get_world(world_cfg).sae_dir``), and ``smollm2-135m-res``,
   trained for SmolLM2-135M on first use and cached (:mod:`ghost_lens.saes.builtin`).
2. A SAELens registry release (``gpt2-small-res-jb``): its SAE ids are grouped by layer (the layer is read from a
   ``blocks.{L}.hook_*`` or ``layer_{L}`` part of the id). Where a release has several SAEs per layer the most common
   hook kind is kept; if that still leaves a choice, ``id_template`` (``"layer_{layer}/width_16k/canonical"``)
   must pick one.
3. A Hugging Face repo id (``org/name``, not in the registry): the repo's ``*/cfg.json`` files are fetched with
   ``huggingface_hub.snapshot_download`` (online: only those small files; offline: the cached snapshot), each
   folder holding one SAE, read by ``SAE.from_pretrained(repo, folder)``.
4. A local folder of SAELens-saved SAEs (one sub-folder per layer, as ``sae.save_model`` writes them); the layer
   comes from the cfg's ``metadata.hook_name``, else from the folder name.

gpt2-medium (and most models) have no SAELens release: train SAEs with ``ghost-lens train-saes`` or bring a repo
or a folder (:func:`no_release_hint`).
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghost_lens.constants import SAE_CFG
from ghost_lens.errors import SAEError
from ghost_lens.hooks import find_hook_name
from ghost_lens.saes.bundle import SAEBundle, sae_hook_name

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from ghost_lens.config import WorldConfig

logger = logging.getLogger(__name__)

TOY_RELEASE = "toy-facts-res"
SMOLLM2_RELEASE = "smollm2-135m-res"
BUILTIN_RELEASES: dict[str, str] = {"toy-facts": TOY_RELEASE, "smollm2-135m": SMOLLM2_RELEASE}
"""Model name -> its built-in SAE bundle, the default SAE source of that model."""
_LAYER_IN_TEXT = (
    re.compile(r"(?:^|[^a-z])layers?[_\-.]?(\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z0-9])l(\d+)[a-z]?_", re.IGNORECASE),  # llama-scope "l12r_8x"
    re.compile(r"^(\d+)$"),
)
_WIDTH_IN_TEXT = re.compile(
    r"(?:^|[^a-z0-9])(?:width[_\-]?|w)?(\d+(?:\.\d+)?[km])(?=$|[^a-z0-9])", re.IGNORECASE
)


def builtin_release(model_name: str | None) -> str | None:
    """The built-in SAE bundle of ``model_name`` (``toy-facts`` -> ``toy-facts-res`` ...), or ``None``."""
    return BUILTIN_RELEASES.get((model_name or "").lower())


def default_release(model_name: str | None) -> str:
    """The SAE source used when none is given: the model's built-in bundle, else one :class:`SAEError` line."""
    release = builtin_release(model_name)
    if release is None:
        name = model_name or "<model>"
        raise SAEError(
            f"model {name!r} has no built-in SAE bundle: pass --sae-release (a SAELens release, see "
            f"`ghost-lens saes list --model {name}`, or a Hugging Face repo id) or --sae-dir (a folder of SAELens "
            f"SAEs, e.g. from `ghost-lens train-saes`)"
        )
    return release


def no_release_hint(model_name: str | None, some: bool = False) -> str:
    """What to do for a model without a SAELens release (gpt2-medium ...); ``some=True``: the model has some."""
    name = model_name or "<model>"
    train = (
        f"train SAEs with `ghost-lens train-saes --model {name} --dataset <.txt/.jsonl/hub dataset> "
        "--out <dir>` and pass `--sae-dir <dir>`, or pass a Hugging Face repo id (org/name) or a folder of "
        "SAELens-saved SAEs as --sae-release"
    )
    if some:
        return f"besides these releases you can {train}"
    return f"no SAELens release covers {name!r}: {train}"


# ----------------------------------------------------------------------------------------------------------------
# parsing ids and folder names


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


def _model_key(name: str) -> str:
    from transformer_lens import loading_from_pretrained as lfp

    try:
        return lfp.get_official_model_name(name).lower()
    except ValueError:
        return name.lower()


def _release_directory() -> dict[str, Any]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def list_releases(model: str | None = None) -> list[dict[str, Any]]:
    """SAELens registry releases (plus ``toy-facts-res``), optionally only those for ``model``.

    Each row: ``release``, ``model``, ``repo``, ``hooks`` (hook kinds found in the ids), ``layers`` and ``widths``
    (as far as the ids tell; empty when they do not), ``n_saes``. ``model`` matches through TransformerLens's
    aliases (``gpt2`` finds the ``gpt2-small`` releases).
    """
    rows: list[dict[str, Any]] = []
    key = _model_key(model) if model else None
    if key is None or key == "toy-facts":
        from ghost_lens.config import WorldConfig

        world = WorldConfig()
        rows.append(
            {
                "release": TOY_RELEASE,
                "model": "toy-facts",
                "repo": "(built locally by ghost-lens)",
                "hooks": ["resid_post"],
                "layers": list(range(world.n_layers)),
                "widths": [str(world.d_model * world.sae_expansion)],
                "n_saes": world.n_layers,
            }
        )
    if key is None or key == "smollm2-135m":
        from ghost_lens.saes.builtin import SPECS

        spec = SPECS[SMOLLM2_RELEASE]
        rows.append(
            {
                "release": SMOLLM2_RELEASE,
                "model": spec.model,
                "repo": "(built locally by ghost-lens on first use)",
                "hooks": [spec.hook],
                "layers": list(spec.layers),
                "widths": [str(spec.d_model * spec.expansion)],
                "n_saes": len(spec.layers),
            }
        )
    if key in BUILTIN_RELEASES:
        return rows
    for release, lookup in sorted(_release_directory().items()):
        if key is not None and _model_key(lookup.model) != key:
            continue
        hooks, layers, widths = set(), set(), set()
        for sae_id, path in lookup.saes_map.items():
            layer, kind = parse_sae_id(sae_id)
            if layer is None:
                layer, kind = parse_sae_id(path)
            if layer is not None:
                layers.add(layer)
            if kind is not None:
                hooks.add(kind)
            for text in (sae_id, path):
                widths.update(w.lower() for w in _WIDTH_IN_TEXT.findall(text))
        if not widths:
            widths.update(w.lower() for w in _WIDTH_IN_TEXT.findall(release))
        rows.append(
            {
                "release": release,
                "model": lookup.model,
                "repo": lookup.repo_id,
                "hooks": sorted(hooks),
                "layers": sorted(layers),
                "widths": sorted(widths),
                "n_saes": len(lookup.saes_map),
            }
        )
    return rows


# ----------------------------------------------------------------------------------------------------------------
# choosing one SAE per layer


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
    if layers is None:
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
    else:
        wanted = sorted(layers)
        missing = [L for L in wanted if L not in by_layer]
        if missing:
            raise SAEError(
                f"layers {', '.join(map(str, missing))} are not covered by {source} "
                f"(it covers {', '.join(map(str, sorted(by_layer)))})"
            )
    ambiguous = {L: by_layer[L] for L in wanted if len(by_layer[L]) > 1}
    if ambiguous:
        layer, ids = next(iter(ambiguous.items()))
        shown = ", ".join(repr(i) for i in ids[:4]) + (", ..." if len(ids) > 4 else "")
        raise SAEError(
            f"{source} has {len(ids)} SAEs for layer {layer} ({shown}): pick one per layer with an id template, "
            f"e.g. --sae-id-template {_template_example(ids[0], layer)!r}"
        )
    return {L: by_layer[L][0] for L in wanted}


# ----------------------------------------------------------------------------------------------------------------
# the four sources


def _hook_from_cfg(cfg_path: Path) -> str | None:
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cfg, dict):
        return None
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    return metadata.get("hook_name") or cfg.get("hook_name")


def _folder_candidates(root: Path) -> dict[str, str | None]:
    """Relative folder (``"."`` for ``root`` itself) -> hook name, for every ``cfg.json`` under ``root``."""
    found: dict[str, str | None] = {}
    for cfg_path in sorted(root.rglob(SAE_CFG)):
        rel = cfg_path.parent.relative_to(root).as_posix()
        found[rel] = _hook_from_cfg(cfg_path)
    return found


def _load_each(ids: Mapping[int, str], loader: Callable[[str], SAE], source: str) -> dict[int, SAE]:
    saes: dict[int, SAE] = {}
    for layer, sae_id in ids.items():
        try:
            saes[layer] = loader(sae_id)
        except (OSError, ValueError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SAEError(f"could not load SAE {sae_id!r} of {source}: {first}") from exc
    return saes


def _from_folder(
    model: HookedTransformer,
    folder: Path,
    *,
    source: str,
    layers: Sequence[int] | None,
    id_template: str | None,
    device: str,
) -> SAEBundle:
    from sae_lens import SAE

    if not folder.is_dir():
        raise SAEError(f"SAE folder not found: {folder}")
    candidates = _folder_candidates(folder)
    if not candidates:
        raise SAEError(f"no SAELens-saved SAE (a {SAE_CFG} beside its weights) under {folder}")
    ids = choose_ids(
        candidates, source=source, n_layers=model.cfg.n_layers, layers=layers, id_template=id_template
    )
    saes = _load_each(ids, lambda rel: SAE.load_from_disk(folder / rel, device=device), source)
    for layer, sae in saes.items():  # an old cfg without metadata.hook_name: the folder name tells the hook
        if sae_hook_name(sae) is None:
            hook = find_hook_name(ids[layer])
            if hook is None:
                raise SAEError(
                    f"the SAE in {folder / ids[layer]} names no hook in its {SAE_CFG}: name its folder "
                    f"blocks.{layer}.hook_<kind> (e.g. blocks.{layer}.hook_resid_post)"
                )
            sae.cfg.metadata.hook_name = hook.name
    return SAEBundle(saes, source=source, sae_ids=ids, folder=folder)


def _from_release(
    model: HookedTransformer,
    release: str,
    *,
    layers: Sequence[int] | None,
    id_template: str | None,
    device: str,
) -> SAEBundle:
    from sae_lens import SAE

    lookup = _release_directory()[release]
    if _model_key(lookup.model) != _model_key(getattr(model.cfg, "model_name", "") or ""):
        logger.warning(
            "SAE release %s was trained on %s, the model is %s",
            release,
            lookup.model,
            getattr(model.cfg, "model_name", "?"),
        )
    candidates: dict[str, str | None] = {}
    for sae_id, path in lookup.saes_map.items():
        layer, kind = parse_sae_id(sae_id)
        if layer is None:
            layer, kind = parse_sae_id(path)
        candidates[sae_id] = f"blocks.{layer}.hook_{kind}" if layer is not None and kind else None
    source = f"release {release}"
    ids = choose_ids(
        candidates, source=source, n_layers=model.cfg.n_layers, layers=layers, id_template=id_template
    )
    saes = _load_each(ids, lambda sae_id: SAE.from_pretrained(release, sae_id, device=device), source)
    for layer, sae in saes.items():  # registry Neuronpedia ids, for reports and `explain`
        if getattr(sae.cfg.metadata, "neuronpedia_id", None) is None:
            np_id = lookup.neuronpedia_id.get(ids[layer])
            if np_id:
                sae.cfg.metadata.neuronpedia_id = np_id
    return SAEBundle(saes, source=source, sae_ids=ids, release=release)


def _from_repo(
    model: HookedTransformer,
    repo: str,
    *,
    layers: Sequence[int] | None,
    id_template: str | None,
    device: str,
) -> SAEBundle:
    from huggingface_hub import snapshot_download
    from sae_lens import SAE

    source = f"Hugging Face repo {repo}"
    if id_template is not None and layers is not None:
        candidates: dict[str, str | None] = {id_template.format(layer=L): None for L in layers}
    else:
        try:
            root = Path(snapshot_download(repo, allow_patterns=[f"*{SAE_CFG}"]))
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SAEError(
                f"could not list the SAEs of {source} (not on the hub nor in the local cache?): {first}"
            ) from exc
        candidates = {k: v for k, v in _folder_candidates(root).items() if k != "."}
        if not candidates:
            raise SAEError(f"{source} has no SAELens SAE folders (<folder>/{SAE_CFG})")
    ids = choose_ids(
        candidates, source=source, n_layers=model.cfg.n_layers, layers=layers, id_template=id_template
    )
    saes = _load_each(ids, lambda folder: SAE.from_pretrained(repo, folder, device=device), source)
    return SAEBundle(saes, source=source, sae_ids=ids)


def _unknown_release(release: str) -> SAEError:
    names = [*BUILTIN_RELEASES.values(), *_release_directory()]
    close = difflib.get_close_matches(release, names, n=4, cutoff=0.5)
    hint = f"; close: {', '.join(close)}" if close else ""
    return SAEError(
        f"unknown SAE release {release!r}: not in the SAELens registry, not a Hugging Face repo id (org/name) "
        f"and not a folder{hint} (see `ghost-lens saes list`)"
    )


def load_bundle(
    model: HookedTransformer,
    *,
    release: str | None = None,
    sae_dir: str | Path | None = None,
    id_template: str | None = None,
    layers: Sequence[int] | None = None,
    device: str = "cpu",
    world_cfg: WorldConfig | None = None,
    validate: bool = True,
    model_name: str | None = None,
    progress: bool = True,
) -> SAEBundle:
    """Load one SAE per layer from ``sae_dir`` (wins) or ``release`` and check them against ``model``.

    Args:
        model: the model the SAEs will read (its depth bounds the default layers; validation uses it).
        release: a built-in bundle (``toy-facts-res``, ``smollm2-135m-res``), a SAELens registry release, a
            Hugging Face repo id (``org/name``) or a path; ``None`` (and no ``sae_dir``): the model's built-in
            bundle (:func:`default_release`).
        sae_dir: a local folder of SAELens-saved SAEs (one sub-folder per layer).
        id_template: SAE id with ``{layer}`` where a source has several SAEs per layer.
        layers: layers to load (default: every layer the source covers within the model's depth).
        device: torch device of the SAEs.
        world_cfg: the toy world's config (``toy-facts-res`` only).
        validate: run :meth:`SAEBundle.validate` (d_in, hooks, layers, one hook kind).
        model_name: the model's name for the default source (default: ``model.cfg.model_name``).
        progress: show a progress bar while a built-in bundle is built on first use.
    """
    if id_template is not None:
        check_template(id_template)
    kwargs: dict[str, Any] = {"layers": layers, "id_template": id_template, "device": device}
    if sae_dir is not None:
        path = Path(sae_dir).expanduser()
        bundle = _from_folder(model, path, source=f"folder {path}", **kwargs)
        return _validated(bundle, model, layers, validate)
    if release is None:
        release = default_release(model_name or getattr(model.cfg, "model_name", None))
    if release == TOY_RELEASE:
        from ghost_lens.toy.world import get_world

        world = get_world(world_cfg)
        seed = getattr(world_cfg, "seed", 0) if world_cfg is not None else 0
        bundle = _from_folder(
            model, Path(world.sae_dir), source=f"{TOY_RELEASE} (world seed {seed})", **kwargs
        )
    elif release == SMOLLM2_RELEASE:
        from ghost_lens.saes.builtin import get_builtin_bundle

        folder = get_builtin_bundle(release, model, progress=progress)
        bundle = _from_folder(model, folder, source=release, **kwargs)
    elif release in _release_directory():
        bundle = _from_release(model, release, **kwargs)
    elif Path(release).expanduser().is_dir():
        path = Path(release).expanduser()
        bundle = _from_folder(model, path, source=f"folder {path}", **kwargs)
    elif "/" in release:
        bundle = _from_repo(model, release, **kwargs)
    else:
        raise _unknown_release(release)
    return _validated(bundle, model, layers, validate)


def _validated(bundle: SAEBundle, model: HookedTransformer, layers: Sequence[int] | None, validate: bool) -> SAEBundle:
    if validate:
        bundle.validate(model, layers)
    logger.info("loaded %r", bundle)
    return bundle
