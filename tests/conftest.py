"""Shared pytest setup: one torch thread (2-core machines), markers, the toy-world cache."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)

# offline_hub / offline_hub_cache: a pre-populated HF cache (tiny gpt2, gpt2-small-res-jb, my-org/tiny-saes)
pytest_plugins = ["tests.helpers.hub"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> str:
    """Path of ../shared/data (third-party files read in place, never copied into the project)."""
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.environ.get("GHOST_LENS_SHARED_DATA", os.path.join(here, "..", "..", "shared", "data"))
    if not os.path.isdir(path):
        pytest.skip(f"shared data not found at {path}")
    return os.path.abspath(path)
