"""The work behind ``spikeflow loihi report``: build the network, run the recordings, charge the chip.

Kept apart from ``cli_loihi`` so ``spikeflow --help`` never imports numba. Also usable from
Python: :func:`report_network` takes a ``Network`` and event arrays directly.
"""

from __future__ import annotations

import glob
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from spikeflow.nodes.loihi_costs import CostProfile, load_profile
from spikeflow.nodes.loihi_mapping import LayerSpec, Mapping, map_network
from spikeflow.nodes.loihi_model import fixed_point_report, run_traffic
from spikeflow.service.errors import GraphError, ModelError, SpikeflowError
from spikeflow.service.events import EVENT_DTYPE

RAPL_GLOB = "/sys/class/powercap/intel-rapl*/energy_uj"


# -- the network ---------------------------------------------------------------------------------

def network_from_model(path: str | Path):
    """A ``Network`` rebuilt from a model bundle (weights + describe() geometry)."""
    from spikeflow.nodes.learned_state import load_state
    from spikeflow.nodes.snn import FirstSpikePool, Network, SpikingConv

    states, meta = load_state(path)
    describes = meta.get("layers")
    if not isinstance(describes, list) or not describes:
        raise ModelError(f"{path}: key __meta__.layers: missing; not a Network bundle")
    layers = []
    for i, d in enumerate(describes):
        spec = LayerSpec.from_describe(d, key=f"{path}: __meta__.layers[{i}]")
        c, h, w = spec.in_shape
        if spec.type == "conv":
            conv = SpikingConv(c, spec.out_shape[0], spec.kernel, spec.threshold, stride=spec.stride,
                               padding=spec.padding, name=spec.name, in_hw=(h, w))
            if spec.name not in states:
                raise ModelError(f"{path}: key {spec.name}/weights missing")
            conv.load_state(states[spec.name], where=f"{path}: {spec.name}")
            layers.append(conv)
        elif spec.type == "pool":
            layers.append(FirstSpikePool(spec.kernel[0], spec.stride, spec.padding, name=spec.name,
                                         in_shape=spec.in_shape))
        else:
            raise ModelError(f"{path}: __meta__.layers[{i}].type: {spec.type!r} cannot be rebuilt")
    return Network(layers)


def network_from_graph(path: str | Path, weights: str | None = None, overrides: list[str] | None = None):
    """``(Network, encoder)`` of a graph: its spiking layer nodes in graph order, set up with their
    real metas, and the encoder node feeding them (``(node, in_meta, LayerSpec)``) or None."""
    from spikeflow.nodes.snn import Network
    from spikeflow.service.graph import load_graph, resolve_metas

    spec = load_graph(path, overrides=overrides)
    metas, built = resolve_metas(spec)
    encoder = None
    try:
        layers = [built[n].layer for n in spec.order if hasattr(built[n], "describe") and hasattr(built[n], "layer")]
        for n in spec.order:
            node = built[n]
            if hasattr(node, "describe") and not hasattr(node, "layer") and node.describe().get("type") == "input":
                ins = {port: metas[(i.node, i.out_port)] for port, i in spec.nodes[n].inputs.items()}
                encoder = (node, ins, LayerSpec.from_describe(node.describe(), key=f"nodes.{n}"))
    finally:
        for node in built.values():
            if encoder is None or node is not encoder[0]:
                try:
                    node.close()
                except Exception:  # noqa: BLE001 - a dry build; closing must not mask anything
                    pass
    if not layers:
        raise GraphError("nodes", f"{path}: no spiking layer nodes (snn_conv / snn_pool) to map")
    net = Network(layers)
    if weights:
        net.load(weights)
    return net, encoder


def specs_of(net, input_name: str = "input") -> list[LayerSpec]:
    """The input layer (spike generators on the first layer's input grid) plus every layer's spec."""
    ds = net.describe()
    first = LayerSpec.from_describe(ds[0], key="layers[0]")
    inp = LayerSpec(name=input_name, type="input", in_shape=first.in_shape, out_shape=first.in_shape)
    return [inp] + [LayerSpec.from_describe(d, key=f"layers[{i}]") for i, d in enumerate(ds)]


