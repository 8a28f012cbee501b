"""Train SAEs on hooks of any HookedTransformer through SAELens's training runners.

Two entry points, both SAELens end to end (ghost-lens writes no training loop):

- :func:`train_sae`: one SAE on one hook with ``LanguageModelSAETrainingRunner`` (one model forward per batch for
  this SAE; the toy world trains its per-layer SAEs this way);
- :func:`train_saes_multi`: one SAE per hook, all trained together by ``MultiSAETrainingRunner`` from ONE model
  forward per batch whatever the number of hooks (each SAE keeps its own optimizer, schedule and activation
  scaler inside SAELens). Over more than one epoch of the rows, the model runs over them once: the runner's
  activation store replays the first epoch's filtered activations for the later ones
  (:func:`_replay_later_epochs`, up to ``replay_mb``), the stream SAELens's mixing buffer and trainer receive is
  unchanged, and so are the SAEs.

Steps (both; every setting from one :class:`~ghost_lens.saes.config.SAETrainingConfig`):
1. read each hook's width from one short forward (``d_in``; a per-head hook is flattened, as SAELens does);
2. build the runner config (no W&B, no checkpoints, no output folder, quiet) whose activation buffer holds at least
   two training batches (SAELens raises "Buffer size must be greater than or equal to batch size" otherwise);
3. run the runner with the model and the token tensor injected (``override_model`` / ``override_dataset``), with
   SAELens's tqdm bars routed to ``progress`` (or silenced) and the signal handlers SAELens installs restored after
   it (its SIGINT handler becomes a ``KeyboardInterrupt`` again);
4. hand back inference ``SAE``s: each ``TrainingSAE`` saved with ``save_inference_model`` and re-read with
   ``SAE.load_from_disk``, exactly what a saved SAE folder gives.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

from ghost_lens.errors import SAEError
from ghost_lens.saes.config import SAETrainingConfig

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as ``progress(tokens_done, tokens_total)`` while SAEs train."""


class _ProgressBar:
    """Stands in for SAELens's tqdm bars: forwards ``update`` to a ``progress`` callback (or drops it)."""

    def __init__(self, iterable: Any = None, total: int | None = None, initial: int = 0, callback: Progress | None = None,
                 **_: Any) -> None:
        self.iterable, self.total, self.n, self.callback = iterable, total, initial, callback

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable if self.iterable is not None else ())

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.callback is not None and self.total:
            self.callback(min(self.n, self.total), self.total)

    def set_description(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        if self.callback is not None and self.total:
            self.callback(self.total, self.total)


@contextlib.contextmanager
def _quiet_sae_lens(progress: Progress | None) -> Iterator[None]:
    """Swap the tqdm used by SAELens's trainers and scaler, mute its chatter, and restore the signal handlers.

    SAELens's runners install SIGINT/SIGTERM handlers that raise its ``InterruptedException`` and never put the old
    ones back; here they are restored afterwards and the exception becomes a ``KeyboardInterrupt`` again.
    """
    from sae_lens.training import activation_scaler, multi_sae_trainer, sae_trainer
    from sae_lens.training._interruption import InterruptedException

    saved = sae_trainer.tqdm, multi_sae_trainer.tqdm, activation_scaler.tqdm
    sae_logger = logging.getLogger("sae_lens")
    level = sae_logger.level
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    sae_trainer.tqdm = lambda *a, **k: _ProgressBar(*a, callback=progress, **k)  # type: ignore[assignment]
    multi_sae_trainer.tqdm = lambda *a, **k: _ProgressBar(*a, **k)  # type: ignore[assignment]  # see _counted
    activation_scaler.tqdm = lambda *a, **k: _ProgressBar(*a, **k)  # type: ignore[assignment]
    sae_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except InterruptedException:
        raise KeyboardInterrupt from None
    finally:
        sae_trainer.tqdm, multi_sae_trainer.tqdm, activation_scaler.tqdm = saved
        sae_logger.setLevel(level)
        for sig, handler in handlers.items():
            if handler is not None:
                with contextlib.suppress(ValueError):  # not the main thread: SAELens could not install its own
                    signal.signal(sig, handler)


def hook_widths(model: Any, hook_names: Sequence[str], tokens: torch.Tensor) -> dict[str, int]:
    """Width of each hook's activation (heads flattened), read from one forward on two short rows."""
    missing = [h for h in hook_names if h not in model.hook_dict]
    if missing:
        raise SAEError(f"the model has no hook {missing[0]!r}")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[:2, :4], names_filter=list(hook_names), prepend_bos=False)
    return {h: int(math.prod(cache[h].shape[2:])) for h in hook_names}


