"""``ghost-lens`` with a SIGKILL injected at one point of ``track``: the fault-injection tier's trigger.

    python -m tests.fault._inject POINT [ghost-lens arguments ...]

The kill is real (``SIGKILL``: no ``finally``, no ``atexit``, no flush, the lock's owner record left behind), and
nothing in ghost-lens knows about it: the wrapper replaces one function, calls the real one, then kills its own
process. POINT:

- ``capture``: after the capture's first file is written (mid-write of its first shard);
- ``shard``: after the N-th capture shard is whole (N = ``$GHOST_LENS_FAULT_AFTER``, default 1): the resume point;
- ``tracking``: after the graphs are written, before the other tracking outputs;
- ``evaluation``: after the evaluation has computed its numbers, before any of them is written.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

POINTS = {
    "capture": ("ghost_lens.capture.trace", "atomic_save_file"),
    "shard": ("ghost_lens.capture.shards", "write_shard"),
    "tracking": ("ghost_lens.track_run", "save_graphs"),
    "evaluation": ("ghost_lens.pipeline", "evaluate"),
}


def _kill_after(real: Callable[..., Any], n_calls: int = 1) -> Callable[..., Any]:
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        calls[0] += 1
        if calls[0] < n_calls:
            return out
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable: SIGKILL was sent")

    return wrapper


def install(point: str) -> None:
    if point not in POINTS:
        raise SystemExit(f"unknown fault point {point!r} (known: {', '.join(POINTS)})")
    module_name, attr = POINTS[point]
    module = importlib.import_module(module_name)
    setattr(module, attr, _kill_after(getattr(module, attr), int(os.environ.get("GHOST_LENS_FAULT_AFTER", "1"))))


def main() -> None:
    point, *args = sys.argv[1:]
    install(point)
    from ghost_lens_cli.main import app

    app(args, prog_name="ghost-lens")


if __name__ == "__main__":
    main()
