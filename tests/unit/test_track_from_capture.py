"""The tracker reads what capture writes: a tiny random model and SAEs, captured, saved, loaded and tracked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ghost_lens.capture.trace import FeatureTrace
from ghost_lens.config import CaptureConfig, TrackerConfig
from ghost_lens.hooks import hook_name
from ghost_lens.tracking import metrics_dict, track_example, track_trace

capture = pytest.importorskip("ghost_lens.capture.capture")


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> FeatureTrace:
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=3, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50, n_ctx=16, act_fn="gelu",
        normalization_type="LN", seed=0,
    )  # fmt: skip
    model = HookedTransformer(cfg).eval()
    torch.manual_seed(0)
    saes = {}
    for layer in range(3):
        sae_cfg = StandardSAEConfig(
            d_in=16, d_sae=48, metadata=SAEMetadata(hook_name=hook_name(layer, "resid_post"))
        )
        sae = StandardSAE(sae_cfg)
        with torch.no_grad():
            sae.W_enc.normal_()
            sae.W_dec.normal_()
        saes[layer] = sae.eval()
    seqs = [torch.randint(1, 50, (n,)) for n in (7, 10, 5)]
    spans = [(4, 7), (8, 10), (3, 5)]
    trace = capture.capture_tokens(
        model, saes, seqs, spans, CaptureConfig(top_k=6, batch_size=2), progress=False
    )
    folder = trace.save(tmp_path_factory.mktemp("capture"))
    return FeatureTrace.load(folder)


def test_tracking_a_real_capture(trace):
    cfg = TrackerConfig(top_k_features=10)
    result = track_trace(trace, cfg, progress=False)
    assert result.metrics.shape == (3, len(result.feature_names)) and np.isfinite(result.metrics).all()
    assert result.layers == trace.layers and result.ids == trace.ids
    for i, graph in enumerate(result.graphs):
        assert graph.graph.number_of_nodes() > 0
        assert metrics_dict(graph) == pytest.approx(
            dict(zip(result.feature_names, result.metrics[i], strict=True))
        )
        assert graph == track_example(trace, i, cfg)
        w = int(trace.window_starts()[i])  # node positions are in the full sequence
        answer = range(w + int(trace.answer_start[i]) - 1, w + int(trace.answer_end[i]))
        assert all(n.pos in answer for n in graph.graph.nodes)  # last prompt token + answer span
    control = track_trace(trace, cfg, decoder_mode="random", seed=1, progress=False, keep_graphs=False)
    assert control.metrics.shape == result.metrics.shape and control.decoder_mode == "random"
