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
