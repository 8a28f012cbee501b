"""GPT-2 medium with SAEs trained by ghost-lens (SAELens has no gpt2-medium release).
Needs: network access to the hub for gpt2-medium and the datasets, and a GPU for reasonable speed.
Same as the command line:

    ghost-lens train-saes --model gpt2-medium --layers 0-23 --dataset NeelNanda/pile-10k \
        --architecture topk --expansion 5 --training-tokens 20000000 --out saes/gpt2-medium
    ghost-lens track --config gpt2-medium --sae-dir saes/gpt2-medium --dataset truthfulqa
"""

from pathlib import Path

from ghost_lens import SAETrainingConfig, load_config, load_model, run_track, train_saes
from ghost_lens.saes.datasets import tokenize_corpus

device = "cuda"
model = load_model("gpt2-medium", device=device)
sae_cfg = SAETrainingConfig(layers=list(range(24)), architecture="topk", expansion=5, training_tokens=20_000_000)
tokens = tokenize_corpus(model, "NeelNanda/pile-10k", context_size=sae_cfg.context_size)
train_saes(model, tokens, Path("saes/gpt2-medium"), sae_cfg)
cfg = load_config("gpt2-medium", overrides=[f"device={device}", "sae_dir=saes/gpt2-medium"])
run = run_track(cfg, "runs/gpt2-medium_truthfulqa")
print(run.evaluation.metrics["conclusion"]["statement"])
