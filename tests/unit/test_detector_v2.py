"""Detector v2: feature groups, the ablation table, the stacked scorer, repeated CV, the per-kind breakdown and the
pickle-free detector files."""

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ghost_lens.config import DetectorConfig
from ghost_lens.constants import DETECTOR_META
from ghost_lens.detect import HallucinationDetector, evaluate
from ghost_lens.detect.baselines import Method
from ghost_lens.detect.detector_io import config_hash, load_detector, save_detector
from ghost_lens.detect.evaluation import _fit_all, _Group, _stacked_method
from ghost_lens.detect.folds import make_folds
from ghost_lens.detect.metrics import bootstrap_metric, group_bootstrap_counts, repeat_draws, weighted_auroc
from ghost_lens.detect.stacked import StackedScorer
from ghost_lens.errors import RunFolderError
from tests.helpers.detect import FEATURE_NAMES, fast_eval, make_synthetic

KINDS = ("known", "held_out_relation", "unknown_entity")


def planted(seed: int = 0, n_groups: int = 90, per_group: int = 3, stats_signal: float = 3.0):
    """Track metrics are noise; the SAE statistics carry the label; confidence carries a weaker, independent part
    of it (so stacking the two must help). One kind holds one class only."""
    data = make_synthetic(n_groups=n_groups, per_group=per_group, driver="none", seed=seed)
    rng = np.random.default_rng(seed + 100)
    n = data.labels.size
    latent = rng.normal(size=n)
    conf_part = rng.normal(size=n)
    y = (latent + 0.6 * conf_part + 0.2 * rng.normal(size=n) > 0).astype(np.int64)
    stats = rng.normal(size=(n, 6))
    stats[:, 0] += stats_signal * latent
    stats[:, 3] -= 0.5 * stats_signal * latent
    data.inputs.answer_logprob = -conf_part + 0.5 * rng.normal(size=n)
    kind = np.asarray([KINDS[0] if g % 10 == 0 else KINDS[1 + g % 2] for g in data.groups], dtype=object)
    y[kind == "known"] = 0  # every "known" example is faithful: one class
    groups = {
        "tracks": _Group("tracks", data.X, list(FEATURE_NAMES), "track metrics (noise here)"),
        "sae_stats": _Group("sae_stats", stats, [f"s{i}" for i in range(6)], "SAE statistics (the signal)"),
    }
    return data, y, groups, list(kind)


@pytest.fixture(scope="module")
def planted_result():
    data, y, groups, kinds = planted()
    kw = {**data.kwargs(), "labels": y}
    kw.pop("track_features"), kw.pop("feature_names"), kw.pop("random_decoder_features")
    res = evaluate(**kw, feature_groups=groups, kinds=kinds,
                   cfg_detector=DetectorConfig(features=["tracks", "sae_stats"]),
                   cfg_eval=fast_eval(n_repeats=2, n_bootstrap=200,
                                      baselines=["length", "logprob", "entropy", "max_prob", "shuffled"]))
    return data, y, groups, kinds, res


def test_ablation_table_shows_the_group_that_carries_the_planted_signal(planted_result):
    *_, res = planted_result
    ab = res.metrics["ablation"]
    rows = ab["rows"]
    assert list(rows) == ["tracks", "sae_stats", "all"] and ab["detector_setting"] == "all"
    assert rows["all"]["is_detector"] and rows["all"]["auroc_diff_vs_detector"] is None
    assert rows["sae_stats"]["auroc"]["ci_low"] > 0.7
    assert rows["tracks"]["auroc"]["ci_low"] < 0.5 < rows["tracks"]["auroc"]["ci_high"]  # noise: chance
    assert rows["tracks"]["auroc_diff_vs_detector"]["ci_low"] > 0  # the detector (all groups) beats tracks alone
    assert ab["best"] in ("sae_stats", "all")


def test_without_tracks_the_entropy_and_churn_weights_go_to_the_classifier():
    det = HallucinationDetector.from_config(DetectorConfig(), ["sae_stats.L0/last_prompt/l1", "sae_stats.x"])
    assert (det.entropy_weight, det.churn_weight, det.ml_weight) == (0.0, 0.0, pytest.approx(1.0))
    with_tracks = HallucinationDetector.from_config(DetectorConfig(), ["tracks.churn", "x", "tracks.entropy"])
    assert (with_tracks.entropy_col, with_tracks.churn_col) == (2, 0)


