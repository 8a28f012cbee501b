"""Feature groups (ghost_lens/detect/features.py): names, shapes, and a planted scale signal that the SAE statistics
and the scale-keeping position tracks see while the (scale-free) track metrics cannot."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ghost_lens.capture.capture import activation_totals
from ghost_lens.config import RunConfig, TrackerConfig
from ghost_lens.detect.features import FEATURE_GROUPS, SAE_STATS, build_feature_groups, token_stats
from ghost_lens.errors import ConfigError
from tests.helpers.trace import make_trace, random_trace


def scaled_pairs(n_base: int = 30, factor: float = 3.0, seed: int = 0):
    """Pairs of examples with the same features; the second of each pair (label 1) has every activation of every
    token multiplied by ``factor``. Scale-free metrics are identical within a pair; scale statistics are not."""
    base = random_trace(n_examples=n_base, n_layers=3, n_tokens=(4, 9), k=6, seed=seed)
    off = base.offsets.numpy()
    order = np.concatenate([np.arange(off[i], off[i + 1]) for i in range(n_base) for _ in range(2)])
    lengths = np.diff(off)
    new_off = np.concatenate([[0], np.cumsum(np.repeat(lengths, 2))])
    val = base.feat_val[:, order].clone()
    for i in range(n_base):
        s = slice(int(new_off[2 * i + 1]), int(new_off[2 * i + 2]))
        val[:, s] *= factor * (1.0 + 0.05 * np.sin(i))  # label-1 twin: scaled (by a slightly varying factor)
    trace = dataclasses.replace(
        base,
        tokens=torch.zeros(order.size, dtype=torch.int64),
        offsets=torch.as_tensor(new_off, dtype=torch.int64),
        answer_start=base.answer_start.repeat_interleave(2),
        answer_end=base.answer_end.repeat_interleave(2),
        feat_idx=base.feat_idx[:, order].clone(),
        feat_val=val,
        resid_last_prompt=base.resid_last_prompt.repeat_interleave(2, dim=1),
        resid_answer_mean=base.resid_answer_mean.repeat_interleave(2, dim=1),
        answer_logprob=torch.zeros(2 * n_base), answer_mean_logprob=torch.zeros(2 * n_base),
        output_entropy=torch.zeros(2 * n_base), max_prob=torch.zeros(2 * n_base),
        meta={**base.meta, "ids": [f"ex{i}" for i in range(2 * n_base)],
              "groups": [f"g{i // 2}" for i in range(2 * n_base)], "labels": [i % 2 for i in range(2 * n_base)]},
    )
    return trace


def oof_auroc(X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    p = cross_val_predict(model, X, y, groups=groups, cv=GroupKFold(5), method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def test_sae_stats_carry_a_planted_scale_signal_that_track_metrics_cannot_see():
    trace = scaled_pairs()
    y, groups = np.asarray(trace.labels), np.asarray(trace.groups)
    cfg = RunConfig(tracker=TrackerConfig(position_normalization="none"))
    fg = build_feature_groups(trace, None, cfg)
    assert list(fg) == list(FEATURE_GROUPS)
    tracks, stats, pos = fg["tracks"], fg["sae_stats"], fg["position_tracks"]
    # the scale-free track metrics are identical within every pair: nothing to learn
    np.testing.assert_allclose(tracks.values[0::2], tracks.values[1::2], rtol=1e-6, atol=1e-6)  # float32 values
    assert oof_auroc(tracks.values, y, groups) <= 0.55
    # the unnormalised statistics separate the labels, at the last prompt token and over the answer
    assert oof_auroc(stats.values, y, groups) > 0.95
    l1 = stats.values[:, stats.names.index("L0/last_prompt/l1")]
    assert np.all((l1[1::2] > l1[0::2]) | (l1[0::2] == 0)) and np.any(l1 > 0)  # the scaled twin has more mass
    share = stats.names.index("L2/answer/top_share")  # a scale-free statistic: equal within a pair
    np.testing.assert_allclose(stats.values[0::2, share], stats.values[1::2, share], rtol=1e-5)
    # position tracks keep the scale (raw mass columns), so they separate too
    raw = pos.values[:, pos.names.index("last_prompt/raw_mass")]
    assert np.all((raw[1::2] > raw[0::2]) | (raw[0::2] == 0)) and np.any(raw > 0)
    assert oof_auroc(pos.values, y, groups) > 0.9


def test_group_names_shapes_and_descriptions():
    trace = random_trace(n_examples=5, n_layers=3, seed=1)
    fg = build_feature_groups(trace, None, RunConfig(), names=["sae_stats", "position_tracks"])
    assert list(fg) == ["sae_stats", "position_tracks"]
    stats = fg["sae_stats"]
    assert stats.values.shape == (5, 3 * 2 * len(SAE_STATS))
    assert stats.names[:5] == [f"L0/last_prompt/{s}" for s in SAE_STATS] and "L2/answer/l0" in stats.names
    assert "top-6 features only" in stats.description  # this trace has no full-activation totals
    pos = fg["position_tracks"]
    assert {n.split("/")[0] for n in pos.names} == {"last_prompt", "answer"}
    assert "last_prompt/entropy" in pos.names and "answer/raw_mass_L2" in pos.names
    assert all(np.isfinite(g.values).all() and g.values.dtype == np.float64 for g in fg.values())
    with pytest.raises(ConfigError, match="unknown feature group"):
        build_feature_groups(trace, None, RunConfig(), names=["tracks", "nope"])


def test_sae_stats_by_hand_with_and_without_full_totals():
    # one example, 2 layers, tokens: BOS, prompt, last prompt (2), answer (3, 4)
    e = {f: np.eye(4)[f % 4] for f in range(10)}
    trace = make_trace(
        [[[(1, 2, 3.0), (2, 2, 1.0), (3, 3, 2.0), (4, 4, 4.0)], [(5, 2, 2.0), (6, 3, 1.0)]]], e,
        n_tokens=5, answer_start=3, k=2,
    )
    fg = build_feature_groups(trace, None, RunConfig(), names=["sae_stats"])["sae_stats"]
    v = dict(zip(fg.names, fg.values[0].tolist(), strict=True))
    h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert v["L0/last_prompt/l1"] == pytest.approx(4.0) and v["L0/last_prompt/max"] == pytest.approx(3.0)
    assert v["L0/last_prompt/entropy"] == pytest.approx(h) and v["L0/last_prompt/top_share"] == pytest.approx(0.75)
    assert v["L0/last_prompt/l0"] == 2
    assert v["L0/answer/l1"] == pytest.approx(3.0) and v["L0/answer/max"] == pytest.approx(3.0)  # mean of 2, 4
    assert v["L1/answer/l1"] == pytest.approx(0.5) and v["L1/answer/l0"] == pytest.approx(0.5)
    # full-activation totals replace the top-k L1 / L0 / entropy (the top share then uses the full L1)
    totals = torch.zeros(2, 5, 3)
    totals[0, 2] = torch.tensor([8.0, 7.0, 1.5])
    with_totals = dataclasses.replace(trace, sae_totals=totals)
    fg2 = build_feature_groups(with_totals, None, RunConfig(), names=["sae_stats"])["sae_stats"]
    v2 = dict(zip(fg2.names, fg2.values[0].tolist(), strict=True))
    assert (v2["L0/last_prompt/l1"], v2["L0/last_prompt/l0"], v2["L0/last_prompt/entropy"]) == (8.0, 7.0, 1.5)
    assert v2["L0/last_prompt/top_share"] == pytest.approx(3.0 / 8.0) and v2["L0/last_prompt/max"] == 3.0
    assert "full SAE activation" in fg2.description


def test_activation_totals_match_topk_statistics_when_k_covers_every_active_feature():
    g = torch.Generator().manual_seed(0)
    feats = torch.relu(torch.randn(7, 20, generator=g))
    feats[3] = 0.0  # a token with nothing active
    tot = activation_totals(feats)
    vals = torch.topk(feats, 20).values.numpy()
    ref = token_stats(vals, None)  # l1, max, entropy, share, l0
    np.testing.assert_allclose(tot[:, 0].numpy(), ref[:, 0], rtol=1e-5)
    np.testing.assert_allclose(tot[:, 1].numpy(), ref[:, 4])
    np.testing.assert_allclose(tot[:, 2].numpy(), ref[:, 2], rtol=1e-4, atol=1e-6)
    assert tot[3].tolist() == [0.0, 0.0, 0.0]


def test_evaluation_inputs_with_tracker_threads_equal_one_thread(monkeypatch):
    """The evaluation's inputs: the control's tracks and the feature groups (``position_tracks`` reruns the
    tracker), with the tracker's batches two at a time in threads (``n_jobs=2``) or one at a time; the same
    numbers."""
    from ghost_lens.pipeline import control_tracking, track
    from ghost_lens.tracking.tracker import Tracker

    original = Tracker.batches
    # small batches, so that two run at once
    monkeypatch.setattr(Tracker, "batches", lambda self, max_batch=64, budget=200: original(self, max_batch, budget))
    trace = random_trace(n_examples=12, n_layers=3, seed=2)
    assert len(list(Tracker(trace, TrackerConfig()).batches())) > 2
    cfg = RunConfig()
    assert "random_decoder" in cfg.eval.baselines
    tracking = track(trace, cfg.tracker)
    one_ctrl, one_groups = control_tracking(trace, cfg, n_jobs=1), build_feature_groups(trace, tracking, cfg, n_jobs=1)
    two_ctrl, two_groups = control_tracking(trace, cfg, n_jobs=2), build_feature_groups(trace, tracking, cfg, n_jobs=2)
    assert one_ctrl is not None and two_ctrl is not None
    np.testing.assert_array_equal(one_ctrl.metrics, two_ctrl.metrics)
    assert list(one_groups) == list(two_groups) and one_groups
    for name, grp in one_groups.items():
        assert grp.names == two_groups[name].names
        np.testing.assert_array_equal(grp.values, two_groups[name].values)
