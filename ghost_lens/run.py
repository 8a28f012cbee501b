"""The run folder: what one ``ghost-lens track`` leaves behind, and the rules that protect it.

- A new folder (or an empty one) is claimed by writing ``config.yaml`` and ``manifest.json`` first.
- Re-running the same config into the same folder reuses the capture (the model is not run again) and recomputes
  the cheap stages.
- A folder holding a run of another config is never silently overwritten: the error names the keys that differ.
  A run that failed before writing its capture (nothing in it but ``config.yaml`` and ``manifest.json``) is not
  protected: the corrected command may take the folder over.
  ``--force`` recomputes everything in place (the user asked for it).
- A non-empty folder that is not a ghost-lens run is refused, even with ``--force``.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ghost_lens.config import RunConfig, from_dict, save_config, to_dict
from ghost_lens.constants import CAPTURE_META, CONFIG, MANIFEST
from ghost_lens.errors import RunFolderError

# Fields whose change invalidates the capture (everything the forward pass depends on).
CAPTURE_FIELDS = ("model", "sae_release", "sae_id_template", "sae_dir", "dataset", "num_samples", "seed", "capture")
PACKAGES = ("ghost-lens", "torch", "transformer-lens", "sae-lens", "scikit-learn", "numpy", "networkx", "scipy")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    fa, fb = _flatten(to_dict(a)), _flatten(to_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def capture_key(cfg: RunConfig) -> str:
    """Hash of the fields the capture depends on (the toy world's config too, when the model is the toy)."""
    data = {k: to_dict(cfg)[k] for k in CAPTURE_FIELDS}
    if cfg.model == "toy-facts" or cfg.sae_release == "toy-facts-res" or cfg.dataset.startswith("toy-facts"):
        data["world"] = to_dict(cfg.world)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def dataset_hash(examples: list[Any]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.group, ex.prompt, ex.answer, ex.label]).encode())
    return h.hexdigest()[:16]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@dataclass
class RunFolder:
    """A claimed run folder; ``reuse_capture`` says whether the saved capture can be used as it is."""

    path: Path
    cfg: RunConfig
    reuse_capture: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)

    @property
    def capture_dir(self) -> Path:
        return self.path / "capture"

    def timed(self, stage: str, seconds: float) -> None:
        self.manifest.setdefault("timings_s", {})[stage] = round(seconds, 3)
        self.write_manifest()

    def write_manifest(self) -> None:
        (self.path / MANIFEST).write_text(json.dumps(self.manifest, indent=1, default=str))

    def finish(self, **extra: Any) -> None:
        self.manifest.update(extra)
        self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.manifest.setdefault("timings_s", {})["total"] = round(time.perf_counter() - self._t0, 3)
        self.write_manifest()


def read_run_config(path: str | Path) -> RunConfig:
    """The config of an existing run folder (lenient: a run from another version still opens)."""
    import yaml

    path = Path(path)
    if not (path / CONFIG).is_file():
        raise RunFolderError(f"{path} is not a ghost-lens run folder (no {CONFIG}); run `ghost-lens track` first")
    return from_dict(RunConfig, yaml.safe_load((path / CONFIG).read_text()) or {}, strict=False)


def open_run_folder(out: str | Path, cfg: RunConfig, *, force: bool = False, argv: list[str] | None = None) -> RunFolder:
    """Claim ``out`` for a run of ``cfg`` following the rules in the module docstring."""
    path = Path(out)
    reuse = False
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not (path / CONFIG).is_file() or not (path / MANIFEST).is_file():
            raise RunFolderError(f"{path} is not empty and is not a ghost-lens run folder; choose another --out")
        old = read_run_config(path)
        diff = config_diff(old, cfg)
        old_manifest = json.loads((path / MANIFEST).read_text())
        # a run that failed before its capture (a typo in --model, a bad dataset) holds nothing worth protecting
        failed_early = "finished" not in old_manifest and not (path / "capture" / CAPTURE_META).is_file()
        if diff and not force and not failed_early:
            shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
            raise RunFolderError(
                f"{path} holds a run with another config (differs in {shown}); use another --out, or --force to "
                "recompute it (`ghost-lens tune` explores tracker settings on the saved capture)"
            )
        reuse = (
            not force
            and old_manifest.get("capture_key") == capture_key(cfg)
            and (path / "capture" / CAPTURE_META).is_file()
        )
    path.mkdir(parents=True, exist_ok=True)
    save_config(cfg, path / CONFIG)
    manifest = {
        "ghost_lens_run": 1,
        "config": to_dict(cfg),
        "capture_key": capture_key(cfg),
        "seed": cfg.seed,
        "versions": package_versions(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "capture_reused": reuse,
    }
    folder = RunFolder(path, cfg, reuse, manifest)
    folder.write_manifest()
    return folder
