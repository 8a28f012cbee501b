"""SAE bundles (layer -> SAELens SAE): loading from releases, repos and folders, training, and quality."""

from ghost_lens.saes.bundle import SAEBundle, sae_hook_name
from ghost_lens.saes.config import SAETrainingConfig, load_sae_training_config
from ghost_lens.saes.datasets import tokenize_corpus
from ghost_lens.saes.quality import bundle_quality, load_quality, sae_quality, save_quality
from ghost_lens.saes.sources import TOY_RELEASE, list_releases, load_bundle, no_release_hint
from ghost_lens.saes.training import train_saes, train_saes_on_dataset

__all__ = [
    "TOY_RELEASE",
    "SAEBundle",
    "SAETrainingConfig",
    "bundle_quality",
    "list_releases",
    "load_bundle",
    "load_quality",
    "load_sae_training_config",
    "no_release_hint",
    "sae_hook_name",
    "sae_quality",
    "save_quality",
    "tokenize_corpus",
    "train_saes",
    "train_saes_on_dataset",
]