def hook_width(model: Any, hook_name: str, tokens: torch.Tensor) -> int:
    """Width of ``hook_name``'s activation (heads flattened), read from a forward on two short rows."""
    return hook_widths(model, [hook_name], tokens)[hook_name]


def _sae_config(cfg: SAETrainingConfig, d_in: int) -> Any:
    from sae_lens import JumpReLUTrainingSAEConfig, StandardTrainingSAEConfig, TopKTrainingSAEConfig

    d_sae = cfg.expansion * d_in
    common = {"d_in": d_in, "d_sae": d_sae, "normalize_activations": "expected_average_only_in"}
    if cfg.architecture == "topk":
        return TopKTrainingSAEConfig(k=min(cfg.k, d_sae), **common)
    if cfg.architecture == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=cfg.l1_coefficient, **common)
    if cfg.architecture == "jumprelu":
        return JumpReLUTrainingSAEConfig(l0_coefficient=cfg.l1_coefficient, **common)
    raise SAEError(f"unknown SAE architecture {cfg.architecture!r}: use standard, topk or jumprelu")


def _token_dataset(tokens: torch.Tensor, context_size: int) -> Any:
    """The token rows as an iterable ``datasets`` dataset (SAELens then reads plain lists, ~10x faster per row)."""
    import datasets

    rows = tokens[:, :context_size].to(torch.int64).tolist()
    return datasets.Dataset.from_dict({"input_ids": rows}).to_iterable_dataset()


def _row_length(tokens: torch.Tensor, cfg: SAETrainingConfig) -> int:
    """Tokens per training row: the rows' own length, cut to ``cfg.context_size`` when longer."""
    if tokens.ndim != 2 or tokens.shape[0] < 1:
        raise SAEError(f"SAE training tokens must be [n_seq, ctx], got shape {tuple(tokens.shape)}")
    return min(cfg.context_size, int(tokens.shape[1]))


