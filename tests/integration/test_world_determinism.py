"""What the toy world promises about determinism (``ghost_lens.toy.build``'s docstring): the same config gives
bit-identical artefacts whatever the caller's RNG state and thread count, and neither building nor loading the
world touches the caller's global generators."""

from __future__ import annotations

import json
import random

import numpy as np
import torch
from safetensors.torch import load_file

from ghost_lens.toy.build import build_world
from ghost_lens.toy.world import INFO_FILE, ToyWorld, get_world
from tests.helpers.toy import tiny_world_cfg


def _rng_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _same_states(a, b) -> bool:
    (py_a, np_a, t_a), (py_b, np_b, t_b) = a, b
    return py_a == py_b and all(np.array_equal(x, y) for x, y in zip(np_a, np_b, strict=True)) and torch.equal(t_a, t_b)


def test_building_and_loading_the_world_leave_the_global_rng_untouched(tmp_path):
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    before = _rng_states()
    world = get_world(tiny_world_cfg(), cache_dir=tmp_path, progress=False)
    assert _same_states(before, _rng_states())
    _ = ToyWorld(world.path).model  # what every `track` on the toy world does
    assert _same_states(before, _rng_states())
    # and the user's next draws are the ones their seed promised
    expected = torch.Generator().manual_seed(123)
    assert torch.equal(torch.rand(3), torch.rand(3, generator=expected))


def test_world_build_is_bit_identical_whatever_the_callers_state(tmp_path):
    cfg = tiny_world_cfg()
    threads = torch.get_num_threads()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    try:
        torch.manual_seed(1)
        torch.set_num_threads(1)
        info_a = build_world(cfg, tmp_path / "a", progress=False)
        torch.manual_seed(999)  # another global state and thread count: the build must not see either
        np.random.seed(999)
        torch.set_num_threads(2)
        info_b = build_world(cfg, tmp_path / "b", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert not torch.are_deterministic_algorithms_enabled()  # the build's setting does not leak out
    assert info_a["fingerprint"] == info_b["fingerprint"]
    assert info_a["fingerprint_parts"] == info_b["fingerprint_parts"]
    assert {"model.safetensors", "kb.json", "examples_generation.jsonl", "examples_statement.jsonl"} <= info_a[
        "fingerprint_parts"].keys()
    # the fingerprint is what it claims: the weights and the files themselves agree
    model_a = load_file(tmp_path / "a" / "model.safetensors")
    model_b = load_file(tmp_path / "b" / "model.safetensors")
    assert model_a.keys() == model_b.keys() and all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    saes = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a" / "saes").rglob("*.safetensors"))
    assert len(saes) == cfg.n_layers
    for rel in saes:
        wa, wb = load_file(str(tmp_path / "a" / rel)), load_file(str(tmp_path / "b" / rel))
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for name in ("examples_generation.jsonl", "examples_statement.jsonl", "kb.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    on_disk = json.loads((tmp_path / "a" / INFO_FILE).read_text())
    assert on_disk["fingerprint"] == info_a["fingerprint"]
