"""Built-in SAE bundles: trained here on first use, cached per user, loaded in a second afterwards.

``smollm2-135m-res`` is the default SAE source of ``--model smollm2-135m`` (SmolLM2-135M-Instruct, 30 layers,
d_model 576), as ``toy-facts-res`` is of ``toy-facts`` (:data:`ghost_lens.saes.sources.BUILTIN_RELEASES`). No
SAELens release covers SmolLM2-135M, so ghost-lens trains one, with SAELens, from the model's own writing:

1. **Text.** The model answers :func:`~ghost_lens.saes.corpus_prompts.corpus_prompts` (a few hundred varied
   instruct prompts: stories, explanations, lists, poems, everyday questions; none about capitals, currencies,
   languages or chemical elements, the world-facts benchmark's questions) in its own chat format
   (:func:`ghost_lens.data.world_facts.build_prompt`, the format the benchmark uses), sampling at temperature 0.9,
   top-p 0.95 (:func:`ghost_lens.generate.generate`). Each chat (prompt + answer + end of turn) and each bare
   prompt is a document; the last prompts' documents are held out for quality.
2. **SAEs.** One TopK SAE per tracked layer, all trained together by SAELens's ``MultiSAETrainingRunner`` from ONE
   model forward per batch (:func:`ghost_lens.saes.training.train_saes` with :meth:`BundleSpec.training_config`), with SAELens's activation normalisation
   (``expected_average_only_in``) and the first position of every row left out (``seqpos_slice=(1, None)``: its
   residual norm is many times the others').
3. **Quality** per layer on the held-out documents (FVU, L0, dead fraction, CE loss recovered; first position
   excluded) is saved as ``quality.json`` beside each SAE and summarised in ``info.json``.

The choice (:data:`SMOLLM2_RES`), for a first-use build within ~15 minutes on 2 idle CPU cores, where the trunk
runs ~770 tokens/s and ten 2x-wide TopK SAEs' training steps cost about as much as the 30-layer forward per token:
every third layer (2, 5, ..., 29: ten SAEs, so tracks still cross the whole depth), width 2 x 576 = 1152, k = 32,
250k training tokens in batches of 1024 (~240 Adam steps per SAE, lr 2e-3, linear decay over the last third), on
the model's answers to 192 prompts (up to 64 new tokens each, generated 64 prompts a batch): 20k unique training
tokens, so ~12 epochs. The model runs over them once: the later epochs replay the first one's activations from
memory (446 MB; :func:`ghost_lens.saes.runners.train_saes_multi`, ``replay_mb``), which gives the same SAEs, bit
for bit, as running it every epoch, in 40% of the time. Measured on one core with the other busy: generation 354 s,
training + quality 675 s (1690 s without the replay). An earlier try with 300k tokens, no normalisation and the first
position included reached FVU 0.34-0.42 in the middle layers; normalising and dropping the first position are what
this spec changes. The quality a build reached is in its ``info.json`` (``quality``, per layer) and is printed by
``ghost-lens saes eval --model smollm2-135m``.

Cache: ``$GHOST_LENS_CACHE`` (else ``~/.cache/ghost-lens``) ``/<release>/<hash of the spec>/`` holding
``saes/blocks.{L}.hook_resid_post/`` (SAELens folders with ``quality.json``), ``corpus.jsonl`` (the training text)
and ``info.json``. A build runs under an exclusive lock (:func:`ghost_lens.io.exclusive_lock`) in a temporary
sibling folder that is renamed into place when complete (:func:`ghost_lens.io.atomic_dir`): a second process waits
and then uses the first one's result, and an interrupted build leaves nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ghost_lens.errors import SAEError

if TYPE_CHECKING:
    from rich.progress import Progress
    from transformer_lens import HookedTransformer

    from ghost_lens.saes.config import SAETrainingConfig

logger = logging.getLogger(__name__)

BUNDLE_FORMAT = 1
"""Bumped whenever the build changes what a given spec produces (it is part of the cache hash)."""
SAES_DIR, INFO_FILE, CORPUS_FILE = "saes", "info.json", "corpus.jsonl"


@dataclass(frozen=True)
class BundleSpec:
    """Everything a built-in bundle's build depends on (hashed into its cache folder name)."""

    release: str
    """The bundle's name, as ``--sae-release`` takes it."""
    model: str
    """The ``--model`` name it is built for."""
    n_layers: int
    """The model's depth and width, checked before building."""
    d_model: int
    layers: tuple[int, ...]
    """Blocks with an SAE (``blocks.{L}.hook_{hook}``)."""
    hook: str = "resid_post"
    architecture: str = "topk"
    expansion: int = 2
    """d_sae = expansion x d_model."""
    k: int = 32
    """Active features per token (TopK)."""
    training_tokens: int = 250_000
    """Activation tokens every SAE is trained on (all layers see the same ones, from one forward per batch)."""
    train_batch_size_tokens: int = 1024
    lr: float = 2e-3
    lr_decay_fraction: float = 1 / 3
    """Share of the steps over which the learning rate decays linearly to a tenth, at the end."""
    context_size: int = 128
    n_prompts: int = 192
    """Prompts the model answers (:func:`~ghost_lens.saes.corpus_prompts.corpus_prompts`)."""
    held_out_fraction: float = 0.08
    """Share of the prompts whose documents are held out for quality."""
    max_new_tokens: int = 64
    temperature: float = 0.9
    top_p: float = 0.95
    generation_batch_size: int = 64
    ce_sequences: int = 24
    """Held-out rows the CE loss recovered is measured on (it costs two partial forwards per SAE and row batch)."""
    seed: int = 0

    def training_config(self) -> SAETrainingConfig:
        """The :class:`~ghost_lens.saes.config.SAETrainingConfig` this spec trains its SAEs with (held-out rows
        are the held-out prompts' documents; the first position of every row is left out)."""
        from ghost_lens.saes.config import SAETrainingConfig

        steps = self.training_tokens // self.train_batch_size_tokens
        return SAETrainingConfig(
            layers=list(self.layers), hook=self.hook, architecture=self.architecture, expansion=self.expansion,
            training_tokens=self.training_tokens, context_size=self.context_size, k=self.k, lr=self.lr,
            train_batch_size_tokens=self.train_batch_size_tokens, lr_decay_steps=int(steps * self.lr_decay_fraction),
            seed=self.seed, skip_first=True, ce_sequences=self.ce_sequences,
        )


