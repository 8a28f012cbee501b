"""The embedded toy-facts world: knowledge base, word-level tokenizer, tiny model, SAEs, labelled examples.

Entry point: :func:`ghost_lens.toy.world.get_world` (built on first use, then cached).
"""
