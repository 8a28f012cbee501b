"""Training corpora (txt, jsonl, dataset folder, hub name) and train_saes end to end on a tiny random model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ghost_lens.constants import SAE_QUALITY
from ghost_lens.errors import ConfigError, DatasetError, RunFolderError
from ghost_lens.saes import (
    SAETrainingConfig,
    load_bundle,
    load_quality,
    load_sae_training_config,
    tokenize_corpus,
    train_saes,
)
from tests.helpers import tiny_model

DOCS = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "A language model predicts the next token.",
] * 4


@pytest.fixture
def gpt2(offline_hub):
    from ghost_lens.model_loader import load_model

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
        tiny, tokens, out, SAETrainingConfig(expansion=4, training_tokens=20_000, seed=0, train_batch_size_tokens=128),
        progress=False,
    )  # layers: None, every layer of the model
    assert bundle.layers == [0, 1] and bundle.hook_kind == "resid_post"
    assert bundle.d_sae == {0: 64, 1: 64}
    for layer in (0, 1):
        folder = out / f"blocks.{layer}.hook_resid_post"
        quality = load_quality(folder)
        assert (folder / SAE_QUALITY).is_file() and quality is not None
        assert quality["n_tokens"] == 6 * 15  # the held-out 10% of the rows, first position left out
        assert quality["fvu"] < 0.5 and quality["l0"] == pytest.approx(16, abs=0.5)  # TopK, k=16
        assert quality["architecture"] == "topk" and quality["training_tokens"] == 20_000
        assert quality["trained_with"] == "MultiSAETrainingRunner" and quality["layers_trained_together"] == [0, 1]
        assert quality["ce_tokens"] == 6 * 14  # next-token losses of positions 1..14
        assert quality["ce_loss_zero_ablation"] != quality["ce_loss_clean"]
        assert quality["ce_loss_recovered"] == pytest.approx(
            (quality["ce_loss_zero_ablation"] - quality["ce_loss_with_sae"])
            / (quality["ce_loss_zero_ablation"] - quality["ce_loss_clean"])
        )
    assert bundle.saved_quality()[1] == load_quality(out / "blocks.1.hook_resid_post")
    assert [p.name for p in tmp_path.iterdir()] == ["saes"]  # no temporary folder left beside it

    loaded = load_bundle(tiny, sae_dir=out)
    assert loaded.sae_ids == bundle.sae_ids
    for layer in bundle:
        torch.testing.assert_close(loaded[layer].W_dec, bundle[layer].W_dec)

    with pytest.raises(RunFolderError, match="is not empty"):
        train_saes(tiny, tokens, out, SAETrainingConfig(layers=[0], training_tokens=1024), progress=False)
    (out / "keep.txt").write_text("unrelated")
    layer0 = (out / "blocks.0.hook_resid_post" / "sae_weights.safetensors").read_bytes()
    from rich.progress import Progress

    with Progress(disable=True) as bar:
        again = train_saes(
            tiny, tokens, out,
            SAETrainingConfig(layers=[1], training_tokens=2048, train_batch_size_tokens=128, architecture="standard"),
            force=True, progress=bar,
        )
    assert again.layers == [1] and (out / "keep.txt").is_file()
    # only the trained layer is swapped in; the other layer's SAE is untouched
    assert (out / "blocks.0.hook_resid_post" / "sae_weights.safetensors").read_bytes() == layer0
    assert load_quality(out / "blocks.1.hook_resid_post")["architecture"] == "standard"
    assert load_bundle(tiny, sae_dir=out).layers == [0, 1]


def _forward_counter(model):
    """Record the token batch of every full model forward (``model(tokens, ...)``, as SAELens's store calls it)."""
    seen: list[bytes] = []

    def pre_hook(module, args, kwargs):
        inp = args[0] if args else kwargs.get("input")
        if isinstance(inp, torch.Tensor) and inp.dtype == torch.long:
            seen.append(inp.numpy().tobytes())

    handle = model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    return seen, handle


@pytest.mark.parametrize("n_layers", [1, 4])
def test_multi_runner_one_forward_per_batch_whatever_the_layers(n_layers):
    from ghost_lens.saes.runners import train_sae, train_saes_multi

    model = tiny_model(n_layers=4, d_model=16, model_name="tiny4")
    # 2000 rows: the runner draws 256-row batches (4096 tokens per forward), all distinct within one epoch
    tokens = torch.randint(0, 50, (2000, 16), generator=torch.Generator().manual_seed(1))
    hooks = [f"blocks.{L}.hook_resid_post" for L in range(n_layers)]
    cfg = SAETrainingConfig(expansion=2, training_tokens=16_384, train_batch_size_tokens=512, k=4, seed=0)

    seen, handle = _forward_counter(model)
    try:
        saes = train_saes_multi(model, hooks, tokens, cfg)
    finally:
        handle.remove()
    batches = [b for b in seen if len(b) > 2 * 4 * 8]  # drop the one width probe on two 4-token rows
    assert sorted(saes) == hooks
    assert len(batches) > 3 and len(batches) == len(set(batches))  # each token batch ran through the model once

    seen, handle = _forward_counter(model)
    try:
        for h in hooks:  # the per-layer path: one LanguageModelSAETrainingRunner per layer
            train_sae(model, h, tokens, cfg)
    finally:
        handle.remove()
    per_layer = [b for b in seen if len(b) > 2 * 4 * 8]
    assert len(per_layer) == n_layers * len(batches)  # the same batches, once per layer
    assert len(set(per_layer)) == len(set(batches))


def _train_counting_forwards(model, hooks, tokens, cfg):
    from ghost_lens.saes.runners import train_saes_multi

    seen, handle = _forward_counter(model)
    try:
        saes = train_saes_multi(model, hooks, tokens, cfg)
    finally:
        handle.remove()
    return saes, [b for b in seen if len(b) > 2 * 4 * 8]  # drop the one width probe on two 4-token rows


def test_later_epochs_replay_the_first_one_and_train_the_same_saes():
    model = tiny_model(n_ctx=64, model_name="tiny2")
    # 200 rows of 64 tokens: the store draws 64-row batches, 3 per epoch (8 rows left over, dropped every epoch);
    # 40k training tokens are ~3.3 epochs of the 12096 tokens an epoch yields (first positions left out)
    tokens = torch.randint(0, 50, (200, 64), generator=torch.Generator().manual_seed(2))
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    base = SAETrainingConfig(expansion=2, training_tokens=40_000, train_batch_size_tokens=512, k=4, seed=0,
                             context_size=64)

    replayed, forwards = _train_counting_forwards(model, hooks, tokens, base)
    assert len(forwards) == 3 and len(set(forwards)) == 3  # one epoch through the model, then from memory

    rerun, forwards_0 = _train_counting_forwards(model, hooks, tokens, dataclasses.replace(base, replay_mb=0))
    assert len(forwards_0) >= 9 and len(set(forwards_0)) == 3  # the model over the same 3 batches every epoch
    # an epoch's activations (1.5 MB) over a 1 MB budget: the model runs every epoch, as with replay_mb=0
    _, forwards_1 = _train_counting_forwards(model, hooks, tokens, dataclasses.replace(base, replay_mb=1))
    assert forwards_1 == forwards_0

    for h in hooks:  # the same activation stream, so the same SAEs, bit for bit
        a, b = replayed[h].state_dict(), rerun[h].state_dict()
        assert sorted(a) == sorted(b)
        for name in a:
            assert torch.equal(a[name], b[name]), (h, name)


def test_interrupted_training_leaves_the_old_saes(tiny, tmp_path, monkeypatch):
    import ghost_lens.saes.training as training

    tokens = torch.randint(0, 50, (30, 16), generator=torch.Generator().manual_seed(3))
    out = tmp_path / "saes"
    small = SAETrainingConfig(expansion=2, training_tokens=1024, train_batch_size_tokens=128, ce_sequences=0)
    train_saes(tiny, tokens, out, small, progress=False)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def interrupted(*args, **kwargs):  # Ctrl-C once the new SAEs are trained, while their quality is measured
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "saes_quality", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_saes(tiny, tokens, out, SAETrainingConfig(expansion=4, training_tokens=1024, train_batch_size_tokens=128),
                   progress=False, force=True)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the old SAEs, byte for byte
    assert [p.name for p in tmp_path.iterdir()] == ["saes"]  # the temporary training folder is gone


def test_train_saes_argument_errors(tiny, tmp_path):
    tokens = torch.zeros(4, 8, dtype=torch.long)
    out = tmp_path / "x"
    with pytest.raises(ConfigError, match="layers must be a non-empty subset of 0..1"):
        train_saes(tiny, tokens, out, SAETrainingConfig(layers=[2], training_tokens=64))
    with pytest.raises(ConfigError, match="tokens must be"):
        train_saes(tiny, tokens[:, :1], out, SAETrainingConfig(training_tokens=64))
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing was touched


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("layers", [], r"layers \(--layers\) must be a non-empty list"),
    ("hook", "mlp_out", r"hook \(--hook\) must be one of"),
    ("training_tokens", 0, r"training_tokens \(--training-tokens\) must be an integer >= 1, got 0"),
    ("expansion", 0, r"expansion \(--expansion\) must be an integer >= 1, got 0"),
    ("architecture", "relu", r"architecture \(--architecture\) must be standard, topk or jumprelu"),
    ("held_out_fraction", 1.0, "held_out_fraction"),
    ("k", 0, r"k \(--k\) must be an integer >= 1"),
    ("lr", -1.0, r"lr \(--lr\) must be > 0"),
    ("context_size", 1, r"context_size \(--context-size\) must be an integer >= 2"),
    ("ce_sequences", -1, "ce_sequences"),
])
def test_sae_training_config_names_the_bad_field(field, value, needle):
    with pytest.raises(ConfigError, match=needle):
        SAETrainingConfig(**{field: value})


