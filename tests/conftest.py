"""Shared fixtures and the opt-in markers (slow, gpu)."""

from __future__ import annotations

from pathlib import Path

import pytest

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow")
    parser.addoption("--run-gpu", action="store_true", help="run tests that need an NVIDIA GPU")


def pytest_collection_modifyitems(config, items):
    skips = {
        "slow": (config.getoption("--run-slow"), "slow test: run with --run-slow"),
        "gpu": (config.getoption("--run-gpu"), "needs an NVIDIA GPU: run with --run-gpu on a GPU machine"),
    }
    for item in items:
        for marker, (enabled, reason) in skips.items():
            if marker in item.keywords and not enabled:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def real_data() -> Path:
    """The shared real TEM data folder; skips the test when it is absent."""
    if not REAL_DATA.is_dir():
        pytest.skip(f"real TEM data not found at {REAL_DATA} (only in the team's checkout)")
    return REAL_DATA