def spec_toml(specs: list[LayerSpec]) -> str:
    """``[[layers]]`` TOML of ``specs`` (what ``loihi_emulator``'s ``spec_file`` reads)."""
    out = []
    for s in specs:
        rows = {"name": f'"{s.name}"', "type": f'"{s.type}"', "in_shape": list(s.in_shape),
                "out_shape": list(s.out_shape), "kernel": list(s.kernel), "stride": s.stride,
                "padding": s.padding, "n_weights": s.n_weights, "threshold": s.threshold}
        out.append("[[layers]]\n" + "".join(f"{k} = {v}\n" for k, v in rows.items()))
    return "\n".join(out)


def load_spec_toml(path: str | Path) -> list[LayerSpec]:
    from spikeflow.nodes.loihi import load_layer_specs

    return load_layer_specs(path, key=str(path))


# -- measurements on this CPU ---------------------------------------------------------------------

def read_rapl_uj() -> tuple[int | None, str]:
    """Sum of the package energy counters (uJ), or None with the reason they are unreadable."""
    paths = sorted(glob.glob(RAPL_GLOB))
    if not paths:
        return None, f"no RAPL counters on this machine ({RAPL_GLOB} matches nothing)"
    total = 0
    for p in paths:
        try:
            total += int(Path(p).read_text().strip())
        except (OSError, ValueError) as e:
            return None, f"RAPL counter {p} unreadable ({type(e).__name__}: {e})"
    return total, "RAPL " + ", ".join(paths)


def cpu_row(fn, repeats: int) -> dict[str, Any]:
    """Median wall time of the workload ``fn`` and, if RAPL is readable, its energy."""
    fn()  # warm-up (JIT)
    walls, energies, note = [], [], ""
    for _ in range(max(1, repeats)):
        e0, note = read_rapl_uj()
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        e1, _ = read_rapl_uj()
        if e0 is not None and e1 is not None and e1 >= e0:
            energies.append(e1 - e0)
    row = {"wall_ms": float(np.median(walls)) * 1e3, "repeats": len(walls), "cpu": platform.processor() or platform.machine(),
           "threads": 1}
    if energies:
        row["energy_uj"] = float(np.median(energies))
        row["energy_source"] = note + " (whole package: includes everything else running)"
    else:
        row["energy_uj"] = None
        row["energy_source"] = f"not measured: {note}"
    return row


# -- one inference ---------------------------------------------------------------------------------

def encode_events(events: np.ndarray, in_shape: tuple[int, int, int], t0_us: int, step_us: int, time_steps: int,
                  where: str) -> np.ndarray:
    """Recording events -> int32 first-spike-time map (C, H, W) (p = polarity = channel)."""
    from spikeflow.nodes.snn import times_from_packet

    c, h, w = in_shape
    ev = events
    if c == 1:
        ev = ev.copy()
        ev["p"] = 0
    elif c != 2:
        raise ModelError(f"{where}: the network's input has {c} channels; recordings give 2 (polarity)")
    if len(ev) and (int(ev["x"].max()) >= w or int(ev["y"].max()) >= h):
        raise ModelError(f"{where}: events reach x={int(ev['x'].max())}, y={int(ev['y'].max())} beyond the "
                         f"network input {w}x{h}")
    return times_from_packet(ev, in_shape, t0_us, step_us, time_steps)


Sample = tuple[str, int, int, int, np.ndarray]
"""One inference: (name, t_start_us, step_us, time_steps, int32 spike-time map (C, H, W))."""


