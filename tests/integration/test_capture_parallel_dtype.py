"""Data-parallel shards, residual storage dtype and the capture's compute dtype, on a tiny random model and SAEs.

- Ranks' shards (full decoder tables, :func:`capture_assigned`) finished by :func:`capture_sharded` give a capture
  byte-identical to a one-process one, whatever rank wrote which shard, and a killed finish resumes.
- ``capture.residual_dtype: float16`` stores only the residuals in float16 and reads them back as float32.
- ``capture.dtype: bfloat16`` (model and SAEs converted by ``load_model_and_bundle``) keeps the same top features on
  most tokens and stores float32 tensors.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ghost_lens.capture.capture import capture_examples
from ghost_lens.capture.shards import (
    FULL_TABLES,
    capture_assigned,
    capture_sharded,
    has_full_tables,
    prepare_partial,
)
from ghost_lens.capture.trace import FeatureTrace
from ghost_lens.config import CaptureConfig, RunConfig, load_config
from ghost_lens.constants import CAPTURE_DECODERS, CAPTURE_SHARDS_DIR, CAPTURE_TENSORS
from ghost_lens.errors import ConfigError
from ghost_lens.model_loader import resolve_device, to_dtype
from tests.helpers.capture import build_examples, build_model, build_saes, build_tokenizer

CFG = CaptureConfig(top_k=8, batch_size=2, shard_size=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = build_tokenizer(tmp_path_factory.mktemp("tok"))
    model = build_model(tok)
    return model, build_saes(model), build_examples()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _ranks(setup, folder: Path, world: int, order: list[int]) -> list[list[int]]:
    model, saes, examples = setup
    prepare_partial(folder)
    return [capture_assigned(model, saes, examples, CFG, folder, rank=r, world_size=world, key="k",
                             dataset_hash="d") for r in order]


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_then_index_equals_one_process(setup, tmp_path, world):
    model, saes, examples = setup
    capture_sharded(model, saes, examples, CFG, tmp_path / "one", key="k", dataset_hash="d")
    par = tmp_path / "par"
    done = _ranks(setup, par, world, list(reversed(range(world))))  # the last rank first: order must not matter
    n_shards = -(-len(examples) // CFG.shard_size)
    assert sorted(i for d in done for i in d) == list(range(n_shards))
    assert all(d for d in done)
    assert all(has_full_tables(par / CAPTURE_SHARDS_DIR / f"{i:05d}") for i in range(n_shards))
    capture_sharded(model, saes, examples, CFG, par, key="k", dataset_hash="d")  # rank 0's finish: reuse + trim
    assert _files(par) == _files(tmp_path / "one")


def test_full_shards_reused_after_a_killed_finish(setup, tmp_path, monkeypatch):
    model, saes, examples = setup
    capture_sharded(model, saes, examples, CFG, tmp_path / "one", key="k", dataset_hash="d")
    par = tmp_path / "par"
    _ranks(setup, par, 2, [0, 1])
    import ghost_lens.capture.shards as shards_mod

    real, calls = shards_mod._trim_full_tables, []

    def dies_on_third(shard_dir, known):
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill while rank 0 trims the third shard
        calls.append(shard_dir)
        real(shard_dir, known)

    monkeypatch.setattr(shards_mod, "_trim_full_tables", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        capture_sharded(model, saes, examples, CFG, par, key="k", dataset_hash="d")
    monkeypatch.setattr(shards_mod, "_trim_full_tables", real)
    assert not has_full_tables(par / CAPTURE_SHARDS_DIR / "00000") and has_full_tables(par / CAPTURE_SHARDS_DIR / "00002")
    calls_capture = []
    monkeypatch.setattr(shards_mod, "write_shard", lambda *a, **k: calls_capture.append(a) or None)
    capture_sharded(model, saes, examples, CFG, par, key="k", dataset_hash="d")
    assert calls_capture == []  # nothing captured again: trimmed shards resumed, full ones trimmed
    assert _files(par) == _files(tmp_path / "one")


def test_full_tables_are_marked_in_the_header(setup, tmp_path):
    _ranks(setup, tmp_path / "p", 2, [1])
    with safe_open(str(tmp_path / "p" / CAPTURE_SHARDS_DIR / "00001" / CAPTURE_DECODERS), framework="pt") as fh:
        assert fh.metadata() == FULL_TABLES


def test_residuals_stored_in_float16_read_as_float32(setup, tmp_path):
    model, saes, examples = setup
    half = capture_sharded(model, saes, examples, CFG, tmp_path / "h", key="k", dataset_hash="d")
    full = capture_sharded(model, saes, examples, dataclasses.replace(CFG, residual_dtype="float32"),
                           tmp_path / "f", key="k", dataset_hash="d")
    with safe_open(str(half.shard_dir(0) / CAPTURE_TENSORS), framework="pt") as fh:
        assert fh.get_slice("resid_last_prompt").get_dtype() == "F16"
        assert fh.get_slice("feat_val").get_dtype() == "F32"  # only the residuals change
    with safe_open(str(full.shard_dir(0) / CAPTURE_TENSORS), framework="pt") as fh:
        assert fh.get_slice("resid_last_prompt").get_dtype() == "F32"
    a, b = FeatureTrace.load(tmp_path / "h"), FeatureTrace.load(tmp_path / "f")
    for name in ("resid_last_prompt", "resid_answer_mean"):
        assert getattr(a, name).dtype == torch.float32
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-3, atol=1e-3)
        assert not torch.equal(getattr(a, name), getattr(b, name))  # rounded, so the test can tell them apart
    assert torch.equal(a.feat_val, b.feat_val) and torch.equal(a.feat_idx, b.feat_idx)
    assert half.meta["residual_dtype"] == "float16" and full.meta["residual_dtype"] == "float32"


def test_bfloat16_capture_same_top_features_stored_in_float32(setup):
    model, saes, examples = setup
    ref = capture_examples(model, saes, examples, CFG, progress=False)
    model16, saes16 = copy.deepcopy(model), {k: copy.deepcopy(v) for k, v in saes.items()}
    to_dtype(model16, "bfloat16")
    for sae in saes16.values():
        to_dtype(sae, "bfloat16")
    assert model16.cfg.dtype == torch.bfloat16 and all(s.W_enc.dtype == torch.bfloat16 for s in saes16.values())
    low = capture_examples(model16, saes16, examples, dataclasses.replace(CFG, dtype="bfloat16"), progress=False)
    for name in ("feat_val", "answer_logprob", "output_entropy", "max_prob", "sae_totals"):
        assert getattr(low, name).dtype == torch.float32, name
    assert low.resid_last_prompt.dtype == torch.float16  # the stored residual dtype (read back as float32)
    assert all(d.dtype == torch.float16 for d in low.dec_dir)
    top_ref, top_low = ref.feat_idx[..., 0], low.feat_idx[..., 0]
    agree = (top_ref == top_low).float().mean().item()
    assert agree >= 0.8, agree
    assert not torch.equal(ref.feat_val, low.feat_val)  # it did run in bfloat16
    torch.testing.assert_close(low.answer_logprob, ref.answer_logprob, rtol=0.1, atol=0.2)


def test_bad_dtype_and_device_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="capture.dtype"):
        load_config(None, ["capture.dtype=float8"])
    with pytest.raises(ConfigError, match="capture.residual_dtype"):
        load_config(None, ["capture.residual_dtype=bfloat16"])
    with pytest.raises(ConfigError, match="device: 'gpu'"):
        RunConfig(device="gpu")
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:1", local_rank=1)
