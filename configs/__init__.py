"""Packaged copies of the YAML configs (importable as ``ghost_lens.configs``)."""
