"""SAE quality metrics: FVU / L0 / dead features on hand-built reconstructions and SAEs."""

from __future__ import annotations

import pytest
import torch

from ghost_lens.errors import SAEError
from ghost_lens.saes.quality import (
    QualityAccumulator,
    bundle_quality,
    load_quality,
    sae_quality,
    saes_quality,
    save_quality,
    spliced_loss,
    spliced_loss_with_hook,
)
from tests.helpers import tiny_model as _tiny_model
from tests.helpers.hub import tiny_sae

D = 8


def tiny_model(n_layers: int = 2, d_model: int = D):
    return _tiny_model(n_layers=n_layers, d_model=d_model, n_heads=2, d_mlp=16)


def identity_sae(hook_name: str, d: int = D):
    """A standard SAE with W_enc = [I, -I], W_dec = [I; -I]: relu(x) - relu(-x) = x, a perfect reconstruction."""
    sae = tiny_sae(d, 2 * d, hook_name)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
    return sae


def zero_sae(hook_name: str, d: int = D):
    sae = tiny_sae(d, 3 * d, hook_name)
    with torch.no_grad():
        for p in sae.parameters():
            p.zero_()
    return sae


def test_accumulator_perfect_and_mean_reconstruction():
    torch.manual_seed(0)
    x = torch.randn(100, D) + 3.0
    perfect = QualityAccumulator(d_sae=4)
    acts = torch.zeros(100, 4)
    acts[:, 0] = 1.0
    acts[::2, 1] = 2.0
    perfect.add(x, x.clone(), acts)
    q = perfect.result()
    assert q["fvu"] == pytest.approx(0.0, abs=1e-9)
    assert q["mse"] == pytest.approx(0.0, abs=1e-9)
    assert q["l0"] == pytest.approx(1.5)
    assert q["dead_fraction"] == pytest.approx(0.5)
    assert q["n_tokens"] == 100

    mean = QualityAccumulator(d_sae=4)
    mean.add(x[:60], x.mean(0).expand(60, D), acts[:60])  # batches of different sizes
    mean.add(x[60:], x.mean(0).expand(40, D), acts[60:])
    assert mean.result()["fvu"] == pytest.approx(1.0, abs=1e-5)


def test_accumulator_matches_direct_formula():
    torch.manual_seed(1)
    x, x_hat = torch.randn(50, D), torch.randn(50, D) * 0.5
    acc = QualityAccumulator(d_sae=2)
    acc.add(x, x_hat, torch.ones(50, 2))
    expected = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert acc.result()["fvu"] == pytest.approx(expected.item(), rel=1e-5)
    assert acc.result()["mse"] == pytest.approx(((x - x_hat) ** 2).sum(-1).mean().item(), rel=1e-5)


def test_accumulator_without_tokens_raises():
    with pytest.raises(SAEError):
        QualityAccumulator(d_sae=2).result()


def test_sae_quality_on_a_model_perfect_and_zero():
    model = tiny_model()
    tokens = torch.randint(0, 50, (5, 12), generator=torch.Generator().manual_seed(0))
    q = sae_quality(model, identity_sae("blocks.0.hook_resid_post"), tokens, batch_size=2, skip_first=False)
    assert q["fvu"] == pytest.approx(0.0, abs=1e-6)
    assert q["l0"] == pytest.approx(D)  # exactly one of relu(x_i), relu(-x_i) is non-zero
    assert q["dead_fraction"] == 0.0
    assert q["n_tokens"] == 60
    assert q["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)  # a perfect splice costs nothing
    assert q["ce_loss_with_sae"] == pytest.approx(q["ce_loss_clean"], abs=1e-5)
    assert q["ce_tokens"] == 5 * 11

    z = sae_quality(model, zero_sae("blocks.1.hook_resid_pre"), tokens, skip_first=False)
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_pre"])
    x = cache["blocks.1.hook_resid_pre"].reshape(-1, D)
    assert z["fvu"] == pytest.approx(((x**2).sum() / ((x - x.mean(0)) ** 2).sum()).item(), rel=1e-4)
    assert z["l0"] == 0.0 and z["dead_fraction"] == 1.0
    assert z["ce_loss_recovered"] == pytest.approx(0.0, abs=1e-6)  # decoding zeros is the zero ablation


def test_skip_first_leaves_the_first_position_out():
    model = tiny_model()
    tokens = torch.randint(0, 50, (5, 12), generator=torch.Generator().manual_seed(0))
    hook = "blocks.1.hook_resid_post"
    sae = zero_sae(hook)
    q = sae_quality(model, sae, tokens)  # skip_first is the default
    assert q["n_tokens"] == 5 * 11 and q["ce_tokens"] == 5 * 10
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    x = cache[hook][:, 1:].reshape(-1, D)
    assert q["fvu"] == pytest.approx(((x**2).sum() / ((x - x.mean(0)) ** 2).sum()).item(), rel=1e-4)
    # the splice keeps the first position: zero-ablating positions 1.. only
    clean = model(tokens, return_type="loss", loss_per_token=True)[:, 1:]
    assert q["ce_loss_clean"] == pytest.approx(clean.mean().item(), rel=1e-5)
    none = sae_quality(model, sae, tokens, ce_sequences=0)
    assert "ce_loss_recovered" not in none and none["fvu"] == pytest.approx(q["fvu"])
    two = sae_quality(model, sae, tokens, ce_sequences=2, batch_size=3)
    assert two["ce_tokens"] == 2 * 10 and two["n_tokens"] == 5 * 11


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.0.hook_resid_mid",
                                  "blocks.1.hook_resid_pre"])