def test_stacked_scorer_adds_to_confidence_and_headline_says_so(planted_result):
    *_, res = planted_result
    conf = res.metrics["adds_to_confidence"]
    assert conf["available"] and conf["best_confidence_baseline"] in ("logprob", "entropy", "max_prob")
    assert conf["best_confidence_baseline"] == max(conf["candidates"], key=conf["candidates"].get)
    assert conf["verdict"] == "adds" and conf["auroc_diff"]["ci_low"] > 0
    assert res.metrics["headline"].startswith("SAE features add +")
    assert res.metrics["stacked"]["auroc"]["value"] > res.metrics["baselines"]["logprob"]["auroc"]["value"]
    assert res.summary_rows()[1][0].startswith("stacked")


def test_headline_says_nothing_measurable_when_sae_features_are_noise():
    data = make_synthetic(n_groups=60, per_group=3, driver="none", seed=3)
    rng = np.random.default_rng(0)
    data.inputs.answer_logprob = -data.labels + rng.normal(size=data.labels.size)  # confidence has the signal
    res = evaluate(**{**data.kwargs(), "random_decoder_features": None}, cfg_detector=DetectorConfig(),
                   cfg_eval=fast_eval(n_bootstrap=200, baselines=["logprob"]))
    conf = res.metrics["adds_to_confidence"]
    assert conf["auroc_diff"]["ci_high"] < 0.1
    if conf["verdict"] == "nothing measurable":
        assert "add nothing measurable" in res.metrics["headline"]


def test_stacked_scorer_never_sees_test_fold_labels():
    """Shuffling (and flipping some of) the labels of one test fold changes none of that fold's stacked or detector
    scores, on the evaluation's own fitting loop and fixed folds."""
    data, y, groups, _ = planted(seed=2, n_groups=40)
    X = np.column_stack([groups["tracks"].values, groups["sae_stats"].values])
    names = [f"tracks.{c}" for c in groups["tracks"].names] + [f"sae_stats.{c}" for c in groups["sae_stats"].names]
    stacked, _ = _stacked_method(data.inputs, X, ["tracks", "sae_stats"], y.size)
    detector = Method("detector", "detector", "", X,
                      lambda: HallucinationDetector.from_config(DetectorConfig(), names), True)
    g = np.asarray([str(v) for v in data.groups], dtype=object)
    folds = np.stack([make_folds(y, g, 3, s)[0] for s in (0, 1)])
    test = folds[0] == 1
    y2 = y.copy()
    y2[test] = np.random.default_rng(0).permutation(y[test])
    y2[np.flatnonzero(test)[:3]] = 1 - y2[np.flatnonzero(test)[:3]]  # and flip a few: not just a permutation
    a, _, _ = _fit_all([stacked, detector], y, g, folds, [0, 1], "youden", None)
    b, _, _ = _fit_all([stacked, detector], y2, g, folds, [0, 1], "youden", None)
    for name in ("stacked", "detector"):
        np.testing.assert_array_equal(a[name][0, test], b[name][0, test])
        assert not np.array_equal(a[name][0, ~test], b[name][0, ~test])  # the other folds did train on them


def test_repeated_cv_intervals_are_at_least_as_wide_on_noisy_data():
    """A pure-noise, high-capacity method moves with every refit: intervals that draw a repeat per resample hold
    that variance, a single split's do not."""
    rng = np.random.default_rng(0)
    n_groups, n_rep = 150, 6
    groups = np.repeat(np.arange(n_groups), 4)
    y = rng.integers(0, 2, size=groups.size)
    single = rng.normal(size=(1, groups.size))
    repeated = np.vstack([single, rng.normal(size=(n_rep - 1, groups.size))])  # refits: independent noise
    counts, codes = group_bootstrap_counts(groups, 1000, 0)
    a = bootstrap_metric(weighted_auroc, single, y, counts, codes, 0.95)
    b = bootstrap_metric(weighted_auroc, repeated, y, counts, codes, 0.95, repeat=repeat_draws(1000, n_rep, 0))
    assert b.ci_high - b.ci_low >= a.ci_high - a.ci_low
    assert b.value == pytest.approx(np.mean([roc_auc_score(y, r) for r in repeated]))


def test_repeated_cv_in_evaluate(planted_result):
    _, _, _, _, res = planted_result
    p = res.metrics["protocol"]
    assert p["n_repeats"] == 2 and p["fold_seeds"] == [0, 1]
    assert res.repeat_folds.shape == (2, res.labels.size) and not np.array_equal(*res.repeat_folds)
    det = res.metrics["detector"]
    assert det["auroc"]["value"] == pytest.approx(np.mean(det["auroc_per_repeat"]))
    assert len(det["threshold"]["per_repeat"]) == 2
    for r in range(2):  # every repeat keeps groups whole
        f = res.repeat_folds[r]
        g = np.asarray(res.groups)
        assert all(np.unique(f[g == gname]).size == 1 for gname in np.unique(g))


