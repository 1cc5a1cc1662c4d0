"""Model bundles: one ``.npz`` holding the graph, every node's learned state and the metadata.

A bundle is a daemon snapshot (``node/key`` arrays, see :mod:`spikeflow.service.control`) plus
two reserved entries, so ``spikeflow serve GRAPH --snapshot MODEL.npz`` and ``load`` accept it
as is:

- ``__graph__``: the graph TOML text (uint8), the nodes the state belongs to;
- ``__meta__``: JSON (uint8): data source, seed, class names, training figures, versions.

Plain arrays only, ``allow_pickle=False`` on load.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spikeflow.service.errors import ModelError

GRAPH_KEY = "__graph__"
META_KEY = "__meta__"


@dataclass
class Bundle:
    graph_text: str
    state: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def node_state(self, node: str) -> dict[str, np.ndarray]:
        prefix = node + "/"
        return {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}


def versions() -> dict[str, str]:
    """Versions that decide whether a bundle reproduces: ours, Python, numpy, numba."""
    import numba

    from spikeflow import __version__

    return {"spikeflow": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__}


def save_bundle(path: str | os.PathLike, graph_text: str, state: dict[str, np.ndarray],
                meta: dict[str, Any]) -> Path:
    """Write atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ModelError(f"{path}: a model bundle must end in .npz")
    bad = [k for k in state if "/" not in k]
    if bad:
        raise ModelError(f"{path}: state keys must be node/key, got {bad[:3]}")
    meta = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": versions(), **meta}
    arrays = {GRAPH_KEY: np.frombuffer(graph_text.encode(), dtype=np.uint8),
              META_KEY: np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
              **{k: np.asarray(v) for k, v in state.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def is_bundle(path: str | os.PathLike) -> bool:
    p = Path(path)
    if p.suffix != ".npz" or not p.is_file():
        return False
    try:
        with np.load(p, allow_pickle=False) as z:
            return GRAPH_KEY in z.files
    except (OSError, ValueError):
        return False


def load_bundle(path: str | os.PathLike) -> Bundle:
    """Read a bundle; ModelError naming the file and the missing/corrupt entry."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"{p}: no such model bundle")
    try:
        with np.load(p, allow_pickle=False) as z:
            files = set(z.files)
            for key in (GRAPH_KEY, META_KEY):
                if key not in files:
                    raise ModelError(f"{p}: not a model bundle (entry {key!r} missing)")
            graph = bytes(z[GRAPH_KEY]).decode()
            meta = json.loads(bytes(z[META_KEY]).decode())
            state = {k: z[k] for k in files if k not in (GRAPH_KEY, META_KEY)}
    except ModelError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{p}: unreadable model bundle: {e}") from None
    return Bundle(graph, state, meta)


def bundled_model_path() -> Path:
    """The gesture model shipped with spikeflow (trained by ``recordings/make_model.py``)."""
    from spikeflow import recordings

    return recordings.HERE / "gesture_model.npz"