def test_sae_training_config_yaml(tmp_path):
    """The packaged YAML spells out the defaults; a file, then key=value overrides, then typed fields (flags)."""
    assert load_sae_training_config("default") == SAETrainingConfig()
    path = tmp_path / "train.yaml"
    path.write_text("architecture: standard\nexpansion: 3\nlayers: [0, 1]\nk: 8\n")
    cfg = load_sae_training_config(path, ["k=4"], expansion=7, seed=None)
    assert (cfg.architecture, cfg.expansion, cfg.layers, cfg.k, cfg.seed) == ("standard", 7, [0, 1], 4, 0)
    assert cfg.resolved_layers(3) == [0, 1] and SAETrainingConfig().resolved_layers(3) == [0, 1, 2]
    path.write_text("expansoin: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'expansoin'"):
        load_sae_training_config(path)
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        load_sae_training_config(None, ["nope=1"])
    with pytest.raises(ConfigError, match="no SAE training config .* named 'missing'"):
        load_sae_training_config("missing")
    with pytest.raises(ConfigError, match="hook: 'mlp_out' is not one of"):
        load_sae_training_config(None, ["hook=mlp_out"])


def test_cli_nonsense_is_one_line_before_anything_is_touched(tmp_path):
    from tests.helpers.cli import assert_one_line_error, invoke

    corpus = tmp_path / "c.txt"
    corpus.write_text("hello world\n")
    out = tmp_path / "saes"
    out.mkdir()
    (out / "blocks.0.hook_resid_post").mkdir()
    (out / "blocks.0.hook_resid_post" / "cfg.json").write_text("{}")
    for args, needle in [
        (["--training-tokens", "0"], "(--training-tokens) must be an integer >= 1, got 0"),
        (["--expansion", "0"], "(--expansion) must be an integer >= 1"),
        (["--expansion", "-3"], "(--expansion) must be an integer >= 1"),
        (["--context-size", "1"], "(--context-size) must be an integer >= 2"),
        (["--hook", "mlp_out"], "(--hook) must be one of"),
    ]:
        result = invoke("train-saes", "--model", "no-such-model", "--dataset", corpus, "--out", out, "--force", *args)
        assert_one_line_error(result, needle, code=2)
    yaml_cfg = tmp_path / "train.yaml"
    yaml_cfg.write_text("expansion: 3\n")
    result = invoke("train-saes", "--model", "no-such-model", "--dataset", corpus, "--out", out, "--force",
                    "--training-config", yaml_cfg, "--expansion", "0")
    assert_one_line_error(result, "(--expansion) must be an integer >= 1, got 0", code=2)  # the flag beats the file
    yaml_cfg.write_text("expansoin: 3\n")
    result = invoke("train-saes", "--model", "no-such-model", "--dataset", corpus, "--out", out, "--force",
                    "--training-config", yaml_cfg)
    assert_one_line_error(result, "unknown config key 'expansoin'", code=2)
    result = invoke("train-saes", "--model", "no-such-model", "--dataset", corpus, "--out", out)
    assert_one_line_error(result, "is not empty", "--force", code=2)
    assert sorted(p.name for p in out.rglob("*")) == ["blocks.0.hook_resid_post", "cfg.json"]
