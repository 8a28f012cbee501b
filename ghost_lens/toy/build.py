"""Build a toy-facts world into a folder (used by :func:`ghost_lens.toy.world.get_world`).

Stages, each with a rich progress bar: 1. knowledge base; 2. tokenizer; 3. model training until it answers
``target_accuracy`` of its training facts; 4. one SAE per layer on ``resid_post`` (SAELens runner); 5. examples;
6. ``info.json``, with a content ``fingerprint`` of everything built (one hash per file, and one over them all).

What is promised (and tested in ``tests/integration/test_world_determinism.py``): the same ``WorldConfig`` gives
bit-identical files (knowledge base, tokenizer, model weights, SAE weights, examples), hence the same fingerprint,
in any process on machines of the same kind with the same library versions (``info.json``'s ``versions``),
whatever the caller's thread count or global RNG state: the build runs on one torch thread, with
``torch.use_deterministic_algorithms(True)``, on forked global generators seeded from the config alone. It is not
promised across CPU models or instruction sets (e.g. AVX2 vs AVX-512) or library versions: float sums may then
round differently, and training amplifies the difference; compare two machines' ``fingerprint_parts`` to see
which artefacts differ. The build times in ``info.json`` differ between builds; nothing else does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ghost_lens.config import WorldConfig
from ghost_lens.config_io import to_dict
from ghost_lens.hooks import hook_name
from ghost_lens.toy import examples as ex
from ghost_lens.toy import world as w
from ghost_lens.toy.kb import generate_kb
from ghost_lens.toy.model import (
    build_model,
    config_to_dict,
    encode,
    greedy_accuracy,
    isolated_rng,
    model_config,
    save_weights,
    train_model,
)
from ghost_lens.toy.tokenizer import BOS, PAD, build_tokenizer

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _bars(enabled: bool) -> Iterator[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), disable=not enabled)
    with bars:
        yield bars


@torch.no_grad()
def sae_quality(model: Any, sae: Any, hook: str, tokens: torch.Tensor, skip: list[int]) -> dict[str, float]:
    """Fraction of variance unexplained, mean L0 and share of features ever active, over non-skipped tokens."""
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    keep = ~torch.isin(tokens, torch.tensor(skip))
    x = cache[hook][keep]
    acts = sae.encode(x)
    recon = sae.decode(acts)
    fvu = ((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    return {"fvu": round(fvu.item(), 4), "l0": round((acts > 0).sum(-1).float().mean().item(), 2),
            "alive": round((acts > 0).any(0).float().mean().item(), 3)}


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run on one torch thread: the toy model gains nothing from intra-op threads, and on a 2-core machine with
    another busy process 2 threads were measured 3-5x slower. It also makes the build's floating-point sums
    independent of the caller's thread count."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` for the block (an op without a deterministic implementation
    raises instead of varying), then the caller's setting back."""
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])


