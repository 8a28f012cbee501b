import csv
import json
import logging

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ghost_lens.config import DetectorConfig
from ghost_lens.constants import DETECTION_METRICS, PREDICTIONS, RELIABILITY_PLOT, ROC_PLOT
from ghost_lens.detect import BaselineInputs, evaluate
from ghost_lens.detect.calibration import choose_threshold
from ghost_lens.detect.folds import make_folds
from ghost_lens.detect.metrics import (
    bootstrap_metric,
    expected_calibration_error,
    group_bootstrap_counts,
    probability_range,
    weighted_auroc,
    weighted_average_precision,
)
from ghost_lens.errors import DatasetError
from tests.helpers.detect import fast_eval, make_synthetic


@pytest.fixture(scope="module")
def tracks_result():
    data = make_synthetic(n_groups=80, per_group=3, signal=1.5, driver="tracks", seed=1)
    return data, evaluate(**data.kwargs(), cfg_detector=DetectorConfig(), cfg_eval=fast_eval())


# ---- folds ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folds_never_split_a_group(seed):
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 40, size=300).astype(str)  # uneven group sizes
    labels = rng.integers(0, 2, size=300)
    fold, notes = make_folds(labels, groups, 5, seed)
    assert notes == [] and set(fold.tolist()) == set(range(5))
    for g in np.unique(groups):
        assert np.unique(fold[groups == g]).size == 1


def test_evaluation_folds_never_split_a_group(tracks_result):
    data, res = tracks_result
    rows = res.predictions
    by_group: dict[str, set[int]] = {}
    for r in rows:
        by_group.setdefault(r["group"], set()).add(r["fold"])
    assert all(len(f) == 1 for f in by_group.values())
    assert len(rows) == data.labels.size and res.metrics["protocol"]["n_folds"] == 4


def test_fewer_groups_than_folds_reduces_with_a_warning_and_one_group_is_an_error():
    labels = np.array([0, 1, 0, 1, 0, 1])
    fold, notes = make_folds(labels, np.array(["a", "a", "b", "b", "c", "c"]), 5, 0)
    assert set(fold.tolist()) == {0, 1, 2} and "reduced from 5 to 3" in notes[0]
    with pytest.raises(DatasetError, match="only 1 group"):
        make_folds(labels, np.array(["a"] * 6), 5, 0)


def test_guards_one_class_and_nan():
    data = make_synthetic(n_groups=20, per_group=2)
    kw = data.kwargs()
    with pytest.raises(DatasetError, match="both classes"):
        evaluate(**{**kw, "labels": np.zeros_like(data.labels)}, cfg_detector=DetectorConfig(), cfg_eval=fast_eval())
    X = data.X.copy()
    X[3, 1] = np.nan
    with pytest.raises(DatasetError, match="NaN.*churn"):
        evaluate(**{**kw, "track_features": X}, cfg_detector=DetectorConfig(), cfg_eval=fast_eval())


# ---- the protocol on synthetic data ---------------------------------------------------------------------------
def test_shuffled_label_control_sits_near_chance(tracks_result):
    _, res = tracks_result
    det, shuffled = res.metrics["detector"], res.metrics["baselines"]["shuffled"]
    assert det["auroc"]["ci_low"] > 0.7  # the real signal is found ...
    assert abs(shuffled["auroc"]["value"] - 0.5) < 0.1  # ... and vanishes with permuted labels
    assert shuffled["verdict"] == "near chance" and res.metrics["conclusion"]["shuffled_control_ok"] is True


def test_tracks_driven_dataset_beats_every_baseline(tracks_result):
    _, res = tracks_result
    c = res.metrics["conclusion"]
    assert c["detector_above_chance"] and c["detector_beats_all_baselines"] and c["explained_by"] == []
    assert c["sae_structure_matters"] is True  # random-decoder features are noise here
    assert res.metrics["detector"]["orientation"]["entropy_sign_per_fold"] == [1, 1, 1, 1]
    assert res.metrics["baselines"]["probe"]["layer"] in (0, 1)


def test_length_driven_dataset_is_reported_as_explained_by_length():
    data = make_synthetic(n_groups=80, per_group=3, driver="length", seed=2)
    res = evaluate(**data.kwargs(), cfg_detector=DetectorConfig(), cfg_eval=fast_eval())
    c = res.metrics["conclusion"]
    assert c["detector_above_chance"]  # the detector does see something ...
    assert "length" in c["explained_by"]  # ... but the length baseline accounts for it
    assert res.metrics["baselines"]["length"]["verdict"] != "detector above"
    assert "explained by" in c["statement"] and "length" in c["statement"]
    assert c["detector_beats_all_baselines"] is False


