"""Shared fixtures: where the real face data lives, and cached model objects."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test with a reason when it is not there."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real face data not found at {path} (expected ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def analyzer():
    from facewire.tracker.analysis import FaceAnalyzer
    return FaceAnalyzer()


@pytest.fixture(scope="session")
def detector():
    from facewire.tracker.detection import FaceDetector
    return FaceDetector("auto")
