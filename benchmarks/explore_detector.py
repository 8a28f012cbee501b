"""Can track metrics do better? An exploration of tracker / detector variants against the confidence baselines.

Loads a saved capture (no model run), tracks it under several tracker configurations and evaluates each with
:func:`ghost_lens.pipeline.evaluate` (same grouped folds, group-bootstrap CIs), then, on the same folds:

(a) tracker variants: the seed research's grid (top_k_features / association_threshold 50/0.5, 100/0.4, 30/0.6;
    semantic_weight 0.8 with 0.1/0.1), positions (answer, last_prompt_and_answer, all), assignment greedy vs
    optimal; each with its random-decoder control (same tracker config, random decoder directions);
(b) detector variants on the default tracking: classifier, component weights, orientation;
(c) combinations: logistic regression (StandardScaler + LR) on the answer log-prob alone, on the confidence
    scores, on track metrics alone, and on log-prob + track metrics (SAE and random-decoder tracks), with the
    paired bootstrap difference to log-prob alone; plus a reference "bag of SAE features" (raw top-k SAE
    activations at the last prompt token and the answer tokens, no tracking) to tell whether the information
    is in the SAE features but lost in the track summary;
(d) per-column out-of-fold AUROC of every track metric (1-feature LR, sign learned on the training folds), SAE
    tracks beside random-decoder tracks.

Prints Markdown tables. No library file is touched; nothing is written unless ``--json`` is given.

    GHOST_LENS_CACHE=/tmp/gl_cache_toy python benchmarks/explore_detector.py --capture /tmp/run1/capture
    python benchmarks/explore_detector.py --capture /tmp/run_statement/capture --sections a,c,d
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MaxAbsScaler, StandardScaler  # noqa: E402

from ghost_lens.capture.trace import FeatureTrace  # noqa: E402
from ghost_lens.config import DetectorConfig, RunConfig, TrackerConfig  # noqa: E402
from ghost_lens.detect.folds import group_codes, make_folds  # noqa: E402
from ghost_lens.detect.metrics import group_bootstrap_counts  # noqa: E402
from ghost_lens.detect.verdicts import Bootstrap  # noqa: E402
from ghost_lens.pipeline import evaluate  # noqa: E402
from ghost_lens.tracking import track_trace  # noqa: E402

torch.set_num_threads(1)
logging.getLogger("ghost_lens").setLevel(logging.ERROR)
warnings.filterwarnings("ignore")

TRACKER_VARIANTS: dict[str, dict] = {
    "default (50/0.5, sem .6/.2/.2, optimal, last_prompt_and_answer)": {},
    "grid: top_k 100 / assoc 0.4": {"top_k_features": 100, "association_threshold": 0.4},
    "grid: top_k 30 / assoc 0.6": {"top_k_features": 30, "association_threshold": 0.6},
    "grid: semantic 0.8 / act 0.1 / pos 0.1": {"semantic_weight": 0.8, "activation_weight": 0.1,
                                                "position_weight": 0.1},
    "positions=answer": {"positions": "answer"},
    "positions=all": {"positions": "all"},
    "assignment=greedy": {"assignment": "greedy"},
    "extra: semantic 1.0 only (pure decoder cosine)": {"semantic_weight": 1.0, "activation_weight": 0.0,
                                                       "position_weight": 0.0},
    "extra: semantic 0 (act 0.5 / pos 0.5: no decoders)": {"semantic_weight": 0.0, "activation_weight": 0.5,
                                                            "position_weight": 0.5},
    "extra: assoc 1.0 (no continuation: every track length 1)": {"association_threshold": 1.0},
}

DETECTOR_VARIANTS: dict[str, dict] = {
    "default (0.4/0.3/0.3, logistic, learned, platt)": {},
    "classifier=gradient_boosting": {"classifier": "gradient_boosting"},
    "ml only (logistic)": {"entropy_weight": 0.0, "churn_weight": 0.0, "ml_weight": 1.0},
    "ml only (gradient_boosting)": {"entropy_weight": 0.0, "churn_weight": 0.0, "ml_weight": 1.0,
                                    "classifier": "gradient_boosting"},
    "entropy only": {"entropy_weight": 1.0, "churn_weight": 0.0, "ml_weight": 0.0},
    "churn only": {"entropy_weight": 0.0, "churn_weight": 1.0, "ml_weight": 0.0},
    "orientation=hypothesis": {"orientation": "hypothesis"},
    "entropy only, orientation=hypothesis": {"entropy_weight": 1.0, "churn_weight": 0.0, "ml_weight": 0.0,
                                             "orientation": "hypothesis"},
}


def fmt(iv) -> str:
    return f"{iv.value:.3f} [{iv.ci_low:.3f}, {iv.ci_high:.3f}]"


def fmt_d(iv) -> str:
    return f"{iv.value:+.3f} [{iv.ci_low:+.3f}, {iv.ci_high:+.3f}]"


def table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def lr_model(c: float = 1.0):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))


def oof_scores(make, X, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Out-of-fold probability of label 1 under the given folds."""
    out = np.empty(y.size)
    for k in range(int(fold.max()) + 1):
        tr, te = fold != k, fold == k
        out[te] = make().fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
    return out


