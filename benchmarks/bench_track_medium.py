"""The design card's command end to end at the gpt2-medium shape, offline: stage times, peak RSS, bytes per example.

Issue 11's targets: the card's command with ``--config gpt2-medium`` finishes, and the evaluation takes <= 25% of
the capture's time. What it does:

1. Builds once, into ``--cache`` (default ``~/.cache/ghost-lens-bench/gpt2-medium``), an offline Hugging Face cache
   in the real layouts (``hub/``: ``HF_HUB_CACHE``; ``datasets/``: ``HF_DATASETS_CACHE``), with
   :mod:`tests.helpers.hub`'s builders:

   - ``models--gpt2-medium``: a random-weight GPT-2 with gpt2-medium's config (24 layers, d_model 1024, 16 heads,
     n_ctx 1024, vocab 50257) saved by ``save_pretrained`` (safetensors, ``n_ctx`` added to config.json), and a
     byte-level BPE tokenizer of exactly 50257 entries: trained with ``tokenizers`` on the TruthfulQA and HaluEval
     text of ``../shared/data`` (about 29.8k entries come from merges; the rest are unreachable ``<|unused_i|>``
     entries), ``<|endoftext|>`` as BOS / EOS. Token counts: it cuts the TruthfulQA examples (``Q: ...\nA:
     answer``, punctuation included) into 1.3 tokens per whitespace word (measured at build, printed); the real
     gpt2 tokenizer (not available offline, so not measured here) gives about 1.3-1.4 on such English text
     (OpenAI's rule of thumb: 100 tokens ~ 75 words). Trained on the very text it tokenizes, ours is if anything a
     little more compact: the examples are about as long as with real gpt2, at most ~10% shorter;
   - ``models--my-org--gpt2-medium-res-saes``: 24 random SAELens standard SAEs of 5120 features at
     ``blocks.{L}.hook_resid_post`` (one folder each, what ``SAE.from_pretrained(repo, folder)`` and
     ``--sae-release ORG/REPO`` read), encoder = decoder transposed, unit decoder rows, and encoder biases set per
     feature on this model's own residuals (TruthfulQA text) so that about ``--active`` (4%) of the features fire
     per token, as in trained SAEs (checked on held-out text; printed);
   - ``truthfulqa___truthful_qa/generation``: the TruthfulQA ``generation`` config (817 questions, from
     ``../shared/data/truthfulqa/v1``) as ``datasets`` caches it after one online load, so ``--dataset truthfulqa``
     loads offline.

2. Runs what a user types, as a subprocess with that offline environment (``HF_HUB_OFFLINE=1``,
   ``HF_HUB_CACHE``, ``HF_DATASETS_CACHE``; cwd a scratch folder, so the config's ``sae_dir: saes/gpt2-medium`` is
   not found there)::

       ghost-lens --threads T track --model gpt2-medium --sae-release my-org/gpt2-medium-res-saes \\
           --config gpt2-medium --dataset truthfulqa -n N --out RUN

   into a fresh ``RUN`` (default ``/tmp/ghost-lens-bench/track-medium-nN``; an existing run folder there is
   removed first). ``--reuse-capture``: the same command again on the existing ``RUN``, which reuses its capture,
   so only tracking and evaluation are timed (for iterating on them).

3. Prints a table: examples, the stage seconds that ``track_run`` records in ``RUN/manifest.json``
   (``timings_s``), evaluation / capture against the target <= 0.25 with a verdict, the subprocess's peak RSS
   (``os.wait4``), and capture bytes per example (``capture.safetensors`` of every shard; every file of
   ``capture/``). A reuse run compares its evaluation with the capture time of the run that made the capture
   (saved next to ``RUN`` as ``RUN.bench.json``).

The command runs through this script's ``--child`` shim: ``ghost_lens_cli.main:main`` with the same argv in a
fresh interpreter (what the ``ghost-lens`` console script calls), plus timers: the process CPU time of every stage
(on a shared machine the steadier measure) and the evaluation's parts (the random-decoder control tracking, the
feature groups, each method's fits by method name, the assembly with its bootstrap, the final detector), each
printed with its share of the evaluation stage. ``--plain``: the installed ``ghost-lens`` executable itself (no
per-stage CPU, no breakdown). ``--code DIR``: import ``ghost_lens`` / ``ghost_lens_cli`` from the source tree
``DIR`` (e.g. ``git archive HEAD | tar -x -C DIR``, with ``DIR/ghost_lens_cli -> cli`` and
``DIR/ghost_lens/configs -> ../configs`` links) to time a fixed version while the working tree changes.
``--py-spy SVG``: the command under ``py-spy record --idle`` (a flame graph). ``--report-only``: the table of the
last run into ``RUN`` again.

    python benchmarks/bench_track_medium.py --threads 1                       # build once, then N=800
    python benchmarks/bench_track_medium.py --threads 1 --reuse-capture       # tracking + evaluation again
    python benchmarks/bench_track_medium.py --threads 1 --code /tmp/glb_head   # the committed code ("before")
    python benchmarks/bench_track_medium.py -n 200 --cache /tmp/glb-cache --out /tmp/glb-run
    python benchmarks/bench_track_medium.py --threads 16 --track-args "--device cuda --set capture.batch_size=128"
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CODE_ENV = "GHOST_LENS_BENCH_CODE"  # --code: the ghost-lens source tree the command imports
sys.path.insert(0, str(ROOT))
if os.environ.get(CODE_ENV):
    sys.path.insert(0, os.environ[CODE_ENV])

from tests.helpers import bpe_tokenizer  # noqa: E402
from tests.helpers.hub import GPT2_MEDIUM, hub_env, repo_snapshot, save_tiny_gpt2, tiny_sae, use_offline_hub  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TRUTHFULQA_V1 = DATA / "truthfulqa" / "v1" / "TruthfulQA.csv"  # the 817 questions of the hub's ``generation``
TRUTHFULQA_790 = DATA / "truthfulqa" / "TruthfulQA.csv"
HALUEVAL = DATA / "halueval" / "qa_data.first1000.json"
SAE_REPO = "my-org/gpt2-medium-res-saes"
EOT = "<|endoftext|>"
SHAPE = dict(n_layers=24, d_model=1024, n_heads=16, n_ctx=1024, d_vocab=50257, d_sae=5120)
BUILD_VERSION = 1
TARGET = 0.25
DEFAULT_CACHE = Path.home() / ".cache" / "ghost-lens-bench" / "gpt2-medium"


# ---- 1. the offline cache --------------------------------------------------------------------------------------


def _truthfulqa_rows(path: Path = TRUTHFULQA_V1) -> list[dict[str, Any]]:
    """TruthfulQA rows in the hub's ``generation`` layout (lower-case fields, answers as lists)."""

    def split(cell: str) -> list[str]:
        return [a.strip() for a in cell.split(";") if a.strip()]

    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        for r in csv.DictReader(f):
            rows.append({"type": r["Type"], "category": r["Category"], "question": r["Question"],
                         "best_answer": r["Best Answer"], "correct_answers": split(r["Correct Answers"]),
                         "incorrect_answers": split(r["Incorrect Answers"]), "source": r["Source"]})
    return rows


