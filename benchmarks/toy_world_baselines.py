"""Baselines on the toy-facts world: how hard is it to tell the model's wrong answers from its right ones?

Builds (or loads) the world, then on the generation-mode labels, with out-of-fold predictions from a 5-fold
StratifiedGroupKFold over entities: (a) max softmax probability at the answer position, (b) the answer's log-prob
(the same number for a greedy one-token answer, so the same AUROC), (c) next-token entropy, (d) a logistic-regression
probe (C picked by inner grouped CV) on resid_post of each layer at the last prompt token. Statement mode: the shown answer's log-prob, and a probe
on the residual at the answer token. Prints the world's summary and every AUROC.

    GHOST_LENS_CACHE=/tmp/gl_cache_toy python benchmarks/toy_world_baselines.py [--threads 1] [--force]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ghost_lens.config import WorldConfig
from ghost_lens.toy.world import get_world

CS = (1e-3, 1e-2, 1e-1, 1.0)


def _probe(c: float):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))


def _best_c(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int) -> float:
    """Inverse regularisation chosen by an inner 3-fold grouped CV on the training part only."""
    inner = list(StratifiedGroupKFold(3, shuffle=True, random_state=seed + 1).split(x, y, groups))
    def score(c: float) -> float:
        return np.mean([roc_auc_score(y[te], _probe(c).fit(x[tr], y[tr]).predict_proba(x[te])[:, 1])
                        for tr, te in inner])
    return max(CS, key=score)


def oof_auroc(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> float:
    """Out-of-fold AUROC of a standardised logistic-regression probe (5 group-stratified folds, nested C)."""
    scores = np.zeros(len(y))
    for tr, te in StratifiedGroupKFold(5, shuffle=True, random_state=seed).split(x, y, groups):
        c = _best_c(x[tr], y[tr], groups[tr], seed)
        scores[te] = _probe(c).fit(x[tr], y[tr]).predict_proba(x[te])[:, 1]
    return roc_auc_score(y, scores)


@torch.no_grad()
def forward(model, prompts: list[str], answers: list[str]):
    """Next-token log-probs at the last prompt token, the answer token's log-prob, and resid_post at both."""
    tok_p = model.to_tokens(prompts, padding_side="right")
    last = (tok_p != model.tokenizer.pad_token_id).sum(-1) - 1
    tokens = model.to_tokens([p + a for p, a in zip(prompts, answers, strict=True)], padding_side="right")
    logits, cache = model.run_with_cache(tokens, names_filter=lambda n: n.endswith("hook_resid_post"))
    rows = torch.arange(len(prompts))
    logprobs = logits[rows, last].log_softmax(-1)
    ans_lp = logprobs[rows, tokens[rows, last + 1]]
    resid_prompt = [cache[f"blocks.{i}.hook_resid_post"][rows, last].numpy() for i in range(model.cfg.n_layers)]
    resid_answer = [cache[f"blocks.{i}.hook_resid_post"][rows, last + 1].numpy() for i in range(model.cfg.n_layers)]
    return logprobs, ans_lp, resid_prompt, resid_answer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="rebuild the world")
    ap.add_argument("--set", nargs="*", default=[], help="WorldConfig overrides key=value (JSON values)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = WorldConfig(**{k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)})
    t0 = time.perf_counter()
    world = get_world(cfg, force=args.force, progress=True)
    print(f"get_world: {time.perf_counter() - t0:.1f} s (torch threads {args.threads})")
    info = world.info()
    info.pop("config")
    print(json.dumps({k: info[k] for k in ("build_seconds", "stage_seconds", "train_steps", "accuracy", "examples",
                                           "hallucination_rate", "confident_wrong_share", "answer_prob_right",
                                           "answer_prob_wrong", "sae_fvu", "sae_l0", "sae_alive")}, indent=1))
    model = world.model

    gen = world.examples("generation")
    y = np.array([e.label for e in gen])
    groups = np.array([e.group for e in gen])
    kinds = np.array([e.meta["kind"] for e in gen])
    logprobs, ans_lp, resid, _ = forward(model, [e.prompt for e in gen], [e.answer for e in gen])
    maxp = logprobs.exp().max(-1).values.numpy()
    entropy = -(logprobs.exp() * logprobs).sum(-1).numpy()
    print(f"\ngeneration mode: {len(y)} examples, {y.mean():.1%} hallucinated")
    for kind in sorted(set(kinds)):
        sel = kinds == kind
        print(f"  {kind:18s} n={sel.sum():4d} hallucinated {y[sel].mean():.1%}  mean max-prob "
              f"right {maxp[sel & (y == 0)].mean():.3f} wrong {maxp[sel & (y == 1)].mean() if (sel & (y == 1)).any() else float('nan'):.3f}")
    print(f"  (a) max softmax prob     AUROC {roc_auc_score(y, -maxp):.3f}")
    print(f"  (b) answer log-prob      AUROC {roc_auc_score(y, -ans_lp.numpy()):.3f}")
    print(f"      next-token entropy   AUROC {roc_auc_score(y, entropy):.3f}")
    for kind in ("held_out_relation", "unknown_entity"):
        sel = kinds == kind
        print(f"      max-prob within {kind}: AUROC {roc_auc_score(y[sel], -maxp[sel]):.3f}")
    probe = [oof_auroc(r, y, groups) for r in resid]
    print("  (c) resid_post probe (last prompt token), per layer: " + ", ".join(f"L{i} {a:.3f}" for i, a in enumerate(probe)))
    print(f"      best layer {int(np.argmax(probe))}: AUROC {max(probe):.3f}")
    both = [oof_auroc(np.concatenate([r, np.stack([maxp, entropy], 1)], 1), y, groups) for r in resid]
    print("      probe + max-prob + entropy, per layer: " + ", ".join(f"L{i} {a:.3f}" for i, a in enumerate(both)))

    stmt = world.examples("statement")
    ys = np.array([e.label for e in stmt])
    gs = np.array([e.group for e in stmt])
    _, s_lp, _, s_resid = forward(model, [e.prompt for e in stmt], [e.answer for e in stmt])
    print(f"\nstatement mode: {len(ys)} examples, {ys.mean():.1%} false")
    print(f"  answer log-prob          AUROC {roc_auc_score(ys, -s_lp.numpy()):.3f}")
    probe_s = [oof_auroc(r, ys, gs) for r in s_resid]
    print("  resid_post probe (answer token), per layer: " + ", ".join(f"L{i} {a:.3f}" for i, a in enumerate(probe_s)))


if __name__ == "__main__":
    main()
