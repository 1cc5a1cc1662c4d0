"""Placing spiking layers on Loihi cores under the chip's limits.

Loihi has no weight sharing in its synaptic memory: a conv layer's shared kernel is expanded
into one synapse list per compartment, so a neuron costs ``fan_in x weight_bits`` bits of its
core's 128 KB. Each layer is cut into contiguous neuron ranges (whole spatial rows with all
channels, see ``loihi_kernels``) as large as the core allows: 1,024 compartments, the
synaptic memory, 4,096 input axons (distinct presynaptic sources) and 4,096 output axons
(sum over its neurons of distinct destination cores). Cores are numbered in placement order;
core ``k`` sits on tile ``k // 4`` of an 8 x 4 tile mesh per chip (chips side by side in x).

Chip limits are from Davies et al. 2018 (IEEE Micro), see docs/loihi.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spikeflow.service.errors import GraphError, ModelError

from . import loihi_kernels as K

LAYER_TYPES = ("input", "conv", "pool", "dense")
_DESCRIBE_KEYS = ("name", "type", "in_shape", "out_shape")


class ChipCapacityError(ModelError):
    """The network needs more than one chip (and multi-chip mapping was not allowed)."""

    def __init__(self, message: str, chips_needed: int, cores_needed: int):
        self.chips_needed = chips_needed
        self.cores_needed = cores_needed
        super().__init__(message)


@dataclass(frozen=True)
class ChipLimits:
    """Per-chip and per-core resources of Loihi (Davies et al. 2018)."""

    cores_per_chip: int = 128
    compartments_per_core: int = 1024
    syn_mem_bits_per_core: int = 128 * 1024 * 8
    input_axons_per_core: int = 4096
    output_axons_per_core: int = 4096
    cores_per_tile: int = 4
    mesh_w_tiles: int = 8
    mesh_h_tiles: int = 4


def _shape(value, key: str) -> tuple[int, int, int]:
    try:
        t = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise GraphError(key, f"expected (C, H, W), got {value!r}") from None
    if len(t) != 3 or min(t) <= 0:
        raise GraphError(key, f"expected three positive sizes (C, H, W), got {value!r}")
    return t  # type: ignore[return-value]


@dataclass(frozen=True)
class LayerSpec:
    """One spiking layer as the emulator sees it (the spiking core's ``describe()`` keys).

    Shapes are (C, H, W). ``type`` is input (spike generators, no compartments), conv, pool
    (first-spike pooling: each output sees only its own channel) or dense (a conv whose
    kernel covers the whole input; out_shape (N, 1, 1)). ``learn``: STDP is on, so every
    output spike updates its neuron's incoming synapses.
    """

    name: str
    type: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: int = 0
    n_weights: int = 0
    threshold: float = 0.0
    weight_bits: int | None = None
    learn: bool = False

    @classmethod
    def from_describe(cls, d: dict, key: str = "layer") -> "LayerSpec":
        """Build from a ``describe()`` dict (or a hand-written TOML table); errors name the key."""
        if not isinstance(d, dict):
            raise GraphError(key, f"expected a table, got {type(d).__name__}")
        for k in _DESCRIBE_KEYS:
            if k not in d:
                raise GraphError(f"{key}.{k}", "missing")
        name, typ = str(d["name"]), d["type"]
        if typ not in LAYER_TYPES:
            raise GraphError(f"{key}.type", f"expected one of {list(LAYER_TYPES)}, got {typ!r}")
        in_shape = _shape(d["in_shape"], f"{key}.in_shape")
        out_shape = _shape(d["out_shape"], f"{key}.out_shape")
        kernel = d.get("kernel", (1, 1))
        if typ == "input":  # spike generators: only their output grid matters on chip
            in_shape, kernel, d = out_shape, (1, 1), {**d, "stride": 1, "padding": 0}
        if typ == "dense":
            typ, kernel = "conv", (in_shape[1], in_shape[2])
        try:
            kernel = tuple(int(v) for v in (kernel if isinstance(kernel, (list, tuple)) else (kernel, kernel)))
        except (TypeError, ValueError):
            raise GraphError(f"{key}.kernel", f"expected (kh, kw), got {kernel!r}") from None
        if len(kernel) != 2 or min(kernel) <= 0:
            raise GraphError(f"{key}.kernel", f"expected two positive sizes, got {kernel!r}")
        stride, padding = d.get("stride", 1), d.get("padding", 0)
        for k, v, lo in (("stride", stride, 1), ("padding", padding, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise GraphError(f"{key}.{k}", f"expected an integer >= {lo}, got {v!r}")
        wb = d.get("weight_bits")
        if wb is not None and (isinstance(wb, bool) or not isinstance(wb, (int, np.integer)) or not 1 <= wb <= 9):
            raise GraphError(f"{key}.weight_bits", f"expected an integer in 1..9 or none, got {wb!r}")
        spec = cls(name=name, type=typ, in_shape=in_shape, out_shape=out_shape, kernel=kernel,  # type: ignore[arg-type]
                   stride=int(stride), padding=int(padding), n_weights=int(d.get("n_weights", 0) or 0),
                   threshold=float(d.get("threshold", 0.0) or 0.0),
                   weight_bits=None if wb is None else int(wb), learn=bool(d.get("learn", False)))
        spec.check(key)
        return spec

    def check(self, key: str = "layer") -> None:
        """Shapes consistent with kernel/stride/padding (GraphError naming the key otherwise)."""
        if self.type == "input":
            if self.in_shape != self.out_shape:
                raise GraphError(f"{key}.out_shape", f"input layer must have out_shape == in_shape {self.in_shape}")
            return
        (ic, ih, iw), (oc, oh, ow) = self.in_shape, self.out_shape
        kh, kw = self.kernel
        exp_h = (ih + 2 * self.padding - kh) // self.stride + 1
        exp_w = (iw + 2 * self.padding - kw) // self.stride + 1
        if (oh, ow) != (exp_h, exp_w) or exp_h <= 0 or exp_w <= 0:
            raise GraphError(f"{key}.out_shape", f"{self.type} {self.in_shape} with kernel {self.kernel}, "
                             f"stride {self.stride}, padding {self.padding} gives (H, W) = ({exp_h}, {exp_w}), "
                             f"not ({oh}, {ow})")
        if self.type == "pool" and oc != ic:
            raise GraphError(f"{key}.out_shape", f"pool keeps channels: expected {ic}, got {oc}")

    @property
    def on_chip(self) -> bool:
        return self.type != "input"

    @property
    def n_neurons(self) -> int:
        c, h, w = self.out_shape
        return c * h * w

    def geometry(self) -> np.ndarray:
        """The int64 geometry array the kernels take (see ``loihi_kernels``)."""
        (ic, ih, iw), (oc, oh, ow) = self.in_shape, self.out_shape
        return np.array([ic, ih, iw, oc, oh, ow, self.kernel[0], self.kernel[1], self.stride, self.padding,
                         1 if self.type == "pool" else 0], np.int64)

    def fan_in(self) -> np.ndarray:
        """Synapses stored per neuron, in (y, x, c) order: the receptive field clipped at the borders."""
        if not self.on_chip:
            return np.zeros(self.n_neurons, np.int64)
        (ic, ih, iw), (oc, oh, ow) = self.in_shape, self.out_shape
        kh, kw = self.kernel
        rows = np.array([sum(0 <= oy * self.stride - self.padding + k < ih for k in range(kh)) for oy in range(oh)])
        cols = np.array([sum(0 <= ox * self.stride - self.padding + k < iw for k in range(kw)) for ox in range(ow)])
        per_pos = np.outer(rows, cols).astype(np.int64) * (1 if self.type == "pool" else ic)
        return np.repeat(per_pos.reshape(-1), oc)


def check_chain(layers: list[LayerSpec]) -> None:
    """Layers form a feed-forward chain: each consumes the previous one's output."""
    if not layers:
        raise GraphError("layers", "no layers to map")
    names = set()
    for i, spec in enumerate(layers):
        if spec.name in names:
            raise GraphError(f"layers[{i}].name", f"duplicate layer name {spec.name!r}")
        names.add(spec.name)
        if i and spec.in_shape != layers[i - 1].out_shape:
            raise GraphError(f"layers[{i}].in_shape", f"{spec.name} expects {spec.in_shape} but "
                             f"{layers[i - 1].name} produces {layers[i - 1].out_shape}")
        if i and spec.type == "input":
            raise GraphError(f"layers[{i}].type", "only the first layer may be an input layer")


@dataclass
class LayerPlacement:
    """Where one layer went: its cores (global ids) and their neuron ranges."""

    spec: LayerSpec
    bounds: np.ndarray            # int64[n_cores + 1], neuron ranges
    cores: np.ndarray             # int64[n_cores], global core ids
    fan_in: np.ndarray            # int64[n_neurons]
    syn_bits: np.ndarray          # int64[n_cores]
    input_axons: np.ndarray       # int64[n_cores]
    output_axons: np.ndarray      # int64[n_cores]

    @property
    def n_cores(self) -> int:
        return int(self.cores.shape[0])

    def core_of(self, nid: np.ndarray) -> np.ndarray:
        """Local core index of each neuron id."""
        return np.searchsorted(self.bounds, nid, side="right") - 1


@dataclass
class Mapping:
    """A network placed on cores: per-layer placements and the mesh positions of the cores."""

    layers: list[LayerSpec]
    placements: dict[str, LayerPlacement]
    weight_bits: int
    limits: ChipLimits
    tile_x: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # per global core
    tile_y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    core_neurons: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    core_layer_type: list[str] = field(default_factory=list)

    @property
    def n_cores(self) -> int:
        return int(self.tile_x.shape[0])

    @property
    def chips(self) -> int:
        return max(1, -(-self.n_cores // self.limits.cores_per_chip))

    @property
    def n_tiles(self) -> int:
        return max(1, -(-self.n_cores // self.limits.cores_per_tile))

    def consumer(self, name: str) -> LayerSpec | None:
        """The layer fed by ``name`` (None for the last)."""
        for i, spec in enumerate(self.layers[:-1]):
            if spec.name == name:
                return self.layers[i + 1]
        return None

    def spec(self, name: str) -> LayerSpec:
        for s in self.layers:
            if s.name == name:
                return s
        raise GraphError("layer", f"unknown layer {name!r}; known: {[s.name for s in self.layers]}")

    def summary(self) -> dict:
        """JSON-able mapping report: cores used, utilisation, per-layer and per-core usage."""
        lim = self.limits
        n = max(self.n_cores, 1)
        comp = int(self.core_neurons.sum())
        bits = sum(int(p.syn_bits.sum()) for p in self.placements.values())
        ins = sum(int(p.input_axons.sum()) for p in self.placements.values())
        outs = sum(int(p.output_axons.sum()) for p in self.placements.values())
        per_layer, per_core = [], []
        for spec in self.layers:
            p = self.placements.get(spec.name)
            if p is None:
                per_layer.append({"name": spec.name, "type": spec.type, "neurons": spec.n_neurons, "cores": 0,
                                  "note": "spike generators off-chip (host/sensor interface)"})
                continue
            per_layer.append({"name": spec.name, "type": spec.type, "neurons": spec.n_neurons, "cores": p.n_cores,
                              "synapses": int(p.fan_in.sum()), "max_fan_in": int(p.fan_in.max(initial=0)),
                              "split": p.n_cores > 1})
            for k in range(p.n_cores):
                g = int(p.cores[k])
                per_core.append({"core": g, "layer": spec.name, "neurons": [int(p.bounds[k]), int(p.bounds[k + 1])],
                                 "compartments": int(p.bounds[k + 1] - p.bounds[k]),
                                 "syn_mem_bits": int(p.syn_bits[k]), "input_axons": int(p.input_axons[k]),
                                 "output_axons": int(p.output_axons[k]),
                                 "chip": g // lim.cores_per_chip, "tile": [int(self.tile_x[g]), int(self.tile_y[g])]})
        return {"weight_bits": self.weight_bits, "cores_used": self.n_cores, "chips": self.chips,
                "tiles_used": self.n_tiles, "fits_one_chip": self.n_cores <= lim.cores_per_chip,
                "utilisation": {"compartments": comp / (n * lim.compartments_per_core),
                                "syn_memory": bits / (n * lim.syn_mem_bits_per_core),
                                "input_axons": ins / (n * lim.input_axons_per_core),
                                "output_axons": outs / (n * lim.output_axons_per_core),
                                "chip_cores": self.n_cores / (self.chips * lim.cores_per_chip)},
                "limits": {"cores_per_chip": lim.cores_per_chip, "compartments_per_core": lim.compartments_per_core,
                           "syn_mem_bits_per_core": lim.syn_mem_bits_per_core,
                           "input_axons_per_core": lim.input_axons_per_core,
                           "output_axons_per_core": lim.output_axons_per_core},
                "layers": per_layer, "cores": per_core}


def _split_layer(spec: LayerSpec, fan_in: np.ndarray, bits_per_syn: int, lim: ChipLimits, cap: int,
                 key: str) -> np.ndarray:
    """Greedy contiguous cut of a layer into core ranges; returns the bounds."""
    g = spec.geometry()
    n = spec.n_neurons
    syn_bits = fan_in * bits_per_syn
    if n and int(syn_bits.max()) > lim.syn_mem_bits_per_core:
        raise GraphError(key, f"one neuron of {spec.name} needs {int(fan_in.max())} synapses x {bits_per_syn} bits "
                         f"= {int(syn_bits.max())} bits > {lim.syn_mem_bits_per_core} bits of a core's synaptic memory")
    bounds = [0]
    start = 0
    while start < n:
        end = min(start + cap, n)
        cs = np.cumsum(syn_bits[start:end])
        end = start + int(np.searchsorted(cs, lim.syn_mem_bits_per_core, side="right"))
        if K.input_axon_counts(g, np.array([start, end], np.int64))[0] > lim.input_axons_per_core:
            lo, hi = start + 1, end  # largest end with input axons within the limit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if K.input_axon_counts(g, np.array([start, mid], np.int64))[0] <= lim.input_axons_per_core:
                    lo = mid
                else:
                    hi = mid - 1
            if K.input_axon_counts(g, np.array([start, lo], np.int64))[0] > lim.input_axons_per_core:
                raise GraphError(key, f"one neuron of {spec.name} has more than {lim.input_axons_per_core} "
                                 "presynaptic sources (input axons per core)")
            end = lo
        bounds.append(end)
        start = end
    return np.array(bounds, np.int64)


def map_network(layers: list[LayerSpec], weight_bits: int = 8, limits: ChipLimits | None = None,
                allow_multichip: bool = False, synapse_overhead_bits: int = 0) -> Mapping:
    """Place a feed-forward chain of layers on cores.

    ``weight_bits`` (1-9) is the stored precision per synapse, plus ``synapse_overhead_bits``
    per synapse for formats that store an index with each weight (0: dense lists). Raises
    :class:`ChipCapacityError` naming the chips needed when more than one chip is needed and
    ``allow_multichip`` is false.
    """
    lim = limits or ChipLimits()
    if isinstance(weight_bits, bool) or not isinstance(weight_bits, (int, np.integer)) or not 1 <= weight_bits <= 9:
        raise GraphError("weight_bits", f"expected an integer in 1..9, got {weight_bits!r}")
    check_chain(layers)
    bits_per_syn = int(weight_bits) + int(synapse_overhead_bits)
    caps = {s.name: lim.compartments_per_core for s in layers}
    fan_ins = {s.name: s.fan_in() for s in layers}
    for _ in range(32):
        bounds = {s.name: _split_layer(s, fan_ins[s.name], bits_per_syn, lim, caps[s.name], f"layers[{i}]")
                  for i, s in enumerate(layers) if s.on_chip}
        outs = {name: np.zeros(len(b) - 1, np.int64) for name, b in bounds.items()}
        over = []
        for i, s in enumerate(layers[:-1]):
            if s.on_chip:
                nxt = layers[i + 1]
                outs[s.name] = K.output_axon_counts(nxt.geometry(), bounds[s.name], bounds[nxt.name])
                if int(outs[s.name].max(initial=0)) > lim.output_axons_per_core:
                    over.append(s.name)
        if not over:
            break
        for name in over:  # shrink the cores in proportion to the excess, until the output axons fit
            per_core = int(np.diff(bounds[name]).max())
            if per_core <= 1:
                raise GraphError(f"layers.{name}", "one neuron needs more output axons than a core has")
            worst = int(outs[name].max())
            caps[name] = max(1, min(per_core - 1, per_core * lim.output_axons_per_core // worst))
    else:
        raise GraphError("layers", "could not fit output axons per core after 32 refinements")
    placements: dict[str, LayerPlacement] = {}
    next_core = 0
    core_neurons, core_types = [], []
    for s in layers:
        if not s.on_chip:
            continue
        b = bounds[s.name]
        nc = len(b) - 1
        cs = np.concatenate([[0], np.cumsum(fan_ins[s.name] * bits_per_syn)])
        placements[s.name] = LayerPlacement(
            spec=s, bounds=b, cores=np.arange(next_core, next_core + nc, dtype=np.int64), fan_in=fan_ins[s.name],
            syn_bits=(cs[b[1:]] - cs[b[:-1]]).astype(np.int64), input_axons=K.input_axon_counts(s.geometry(), b),
            output_axons=outs[s.name])
        next_core += nc
        core_neurons.append(np.diff(b))
        core_types += [s.type] * nc
    n_cores = next_core
    if n_cores > lim.cores_per_chip and not allow_multichip:
        chips = -(-n_cores // lim.cores_per_chip)
        detail = ", ".join(f"{n}: {p.n_cores}" for n, p in placements.items())
        raise ChipCapacityError(f"network needs {n_cores} cores > {lim.cores_per_chip} per chip: {chips} chips "
                                f"({detail}); lower weight_bits, shrink layers, or allow multi-chip mapping",
                                chips_needed=chips, cores_needed=n_cores)
    cores = np.arange(n_cores, dtype=np.int64)
    tile = cores // lim.cores_per_tile
    tiles_per_chip = lim.mesh_w_tiles * lim.mesh_h_tiles
    chip, t_in_chip = tile // tiles_per_chip, tile % tiles_per_chip
    return Mapping(layers=list(layers), placements=placements, weight_bits=int(weight_bits), limits=lim,
                   tile_x=chip * lim.mesh_w_tiles + t_in_chip % lim.mesh_w_tiles,
                   tile_y=t_in_chip // lim.mesh_w_tiles,
                   core_neurons=np.concatenate(core_neurons) if core_neurons else np.zeros(0, np.int64),
                   core_layer_type=core_types)