def _schedule(cfg: SAETrainingConfig, batch_tokens: int) -> tuple[int, int]:
    """``(warm-up steps, decay steps)`` of the learning rate for ``cfg.training_tokens`` in ``batch_tokens`` steps."""
    steps = max(1, cfg.training_tokens // batch_tokens)
    warm_up = cfg.lr_warm_up_steps if cfg.lr_warm_up_steps is not None else min(50, max(1, steps // 10))
    return warm_up, min(cfg.lr_decay_steps, max(0, steps - warm_up))


def _device(cfg: SAETrainingConfig, model: Any) -> str:
    return cfg.device or str(getattr(model.cfg, "device", None) or "cpu")


def _inference_sae(trained: Any, hook_name: str, model_name: str, device: str) -> Any:
    from sae_lens import SAE

    with tempfile.TemporaryDirectory(prefix="ghost-lens-sae-") as tmp:
        trained.save_inference_model(tmp)
        sae = SAE.load_from_disk(tmp, device=device)
    sae.cfg.metadata.hook_name = hook_name
    sae.cfg.metadata.model_name = model_name
    return sae.eval()


def train_sae(
    model: Any,
    hook_name: str,
    tokens: torch.Tensor,
    cfg: SAETrainingConfig | None = None,
    *,
    progress: Progress | None = None,
    model_name: str | None = None,
) -> Any:
    """Train one SAE of width ``cfg.expansion x d_in`` on ``hook_name`` of ``model`` over rows of ``tokens``.

    ``tokens`` is ``[n_seq, ctx]`` int64, each row a complete model input (with BOS if the model wants one), cut to
    ``cfg.context_size`` when longer. Every setting comes from ``cfg`` (:class:`SAETrainingConfig`; its ``layers``,
    ``hook``, held-out and quality fields are those of :func:`ghost_lens.saes.training.train_saes` and unused here).
    Returns an inference ``sae_lens.SAE`` whose ``cfg.metadata`` names the hook and ``model_name`` (default: the
    model's own name).
    """
    from sae_lens import LanguageModelSAETrainingRunner

    cfg = cfg or SAETrainingConfig()
    context_size = _row_length(tokens, cfg)
    d_in = hook_width(model, hook_name, tokens)
    device = _device(cfg, model)
    runner_cfg = _runner_config(cfg, hook_name, d_in, context_size, int(tokens.shape[0]),
                                model_name or getattr(model.cfg, "model_name", None) or "custom", device)
    dataset = _token_dataset(tokens, context_size)
    logger.info("training a %s SAE (d_sae %d) on %s for %d tokens", cfg.architecture, cfg.expansion * d_in,
                hook_name, cfg.training_tokens)
    was_training = model.training
    with torch.random.fork_rng(devices=[]), _quiet_sae_lens(progress):
        torch.manual_seed(cfg.seed)  # SAE initialisation and the activation buffer's shuffling
        runner = LanguageModelSAETrainingRunner(runner_cfg, override_model=model, override_dataset=dataset)
        trained = runner.run()
    model.train(was_training)
    return _inference_sae(trained, hook_name, runner_cfg.model_name, device)


def _shared_runner_kwargs(
    cfg: SAETrainingConfig, context_size: int, training_context: int, n_rows: int, batch_tokens: int, model_name: str,
    device: str,
) -> dict[str, Any]:
    """The settings both SAELens runner configs take alike: the injected token dataset (rows of ``context_size``
    tokens, ``training_context`` of them trained on), ~4k tokens per model forward, the learning-rate schedule,
    no logging, checkpoints or output files (ghost-lens saves the SAEs itself)."""
    from sae_lens import LoggingConfig

    warm_up, decay = _schedule(cfg, batch_tokens)
    return dict(
        model_name=model_name,
        dataset_path="ghost-lens-tokens",
        streaming=False,
        context_size=context_size,
        training_tokens=cfg.training_tokens,
        train_batch_size_tokens=batch_tokens,
        store_batch_size_prompts=max(1, min(256, 4096 // context_size, n_rows)),
        n_batches_in_buffer=max(4, math.ceil(2 * batch_tokens / training_context)),
        n_batches_for_norm_estimate=cfg.n_batches_for_norm_estimate,
        n_eval_batches=1,
        lr=cfg.lr,
        lr_warm_up_steps=warm_up,
        lr_decay_steps=decay,
        seed=cfg.seed,
        device=device,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        exclude_special_tokens=list(cfg.exclude_token_ids) if cfg.exclude_token_ids else False,
        model_from_pretrained_kwargs={},  # the model is injected; SAELens's default would warn on every load
    )


def _runner_config(
    cfg: SAETrainingConfig, hook_name: str, d_in: int, context_size: int, n_rows: int, model_name: str, device: str
) -> Any:
    """SAELens's ``LanguageModelSAERunnerConfig`` for one SAE on ``hook_name`` (rows of ``context_size`` tokens,
    the model and the dataset injected)."""
    from sae_lens import LanguageModelSAERunnerConfig

    batch_tokens = min(cfg.train_batch_size_tokens, cfg.training_tokens)
    return LanguageModelSAERunnerConfig(
        sae=_sae_config(cfg, d_in),
        hook_name=hook_name,
        is_dataset_tokenized=True,
        verbose=False,
        **_shared_runner_kwargs(cfg, context_size, context_size, n_rows, batch_tokens, model_name, device),
    )


def _counted(loader: Iterator[Mapping[str, torch.Tensor]], n_skip: int, batch_tokens: int, total: int,
             progress: Progress) -> Iterator[Mapping[str, torch.Tensor]]:
    """Pass SAELens's multi-hook batches through, reporting tokens trained on (after the norm-estimate batches).

    SAELens's own multi-SAE bar moves only every 100 steps; counting the batches it draws is exact.
    """
    for i, batch in enumerate(loader):
        if i >= n_skip:
            progress(min(total, (i - n_skip + 1) * batch_tokens), total)
        yield batch


def _replay_later_epochs(store: Any, budget_bytes: int) -> None:
    """Make ``store`` (SAELens's multi-hook ``ActivationsStore``) run the model over the training rows once.

    The store's producer runs one model forward per batch of rows and filters each batch's activations (first
    positions, special tokens); at the end of the rows it starts the next epoch from the first row, so every epoch
    yields the same batches in the same order (the rows are a non-streamed dataset; the rows left over after the
    last full batch are dropped at every epoch's end). The replacement records the first epoch's filtered batches
    and yields them again, in the same order, for the later epochs, without the model: SAELens's mixing buffer
    downstream receives the same stream, so the SAEs are the same. When the first epoch's activations pass
    ``budget_bytes`` the model runs every epoch, as before. Where SAELens lacks the two store methods this relies
    on, nothing changes (a logged note)."""
    plain = getattr(store, "_iterate_filtered_multi_hook_activations", None)
    one_batch = getattr(store, "_get_filtered_multi_hook_llm_batch", None)
    if plain is None or one_batch is None:
        logger.info("this SAELens's activation store has no per-batch producer; the model runs every epoch")
        return

    def producer() -> Iterator[dict[str, torch.Tensor]]:
        recorded: list[dict[str, torch.Tensor]] | None = []
        used = 0
        while True:
            try:
                batch = one_batch(raise_on_epoch_end=True)
            except StopIteration:
                break
            if recorded is not None:
                used += sum(t.numel() * t.element_size() for t in batch.values())
                if used > budget_bytes:
                    logger.info("one epoch of activations passes replay_mb (%d MB); the model runs every epoch",
                                budget_bytes >> 20)
                    recorded = None
                else:
                    recorded.append(batch)
            yield batch
        if not recorded:  # over the budget, or no full batch (the store's own producer then says so)
            yield from plain()
            return
        logger.info("replaying the first epoch's activations (%d batches, %.0f MB) for the later epochs",
                    len(recorded), used / 2**20)
        while True:
            yield from recorded

    store._iterate_filtered_multi_hook_activations = producer


def train_saes_multi(
    model: Any,
    hook_names: Sequence[str],
    tokens: torch.Tensor,
    cfg: SAETrainingConfig | None = None,
    *,
    progress: Progress | None = None,
    model_name: str | None = None,
) -> dict[str, Any]:
    """Train one SAE per hook of ``hook_names`` together with SAELens's ``MultiSAETrainingRunner``.

    One model forward per batch of token rows feeds every SAE (the per-hook cost is only the SAE's own step), and
    only in the first epoch when ``cfg.replay_mb`` holds an epoch's activations (:func:`_replay_later_epochs`).
    Settings as :func:`train_sae`, and ``cfg.skip_first`` leaves the first position of each row out of training
    (SAELens ``seqpos_slice=(1, None)``; its residual norm is many times the others' in most LMs). Returns hook
    name -> inference ``sae_lens.SAE``.
    """
    from sae_lens import MultiSAETrainingRunner

    cfg = cfg or SAETrainingConfig()
    names = list(dict.fromkeys(hook_names))
    if not names:
        raise SAEError("no hooks to train SAEs on")
    context_size = _row_length(tokens, cfg)
    widths = hook_widths(model, names, tokens)
    device = _device(cfg, model)
    batch_tokens = min(cfg.train_batch_size_tokens, cfg.training_tokens)
    model_name = model_name or getattr(model.cfg, "model_name", None) or "custom"
    runner_cfg = _multi_runner_config(cfg, widths, names, context_size, int(tokens.shape[0]), batch_tokens,
                                      model_name, device)
    dataset = _token_dataset(tokens, context_size)
    logger.info("training %d %s SAEs (x%d) on %s for %d tokens from one forward per batch", len(names),
                cfg.architecture, cfg.expansion, ", ".join(names), cfg.training_tokens)
    was_training = model.training
    with torch.random.fork_rng(devices=[]), _quiet_sae_lens(None):
        torch.manual_seed(cfg.seed)  # SAE initialisation and the activation buffer's shuffling
        runner = MultiSAETrainingRunner(runner_cfg, override_model=model, override_dataset=dataset)
        store = runner.activations_store
        if cfg.replay_mb > 0 and cfg.training_tokens > batch_tokens:
            _replay_later_epochs(store, cfg.replay_mb * 2**20)
        if progress is not None:
            loader = store.get_multi_hook_data_loader
            store.get_multi_hook_data_loader = lambda: _counted(  # type: ignore[method-assign]
                loader(), cfg.n_batches_for_norm_estimate, batch_tokens, cfg.training_tokens, progress
            )
        trained = runner.run()
    model.train(was_training)
    return {h: _inference_sae(trained[h], h, model_name, device) for h in names}


def _multi_runner_config(
    cfg: SAETrainingConfig, widths: Mapping[str, int], names: list[str], context_size: int, n_rows: int,
    batch_tokens: int, model_name: str, device: str,
) -> Any:
    """SAELens's ``MultiSAETrainingRunnerConfig`` for one SAE per hook of ``names`` (the first position of each
    row left out with ``cfg.skip_first``; the model and the dataset injected)."""
    from sae_lens import MultiSAETrainingRunnerConfig

    seqpos_slice = (1, None) if cfg.skip_first else (None,)
    training_context = len(range(context_size)[slice(*seqpos_slice)])
    if training_context < 1:
        raise SAEError(f"skip_first leaves no position of a {context_size}-token row")
    return MultiSAETrainingRunnerConfig(
        saes={h: _sae_config(cfg, widths[h]) for h in names},
        hook_names={h: h for h in names},
        seqpos_slice=seqpos_slice,
        **_shared_runner_kwargs(cfg, context_size, training_context, n_rows, batch_tokens, model_name, device),
    )
