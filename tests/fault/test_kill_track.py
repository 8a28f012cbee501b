"""Fault injection: ``ghost-lens track`` SIGKILLed during capture, tracking and evaluation, then run again.

The folder starts as a finished run of another config (``capture.top_k=16``) with a file of the user's in it; a
``track --force`` of the reference config is killed (``tests.fault._inject``) at one point; the same command without
``--force`` then runs to the end. Each time: the killed run left the old capture in place or a complete new one
(never a torn one), the user's file survives, the rerun does not reuse the old config's capture, leaves no temporary
files, and its AUROCs (every one in ``detection_metrics.json``, whatever else its schema holds) equal those of an
uninterrupted run of the same config.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ghost_lens import constants as C
from ghost_lens.run_folder import RUN_LOCK
from tests.helpers.cli import TINY_SETS, invoke

pytestmark = pytest.mark.fault

REPO = Path(__file__).resolve().parents[2]
SETS = [*TINY_SETS, "--num-samples", "30", "--set", "eval.n_bootstrap=10", "--set", "eval.n_folds=3",
        "--set", "eval.n_repeats=1", "--set", "eval.baselines=[logprob,random_decoder]",
        "--set", "detector.calibration_cv=0"]
"""A tiny world and a cheap evaluation (the numbers only have to be reproducible, not good)."""
OLD = ["--set", "capture.top_k=16"]
"""The config of the run the folder held before: its capture must never be reused for the reference config."""


def aurocs(run: Path) -> dict[str, float]:
    """Every number under a key containing ``auroc`` in the run's detection_metrics.json, by its path."""
    out: dict[str, float] = {}

    def walk(node, path: str) -> None:  # noqa: ANN001
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        elif isinstance(node, int | float) and not isinstance(node, bool) and "auroc" in path.lower():
            out[path] = node

    walk(json.loads((run / C.DETECTION_METRICS).read_text()), "")
    return out


def _meta(run: Path) -> dict:
    return json.loads((run / "capture" / C.CAPTURE_META).read_text())


def _leftovers(run: Path) -> list[str]:
    return sorted(p.name for p in run.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def _track(out: Path, *args: str):
    result = invoke("--threads", "1", "track", "--out", out, *args, *SETS)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("ghost_lens_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(C.CACHE_ENV, str(path))
        yield path


@pytest.fixture(scope="module")
def reference(cache, tmp_path_factory) -> Path:
    """An uninterrupted run of the reference config (the first run builds the tiny world)."""
    out = tmp_path_factory.mktemp("ref") / "run"
    _track(out)
    return out


@pytest.fixture(scope="module")
def old_run(cache, tmp_path_factory) -> Path:
    """A finished run of the OLD config, with a file the user put into the folder."""
    out = tmp_path_factory.mktemp("old") / "run"
    _track(out, *OLD)
    (out / "notes.md").write_text("my notes on this run")
    return out


@pytest.mark.parametrize("point", ["capture", "tracking", "evaluation"])
def test_sigkill_then_rerun_gives_the_uninterrupted_result(point, reference, old_run, cache, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(old_run, out)
    old_key = _meta(out)["capture_key"]
    assert old_key != _meta(reference)["capture_key"]

    cmd = [sys.executable, "-m", "tests.fault._inject", point, "--threads", "1", "track", "--out", str(out),
           "--force", *map(str, SETS)]
    killed = subprocess.run(cmd, cwd=REPO, env=os.environ | {C.CACHE_ENV: str(cache)}, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]

    # what the kill left: a run that is not finished, the user's file, and a capture that is whole
    assert "finished" not in json.loads((out / C.MANIFEST).read_text())
    assert (out / "notes.md").read_text() == "my notes on this run"
    assert (out / RUN_LOCK).is_file()  # the dead holder's lock (and its owner record) stay behind
    if point == "capture":
        assert _meta(out)["capture_key"] == old_key  # the old capture is not deleted before a new one is whole
        partial = out / C.CAPTURE_PARTIAL  # the new one is built aside, shard by shard, without its index yet
        assert (partial / C.CAPTURE_SHARDS_DIR / "00000").is_dir() and not (partial / C.CAPTURE_META).exists()
    else:
        assert _meta(out)["capture_key"] == _meta(reference)["capture_key"]

    rerun = _track(out)  # no --force: the folder now says "reference config", the capture decides by its own key
    manifest = json.loads((out / C.MANIFEST).read_text())
    assert manifest["capture_reused"] is (point != "capture")
    assert _meta(out)["capture_key"] == _meta(reference)["capture_key"]
    assert _meta(out)["capture_config"]["top_k"] == 64
    assert aurocs(out) == aurocs(reference) and aurocs(reference)
    assert _leftovers(out) == [] and not (out / C.CAPTURE_PARTIAL).exists()
    assert (out / "notes.md").read_text() == "my notes on this run"
    assert "run folder:" in rerun.output


SHARDED = ["--set", "capture.shard_size=8"]
"""30 examples in 4 shards."""


def _tensors(run: Path) -> dict:
    from ghost_lens.capture.trace import FeatureTrace

    t = FeatureTrace.load(run / "capture")
    return {"feat_idx": t.feat_idx, "feat_val": t.feat_val, "resid": t.resid_last_prompt, "tokens": t.tokens,
            "logprob": t.answer_logprob, **{f"dec_dir.{j}": d for j, d in enumerate(t.dec_dir)},
            **{f"dec_idx.{j}": d for j, d in enumerate(t.dec_idx)}}


def test_capture_killed_after_two_shards_resumes_from_the_third(cache, tmp_path):
    import torch

    ref = tmp_path / "ref"
    _track(ref, *SHARDED)
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tests.fault._inject", "shard", "--threads", "1", "track", "--out", str(out),
           *map(str, [*SETS, *SHARDED])]
    killed = subprocess.run(cmd, cwd=REPO, env=os.environ | {C.CACHE_ENV: str(cache), "GHOST_LENS_FAULT_AFTER": "2"},
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    shards = out / C.CAPTURE_PARTIAL / C.CAPTURE_SHARDS_DIR
    assert sorted(p.name for p in shards.iterdir()) == ["00000", "00001"]
    stamps = {p: p.stat().st_mtime_ns for p in shards.rglob("*") if p.is_file()}
    assert not (out / "capture").exists()

    _track(out, *SHARDED)
    kept = out / "capture" / C.CAPTURE_SHARDS_DIR
    assert sorted(p.name for p in kept.iterdir()) == ["00000", "00001", "00002", "00003"]
    for path, stamp in stamps.items():  # the first two shards were reused as they were, not captured again
        assert (kept / path.relative_to(shards)).stat().st_mtime_ns == stamp
    a, b = _tensors(out), _tensors(ref)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert aurocs(out) == aurocs(ref) and aurocs(ref)
    assert json.loads((out / C.TRACK_METRICS).read_text())["metrics"] == json.loads(
        (ref / C.TRACK_METRICS).read_text())["metrics"]
    assert _leftovers(out) == [] and not (out / C.CAPTURE_PARTIAL).exists()