def corpus_texts() -> list[str]:
    """The TruthfulQA (both versions) and HaluEval QA text of ``../shared/data``, one string per field."""
    texts: list[str] = []
    for path in (TRUTHFULQA_V1, TRUTHFULQA_790):
        with open(path, encoding="utf-8-sig", newline="") as f:
            for r in csv.DictReader(f):
                texts += [r["Question"], r["Best Answer"], r["Correct Answers"], r["Incorrect Answers"]]
    with open(HALUEVAL, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            texts += [d["knowledge"], d["question"], d["right_answer"], d["hallucinated_answer"]]
    return texts


def medium_tokenizer(vocab_size: int = SHAPE["d_vocab"]):
    """A byte-level BPE of exactly ``vocab_size`` entries in the GPT-2 format: the merges the corpus supplies, then
    unreachable ``<|unused_i|>`` entries (in the BPE vocabulary, not added tokens, so tokenizing is unchanged)."""
    from tokenizers import Tokenizer
    from transformers import GPT2TokenizerFast

    tok = bpe_tokenizer(corpus_texts(), vocab_size=vocab_size, special_tokens=[EOT])
    n_trained = tok.get_vocab_size()
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for i in range(vocab_size - len(vocab)):
        vocab[f"<|unused_{i}|>"] = len(vocab)
    tok = Tokenizer.from_str(json.dumps(spec))
    fast = GPT2TokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT)
    if len(fast) != vocab_size:
        raise SystemExit(f"tokenizer has {len(fast)} entries, expected {vocab_size}")
    return fast, n_trained


