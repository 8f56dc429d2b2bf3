"""Where the tests find the shared, read-only data (never copied into the repo).

env GATEDRNN_DATA_DIR, else <repo>/../shared/data (the CI machine has ../shared beside the checkout).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# read once, at import: tests that isolate the environment (delenv GATEDRNN_DATA_DIR) still find the data
_ENV = os.environ.get("GATEDRNN_DATA_DIR")


def data_dir() -> Path:
    d = Path(_ENV) if _ENV else REPO.parent / "shared" / "data"
    if not (d / "music").is_dir():
        raise FileNotFoundError(
            f"test data not found at {d} (expected {d}/music/JSB_Chorales.mat, ...); set GATEDRNN_DATA_DIR "
            "to the shared data folder")
    return d


def music_file(name: str) -> Path:
    return data_dir() / "music" / name
