"""Shared test fixtures: where the real recordings live, and skipping when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI explores the same examples on every run (a red CI is then reproducible); local runs keep
# drawing new ones, which is how new bugs are found.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
RECORDINGS = SHARED / "recordings"
IMAGES = SHARED / "images"


def shared_file(rel: str) -> Path:
    """Path of a file under ../shared, skipping the test (with the reason) if ../shared is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent (looked for {SHARED}); real recordings unavailable")
    p = SHARED / rel
    if not p.exists():
        raise FileNotFoundError(f"{p} missing although ../shared exists: check ../shared/recordings/MANIFEST.md")
    return p


@pytest.fixture
def shared():
    """Callable fixture: ``shared("recordings/faery-testdata/evt3.raw")`` -> Path (or skip)."""
    return shared_file
