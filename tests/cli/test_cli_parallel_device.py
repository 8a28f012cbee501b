"""`ghost-lens track` under torchrun (2 CPU processes, gloo on loopback) against one process, and the device /
dtype options: the same detection_metrics.json, predictions and capture bytes; shards written by both ranks;
one-line errors for a bad dtype and for CUDA where there is none; a bfloat16 capture of the tiny toy world."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ghost_lens import constants as C
from ghost_lens.constants import CACHE_ENV
from tests.helpers.cli import TINY_SETS, assert_one_line_error, invoke
from tests.helpers.toy import TINY_WORLD

REPO = Path(__file__).resolve().parents[2]
SETS = [*TINY_SETS, "--num-samples", "60", "--set", "capture.shard_size=8", "--set", "eval.n_bootstrap=10",
        "--set", "eval.n_folds=3", "--set", "eval.n_repeats=1", "--set", "eval.baselines=[logprob,probe]",
        "--set", "detector.calibration_cv=0"]
"""The tiny world, 40 examples in 5 shards, a cheap evaluation (the numbers only have to be reproducible)."""


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_torchrun_two_cpu_ranks_equal_one_process(cli_cache, tmp_path):
    one = tmp_path / "one"
    result = invoke("--threads", "1", "track", "--out", one, *SETS)  # builds the tiny world if needed
    assert result.exit_code == 0, result.output
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "ghost_lens_cli.main", "--threads", "1", "track", "--out", str(two), *SETS]
    env = os.environ | {CACHE_ENV: str(cli_cache), "OMP_NUM_THREADS": "1", "COLUMNS": "200",
                        "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("run folder:") == 1  # rank 0 alone reports
    metrics_one = json.loads((one / C.DETECTION_METRICS).read_text())
    metrics_two = json.loads((two / C.DETECTION_METRICS).read_text())
    assert metrics_two == metrics_one
    assert (two / "predictions.csv").read_bytes() == (one / "predictions.csv").read_bytes()
    assert _files(two / C.CAPTURE_DIR) == _files(one / C.CAPTURE_DIR)  # byte-identical shards and index
    parallel = json.loads((two / C.MANIFEST).read_text())["capture_parallel"]
    n_shards = len(json.loads((one / C.CAPTURE_DIR / C.CAPTURE_META).read_text())["shards"])
    assert parallel == {"world_size": 2, "shards_by_rank": [list(range(0, n_shards, 2)), list(range(1, n_shards, 2))]}
    assert n_shards >= 4
    assert not (two / C.CAPTURE_PARTIAL).exists()


def test_bad_capture_dtype_is_one_line_error(tmp_path):
    result = invoke("track", "--out", tmp_path / "r", *TINY_SETS, "--set", "capture.dtype=float8")
    assert_one_line_error(result, "capture.dtype", "float8")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_cuda_without_cuda_is_one_line_error(tmp_path):
    result = invoke("track", "--out", tmp_path / "r", *TINY_SETS, "--device", "cuda")
    assert_one_line_error(result, "device 'cuda'", "CUDA is not available")
    assert not (tmp_path / "r").exists()  # refused before the run folder was made
    result = invoke("track", "--out", tmp_path / "r", *TINY_SETS, "--device", "gpu0")
    assert_one_line_error(result, "device", "gpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA to tell the two apart")
def test_device_flag_beats_the_config(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("device: cuda\n")
    args = ("track", "--config", cfg_file, "--out", tmp_path / "r", *TINY_SETS, "--dataset", tmp_path / "none.csv")
    assert_one_line_error(invoke(*args), "CUDA is not available")  # the config's device is used ...
    assert_one_line_error(invoke(*args, "--device", "cpu"), "none.csv")  # ... unless the flag says otherwise


def test_bfloat16_capture_of_the_toy_world(cli_cache):
    """The tiny world's model and SAEs loaded in bfloat16 (``capture.dtype``): top features of most tokens as in
    float32, every stored tensor float32 (residuals: their storage dtype)."""
    from ghost_lens.config import CaptureConfig, RunConfig, WorldConfig
    from ghost_lens.data.loaders import load_examples
    from ghost_lens.pipeline import capture_trace, load_model_and_bundle

    os.environ[CACHE_ENV] = str(cli_cache)  # the autouse fixture sets it too; explicit for the library calls
    world = WorldConfig(**TINY_WORLD)
    ref_cfg = RunConfig(world=world)
    low_cfg = RunConfig(world=world, capture=CaptureConfig(dtype="bfloat16"))
    examples = load_examples("toy-facts", num_samples=40, world_cfg=world)
    model, bundle = load_model_and_bundle(ref_cfg, progress=False)
    ref = capture_trace(model, bundle, examples, ref_cfg.capture)
    model16, bundle16 = load_model_and_bundle(low_cfg, progress=False)
    assert model16.cfg.dtype == torch.bfloat16
    assert all(sae.W_enc.dtype == torch.bfloat16 for sae in bundle16.values())
    assert next(model.parameters()).dtype == torch.float32  # a separate load: the float32 model is untouched
    low = capture_trace(model16, bundle16, examples, low_cfg.capture)
    for name in ("feat_val", "answer_logprob", "output_entropy", "max_prob", "sae_totals"):
        assert getattr(low, name).dtype == torch.float32, name
    active = ref.feat_idx[..., 0] >= 0
    agree = (ref.feat_idx[..., 0] == low.feat_idx[..., 0])[active].float().mean().item()
    assert agree >= 0.8, agree
    assert not torch.equal(ref.feat_val, low.feat_val)
