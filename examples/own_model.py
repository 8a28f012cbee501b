"""Plug in a model and SAEs of your own: any HookedTransformer, any dict of SAELens SAEs. Needs: nothing but
ghost-lens (no network). Here: a fresh 2-layer model on the toy world's tokenizer, SAEs trained for it through
SAELens's runner, and the toy world's questions. Your own: swap in your model, your SAEs, your Examples.

    python examples/own_model.py
"""

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from ghost_lens import Example, RunConfig, SAETrainingConfig, get_world, run_pipeline
from ghost_lens.hooks import hook_name
from ghost_lens.saes.runners import train_sae

world = get_world()
cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_ctx=32, d_head=16, n_heads=4, d_mlp=256,
                              d_vocab=world.model.cfg.d_vocab, act_fn="gelu", normalization_type="LN", seed=0)
model = HookedTransformer(cfg, tokenizer=world.tokenizer)

tokens = torch.randint(0, cfg.d_vocab, (512, 16), generator=torch.Generator().manual_seed(0))
sae_cfg = SAETrainingConfig(architecture="topk", expansion=4, training_tokens=8192, k=8)
saes = {layer: train_sae(model, hook_name(layer, "resid_post"), tokens, sae_cfg) for layer in range(cfg.n_layers)}

examples = [Example(ex.id, ex.group, ex.prompt, ex.answer, ex.label) for ex in world.examples("statement")[:300]]
result = run_pipeline(model, saes, examples, RunConfig())
for row in result.evaluation.summary_rows():
    print(row)
