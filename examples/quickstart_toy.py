"""Quickstart on the embedded toy-facts world. Needs: nothing but ghost-lens (no network, ~3 min on 2 CPU cores
the first time, while the world is built and cached; seconds afterwards).

    python examples/quickstart_toy.py
"""

from ghost_lens import RunConfig, get_world, load_examples, run_pipeline

world = get_world()                       # model, tokenizer and per-layer SAEs, built once and cached
examples = load_examples("toy-facts")     # generation mode: label 1 = the model's own greedy answer is wrong
result = run_pipeline(world.model, world.load_saes(), examples, RunConfig())

for name, auroc, lo, hi, auprc, verdict in result.evaluation.summary_rows():
    print(f"{name:18s} AUROC {auroc:.3f} [{lo:.3f}, {hi:.3f}]  AUPRC {auprc:.3f}  {verdict}")
print(result.evaluation.metrics["conclusion"]["statement"])
graph = result.tracking.graphs[0]         # a TrackGraph: networkx DiGraph of (layer, feature, pos) nodes
print(f"example 0 has {graph.n_tracks} tracks; graph with {graph.graph.number_of_nodes()} nodes")