def test_probability_collapse_is_warned(caplog):
    data = make_synthetic(n_groups=150, per_group=2, driver="none", seed=4)
    with caplog.at_level(logging.WARNING, logger="ghost_lens.detect.evaluation"):
        res = evaluate(**data.kwargs(), cfg_detector=DetectorConfig(),
                       cfg_eval=fast_eval(baselines=["length"]))
    rng = res.metrics["detector"]["probability_range"]
    assert rng["collapsed"] and rng["central_width"] < 0.2
    assert any("probability collapse" in w for w in res.metrics["warnings"])
    assert "probability collapse" in caplog.text
    assert res.metrics["conclusion"]["detector_above_chance"] is False


def test_threshold_chosen_on_training_folds(tracks_result):
    _, res = tracks_result
    det = res.metrics["detector"]
    assert len(det["threshold"]["per_fold"]) == 4 and det["threshold"]["rule"] == "youden"
    at = det["at_threshold"]
    assert at["tp"] + at["fp"] + at["tn"] + at["fn"] == res.labels.size and at["accuracy"] > 0.7
    assert choose_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), "youden") == pytest.approx(0.5)


def test_save_writes_strict_json_predictions_and_plots(tracks_result, tmp_path):
    _, res = tracks_result
    paths = res.save(tmp_path)
    for name in (DETECTION_METRICS, PREDICTIONS, ROC_PLOT, RELIABILITY_PLOT):
        assert (tmp_path / name).is_file()
    metrics = json.loads((tmp_path / DETECTION_METRICS).read_text(), parse_constant=lambda c: pytest.fail(c))
    assert metrics["schema_version"] == 2 and paths["metrics"].name == DETECTION_METRICS
    with (tmp_path / PREDICTIONS).open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:5] == ["id", "group", "fold", "label", "detector"]
    assert {"length", "text", "probe", "random_decoder", "shuffled", "shuffled_label"} <= set(rows[0])
    names = [r[0] for r in res.summary_rows()]
    assert names[0] == "detector" and any(n.startswith("probe (L") for n in names)


def test_missing_inputs_are_skipped_with_a_reason():
    data = make_synthetic(n_groups=30, per_group=2, seed=4)
    kw = {**data.kwargs(), "baseline_inputs": BaselineInputs(answer_length=data.inputs.answer_length),
          "random_decoder_features": None}
    res = evaluate(**kw, cfg_detector=DetectorConfig(), cfg_eval=fast_eval(baselines=["length", "text", "probe",
                                                                                       "random_decoder"]))
    assert set(res.metrics["skipped"]) == {"text", "probe", "random_decoder", "stacked"}  # stacked: no confidence
    assert set(res.metrics["baselines"]) == {"length"}


# ---- metrics --------------------------------------------------------------------------------------------------
def test_weighted_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(size=200), 1)  # ties
    labels = rng.integers(0, 2, size=200)
    w = rng.integers(0, 4, size=(3, 200)).astype(float)
    for row in w:
        assert weighted_auroc(scores, labels, row[None])[0] == pytest.approx(
            roc_auc_score(labels, scores, sample_weight=row))
        assert weighted_average_precision(scores, labels, row[None])[0] == pytest.approx(
            average_precision_score(labels, scores, sample_weight=row))


def _ci(n_groups: int):
    rng = np.random.default_rng(n_groups)
    groups = np.repeat(np.arange(n_groups), 2)
    labels = rng.integers(0, 2, size=groups.size)
    scores = labels + rng.normal(scale=1.2, size=groups.size)
    counts, codes = group_bootstrap_counts(groups, 400, 0)
    return bootstrap_metric(weighted_auroc, scores, labels, counts, codes, 0.95)


def test_bootstrap_interval_contains_the_point_and_narrows_with_n():
    small, large = _ci(40), _ci(1000)
    for ci in (small, large):
        assert ci.ci_low <= ci.value <= ci.ci_high and ci.n_valid > 350
    assert (large.ci_high - large.ci_low) < 0.5 * (small.ci_high - small.ci_low)