def build_world(cfg: WorldConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Write every artefact of the world of ``cfg`` into the folder ``out`` (deterministically: module docstring)."""
    with isolated_rng(), _one_thread(), _deterministic():
        return _build(cfg, Path(out), progress)


def world_fingerprint(folder: Path, model: Any) -> dict[str, Any]:
    """SHA-256 (16 hex digits) of every artefact of a built world: the model's weights (tensor bytes, not the
    file ``model.safetensors``) and the bytes of every other file but ``info.json``; ``all`` hashes them together."""
    parts: dict[str, str] = {}
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    parts[w.MODEL_FILE] = h.hexdigest()[:16]
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel not in (w.MODEL_FILE, w.INFO_FILE):
            parts[rel] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    total = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]
    return {"all": total, "parts": parts}


def _build(cfg: WorldConfig, out: Path, progress: bool) -> dict[str, Any]:
    """The stages of :func:`build_world` in order (knowledge base, tokenizer, model, SAEs, examples), each timed,
    then ``info.json`` with the world's fingerprint."""
    t_start, times = time.perf_counter(), {}
    with _bars(progress) as bars:
        task = bars.add_task("knowledge base", total=1, note="")
        kb = generate_kb(cfg)
        kb.save(out / w.KB_FILE)
        bars.update(task, advance=1, note=f"{len(kb.entities)} entities, {len(kb.facts)} facts")

        task = bars.add_task("tokenizer", total=1, note="")
        tokenizer = build_tokenizer(kb.vocabulary(), out / w.TOKENIZER_DIR)
        model = build_model(model_config(cfg, len(tokenizer)), tokenizer)
        bars.update(task, advance=1, note=f"{model.cfg.d_vocab} tokens")
        times["kb_tokenizer_s"] = time.perf_counter() - t_start

        t0 = time.perf_counter()
        train = kb.facts_in("train")
        prompts, answers = [kb.prompt(f) for f in train], [f.answer for f in train]
        history = _train_world_model(cfg, model, prompts, answers, out, bars)
        times["model_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        quality = _train_world_saes(cfg, model, prompts, answers, out, bars)
        times["saes_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        gen, probs, stmt = _write_examples(cfg, kb, model, out, bars)
        times["examples_s"] = time.perf_counter() - t0

    info = _info(cfg, kb, model, history, gen, probs, stmt, quality)
    fingerprint = world_fingerprint(out, model)
    info["fingerprint"], info["fingerprint_parts"] = fingerprint["all"], fingerprint["parts"]
    info["build_seconds"] = round(time.perf_counter() - t_start, 1)
    info["stage_seconds"] = {k: round(v, 1) for k, v in times.items()}
    (out / w.INFO_FILE).write_text(json.dumps(info, indent=1))
    return info


def _train_world_model(
    cfg: WorldConfig, model: Any, prompts: list[str], answers: list[str], out: Path, bars: Any
) -> dict[str, Any]:
    """Train the model on the training facts and save its weights and config; returns the training history."""
    task = bars.add_task("model", total=cfg.train_steps, note="")

    def on_eval(step: int, acc: float) -> None:
        bars.update(task, completed=step, note=f"train accuracy {acc:.1%}")

    history = train_model(model, prompts, answers, cfg, progress=on_eval)
    bars.update(task, total=history["steps"], completed=history["steps"])
    save_weights(model, out / w.MODEL_FILE)
    (out / w.MODEL_CFG_FILE).write_text(json.dumps(config_to_dict(model.cfg), indent=1))
    return history


def _train_world_saes(
    cfg: WorldConfig, model: Any, prompts: list[str], answers: list[str], out: Path, bars: Any
) -> dict[int, dict[str, Any]]:
    """Train and save one SAE per layer on the training facts' tokens (padding and BOS excluded); returns each
    layer's quality."""
    from ghost_lens.saes.config import SAETrainingConfig
    from ghost_lens.saes.runners import train_sae

    tokens, _ = encode(model, prompts, answers)
    skip = model.tokenizer.convert_tokens_to_ids([PAD, BOS])
    quality = {}
    for layer in range(cfg.n_layers):
        hook = hook_name(layer, "resid_post")
        task = bars.add_task(f"SAE {hook}", total=cfg.sae_training_tokens, note="")
        sae_cfg = SAETrainingConfig(
            architecture=cfg.sae_architecture, expansion=cfg.sae_expansion, training_tokens=cfg.sae_training_tokens,
            context_size=tokens.shape[1], k=cfg.sae_k, lr=cfg.sae_lr, seed=cfg.seed + layer,
            train_batch_size_tokens=cfg.sae_batch_tokens, exclude_token_ids=skip, device="cpu",
        )
        sae = train_sae(
            model, hook, tokens, sae_cfg, model_name=w.MODEL_NAME,
            progress=lambda done, total, t=task: bars.update(t, completed=done, total=total),
        )
        sae.save_model(out / w.SAES_DIR / hook)
        quality[layer] = sae_quality(model, sae, hook, tokens, skip)
        bars.update(task, completed=cfg.sae_training_tokens, note=f"FVU {quality[layer]['fvu']:.3f}")
    return quality


def _write_examples(cfg: WorldConfig, kb: Any, model: Any, out: Path, bars: Any) -> tuple[Any, Any, Any]:
    """The generation examples (the model's own answers, with their probabilities) and the statement examples,
    saved."""
    task = bars.add_task("examples", total=2, note="")
    facts = ex.eval_facts(kb, cfg)
    gen, probs = ex.generation_examples(kb, model, facts)
    ex.save_examples(gen, out / w.EXAMPLE_FILES["generation"])
    bars.update(task, advance=1)
    stmt = ex.statement_examples(kb, facts, cfg.seed)
    ex.save_examples(stmt, out / w.EXAMPLE_FILES["statement"])
    bars.update(task, advance=1, note=f"{len(gen)} + {len(stmt)}")
    return gen, probs, stmt


def _info(cfg, kb, model, history, gen, probs, stmt, quality) -> dict[str, Any]:  # noqa: ANN001
    from importlib.metadata import version

    def acc(split: str) -> float:
        facts = kb.facts_in(split)
        return round(greedy_accuracy(model, [kb.prompt(f) for f in facts], [f.answer for f in facts]), 4)

    kinds = sorted({e.meta["kind"] for e in gen})
    by_kind = {k: [e for e in gen if e.meta["kind"] == k] for k in kinds}
    wrong_probs = [p for e, p in zip(gen, probs, strict=True) if e.label == 1]

    def mean_prob(kind: str, label: int) -> float | None:
        ps = [p for e, p in zip(gen, probs, strict=True) if e.meta["kind"] == kind and e.label == label]
        return round(sum(ps) / len(ps), 4) if ps else None

    return {
        "name": w.MODEL_NAME, "sae_release": w.SAE_RELEASE, "hash": w.world_hash(cfg), "seed": cfg.seed,
        "n_layers": cfg.n_layers, "d_model": cfg.d_model, "d_vocab": model.cfg.d_vocab,
        "entities": {"known": sum(e.known for e in kb.entities), "unknown": sum(not e.known for e in kb.entities)},
        "facts": {s: len(kb.facts_in(s)) for s in ("train", "held_out", "unknown")},
        "train_steps": history["steps"],
        "accuracy": {"train": acc("train"), "held_out": acc("held_out"), "unknown": acc("unknown")},
        "examples": {"generation": len(gen), "statement": len(stmt)},
        "hallucination_rate": {"all": round(sum(e.label for e in gen) / len(gen), 4)}
        | {k: round(sum(e.label for e in v) / len(v), 4) for k, v in by_kind.items()},
        "confident_wrong_share": round(sum(p >= 0.5 for p in wrong_probs) / max(1, len(wrong_probs)), 4),
        "answer_prob_right": {k: mean_prob(k, 0) for k in kinds},
        "answer_prob_wrong": {k: mean_prob(k, 1) for k in kinds},
        # flat {layer: value} maps (one table row each in `ghost-lens toy info`)
        **{f"sae_{m}": {str(layer): q[m] for layer, q in quality.items()} for m in ("fvu", "l0", "alive")},
        "versions": {p: version(p) for p in ("torch", "transformer-lens", "sae-lens")},
        "config": to_dict(cfg),
    }