def polarity_samples(where: str, events: np.ndarray, in_shape: tuple[int, int, int], time_steps: int,
                     window_us: int = 0) -> list[Sample]:
    """A recording cut into windows (default: one), each encoded as first event per pixel and step."""
    if len(events) == 0:
        raise ModelError(f"{where}: no events")
    t_first, t_last = int(events["t"][0]), int(events["t"][-1])
    span = window_us or (t_last - t_first + 1)
    step_us = max(1, -(-span // time_steps))
    out = []
    for k, t0 in enumerate(range(t_first, t_last + 1, span)):
        sl = events[(events["t"] >= t0) & (events["t"] < t0 + span)]
        out.append((where if window_us == 0 else f"{where}#{k}", t0, step_us, time_steps,
                    encode_events(sl, in_shape, t0, step_us, time_steps, where)))
    return out


def encoder_samples(where: str, events: np.ndarray, encoder, in_meta: dict, in_shape) -> list[Sample]:
    """A recording through a graph's own encoder node (one sample per spikes packet it emits)."""
    from spikeflow.nodes.snn import times_from_packet
    from spikeflow.service.packet import events_packet

    if len(events) == 0:
        raise ModelError(f"{where}: no events")
    encoder.setup(in_meta)   # fresh windows for every recording
    size = next(iter(in_meta.values())).sensor_size
    pk = events_packet(events, f"{where}", 0, size, int(events["t"][0]), int(events["t"][-1]) + 1)
    outs = encoder.process("events_in", pk).get("spikes_out", []) + encoder.flush().get("spikes_out", [])
    samples = []
    for k, o in enumerate(outs):
        d = o.data or {}
        T, step, t0 = int(d["time_steps"]), int(d["step_us"]), int(d["t_start_us"])
        samples.append((f"{where}#{k}", t0, step, T, times_from_packet(o.events, in_shape, t0, step, T)))
    return samples


def report_network(net, samples: list[Sample], profile: CostProfile, weight_bits: int = 8,
                   learn: tuple[str, ...] = (), fixed_point: bool = False, multichip: bool = False,
                   repeats: int = 3, input_name: str = "input") -> dict[str, Any]:
    """Map ``net``, run every sample through it, charge each layer's spikes; a JSON-able report.

    One Loihi timestep per SNN time step (``step_us`` of the sample). The CPU row times the same
    ``net.forward`` on this machine.
    """
    from spikeflow.nodes.snn import events_from_times

    specs = [s if s.name not in learn else _with_learn(s) for s in specs_of(net, input_name)]
    mapping = map_network(specs, weight_bits, allow_multichip=multichip)
    inferences = []
    for name, t0, step_us, T, times in samples:
        out = net.forward((times, T))
        spikes = {input_name: events_from_times(times, t0, step_us)}
        spikes.update({n: events_from_times(t, t0, step_us) for n, t in out.times.items()})
        res, _ = run_traffic(mapping, profile, spikes, step_us, t0, t0 + T * step_us)
        row = {"sample": name, "t0_us": t0, "timestep_us": step_us, "time_steps": T,
               "spikes": {n: int(len(v)) for n, v in spikes.items()}, **res.as_dict(),
               "cpu": cpu_row(lambda: net.forward((times, T)), repeats)}
        if fixed_point:
            row["fixed_point"] = _fixed_point(net, times, T, weight_bits)
        inferences.append(row)
    return _assemble(mapping, profile, inferences)


def _with_learn(s: LayerSpec) -> LayerSpec:
    from dataclasses import replace

    return replace(s, learn=True)


def _fixed_point(net, times: np.ndarray, time_steps: int, bits: int) -> dict[str, Any]:
    """Output spikes of every layer with float vs ``bits``-bit weights on this sample."""
    from spikeflow.nodes.snn import NO_SPIKE

    convs = {c.name: c for c in net.conv_layers}
    original = {n: c.weights.copy() for n, c in convs.items()}
    fired: dict[str, list[np.ndarray]] = {}

    def run(weights):
        for n, c in convs.items():
            c.weights = np.asarray(weights[n], dtype=np.float64)
        out = net.forward((times, time_steps))
        maps = {n: (t != NO_SPIKE) for n, t in out.times.items()}
        fired.setdefault("runs", []).append(maps)  # type: ignore[arg-type]
        return {"spikes": {n: int(m.sum()) for n, m in maps.items()}, "predictions": None, "labels": None}

    try:
        rep = fixed_point_report(run, original, bits)
    finally:
        for n, c in convs.items():
            c.weights = original[n]
    ref, q = fired["runs"]  # type: ignore[misc]
    for n in rep["layers"]:
        union = int((ref[n] | q[n]).sum())
        rep["layers"][n]["same_neurons_fired"] = float((ref[n] & q[n]).sum() / union) if union else 1.0
    return rep


def _assemble(mapping: Mapping, profile: CostProfile, inferences: list[dict]) -> dict[str, Any]:
    mean = {k: float(np.mean([r[k] for r in inferences])) for k in
            ("energy_uj", "power_mw", "latency_ms", "edp_uj_ms")} if inferences else {}
    cpu_ms = [r["cpu"]["wall_ms"] for r in inferences if r["cpu"]["wall_ms"] is not None]
    cpu_uj = [r["cpu"]["energy_uj"] for r in inferences if r["cpu"]["energy_uj"] is not None]
    return {"tool": "spikeflow loihi report", "profile": profile.as_dict(), "mapping": mapping.summary(),
            "inferences": inferences,
            "per_inference_mean": mean,
            "cpu_comparison": {"wall_ms_median": float(np.median(cpu_ms)) if cpu_ms else None,
                               "energy_uj_median": float(np.median(cpu_uj)) if cpu_uj else None,
                               "energy_note": inferences[0]["cpu"]["energy_source"] if inferences else "",
                               "workload": "the same network forward pass (spikeflow.nodes.snn) on the same samples"},
            "caveats": ["model of Loihi 1 from per-op figures: no NoC congestion, no multi-chip link costs, "
                        "no host I/O; see docs/loihi.md",
                        f"operations not priced by profile {profile.name}: {profile.unpriced()}"]}


# -- traffic-only mode (SPEC.toml) -------------------------------------------------------------------

def report_traffic(specs: list[LayerSpec], spikes: dict[str, np.ndarray], profile: CostProfile, weight_bits: int,
                   time_steps: int, multichip: bool) -> dict[str, Any]:
    """Charge recorded traffic (no network run): one inference spanning all the spikes."""
    mapping = map_network(specs, weight_bits, allow_multichip=multichip)
    all_t = np.concatenate([v["t"] for v in spikes.values() if len(v)] or [np.zeros(1, np.int64)])
    t0, t1 = int(all_t.min()), int(all_t.max()) + 1
    step_us = max(1, -(-(t1 - t0) // time_steps))
    res, _ = run_traffic(mapping, profile, spikes, step_us, t0, t0 + time_steps * step_us)
    row = {"sample": "recorded traffic", "t0_us": t0, "timestep_us": step_us, "time_steps": time_steps,
           "spikes": {n: int(len(v)) for n, v in spikes.items()}, **res.as_dict(),
           "cpu": {"wall_ms": None, "energy_uj": None,
                   "energy_source": "not measured: no network to run in SPEC mode (traffic was recorded)"}}
    rep = _assemble(mapping, profile, [row])
    rep["cpu_comparison"]["workload"] = "none: SPEC mode charges recorded traffic only"
    return rep


# -- CLI glue --------------------------------------------------------------------------------------

def _read(path: str, sensor_size: str | None) -> np.ndarray:
    from spikeflow.drivers.recording import read_recording

    opts = {"sensor_size": sensor_size} if sensor_size else {}
    events, _ = read_recording(path, **opts)
    if len(events) > 1 and np.any(np.diff(events["t"]) < 0):
        events = events[np.argsort(events["t"], kind="stable")]
    return events


def load_net(path: Path, weights: str | None = None):
    """``(Network, encoder or None)`` from a model bundle (``spikeflow train``), a MODEL.npz
    (``Network.save``) or a GRAPH.toml."""
    from spikeflow.service.model import is_bundle, load_bundle

    if is_bundle(path):  # the bundle's own graph, with its learned weights
        b = load_bundle(path)
        net, encoder = network_from_graph(b.graph_text, overrides=b.meta.get("overrides") or None)
        for layer in net.conv_layers:
            layer.load_state(b.node_state(layer.name), where=f"{path}: {layer.name}")
        return net, encoder
    if path.suffix == ".npz":
        return network_from_model(path), None
    return network_from_graph(path, weights)


def build_spec(args) -> str:
    """``spikeflow loihi spec``: the [[layers]] TOML of a model or graph."""
    net_path = Path(args.net)
    if not net_path.exists():
        raise SpikeflowError(f"{net_path}: no such file")
    net, encoder = load_net(net_path, getattr(args, "weights", None))
    return spec_toml(specs_of(net, encoder[2].name if encoder else "input"))


def build_report(args) -> dict[str, Any]:
    profile = load_profile(args.profile, args.cost_table)
    if args.static_mw is not None:
        profile = profile.with_static_mw(args.static_mw, "user parameter --static-mw")
    if not 1 <= args.weight_bits <= 9:
        raise SpikeflowError(f"--weight-bits: expected 1..9, got {args.weight_bits}")
    if args.time_steps < 1:
        raise SpikeflowError(f"--time-steps: expected >= 1, got {args.time_steps}")
    net_path = Path(args.net)
    if not net_path.exists():
        raise SpikeflowError(f"{net_path}: no such file")
    if net_path.suffix == ".toml":
        import tomllib

        try:
            raw = tomllib.loads(net_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise SpikeflowError(f"{net_path}: not valid TOML: {e}") from None
        if "layers" in raw:
            return _spec_mode(args, net_path, profile)
    elif net_path.suffix != ".npz":
        raise SpikeflowError(f"{net_path}: expected MODEL.npz, GRAPH.toml or SPEC.toml")
    net, encoder = load_net(net_path, args.weights)
    if not args.data:
        raise SpikeflowError("--data: give at least one recording to run through the network")
    in_shape = specs_of(net)[0].in_shape
    samples = []
    for d in args.data:
        events = _read(d, args.sensor_size)
        if encoder is not None:
            samples += encoder_samples(d, events, encoder[0], encoder[1], in_shape)
        else:
            samples += polarity_samples(d, events, in_shape, args.time_steps, args.window_us)
    rep = report_network(net, samples, profile, args.weight_bits, tuple(args.learn), args.fixed_point,
                         args.multichip, args.repeats, encoder[2].name if encoder else "input")
    rep["net"] = str(net_path)
    rep["encoding"] = (f"graph encoder node {encoder[2].name!r}" if encoder else
                       f"polarity: first event per pixel and step, {args.time_steps} steps per inference")
    return rep


def _spec_mode(args, net_path: Path, profile: CostProfile) -> dict[str, Any]:
    specs = load_spec_toml(net_path)
    spikes: dict[str, np.ndarray] = {}
    if args.data:
        if specs[0].type != "input":
            raise SpikeflowError(f"--data: {net_path} has no input layer to feed")
        spikes[specs[0].name] = np.concatenate([_read(d, args.sensor_size) for d in args.data]).astype(EVENT_DTYPE)
        if len(args.data) > 1:
            spikes[specs[0].name] = np.sort(spikes[specs[0].name], order="t", kind="stable")
    for item in args.spikes:
        if "=" not in item:
            raise SpikeflowError(f"--spikes {item!r}: expected LAYER=FILE")
        layer, f = item.split("=", 1)
        spikes[layer] = _read(f, args.sensor_size)
    if not spikes:
        raise SpikeflowError("SPEC mode needs --data (input layer) and/or --spikes LAYER=FILE")
    rep = report_traffic(specs, spikes, profile, args.weight_bits, args.time_steps, args.multichip)
    rep["net"] = str(net_path)
    return rep


# -- the table ---------------------------------------------------------------------------------------

def format_table(rep: dict[str, Any]) -> str:
    m = rep["mapping"]
    u = m["utilisation"]
    lines = [f"Loihi emulation — profile {rep['profile']['name']}: {rep['profile']['description']}",
             f"mapping: {m['cores_used']} cores on {m['chips']} chip(s), {m['tiles_used']} tiles, "
             f"weights {m['weight_bits']} bits; utilisation compartments {u['compartments']:.1%}, "
             f"synaptic memory {u['syn_memory']:.1%}, input axons {u['input_axons']:.1%}, "
             f"output axons {u['output_axons']:.1%}",
             "", f"{'layer':<12}{'type':<7}{'neurons':>9}{'cores':>7}{'synapses':>12}"]
    for layer in m["layers"]:
        lines.append(f"{layer['name']:<12}{layer['type']:<7}{layer['neurons']:>9}{layer['cores']:>7}"
                     f"{layer.get('synapses', 0):>12}")
    lines += ["", f"{'inference':<28}{'energy uJ':>11}{'power mW':>10}{'latency ms':>12}{'EDP uJ*ms':>12}"
                  f"{'syn ops':>10}{'CPU ms':>9}{'CPU uJ':>9}"]
    for r in rep["inferences"]:
        cpu = r["cpu"]
        cpu_ms = f"{cpu['wall_ms']:.2f}" if cpu.get("wall_ms") is not None else "-"
        cpu_uj = f"{cpu['energy_uj']:.0f}" if cpu.get("energy_uj") is not None else "n/a"
        name = Path(str(r["sample"])).name[-27:]
        lines.append(f"{name:<28}{r['energy_uj']:>11.3f}{r['power_mw']:>10.2f}{r['latency_ms']:>12.4f}"
                     f"{r['edp_uj_ms']:>12.5f}{r['counts']['syn_ops']:>10}{cpu_ms:>9}{cpu_uj:>9}")
        if "fixed_point" in r:
            fp = r["fixed_point"]
            ch = ", ".join(f"{n} {v['relative_change']:+.1%}" for n, v in fp["layers"].items())
            lines.append(f"{'':<28}fixed point {fp['weight_bits']} bits: output spikes {ch}")
    if rep["inferences"]:
        lines.append(f"CPU energy: {rep['inferences'][0]['cpu']['energy_source']}")
    lines.append(f"not priced by this profile: {', '.join(rep['profile']['unpriced']) or 'none'}")
    return "\n".join(lines)
