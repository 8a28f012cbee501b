"""Atomic writes and exclusive locks: how ghost-lens puts files on disk so that a crash never leaves a torn one.

1. **Files** (:func:`atomic_write`, and its text / bytes / JSON / YAML / safetensors forms): the content goes to a
   temporary file in the same folder (``.NAME.tmp-PID-RANDOM``), is flushed and ``fsync``-ed, then renamed over
   ``NAME`` with :func:`os.replace` (atomic within one file system) and the folder is ``fsync``-ed. A reader, or the
   next run after a crash or ``SIGKILL``, sees the old file or the new one, never half of one.
2. **Folders** (:func:`atomic_dir`): the caller fills a temporary sibling (``.NAME.tmp-PID-RANDOM/``); on success the
   old folder (if any) is renamed aside (``.NAME.old-PID-RANDOM``), the new one renamed into place and the old one
   removed. Nothing is deleted before its replacement is complete. A crash between the two renames leaves the old
   folder aside; :func:`clean_stale_temps` (run by the next writer, under its lock) puts it back and removes the
   leftovers of interrupted writes.
3. **Locks** (:func:`exclusive_lock`): an OS lock (:class:`filelock.FileLock`: ``flock`` on POSIX, which the kernel
   releases when the holder dies, ``SIGKILL`` included) plus an owner record beside it (``LOCK.owner``: pid, host,
   start time) that names the holder in the "in use" error. A record left by a holder that died is detected when
   the lock is taken and replaced (logged as a takeover).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ghost_lens.errors import BusyError

logger = logging.getLogger(__name__)

TMP_TAG, OLD_TAG = ".tmp-", ".old-"


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}{tag}{os.getpid()}-{secrets.token_hex(4)}")


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new entry in ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _ordinary_mode(path: Path) -> None:
    """Give a finished temp file the mode a plain ``open(path, "w")`` would (0666 less the umask): some writers
    (safetensors) create their files 0600, which would make shared run folders unreadable to colleagues."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (safetensors, torch.save, matplotlib);
    on a clean exit it is fsync-ed and renamed over ``path``; on an exception it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, TMP_TAG)
    try:
        yield tmp
        _fsync_file(tmp)
        _ordinary_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8", newline: str | None = None
                 ) -> Iterator[IO[Any]]:
    """``open(path, mode)`` that replaces ``path`` only once the block has finished without an exception."""
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_write writes whole files: mode 'w', 'wt' or 'wb', not {mode!r}")
    binary = "b" in mode
    with atomic_path(path) as tmp:
        with open(tmp, mode, encoding=None if binary else encoding, newline=None if binary else newline) as fh:
            yield fh
            fh.flush()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1, **dumps_kwargs: Any) -> Path:
    """JSON text of ``obj`` (serialised before anything is written: a non-serialisable value leaves ``path`` as
    it was)."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps_kwargs))


def atomic_write_yaml(path: str | Path, obj: Any, *, sort_keys: bool = False) -> Path:
    import yaml

    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=sort_keys))


def atomic_save_file(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """:func:`safetensors.torch.save_file`, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def fsync_tree(folder: Path) -> None:
    """fsync every file under ``folder`` (before a rename publishes them)."""
    for f in folder.rglob("*"):
        if f.is_file():
            _fsync_file(f)


def swap_dir(src: Path, path: Path) -> None:
    """Put the finished folder ``src`` in the place of ``path``: the old ``path`` (if any) is renamed aside first
    and removed only after ``src`` took its name, so a crash leaves one of the two whole."""
    old = None
    if path.exists():
        old = _sibling(path, OLD_TAG)
        os.replace(path, old)
    os.replace(src, path)
    fsync_dir(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary sibling folder of ``path``; on a clean exit it replaces ``path`` (see the module
    docstring), on an exception it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, TMP_TAG)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_dir(tmp, path)