def test_breakdown_by_kind(planted_result):
    *_, res = planted_result
    bk = res.metrics["by_kind"]
    assert set(bk["kinds"]) == set(KINDS) and bk["methods"][:2] == ["detector", "stacked"]
    known = bk["kinds"]["known"]
    assert known["one_class"] and "no AUROC" in known["note"] and known["auroc"]["detector"] is None
    other = bk["kinds"]["unknown_entity"]
    assert not other["one_class"] and other["auroc"]["detector"]["ci_low"] <= other["auroc"]["detector"]["value"]
    assert sum(k["n"] for k in bk["kinds"].values()) == res.labels.size
    assert {r["kind"] for r in res.predictions} == set(KINDS)


@pytest.mark.parametrize("classifier,calibration", [("logistic", "platt"), ("logistic", "isotonic"),
                                                    ("gradient_boosting", "temperature")])
def test_detector_save_load_round_trip_and_config_hash(tmp_path, classifier, calibration):
    data = make_synthetic(n_groups=60, per_group=3, signal=1.0, seed=5)
    det = HallucinationDetector(classifier=classifier, calibration=calibration, random_state=0)
    det.fit(data.X, data.labels, groups=data.groups)
    h = config_hash({"any": "config"})
    paths = save_detector(det, tmp_path, feature_names=list(FEATURE_NAMES), feature_groups=["tracks"], cfg_hash=h)
    assert not list(tmp_path.glob("*.joblib")) and not list(tmp_path.glob("*.pkl"))
    loaded, meta = load_detector(tmp_path, expected_hash=h)
    np.testing.assert_array_equal(loaded.predict_proba(data.X), det.predict_proba(data.X))
    for k, v in det.component_scores(data.X).items():
        np.testing.assert_array_equal(loaded.component_scores(data.X)[k], v)
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["config_hash"] == h
    with pytest.raises(RunFolderError, match="another config"):
        load_detector(tmp_path, expected_hash=config_hash({"other": "config"}))
    paths["meta"].write_text("{not json")
    with pytest.raises(RunFolderError, match="not valid JSON"):
        load_detector(tmp_path)
    (tmp_path / DETECTOR_META).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(RunFolderError, match="format version"):
        load_detector(tmp_path)


def test_stacked_scorer_chooses_c_inside_training_data():
    data = make_synthetic(n_groups=50, per_group=3, signal=1.0, seed=8)
    s = StackedScorer(Cs=(0.01, 1.0)).fit(data.X, data.labels, groups=data.groups)
    assert s.C_ in (0.01, 1.0) and set(s.inner_auroc_) == {0.01, 1.0}
    assert roc_auc_score(data.labels, s.predict_proba(data.X)[:, 1]) > 0.7


def test_kind_baselines_capture_a_kind_driven_pooled_auroc():
    """Labels set by the kind alone (each kind its own error rate, nothing else): the ``kind`` baseline finds it,
    ``confidence_kind`` too, and both are skipped with a reason when the examples carry no kinds."""
    data = make_synthetic(n_groups=90, per_group=3, driver="none", seed=3)
    rng = np.random.default_rng(3)
    kind = np.asarray([KINDS[g % 3] for g in data.groups], dtype=object)
    rate = {"known": 0.1, "held_out_relation": 0.5, "unknown_entity": 0.9}
    y = (rng.uniform(size=kind.size) < np.vectorize(rate.get)(kind)).astype(np.int64)
    kw = {**data.kwargs(), "labels": y}
    kw.pop("random_decoder_features")
    cfg = fast_eval(n_bootstrap=100, baselines=["logprob", "kind", "confidence_kind"])
    res = evaluate(**kw, kinds=list(kind), cfg_eval=cfg, cfg_detector=DetectorConfig())
    b = res.metrics["baselines"]
    assert b["kind"]["auroc"]["value"] > 0.75 and b["confidence_kind"]["auroc"]["value"] > 0.7
    assert b["confidence_kind"]["inputs"][-1] == "kind"
    res = evaluate(**kw, cfg_eval=cfg, cfg_detector=DetectorConfig())
    assert "kind" not in res.metrics["baselines"] and "meta['kind']" in res.metrics["skipped"]["kind"]
