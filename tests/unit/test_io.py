"""ghost_lens.io: atomic files and folders, leftovers of interrupted writes, the exclusive lock."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ghost_lens.errors import BusyError
from ghost_lens.io import (
    atomic_dir,
    atomic_save_file,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    clean_folder_temps,
    clean_stale_temps,
    exclusive_lock,
    owner_path,
    read_owner,
)

REPO = Path(__file__).resolve().parents[2]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


def test_atomic_text_json_yaml_and_safetensors_round_trip(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(tmp_path / "a.txt", "two")
    atomic_write_json(tmp_path / "b.json", {"x": [1, 2]})
    atomic_write_yaml(tmp_path / "c.yaml", {"k": "v", "n": 3})
    atomic_save_file({"t": torch.arange(5)}, tmp_path / "d.safetensors")
    assert (tmp_path / "a.txt").read_text() == "two"
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "c.yaml").read_text() == "k: v\nn: 3\n"
    assert torch.equal(load_file(str(tmp_path / "d.safetensors"))["t"], torch.arange(5))
    assert _leftovers(tmp_path) == []


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError), atomic_write(target) as fh:
        fh.write('{"half": ')
        raise RuntimeError("crash mid-write")
    with pytest.raises(TypeError):  # not serialisable: detected before anything is written
        atomic_write_json(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert _leftovers(tmp_path) == []


def test_atomic_dir_replaces_a_folder_only_once_the_new_one_is_complete(tmp_path):
    final = tmp_path / "capture"
    with atomic_dir(final) as tmp:
        (tmp / "x.txt").write_text("v1")
    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as tmp:
        (tmp / "x.txt").write_text("v2-partial")
        assert (final / "x.txt").read_text() == "v1"  # still the old one while the new is written
        raise KeyboardInterrupt
    assert (final / "x.txt").read_text() == "v1"
    with atomic_dir(final) as tmp:
        (tmp / "x.txt").write_text("v2")
        (tmp / "y.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["x.txt", "y.txt"]
    assert (final / "x.txt").read_text() == "v2"
    assert _leftovers(tmp_path) == []


def test_leftovers_of_a_killed_writer_are_cleaned_and_a_cut_swap_is_undone(tmp_path):
    # a writer killed mid-write leaves a temporary file and a temporary folder
    (tmp_path / ".manifest.json.tmp-4242-0123abcd").write_text('{"trunc')
    (tmp_path / ".capture.tmp-4242-89abcdef").mkdir()
    (tmp_path / ".capture.tmp-4242-89abcdef" / "capture.safetensors").write_bytes(b"partial")
    # a swap cut between its two renames: the old capture aside, no capture in place
    old = tmp_path / "graphs"
    (tmp_path / ".graphs.old-4242-00001111").mkdir()
    (tmp_path / ".graphs.old-4242-00001111" / "g.jsonl").write_text("kept")
    (tmp_path / "notes.txt").write_text("the user's")
    removed = clean_folder_temps(tmp_path)
    assert len(removed) == 2
    assert (old / "g.jsonl").read_text() == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graphs", "notes.txt"]
    assert clean_stale_temps(tmp_path / "absent") == []


def test_second_holder_in_this_process_gets_one_line_naming_pid_and_host(tmp_path):
    lock = tmp_path / "run" / ".ghost-lens.lock"
    with exclusive_lock(lock, "run folder runs/x"):
        owner = read_owner(lock)
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(BusyError) as exc, exclusive_lock(lock, "run folder runs/x"):
            pass
        msg = str(exc.value)
        assert msg.startswith(f"run folder runs/x is in use by pid {os.getpid()} on host {socket.gethostname()}")
        assert "\n" not in msg
    assert not owner_path(lock).exists()  # released: the record goes with the lock
    with exclusive_lock(lock, "run folder runs/x"):  # free again
        pass


_HOLDER = textwrap.dedent("""
    import sys, time
    from ghost_lens.io import exclusive_lock
    with exclusive_lock(sys.argv[1], "the thing"):
        print("locked", flush=True)
        time.sleep(120)
""")


def test_lock_of_another_process_then_taken_over_when_it_is_killed(tmp_path, caplog):
    lock = tmp_path / "w.lock"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock)], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=f"the thing is in use by pid {proc.pid} on host"), \
                exclusive_lock(lock, "the thing"):
            pass
        with pytest.raises(BusyError), exclusive_lock(lock, "the thing", timeout=0.3):  # waits, then gives up
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert read_owner(lock)["pid"] == proc.pid  # the dead holder's record is still there ...
    with caplog.at_level(logging.WARNING, logger="ghost_lens.io"), exclusive_lock(lock, "the thing"):
        assert read_owner(lock)["pid"] == os.getpid()  # ... and is taken over
    assert f"taking over the lock left by pid {proc.pid}" in caplog.text and "no longer running" in caplog.text


def test_atomic_files_get_the_ordinary_mode(tmp_path):
    """safetensors creates its files 0600; an atomic write must leave the mode a plain open() would give."""
    import os

    import torch

    from ghost_lens.io import atomic_save_file, atomic_write_text

    mask = os.umask(0)
    os.umask(mask)
    want = 0o666 & ~mask
    atomic_save_file({"x": torch.zeros(2)}, tmp_path / "a.safetensors")
    atomic_write_text(tmp_path / "b.txt", "hi")
    for name in ("a.safetensors", "b.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == want, name
