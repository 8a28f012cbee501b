"""Capture end to end on a tiny random model with a GPT-2-style tokenizer and tiny random SAEs.

Every captured number is checked against a reference computed independently, one example at a time and without
padding: the model's own ``run_with_cache`` + ``sae.encode`` + ``torch.topk`` for the features and residuals,
``model(tokens).log_softmax`` for the answer statistics.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from rich.progress import Progress

from ghost_lens.capture.capture import capture_examples, capture_tokens
from ghost_lens.capture.tokenize import answer_separator
from ghost_lens.capture.trace import FeatureTrace
from ghost_lens.config import CaptureConfig
from ghost_lens.errors import DatasetError, ModelError, SAEError
from tests.helpers.capture import build_examples, build_model, build_sae, build_saes, build_tokenizer

CFG = CaptureConfig(top_k=8, batch_size=4, positions="all", decoder_dtype="float32", residual_dtype="float32")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = build_tokenizer(tmp_path_factory.mktemp("tok"))
    model = build_model(tok)
    saes = build_saes(model)
    examples = build_examples()
    trace = capture_examples(model, saes, examples, CFG, progress=False)
    return model, saes, examples, trace


def _reference(model, saes, tokens, start, end, k):
    """Per-layer (topk values, indices, resid_last, resid_mean) and answer stats of one unpadded sequence."""
    names = [saes[layer].cfg.metadata.hook_name for layer in sorted(saes)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens[None], names_filter=names)
        feats = []
        for layer, name in zip(sorted(saes), names, strict=True):
            act = cache[name][0]
            vals, idx = torch.topk(saes[layer].encode(act), k, dim=-1)
            feats.append((vals, idx, act[start - 1], act[start:end].mean(0)))
    logp = logits[0].log_softmax(-1)[start - 1 : end - 1]
    tok_lp = logp.gather(1, tokens[start:end, None])[:, 0]
    p = logp.exp()
    stats = (tok_lp.sum(), tok_lp.mean(), -(p * logp).sum(-1).mean(), p.max(-1).values.mean())
    return feats, stats


def test_shapes_and_meta(setup):
    model, saes, examples, trace = setup
    n, n_layers, k, d = len(examples), len(saes), CFG.top_k, model.cfg.d_model
    t = int(trace.offsets[-1])
    assert trace.tokens.shape == (t,) and trace.tokens.dtype == torch.int64
    assert trace.offsets.shape == (n + 1,) and trace.answer_start.shape == (n,)
    assert trace.feat_idx.shape == (n_layers, t, k) and trace.feat_idx.dtype == torch.int32
    assert trace.feat_val.shape == (n_layers, t, k) and trace.feat_val.dtype == torch.float32
    for name in ("answer_logprob", "answer_mean_logprob", "output_entropy", "max_prob"):
        assert getattr(trace, name).shape == (n,)
    assert trace.resid_last_prompt.shape == trace.resid_answer_mean.shape == (n_layers, n, d)
    assert len(trace.dec_idx) == len(trace.dec_dir) == n_layers
    assert not any(t.is_inference() for t in (trace.feat_val, trace.resid_last_prompt, trace.max_prob, *trace.dec_dir))
    m = trace.meta
    assert m["ids"] == [e.id for e in examples] and m["labels"] == [e.label for e in examples]
    assert m["groups"] == [e.group for e in examples] and m["answers"] == [e.answer for e in examples]
    assert m["layers"] == [0, 1, 2] and m["hook_names"] == [f"blocks.{i}.hook_resid_post" for i in range(3)]
    assert m["top_k"] == k and m["d_model"] == d and m["n_truncated"] == 0 and m["dtype"] == "float32"
    info = m["sae_info"]["layers"]
    assert info["1"]["architecture"] == "topk" and info["0"]["d_sae"] == 48 and m["sae_info"]["source"] == "in-memory SAEs"
    assert isinstance(m["ghost_lens_version"], str) and m["capture_config"]["top_k"] == k


def test_answer_span_is_exact(setup):
    model, _, examples, trace = setup
    bos = model.tokenizer.bos_token_id
    for i, ex in enumerate(examples):
        toks = trace.tokens[trace.example_slice(i)]
        start, end = int(trace.answer_start[i]), int(trace.answer_end[i])
        sep = answer_separator(ex.prompt, ex.answer)
        assert end == toks.numel() and int(toks[0]) == bos
        assert model.to_string(toks[start:end]) == sep + ex.answer
        assert model.to_string(toks[1:start]) == ex.prompt
        if not ex.prompt.endswith(" "):  # the model reads the tokenization of the whole text
            assert torch.equal(toks, model.to_tokens(ex.prompt + sep + ex.answer, move_to_device=False)[0])
    assert sum(ex.prompt.endswith(" ") for ex in examples) == 1  # the separate-tokenization path is exercised


def test_features_residuals_and_stats_match_reference(setup):
    model, saes, _, trace = setup
    k = CFG.top_k
    for i in range(trace.n_examples):
        s = trace.example_slice(i)
        start, end = int(trace.answer_start[i]), int(trace.answer_end[i])
        feats, stats = _reference(model, saes, trace.tokens[s], start, end, k)
        for j, (vals, idx, last, mean) in enumerate(feats):
            got_val, got_idx = trace.feat_val[j, s], trace.feat_idx[j, s]
            assert torch.all(got_val[:, :-1] >= got_val[:, 1:])  # sorted, descending
            torch.testing.assert_close(got_val, vals, atol=1e-5, rtol=1e-5)
            active = vals > 0
            assert torch.equal(got_idx[active].long(), idx[active])
            assert torch.all(got_idx[~active] == -1)
            torch.testing.assert_close(trace.resid_last_prompt[j, i], last, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(trace.resid_answer_mean[j, i], mean, atol=1e-5, rtol=1e-5)
        got = (trace.answer_logprob[i], trace.answer_mean_logprob[i], trace.output_entropy[i], trace.max_prob[i])
        for g, r in zip(got, stats, strict=True):
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
    assert (trace.feat_idx[1] == -1).any()  # the TopK SAE (k=4 < top_k=8) leaves inactive slots


def test_batch_size_does_not_change_results(setup):
    model, saes, examples, trace = setup
    one = capture_examples(model, saes, examples, replace(CFG, batch_size=1), progress=False)
    torch.testing.assert_close(one.feat_val, trace.feat_val, atol=1e-5, rtol=1e-5)
    assert torch.equal(one.feat_idx, trace.feat_idx)
    assert torch.equal(one.tokens, trace.tokens) and torch.equal(one.offsets, trace.offsets)
    for name in ("answer_logprob", "output_entropy", "max_prob", "resid_last_prompt", "resid_answer_mean"):
        torch.testing.assert_close(getattr(one, name), getattr(trace, name), atol=1e-5, rtol=1e-5)
    for a, b in zip(one.dec_idx, trace.dec_idx, strict=True):
        assert torch.equal(a, b)


def test_left_truncation_keeps_answer_and_warns_once(setup, caplog):
    model, saes, examples, full = setup
    max_len = 10
    lengths = (full.offsets[1:] - full.offsets[:-1]).tolist()
    n_long = sum(n > max_len for n in lengths)
    assert 0 < n_long < len(examples)
    with caplog.at_level(logging.WARNING, logger="ghost_lens.capture.capture"):
        trace = capture_examples(model, saes, examples, replace(CFG, max_length=max_len), progress=False)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"{n_long} of {len(examples)}" in warnings[0].getMessage()
    assert trace.meta["n_truncated"] == n_long
    for i, ex in enumerate(examples):
        toks = trace.tokens[trace.example_slice(i)]
        start, end = int(trace.answer_start[i]), int(trace.answer_end[i])
        assert toks.numel() == min(lengths[i], max_len) and int(toks[0]) == model.tokenizer.bos_token_id
        assert model.to_string(toks[start:end]) == answer_separator(ex.prompt, ex.answer) + ex.answer
        full_toks = full.tokens[full.example_slice(i)]
        assert torch.equal(toks[1:], full_toks[full_toks.numel() - toks.numel() + 1 :])  # the left end was cut
    feats, stats = _reference(model, saes, toks, start, end, CFG.top_k)  # the last, truncated example
    torch.testing.assert_close(trace.feat_val[0, trace.example_slice(i)], feats[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(trace.answer_logprob[i], stats[0], atol=1e-4, rtol=1e-4)
    with pytest.raises(DatasetError, match="ex5"):  # a 6-token answer and a BOS do not fit in 6 tokens
        capture_examples(model, saes, examples, replace(CFG, max_length=6), progress=False)


def test_save_load_round_trip(setup, tmp_path):
    _, _, _, trace = setup
    loaded = FeatureTrace.load(trace.save(tmp_path / "capture"))
    for name in ("tokens", "offsets", "answer_start", "answer_end", "feat_idx", "feat_val", "answer_logprob",
                 "answer_mean_logprob", "output_entropy", "max_prob", "resid_last_prompt", "resid_answer_mean"):
        assert torch.equal(getattr(loaded, name), getattr(trace, name)), name
    for a, b in zip(loaded.dec_idx + loaded.dec_dir, trace.dec_idx + trace.dec_dir, strict=True):
        assert torch.equal(a, b)
    assert loaded.meta == trace.meta


def test_full_activation_totals_match_reference_and_survive_save_load(setup, tmp_path):
    model, saes, _, trace = setup
    names = [saes[layer].cfg.metadata.hook_name for layer in sorted(saes)]
    assert trace.sae_totals.shape == (trace.n_layers, int(trace.offsets[-1]), 3)
    for i in range(trace.n_examples):
        s = trace.example_slice(i)
        with torch.no_grad():
            _, cache = model.run_with_cache(trace.tokens[s][None], names_filter=names)
        for j, layer in enumerate(sorted(saes)):
            a = saes[layer].encode(cache[names[j]][0]).clamp_min(0)  # [n_tok, d_sae], the full activation
            l1 = a.sum(-1)
            p = a / l1.clamp_min(1e-30)[:, None]
            ent = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
            ref = torch.stack([l1, (a > 0).sum(-1).float(), ent], dim=-1)
            torch.testing.assert_close(trace.sae_totals[j, s], ref, atol=1e-4, rtol=1e-4)
    # the standard SAE of layer 0 has more active features than the top_k kept: L0 counts them all
    assert trace.sae_totals[0, :, 1].max() > CFG.top_k
    loaded = FeatureTrace.load(trace.save(tmp_path / "capture"))
    assert torch.equal(loaded.sae_totals, trace.sae_totals)
    # a capture written before the totals existed loads with sae_totals None
    old = replace(trace, sae_totals=None)
    assert FeatureTrace.load(old.save(tmp_path / "old")).sae_totals is None


def test_decoder_directions(setup):
    _, saes, _, trace = setup
    for j, layer in enumerate(trace.layers):
        active = trace.feat_val[j] > 0
        expected_ids = torch.unique(trace.feat_idx[j][active].long())
        assert torch.equal(trace.dec_idx[j], expected_ids)
        ids = trace.feat_idx[j, 5][active[5]]  # the active features of token 5
        dirs = trace.decoder_directions(j, ids)
        w = saes[layer].W_dec.detach()[ids.long()]
        torch.testing.assert_close(dirs, w / w.norm(dim=-1, keepdim=True))
        torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(len(ids)))
    unused = torch.tensor([i for i in range(48) if i not in set(trace.dec_idx[0].tolist())][:1])
    with pytest.raises(KeyError):
        trace.decoder_directions(0, unused)


def test_fp16_storage(setup):
    model, saes, examples, trace = setup
    half = capture_examples(model, saes, examples, replace(CFG, store_fp16=True, decoder_dtype="float16"),
                            progress=False)
    assert half.meta["dtype"] == "float16"
    for name in ("feat_val", "resid_last_prompt", "resid_answer_mean"):
        assert getattr(half, name).dtype == torch.float16
        torch.testing.assert_close(getattr(half, name).float(), getattr(trace, name), atol=2e-3, rtol=2e-3)
    assert all(d.dtype == torch.float16 for d in half.dec_dir)
    assert torch.equal(half.feat_idx, trace.feat_idx) and half.answer_logprob.dtype == torch.float32


def test_layer_subset_default_hook_and_errors(setup):
    model, saes, examples, _ = setup
    pre = build_sae(model.cfg.d_model, 48, 2, seed=7)
    pre.cfg.metadata.hook_name = None  # no hook in the metadata: blocks.{layer}.hook_{cfg.hook}
    cfg = replace(CFG, layers=[2, 0], hook="resid_post")
    with Progress(disable=True) as bar:
        trace = capture_examples(model, {0: saes[0], 2: pre}, examples[:3], cfg, progress=bar)
        assert bar.tasks[0].completed == bar.tasks[0].total == 1
    # layers come out ascending (the bundle's order); the SAE without a hook reads blocks.2.hook_{cfg.hook}
    assert trace.layers == [0, 2] and trace.meta["hook_names"] == ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    with torch.no_grad():
        _, cache = model.run_with_cache(trace.tokens[trace.example_slice(0)][None])
    ref = torch.topk(pre.encode(cache["blocks.2.hook_resid_post"][0]), CFG.top_k).values
    torch.testing.assert_close(trace.feat_val[1, trace.example_slice(0)], ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(SAEError, match="different kinds of hook"):  # tracks compare like with like
        capture_examples(model, {0: saes[0], 2: pre}, examples[:3], replace(cfg, hook="resid_pre"), progress=False)
    with pytest.raises(SAEError, match="layer"):
        capture_examples(model, saes, examples, replace(CFG, layers=[0, 5]), progress=False)
    wide = build_sae(model.cfg.d_model + 8, 16, 0)
    with pytest.raises(SAEError, match="d_in"):
        capture_examples(model, {0: wide}, examples, CFG, progress=False)


def test_capture_tokens_without_tokenizer(setup):
    model, saes, examples, _ = setup
    bare = build_model(None, d_vocab=model.cfg.d_vocab)
    with pytest.raises(ModelError):
        capture_examples(bare, saes, examples, CFG, progress=False)
    seqs = [torch.tensor([5, 9, 11, 40, 2]), torch.tensor([7, 3, 8])]
    trace = capture_tokens(bare, saes, seqs, [(3, 5), (1, 3)], CFG, progress=False)
    assert trace.ids == ["0", "1"] and trace.answer_start.tolist() == [3, 1]
    _, stats = _reference(bare, saes, seqs[1], 1, 3, CFG.top_k)
    torch.testing.assert_close(trace.answer_logprob[1], stats[0], atol=1e-4, rtol=1e-4)
