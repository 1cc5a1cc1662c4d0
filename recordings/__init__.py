"""Bundled simulated recordings (see README.md here); ``path(name)`` finds one on disk."""

from pathlib import Path

HERE = Path(__file__).resolve().parent


def path(name: str) -> Path:
    """Absolute path of a bundled recording, raising FileNotFoundError with the list if absent."""
    p = HERE / name
    if not p.exists():
        have = sorted(x.name for x in HERE.iterdir() if x.suffix not in {".py", ".pyc"})
        raise FileNotFoundError(f"no bundled recording {name!r} in {HERE}; have: {have}")
    return p
