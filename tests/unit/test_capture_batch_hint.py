"""The capture's warning for a GPU run at a CPU-sized batch (``batch_size_hint``): measured on an H200, the
default batch of 8 ran 7.4x slower than 128 (benchmarks/README.md)."""

from __future__ import annotations

from ghost_lens.capture.capture import GPU_BATCH_SIZE, batch_size_hint


def test_warns_on_cuda_with_a_small_batch_only():
    hint = batch_size_hint("cuda", 8, 1000)
    assert hint is not None and "capture.batch_size=8" in hint and f"capture.batch_size={GPU_BATCH_SIZE}" in hint
    assert batch_size_hint("cpu", 8, 1000) is None  # the CPU default stays quiet
    assert batch_size_hint("cuda", GPU_BATCH_SIZE, 1000) is None
    assert batch_size_hint("cuda", 64, 1000) is None  # 0.84x of a bare forward: close enough
    assert batch_size_hint("cuda", 8, 8) is None  # one batch holds everything: nothing to gain
