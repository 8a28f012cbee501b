"""GPT-2 small with SAELens's pretrained `gpt2-small-res-jb` SAEs on TruthfulQA.
Needs: network access to the Hugging Face hub (gpt2 weights, the SAEs, the dataset), or a local TruthfulQA.csv.
Same as the command line:

    ghost-lens track --model gpt2 --sae-release gpt2-small-res-jb --dataset truthfulqa --config default
"""

import sys

from ghost_lens import load_config, run_track

dataset = sys.argv[1] if len(sys.argv) > 1 else "truthfulqa"   # or a path to TruthfulQA.csv
cfg = load_config("default", overrides=[f"dataset={dataset}", "num_samples=2000"])
run = run_track(cfg, "runs/gpt2-small_truthfulqa")
print(run.evaluation.metrics["conclusion"]["statement"])
print(f"read {run.path / 'report.md'}")
