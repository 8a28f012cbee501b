"""The run folder's rules (ghost_lens.run_folder): the capture's own key, torn manifests, old formats, the folder lock."""

from __future__ import annotations

import json
import os
import time

import pytest

from ghost_lens import constants as C
from ghost_lens.config import RunConfig, load_config
from ghost_lens.errors import BusyError, RunFolderError
from ghost_lens.run_folder import RUN_FORMAT, capture_key, capture_key_parts, open_run_folder


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(C.CACHE_ENV, str(tmp_path / "cache"))


def _cfg(*overrides: str) -> RunConfig:
    return load_config(None, ["dataset=data.csv", *overrides])


def _fake_capture(folder, cfg: RunConfig, key: str | None = None) -> None:
    """What a capture leaves that the reuse decision reads (its ``capture.json`` with the key it was made for)."""
    cap = folder / "capture"
    cap.mkdir(exist_ok=True)
    (cap / C.CAPTURE_META).write_text(json.dumps({"capture_key": key or capture_key(cfg),
                                                  "layers": cfg.capture.layers}))


def _complete_run(out, cfg: RunConfig) -> None:
    with open_run_folder(out, cfg) as folder:
        _fake_capture(out, cfg)
        folder.finish()


def test_interrupted_force_run_with_new_layers_does_not_reuse_the_old_capture(tmp_path):
    """The issue's scenario: `track --force --layers ...` dies before its capture; the rerun without --force finds
    a config.yaml and manifest of the new config, but the capture still carries the old config's key."""
    out, old, new = tmp_path / "run", _cfg("capture.layers=[0,1]"), _cfg("capture.layers=[1]")
    _complete_run(out, old)
    with open_run_folder(out, old) as again:
        assert again.reuse_capture  # same config, capture made for it
    with open_run_folder(out, new, force=True) as forced:
        assert not forced.reuse_capture  # ... killed here, before its capture
    with open_run_folder(out, new) as rerun:
        assert not rerun.reuse_capture
    assert json.loads((out / "capture" / C.CAPTURE_META).read_text())["layers"] == [0, 1]  # nothing deleted


