"""Capture on a CUDA device agrees with capture on the CPU (skipped where torch sees no GPU, i.e. in CI).

Run on a machine with a GPU: ``pytest tests/gpu -q``. The same tiny random model and SAEs are captured on the CPU in
float32 (the reference), then on ``cuda`` in float32 and in bfloat16 (``capture.dtype``), and compared:

1. whatever the device, the trace comes back on the CPU in its storage dtypes (nothing left on the GPU);
2. float32 on CUDA: the same top-k features at every kept token (as sets; TF32 matmuls are switched off so the
   two devices differ only by summation order), activations and the answer statistics within 1e-3;
3. bfloat16 on CUDA: the top-k sets overlap the float32 ones (mean Jaccard >= 0.6 over tokens: bfloat16 keeps
   8 bits of mantissa, so near-tied features swap) and the answer log-probs stay within 0.1 nats.
"""

from __future__ import annotations

import pytest
import torch

from ghost_lens.capture.capture import capture_examples
from ghost_lens.config import CaptureConfig
from ghost_lens.model_loader import to_dtype
from tests.helpers.capture import build_examples, build_model, build_saes, build_tokenizer

pytestmark = pytest.mark.gpu  # skipped by tests/conftest.py where torch sees no CUDA device

DEVICE = "cuda"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tok = build_tokenizer(tmp_path_factory.mktemp("tok"))
    model = build_model(tok, n_layers=3, d_model=64, n_ctx=48)
    saes = build_saes(model, d_sae=128)
    examples = build_examples()
    cfg = CaptureConfig(batch_size=4, top_k=8)
    return model, saes, examples, cfg, capture_examples(model, saes, examples, cfg, progress=False)


def _on_cuda(model, saes, dtype: str):
    import copy

    model, saes = copy.deepcopy(model), copy.deepcopy(saes)
    model = to_dtype(model.to(DEVICE, print_details=False), dtype)
    return model, {layer: to_dtype(sae.to(DEVICE), dtype) for layer, sae in saes.items()}


def _jaccard(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row Jaccard of two ``[..., k]`` id tensors (negative ids = empty slots are ignored)."""
    out = []
    for x, y in zip(a.reshape(-1, a.shape[-1]).tolist(), b.reshape(-1, b.shape[-1]).tolist(), strict=True):
        sx, sy = {i for i in x if i >= 0}, {i for i in y if i >= 0}
        out.append(len(sx & sy) / max(len(sx | sy), 1))
    return torch.tensor(out)


@pytest.fixture
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def test_float32_on_cuda_matches_cpu(reference, no_tf32):
    model, saes, examples, cfg, ref = reference
    cmodel, csaes = _on_cuda(model, saes, "float32")
    got = capture_examples(cmodel, csaes, examples, cfg, progress=False)
    for name in ("feat_idx", "feat_val", "answer_logprob", "resid_last_prompt", "tokens"):
        t = getattr(got, name)
        assert t.device.type == "cpu" and t.dtype == getattr(ref, name).dtype, name
    assert torch.equal(got.tokens, ref.tokens) and torch.equal(got.offsets, ref.offsets)
    assert _jaccard(got.feat_idx, ref.feat_idx).min() == 1.0
    # values in the order of the reference's ids (top-k order may swap between near-equal activations)
    ref_sorted, got_sorted = ref.feat_val.sort(dim=-1).values, got.feat_val.sort(dim=-1).values
    torch.testing.assert_close(got_sorted, ref_sorted, atol=1e-3, rtol=1e-3)
    for name in ("answer_logprob", "answer_mean_logprob", "output_entropy", "max_prob"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(got.resid_last_prompt.float(), ref.resid_last_prompt.float(), atol=2e-3, rtol=2e-3)


def test_bfloat16_on_cuda_close_to_float32(reference):
    model, saes, examples, cfg, ref = reference
    cmodel, csaes = _on_cuda(model, saes, "bfloat16")
    got = capture_examples(cmodel, csaes, examples, CaptureConfig(batch_size=4, top_k=8, dtype="bfloat16"),
                           progress=False)
    assert got.feat_val.device.type == "cpu" and got.feat_val.dtype == ref.feat_val.dtype
    assert torch.isfinite(got.feat_val).all() and torch.isfinite(got.answer_logprob).all()
    assert _jaccard(got.feat_idx, ref.feat_idx).mean() >= 0.6
    torch.testing.assert_close(got.answer_logprob, ref.answer_logprob, atol=0.1, rtol=0.05)
