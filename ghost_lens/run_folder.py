"""The run folder: what one ``ghost-lens track`` leaves behind, and the rules that protect it.

1. **One writer at a time.** A run holds an exclusive lock on its folder (``.ghost-lens.lock``, with the holder's
   pid and host beside it) from the moment it opens the folder until it ends; a second ``track`` on the same folder
   stops with "run folder X is in use by pid N on host H". A lock left by a process that died is taken over.
2. **Claiming.** A new folder (or an empty one) is claimed by writing ``config.yaml`` and ``manifest.json`` first
   (the manifest records ``format_version``). Every file is written atomically (:mod:`ghost_lens.io`), and leftovers
   of an interrupted write are cleaned up by the next run.
3. **Protection.** A folder holding a run of another config is never silently overwritten: the error names the keys
   that differ; ``--force`` recomputes everything in place (the user asked for it). A folder written by another
   run format is refused the same way (``--force`` or a new ``--out``). A run that failed before writing its capture
   (nothing in it but ``config.yaml`` and ``manifest.json``), or whose manifest or config cannot be read (a crash
   while it was written by an older ghost-lens), is not protected: the next command may take the folder over.
   A non-empty folder that is not a ghost-lens run is refused, even with ``--force``.
4. **Capture reuse.** The capture carries its own key (:func:`capture_key`: every config field the forward pass
   depends on, plus a fingerprint of the SAE files, see :func:`sae_fingerprint`), stored in its ``capture.json``.
   A rerun reuses the capture only when that stored key equals the key of the config now asked for, never on the
   word of the manifest or ``config.yaml`` (which a ``--force`` run rewrites before its capture exists). The capture
   folder is replaced as a whole, only once the new one is complete.
5. **Where runs live.** Without ``--out`` a run goes to :func:`default_run_dir` (``runs/MODEL_DATASET``); the commands
   that read a run (``explain``, ``interpret``, ``tune``) take ``--run`` or :data:`DEFAULT_RUN_DIR`, the folder of a
   bare ``ghost-lens track``, through :func:`existing_run_dir`. They refuse a folder that a ``track`` is writing
   (:func:`check_not_being_written`: its lock is held) but do not hold the lock themselves, so several of them may
   read one run at once (two ``tune --storage`` workers share one study on one run).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ghost_lens.config import RunConfig, save_config
from ghost_lens.config_io import flatten, from_dict, to_dict
from ghost_lens.constants import CAPTURE_DIR, CAPTURE_META, CONFIG, MANIFEST, SAE_CFG
from ghost_lens.errors import GhostLensError, RunFolderError
from ghost_lens.io import atomic_write_json, clean_folder_temps, exclusive_lock, is_leftover, owner_path

logger = logging.getLogger(__name__)

RUN_FORMAT = 2
"""Version of the run folder layout (``manifest.json``'s ``format_version``). 1: before capture keys and locks
(manifests without ``format_version``); 2: the capture carries its key, the folder is locked while in use."""
RUN_LOCK = ".ghost-lens.lock"
"""The run folder's lock file (its owner record is ``.ghost-lens.lock.owner``)."""

# Fields whose change invalidates the capture (everything the forward pass depends on).
CAPTURE_FIELDS = ("model", "sae_release", "sae_id_template", "sae_dir", "dataset", "num_samples", "seed", "capture")
PACKAGES = ("ghost-lens", "torch", "transformer-lens", "sae-lens", "scikit-learn", "numpy", "networkx", "scipy")


RUN_NEUTRAL_KEYS = frozenset({"device"})
"""Config keys that say where a run executes, not what it computes: a folder made on the CPU may be rerun on a GPU
(``capture.dtype``, which changes the numbers, is in the capture key and does count)."""


def config_diff(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two configs (:data:`RUN_NEUTRAL_KEYS` left out)."""
    fa, fb = flatten(to_dict(a)), flatten(to_dict(b))
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k) and k not in RUN_NEUTRAL_KEYS)


# ---- the capture key --------------------------------------------------------------------------------------------


def folder_fingerprint(root: str | Path) -> dict[str, Any]:
    """Per SAE folder under ``root`` (each holding a ``cfg.json``): the cfg's SHA-256 and the size and mtime of every
    other file beside it (the weights). Retraining in place changes it; reading does not."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return {"folder": str(root), "missing": True}
    out: dict[str, Any] = {}
    for cfg_path in sorted(root.rglob(SAE_CFG)):
        sae_dir = cfg_path.parent
        entry: dict[str, Any] = {"cfg_sha256": hashlib.sha256(cfg_path.read_bytes()).hexdigest()[:16]}
        for f in sorted(sae_dir.iterdir()):
            if f.is_file() and f.name != SAE_CFG:
                st = f.stat()
                entry[f.name] = [st.st_size, st.st_mtime_ns]
        out[sae_dir.relative_to(root).as_posix()] = entry
    return out


def hub_revision(repo_id: str) -> str | None:
    """The commit the local Hugging Face cache resolves ``repo_id`` to (``refs/main``), or ``None`` if not cached."""
    from huggingface_hub import constants

    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / "main"
    try:
        return ref.read_text().strip() or None
    except OSError:
        return None


def world_key(cfg: RunConfig) -> dict[str, Any]:
    """The toy world's key: the hash of its config and, once built, the content fingerprint of its weights and
    examples (``info.json``; a world built before fingerprints: its SAE folder's fingerprint)."""
    from ghost_lens.toy.world import INFO_FILE, SAES_DIR, world_hash, world_path

    path = world_path(cfg.world)
    key: dict[str, Any] = {"hash": world_hash(cfg.world)}
    try:
        info = json.loads((path / INFO_FILE).read_text())
    except (OSError, ValueError):
        return key | {"built": False}
    key["fingerprint"] = info.get("fingerprint") or folder_fingerprint(path / SAES_DIR)
    return key


def sae_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """What identifies the SAE weights the config reads, resolved in :func:`ghost_lens.saes.sources.load_bundle`'s
    order: a folder (``sae_dir`` or a release that is a path) -> :func:`folder_fingerprint`; ``toy-facts-res`` -> the
    world's key; another built-in bundle -> its spec hash and its cache folder's fingerprint; a SAELens registry
    release -> its id, repo, the cached revision and the SAELens version (which owns the registry); a Hugging Face
    repo -> its id and cached revision."""
    from ghost_lens.saes.sources import TOY_RELEASE, builtin_release

    if cfg.sae_dir is not None:
        return {"folder": folder_fingerprint(cfg.sae_dir)}
    release = cfg.sae_release or builtin_release(cfg.model)  # no source named: the model's built-in bundle
    if release is None:
        return {}
    if release == TOY_RELEASE:
        return {"toy_world": world_key(cfg)}
    from ghost_lens.saes.builtin import SPECS, bundle_path, spec_hash

    if release in SPECS:  # a built-in bundle trained here (smollm2-135m-res): its cache folder
        return {"builtin": release, "spec": spec_hash(SPECS[release]),
                "folder": folder_fingerprint(bundle_path(SPECS[release]))}
    from ghost_lens.saes.sources import _release_directory

    directory = _release_directory()
    if release in directory:
        repo = directory[release].repo_id
        return {"release": release, "repo": repo, "revision": hub_revision(repo),
                "sae_lens": _version("sae-lens")}
    if Path(release).expanduser().is_dir():
        return {"folder": folder_fingerprint(release)}
    return {"repo": release, "revision": hub_revision(release)}


def _uses_toy_world(cfg: RunConfig) -> bool:
    from ghost_lens.saes.sources import TOY_RELEASE

    return cfg.model == "toy-facts" or cfg.sae_release == TOY_RELEASE or cfg.dataset.startswith("toy-facts")


def capture_key_parts(cfg: RunConfig) -> dict[str, Any]:
    """Everything the capture depends on: the config's capture fields, the SAE fingerprint, the toy world's key."""
    data = {k: to_dict(cfg)[k] for k in CAPTURE_FIELDS}
    data["saes"] = sae_fingerprint(cfg)
    if _uses_toy_world(cfg):
        data["world"] = world_key(cfg)
    return data


def capture_key(cfg: RunConfig) -> str:
    """Hash of :func:`capture_key_parts` (stored in the capture's ``capture.json`` as ``capture_key``)."""
    blob = json.dumps(capture_key_parts(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def stored_capture_key(capture_dir: str | Path) -> str | None:
    """The key a saved capture carries (``None``: no capture, an unreadable one, or one made before keys)."""
    try:
        meta = json.loads((Path(capture_dir) / CAPTURE_META).read_text())
    except (OSError, ValueError):
        return None
    return meta.get("capture_key") if isinstance(meta, dict) else None


# ---- manifest helpers -------------------------------------------------------------------------------------------


def dataset_hash(examples: list[Any]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.id, ex.group, ex.prompt, ex.answer, ex.label]).encode())
    return h.hexdigest()[:16]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def package_versions() -> dict[str, str]:
    return {"python": platform.python_version()} | {name: _version(name) for name in PACKAGES}


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """A run folder's manifest, or ``None`` when it is missing, truncated or not a JSON object."""
    try:
        data = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def run_format(manifest: dict[str, Any]) -> int | None:
    """The manifest's ``format_version`` (1 for the manifests written before it existed)."""
    if "format_version" in manifest:
        v = manifest["format_version"]
        return v if isinstance(v, int) else None
    return 1 if manifest.get("ghost_lens_run") == 1 else None


@dataclass
class RunFolder:
    """A claimed run folder, locked until :meth:`release`; ``reuse_capture`` says whether the saved capture carries
    the key of this config (it can be used as it is)."""

    path: Path
    cfg: RunConfig
    reuse_capture: bool
    manifest: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.perf_counter)
    _lock: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)

    @property
    def capture_dir(self) -> Path:
        return self.path / CAPTURE_DIR

    def timed(self, stage: str, seconds: float) -> None:
        self.manifest.setdefault("timings_s", {})[stage] = round(seconds, 3)
        self.write_manifest()

    def write_manifest(self) -> None:
        atomic_write_json(self.path / MANIFEST, self.manifest, default=str)

    def finish(self, **extra: Any) -> None:
        self.manifest.update(extra)
        self.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.manifest.setdefault("timings_s", {})["total"] = round(time.perf_counter() - self._t0, 3)
        self.write_manifest()

    def release(self) -> None:
        """Give the folder's lock back (idempotent)."""
        self._lock.close()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_run_config(path: str | Path) -> RunConfig:
    """The config of an existing run folder (lenient: a run from another version still opens)."""
    import yaml

    path = Path(path)
    if not (path / CONFIG).is_file():
        raise RunFolderError(f"{path} is not a ghost-lens run folder (no {CONFIG}); run `ghost-lens track` first")
    try:
        data = yaml.safe_load((path / CONFIG).read_text()) or {}
    except yaml.YAMLError:
        raise RunFolderError(f"{path / CONFIG} is unreadable (malformed YAML); rerun `ghost-lens track`") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path / CONFIG} is not a mapping of config keys; rerun `ghost-lens track`")
    return from_dict(RunConfig, data, strict=False)


