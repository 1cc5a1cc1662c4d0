"""``spikeflow inspect WEIGHTS.npz -o fields.png``: learned receptive fields of every layer.

Layer 1 fields are shown as ON − OFF weights (2 input channels) or the channel mean. Deeper
layers are back-projected into input pixels through the layers below (each synapse adds the
field of its input map, shifted by the accumulated stride; pooling counts as subsampling), the
usual approximation for visualising deep STDP features. Each layer becomes one tile mosaic,
every field scaled to its own [−1, 1] (red = ON / excitatory, blue = OFF).

matplotlib is an optional extra (``pip install 'spikeflow[plot]'``), imported only here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from spikeflow.service.errors import ModelError, SpikeflowError


def add_arguments(parser) -> None:
    parser.add_argument("weights", help="learned-state .npz (Network.save, a daemon snapshot of snn_conv nodes)")
    parser.add_argument("-o", "--output", default=None, help="PNG to write (default: WEIGHTS with .png suffix)")
    parser.add_argument("--layers", default=None, help="comma-separated layer names (default: every conv layer)")
    parser.add_argument("--cols", type=int, default=0, help="fields per mosaic row (default: about square)")
    parser.add_argument("--dpi", type=int, default=100, help="PNG resolution")


def _conv_order(layers: dict[str, dict[str, np.ndarray]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Geometry of every layer, in network order: from the metadata when present, else the
    conv layers sorted by name (stride 1, no pooling assumed)."""
    described = [d for d in meta.get("layers", []) if isinstance(d, dict) and "name" in d]
    if described:
        return described
    return [{"name": n, "type": "conv", "stride": 1} for n in sorted(layers) if "weights" in layers[n]]


def receptive_fields(layers: dict[str, dict[str, np.ndarray]], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """{conv layer name: (F, h, w) signed fields in input pixels}."""
    fields: dict[str, np.ndarray] = {}
    prev: np.ndarray | None = None      # fields of the maps feeding the next conv layer
    stride = 1                          # input pixels per step of the current map grid
    for d in _conv_order(layers, meta):
        name = d["name"]
        if d.get("type") == "pool":
            stride *= int(d.get("stride", 1))
            continue
        if d.get("type") != "conv":
            continue
        if name not in layers or "weights" not in layers[name]:
            raise ModelError(f"key {name}/weights missing (layers in file: {sorted(layers)})")
        w = np.asarray(layers[name]["weights"], dtype=np.float64)
        if w.ndim != 4:
            raise ModelError(f"key {name}/weights: expected (C_out, C_in, kh, kw), got shape {w.shape}")
        f_n, c_in, kh, kw = w.shape
        if prev is None:
            out = w[:, 0] - w[:, 1] if c_in == 2 else w.mean(axis=1)
        else:
            if prev.shape[0] != c_in:
                raise ModelError(f"key {name}/weights: {c_in} input maps but the layer below has {prev.shape[0]}")
            ph, pw = prev.shape[1:]
            out = np.zeros((f_n, (kh - 1) * stride + ph, (kw - 1) * stride + pw))
            for ky in range(kh):
                for kx in range(kw):
                    # Σ_c W[f, c, ky, kx] · field_c, placed at the synapse's offset
                    contrib = np.tensordot(w[:, :, ky, kx], prev, axes=(1, 0))
                    out[:, ky * stride:ky * stride + ph, kx * stride:kx * stride + pw] += contrib
        fields[name] = out
        prev = out
        stride *= int(d.get("stride", 1))
    return fields


def mosaic(fields: np.ndarray, cols: int = 0) -> np.ndarray:
    """Tile (F, h, w) fields, each scaled by its max |value|, with NaN gutters."""
    f_n, h, w = fields.shape
    cols = cols or max(1, math.ceil(math.sqrt(f_n)))
    rows = math.ceil(f_n / cols)
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i in range(f_n):
        r, c = divmod(i, cols)
        peak = np.abs(fields[i]).max()
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = fields[i] / peak if peak > 0 else 0.0
    return out


def render(fields: dict[str, np.ndarray], output: Path, cols: int = 0, dpi: int = 100,
           stats: dict[str, str] | None = None) -> Path:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpikeflowError("matplotlib is not installed: pip install 'spikeflow[plot]'") from None
    tiles = {name: mosaic(f, cols) for name, f in fields.items()}
    fig, axes = plt.subplots(len(tiles), 1, figsize=(8, 4 * len(tiles)), squeeze=False)
    cmap = matplotlib.colormaps["RdBu_r"].copy()
    cmap.set_bad("white")
    for ax, (name, img) in zip(axes[:, 0], tiles.items()):
        f_n, h, w = fields[name].shape
        ax.imshow(img, cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{name}: {f_n} maps, fields {h}×{w} px" + (f" — {stats[name]}" if stats and name in stats else ""))
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(output, dpi=dpi)
    plt.close(fig)
    return output


def run(args) -> int:
    from spikeflow.nodes.learned_state import load_state

    path = Path(args.weights)
    layers, meta = load_state(path)
    try:
        fields = receptive_fields(layers, meta)
    except ModelError as e:
        raise ModelError(f"{path}: {e}") from None
    if args.layers:
        wanted = [s.strip() for s in args.layers.split(",") if s.strip()]
        unknown = [n for n in wanted if n not in fields]
        if unknown:
            raise SpikeflowError(f"--layers: no conv layer {unknown[0]!r} in {path}; has {sorted(fields)}")
        fields = {n: fields[n] for n in wanted}
    if not fields:
        raise ModelError(f"{path}: no conv layer weights to show")
    stats = {}
    for name in fields:
        w = np.asarray(layers[name]["weights"], dtype=np.float64)
        n_learned = int(layers[name]["n_learned"]) if "n_learned" in layers[name] else 0
        stats[name] = f"C={float(np.mean(w * (1 - w))):.4f}, {n_learned} samples learned"
    output = Path(args.output) if args.output else path.with_suffix(".png")
    render(fields, output, args.cols, args.dpi, stats)
    for name, f in fields.items():
        print(f"{name}: {f.shape[0]} maps, fields {f.shape[1]}x{f.shape[2]} px, {stats[name]}")
    print(f"wrote {output}")
    return 0
