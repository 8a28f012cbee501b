"""Text corpora for SAE training, tokenized into fixed-length sequences.

:func:`tokenize_corpus` reads documents from

- a ``.txt`` file: one document per non-empty line;
- a ``.jsonl`` file: one JSON object per line with a ``text`` field;
- a local folder or a Hugging Face dataset name: ``datasets.load_dataset(source, split="train", streaming=True)``,
  the ``text`` column (or the first string column);

tokenizes each with the model's tokenizer (no special tokens), then concatenates and chunks them with SAELens's
``concat_and_batch_sequences`` the way SAELens's ``ActivationsStore`` does: BOS opens every sequence and separates
documents. Anything missing, malformed or too short is a one-line :class:`~ghost_lens.errors.DatasetError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from ghost_lens.errors import DatasetError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

TEXT_FIELD = "text"


def _txt_docs(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.strip():
                yield line.rstrip("\n")


def _jsonl_docs(path: Path, text_field: str) -> Iterator[str]:
    with path.open("rb") as f:
        for i, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DatasetError(f"{path}:{i}: not UTF-8 text (byte {exc.start}); save the corpus as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise DatasetError(f"{path}:{i}: not valid JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                raise DatasetError(f"{path}:{i}: expected an object with a string {text_field!r} field")
            if row[text_field].strip():
                yield row[text_field]


def _hub_docs(source: str, text_field: str) -> Iterator[str]:
    import datasets

    try:
        ds = datasets.load_dataset(source, split="train", streaming=True)
    except Exception as exc:  # datasets raises many unrelated types for "cannot load"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DatasetError(
            f"could not load dataset {source!r} (a .txt/.jsonl file, folder or hub dataset): {first}"
        ) from exc
    column = text_field
    features = getattr(ds, "features", None)
    if features is not None and text_field not in features:
        strings = [k for k, v in features.items() if getattr(v, "dtype", None) in ("string", "large_string")]
        if not strings:
            raise DatasetError(
                f"dataset {source!r} has no {text_field!r} column and no text column "
                f"(columns: {', '.join(features)})"
            )
        column = strings[0]
        logger.info("dataset %s: using text column %r", source, column)
    for row in ds:
        text = row.get(column)
        if isinstance(text, str) and text.strip():
            yield text


def iter_documents(source: str | Path, text_field: str = TEXT_FIELD) -> Iterator[str]:
    """The documents of ``source`` (see the module docstring), lazily."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix == ".jsonl":
            return _jsonl_docs(path, text_field)
        if suffix in (".txt", ".text", ""):
            return _txt_docs(path)
        raise DatasetError(f"{path}: unsupported corpus file type {suffix!r} (use .txt or .jsonl)")
    if suffix in (".txt", ".jsonl", ".text"):
        raise DatasetError(f"corpus file not found: {path}")
    return _hub_docs(str(source), text_field)


def tokenize_documents(
    model: HookedTransformer,
    documents: Iterable[str],
    context_size: int,
    max_sequences: int | None = None,
    *,
    source: str = "the documents",
    separate: bool = True,
) -> Int[Tensor, "n_seq ctx"]:
    """Token sequences ``[n_seq, context_size]`` of ``documents`` (strings), in the model's vocabulary.

    Each document is tokenized without special tokens (text such as ``<|im_start|>`` still maps to its special
    token); documents are concatenated, with BOS between them unless ``separate=False`` (chat-formatted documents
    delimit themselves), and cut into rows, each opened by BOS (SAELens's ``concat_and_batch_sequences``).
    ``source`` names the documents in error messages.
    """
    from sae_lens.tokenization_and_batching import concat_and_batch_sequences

    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise DatasetError("the model has no tokenizer, so it cannot read a text corpus: pass token tensors")
    if context_size < 2 or context_size > model.cfg.n_ctx:
        raise DatasetError(
            f"context_size must be in [2, {model.cfg.n_ctx}] (the model's n_ctx), got {context_size}"
        )
    if max_sequences is not None and max_sequences < 1:
        raise DatasetError(f"max_sequences must be >= 1, got {max_sequences}")
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    def token_stream() -> Iterator[Tensor]:
        for doc in documents:
            ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
            if ids:
                yield torch.tensor(ids, dtype=torch.long)

    rows: list[Tensor] = []
    for seq in concat_and_batch_sequences(
        token_stream(), context_size, begin_batch_token_id=bos,
        sequence_separator_token_id=bos if separate else None,
    ):
        rows.append(seq)
        if max_sequences is not None and len(rows) >= max_sequences:
            break
    if not rows:
        raise DatasetError(f"{source}: fewer than {context_size} tokens, nothing to train on")
    tokens = torch.stack(rows)
    logger.info("%s: %d sequences of %d tokens", source, tokens.shape[0], context_size)
    return tokens


def tokenize_corpus(
    model: HookedTransformer,
    source: str | Path,
    context_size: int,
    max_sequences: int | None = None,
    *,
    text_field: str = TEXT_FIELD,
) -> Int[Tensor, "n_seq ctx"]:
    """Token sequences ``[n_seq, context_size]`` of a text corpus, in the model's vocabulary.

    Args:
        model: supplies the tokenizer (``model.tokenizer``) and bounds ``context_size`` by ``cfg.n_ctx``.
        source: ``.txt`` / ``.jsonl`` file, local dataset folder or Hugging Face dataset name.
        context_size: tokens per sequence (BOS included).
        max_sequences: stop after this many sequences (default: the whole corpus).
        text_field: the JSONL field / dataset column holding the text.
    """
    return tokenize_documents(
        model, iter_documents(source, text_field), context_size, max_sequences, source=f"corpus {str(source)!r}"
    )