def test_capture_key_follows_sae_weights_retrained_in_place(tmp_path):
    sae = tmp_path / "saes" / "blocks.0.hook_resid_post"
    sae.mkdir(parents=True)
    (sae / C.SAE_CFG).write_text('{"d_sae": 64}')
    (sae / C.SAE_WEIGHTS).write_bytes(b"0" * 100)
    cfg = _cfg(f"sae_dir={tmp_path / 'saes'}")
    k1 = capture_key(cfg)
    assert capture_key(cfg) == k1  # reading changes nothing
    (sae / C.SAE_WEIGHTS).write_bytes(b"1" * 100)  # same size, new mtime
    st = (sae / C.SAE_WEIGHTS).stat()
    os.utime(sae / C.SAE_WEIGHTS, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    k2 = capture_key(cfg)
    (sae / C.SAE_CFG).write_text('{"d_sae": 65}')
    k3 = capture_key(cfg)
    assert len({k1, k2, k3}) == 3


def test_capture_key_of_a_release_follows_the_cached_revision(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = _cfg("model=gpt2", "sae_release=gpt2-small-res-jb")
    saes = capture_key_parts(cfg)["saes"]
    assert saes["release"] == "gpt2-small-res-jb" and saes["revision"] is None
    ref = tmp_path / "hub" / f"models--{saes['repo'].replace('/', '--')}" / "refs" / "main"
    ref.parent.mkdir(parents=True)
    ref.write_text("a" * 40)
    k1 = capture_key(cfg)
    ref.write_text("b" * 40)
    assert capture_key(cfg) != k1
    assert capture_key_parts(cfg)["saes"]["revision"] == "b" * 40


def test_truncated_manifest_counts_as_a_run_that_failed_early(tmp_path):
    out = tmp_path / "run"
    _complete_run(out, _cfg())
    (out / C.MANIFEST).write_text('{"ghost_lens_run": 1, "conf')  # a crash of an older ghost-lens mid-write
    with open_run_folder(out, _cfg("capture.top_k=16")) as folder:  # another config, yet no --force needed
        assert not folder.reuse_capture  # the capture was made for top_k 64
    manifest = json.loads((out / C.MANIFEST).read_text())
    assert manifest["format_version"] == RUN_FORMAT and manifest["config"]["capture"]["top_k"] == 16


def test_truncated_manifest_with_the_same_config_still_reuses_the_keyed_capture(tmp_path):
    out = tmp_path / "run"
    _complete_run(out, _cfg())
    (out / C.MANIFEST).write_text("")
    with open_run_folder(out, _cfg()) as folder:
        assert folder.reuse_capture  # the capture's own key decides, not the manifest


def test_run_of_an_older_format_is_refused_until_forced(tmp_path):
    out = tmp_path / "run"
    _complete_run(out, _cfg())
    manifest = json.loads((out / C.MANIFEST).read_text())
    del manifest["format_version"]  # what ghost-lens wrote before format versions
    (out / C.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(RunFolderError, match="older ghost-lens run format") as exc:
        open_run_folder(out, _cfg())
    assert "--force" in str(exc.value) and "--out" in str(exc.value)
    with open_run_folder(out, _cfg(), force=True) as folder:
        assert folder.manifest["format_version"] == RUN_FORMAT


def test_a_foreign_folder_gets_nothing_written_into_it(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not a ghost-lens run folder"):
        open_run_folder(tmp_path, _cfg(), force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_folder_in_use_is_refused_with_pid_and_host(tmp_path):
    out = tmp_path / "run"
    with open_run_folder(out, _cfg()):
        t0 = time.perf_counter()
        with pytest.raises(BusyError, match=rf"run folder {out} is in use by pid {os.getpid()} on host "):
            open_run_folder(out, _cfg())
        assert time.perf_counter() - t0 < 5  # fails at once, does not wait
    with open_run_folder(out, _cfg()) as folder:  # released: usable again
        assert folder.manifest["format_version"] == RUN_FORMAT


def test_a_run_killed_while_writing_its_first_file_does_not_block_the_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".ghost-lens.lock").touch()
    (out / ".ghost-lens.lock.owner").write_text('{"pid": 999999, "host": "elsewhere"}')
    (out / f".{C.CONFIG}.tmp-999999-0123abcd").write_text("model: toy-f")  # SIGKILL mid-write
    with open_run_folder(out, _cfg()) as folder:
        assert not folder.reuse_capture
    assert not (out / f".{C.CONFIG}.tmp-999999-0123abcd").exists()
    assert (out / C.CONFIG).is_file()


def test_a_folder_may_be_rerun_on_another_device_but_not_another_dtype():
    import dataclasses

    from ghost_lens.config import RunConfig
    from ghost_lens.run_folder import config_diff

    cfg = RunConfig()
    assert config_diff(cfg, dataclasses.replace(cfg, device="auto")) == []
    other = dataclasses.replace(cfg, capture=dataclasses.replace(cfg.capture, dtype="bfloat16"))
    assert config_diff(cfg, other) == ["capture.dtype"]


# ---- where runs live (what `track` writes and `explain` / `interpret` / `tune` read without --out / --run) -----


def test_default_run_dir_names_the_model_and_the_dataset():
    from pathlib import Path

    from ghost_lens.run_folder import DEFAULT_RUN_DIR, default_run_dir

    assert default_run_dir("toy-facts", "toy-facts") == Path("runs/toy-facts_toy-facts")
    assert default_run_dir("EleutherAI/pythia-70m", "truthfulqa") == Path("runs/EleutherAI_pythia-70m_truthfulqa")
    assert default_run_dir("gpt2", "data/my qa.csv") == Path("runs/gpt2_my qa")  # a file: its stem
    assert DEFAULT_RUN_DIR == default_run_dir(RunConfig().model, RunConfig().dataset)  # a bare `ghost-lens track`


def test_existing_run_dir_returns_the_folder_or_says_how_to_make_it(tmp_path, monkeypatch):
    from ghost_lens.run_folder import DEFAULT_RUN_DIR, existing_run_dir

    run = tmp_path / "run"
    run.mkdir()
    assert existing_run_dir(run) == run
    assert existing_run_dir(str(run)) == run
    with pytest.raises(RunFolderError, match=r"no run folder at .*missing: run `ghost-lens track` first$"):
        existing_run_dir(tmp_path / "missing")  # --run was given: no "pass --run" hint
    monkeypatch.chdir(tmp_path)
    for default in (None, ""):
        with pytest.raises(RunFolderError, match=rf"^no run folder at {DEFAULT_RUN_DIR}: .* first, or pass --run$"):
            existing_run_dir(default)
    (tmp_path / DEFAULT_RUN_DIR).mkdir(parents=True)
    assert existing_run_dir(None) == DEFAULT_RUN_DIR


def test_readers_refuse_a_run_that_track_is_writing(tmp_path):
    """explain / interpret / tune check the run's lock: a track holding it is one line naming the holder; a free
    lock lets them in (and leaves it free); a folder without a lock file gets nothing written into it."""
    from ghost_lens.explain import explain
    from ghost_lens.interpret import interpret_run
    from ghost_lens.io import exclusive_lock
    from ghost_lens.run_folder import RUN_LOCK, check_not_being_written
    from ghost_lens.tune import tune

    run = tmp_path / "run"
    run.mkdir()
    check_not_being_written(run)
    assert list(run.iterdir()) == []
    with exclusive_lock(run / RUN_LOCK, f"run folder {run}"):  # what a running track holds
        for read in (lambda: check_not_being_written(run), lambda: interpret_run(run, 0), lambda: tune(run),
                     lambda: explain(run, "a prompt", "an answer")):
            with pytest.raises(BusyError, match=f"run folder {run} is in use by pid"):
                read()
    check_not_being_written(run)
    with exclusive_lock(run / RUN_LOCK, "again", timeout=0):  # released again afterwards
        pass