def _write_truthfulqa_cache(datasets_cache: Path) -> None:
    """``datasets``' cache of ``truthfulqa/truthful_qa`` (config ``generation``, split ``validation``) in the layout
    ``load_dataset`` falls back to offline: ``truthfulqa___truthful_qa/generation/0.0.0/<sha>/``."""
    import hashlib

    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    rows = _truthfulqa_rows()
    dest = datasets_cache / "truthfulqa___truthful_qa" / "generation" / "0.0.0"
    with tempfile.TemporaryDirectory() as tmp:
        parquet = Path(tmp) / "validation-00000-of-00001.parquet"
        pq.write_table(pa.Table.from_pylist(rows), parquet)
        builder = Parquet(cache_dir=str(Path(tmp) / "cache"), dataset_name="truthful_qa", config_name="generation",
                          data_files={"validation": str(parquet)})
        builder.download_and_prepare()
        sha = hashlib.sha1(b"truthfulqa/truthful_qa generation").hexdigest()
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(builder.cache_dir, dest / sha)


def _calibration_texts(n: int, offset: int = 0) -> list[str]:
    """TruthfulQA prompts with one answer each, as the capture sees them (``Q: ...\\nA: answer``)."""
    from ghost_lens.data.loaders import QA_TEMPLATE

    rows = _truthfulqa_rows()[offset:offset + n]
    return [f"{QA_TEMPLATE.format(question=r['question'])} {(r['correct_answers'] or [r['best_answer']])[0]}"
            for r in rows]


def _residuals(model: Any, texts: list[str]) -> dict[str, Any]:
    """``hook name -> [tokens, d_model]``: every layer's ``resid_post`` at every token but BOS, over ``texts``."""
    import torch

    names = [f"blocks.{L}.hook_resid_post" for L in range(model.cfg.n_layers)]
    parts: dict[str, list[Any]] = {name: [] for name in names}
    with torch.inference_mode():
        for text in texts:
            _, cache = model.run_with_cache(model.to_tokens(text), names_filter=names)
            for name in names:
                parts[name].append(cache[name][0, 1:])
    return {name: torch.cat(p) for name, p in parts.items()}


def _calibrated_saes(model: Any, active: float, seed: int) -> tuple[dict[int, Any], list[float]]:
    """Random SAEs (``tiny_sae``: encoder = decoder transposed) whose encoder biases put each feature's threshold at
    its ``1 - active`` quantile over the model's residuals (a normal fit); the active share on held-out text."""
    import torch

    z = statistics.NormalDist().inv_cdf(1 - active)
    fit, held_out = _residuals(model, _calibration_texts(48)), _residuals(model, _calibration_texts(24, offset=400))
    saes, shares = {}, []
    for L in range(model.cfg.n_layers):
        name = f"blocks.{L}.hook_resid_post"
        sae = tiny_sae(SHAPE["d_model"], SHAPE["d_sae"], name, model_name=GPT2_MEDIUM, seed=seed + L)
        with torch.no_grad():
            pre = fit[name] @ sae.W_enc
            sae.b_enc.copy_(-(pre.mean(0) + z * pre.std(0)))
            shares.append(float((sae.encode(held_out[name]) > 0).float().mean()))
        saes[L] = sae
    return saes, shares


def build_cache(cache: Path, *, active: float = 0.04, seed: int = 0, rebuild: bool = False) -> dict[str, Any]:
    """Write the model, the SAE repo and the TruthfulQA cache into ``cache`` (once: ``build.json`` marks it done)."""
    marker = cache / "build.json"
    if marker.is_file() and not rebuild:
        info = json.loads(marker.read_text())
        if info.get("version") == BUILD_VERSION and info.get("active") == active and info.get("seed") == seed:
            return info
    from ghost_lens.model_loader import load_model

    t0 = time.perf_counter()
    marker.unlink(missing_ok=True)
    hub, datasets_cache = cache / "hub", cache / "datasets"
    shutil.rmtree(hub / f"models--{SAE_REPO.replace('/', '--')}", ignore_errors=True)
    tokenizer, n_trained = medium_tokenizer()
    print(f"[build] tokenizer: {len(tokenizer)} entries ({n_trained} from BPE training)", flush=True)
    model_dir = repo_snapshot(hub, GPT2_MEDIUM)
    save_tiny_gpt2(model_dir, n_layers=SHAPE["n_layers"], d_model=SHAPE["d_model"], n_heads=SHAPE["n_heads"],
                   n_ctx=SHAPE["n_ctx"], seed=seed, tokenizer=tokenizer)
    print(f"[build] model saved ({time.perf_counter() - t0:.0f} s)", flush=True)
    _write_truthfulqa_cache(datasets_cache)
    with use_offline_hub(hub):
        model = load_model(GPT2_MEDIUM)  # the model exactly as the CLI loads it
        saes, shares = _calibrated_saes(model, active, seed)
        words, tokens = _token_counts(model, _truthfulqa_rows())
    sae_dir = repo_snapshot(hub, SAE_REPO)
    for L, sae in saes.items():
        sae.save_model(sae_dir / f"blocks.{L}.hook_resid_post")
    info = {"version": BUILD_VERSION, "active": active, "seed": seed, "shape": SHAPE, "sae_repo": SAE_REPO,
            "tokenizer_trained_entries": n_trained, "active_share_held_out": [round(s, 4) for s in shares],
            "tokens_per_word": round(tokens / words, 3), "build_seconds": round(time.perf_counter() - t0, 1)}
    del model, saes
    marker.write_text(json.dumps(info, indent=2))
    return info


