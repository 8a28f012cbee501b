"""A data-parallel rank other than 0 loads the dataset only after rank 0's decision (``track_run._run_rank``).

So a generated dataset (world-facts) is generated once, by rank 0, and read from its cache by the others; a rank
told that the capture is reused, or that rank 0 failed, loads nothing at all. The process group is replaced by a
recording stand-in (the real two-process runs are in tests/cli/test_cli_parallel_device.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ghost_lens import track_run
from ghost_lens.capture.distributed import RankError
from ghost_lens.config import RunConfig


class Ctx:
    rank, world_size = 1, 2

    def __init__(self, plan: dict[str, Any], calls: list[str]):
        self.plan, self.calls = plan, calls

    def broadcast(self, obj: Any = None) -> Any:
        self.calls.append("broadcast")
        return self.plan

    def gather(self, obj: Any) -> list[Any]:
        self.calls.append("gather")
        return [{"error": None, "shards": []}, obj]


@pytest.fixture
def calls(monkeypatch) -> list[str]:
    seen: list[str] = []

    def load_data(cfg, device, prog, folder):
        seen.append("load_data")
        return None, [], "hash0"

    monkeypatch.setattr(track_run, "_load_data", load_data)
    monkeypatch.setattr("ghost_lens.pipeline.load_model_and_bundle",
                        lambda cfg, progress, model: (seen.append("load_model"), (None, None))[1])
    monkeypatch.setattr(track_run, "_capture_assigned", lambda *a: (seen.append("capture"), [1])[1])
    return seen


def test_dataset_loaded_after_rank0_decides(calls, tmp_path: Path):
    plan = {"error": None, "capture": True, "dataset_hash": "hash0", "capture_key": "k"}
    track_run._run_rank(Ctx(plan, calls), RunConfig(), tmp_path, "cpu")
    assert calls == ["broadcast", "load_data", "load_model", "capture", "gather"]


def test_nothing_loaded_when_capture_reused(calls, tmp_path: Path):
    track_run._run_rank(Ctx({"error": None, "capture": False}, calls), RunConfig(), tmp_path, "cpu")
    assert calls == ["broadcast"]


def test_nothing_loaded_when_rank0_failed(calls, tmp_path: Path):
    with pytest.raises(RankError, match="rank 0 stopped: no such dataset"):
        track_run._run_rank(Ctx({"error": "no such dataset"}, calls), RunConfig(), tmp_path, "cpu")
    assert calls == ["broadcast"]


def test_other_dataset_is_reported_at_the_barrier(calls, tmp_path: Path):
    plan = {"error": None, "capture": True, "dataset_hash": "other", "capture_key": "k"}
    with pytest.raises(Exception, match="another dataset than rank 0"):
        track_run._run_rank(Ctx(plan, calls), RunConfig(), tmp_path, "cpu")
    assert calls == ["broadcast", "load_data", "gather"]