def test_fast_splice_equals_a_full_forward_with_a_hook(hook):
    """The restart-at-the-next-block splice agrees with the reference: a full forward whose hook replaces the act."""
    model = tiny_model(n_layers=2)
    tokens = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(4))
    _, cache = model.run_with_cache(tokens, names_filter=[hook])
    replaced = cache[hook] * 0.5 + torch.randn(cache[hook].shape, generator=torch.Generator().manual_seed(6)) * 0.1
    fast = spliced_loss(model, hook, replaced, tokens)
    reference = spliced_loss_with_hook(model, hook, replaced, tokens)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    clean = model(tokens, return_type="loss", loss_per_token=True)
    assert not torch.allclose(fast, clean)  # the replacement did change the loss


def test_ce_losses_equal_explicit_hooked_forwards():
    """CE with the SAE / zero-ablated equals a hand-written hooked forward on positions 1.., and the ratio follows."""
    model = tiny_model(n_layers=2)
    tokens = torch.randint(0, 50, (6, 10), generator=torch.Generator().manual_seed(5))
    hook = "blocks.0.hook_resid_post"
    sae = tiny_sae(D, 16, hook, seed=3)
    q = sae_quality(model, sae, tokens, batch_size=4)

    def run(fn):
        def h(act, hook):  # noqa: ARG001
            act = act.clone()
            act[:, 1:] = fn(act[:, 1:])
            return act

        return model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=[(hook, h)])[:, 1:]

    with torch.no_grad():
        with_sae = run(lambda a: sae.decode(sae.encode(a)))
        zero = run(torch.zeros_like)
        clean = model(tokens, return_type="loss", loss_per_token=True)[:, 1:]
    assert q["ce_loss_with_sae"] == pytest.approx(with_sae.mean().item(), rel=1e-5)
    assert q["ce_loss_zero_ablation"] == pytest.approx(zero.mean().item(), rel=1e-5)
    assert q["ce_loss_clean"] == pytest.approx(clean.mean().item(), rel=1e-5)
    expected = (zero.mean() - with_sae.mean()) / (zero.mean() - clean.mean())
    assert q["ce_loss_recovered"] == pytest.approx(expected.item(), rel=1e-4)


def test_one_pass_for_several_saes_equals_one_at_a_time():
    from ghost_lens.saes.bundle import SAEBundle

    model = tiny_model()
    tokens = torch.randint(0, 50, (4, 10), generator=torch.Generator().manual_seed(2))
    saes = {L: tiny_sae(D, 16, f"blocks.{L}.hook_resid_post", seed=L) for L in range(2)}
    together = bundle_quality(model, SAEBundle(saes, source="test"), tokens, batch_size=3, ce_sequences=3)
    for L, sae in saes.items():
        alone = sae_quality(model, sae, tokens, ce_sequences=3)
        assert together[L] == pytest.approx(alone)


def test_quality_input_errors():
    model = tiny_model()
    with pytest.raises(SAEError, match="n_seq, ctx"):
        saes_quality(
            model,
            {"blocks.0.hook_resid_post": identity_sae("blocks.0.hook_resid_post")},
            torch.zeros(5, dtype=torch.long),
        )
    with pytest.raises(SAEError, match="no hook"):
        saes_quality(
            model,
            {"blocks.7.hook_resid_post": identity_sae("blocks.7.hook_resid_post")},
            torch.zeros(2, 4, dtype=torch.long),
        )


def test_save_and_load_quality(tmp_path):
    assert load_quality(tmp_path) is None
    save_quality(tmp_path / "blocks.0.hook_resid_post", {"fvu": 0.1, "l0": 3.0})
    assert load_quality(tmp_path / "blocks.0.hook_resid_post") == {"fvu": 0.1, "l0": 3.0}
    (tmp_path / "quality.json").write_text("{not json")
    assert load_quality(tmp_path) is None
