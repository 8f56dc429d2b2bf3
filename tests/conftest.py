"""Fixtures shared by the test modules: an isolated environment for the data layer (its own cache, and none
of the caller's mirror / offline / unverified-file settings). Where the shared read-only data are:
tests/_paths.py (`data_dir()`, also usable at import)."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    """GATEDRNN_CACHE in the test's tmp dir: what the test downloads or converts stays there."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GATEDRNN_CACHE", str(cache))
    return cache


@pytest.fixture
def data_env(own_cache, monkeypatch) -> Path:
    """The data layer as on a fresh machine: its own empty cache and no GATEDRNN_MIRROR, GATEDRNN_OFFLINE or
    GATEDRNN_ALLOW_UNVERIFIED from the caller's shell (a test sets what it needs). Returns the cache."""
    for v in ("GATEDRNN_MIRROR", "GATEDRNN_OFFLINE", "GATEDRNN_ALLOW_UNVERIFIED"):
        monkeypatch.delenv(v, raising=False)
    return own_cache
