"""An SAE bundle: one SAELens ``SAE`` per tracked layer, checked against the model it will read.

A :class:`SAEBundle` is a read-only ``Mapping[int, SAE]`` (layer -> SAE, sorted by layer) that also knows each
SAE's hook name, its id in its source and where the bundle came from. :meth:`SAEBundle.validate` checks, each
failure being one :class:`~ghost_lens.errors.SAEError` line:

1. every SAE reads a per-block hook (``blocks.{L}.hook_*``) that exists in the model's ``hook_dict``;
2. every SAE's ``d_in`` equals the model's ``d_model``;
3. the requested layers are all covered (the missing ones are named);
4. all SAEs read the same kind of hook (``resid_pre`` vs ``resid_post`` ...), so tracks compare like with like.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghost_lens.errors import SAEError
from ghost_lens.hooks import hook_name, parse_hook_name

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


def sae_hook_name(sae: SAE) -> str | None:
    """The hook an SAE reads (``sae.cfg.metadata.hook_name``; SAELens 6 keeps it in the metadata)."""
    metadata = getattr(sae.cfg, "metadata", None)
    name = getattr(metadata, "hook_name", None) if metadata is not None else None
    return name or getattr(sae.cfg, "hook_name", None)


def _fmt_layers(layers: Sequence[int]) -> str:
    return ", ".join(str(x) for x in sorted(layers))


class SAEBundle(Mapping[int, "SAE"]):
    """Layer -> SAELens SAE, with hook names, per-layer ids and a description of the source.

    Args:
        saes: layer -> SAE.
        source: where the SAEs came from, for reports (``"release gpt2-small-res-jb"``, ``"folder /x"`` ...).
        hook_names: layer -> hook name; default: each SAE's ``cfg.metadata.hook_name``.
        sae_ids: layer -> id of the SAE in its source (registry id, repo folder, local folder).
        release: the SAELens registry release, when the SAEs came from one (for Neuronpedia ids).
        folder: the local folder the SAEs were read from (``sae_ids`` are then sub-folders of it).
    """

    def __init__(
        self,
        saes: Mapping[int, SAE],
        source: str,
        hook_names: Mapping[int, str] | None = None,
        sae_ids: Mapping[int, str] | None = None,
        release: str | None = None,
        folder: str | Path | None = None,
    ) -> None:
        self._saes: dict[int, SAE] = {int(k): saes[k] for k in sorted(saes)}
        self.source = source
        self.release = release
        self.folder = Path(folder) if folder is not None else None
        names: dict[int, str] = {}
        for layer, sae in self._saes.items():
            name = (hook_names or {}).get(layer) or sae_hook_name(sae)
            if name is None:
                raise SAEError(f"the SAE for layer {layer} ({source}) has no hook name in its cfg metadata")
            names[layer] = name
        self.hook_names: dict[int, str] = names
        self.sae_ids: dict[int, str] = {int(k): v for k, v in (sae_ids or {}).items()}
        self._description: dict[str, Any] | None = None

    # Mapping protocol
    def __getitem__(self, layer: int) -> SAE:
        return self._saes[layer]

    def __iter__(self) -> Iterator[int]:
        return iter(self._saes)

    def __len__(self) -> int:
        return len(self._saes)

    def __repr__(self) -> str:
        return f"SAEBundle({self.source!r}, layers=[{_fmt_layers(self.layers)}], d_sae={self.d_sae})"

    @property
    def layers(self) -> list[int]:
        """Covered layers, ascending."""
        return list(self._saes)

    @property
    def d_sae(self) -> dict[int, int]:
        """Layer -> SAE width (number of features)."""
        return {layer: int(sae.cfg.d_sae) for layer, sae in self._saes.items()}

    @property
    def hook_kind(self) -> str | None:
        """The hook kind all SAEs read (``resid_post`` ...), or ``None`` if they differ or do not parse."""
        kinds = set()
        for name in self.hook_names.values():
            try:
                kinds.add(parse_hook_name(name).kind)
            except ValueError:
                return None
        return kinds.pop() if len(kinds) == 1 else None

    def neuronpedia_id(self, layer: int) -> str | None:
        """The Neuronpedia id of the layer's SAE (``gpt2-small/8-res-jb``), if known."""
        sae = self._saes[layer]
        metadata = getattr(sae.cfg, "metadata", None)
        found = getattr(metadata, "neuronpedia_id", None) if metadata is not None else None
        if found or self.release is None or layer not in self.sae_ids:
            return found
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

        lookup = get_pretrained_saes_directory().get(self.release)
        return lookup.neuronpedia_id.get(self.sae_ids[layer]) if lookup is not None else None

    def saved_quality(self) -> dict[int, dict[str, Any] | None]:
        """Layer -> the ``quality.json`` saved beside the layer's SAE (``None`` where there is none)."""
        from ghost_lens.saes.quality import load_quality

        out: dict[int, dict[str, Any] | None] = {}
        for layer in self._saes:
            sae_id = self.sae_ids.get(layer)
            out[layer] = load_quality(self.folder / sae_id) if self.folder is not None and sae_id else None
        return out

    def to(self, device: str) -> SAEBundle:
        """Move every SAE to ``device`` (in place); returns ``self``."""
        for sae in self._saes.values():
            sae.to(device)
        return self

    def restrict(self, layers: Sequence[int] | None) -> SAEBundle:
        """The bundle of ``layers`` only (all of them for ``None``: ``self``); an uncovered layer is an
        :class:`SAEError` naming it."""
        if layers is None or sorted(set(layers)) == self.layers:
            return self
        missing = sorted(set(layers) - set(self._saes))
        if missing:
            raise SAEError(
                f"layers {_fmt_layers(missing)} are not covered by {self.source} (it covers {_fmt_layers(self.layers)})"
            )
        keep = sorted(set(layers))
        return SAEBundle(
            {layer: self._saes[layer] for layer in keep}, self.source,
            hook_names={layer: self.hook_names[layer] for layer in keep},
            sae_ids={layer: self.sae_ids[layer] for layer in keep if layer in self.sae_ids},
            release=self.release, folder=self.folder,
        )

    def describe(self) -> dict[str, Any]:
        """Source plus, per layer, hook, id, width, architecture and Neuronpedia id (JSON-ready; computed once:
        the capture stores it in every shard)."""
        if self._description is None:
            self._description = self._describe()
        return self._description

    def _describe(self) -> dict[str, Any]:
        layers: dict[str, Any] = {}
        for layer, sae in self._saes.items():
            arch = getattr(sae.cfg, "architecture", None)
            layers[str(layer)] = {
                "hook_name": self.hook_names[layer],
                "sae_id": self.sae_ids.get(layer),
                "d_in": int(sae.cfg.d_in),
                "d_sae": int(sae.cfg.d_sae),
                "architecture": arch() if callable(arch) else None,
                "neuronpedia_id": self.neuronpedia_id(layer),
            }
        return {"source": self.source, "release": self.release, "layers": layers}

    # validation
    def validate(self, model: HookedTransformer, layers: Sequence[int] | None = None) -> None:
        """Check the bundle against ``model`` (see the module docstring); raises :class:`SAEError`."""
        if not self._saes:
            raise SAEError(f"no SAEs in {self.source}")
        d_model = int(model.cfg.d_model)
        model_name = getattr(model.cfg, "model_name", "the model")
        kinds: dict[str, list[int]] = {}
        for layer, sae in self._saes.items():
            hook = self.hook_names[layer]
            if hook not in model.hook_dict:
                raise SAEError(
                    f"the SAE for layer {layer} ({self.source}) reads hook {hook!r}, which {model_name!r} "
                    f"does not have (it has {model.cfg.n_layers} layers)"
                )
            try:
                point = parse_hook_name(hook)
            except ValueError:
                raise SAEError(
                    f"the SAE for layer {layer} ({self.source}) reads {hook!r}, not a per-block hook "
                    "(blocks.{L}.hook_*)"
                ) from None
            if int(sae.cfg.d_in) != d_model:
                raise SAEError(
                    f"the SAE for layer {layer} ({self.source}) has d_in {sae.cfg.d_in} but {model_name!r} has "
                    f"d_model {d_model}: it was trained for another model"
                )
            kinds.setdefault(point.kind, []).append(layer)
        if len(kinds) > 1:
            parts = "; ".join(f"{kind} at layers {_fmt_layers(ls)}" for kind, ls in sorted(kinds.items()))
            raise SAEError(f"the SAEs of {self.source} read different kinds of hook ({parts}): pick one kind")
        if layers is not None:
            self.restrict(layers)  # names the uncovered layers


def as_bundle(saes: Mapping[int, SAE], hook: str = "resid_post", source: str = "in-memory SAEs") -> SAEBundle:
    """``saes`` itself when it is already an :class:`SAEBundle`; otherwise a bundle wrapping the plain
    ``layer -> SAE`` mapping, an SAE whose metadata names no hook reading ``blocks.{layer}.hook_{hook}``. Every
    stage that takes SAEs goes through this, so one class describes and validates them."""
    if isinstance(saes, SAEBundle):
        return saes
    names = {int(layer): sae_hook_name(sae) or hook_name(int(layer), hook) for layer, sae in saes.items()}
    return SAEBundle(saes, source, hook_names=names)
