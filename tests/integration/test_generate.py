"""Batched generation: equal to TransformerLens's own one-prompt-at-a-time generate; reproducible sampling; stops."""

from __future__ import annotations

import pytest
import torch

from ghost_lens.generate import _cut, generate
from ghost_lens.model_loader import load_model
from tests.helpers.hub import save_tiny_gpt2
from tests.helpers.models import save_tiny_llama

# different lengths, so a batch needs left padding of 0 to ~8 tokens
PROMPTS = [
    "Paris",
    "The quick brown fox jumps over the lazy",
    "A language model predicts",
    "Sparse autoencoders find features in the residual stream of a",
    "Hallucinations are",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A rotary Llama (grouped-query attention, BOS prepended) and a GPT-2 (learned positions)."""
    root = tmp_path_factory.mktemp("gen-models")
    save_tiny_llama(root / "llama", add_bos=True)
    save_tiny_gpt2(root / "gpt2")
    return {"llama": load_model(str(root / "llama")), "gpt2": load_model(str(root / "gpt2"))}


def tl_greedy(model, prompt: str, max_new_tokens: int) -> str:
    """TransformerLens's generate, one prompt, no padding, no KV cache: the reference."""
    tokens = model.to_tokens(prompt)
    out = model.generate(
        tokens,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        stop_at_eos=False,
        use_past_kv_cache=False,
        verbose=False,
    )
    new = out[0, tokens.shape[1] :].tolist()
    eos = model.tokenizer.eos_token_id
    return model.tokenizer.decode(new[: new.index(eos)] if eos in new else new)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_greedy_equals_one_prompt_at_a_time(models, arch):
    model = models[arch]
    expected = [tl_greedy(model, p, 8) for p in PROMPTS]
    for batch_size in (len(PROMPTS), 2):
        assert generate(model, PROMPTS, max_new_tokens=8, batch_size=batch_size, stop=()) == expected
    assert len(set(expected)) > 1  # the tiny model does not answer everything the same way


def test_sampling_is_reproducible_and_independent_of_batching(models):
    model = models["llama"]
    torch.manual_seed(123)
    global_state = torch.get_rng_state()
    kwargs = dict(max_new_tokens=6, temperature=1.0, top_p=0.9, stop=())
    first = generate(model, PROMPTS, seed=7, batch_size=3, **kwargs)
    assert torch.equal(torch.get_rng_state(), global_state)  # global RNG untouched
    assert generate(model, PROMPTS, seed=7, batch_size=3, **kwargs) == first
    assert generate(model, PROMPTS, seed=7, batch_size=1, **kwargs) == first
    assert generate(model, PROMPTS, seed=8, batch_size=3, **kwargs) != first
    greedy = generate(model, PROMPTS, max_new_tokens=6, stop=())
    assert first != greedy
    # top_p small enough keeps only the most likely token: sampling becomes greedy
    assert generate(model, PROMPTS, seed=7, max_new_tokens=6, temperature=1.0, top_p=1e-6, stop=()) == greedy


def test_stop_strings_and_progress(models):
    model = models["gpt2"]
    full = generate(model, PROMPTS, max_new_tokens=8, stop=())
    # stop at the first character each answer produced: everything before it is returned
    stops = [text[1:3] for text in full if len(text) >= 3]
    assert stops
    calls = []
    cut = generate(
        model,
        PROMPTS,
        max_new_tokens=8,
        stop=tuple(stops),
        batch_size=2,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert cut == [_cut(text, tuple(stops)) for text in full]
    assert calls == [(2, 5), (4, 5), (5, 5)]
    assert generate(model, PROMPTS[:2], max_new_tokens=0) == ["", ""]


def test_cut_takes_the_earliest_stop():
    assert _cut("Tokyo.\nNext", ("\n", ".")) == "Tokyo"
    assert _cut("Tokyo", ("\n",)) == "Tokyo"
    assert _cut("a\nb", ()) == "a\nb"


def test_bad_settings_raise(models):
    with pytest.raises(ValueError, match="bad generation settings"):
        generate(models["gpt2"], PROMPTS, top_p=0.0)
    with pytest.raises(ValueError, match="exceeds n_ctx"):
        generate(models["gpt2"], PROMPTS, max_new_tokens=10_000)
