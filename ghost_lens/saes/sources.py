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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghost_lens.constants import SAE_CFG
from ghost_lens.errors import SAEError
from ghost_lens.hooks import find_hook_name
from ghost_lens.saes.bundle import SAEBundle, sae_hook_name
from ghost_lens.saes.sae_ids import WIDTH_IN_TEXT, check_template, choose_ids, parse_sae_id

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from ghost_lens.config import WorldConfig

logger = logging.getLogger(__name__)

TOY_RELEASE = "toy-facts-res"
SMOLLM2_RELEASE = "smollm2-135m-res"
BUILTIN_RELEASES: dict[str, str] = {"toy-facts": TOY_RELEASE, "smollm2-135m": SMOLLM2_RELEASE}
"""Model name -> its built-in SAE bundle, the default SAE source of that model."""


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
        rows.append(_toy_release_row())
    if key is None or key == "smollm2-135m":
        rows.append(_smollm2_release_row())
    if key in BUILTIN_RELEASES:
        return rows
    for release, lookup in sorted(_release_directory().items()):
        if key is not None and _model_key(lookup.model) != key:
            continue
        rows.append(_registry_release_row(release, lookup))
    return rows


def _toy_release_row() -> dict[str, Any]:
    """The :func:`list_releases` row of the toy world's SAEs."""
    from ghost_lens.config import WorldConfig

    world = WorldConfig()
    return {
        "release": TOY_RELEASE,
        "model": "toy-facts",
        "repo": "(built locally by ghost-lens)",
        "hooks": ["resid_post"],
        "layers": list(range(world.n_layers)),
        "widths": [str(world.d_model * world.sae_expansion)],
        "n_saes": world.n_layers,
    }


def _smollm2_release_row() -> dict[str, Any]:
    """The :func:`list_releases` row of the built-in SmolLM2 SAEs."""
    from ghost_lens.saes.builtin import SPECS

    spec = SPECS[SMOLLM2_RELEASE]
    return {
        "release": SMOLLM2_RELEASE,
        "model": spec.model,
        "repo": "(built locally by ghost-lens on first use)",
        "hooks": [spec.hook],
        "layers": list(spec.layers),
        "widths": [str(spec.d_model * spec.expansion)],
        "n_saes": len(spec.layers),
    }


def _registry_release_row(release: str, lookup: Any) -> dict[str, Any]:
    """The :func:`list_releases` row of a SAELens registry release: hook kinds, layers and widths as far as its
    SAE ids (else their paths, else the release name for widths) tell."""
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
            widths.update(w.lower() for w in WIDTH_IN_TEXT.findall(text))
    if not widths:
        widths.update(w.lower() for w in WIDTH_IN_TEXT.findall(release))
    return {
        "release": release,
        "model": lookup.model,
        "repo": lookup.repo_id,
        "hooks": sorted(hooks),
        "layers": sorted(layers),
        "widths": sorted(widths),
        "n_saes": len(lookup.saes_map),
    }


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
    bundle = _from_release_name(model, release, world_cfg, progress, kwargs)
    return _validated(bundle, model, layers, validate)


def _from_release_name(
    model: HookedTransformer, release: str, world_cfg: WorldConfig | None, progress: bool, kwargs: dict[str, Any]
) -> SAEBundle:
    """The SAEs of ``release``, tried as a built-in bundle, a SAELens registry release, a folder, then a Hugging
    Face repo id (``kwargs``: ``layers``, ``id_template``, ``device``)."""
    if release == TOY_RELEASE:
        from ghost_lens.toy.world import get_world

        world = get_world(world_cfg)
        seed = getattr(world_cfg, "seed", 0) if world_cfg is not None else 0
        return _from_folder(model, Path(world.sae_dir), source=f"{TOY_RELEASE} (world seed {seed})", **kwargs)
    if release == SMOLLM2_RELEASE:
        from ghost_lens.saes.builtin import get_builtin_bundle

        folder = get_builtin_bundle(release, model, progress=progress)
        return _from_folder(model, folder, source=release, **kwargs)
    if release in _release_directory():
        return _from_release(model, release, **kwargs)
    if Path(release).expanduser().is_dir():
        path = Path(release).expanduser()
        return _from_folder(model, path, source=f"folder {path}", **kwargs)
    if "/" in release:
        return _from_repo(model, release, **kwargs)
    raise _unknown_release(release)


def _validated(bundle: SAEBundle, model: HookedTransformer, layers: Sequence[int] | None, validate: bool) -> SAEBundle:
    if validate:
        bundle.validate(model, layers)
    logger.info("loaded %r", bundle)
    return bundle