def clean_stale_temps(path: str | Path) -> list[Path]:
    """After an interrupted write of ``path``: restore ``path`` from an ``.old-`` sibling if the swap was cut between
    its renames, and remove every temporary sibling. Call it only while holding the lock that guards ``path``
    (another writer's temporaries would otherwise go too). Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    olds = sorted(path.parent.glob(f".{path.name}{OLD_TAG}*"), key=lambda p: p.stat().st_mtime)
    if olds and not path.exists():
        os.replace(olds.pop(), path)
        logger.warning("restored %s from an interrupted replacement", path)
    removed = []
    for stale in [*path.parent.glob(f".{path.name}{TMP_TAG}*"), *olds]:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed.append(stale)
    if removed:
        logger.info("removed %d leftover(s) of an interrupted write of %s", len(removed), path)
    return removed


_LEFTOVER = re.compile(rf"^\.(?P<name>.+)(?:{re.escape(TMP_TAG)}|{re.escape(OLD_TAG)})\d+-[0-9a-f]{{8}}$")


def is_leftover(name: str) -> bool:
    """Whether a file name is one of this module's temporaries (``.NAME.tmp-PID-RANDOM`` / ``.NAME.old-...``)."""
    return _LEFTOVER.match(name) is not None


def clean_folder_temps(folder: str | Path) -> list[Path]:
    """:func:`clean_stale_temps` for every leftover (``.NAME.tmp-*`` / ``.NAME.old-*``) in ``folder`` and its
    sub-folders. Same rule: only while holding the lock that guards ``folder``."""
    folder = Path(folder)
    removed: list[Path] = []
    names = {(p.parent, m.group("name")) for p in folder.rglob(".*") if (m := _LEFTOVER.match(p.name))}
    for parent, name in sorted(names):
        removed += clean_stale_temps(parent / name)
    return removed


# ---- locks ------------------------------------------------------------------------------------------------------


def owner_path(lock_path: str | Path) -> Path:
    lock_path = Path(lock_path)
    return lock_path.with_name(lock_path.name + ".owner")


def read_owner(lock_path: str | Path) -> dict[str, Any] | None:
    """The owner record of a lock (``pid``, ``host``, ``started``, ``what``), or ``None`` if absent or unreadable."""
    try:
        data = json.loads(owner_path(lock_path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def _holder(lock_path: Path) -> str:
    for _ in range(20):  # the holder writes its record right after taking the lock
        owner = read_owner(lock_path)
        if owner is not None:
            return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} (since {owner.get('started', '?')})"
        time.sleep(0.05)
    return "another process"


@contextlib.contextmanager
def exclusive_lock(path: str | Path, what: str, *, timeout: float | None = 0.0) -> Iterator[Path]:
    """Hold an exclusive inter-process lock on the file ``path`` for the block.

    Args:
        path: the lock file (created, with its folder, if missing; left in place afterwards).
        what: the guarded thing, as the error names it (``"run folder runs/x"``).
        timeout: seconds to wait for another holder (``0``: fail at once, ``None``: wait as long as it takes).

    Raises:
        BusyError: ``"{what} is in use by pid N on host H (since T)"`` when the lock stays held past ``timeout``.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(path)
        if timeout is not None and timeout <= 0:
            raise BusyError(f"{what} is in use by {holder}") from None
        logger.warning("waiting for %s: in use by %s", what, holder)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise BusyError(f"{what} is in use by {_holder(path)}") from None
    try:
        stale = read_owner(path)
        if stale is not None:  # the lock was free, yet a record remains: its holder died without releasing
            logger.warning("%s: taking over the lock left by pid %s on host %s (%s)", what, stale.get("pid"),
                           stale.get("host"), "no longer running" if not _alive(stale) else "lock released")
        atomic_write_json(owner_path(path), {"pid": os.getpid(), "host": socket.gethostname(),
                                             "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "what": what})
        yield path
    finally:
        owner_path(path).unlink(missing_ok=True)
        lock.release()


def _alive(owner: dict[str, Any]) -> bool:
    return owner.get("host") == socket.gethostname() and pid_alive(int(owner.get("pid") or 0))
