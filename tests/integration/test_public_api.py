"""The public API end to end: every exported function, called twice after every module was imported (issue 13:
``ghost_lens.capture`` was once both a function and the subpackage, and the function worked once, then vanished)."""

from __future__ import annotations

import ghost_lens


def _every_submodule() -> list[str]:
    import pkgutil

    import ghost_lens_cli

    names = []
    for pkg in (ghost_lens, ghost_lens_cli):
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}.")]
    return names


def test_every_exported_function_works_twice_after_every_import(tmp_path, monkeypatch):
    """Touch every lazy name, import every module, then call each exported function twice on tiny inputs."""
    import importlib
    import inspect

    import torch

    from ghost_lens.constants import CACHE_ENV
    from tests.helpers.capture import build_examples, build_model, build_saes, build_tokenizer
    from tests.helpers.toy import TINY_WORLD, tiny_world_cfg

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    for name in ghost_lens.__all__:
        getattr(ghost_lens, name)
    for module in _every_submodule():
        importlib.import_module(module)

    model = build_model(build_tokenizer(tmp_path / "tok"))
    saes, examples = build_saes(model), build_examples()
    world_sets = [f"world.{k}={v}" for k, v in TINY_WORLD.items()]
    small_eval = ["eval.n_folds=2", "eval.n_repeats=1", "eval.n_bootstrap=20", "eval.baselines=[length,logprob]",
                  "detector.calibration_cv=0"]
    run_cfg = ghost_lens.load_config(None, small_eval)
    toy_cfg = ghost_lens.load_config("toy", [*world_sets, *small_eval, "capture.layers=[0,1]"])
    (tmp_path / "data.csv").write_text("id,group,prompt,answer,label\na,g1,Q?,yes,0\nb,g2,Q2?,no,1\n")
    trace = ghost_lens.capture_trace(model, saes, examples)
    tracking = ghost_lens.track(trace)
    tokens = torch.randint(0, 50, (24, 16), generator=torch.Generator().manual_seed(0))
    calls = {
        "capture_trace": lambda i: ghost_lens.capture_trace(model, saes, examples, ghost_lens.CaptureConfig(top_k=4)),
        "track": lambda i: ghost_lens.track(trace),
        "evaluate": lambda i: ghost_lens.evaluate(trace, tracking, run_cfg),
        "run_pipeline": lambda i: ghost_lens.run_pipeline(model, saes, examples, run_cfg),
        "load_examples": lambda i: ghost_lens.load_examples(str(tmp_path / "data.csv")),
        "load_config": lambda i: ghost_lens.load_config("toy"),
        "get_world": lambda i: ghost_lens.get_world(tiny_world_cfg(), progress=False),
        "load_model": lambda i: ghost_lens.load_model("toy-facts", world_cfg=tiny_world_cfg()),
        "load_bundle": lambda i: ghost_lens.load_bundle(ghost_lens.load_model("toy-facts", world_cfg=tiny_world_cfg()),
                                                        world_cfg=tiny_world_cfg(), progress=False),
        "load_model_and_bundle": lambda i: ghost_lens.load_model_and_bundle(toy_cfg, progress=False),
        "run_track": lambda i: ghost_lens.run_track(toy_cfg, tmp_path / "run", progress=False),
        "load_graphs": lambda i: ghost_lens.load_graphs(tmp_path / "run"),
        "train_saes": lambda i: ghost_lens.train_saes(
            model, tokens, tmp_path / f"saes{i}",
            ghost_lens.SAETrainingConfig(expansion=2, training_tokens=256, train_batch_size_tokens=64, ce_sequences=0),
            progress=False),
    }
    functions = {n for n in ghost_lens.__all__ if inspect.isfunction(getattr(ghost_lens, n))}
    assert functions == set(calls), "every exported function has a call here"
    for name, call in calls.items():
        first, second = call(0), call(1)
        assert type(first) is type(second), name