def test_ece_of_a_perfectly_calibrated_predictor_is_near_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=40_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(p, y) < 0.015
    assert expected_calibration_error(0.5 + 0.5 * p, y) > 0.2  # overconfident: far from zero
    assert probability_range(np.array([0.505, 0.662]), 0.2)["collapsed"]


def test_baseline_inputs_from_trace():
    from tests.helpers.trace import random_trace

    trace = random_trace(n_examples=5, n_layers=3, d_model=16, seed=1)
    inputs = BaselineInputs.from_trace(trace)
    np.testing.assert_array_equal(inputs.answer_length, (trace.answer_end - trace.answer_start).numpy())
    assert inputs.residuals is not None and inputs.residuals.shape == (3, 5, 16) and inputs.layers == [0, 1, 2]
    assert inputs.answer_text is None  # no "answers" in this capture's metadata: the text baseline is skipped
    assert BaselineInputs.from_trace(trace, residual="last_prompt").residuals.shape == (3, 5, 16)


def test_a_baseline_failing_to_fit_is_reported_not_fatal_and_progress_is_reported():
    data = make_synthetic(n_groups=30, per_group=2, seed=6)
    texts = [""] * data.labels.size
    texts[0] = "hello"  # the fold that tests example 0 trains on empty texts only: TF-IDF cannot fit
    calls = []
    res = evaluate(**{**data.kwargs(), "baseline_inputs": BaselineInputs(answer_length=data.inputs.answer_length,
                                                                         answer_text=texts)},
                   cfg_detector=DetectorConfig(), cfg_eval=fast_eval(baselines=["length", "text"]),
                   progress=lambda done, total, what: calls.append((done, total)))
    assert res.metrics["skipped"]["text"].startswith("failed to fit in repeat 0, fold")
    assert "text" not in res.metrics["baselines"] and "text" not in res.scores
    assert calls[-1] == (12, 12)  # 4 folds x (detector, length, text)


def test_a_failing_baseline_reads_the_same_in_two_processes():
    """In processes the probes' jobs go first; the failures, the probes' choices and every number still read the
    same, in the same order, as in one process."""
    import dataclasses

    data = make_synthetic(n_groups=30, per_group=2, seed=6)
    texts = [""] * data.labels.size
    texts[0] = "hello"  # the fold that tests example 0 trains on empty texts only: TF-IDF cannot fit
    kwargs = {**data.kwargs(), "baseline_inputs": dataclasses.replace(data.inputs, answer_text=texts)}
    cfg = fast_eval(baselines=["length", "text", "probe", "shuffled"])
    one = evaluate(**kwargs, cfg_detector=DetectorConfig(), cfg_eval=cfg)
    two = evaluate(**kwargs, cfg_detector=DetectorConfig(), cfg_eval=cfg, n_jobs=2)
    assert one.metrics["skipped"]["text"].startswith("failed to fit in repeat 0, fold")
    assert one.metrics["baselines"]["probe"]["selected"]
    assert json.dumps(two.metrics, default=str) == json.dumps(one.metrics, default=str)  # keys in the same order


@pytest.mark.parametrize("progress", [None, False, True, "rich"])
def test_progress_accepts_the_pipeline_conventions(progress):
    from rich.progress import Progress

    data = make_synthetic(n_groups=12, per_group=2, seed=7)
    cfg = fast_eval(n_folds=2, n_bootstrap=20, baselines=["length"])
    if progress == "rich":
        with Progress(disable=True) as bar:
            evaluate(**data.kwargs(), cfg_detector=DetectorConfig(), cfg_eval=cfg, progress=bar)
            assert bar.tasks[0].completed == bar.tasks[0].total == 6  # 2 folds x (detector, length, stacked)
    else:
        evaluate(**data.kwargs(), cfg_detector=DetectorConfig(), cfg_eval=cfg, progress=progress)


def test_folds_fitted_in_two_processes_give_the_same_numbers(tracks_result):
    data, serial = tracks_result
    parallel = evaluate(**data.kwargs(), cfg_detector=DetectorConfig(), cfg_eval=fast_eval(), n_jobs=2)
    assert json.dumps(parallel.metrics, sort_keys=True, default=str) == json.dumps(serial.metrics, sort_keys=True,
                                                                                    default=str)
    assert serial.metrics["baselines"]["probe"]["selected"]  # the probes' choices came back from the workers
    assert sorted(parallel.scores) == sorted(serial.scores)
    for name, values in serial.scores.items():
        np.testing.assert_array_equal(parallel.scores[name], values)
