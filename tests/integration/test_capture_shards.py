"""Sharded capture and positions: a tiny random model and SAEs, captured in shards of 3 and in one shard, with
every token and with the tracked positions only; tracking, the detector's feature groups and the baselines' inputs
must not depend on either choice."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ghost_lens.capture.capture import capture_examples
from ghost_lens.capture.shards import CaptureShards, capture_sharded, plan_shards
from ghost_lens.capture.trace import FeatureTrace
from ghost_lens.config import CaptureConfig, RunConfig, TrackerConfig
from ghost_lens.constants import CAPTURE_META, CAPTURE_SHARDS_DIR
from ghost_lens.detect.baselines import sae_at_last_prompt
from ghost_lens.detect.features import build_feature_groups
from ghost_lens.errors import ConfigError
from ghost_lens.tracking import track_trace
from tests.helpers.capture import build_examples, build_model, build_saes, build_tokenizer

CFG = CaptureConfig(top_k=8, batch_size=2, decoder_dtype="float32", residual_dtype="float32")
TRACK = TrackerConfig(top_k_features=12)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = build_tokenizer(tmp_path_factory.mktemp("tok"))
    model = build_model(tok)
    saes = build_saes(model)
    return model, saes, build_examples()


def _sharded(setup, folder, **changes) -> CaptureShards:
    model, saes, examples = setup
    return capture_sharded(model, saes, examples, dataclasses.replace(CFG, **changes), folder, key="k",
                           dataset_hash="d")


def test_plan_shards():
    assert plan_shards(7, 3) == [range(0, 3), range(3, 6), range(6, 7)]
    assert plan_shards(3, 3) == [range(0, 3)]
    assert plan_shards(0, 3) == []
    with pytest.raises(ValueError):
        plan_shards(4, 0)


def test_index_layout_and_incremental_decoders(setup, tmp_path):
    shards = _sharded(setup, tmp_path / "cap", shard_size=3)
    index = json.loads((tmp_path / "cap" / CAPTURE_META).read_text())
    assert [e["name"] for e in index["shards"]] == ["00000", "00001", "00002"]
    assert [e["n_examples"] for e in index["shards"]] == [3, 3, 3]
    assert index["capture_key"] == "k" and index["dataset_hash"] == "d" and index["n_examples"] == 9
    assert "ids" not in index  # per-example lists live in the shards
    assert shards.meta["ids"] == [f"ex{i}" for i in range(9)]
    # each feature's decoder row is stored by exactly one shard, and the merge is sorted
    dec_idx, _ = shards.decoders()
    for j, idx in enumerate(dec_idx):
        assert torch.equal(idx, idx.unique())
        per_shard = [shards.shard(i) for i in range(3)]
        assert set(idx.tolist()) >= {int(f) for s in per_shard for f in s.feat_idx[j].unique() if f >= 0}


def test_sharded_equals_one_shard_and_loads_as_one_trace(setup, tmp_path):
    many = _sharded(setup, tmp_path / "many", shard_size=3)
    one = _sharded(setup, tmp_path / "one", shard_size=100)
    assert one.n_shards == 1 and many.n_shards == 3
    a, b = FeatureTrace.load(tmp_path / "many"), FeatureTrace.load(tmp_path / "one")
    for name in ("tokens", "offsets", "answer_start", "answer_end", "feat_idx", "window_start"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("feat_val", "resid_last_prompt", "resid_answer_mean", "answer_logprob", "sae_totals"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5)
    for ia, ib in zip(a.dec_idx, b.dec_idx, strict=True):
        assert torch.equal(ia, ib)
    # tracking shard by shard == tracking the concatenation == tracking the one-shard capture
    for cfg in (TRACK, dataclasses.replace(TRACK, normalization="layer")):
        lazy = track_trace(many, cfg, progress=False)
        whole = track_trace(a, cfg, progress=False)
        single = track_trace(b, cfg, progress=False)
        assert lazy.ids == whole.ids == single.ids
        np.testing.assert_allclose(lazy.metrics, whole.metrics, rtol=1e-6)  # float32 matmuls batched apart
        np.testing.assert_allclose(lazy.metrics, single.metrics, rtol=1e-4, atol=1e-6)
        assert [set(g.graph.edges) for g in lazy.graphs] == [set(g.graph.edges) for g in whole.graphs]
        threaded = track_trace(many, cfg, progress=False, n_jobs=2)  # batches of every shard in two threads
        np.testing.assert_array_equal(threaded.metrics, lazy.metrics)
        assert [set(g.graph.edges) for g in threaded.graphs] == [set(g.graph.edges) for g in lazy.graphs]
    rnd = track_trace(many, TRACK, decoder_mode="random", seed=3, progress=False, keep_graphs=False)
    np.testing.assert_allclose(rnd.metrics, track_trace(a, TRACK, decoder_mode="random", seed=3,
                                                        progress=False).metrics)


def test_tracked_positions_give_what_every_position_gives(setup):
    model, saes, examples = setup
    full = capture_examples(model, saes, examples, dataclasses.replace(CFG, positions="all"), progress=False)
    kept = capture_examples(model, saes, examples, CFG, progress=False)
    assert full.full_contexts and not kept.full_contexts
    assert kept.feat_idx.shape[1] < full.feat_idx.shape[1]
    assert torch.equal(kept.answer_end - kept.answer_start, full.answer_end - full.answer_start)
    torch.testing.assert_close(kept.resid_last_prompt, full.resid_last_prompt)
    cut = full.tracked_window()
    assert torch.equal(cut.feat_idx, kept.feat_idx) and torch.equal(cut.window_start, kept.window_start)
    torch.testing.assert_close(cut.feat_val, kept.feat_val)
    for positions in ("last_prompt_and_answer", "answer", "last_prompt"):
        cfg = dataclasses.replace(TRACK, positions=positions)
        a, b = track_trace(full, cfg, progress=False), track_trace(kept, cfg, progress=False)
        np.testing.assert_allclose(a.metrics, b.metrics, rtol=1e-5, atol=1e-7)
        # node positions are in the full sequence either way
        assert [set(g.graph.nodes) for g in a.graphs] == [set(g.graph.nodes) for g in b.graphs]
        assert [set(g.graph.edges) for g in a.graphs] == [set(g.graph.edges) for g in b.graphs]
    run_cfg = RunConfig(tracker=TRACK)
    ga, gb = build_feature_groups(full, None, run_cfg), build_feature_groups(kept, None, run_cfg)
    for name in ga:
        np.testing.assert_allclose(ga[name].values, gb[name].values, rtol=1e-5, atol=1e-7, err_msg=name)
    for ma, mb in zip(sae_at_last_prompt(full), sae_at_last_prompt(kept), strict=True):
        np.testing.assert_allclose(ma.toarray(), mb.toarray(), rtol=1e-6)
    with pytest.raises(ConfigError, match="capture.positions=all"):
        track_trace(kept, dataclasses.replace(TRACK, positions="all"), progress=False)
    from ghost_lens.interpret import interpret_layer

    assert interpret_layer(full, 0, top=2)["n_examples"] == len(examples)
    with pytest.raises(ConfigError, match="capture.positions=all"):
        interpret_layer(kept, 0)


def test_resume_keeps_matching_shards_and_recaptures_the_rest(setup, tmp_path, monkeypatch):
    ref = _sharded(setup, tmp_path / "ref", shard_size=3).load()
    folder = tmp_path / "cap"
    _sharded(setup, folder, shard_size=3)
    (folder / CAPTURE_META).unlink()  # as if killed before the index: shards 0-2 are there
    torch_file = folder / CAPTURE_SHARDS_DIR / "00002"
    import shutil

    shutil.rmtree(torch_file)  # ... and before shard 2
    calls = []
    import ghost_lens.capture.capture as cap

    real = cap.capture_examples

    def counting(model, saes, part, *args, **kwargs):
        calls.append([ex.id for ex in part])
        return real(model, saes, part, *args, **kwargs)

    monkeypatch.setattr(cap, "capture_examples", counting)
    again = _sharded(setup, folder, shard_size=3).load()
    assert calls == [["ex6", "ex7", "ex8"]]  # shards 0 and 1 were reused
    for name in ("feat_idx", "feat_val", "resid_last_prompt", "offsets"):
        assert torch.equal(getattr(again, name), getattr(ref, name)), name
    for x, y in zip(again.dec_dir, ref.dec_dir, strict=True):
        assert torch.equal(x, y)
    # another key: nothing is reused
    calls.clear()
    model, saes, examples = setup
    capture_sharded(model, saes, examples, dataclasses.replace(CFG, shard_size=3), folder, key="other",
                    dataset_hash="d")
    assert len(calls) == 3
