"""``report.md``: the page a person reads first in a run folder.

It leads with the honest verdict (the detector against every baseline, on the same grouped folds, with intervals),
then calibration, tracking, the data and the provenance. Every AUROC appears with its split and its interval.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ghost_lens import constants as C


def _ci(entry: dict[str, Any], key: str = "auroc") -> str:
    v = entry[key]
    return f"{v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"


def split_description(metrics: dict[str, Any]) -> str:
    p, d = metrics["protocol"], metrics["dataset"]
    b = p["bootstrap"]
    r = int(p.get("n_repeats", 1))
    folds = f"{p['n_folds']} folds x {r} repeats (fold seeds {p.get('fold_seeds')})" if r > 1 else f"{p['n_folds']} folds"
    boot = (f"{b['n_resamples']} group-bootstrap resamples, each scored on a randomly drawn repeat (refit variance "
            "included); AUROC = mean over repeats" if r > 1 else f"{b['n_resamples']} bootstrap resamples of groups")
    return (f"{p['splitter']} over groups, {folds}, {d['n_examples']} examples in {d['n_groups']} "
            f"groups ({d['positive_rate']:.0%} hallucinated); out-of-fold scores; {b['confidence']:.0%} CIs from "
            f"{boot}")


def _diff(d: dict[str, Any] | None) -> str:
    return f"{d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}]" if d else ""


def ablation_section(metrics: dict[str, Any]) -> list[str]:
    """Each feature group alone and all together, on the same folds (the detector's own setting in bold)."""
    ab = metrics.get("ablation") or {}
    rows = ab.get("rows") or {}
    if not rows:
        return []
    out = ["## Feature groups (ablation, same folds)", "",
           "| features | AUROC [95% CI] | AUPRC [95% CI] | AUROC(detector) - AUROC(this) |", "|---|---|---|---|"]
    for name, r in rows.items():
        label = f"**{name}** (the detector)" if r["is_detector"] else name
        out.append(f"| {label} | {_ci(r)} | {_ci(r, 'auprc')} | {_diff(r.get('auroc_diff_vs_detector'))} |")
    out += ["", *[f"- `{k}`: {v}" for k, v in (ab.get("groups") or {}).items()], ""]
    return out


def confidence_section(metrics: dict[str, Any]) -> list[str]:
    """Does a model that stacks the SAE features onto the model's confidence beat confidence alone?"""
    c = metrics.get("adds_to_confidence") or {}
    if not c.get("available"):
        reason = c.get("reason") or (metrics.get("skipped") or {}).get("stacked")
        return ["## Do SAE features add to the model's confidence?", "", f"Not measured: {reason}.", ""] if reason \
            else []
    st = metrics.get("stacked") or {}
    cands = ", ".join(f"{k} {v:.3f}" for k, v in c["candidates"].items())
    return ["## Do SAE features add to the model's confidence?", "", c["statement"], "",
            f"Stacked scorer: {st.get('description', '')}. Compared with {c['best_confidence_baseline']}, the best "
            f"confidence baseline by out-of-fold AUROC ({cands}); that choice is made on the evaluation scores, so it "
            "is optimistic for the baseline. The difference is a paired group bootstrap on the same resamples (and "
            "repeats) as every other interval.", "",
            *([c["given_kind"]["statement"], "", "Kinds differ in error rate, so a pooled gain can be nothing but "
               "\"which kind is this\"; this comparison gives both sides the kind.", ""] if c.get("given_kind") else [])]


def kind_section(metrics: dict[str, Any]) -> list[str]:
    """AUROC per ``meta["kind"]`` for the detector, the stacked scorer and the best baselines."""
    bk = metrics.get("by_kind") or {}
    kinds = bk.get("kinds") or {}
    if not kinds:
        return []
    methods = bk["methods"]
    out = ["## By kind of example", "", "| kind | examples (hallucinated) | " + " | ".join(methods) + " |",
           "|---|---|" + "---|" * len(methods)]
    for k, row in kinds.items():
        cells = ["one class only" if row["one_class"] else (_ci({"auroc": row["auroc"][m]}) if row["auroc"][m]
                 else "") for m in methods]
        out.append(f"| {k} | {row['n']} ({row['n_positive']}) | " + " | ".join(cells) + " |")
    notes = [f"{k}: {row['note']}" for k, row in kinds.items() if row.get("note")]
    out += ["", "Intervals: the run's group resamples restricted to the examples of each kind."
            + (f" {'; '.join(notes)}." if notes else ""), ""]
    return out


def results_table(metrics: dict[str, Any]) -> list[str]:
    det = metrics["detector"]
    lines = ["| scorer | kind | AUROC [95% CI] | AUPRC [95% CI] | AUROC(detector) - AUROC(this) | verdict |",
             "|---|---|---|---|---|---|"]
    verdict = "above chance" if metrics["conclusion"]["detector_above_chance"] else "NOT above chance"
    lines.append(f"| **detector** | detector | **{_ci(det)}** | {_ci(det, 'auprc')} | | {verdict} |")
    st = metrics.get("stacked")
    if st:
        lines.append(f"| stacked (confidence + SAE) | stacked | {_ci(st)} | {_ci(st, 'auprc')} | "
                     f"{_diff(st.get('auroc_diff_vs_detector'))} | {st['verdict']} |")
    for name, e in metrics["baselines"].items():
        label = f"{name} (layer {e['layer']})" if "layer" in e else name
        diff = e.get("auroc_diff_vs_detector")
        diff_s = f"{diff['value']:+.3f} [{diff['ci_low']:+.3f}, {diff['ci_high']:+.3f}]" if diff else ""
        lines.append(f"| {label} | {e['kind']} | {_ci(e)} | {_ci(e, 'auprc')} | {diff_s} | {e['verdict']} |")
    return lines


def _kv_table(rows: dict[str, Any]) -> list[str]:
    out = ["| | |", "|---|---|"]
    for k, v in rows.items():
        out.append(f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |")
    return out


def tracking_section(ts: dict[str, Any]) -> list[str]:
    """Track statistics per layer and per label (do hallucinated answers carry different tracks?)."""
    out = [f"Average track length {ts['avg_track_length']:.2f} layers over {ts['n_examples']} examples "
           f"(tracks per example: mean {ts['track_count']['mean']:.1f}).", ""]
    per_layer = {"births": ts.get("births_per_layer", {}), "deaths": ts.get("deaths_per_layer", {}),
                 "churn": ts.get("churn", {}).get("per_layer", {}), "entropy": ts.get("entropy", {}).get("per_layer", {})}
    layers = list(per_layer["births"])
    if layers:
        out += ["| per example | " + " | ".join(layers) + " |", "|---" * (len(layers) + 1) + "|"]
        out += [f"| {name} | " + " | ".join(f"{vals.get(lay, float('nan')):.3f}" for lay in layers) + " |"
                for name, vals in per_layer.items()]
        out.append("")
    by = ts.get("by_label") or {}
    if "0" in by and "1" in by:
        keys = [k for k in by["0"] if isinstance(by["0"][k], int | float)]
        out += ["| mean over examples | faithful (0) | hallucinated (1) |", "|---|---|---|"]
        out += [f"| {k} | {by['0'][k]:.3f} | {by['1'][k]:.3f} |" for k in keys]
    for hint in ts.get("hints", []) or []:
        out += ["", f"> tuning hint: {hint}"]
    return out


def dataset_paragraph(info: dict[str, Any]) -> list[str]:
    """How a generated dataset came about: questions asked, answers judged, evasions kept out (``world-facts``)."""
    if not info or info.get("mode") != "generation":
        return []
    n_q, n_ev = info.get("n_questions", 0), info.get("n_evasions", 0)
    reasons = ", ".join(f"{k} {v}" for k, v in sorted((info.get("evasion_reasons") or {}).items()))
    out = [f"**Dataset.** {info.get('model')} answered {n_q} questions greedily ({info.get('prompt_format')} "
           f"prompts); {info.get('n_labelled', 0)} answers were labelled ({info.get('n_correct', 0)} correct, "
           f"{info.get('n_hallucinated', 0)} hallucinated). {n_ev} answers ({n_ev / max(n_q, 1):.0%}) were "
           f"evasions that name no candidate answer{f' ({reasons})' if reasons else ''} and were kept out of the "
           "labelled set.", ""]
    per = info.get("per_relation") or {}
    if per:
        out += ["| relation | questions | correct (0) | hallucinated (1) | evasions |", "|---|---|---|---|---|"]
        out += [f"| {r} | {v['n_questions']} | {v['n_correct']} | {v['n_hallucinated']} | {v['n_evasions']} |"
                for r, v in per.items()]
        out.append("")
    return out


def render(run_dir: Path, metrics: dict[str, Any], tracking_summary: dict[str, Any], manifest: dict[str, Any],
           capture_meta: dict[str, Any]) -> str:
    cfg = manifest["config"]
    det = metrics["detector"]
    concl = metrics["conclusion"]
    L: list[str] = [f"# ghost-lens run: {cfg['model']} on {cfg['dataset']}", ""]
    L += [f"**Verdict.** {concl['statement']}", ""]
    if metrics.get("headline"):
        L += [f"**Does it add to confidence?** {metrics['headline']}", ""]
    L += [f"**Split.** {split_description(metrics)}.", ""]
    L += ["## Detector and baselines (same folds)", "", *results_table(metrics), ""]
    L += ["Verdicts come from a paired bootstrap over groups of the AUROC difference: *detector above* only when "
          "its interval excludes 0. Schema and rules: `docs/detection_metrics.md`.", ""]
    L += [*confidence_section(metrics), *ablation_section(metrics), *kind_section(metrics)]
    if metrics.get("skipped"):
        L += ["Skipped: " + "; ".join(f"{k} ({v})" for k, v in metrics["skipped"].items()), ""]
    if metrics.get("warnings"):
        L += ["**Warnings**", "", *[f"- {w}" for w in metrics["warnings"]], ""]
    comp = det.get("components", {})
    if comp:
        L += ["## What drives the detector", "", "| component | AUROC [95% CI] |", "|---|---|"]
        L += [f"| {k} | {_ci({'auroc': v})} |" for k, v in comp.items()]
        o = det.get("orientation", {})
        L += ["", f"Orientation ({o.get('mode')}): entropy sign per fold {o.get('entropy_sign_per_fold')}, churn sign "
              f"per fold {o.get('churn_sign_per_fold')} (+1 = higher is scored as more hallucinated).", ""]
    at = det.get("at_threshold", {})
    pr = det.get("probability_range", {})
    L += ["## Calibration and decisions", ""]
    L += _kv_table({"threshold rule": det.get("threshold", {}).get("rule"), **{k: at[k] for k in
                    ("accuracy", "precision", "recall", "f1") if k in at},
                    "ECE": det.get("ece"), "Brier": det.get("brier"),
                    "probability range": f"[{pr.get('min', float('nan')):.3f}, {pr.get('max', float('nan')):.3f}]"
                    f" (central 90%: {pr.get('central_width', float('nan')):.3f}"
                    f"{', COLLAPSED' if pr.get('collapsed') else ''})"})
    L += ["", f"![ROC]({C.ROC_PLOT}) ![reliability]({C.RELIABILITY_PLOT})", ""]
    L += ["## Tracking", "", *tracking_section(tracking_summary)]
    L += ["", f"![tracks of one example]({C.TRACK_PLOT})", "", "Full numbers: "
          f"`{C.TRACKING_SUMMARY}`, per-example metrics `{C.TRACK_METRICS}`, graphs `{C.GRAPHS_DIR}/`.", ""]
    L += ["## Data, model and SAEs", "", *dataset_paragraph(manifest.get("dataset_info") or {})]
    sae = capture_meta.get("sae_info") or {}
    L += _kv_table({
        "model": cfg["model"], "SAEs": sae.get("source", cfg.get("sae_dir") or cfg.get("sae_release")),
        "layers": ", ".join(map(str, capture_meta.get("layers", []))),
        "hooks": ", ".join(sorted(set(capture_meta.get("hook_names", []) or []))),
        "dataset": cfg["dataset"], "examples": manifest.get("n_examples"),
        "hallucinated (label 1)": manifest.get("n_hallucinated"),
        "dataset hash": manifest.get("dataset_hash"), "prompts truncated": capture_meta.get("n_truncated"),
        "capture reused": manifest.get("capture_reused"),
    })
    L += ["", "## Provenance", ""]
    L += _kv_table({"command": f"`{manifest.get('command', '')}`", "seed": manifest.get("seed"),
                    **{f"time: {k}": f"{v:.1f} s" for k, v in manifest.get("timings_s", {}).items()},
                    **{f"version: {k}": v for k, v in manifest.get("versions", {}).items()}})
    L += ["", f"Config: `{C.CONFIG}`; every number above: `{C.DETECTION_METRICS}`, `{C.PREDICTIONS}`.", ""]
    return "\n".join(L)


def write_report(run: Any) -> Path:
    path = Path(run.path)
    metrics = json.loads((path / C.DETECTION_METRICS).read_text())
    summary = json.loads((path / C.TRACKING_SUMMARY).read_text())
    run.folder.write_manifest()
    manifest = json.loads((path / C.MANIFEST).read_text())
    text = render(path, metrics, summary, manifest, run.trace.meta)
    from ghost_lens.io import atomic_write_text

    atomic_write_text(path / C.REPORT, text)
    return path / C.REPORT
