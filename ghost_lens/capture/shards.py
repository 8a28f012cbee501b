"""Sharded, streaming, resumable capture: memory of one shard whatever the dataset size.

Layout of a sharded capture folder (names in :mod:`ghost_lens.constants`)::

    capture/
      shards/00000/  capture.safetensors  decoders.safetensors  capture.json   <- a FeatureTrace of its own
      shards/00001/  ...
      capture.json                                                            <- the index, written LAST

Steps of :func:`capture_sharded`:

1. Plan: the examples, in dataset order, are cut into shards of ``cfg.shard_size`` (:func:`plan_shards`).
2. Resume: a shard already on disk is kept when its ``capture.json`` carries this capture's key, the dataset hash,
   the shard size and exactly the planned example ids (:func:`shard_matches`); the first shard that does not match
   (missing, from another config, torn) is captured again, with every shard after it (never mixed).
3. Capture: each missing shard is tokenized, length-sorted, batched and captured on its own
   (:func:`~ghost_lens.capture.capture.capture_examples`), written at once (atomically: safetensors + JSON, its
   ``capture.json`` last) and freed. Peak memory: the model, the SAEs and one shard.
4. Decoder tables are incremental: a shard stores the unit-norm decoder rows of the features it is the first to
   see (earlier shards hold the others), so the tables cost what a single-file capture's cost; they are merged on
   load (:meth:`CaptureShards.decoders`). A resumed shard's ids are read back, so a resumed capture ends
   byte-identical to an uninterrupted one.
5. Index: ``capture.json`` (shards with their example and token counts, the capture key, the dataset hash and the
   metadata common to all shards) is written last: its presence says the capture is complete.

Data-parallel capture (``torchrun``, :mod:`ghost_lens.capture.distributed`): each rank captures the shards
``i % world_size == rank`` with :func:`capture_assigned`, each with a *full* decoder table (every feature it saw;
marked ``decoder_tables: full`` in the safetensors header), since no rank knows what the others saw; then rank 0
runs :func:`capture_sharded`, which reuses every matching full shard after trimming its table to the features no
earlier shard stores (step 4's rule, applied after the fact). The result is byte-identical to a one-process
capture. A full shard is self-contained, so it is reused whatever happened to the shards before it; an incremental
shard after a recaptured or trimmed one is captured again (its table leaned on the earlier ones).

Later stages read it lazily (:class:`CaptureShards`: one shard at a time, e.g. tracking) or whole
(:meth:`CaptureShards.load` / :meth:`FeatureTrace.load <ghost_lens.capture.trace.FeatureTrace.load>`: the shards
concatenated, for ``explain`` / ``interpret`` / ``tune`` and the evaluation's per-example inputs).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ghost_lens.capture.trace import FeatureTrace, load_tensors
from ghost_lens.config import CaptureConfig
from ghost_lens.constants import CAPTURE_DECODERS, CAPTURE_META, CAPTURE_SHARDS_DIR, CAPTURE_TENSORS
from ghost_lens.errors import DatasetError, RunFolderError
from ghost_lens.io import atomic_write_json, fsync_tree, swap_dir

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

    from ghost_lens.data.example import Example

logger = logging.getLogger(__name__)

SHARD_FORMAT = 1
"""Version of the sharded layout (the index's ``shard_format``)."""

PER_EXAMPLE_META = ("ids", "groups", "labels", "prompts", "answers", "answer_separators", "example_meta")
"""Metadata lists with one entry per example: kept in each shard's ``capture.json``, concatenated on load."""

MERGED_META = ("n_truncated", "vocab")
"""Metadata combined over shards in the index: counts summed, the vocabulary's entries united."""


def plan_shards(n_examples: int, shard_size: int) -> list[range]:
    """Example index ranges of consecutive shards of ``shard_size`` examples, in order (the last one shorter)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    return [range(s, min(s + shard_size, n_examples)) for s in range(0, n_examples, shard_size)]


def shard_name(i: int) -> str:
    return f"{i:05d}"


def is_sharded(folder: str | Path) -> bool:
    """Whether ``folder`` holds a complete sharded capture (its index says so)."""
    try:
        meta = json.loads((Path(folder) / CAPTURE_META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "shards" in meta


def shard_info(index: int, examples: range, ids: Sequence[str], key: str | None, dataset_hash: str | None,
               shard_size: int) -> dict[str, Any]:
    """What identifies a shard (stored as ``meta["shard"]`` in its ``capture.json``)."""
    return {"index": index, "first": examples.start, "n_examples": len(examples), "shard_size": shard_size,
            "capture_key": key, "dataset_hash": dataset_hash, "ids_hash": _ids_hash(ids)}


def _ids_hash(ids: Sequence[str]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([str(i) for i in ids]).encode()).hexdigest()[:16]


def read_shard_meta(shard_dir: Path) -> dict[str, Any] | None:
    """A shard's ``capture.json`` when the shard is whole (its three files there), else ``None``."""
    if not all((shard_dir / n).is_file() for n in (CAPTURE_TENSORS, CAPTURE_DECODERS, CAPTURE_META)):
        return None
    try:
        meta = json.loads((shard_dir / CAPTURE_META).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def shard_matches(meta: dict[str, Any] | None, expected: dict[str, Any]) -> bool:
    """Whether a shard on disk is the planned one (key, dataset, size, position and example ids all equal)."""
    return meta is not None and meta.get("shard") == expected


def merge_decoders(tables: Sequence[tuple[list[torch.Tensor], list[torch.Tensor]]]
                   ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per layer position, the shards' decoder tables united and sorted by feature id (each id once)."""
    if not tables:
        return [], []
    n_layers = len(tables[0][0])
    dec_idx, dec_dir = [], []
    for j in range(n_layers):
        idx = torch.cat([t[0][j].to(torch.int64) for t in tables])
        rows = torch.cat([t[1][j] for t in tables])
        order = torch.argsort(idx)
        idx, rows = idx[order], rows[order]
        if idx.numel() > 1 and bool((idx[1:] == idx[:-1]).any()):
            raise RunFolderError(f"layer position {j}: a feature's decoder row is stored by two shards (a mixed "
                                 "capture); run `ghost-lens track --force`")
        dec_idx.append(idx)
        dec_dir.append(rows)
    return dec_idx, dec_dir


class CaptureShards:
    """A complete sharded capture, read lazily: the index at once, a shard's tensors only when asked."""

    def __init__(self, folder: Path, index: dict[str, Any]):
        self.folder = folder
        self.index = index
        self._decoders: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._meta: dict[str, Any] | None = None

    @classmethod
    def open(cls, folder: str | Path) -> CaptureShards:
        folder = Path(folder)
        try:
            index = json.loads((folder / CAPTURE_META).read_text())
        except (OSError, ValueError):
            raise RunFolderError(f"no capture in {folder}: {CAPTURE_META} is missing or unreadable "
                                 "(run `ghost-lens track` first)") from None
        if not isinstance(index, dict) or "shards" not in index:
            raise RunFolderError(f"{folder / CAPTURE_META} is not a sharded capture's index")
        for entry in index["shards"]:
            if read_shard_meta(folder / CAPTURE_SHARDS_DIR / entry["name"]) is None:
                raise RunFolderError(f"capture shard {entry['name']} in {folder} is missing or torn; "
                                     "run `ghost-lens track --force`")
        return cls(folder, index)

    @property
    def n_shards(self) -> int:
        return len(self.index["shards"])

    @property
    def n_examples(self) -> int:
        return int(sum(e["n_examples"] for e in self.index["shards"]))

    def shard_dir(self, i: int) -> Path:
        return self.folder / CAPTURE_SHARDS_DIR / self.index["shards"][i]["name"]

    def shard_meta(self, i: int) -> dict[str, Any]:
        return json.loads((self.shard_dir(i) / CAPTURE_META).read_text())

    @property
    def meta(self) -> dict[str, Any]:
        """The whole capture's metadata: the index's, with the per-example lists of every shard concatenated."""
        if self._meta is None:
            meta = {k: v for k, v in self.index.items() if k != "shards"}
            lists: dict[str, list[Any]] = {}
            for i in range(self.n_shards):
                sm = self.shard_meta(i)
                for key in PER_EXAMPLE_META:
                    if key in sm:
                        lists.setdefault(key, []).extend(sm[key])
            self._meta = meta | {k: v for k, v in lists.items() if len(v) == self.n_examples}
        return self._meta

    def decoders(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The merged decoder tables ``(dec_idx, dec_dir)`` (read once, then kept)."""
        if self._decoders is None:
            tables = []
            n_layers = len(self.index["layers"])
            for i in range(self.n_shards):
                dec = load_file(str(self.shard_dir(i) / CAPTURE_DECODERS))
                tables.append(([dec[f"dec_idx.{j}"] for j in range(n_layers)],
                               [dec[f"dec_dir.{j}"] for j in range(n_layers)]))
            self._decoders = merge_decoders(tables)
        return self._decoders

    def shard(self, i: int) -> FeatureTrace:
        """Shard ``i`` as a :class:`FeatureTrace` with the merged decoder tables and its own examples' metadata."""
        tensors = load_tensors(self.shard_dir(i) / CAPTURE_TENSORS)
        dec_idx, dec_dir = self.decoders()
        meta = {k: v for k, v in self.index.items() if k != "shards"} | {
            k: v for k, v in self.shard_meta(i).items() if k in PER_EXAMPLE_META}
        return FeatureTrace(**tensors, dec_idx=dec_idx, dec_dir=dec_dir, meta=meta)

    def __iter__(self) -> Iterator[FeatureTrace]:
        for i in range(self.n_shards):
            yield self.shard(i)

    def load(self) -> FeatureTrace:
        """Every shard concatenated into one :class:`FeatureTrace` (what a single-file capture loads as)."""
        dec_idx, dec_dir = self.decoders()
        return FeatureTrace.concat(list(self), dec_idx, dec_dir, dict(self.meta))


def _read_decoder_ids(shard_dir: Path, n_layers: int) -> list[torch.Tensor]:
    with safe_open(str(shard_dir / CAPTURE_DECODERS), framework="pt") as fh:
        return [fh.get_tensor(f"dec_idx.{j}").to(torch.int64) for j in range(n_layers)]


FULL_TABLES = {"decoder_tables": "full"}
"""Safetensors header metadata of a shard's ``decoders.safetensors`` holding every feature the shard saw (written by
:func:`capture_assigned`); an incremental table (the default) carries no metadata."""


def has_full_tables(shard_dir: Path) -> bool:
    """Whether a shard's decoder tables hold every feature it saw (a data-parallel rank wrote it) rather than only
    those no earlier shard stores."""
    with safe_open(str(shard_dir / CAPTURE_DECODERS), framework="pt") as fh:
        return (fh.metadata() or {}).get("decoder_tables") == FULL_TABLES["decoder_tables"]


def _trim_full_tables(shard_dir: Path, known: list[torch.Tensor]) -> None:
    """Rewrite a full shard's decoder tables (atomically) as the incremental ones a one-process capture writes: only
    the features not in ``known`` (which gains them). Byte-identical to what :func:`capture_sharded` would write."""
    from ghost_lens.io import atomic_save_file

    dec = load_file(str(shard_dir / CAPTURE_DECODERS))
    out: dict[str, torch.Tensor] = {}
    for j in range(len(known)):
        idx, rows = dec[f"dec_idx.{j}"].to(torch.int64), dec[f"dec_dir.{j}"]
        new = ~torch.isin(idx, known[j])
        out[f"dec_idx.{j}"], out[f"dec_dir.{j}"] = idx[new].contiguous(), rows[new].contiguous()
        known[j] = torch.cat([known[j], idx[new]]).sort().values
    atomic_save_file(out, shard_dir / CAPTURE_DECODERS)


def _drop_known(trace: FeatureTrace, known: list[torch.Tensor]) -> None:
    """Keep in ``trace``'s decoder tables only the features no earlier shard stored; add them to ``known``."""
    for j, (idx, rows) in enumerate(zip(trace.dec_idx, trace.dec_dir, strict=True)):
        idx = idx.to(torch.int64)
        new = ~torch.isin(idx, known[j])
        trace.dec_idx[j], trace.dec_dir[j] = idx[new], rows[new]
        known[j] = torch.cat([known[j], idx[new]]).sort().values


def capture_sharded(
    model: HookedTransformer,
    saes: Mapping[int, SAE],
    examples: Sequence[Example],
    cfg: CaptureConfig,
    folder: str | Path,
    *,
    key: str | None = None,
    dataset_hash: str | None = None,
    progress: Any = False,
    model_name: str | None = None,
    finish: Callable[[FeatureTrace, Sequence[Example]], None] | None = None,
) -> CaptureShards:
    """Steps 1-5 of the module docstring into ``folder`` (created; valid shards already there are kept).

    ``key`` and ``dataset_hash`` identify the capture (shards of another key are never reused); ``finish`` is
    called on each shard's trace with its examples before it is written (adds metadata, e.g. the vocabulary).
    """
    from ghost_lens.capture.capture import resolve_hooks

    if not examples:
        raise DatasetError("no examples to capture")
    folder = Path(folder)
    shards_dir = folder / CAPTURE_SHARDS_DIR
    shards_dir.mkdir(parents=True, exist_ok=True)
    (folder / CAPTURE_META).unlink(missing_ok=True)  # the index goes first: an incomplete capture has none
    saes = resolve_hooks(model, saes, cfg)  # one SAEBundle, validated once, described once for every shard
    plan = plan_shards(len(examples), cfg.shard_size)
    known = [torch.zeros(0, dtype=torch.int64) for _ in saes.layers]  # per layer: feature ids stored so far
    entries: list[dict[str, Any]] = []
    merged: dict[str, Any] = {"common": None, "n_truncated": 0, "vocab": {}}
    resumable = True
    advance = _batch_progress(progress, sum(-(-len(r) // cfg.batch_size) for r in plan))
    for i, rows in enumerate(plan):
        shard_dir = shards_dir / shard_name(i)
        part = [examples[r] for r in rows]
        expected = shard_info(i, rows, [ex.id for ex in part], key, dataset_hash, cfg.shard_size)
        meta = read_shard_meta(shard_dir)
        full = shard_matches(meta, expected) and has_full_tables(shard_dir)
        if full or (resumable and shard_matches(meta, expected)):
            assert meta is not None
            _reuse_shard(shard_dir, full, known)
            resumable = resumable and not full  # an incremental shard after a full one leaned on other tables
            for _ in range(-(-len(rows) // cfg.batch_size)):
                advance()
            logger.info("capture shard %d/%d: reused (%d examples)", i + 1, len(plan), len(rows))
        else:
            if resumable and shard_dir.exists():
                logger.info("capture shard %d/%d does not match this capture: capturing it and the rest again",
                            i + 1, len(plan))
            resumable = False  # every shard after a recaptured one is recaptured too (incremental decoders)
            meta, n_tok = _capture_shard(model, saes, part, cfg, shard_dir, expected, known, advance, model_name,
                                         finish)
            logger.info("capture shard %d/%d: %d examples, %d tokens kept", i + 1, len(plan), len(rows), n_tok)
        entries.append({"name": shard_name(i), "n_examples": len(rows), "n_tokens": int(_n_tokens(shard_dir))})
        _merge_meta(merged, meta)
    _remove_stale(shards_dir, {e["name"] for e in entries})
    index = _index(merged, entries, key, dataset_hash, len(examples))
    atomic_write_json(folder / CAPTURE_META, index)  # last: the capture is complete
    return CaptureShards(folder, index)


def _remove_stale(shards_dir: Path, names: set[str]) -> None:
    """Remove the shards not in ``names``: those of a longer capture that stood here before."""
    for stale in sorted(shards_dir.iterdir()):
        if stale.name not in names:
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def _merge_meta(merged: dict[str, Any], meta: Mapping[str, Any]) -> None:
    """Fold one shard's metadata into ``merged``: the first shard's shared keys, truncations summed, vocabularies
    joined."""
    merged["n_truncated"] += int(meta.get("n_truncated", 0))
    merged["vocab"].update(meta.get("vocab") or {})
    if merged["common"] is None:
        merged["common"] = {k: v for k, v in meta.items() if k not in (*PER_EXAMPLE_META, *MERGED_META, "shard")}


def _index(
    merged: dict[str, Any], entries: list[dict[str, Any]], key: str | None, dataset_hash: str | None, n_examples: int
) -> dict[str, Any]:
    """The capture index (``capture.json``) of the shards ``entries``."""
    common = merged["common"]
    assert common is not None
    index = {**common, "n_truncated": merged["n_truncated"], "capture_key": key, "dataset_hash": dataset_hash,
             "n_examples": n_examples, "shard_format": SHARD_FORMAT, "shards": entries}
    if merged["vocab"]:
        index["vocab"] = dict(sorted(merged["vocab"].items(), key=lambda kv: int(kv[0])))
    return index


def _reuse_shard(shard_dir: Path, full: bool, known: list[torch.Tensor]) -> None:
    """Keep a valid shard: a full one (captured by a data-parallel rank: self-contained) is trimmed to what is new
    here; an incremental one's decoder ids join ``known``."""
    if full:
        _trim_full_tables(shard_dir, known)
    else:
        for j, ids in enumerate(_read_decoder_ids(shard_dir, len(known))):
            known[j] = torch.cat([known[j], ids]).sort().values


def _capture_shard(
    model: HookedTransformer, saes: Mapping[int, SAE], part: Sequence[Example], cfg: CaptureConfig, shard_dir: Path,
    expected: dict[str, Any], known: list[torch.Tensor], advance: Any, model_name: str | None,
    finish: Callable[[FeatureTrace, Sequence[Example]], None] | None,
) -> tuple[dict[str, Any], int]:
    """Capture one shard's examples into ``shard_dir`` (replacing what was there), its decoder tables holding only
    the features not in ``known`` (which gains them); its metadata and number of kept tokens."""
    from ghost_lens.capture.capture import capture_examples

    if shard_dir.exists():
        shutil.rmtree(shard_dir)
    trace = capture_examples(model, saes, part, cfg, progress=advance, model_name=model_name)
    if finish is not None:
        finish(trace, part)
    _drop_known(trace, known)
    trace.meta["shard"] = expected
    write_shard(trace, shard_dir)
    return trace.meta, int(trace.offsets[-1])


def write_shard(trace: FeatureTrace, shard_dir: Path, *, full_tables: bool = False) -> Path:
    """One shard's files, atomically, its ``capture.json`` last: a shard is whole or absent (``full_tables``: its
    decoder tables hold every feature it saw, :data:`FULL_TABLES`)."""
    return trace.save(shard_dir, decoder_metadata=FULL_TABLES if full_tables else None)


def prepare_partial(folder: str | Path) -> Path:
    """Make ``folder/shards/`` and remove the index (an incomplete capture has none): what rank 0 does before any
    rank writes a shard into ``folder``."""
    folder = Path(folder)
    (folder / CAPTURE_SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    (folder / CAPTURE_META).unlink(missing_ok=True)
    return folder


def assigned_shards(n_shards: int, rank: int, world_size: int) -> list[int]:
    """The shards rank ``rank`` of ``world_size`` captures: ``i % world_size == rank``."""
    return [i for i in range(n_shards) if i % world_size == rank]


def capture_assigned(
    model: HookedTransformer,
    saes: Mapping[int, SAE],
    examples: Sequence[Example],
    cfg: CaptureConfig,
    folder: str | Path,
    *,
    rank: int,
    world_size: int,
    key: str | None = None,
    dataset_hash: str | None = None,
    progress: Any = False,
    model_name: str | None = None,
    finish: Callable[[FeatureTrace, Sequence[Example]], None] | None = None,
) -> list[int]:
    """One data-parallel rank's part of a sharded capture into ``folder`` (prepared by rank 0,
    :func:`prepare_partial`): every shard of :func:`assigned_shards` not already there, with full decoder tables.
    Returns the indices of the shards it captured (a matching shard on disk is kept). Writes no index: rank 0's
    :func:`capture_sharded` does, once every rank is done."""
    from ghost_lens.capture.capture import capture_examples, resolve_hooks

    if not examples:
        raise DatasetError("no examples to capture")
    shards_dir = Path(folder) / CAPTURE_SHARDS_DIR
    shards_dir.mkdir(parents=True, exist_ok=True)
    saes = resolve_hooks(model, saes, cfg)  # a bad layer / hook fails here, before any forward pass
    plan = plan_shards(len(examples), cfg.shard_size)
    mine = assigned_shards(len(plan), rank, world_size)
    advance = _batch_progress(progress, sum(-(-len(plan[i]) // cfg.batch_size) for i in mine))
    captured = []
    for i in mine:
        rows, shard_dir = plan[i], shards_dir / shard_name(i)
        part = [examples[r] for r in rows]
        expected = shard_info(i, rows, [ex.id for ex in part], key, dataset_hash, cfg.shard_size)
        if shard_matches(read_shard_meta(shard_dir), expected):
            for _ in range(-(-len(rows) // cfg.batch_size)):
                advance()
            logger.info("rank %d: capture shard %d/%d reused", rank, i + 1, len(plan))
            continue
        if shard_dir.exists():
            shutil.rmtree(shard_dir)
        trace = capture_examples(model, saes, part, cfg, progress=advance, model_name=model_name)
        if finish is not None:
            finish(trace, part)
        trace.meta["shard"] = expected
        write_shard(trace, shard_dir, full_tables=True)
        del trace
        captured.append(i)
        logger.info("rank %d: capture shard %d/%d: %d examples", rank, i + 1, len(plan), len(rows))
    return captured


def _n_tokens(shard_dir: Path) -> int:
    with safe_open(str(shard_dir / CAPTURE_TENSORS), framework="pt") as fh:
        return int(fh.get_tensor("offsets")[-1])


def _batch_progress(progress: Any, total: int) -> Callable[[], None]:
    """One per-batch callback over every shard: a task in a given rich ``Progress``, else nothing."""
    from rich.progress import Progress

    if isinstance(progress, Progress):
        task = progress.add_task("capture", total=total)
        return lambda: progress.advance(task)
    if callable(progress):
        return progress
    return lambda: None


def promote(partial: str | Path, final: str | Path) -> Path:
    """Move a complete capture from ``partial`` to ``final``, replacing what is there only once it is whole: the old
    folder is renamed aside, the new one into place, then the old one removed (the :mod:`ghost_lens.io` swap; a
    crash between the renames is undone by :func:`ghost_lens.io.clean_stale_temps`)."""
    partial, final = Path(partial), Path(final)
    if not is_sharded(partial):
        raise RunFolderError(f"{partial} holds no complete capture")
    fsync_tree(partial)
    swap_dir(partial, final)
    return final
