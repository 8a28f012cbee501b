"""Training corpora (txt, jsonl, dataset folder, hub name) and train_saes end to end on a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch

from ghost_lens.constants import SAE_QUALITY
from ghost_lens.errors import ConfigError, DatasetError, RunFolderError
from ghost_lens.saes import load_bundle, load_quality, tokenize_corpus, train_saes
from tests.helpers import tiny_model

DOCS = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token.",
] * 4


@pytest.fixture
def gpt2(offline_hub):
    from ghost_lens.models import load_model

    return load_model("gpt2")


def test_txt_corpus(gpt2, tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n".join(DOCS) + "\n")
    tokens = tokenize_corpus(gpt2, path, context_size=16)
    bos = gpt2.tokenizer.bos_token_id
    assert tokens.dtype == torch.long and tokens.shape[1] == 16
    assert (tokens[:, 0] == bos).all()  # BOS opens every sequence ...
    n_doc_tokens = sum(len(gpt2.tokenizer(d, add_special_tokens=False)["input_ids"]) for d in DOCS)
    assert tokens.numel() <= n_doc_tokens + len(DOCS) + tokens.shape[0]  # ... and separates documents
    assert (tokens == bos).sum() >= len(DOCS) - 1
    assert tokenize_corpus(gpt2, path, context_size=16, max_sequences=2).shape == (2, 16)


def test_jsonl_and_dataset_folder_agree(gpt2, tmp_path):
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": d, "id": i}) for i, d in enumerate(DOCS)) + "\n")
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text(jsonl.read_text())
    txt = tmp_path / "corpus.txt"
    txt.write_text("\n".join(DOCS))
    from_jsonl = tokenize_corpus(gpt2, jsonl, context_size=12)
    torch.testing.assert_close(from_jsonl, tokenize_corpus(gpt2, txt, context_size=12))
    # a local dataset folder goes through datasets.load_dataset(..., streaming=True), like a hub name
    torch.testing.assert_close(from_jsonl, tokenize_corpus(gpt2, str(folder), context_size=12))


def test_corpus_errors(gpt2, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{oops\n')
    with pytest.raises(DatasetError, match="bad.jsonl:2: not valid JSON"):
        tokenize_corpus(gpt2, bad, context_size=8)
    no_field = tmp_path / "nofield.jsonl"
    no_field.write_text('{"body": "hello"}\n')
    with pytest.raises(DatasetError, match="string 'text' field"):
        tokenize_corpus(gpt2, no_field, context_size=8)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(DatasetError, match="fewer than 8 tokens"):
        tokenize_corpus(gpt2, empty, context_size=8)
    with pytest.raises(DatasetError, match="corpus file not found"):
        tokenize_corpus(gpt2, tmp_path / "missing.txt", context_size=8)
    with pytest.raises(DatasetError, match="could not load dataset 'nobody/no-such-corpus'"):
        tokenize_corpus(gpt2, "nobody/no-such-corpus", context_size=8)
    with pytest.raises(DatasetError, match="context_size must be in \\[2, 64\\]"):
        tokenize_corpus(gpt2, empty, context_size=65)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(model_name="tiny")


def test_train_saes_saves_a_loadable_folder(tiny, tmp_path):
    tokens = torch.randint(0, 50, (60, 16), generator=torch.Generator().manual_seed(0))
    out = tmp_path / "saes"
    bundle = train_saes(
        tiny,
        [0, 1],
        tokens,
        out,
        expansion=4,
        training_tokens=20_000,
        seed=0,
        progress=False,
        train_batch_size_tokens=128,
    )
    assert bundle.layers == [0, 1] and bundle.hook_kind == "resid_post"
    assert bundle.d_sae == {0: 64, 1: 64}
    for layer in (0, 1):
        folder = out / f"blocks.{layer}.hook_resid_post"
        quality = load_quality(folder)
        assert (folder / SAE_QUALITY).is_file() and quality is not None
        assert quality["n_tokens"] == 6 * 16  # the held-out 10% of the rows
        assert quality["fvu"] < 0.5 and quality["l0"] == pytest.approx(16, abs=0.5)  # TopK, k=16
        assert quality["architecture"] == "topk" and quality["training_tokens"] == 20_000

    loaded = load_bundle(tiny, sae_dir=out)
    assert loaded.sae_ids == bundle.sae_ids
    for layer in bundle:
        torch.testing.assert_close(loaded[layer].W_dec, bundle[layer].W_dec)

    with pytest.raises(RunFolderError, match="is not empty"):
        train_saes(tiny, [0], tokens, out, training_tokens=1024, progress=False)
    (out / "keep.txt").write_text("unrelated")
    from rich.progress import Progress

    with Progress(disable=True) as bar:
        again = train_saes(
            tiny,
            [1],
            tokens,
            out,
            training_tokens=2048,
            force=True,
            progress=bar,
            train_batch_size_tokens=128,
            architecture="standard",
        )
    assert again.layers == [1] and (out / "keep.txt").is_file()
    assert not (out / "blocks.0.hook_resid_post").exists()  # earlier SAE folders replaced, other files kept
    assert load_bundle(tiny, sae_dir=out).layers == [1]


def test_train_saes_argument_errors(tiny, tmp_path):
    tokens = torch.zeros(4, 8, dtype=torch.long)
    with pytest.raises(ConfigError, match="layers must be"):
        train_saes(tiny, [2], tokens, tmp_path / "x", training_tokens=64)
    with pytest.raises(ConfigError, match="hook must be one of"):
        train_saes(tiny, [0], tokens, tmp_path / "x", hook="mlp_out", training_tokens=64)