# ---- where runs live --------------------------------------------------------------------------------------------


def default_run_dir(model: str, dataset: str) -> Path:
    """The folder ``ghost-lens track`` writes when no ``--out`` is given: ``runs/MODEL_DATASET`` (``/`` in the model
    name becomes ``_``; a dataset file contributes its stem: ``data/qa.csv`` -> ``qa``)."""
    name = Path(dataset).stem if Path(dataset).suffix else dataset
    return Path("runs") / f"{model.replace('/', '_')}_{name}"


DEFAULT_RUN_DIR = default_run_dir(RunConfig.model, RunConfig.dataset)  # the class defaults: nothing validated here
"""The run a bare ``ghost-lens track`` writes (``runs/toy-facts_toy-facts``): what ``explain``, ``interpret`` and
``tune`` read when no ``--run`` is given."""


def existing_run_dir(run: str | Path | None = None) -> Path:
    """The run folder ``explain`` / ``interpret`` / ``tune`` read: ``run``, or :data:`DEFAULT_RUN_DIR` when it is
    ``None`` (or empty); a missing folder is a one-line :class:`~ghost_lens.errors.RunFolderError` telling how to
    make it."""
    path = Path(run or DEFAULT_RUN_DIR)
    if not path.is_dir():
        hint = "run `ghost-lens track` first" + ("" if run else ", or pass --run")
        raise RunFolderError(f"no run folder at {path}: {hint}")
    return path


