"""The toy world's word-level tokenizer, in Hugging Face format.

One token per whitespace-separated word (``tokenizers`` ``WordLevel`` + ``WhitespaceSplit``), plus ``[PAD]`` (id 0),
``[UNK]``, ``[BOS]`` and ``[EOS]``. It is always saved with ``save_pretrained`` and re-read with
``AutoTokenizer.from_pretrained``: TransformerLens re-opens a tokenizer from its ``name_or_path`` (to add BOS),
which an in-memory tokenizer lacks. With it attached, ``HookedTransformer.to_tokens(text)`` prepends ``[BOS]``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)


def build_tokenizer(words: Iterable[str], directory: str | Path) -> PreTrainedTokenizerBase:
    """Write a word-level tokenizer over ``words`` to ``directory`` and return it re-loaded from there."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in sorted(set(words)):
        if word in vocab or not word or any(c.isspace() for c in word):
            raise ValueError(f"bad or duplicate vocabulary word {word!r}")
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        padding_side="right", model_max_length=1024,
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(directory))
    logger.info("wrote a %d-word tokenizer to %s", len(vocab), directory)
    return load_tokenizer(directory)


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved in ``directory`` (use this one, never an in-memory object, with TransformerLens)."""
    return AutoTokenizer.from_pretrained(str(directory))
