"""Builders of one toy world take turns (ghost_lens.toy.world.get_world): a finished world is never deleted by a
second builder, a failed rebuild leaves the old world, and a killed build's leftovers are cleaned up."""

from __future__ import annotations

import json
import threading
import time

import pytest

import ghost_lens.toy.build
from ghost_lens.toy.world import INFO_FILE, get_world, world_path
from tests.helpers.toy import tiny_world_cfg


class FakeBuild:
    """Stands in for ``build_world``: writes an ``info.json`` naming the build, after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay, self.fail, self.calls = delay, fail, 0

    def __call__(self, cfg, out, progress=True):  # noqa: ANN001
        self.calls += 1
        time.sleep(self.delay)
        if self.fail:
            raise KeyboardInterrupt  # Ctrl-C in the middle of a build
        (out / INFO_FILE).write_text(json.dumps({"build": self.calls}))
        return {}


def test_a_second_builder_waits_and_uses_the_first_ones_world(tmp_path, monkeypatch):
    fake = FakeBuild(delay=1.0)
    monkeypatch.setattr(ghost_lens.toy.build, "build_world", fake)
    cfg, paths = tiny_world_cfg(), []
    threads = [threading.Thread(target=lambda: paths.append(get_world(cfg, cache_dir=tmp_path, progress=False).path))
               for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join()
    assert fake.calls == 1 and len(paths) == 2 and paths[0] == paths[1]
    assert json.loads((paths[0] / INFO_FILE).read_text()) == {"build": 1}


def test_a_failed_rebuild_leaves_the_finished_world_and_no_leftovers(tmp_path, monkeypatch):
    cfg = tiny_world_cfg()
    monkeypatch.setattr(ghost_lens.toy.build, "build_world", FakeBuild())
    world = get_world(cfg, cache_dir=tmp_path, progress=False)
    monkeypatch.setattr(ghost_lens.toy.build, "build_world", FakeBuild(fail=True))
    with pytest.raises(KeyboardInterrupt):
        get_world(cfg, cache_dir=tmp_path, force=True, progress=False)
    assert json.loads((world.path / INFO_FILE).read_text()) == {"build": 1}
    assert [p.name for p in world.path.parent.iterdir() if ".tmp-" in p.name] == []


def test_leftovers_of_a_killed_build_are_removed_by_the_next_one(tmp_path, monkeypatch):
    cfg = tiny_world_cfg()
    final = world_path(cfg, tmp_path)
    final.parent.mkdir(parents=True)
    killed = final.parent / f".{final.name}.tmp-999999-0123abcd"  # a build that was SIGKILLed
    killed.mkdir()
    (killed / "model.safetensors").write_bytes(b"partial")
    legacy = final.parent / f".{final.name}-building-xyz"  # the same, from an earlier version
    legacy.mkdir()
    monkeypatch.setattr(ghost_lens.toy.build, "build_world", FakeBuild())
    get_world(cfg, cache_dir=tmp_path, progress=False)
    assert not killed.exists() and not legacy.exists()
    assert (final / INFO_FILE).is_file()