def check_not_being_written(path: str | Path) -> None:
    """A one-line :class:`~ghost_lens.errors.BusyError` ("run folder X is in use by pid N on host H") when a
    ``track`` holds the folder's lock; nothing is written into a folder that has no lock file."""
    path = Path(path)
    if (path / RUN_LOCK).is_file():
        with exclusive_lock(path / RUN_LOCK, f"run folder {path}", timeout=0):
            pass


def _ours(name: str) -> bool:
    """Files of the lock machinery and leftovers of an interrupted atomic write (what a run killed before it wrote
    its first file leaves in a folder that holds nothing else)."""
    return name in (RUN_LOCK, owner_path(RUN_LOCK).name) or is_leftover(name)


def _is_foreign(path: Path) -> bool:
    """A non-empty folder that is not a ghost-lens run (nothing may be written into it)."""
    if not path.is_dir():
        return False
    entries = [p.name for p in path.iterdir() if not _ours(p.name)]
    return bool(entries) and not ((path / CONFIG).is_file() and (path / MANIFEST).is_file())


def open_run_folder(out: str | Path, cfg: RunConfig, *, force: bool = False, argv: list[str] | None = None) -> RunFolder:
    """Lock and claim ``out`` for a run of ``cfg`` following the rules in the module docstring."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"--out {path} exists and is not a folder")
    if _is_foreign(path):  # checked before the lock file is created: a user's folder gets nothing written into it
        raise RunFolderError(f"{path} is not empty and is not a ghost-lens run folder; choose another --out")
    path.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(path, cfg, reuse_capture=False)
    folder._lock.enter_context(exclusive_lock(path / RUN_LOCK, f"run folder {path}"))
    try:
        _claim(folder, force, argv)
    except BaseException:
        folder.release()
        raise
    return folder


def _claim(folder: RunFolder, force: bool, argv: list[str] | None) -> None:
    path, cfg = folder.path, folder.cfg
    if _is_foreign(path):  # again, under the lock
        raise RunFolderError(f"{path} is not empty and is not a ghost-lens run folder; choose another --out")
    clean_folder_temps(path)
    has_capture = (folder.capture_dir / CAPTURE_META).is_file()
    if any(not _ours(p.name) for p in path.iterdir()):
        old_manifest = read_manifest(path)
        try:
            old_cfg = read_run_config(path)
        except GhostLensError:
            old_cfg = None
        # a run that failed before its capture (a typo in --model, a bad dataset), or whose manifest / config was
        # torn by a crash, holds nothing worth protecting
        failed_early = old_manifest is None or old_cfg is None or (
            "finished" not in old_manifest and not has_capture)
        if failed_early:
            logger.info("%s holds a run that failed early: taking it over", path)
        elif not force:
            version = run_format(old_manifest)
            if version != RUN_FORMAT:
                age = "an older" if version is not None and version < RUN_FORMAT else "another"
                raise RunFolderError(
                    f"{path} holds a run of {age} ghost-lens run format ({version or 'unknown'}; this version writes "
                    f"{RUN_FORMAT}); use --force to recompute it in place, or a new --out"
                )
            diff = config_diff(old_cfg, cfg)
            if diff:
                shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
                raise RunFolderError(
                    f"{path} holds a run with another config (differs in {shown}); use another --out, or --force to "
                    "recompute it (`ghost-lens tune` explores tracker settings on the saved capture)"
                )
    if not force and has_capture:
        stored = stored_capture_key(folder.capture_dir)
        folder.reuse_capture = stored is not None and stored == capture_key(cfg)
        if not folder.reuse_capture:
            logger.info("the capture in %s was made for another key: capturing again", folder.capture_dir)
    save_config(cfg, path / CONFIG)
    folder.manifest = {
        "ghost_lens_run": 1,
        "format_version": RUN_FORMAT,
        "config": to_dict(cfg),
        "seed": cfg.seed,
        "versions": package_versions(),
        "command": " ".join(argv if argv is not None else sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "capture_reused": folder.reuse_capture,
    }
    folder.write_manifest()
