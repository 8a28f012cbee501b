"""Turn (prompt, answer) text into one token sequence whose answer span is exact, and truncate it from the left.

The joining rule (GPT-2's leading-space convention): the text the model reads is ``prompt + sep + answer``, where
``sep`` is one space unless the prompt ends or the answer starts with whitespace (then ``""``), so ``"The capital
of France is"`` + ``"Paris"`` reads ``"The capital of France is Paris"`` and the answer's first token is
``" Paris"``, as the model would have produced it.

Tokenization, with ``model.to_tokens`` (which handles BOS for every tokenizer TransformerLens supports):

1. tokenize the prompt alone (with BOS when asked) and the joined text (same BOS setting);
2. if the prompt's tokens are a prefix of the joined text's tokens, the answer is the rest of the joined tokens:
   the model sees exactly the tokenization of the whole text (this also covers SentencePiece tokenizers, whose
   leading-space handling differs when a fragment is tokenized alone);
3. otherwise (a token merges across the boundary, e.g. a prompt ending in a space), the answer is tokenized on its
   own (``sep + answer``, no BOS) and appended to the prompt's tokens.

Either way ``tokens[answer_start:]`` are exactly the answer's tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from jaxtyping import Int
from torch import Tensor

from ghost_lens.errors import DatasetError, ModelError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def answer_separator(prompt: str, answer: str) -> str:
    """``" "`` unless the prompt is empty, ends with whitespace, or the answer starts with whitespace."""
    if not prompt or prompt[-1].isspace() or not answer or answer[0].isspace():
        return ""
    return " "


def _to_tokens(model: HookedTransformer, text: str, prepend_bos: bool) -> Int[Tensor, " pos"]:
    return model.to_tokens(text, prepend_bos=prepend_bos, move_to_device=False, truncate=False)[0]


def tokenize_example(
    model: HookedTransformer, prompt: str, answer: str, prepend_bos: bool = True
) -> tuple[Int[Tensor, " pos"], int]:
    """Tokens of ``prompt + sep + answer`` (BOS first when ``prepend_bos``) and the index of the first answer token.

    Raises :class:`DatasetError` when the answer has no tokens or nothing precedes it (no prompt token to
    predict it from), :class:`ModelError` when the model has no tokenizer.
    """
    if model.tokenizer is None:
        raise ModelError("the model has no tokenizer: pass token ids to capture_tokens instead")
    sep = answer_separator(prompt, answer)
    prompt_toks = _to_tokens(model, prompt, prepend_bos) if prompt or prepend_bos else torch.zeros(0, dtype=torch.long)
    joint = _to_tokens(model, prompt + sep + answer, prepend_bos)
    n = prompt_toks.numel()
    if joint.numel() > n and torch.equal(joint[:n], prompt_toks):
        tokens = joint
    else:
        tokens = torch.cat([prompt_toks, _to_tokens(model, sep + answer, False)])
    if tokens.numel() == n:
        raise DatasetError(f"answer {answer!r} has no tokens")
    if n == 0:
        raise DatasetError(f"prompt {prompt!r} has no tokens (and no BOS): nothing predicts the answer's first token")
    return tokens.to(torch.long), n


def truncate_left(
    tokens: Int[Tensor, " pos"], answer_start: int, answer_end: int, max_length: int, keep_first: bool
) -> tuple[Int[Tensor, " pos"], int, int, bool]:
    """Drop tokens from the left until ``len(tokens) <= max_length``, keeping the answer whole.

    ``keep_first`` keeps token 0 (the BOS) and drops the tokens after it instead. At least one token (the BOS
    counts) must remain before the answer, to predict its first token; otherwise raises :class:`DatasetError`.
    Returns ``(tokens, answer_start, answer_end, truncated)`` with the span shifted.
    """
    n_drop = tokens.numel() - max_length
    if n_drop <= 0:
        return tokens, answer_start, answer_end, False
    if answer_start - n_drop < 1:
        raise DatasetError(
            f"the answer ({answer_end - answer_start} tokens) and a token before it do not fit in "
            f"max_length={max_length}{' with BOS' if keep_first else ''}"
        )
    first = 1 if keep_first else 0
    kept = torch.cat([tokens[:first], tokens[first + n_drop :]])
    return kept, answer_start - n_drop, answer_end - n_drop, True
