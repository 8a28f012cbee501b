"""Models by name: gpt2 through an offline hub cache (TransformerLens's real loader), name errors, coverage."""

from __future__ import annotations

import logging

import pytest
import torch

from ghost_lens.errors import ModelError
from ghost_lens.model_loader import check_coverage, load_model, resolve_model_name, tokenizer_coverage


def test_gpt2_from_offline_cache_matches_hf(offline_hub):
    from transformers import GPT2LMHeadModel

    model = load_model("gpt2")
    assert model.cfg.model_name == "gpt2"
    assert model.cfg.n_layers == offline_hub["n_layers"] and model.cfg.d_model == offline_hub["d_model"]
    hf = GPT2LMHeadModel.from_pretrained(offline_hub["hf_model_dir"]).eval()
    tokens = model.to_tokens(["Paris is the capital of France.", "The quick brown fox"], padding_side="right")
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        theirs = hf(tokens).logits.log_softmax(-1)
    # TransformerLens folds LayerNorm and centres weights: log-probs agree, raw logits differ by a constant
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_alias_resolves_and_loads(offline_hub):
    assert resolve_model_name("gpt2-small") == "gpt2"
    assert load_model("gpt2-small").cfg.d_model == offline_hub["d_model"]


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ModelError, match="unknown model 'gpt2-mediun'.*'gpt2-medium'") as info:
        load_model("gpt2-mediun")
    assert "\n" not in str(info.value)


def test_official_model_missing_from_cache_is_a_model_error(offline_hub):
    with pytest.raises(ModelError, match="could not load model 'gpt2-large'"):
        load_model("gpt2-large")  # official, but not in the offline cache


def word_level_model(tmp_path):
    """A tiny HookedTransformer with a word-level tokenizer (unknown words -> [UNK]), like the toy world's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    words = ["[UNK]", "[BOS]", "alba", "lives", "in", "mora", "the", "city"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="[BOS]")
    fast.save_pretrained(tmp_path)  # an in-memory tokenizer crashes TransformerLens: save and reload
    cfg = HookedTransformerConfig(
        n_layers=1,
        d_model=16,
        n_ctx=16,
        d_head=4,
        n_heads=4,
        d_vocab=len(words),
        act_fn="gelu",
        normalization_type="LN",
        attn_only=True,
        model_name="words",
    )
    return HookedTransformer(cfg, AutoTokenizer.from_pretrained(tmp_path))


def test_coverage_of_a_word_level_vocabulary(tmp_path, caplog):
    model = word_level_model(tmp_path)
    assert tokenizer_coverage(model, ["alba lives in mora", "the city"]) == 0.0
    assert tokenizer_coverage(model, ["alba lives in paris"]) == pytest.approx(0.25)
    with caplog.at_level(logging.WARNING, logger="ghost_lens.model_loader"):
        share = check_coverage(model, ["alba lives in mora the city mora alba lives london"], warn_above=0.05)
    assert share == pytest.approx(0.1)
    assert any("10.0%" in r.getMessage() for r in caplog.records)
    with pytest.raises(ModelError, match="unknown to the tokenizer of 'words'"):
        check_coverage(model, ["What happens if you eat watermelon seeds?"])


def test_byte_level_gpt2_covers_any_text(offline_hub):
    model = load_model("gpt2")
    texts = ["What happens if you eat watermelon seeds?", "Ünïcödé ☃ text <|endoftext|>"]
    assert tokenizer_coverage(model, texts[:1]) == 0.0
    assert check_coverage(model, texts[:1]) == 0.0
