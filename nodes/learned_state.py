"""Learned state on disk: one ``.npz`` holding every layer's arrays plus JSON metadata.

Layout: array ``<layer>/<key>`` for each layer's state entry (e.g. ``conv1/weights``) and
``__meta__``, a JSON string ``{"format": "spikeflow-learned-state", "version": 1, "layers":
[describe() dicts, in order], ...}``. ``allow_pickle`` stays off: nothing but arrays and JSON.
Every problem raises :class:`ModelError` naming the file and the key.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from spikeflow.service.errors import ModelError

FORMAT = "spikeflow-learned-state"
VERSION = 1
META_KEY = "__meta__"


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def save_state(path: str | os.PathLike, layers: dict[str, dict[str, np.ndarray]],
               metadata: dict[str, Any] | None = None) -> Path:
    """Write ``{layer: {key: array}}`` and metadata to ``path`` (atomically: temp file + rename)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    for layer, state in layers.items():
        if "/" in layer:
            raise ModelError(f"{path}: layer name {layer!r} must not contain '/'")
        for key, arr in state.items():
            arrays[f"{layer}/{key}"] = np.asarray(arr)
    meta = {"format": FORMAT, "version": VERSION, **_jsonable(metadata or {})}
    arrays[META_KEY] = np.array(json.dumps(meta))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def load_state(path: str | os.PathLike) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Read what :func:`save_state` wrote: ``(layers, metadata)``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such learned-state file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ModelError(f"{path}: not a learned-state .npz ({type(e).__name__}: {e})") from None
    if META_KEY not in data:
        raise ModelError(f"{path}: key {META_KEY!r} missing (not written by spikeflow)")
    try:
        meta = json.loads(str(data.pop(META_KEY)))
    except ValueError as e:
        raise ModelError(f"{path}: key {META_KEY!r} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError(f"{path}: key {META_KEY!r}: format is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise ModelError(f"{path}: key {META_KEY!r}: unsupported version {meta.get('version')!r} (expected {VERSION})")
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in data.items():
        layer, sep, name = key.partition("/")
        if not sep:
            raise ModelError(f"{path}: key {key!r} is not of the form <layer>/<name>")
        layers.setdefault(layer, {})[name] = arr
    return layers, meta


def check_state(state: dict[str, np.ndarray], expected: dict[str, np.ndarray], where: str) -> None:
    """Raise ModelError naming ``where``/key (``where`` is e.g. ``"w.npz: conv1"``) when keys,
    shapes or dtype kinds differ from ``expected``."""
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelError(f"{where}/{missing[0]}: key missing; has {sorted(state)}")
    unknown = sorted(set(state) - set(expected))
    if unknown:
        raise ModelError(f"{where}/{unknown[0]}: unexpected key; expected {sorted(expected)}")
    for key, ref in expected.items():
        got = np.asarray(state[key])
        if got.shape != np.shape(ref):
            raise ModelError(f"{where}/{key}: shape {got.shape} does not match the layer's {np.shape(ref)}")
        if got.dtype.kind not in "biuf":
            raise ModelError(f"{where}/{key}: dtype {got.dtype} is not numeric")
