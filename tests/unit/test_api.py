import subprocess
import sys

import ghost_lens


def test_public_api_names_resolve():
    for name in ghost_lens.__all__:
        assert getattr(ghost_lens, name) is not None, name


def test_cli_and_package_import_without_torch():
    """`ghost-lens --help` must stay fast: no torch / sae_lens / sklearn at import time."""
    code = (
        "import sys, ghost_lens, ghost_lens_cli.main; "
        "heavy = [m for m in ('torch', 'sae_lens', 'transformer_lens', 'sklearn') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hook_names_round_trip():
    from ghost_lens.hooks import hook_name, parse_hook_name

    for layer in (0, 7, 23):
        for kind in ("resid_pre", "resid_post", "mlp_out"):
            assert parse_hook_name(hook_name(layer, kind)) == (layer, kind)


def test_capture_is_the_subpackage_and_capture_trace_the_stage():
    """``ghost_lens.capture`` used to be both the exported function and the subpackage: importing any
    ``ghost_lens.capture.*`` module replaced the function by the module."""
    import types

    import ghost_lens.capture.trace  # noqa: F401  (what used to shadow the function)

    assert isinstance(ghost_lens.capture, types.ModuleType) and ghost_lens.capture.__name__ == "ghost_lens.capture"
    assert callable(ghost_lens.capture_trace) and ghost_lens.capture_trace.__module__ == "ghost_lens.pipeline"
    assert "capture" not in ghost_lens.__all__
    # in a fresh interpreter, before anything imported the subpackage, the name means the same
    code = ("import types, ghost_lens; first = ghost_lens.capture; ghost_lens.FeatureTrace; "
            "assert isinstance(first, types.ModuleType) and first is ghost_lens.capture; "
            "assert ghost_lens.capture_trace.__name__ == 'capture_trace'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

