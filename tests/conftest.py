"""Shared pytest fixtures: paths to shared data and a fresh store per test."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ["fixtures_broker"]

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"{SHARED_DATA} absent: shared evaluation data not checked out beside the repo")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty MEMTAPE_HOME on a temporary directory."""
    path = tmp_path / "memtape-data"
    os.environ["MEMTAPE_HOME"] = str(path)
    yield path
    os.environ.pop("MEMTAPE_HOME", None)