SMOLLM2_RES = BundleSpec(
    release="smollm2-135m-res",
    model="smollm2-135m",
    n_layers=30,
    d_model=576,
    layers=tuple(range(2, 30, 3)),
)
SPECS: dict[str, BundleSpec] = {SMOLLM2_RES.release: SMOLLM2_RES}


def spec_hash(spec: BundleSpec) -> str:
    blob = json.dumps({"format": BUNDLE_FORMAT, **dataclasses.asdict(spec)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def bundle_path(spec: BundleSpec, cache_dir: str | Path | None = None) -> Path:
    """``<cache>/<release>/<spec hash>`` (the cache root of :func:`ghost_lens.toy.world.cache_root`)."""
    from ghost_lens.toy.world import cache_root

    return cache_root(cache_dir) / spec.release / spec_hash(spec)


def is_built(path: Path) -> bool:
    return (path / INFO_FILE).is_file() and (path / SAES_DIR).is_dir()


def get_builtin_bundle(
    release: str,
    model: HookedTransformer | None = None,
    *,
    force: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """The folder of SAELens SAEs of a built-in bundle: from the cache, or built first (``force`` rebuilds).

    ``model`` is the model the bundle is for (loaded by name when ``None``); building takes minutes (see the
    module docstring), loading a built bundle a second.
    """
    from ghost_lens.io import atomic_dir, clean_stale_temps, exclusive_lock

    if release not in SPECS:
        raise SAEError(f"no built-in SAE bundle {release!r} (built-in: {', '.join(SPECS)})")
    spec = SPECS[release]
    final = bundle_path(spec, cache_dir)
    if is_built(final) and not force:
        logger.info("loading the %s SAE bundle from %s", release, final)
        return final / SAES_DIR
    with exclusive_lock(final.parent / f"{final.name}.lock", f"the {release} SAE bundle build", timeout=None):
        clean_stale_temps(final)
        if is_built(final) and not force:  # another process built it while this one waited for the lock
            logger.info("another process built the %s SAE bundle; using it", release)
            return final / SAES_DIR
        if model is None:
            from ghost_lens.model_loader import load_model

            model = load_model(spec.model)
        with atomic_dir(final) as tmp:
            build_bundle(spec, model, tmp, progress=progress)
    logger.info("%s SAE bundle built in %s", release, final)
    return final / SAES_DIR


def training_documents(
    model: HookedTransformer, spec: BundleSpec, progress: Any = None
) -> tuple[list[dict[str, Any]], int]:
    """The model's answers to the corpus prompts as documents, and how many prompts' documents are held out.

    Each row: ``prompt`` (the instruct prompt), ``text`` (the chat: formatted prompt, sampled answer, end of turn)
    and ``held_out``. ``progress(done, total)`` follows the generation.
    """
    from ghost_lens.data.world_facts import build_prompt
    from ghost_lens.generate import generate
    from ghost_lens.saes.corpus_prompts import corpus_prompts

    prompts = corpus_prompts(spec.n_prompts, seed=spec.seed)
    formatted = [build_prompt(p, model) for p in prompts]
    answers = generate(
        model, formatted, max_new_tokens=spec.max_new_tokens, batch_size=spec.generation_batch_size,
        temperature=spec.temperature, top_p=spec.top_p, seed=spec.seed, stop=(), progress=progress,
    )
    end = getattr(model.tokenizer, "eos_token", None) or ""
    n_held = max(1, round(len(prompts) * spec.held_out_fraction))
    first_held = len(prompts) - n_held
    docs = [
        {"prompt": p, "text": f"{f}{a}{end}\n", "held_out": i >= first_held}
        for i, (p, f, a) in enumerate(zip(prompts, formatted, answers, strict=True))
    ]
    return docs, n_held


def _doc_texts(docs: list[dict[str, Any]], held_out: bool) -> list[str]:
    """Each chat, then its bare prompt (a line of its own)."""
    out: list[str] = []
    for d in docs:
        if d["held_out"] == held_out:
            out += [d["text"], d["prompt"] + "\n"]
    return out


def build_bundle(spec: BundleSpec, model: HookedTransformer, out: Path, *, progress: bool | Progress = True) -> dict:
    """Write the bundle of ``spec`` for ``model`` into the empty folder ``out``; returns its ``info.json``.

    1. The model writes its training text (:func:`training_documents`), saved as the corpus.
    2. The text is tokenized into training and held-out rows; one SAE per layer is trained and its quality measured
       (:func:`~ghost_lens.saes.training.train_saes`).
    3. ``info.json``: the spec, the corpus sizes, the timings, the quality and the versions.
    """
    from ghost_lens.saes.datasets import tokenize_documents
    from ghost_lens.saes.training import train_saes

    if (model.cfg.n_layers, model.cfg.d_model) != (spec.n_layers, spec.d_model):
        raise SAEError(
            f"{spec.release} is built for {spec.model} ({spec.n_layers} layers, d_model {spec.d_model}); the model "
            f"has {model.cfg.n_layers} layers and d_model {model.cfg.d_model}"
        )
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    bar, owned = _progress_bar(progress)
    with bar if owned else contextlib.nullcontext():
        logger.info("building the %s SAE bundle (first use; see ghost_lens.saes.builtin)", spec.release)
        task = bar.add_task(f"{spec.release}: the model writes its training text", total=spec.n_prompts)
        docs, n_held = training_documents(
            model, spec, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
        times["generate_s"] = round(time.perf_counter() - t_start, 1)
        with (out / CORPUS_FILE).open("w", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps(d) + "\n")
        train = tokenize_documents(model, _doc_texts(docs, False), spec.context_size, source="training text",
                                   separate=False)
        held = tokenize_documents(model, _doc_texts(docs, True), spec.context_size, source="held-out text",
                                  separate=False)
        t0 = time.perf_counter()
        train_saes(
            model, train, out / SAES_DIR, spec.training_config(), held_out=held, progress=bar, model_name=spec.model,
            extra_quality={"bundle": spec.release, "corpus": "the model's own answers to varied instruct prompts"},
        )
        times["train_and_quality_s"] = round(time.perf_counter() - t0, 1)
    info = _bundle_info(spec, out, len(docs), n_held, train, held, t_start, times)
    (out / INFO_FILE).write_text(json.dumps(info, indent=1))
    return info


def _progress_bar(progress: bool | Progress) -> tuple[Progress, bool]:
    """The caller's ``Progress``, or one of our own (disabled for ``False``) and ``True``: we open and close it."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if isinstance(progress, Progress):
        return progress, False
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), disable=progress is False), True


def _bundle_info(
    spec: BundleSpec, out: Path, n_prompts: int, n_held: int, train: Any, held: Any, t_start: float,
    times: dict[str, float],
) -> dict[str, Any]:
    """The bundle's ``info.json`` (the quality read back from each SAE's ``quality.json``)."""
    from ghost_lens.hooks import hook_name
    from ghost_lens.saes.quality import load_quality

    quality = {str(L): load_quality(out / SAES_DIR / hook_name(L, spec.hook)) for L in spec.layers}
    return {
        "release": spec.release,
        "format": BUNDLE_FORMAT,
        "hash": spec_hash(spec),
        "spec": dataclasses.asdict(spec),
        "corpus": {
            "prompts": n_prompts,
            "held_out_prompts": n_held,
            "train_rows": int(train.shape[0]),
            "held_out_rows": int(held.shape[0]),
            "context_size": spec.context_size,
            "unique_training_tokens": int(train.numel()),
        },
        "build_s": round(time.perf_counter() - t_start, 1),
        "times": times,
        "quality": quality,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": _versions(),
    }


def load_info(release: str, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """``info.json`` of a built bundle, or ``None`` when it has not been built."""
    path = bundle_path(SPECS[release], cache_dir) / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("torch", "transformer-lens", "sae-lens"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "?"
    return out