def _token_counts(model: Any, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """(words, tokens) of every TruthfulQA answer after its question, as the capture tokenizes them."""
    from ghost_lens.data.loaders import QA_TEMPLATE

    texts = [f"{QA_TEMPLATE.format(question=r['question'])} {a}" for r in rows
             for a in r["correct_answers"] + r["incorrect_answers"]]
    words = sum(len(t.split()) for t in texts)
    tokens = sum(len(model.tokenizer(t)["input_ids"]) for t in texts)
    return words, tokens


# ---- 2. the command --------------------------------------------------------------------------------------------


def card_command(threads: int, n: int, out: Path) -> list[str]:
    """The design card's command with the packaged config, as a user types it (minus the executable)."""
    return ["--threads", str(threads), "track", "--model", GPT2_MEDIUM, "--sae-release", SAE_REPO, "--config",
            "gpt2-medium", "--dataset", "truthfulqa", "-n", str(n), "--out", str(out)]


def _executable() -> str:
    exe = Path(sys.executable).parent / "ghost-lens"
    return str(exe) if exe.exists() else (shutil.which("ghost-lens") or "ghost-lens")


def run_command(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> dict[str, Any]:
    """Run ``argv`` to the end; its wall time, exit code and peak RSS (``os.wait4``: this child and the children it
    waited for), stdout and stderr into ``log``."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": proc.returncode, "wall_s": time.perf_counter() - t0, "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime}


def capture_bytes(run: Path) -> dict[str, int]:
    cap = run / "capture"
    files = [p for p in cap.rglob("*") if p.is_file()]
    return {"tensors": sum(p.stat().st_size for p in files if p.name == "capture.safetensors"),
            "decoders": sum(p.stat().st_size for p in files if p.name == "decoders.safetensors"),
            "all": sum(p.stat().st_size for p in files)}


# ---- 3. the table ----------------------------------------------------------------------------------------------


def report(res: dict[str, Any], capture_s: float | None) -> None:
    t = res["timings_s"]
    n = res["n_examples"]
    ev, tr = t.get("evaluation"), t.get("tracking")
    cap = t.get("capture", capture_s)
    b = res["capture_bytes"]
    print(f"\n{'examples':>8} {'capture s':>10} {'tracking s':>11} {'evaluation s':>13} {'eval/capture':>13} "
          f"{'peak RSS MB':>12} {'capture B/ex':>13} {'all B/ex':>10}")
    ratio = ev / cap if ev is not None and cap else None
    print(f"{n:>8} {_f(cap):>10} {_f(tr):>11} {_f(ev):>13} {_f(ratio, 3):>13} {res['peak_rss_mb']:>12.0f} "
          f"{b['tensors'] / n:>13.0f} {b['all'] / n:>10.0f}")
    cpu = (res.get("profile") or {}).get("stage_cpu_s") or {}
    if cpu:
        print("process CPU s per stage: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    if res.get("code"):
        print(f"ghost_lens imported from {res['code']}")
    others = {k: v for k, v in t.items() if k not in ("capture", "tracking", "evaluation")}
    print("other stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in others.items()))
    print(f"capture reused: {res['capture_reused']}" + (f" (capture time from the run that made it: {cap:.1f} s)"
                                                        if res["capture_reused"] and cap else ""))
    if ratio is not None:
        print(f"evaluation / capture: {ratio:.3f} (target <= {TARGET}) {'ok' if ratio <= TARGET else 'MISSED'}")
    print(f"command wall {res['wall_s']:.1f} s, cpu {res['cpu_s']:.1f} s; load average before {res['load_before']}, "
          f"after {res['load_after']}; started {res['started']}")


def _f(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_profile(prof: dict[str, Any], evaluation_s: float | None) -> None:
    """The evaluation's parts: seconds and share of the evaluation stage (methods by name, fits summed)."""
    total = evaluation_s or sum(v["s"] for v in prof["parts"].values())
    print(f"\nevaluation profile (stage {total:.1f} s):")
    rows = [(f"part {k}", v) for k, v in prof["parts"].items()]
    rows += [(f"  fit {k}", v) for k, v in sorted(prof["methods"].items(), key=lambda kv: -kv[1]["s"])]
    for name, v in rows:
        print(f"  {name:<40} {v['s']:>8.2f} s {100 * v['s'] / total:>6.1f}%  ({v['calls']} calls)")
    if prof.get("missing"):
        print(f"  (not found, not timed: {', '.join(prof['missing'])})")


# ---- the --child shim: the CLI in this process, the evaluation's parts timed ---------------------------------------


def child_main(cli_args: list[str], profile_path: Path) -> None:
    """``ghost-lens <cli_args>`` in this process with timers around the evaluation's parts (module attributes, found
    by name at call time); the timings go to ``profile_path`` as JSON at exit."""
    import atexit
    import importlib

    parts: dict[str, dict[str, float]] = {}
    methods: dict[str, dict[str, float]] = {}
    missing: list[str] = []

    def timed(table: dict[str, dict[str, float]], key_of: Any, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                row = table.setdefault(key_of(args), {"s": 0.0, "calls": 0})
                row["s"] += time.perf_counter() - t0
                row["calls"] += 1
        return wrapper

    targets = {  # part name -> (module, attribute)
        "control_tracking (random decoders)": ("ghost_lens.pipeline", "control_tracking"),
        "build_feature_groups": ("ghost_lens.detect.features", "build_feature_groups"),
        "fit all methods": ("ghost_lens.detect.evaluation", "_fit_all"),
        "assemble (metrics, bootstrap)": ("ghost_lens.detect.evaluation", "_assemble"),
        "final detector": ("ghost_lens.track_run", "_save_final_detector"),
    }
    stage_cpu: dict[str, float] = {}
    track_run = importlib.import_module("ghost_lens.track_run")
    if hasattr(track_run, "_stage"):
        track_run._stage = _cpu_timed_stage(track_run._stage, stage_cpu)
    else:
        missing.append("ghost_lens.track_run._stage")
    for part, (mod_name, attr) in targets.items():
        mod = importlib.import_module(mod_name)
        if hasattr(mod, attr):
            setattr(mod, attr, timed(parts, lambda a, p=part: p, getattr(mod, attr)))
        else:
            missing.append(f"{mod_name}.{attr}")
    ev_mod = importlib.import_module("ghost_lens.detect.evaluation")
    if hasattr(ev_mod, "_fit_one"):
        ev_mod._fit_one = timed(methods, lambda a: getattr(a[0], "name", "?"), ev_mod._fit_one)
    else:
        missing.append("ghost_lens.detect.evaluation._fit_one")
    atexit.register(lambda: profile_path.write_text(json.dumps({
        "parts": parts, "methods": methods, "missing": missing, "stage_cpu_s": stage_cpu,
        "ghost_lens": str(Path(importlib.import_module("ghost_lens").__file__).parent)})))
    from ghost_lens_cli.main import main as cli_main

    sys.argv = ["ghost-lens", *cli_args]
    cli_main()


def _cpu_timed_stage(stage: Any, table: dict[str, float]) -> Any:
    """``track_run._stage`` that also adds the stage's process CPU seconds to ``table[name]``."""
    from contextlib import contextmanager

    @contextmanager
    def cpu_stage(folder: Any, name: str) -> Any:
        c0 = time.process_time()
        try:
            with stage(folder, name):
                yield
        finally:
            table[name] = table.get(name, 0.0) + time.process_time() - c0

    return cpu_stage


# ---- main --------------------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--num-samples", type=int, default=800)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="the offline cache (built once)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default /tmp/ghost-lens-bench/track-medium-nN)")
    p.add_argument("--rebuild", action="store_true", help="build the cache again")
    p.add_argument("--active", type=float, default=0.04, help="share of SAE features active per token")
    p.add_argument("--reuse-capture", action="store_true", help="rerun on the existing RUN: tracking + evaluation")
    p.add_argument("--plain", action="store_true", help="run the ghost-lens executable (no per-stage timers)")
    p.add_argument("--code", type=Path, default=None, help="import ghost_lens from this source tree")
    p.add_argument("--report-only", action="store_true", help="print the last run's table again")
    p.add_argument("--py-spy", type=Path, default=None, metavar="SVG", help="run under py-spy record --idle")
    p.add_argument("--build-only", action="store_true")
    p.add_argument("--track-args", default="", help="more `track` arguments, e.g. '--device cuda --set "
                   "capture.batch_size=128' (split on whitespace)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--profile-path", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("cli_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_main([a for a in args.cli_args if a != "--"], args.profile_path)
        return
    cache = args.cache.expanduser().resolve()
    info = build_cache(cache, active=args.active, rebuild=args.rebuild)
    shares = info["active_share_held_out"]
    print(f"cache {cache}: gpt2-medium shape {SHAPE}; SAE features active per token (held-out) median "
          f"{100 * statistics.median(shares):.1f}% [{100 * min(shares):.1f}-{100 * max(shares):.1f}%]; "
          f"{info['tokens_per_word']} tokens per word on TruthfulQA")
    if args.build_only:
        return
    reuse = args.reuse_capture
    out = (args.out or Path(tempfile.gettempdir()) / "ghost-lens-bench" / f"track-medium-n{args.num_samples}")
    out = out.expanduser().resolve()
    bench_json = out.with_name(out.name + ".bench.json")
    last_json = out.with_name(out.name + ".last.json")
    if args.report_only:
        last = json.loads(last_json.read_text())
        report(last, _capture_seconds(last, bench_json))
        if last.get("profile"):
            print_profile(last["profile"], last["timings_s"].get("evaluation"))
        return
    if not reuse and out.exists():
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            raise SystemExit(f"{out} is not a ghost-lens run folder; choose another --out")
        shutil.rmtree(out)
    if reuse and not (out / "capture").is_dir():
        raise SystemExit(f"--reuse-capture: {out} has no capture; run once without it first")
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-track-medium-cwd-"))
    env = hub_env(cache / "hub") | {"HF_DATASETS_CACHE": str(cache / "datasets")}
    if args.code:
        code = args.code.expanduser().resolve()
        env |= {CODE_ENV: str(code), "PYTHONPATH": os.pathsep.join(filter(None, [str(code),
                                                                                 env.get("PYTHONPATH")]))}
    cli_args = card_command(args.threads, args.num_samples, out) + args.track_args.split()
    profile_path = scratch / "profile.json"
    if not args.plain:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--profile-path", str(profile_path),
                "--", *cli_args]
    else:
        argv = [_executable(), *cli_args]
    if args.py_spy:
        argv = [shutil.which("py-spy") or "/root/.pyenv/shims/py-spy", "record", "-o", str(args.py_spy), "--idle",
                "--", *argv]
    print("$ HF_HUB_OFFLINE=1 HF_HUB_CACHE=... HF_DATASETS_CACHE=... ghost-lens " + " ".join(cli_args), flush=True)
    log = out.with_name(out.name + ".log")
    started, load_before = time.strftime("%Y-%m-%d %H:%M:%S %Z"), _load()
    res = run_command(argv, env, scratch, log)
    res.update(started=started, load_before=load_before, load_after=_load())
    if res["rc"] != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"the command failed (exit {res['rc']}); log {log}:\n{tail}")
    manifest = json.loads((out / "manifest.json").read_text())
    res.update(timings_s=manifest.get("timings_s", {}), n_examples=manifest["n_examples"],
               capture_reused=bool(manifest.get("capture_reused")), capture_bytes=capture_bytes(out))
    res["profile"] = json.loads(profile_path.read_text()) if profile_path.is_file() else None
    res["code"] = (res["profile"] or {}).get("ghost_lens") or ("installed ghost-lens" if args.plain else None)
    if not res["capture_reused"]:
        bench_json.write_text(json.dumps(res, indent=2))
    last_json.write_text(json.dumps(res, indent=2))
    print(f"log: {log}")
    report(res, _capture_seconds(res, bench_json))
    if res["profile"]:
        print_profile(res["profile"], res["timings_s"].get("evaluation"))
    shutil.rmtree(scratch, ignore_errors=True)


def _capture_seconds(res: dict[str, Any], bench_json: Path) -> float | None:
    """The capture's seconds: this run's, or (capture reused) those of the run that made it."""
    capture_s = res["timings_s"].get("capture")
    if capture_s is None and bench_json.is_file():
        capture_s = json.loads(bench_json.read_text()).get("timings_s", {}).get("capture")
    return capture_s


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
