"""SmolLM2-135M: load time (cold and warm conversion cache) and batched generation vs TransformerLens's ``generate``.

- ``load cold``: ``load_model("smollm2-135m")`` with an empty ghost-lens cache (a temporary ``$GHOST_LENS_CACHE``):
  dequantizing the GGUF with transformers, converting, writing the cache, loading it. Run in a subprocess each, so
  imports are counted the same way for both (``--skip-cold`` to leave it out).
- ``load warm``: the same call once the cache exists (subprocess; imports reported apart).
- ``ghost-lens generate``: :func:`ghost_lens.generate.generate` on ``--prompts`` short chat-formatted questions
  (greedy, ``--max-new-tokens``, ``--batch``), answers per second.
- ``TL generate``: ``model.generate`` one prompt at a time (greedy, KV cache on) on the first ``--tl-prompts``
  prompts, answers per second; and whether its answers equal the batched ones.

Threads: ``--threads`` (default 2). Report the machine's load beside the numbers: torch on 2 threads is very
sensitive to other busy processes; CPU time per answer (``time.process_time``) is printed too, as it is less so.

    python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --skip-cold --prompts 64 --batch 32 --max-new-tokens 8
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

SUBJECTS = [
    "Japan", "France", "Germany", "Italy", "Spain", "Canada", "Brazil", "Egypt", "Kenya", "India", "China",
    "Peru", "Chile", "Norway", "Sweden", "Poland",
]  # fmt: skip
TEMPLATES = [
    "What is the capital of {}?",
    "What is the currency of {}?",
    "What language is spoken in {}?",
    "Which continent is {} in?",
]

_LOAD_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads({threads})
import transformer_lens, transformers
from ghost_lens.model_loader import load_model
t1 = time.perf_counter()
model = load_model("smollm2-135m")
t2 = time.perf_counter()
print(json.dumps({{"imports_s": t1 - t0, "load_s": t2 - t1}}))
"""


def time_load(cache: str, threads: int) -> dict[str, float]:
    import json

    env = {**os.environ, "GHOST_LENS_CACHE": cache}
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_SNIPPET.format(threads=threads)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def chat_prompts(tokenizer, n: int) -> tuple[list[str], list[str]]:
    """``n`` questions and the same questions in the model's chat template (a user turn, then the assistant's)."""
    questions = [t.format(s) for t in TEMPLATES for s in SUBJECTS][:n]
    return questions, [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--tl-prompts", type=int, default=4)
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    if not args.skip_cold:
        with tempfile.TemporaryDirectory() as cache:
            cold = time_load(cache, args.threads)
            warm = time_load(cache, args.threads)
        print(f"load cold  {cold['load_s']:6.1f} s  (+ imports {cold['imports_s']:.1f} s)")
        print(f"load warm  {warm['load_s']:6.1f} s  (+ imports {warm['imports_s']:.1f} s)")

    from ghost_lens.generate import generate
    from ghost_lens.model_loader import load_model

    started = time.perf_counter()
    model = load_model("smollm2-135m")
    print(f"load (default cache) {time.perf_counter() - started:.1f} s")
    questions, prompts = chat_prompts(model.tokenizer, args.prompts)
    generate(model, prompts[:2], max_new_tokens=2)  # warm-up
    started, cpu_started = time.perf_counter(), time.process_time()
    answers = generate(model, prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch)
    batched_s, batched_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        f"ghost-lens generate: {len(prompts)} answers in {batched_s:.1f} s = {len(prompts) / batched_s:.1f} answers/s "
        f"(batch {args.batch}, max_new_tokens {args.max_new_tokens}); CPU time {batched_cpu / len(prompts):.2f} s/answer"
    )
    for question, answer in list(zip(questions, answers, strict=True))[:: max(1, len(questions) // 6)]:
        print(f"   {question!r} -> {answer!r}")

    tl_answers = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for prompt in prompts[: args.tl_prompts]:
        tokens = model.to_tokens(prompt)
        out = model.generate(
            tokens, max_new_tokens=args.max_new_tokens, do_sample=False, verbose=False, use_past_kv_cache=True
        )
        text = model.tokenizer.decode(out[0, tokens.shape[1] :], skip_special_tokens=True)
        tl_answers.append(text.split("\n")[0])
    tl_s, tl_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(
        f"TL generate (one prompt at a time): {args.tl_prompts} answers in {tl_s:.1f} s = "
        f"{args.tl_prompts / tl_s:.2f} answers/s; CPU time {tl_cpu / args.tl_prompts:.2f} s/answer; "
        f"speedup {(len(prompts) / batched_s) / (args.tl_prompts / tl_s):.0f}x (wall), "
        f"{(tl_cpu / args.tl_prompts) / (batched_cpu / len(prompts)):.0f}x (CPU time)"
    )
    same = tl_answers == answers[: args.tl_prompts]
    print(f"TL answers equal the batched ones: {same} {tl_answers if not same else ''}")


if __name__ == "__main__":
    main()