def sae_bag(trace: FeatureTrace, mode: str) -> sp.csr_matrix:
    """Raw SAE activations (no tracking): per layer, the captured top-k features at the last prompt token
    (``mode`` 'last') and/or the max over the answer tokens ('answer'), as a sparse [N, L * width] matrix."""
    idx = trace.feat_idx.numpy().astype(np.int64)
    val = trace.feat_val.float().numpy()
    n_layers, _, _ = idx.shape
    width = int(idx.max()) + 1
    offs = trace.offsets.numpy()
    a0, a1 = trace.answer_start.numpy(), trace.answer_end.numpy()
    rows, cols, vals = [], [], []
    blocks = ["last", "answer"] if mode == "both" else [mode]
    for i in range(trace.n_examples):
        for b, block in enumerate(blocks):
            pos = [offs[i] + a0[i] - 1] if block == "last" else list(range(offs[i] + a0[i], offs[i] + a1[i]))
            for p in pos:
                for j in range(n_layers):
                    keep = val[j, p] > 0
                    rows.append(np.full(keep.sum(), i))
                    cols.append((b * n_layers + j) * width + idx[j, p][keep])
                    vals.append(val[j, p][keep])
    m = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                      shape=(trace.n_examples, len(blocks) * n_layers * width))
    m.sum_duplicates()  # several answer tokens: summed (answers here are one token)
    return m.tocsr()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--capture", default="/tmp/run1/capture")
    ap.add_argument("--n-bootstrap", type=int, default=200)
    ap.add_argument("--sections", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    ap.add_argument("--json", default=None, help="also write every number to this JSON file")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    t_start = time.perf_counter()

    trace = FeatureTrace.load(args.capture)
    y = np.asarray(trace.labels, dtype=np.int64)
    g = group_codes(trace.groups, y.size)
    cfg = RunConfig()
    cfg.eval.n_bootstrap = args.n_bootstrap
    fold, _ = make_folds(y, g, cfg.eval.n_folds, cfg.eval.seed)  # the very folds evaluate() uses
    counts, codes = group_bootstrap_counts(g, cfg.eval.n_bootstrap, cfg.eval.seed)  # ... and its resamples
    boot = Bootstrap(counts, codes, cfg.eval.confidence)
    print(f"# explore_detector: {args.capture}\n\n{y.size} examples, {np.unique(g).size} groups, "
          f"{y.mean():.0%} label 1, {int(fold.max()) + 1} grouped folds, {args.n_bootstrap} group bootstraps; "
          f"tokens per answer: {sorted(set((trace.answer_end - trace.answer_start).tolist()))}; "
          f"active SAE features per token (mean, per layer): "
          f"{[round(float(v), 1) for v in (trace.feat_val > 0).sum(-1).float().mean(1)]}\n")
    results: dict = {"capture": args.capture, "n": int(y.size)}

    tracks: dict[str, tuple] = {}

    def get_tracks(name: str, overrides: dict):
        if name not in tracks:
            tcfg = dataclasses.replace(TrackerConfig(), **overrides)
            t0 = time.perf_counter()
            sae = track_trace(trace, tcfg, keep_graphs=False, progress=False)
            rnd = track_trace(trace, tcfg, decoder_mode="random", seed=cfg.eval.seed, keep_graphs=False,
                              progress=False)
            tracks[name] = (tcfg, sae, rnd, time.perf_counter() - t0)
        return tracks[name]

    def run_eval(tcfg, sae, rnd, det_over: dict, baselines: list[str]):
        c = dataclasses.replace(cfg, tracker=tcfg, detector=dataclasses.replace(DetectorConfig(), **det_over),
                                eval=dataclasses.replace(cfg.eval, baselines=baselines))
        ev = evaluate(trace, sae, c, random_tracking=rnd if "random_decoder" in baselines else None)
        m = ev.metrics
        return m, ev

    def iv(entry):  # an Interval-like view of a metrics entry
        a = entry["auroc"]
        return type("I", (), {"value": a["value"], "ci_low": a["ci_low"], "ci_high": a["ci_high"]})()

    default_name = next(iter(TRACKER_VARIANTS))
    lp = trace.answer_logprob.double().numpy().reshape(-1, 1)
    lp_oof = oof_scores(lr_model, lp, y, fold)
    lp_iv = boot.auroc(lp_oof, y)

    # ---- (a) tracker variants ---------------------------------------------------------------------------------
    if "a" in sections:
        rows = []
        results["tracker_variants"] = {}
        for name, over in TRACKER_VARIANTS.items():
            tcfg, sae, rnd, secs = get_tracks(name, over)
            bl = ["logprob", "random_decoder"] + (["shuffled"] if name == default_name else [])
            m, ev = run_eval(tcfg, sae, rnd, {}, bl)
            det, b = m["detector"], m["baselines"]
            dd = boot.auroc(ev.scores["detector"], y, diff_with=ev.scores["random_decoder"])
            avg_len = float(sae.column("mean_track_length").mean())
            rnd_len = float(rnd.column("mean_track_length").mean())
            rows.append([name, fmt(iv(det)), fmt(iv(b["random_decoder"])), fmt_d(dd), fmt(iv(b["logprob"])),
                         f"{avg_len:.2f} / {rnd_len:.2f}", f"{float(sae.column('n_tracks').mean()):.1f}",
                         f"{secs:.0f}s"])
            results["tracker_variants"][name] = {
                "detector": det["auroc"], "random_decoder": b["random_decoder"]["auroc"],
                "logprob": b["logprob"]["auroc"], "det_minus_random": dataclasses.asdict(dd),
                "shuffled": b.get("shuffled", {}).get("auroc"), "mean_track_length": avg_len}
            if name == default_name:
                shuf = b["shuffled"]["auroc"]
        print("## (a) tracker variants (default detector)\n")
        print(table(["tracker", "detector AUROC [CI]", "random-decoder AUROC [CI]", "det - random [CI]",
                     "logprob AUROC [CI]", "mean track len (SAE / random)", "tracks/ex", "track time"], rows))
        print(f"\nshuffled-label control (default tracker): {shuf['value']:.3f} "
              f"[{shuf['ci_low']:.3f}, {shuf['ci_high']:.3f}]\n")

    # ---- (b) detector variants --------------------------------------------------------------------------------
    if "b" in sections:
        tcfg, sae, rnd, _ = get_tracks(default_name, {})
        rows = []
        results["detector_variants"] = {}
        for name, over in DETECTOR_VARIANTS.items():
            m, ev = run_eval(tcfg, sae, rnd, over, ["logprob", "random_decoder"])
            det, b = m["detector"], m["baselines"]
            signs = det["orientation"]["entropy_sign_per_fold"] if over.get("entropy_weight", 0.4) > 0 else "-"
            rows.append([name, fmt(iv(det)), fmt(iv(b["random_decoder"])), fmt(iv(b["logprob"])), str(signs)])
            results["detector_variants"][name] = {"detector": det["auroc"],
                                                  "random_decoder": b["random_decoder"]["auroc"]}
        print("## (b) detector variants (default tracker; random_decoder = same detector on random-decoder "
              "tracks)\n")
        print(table(["detector", "detector AUROC [CI]", "random-decoder AUROC [CI]", "logprob AUROC [CI]",
                     "entropy sign per fold"], rows))
        print()

    # ---- (c) combinations with the confidence baseline -------------------------------------------------------
    if "c" in sections:
        _, sae, rnd, _ = get_tracks(default_name, {})
        conf = np.column_stack([trace.answer_logprob.double().numpy(), trace.answer_mean_logprob.double().numpy(),
                                trace.output_entropy.double().numpy(), trace.max_prob.double().numpy()])
        sets: dict[str, tuple] = {
            "logprob alone": (lr_model, lp),
            "confidence (logprob, mean_logprob, entropy, max_prob)": (lr_model, conf),
            "track metrics alone (LR)": (lr_model, sae.metrics),
            "random-decoder track metrics alone (LR)": (lr_model, rnd.metrics),
            "logprob + track metrics (LR)": (lr_model, np.column_stack([lp, sae.metrics])),
            "logprob + track metrics (LR, C=0.05)": (lambda: lr_model(0.05), np.column_stack([lp, sae.metrics])),
            "logprob + random-decoder track metrics (LR)": (lr_model, np.column_stack([lp, rnd.metrics])),
            "confidence + track metrics (LR)": (lr_model, np.column_stack([conf, sae.metrics])),
            "logprob + entropy + churn (LR)": (lr_model, np.column_stack([lp, sae.column("entropy"),
                                                                           sae.column("churn")])),
            "logprob + track metrics (gradient boosting)": (
                lambda: HistGradientBoostingClassifier(max_leaf_nodes=15, random_state=0),
                np.column_stack([lp, sae.metrics])),
        }
        bag_models = {}
        for mode in ("last", "answer", "both"):
            bag = sae_bag(trace, mode)
            bag_models[f"SAE bag ({mode}) alone (no tracking, LR C=0.1)"] = (
                lambda: make_pipeline(MaxAbsScaler(), LogisticRegression(C=0.1, max_iter=3000)), bag)
            if mode == "both":
                # unsupervised fixed scaling (no labels): bag columns by their max, log-prob standardised and
                # multiplied by 10 so that the L2 penalty (C=0.1) hardly shrinks it
                lp_scaled = sp.csr_matrix((lp - lp.mean()) / lp.std() * 10.0)
                colmax = np.asarray(abs(bag).max(axis=0).todense()).ravel()
                bag_scaled = bag @ sp.diags(1.0 / np.where(colmax > 0, colmax, 1.0))
                bag_models["logprob + SAE bag (both) (LR C=0.1, logprob unpenalised)"] = (
                    lambda: LogisticRegression(C=0.1, max_iter=3000), sp.hstack([lp_scaled, bag_scaled]).tocsr())
        sets.update(bag_models)
        # the 5 single columns with the largest out-of-fold AUROC, chosen on these very folds (optimistic)
        col_auc = [boot.auroc(oof_scores(lr_model, sae.metrics[:, [j]], y, fold), y).value
                   for j in range(sae.metrics.shape[1])]
        top5 = list(np.argsort(col_auc)[::-1][:5])
        sets["logprob + 5 best track columns (chosen on eval folds: optimistic)"] = (
            lr_model, np.column_stack([lp, sae.metrics[:, top5]]))
        rows = []
        results["combinations"] = {}
        oof_keep = {}
        for name, (make, X) in sets.items():
            s = lp_oof if name == "logprob alone" else oof_scores(make, X, y, fold)
            oof_keep[name] = s
            a = boot.auroc(s, y)
            d = boot.auroc(s, y, diff_with=lp_oof)
            rows.append([name, fmt(a), "" if name == "logprob alone" else fmt_d(d)])
            results["combinations"][name] = {"auroc": dataclasses.asdict(a), "minus_logprob": dataclasses.asdict(d)}
        print("## (c) combinations with the model-confidence baseline (out-of-fold on the same folds)\n")
        print(table(["inputs", "AUROC [CI]", "minus logprob alone (paired) [CI]"], rows))
        from scipy.stats import spearmanr

        rho = spearmanr(oof_keep["track metrics alone (LR)"], lp_oof).statistic
        rho_r = spearmanr(oof_keep["random-decoder track metrics alone (LR)"], lp_oof).statistic
        print(f"\n5 best columns: {[sae.feature_names[j] for j in top5]}; Spearman(track-LR score, logprob score) "
              f"= {rho:.2f} (random-decoder tracks: {rho_r:.2f})\n")

    # ---- (d) per-column signal --------------------------------------------------------------------------------
    if "d" in sections:
        _, sae, rnd, _ = get_tracks(default_name, {})
        per = []
        for j, name in enumerate(sae.feature_names):
            s1 = oof_scores(lr_model, sae.metrics[:, [j]], y, fold)
            s2 = oof_scores(lr_model, rnd.metrics[:, [j]], y, fold)
            raw = float(boot.auroc(sae.metrics[:, j], y).value)
            per.append((name, boot.auroc(s1, y), boot.auroc(s2, y), raw))
        per.sort(key=lambda r: -r[1].value)
        rows = [[n, fmt(a), fmt(b), f"{r:.3f}"] for n, a, b, r in per]
        results["per_column"] = {n: {"sae": dataclasses.asdict(a), "random": dataclasses.asdict(b), "raw": r}
                                 for n, a, b, r in per}
        print("## (d) per-column out-of-fold AUROC (1-feature LR; raw = AUROC of the column itself, "
              ">0.5: higher = more hallucinated)\n")
        print(table(["track metric", "SAE tracks AUROC [CI]", "random-decoder tracks AUROC [CI]", "raw"], rows))
        print()

    print(f"best confidence baseline here: logprob {fmt(lp_iv)}; total time {time.perf_counter() - t_start:.0f}s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
