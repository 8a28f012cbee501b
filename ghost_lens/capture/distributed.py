"""Data-parallel capture under an existing launcher (``torchrun``): who this process is, and the few collectives.

``torchrun --nproc-per-node N $(which ghost-lens) track ...`` starts N copies of the command with ``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK`` and the rendezvous address in their environment. :func:`ghost_lens.track_run.run_track` then:

1. Reads that environment (:meth:`DistContext.from_env`); with ``WORLD_SIZE`` unset or 1 nothing else happens (no
   process group, the one-process path).
2. Joins the process group torchrun set up (``init_process_group`` from the environment: ``gloo`` on the CPU,
   ``nccl`` on CUDA, each rank on ``cuda:LOCAL_RANK``). No process pool or socket of our own.
3. Rank 0 alone locks and claims the run folder, loads the dataset, decides whether the capture is reused and
   prepares ``capture.partial/``; it then broadcasts that decision (or its error) to the other ranks
   (:meth:`DistContext.broadcast`), which wait for it.
4. The other ranks then load the same dataset (a generated one from the cache rank 0 filled: generated once), and
   every rank loads the model and the SAEs and captures its shards (``i % world_size == rank``) into the same
   ``capture.partial/``; :meth:`DistContext.gather` is the barrier after it, carrying each rank's shard list or error.
5. Rank 0 writes the index (:func:`ghost_lens.capture.shards.capture_sharded`: the other ranks' shards are reused),
   tracks, evaluates and writes the report; the other ranks return after the barrier (exit 0).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ghost_lens.errors import GhostLensError

logger = logging.getLogger(__name__)

TIMEOUT = timedelta(hours=4)
"""How long a rank waits at a collective (a rank still capturing its shards while another waits at the barrier);
a rank that dies ends the others sooner: torchrun stops the whole group when one worker fails."""


class RankError(GhostLensError):
    """Another rank of a data-parallel run failed (its one-line error is in the message)."""


@dataclass
class DistContext:
    """This process's place in a data-parallel run (``world_size == 1``: not one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """Whether :meth:`init` created the process group (and :meth:`close` destroys it)."""

    @classmethod
    def from_env(cls) -> DistContext:
        """Rank, world size and local rank from torchrun's environment variables (a single process without them)."""
        from ghost_lens.errors import ConfigError

        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError:
            raise ConfigError("WORLD_SIZE / RANK / LOCAL_RANK must be integers (as torchrun sets them)") from None
        if world <= 1:
            return cls()
        if not 0 <= rank < world:
            raise ConfigError(f"RANK={rank} is outside WORLD_SIZE={world}")
        return cls(rank=rank, world_size=world, local_rank=local)

    @property
    def parallel(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def local_rank_or_none(self) -> int | None:
        """The local rank under a launcher (the CUDA device index a rank takes), else ``None``."""
        return self.local_rank if self.parallel else None

    def init(self, device: str) -> None:
        """Join torchrun's process group: NCCL when ``device`` is CUDA (this rank's device made current), else gloo.
        Nothing when not parallel or when the caller already initialised one."""
        if not self.parallel:
            return
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend=backend, init_method="env://", timeout=TIMEOUT)
        self.owns_group = True
        logger.info("rank %d of %d joined the process group (%s, %s)", self.rank, self.world_size, backend, device)

    def broadcast(self, obj: Any = None) -> Any:
        """Rank 0's ``obj`` on every rank (``obj`` is ignored elsewhere); pickled by torch.distributed in memory."""
        if not self.parallel:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, by rank, on every rank: the barrier after the capture."""
        if not self.parallel:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Leave the process group this context created (idempotent)."""
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False


def error_text(exc: BaseException) -> str:
    """One line for another rank to show: the error's own message, or its type and first line."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return msg if isinstance(exc, GhostLensError) else f"{type(exc).__name__}: {msg}"
