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
)
from tests.helpers import tiny_model as _tiny_model
from tests.helpers_hub import tiny_sae

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
    q = sae_quality(model, identity_sae("blocks.0.hook_resid_post"), tokens, batch_size=2)
    assert q["fvu"] == pytest.approx(0.0, abs=1e-6)
    assert q["l0"] == pytest.approx(D)  # exactly one of relu(x_i), relu(-x_i) is non-zero
    assert q["dead_fraction"] == 0.0
    assert q["n_tokens"] == 60

    z = sae_quality(model, zero_sae("blocks.1.hook_resid_pre"), tokens)
    _, cache = model.run_with_cache(tokens, names_filter=["blocks.1.hook_resid_pre"])
    x = cache["blocks.1.hook_resid_pre"].reshape(-1, D)
    assert z["fvu"] == pytest.approx(((x**2).sum() / ((x - x.mean(0)) ** 2).sum()).item(), rel=1e-4)
    assert z["l0"] == 0.0 and z["dead_fraction"] == 1.0


def test_one_pass_for_several_saes_equals_one_at_a_time():
    from ghost_lens.saes.bundle import SAEBundle

    model = tiny_model()
    tokens = torch.randint(0, 50, (4, 10), generator=torch.Generator().manual_seed(2))
    saes = {L: tiny_sae(D, 16, f"blocks.{L}.hook_resid_post", seed=L) for L in range(2)}
    together = bundle_quality(model, SAEBundle(saes, source="test"), tokens, batch_size=3)
    for L, sae in saes.items():
        alone = sae_quality(model, sae, tokens)
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
