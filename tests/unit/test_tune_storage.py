"""Opening a shared Optuna study: workers that start together race to create the storage's schema; the loser
retries instead of failing, and a real error still ends as one line."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from ghost_lens import tune
from ghost_lens.errors import ConfigError

optuna = pytest.importorskip("optuna")


def _ctx(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(run_dir=tmp_path / "run", eval=SimpleNamespace(seed=0))


def test_a_lost_schema_race_is_retried(tmp_path, monkeypatch):
    real, calls = optuna.create_study, []

    def racing(*args, **kwargs):
        calls.append(kwargs["study_name"])
        if len(calls) == 1:  # what the second of two fresh workers gets from SQLite
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: alembic_version.version_num")
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna, "create_study", racing)
    study = tune._open_study(_ctx(tmp_path), f"sqlite:///{tmp_path / 's.db'}", "shared")
    assert study.study_name == "shared" and len(calls) == 2


def test_a_bad_storage_is_one_line_without_retries(tmp_path, monkeypatch):
    calls = []
    real = optuna.create_study
    monkeypatch.setattr(optuna, "create_study", lambda *a, **k: calls.append(1) or real(*a, **k))
    with pytest.raises(ConfigError, match="cannot open the Optuna study") as err:
        tune._open_study(_ctx(tmp_path), "nosuchdb://x/y", "s")
    assert "\n" not in str(err.value) and len(calls) == 1
