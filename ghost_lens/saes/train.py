"""Train one SAE on one hook of any HookedTransformer, through SAELens's ``LanguageModelSAETrainingRunner``.

Steps:
1. read the hook's width from one short forward (``d_in``; a per-head hook is flattened, as SAELens does);
2. build a ``LanguageModelSAERunnerConfig`` (no W&B, no checkpoints, no output folder, quiet) whose activation
   buffer holds at least two training batches (SAELens raises "Buffer size must be greater than or equal to batch
   size" otherwise);
3. run the runner with the model and the token tensor injected (``override_model`` / ``override_dataset``), with
   SAELens's tqdm bars routed to ``progress`` (or silenced);
4. hand back an inference ``SAE``: the runner's ``TrainingSAE`` saved with ``save_inference_model`` and re-read with
   ``SAE.load_from_disk``, exactly what a saved SAE folder gives.
"""

from __future__ import annotations

import contextlib
import logging
import math
import tempfile
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ghost_lens.errors import SAEError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as ``progress(tokens_done, tokens_total)`` while an SAE trains."""


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
    """Swap the tqdm used by SAELens's trainer and scaler, and mute its chatter (warnings, INFO logs)."""
    from sae_lens.training import activation_scaler, sae_trainer

    saved = sae_trainer.tqdm, activation_scaler.tqdm
    sae_logger = logging.getLogger("sae_lens")
    level = sae_logger.level
    sae_trainer.tqdm = lambda *a, **k: _ProgressBar(*a, callback=progress, **k)  # type: ignore[assignment]
    activation_scaler.tqdm = lambda *a, **k: _ProgressBar(*a, **k)  # type: ignore[assignment]
    sae_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        sae_trainer.tqdm, activation_scaler.tqdm = saved
        sae_logger.setLevel(level)


def hook_width(model: Any, hook_name: str, tokens: torch.Tensor) -> int:
    """Width of ``hook_name``'s activation (heads flattened), read from a forward on two short rows."""
    if hook_name not in model.hook_dict:
        raise SAEError(f"the model has no hook {hook_name!r}")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens[:2, :4], names_filter=[hook_name], prepend_bos=False)
    act = cache[hook_name]
    return int(math.prod(act.shape[2:]))


def _sae_config(architecture: str, d_in: int, d_sae: int, k: int, l1_coefficient: float) -> Any:
    from sae_lens import JumpReLUTrainingSAEConfig, StandardTrainingSAEConfig, TopKTrainingSAEConfig

    common = {"d_in": d_in, "d_sae": d_sae, "normalize_activations": "expected_average_only_in"}
    if architecture == "topk":
        return TopKTrainingSAEConfig(k=min(k, d_sae), **common)
    if architecture == "standard":
        return StandardTrainingSAEConfig(l1_coefficient=l1_coefficient, **common)
    if architecture == "jumprelu":
        return JumpReLUTrainingSAEConfig(l0_coefficient=l1_coefficient, **common)
    raise SAEError(f"unknown SAE architecture {architecture!r}: use standard, topk or jumprelu")


def train_sae(
    model: Any,
    hook_name: str,
    tokens: torch.Tensor,
    *,
    architecture: str = "topk",
    expansion: int = 4,
    training_tokens: int,
    k: int = 16,
    l1_coefficient: float = 5.0,
    lr: float = 1e-3,
    seed: int = 0,
    context_size: int | None = None,
    device: str = "cpu",
    progress: Progress | None = None,
    train_batch_size_tokens: int = 1024,
    exclude_token_ids: list[int] | None = None,
    model_name: str | None = None,
) -> Any:
    """Train one SAE of width ``expansion x d_in`` on ``hook_name`` of ``model`` over rows of ``tokens``.

    ``tokens`` is ``[n_seq, ctx]`` int64, each row a complete model input (with BOS if the model wants one); rows
    are cut to ``context_size`` (default: ``ctx``). ``l1_coefficient`` is the L1 coefficient of a standard SAE and
    the L0 coefficient of a JumpReLU one; ``k`` applies to TopK. ``exclude_token_ids`` (e.g. padding) are left out
    of training. Returns an inference ``sae_lens.SAE`` whose ``cfg.metadata`` names the hook and the model.
    """
    import datasets
    from sae_lens import SAE, LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig

    if tokens.ndim != 2 or tokens.shape[0] < 1:
        raise SAEError(f"SAE training tokens must be [n_seq, ctx], got shape {tuple(tokens.shape)}")
    context_size = int(context_size or tokens.shape[1])
    if context_size > tokens.shape[1]:
        raise SAEError(f"context_size {context_size} is longer than the token rows ({tokens.shape[1]})")
    d_in = hook_width(model, hook_name, tokens)
    train_batch_size_tokens = min(train_batch_size_tokens, training_tokens)
    store_batch = max(1, min(256, 4096 // context_size, tokens.shape[0]))  # ~4k tokens per model forward
    runner_cfg = LanguageModelSAERunnerConfig(
        sae=_sae_config(architecture, d_in, expansion * d_in, k, l1_coefficient),
        model_name=model_name or getattr(model.cfg, "model_name", None) or "custom",
        hook_name=hook_name,
        dataset_path="ghost-lens-tokens",
        is_dataset_tokenized=True,
        streaming=False,
        context_size=context_size,
        training_tokens=training_tokens,
        train_batch_size_tokens=train_batch_size_tokens,
        store_batch_size_prompts=store_batch,
        n_batches_in_buffer=max(4, math.ceil(2 * train_batch_size_tokens / context_size)),
        n_batches_for_norm_estimate=4,
        n_eval_batches=1,
        lr=lr,
        lr_warm_up_steps=min(50, max(1, training_tokens // train_batch_size_tokens // 10)),
        seed=seed,
        device=device,
        logger=LoggingConfig(log_to_wandb=False),
        checkpoint_path=None,
        output_path=None,
        verbose=False,
        exclude_special_tokens=list(exclude_token_ids) if exclude_token_ids else False,
        model_from_pretrained_kwargs={},  # the model is injected; SAELens's default would warn on every load
    )
    # iterable: SAELens then reads plain lists, ~10x faster per row than a torch-formatted Dataset
    rows = tokens[:, :context_size].to(torch.int64).tolist()
    dataset = datasets.Dataset.from_dict({"input_ids": rows}).to_iterable_dataset()
    logger.info("training a %s SAE (d_sae %d) on %s for %d tokens", architecture, expansion * d_in, hook_name,
                training_tokens)
    was_training = model.training
    with torch.random.fork_rng(devices=[]), _quiet_sae_lens(progress):
        torch.manual_seed(seed)  # SAE initialisation and the activation buffer's shuffling
        runner = LanguageModelSAETrainingRunner(runner_cfg, override_model=model, override_dataset=dataset)
        trained = runner.run()
    model.train(was_training)
    with tempfile.TemporaryDirectory(prefix="ghost-lens-sae-") as tmp:
        trained.save_inference_model(tmp)
        sae = SAE.load_from_disk(tmp, device=device)
    sae.cfg.metadata.hook_name = hook_name
    sae.cfg.metadata.model_name = runner_cfg.model_name
    return sae.eval()
