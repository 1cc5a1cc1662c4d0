"""Graph files: TOML in, a validated :class:`GraphSpec` out. Nothing starts before this passes.

    [graph]
    name = "demo"
    [nodes.src]
    type = "replay"
    params = { path = "gesture_04_right_arm_clockwise_s0.sfe", speed = 0 }
    [nodes.denoise]
    type = "noise_filter"
    inputs = { events_in = "src.events_out" }
    [nodes.out]
    type = "publish"
    inputs = { events_in = { from = "denoise.events_out", policy = "realtime", queue = 64 } }
    params = { endpoint = "tcp://127.0.0.1:5555" }
    worker = "io"

Two stages, both raising :class:`GraphError` naming the key path (``nodes.out.inputs.events_in``):

- :func:`load_graph` checks structure without touching any resource: unknown node type,
  unknown/ill-typed/out-of-range parameter, unknown or missing input port, cycles, edge policy,
  non-loopback binds (refused unless ``allow_remote``).
- :func:`resolve_metas` is the build step: it instantiates every node, calls ``setup()`` in
  topological order and checks port kinds and sensor sizes from the returned metadata, then
  closes the nodes again (the workers build their own).
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spikeflow.nodes.base import Node, PortMeta, build_params
from spikeflow.service import registry
from spikeflow.service.errors import GraphError
from spikeflow.service.events import SensorSize

POLICIES = ("lossless", "realtime")
DEFAULT_QUEUE = {"lossless": 256, "realtime": 64}
"""Packets an edge holds by default: in flight when lossless (its credit window), in the
drop-oldest queue when realtime."""
DEFAULT_QUEUE_BYTES = 16 << 20
"""Payload bytes a lossless edge keeps in flight by default, beyond its first 32 packets (so
256 small packets may be in flight, but only 32 of 1.4 MB)."""
DEFAULT_WORKER = "main"
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
EVENTISH = ("events", "spikes")


@dataclass(frozen=True)
class GraphOptions:
    """The ``[graph]`` table: runtime knobs (all optional)."""

    name: str = "graph"
    allow_remote: bool = False     # permit binding anything but loopback
    transport: str = "ipc"         # edges between workers: "ipc" or "tcp" (loopback)
    heartbeat_s: float = 0.25      # worker -> daemon heartbeat (and metrics) period
    liveness_s: float = 10.0       # a worker silent this long is killed and restarted (3 s killed
                                   # healthy workers starved by CPU load on a busy 2-core box)
    max_restarts: int = 5          # per worker, within restart_window_s, then it is marked failed
    restart_window_s: float = 60.0
    checkpoint_s: float = 0.0      # periodic snapshot of learned state (0 = only on request)
    drain_timeout_s: float = 10.0  # how long a draining worker waits for upstream end-of-stream


_OPTION_TYPES = {"name": str, "allow_remote": bool, "transport": str, "heartbeat_s": float,
                 "liveness_s": float, "max_restarts": int, "restart_window_s": float,
                 "checkpoint_s": float, "drain_timeout_s": float}


@dataclass(frozen=True)
class InputSpec:
    """One edge: ``node.out_port`` feeds this node's ``port``."""

    port: str
    node: str
    out_port: str
    policy: str = "lossless"
    queue: int = DEFAULT_QUEUE["lossless"]
    key: str = ""
    queue_bytes: int = DEFAULT_QUEUE_BYTES


@dataclass
class NodeSpec:
    name: str
    type: str
    cls: type
    params: Any
    inputs: dict[str, InputSpec]
    worker: str

    @property
    def key(self) -> str:
        return f"nodes.{self.name}"

    def instantiate(self) -> Node:
        """A fresh node object; constructor errors become GraphErrors naming the node."""
        try:
            return self.cls(self.name, self.params)
        except GraphError:
            raise
        except Exception as e:  # noqa: BLE001 - a node constructor's failure names the node
            raise GraphError(f"{self.key}.params", f"{self.type}: {type(e).__name__}: {e}") from e


@dataclass
class GraphSpec:
    """A validated graph. ``order`` is topological; ``workers`` maps worker -> its nodes in order."""

    options: GraphOptions
    nodes: dict[str, NodeSpec]
    order: list[str]
    workers: dict[str, list[str]]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)
    source: str = "<text>"

    @property
    def name(self) -> str:
        return self.options.name

    def consumers(self, node: str, port: str) -> list[tuple[str, InputSpec]]:
        """Every (node, input spec) fed by ``node.port``."""
        return [(n, i) for n in self.order for i in self.nodes[n].inputs.values()
                if i.node == node and i.out_port == port]

    def cross_edges(self) -> list[tuple[str, InputSpec]]:
        """Edges whose two ends sit in different workers (these become ZeroMQ sockets)."""
        return [(n, i) for n in self.order for i in self.nodes[n].inputs.values()
                if self.nodes[i.node].worker != self.nodes[n].worker]


# -- loading ---------------------------------------------------------------------------------

def load_graph(source: str | Path | dict, *, overrides: list[str] | None = None,
               allow_remote: bool = False) -> GraphSpec:
    """Parse and validate a graph from a path, TOML text or an already-parsed dict.

    ``overrides`` are ``key.path=value`` strings (``--set``), the value parsed as TOML when it
    parses (``speed=0``, ``loop=true``, ``sensor_size=[34,34,2]``) and as a string otherwise.
    ``allow_remote`` (the command line's permission) lets nodes bind non-loopback addresses.
    """
    raw, origin = _read(source)
    for item in overrides or ():
        apply_override(raw, item)
    return _validate(raw, origin, allow_remote)


def _read(source) -> tuple[dict, str]:
    if isinstance(source, dict):
        return copy.deepcopy(source), "<dict>"
    text, origin = None, "<text>"
    if isinstance(source, Path) or not ("\n" in source or "=" in source):
        p = Path(source)
        try:
            text = p.read_text()
        except OSError as e:
            raise GraphError("", f"cannot read graph file {p}: {e.strerror or e}") from None
        origin = str(p)
    else:
        text = source
    try:
        return tomllib.loads(text), origin
    except tomllib.TOMLDecodeError as e:
        raise GraphError("", f"{origin}: invalid TOML: {e}") from None


def apply_override(raw: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override to the raw graph dict (creating tables as needed)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise GraphError(key or item, f"override {item!r} must look like key.path=value")
    try:
        value = tomllib.loads(f"v = {text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = text.strip()
    parts = key.split(".")
    d = raw
    for i, part in enumerate(parts[:-1]):
        nxt = d.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise GraphError(".".join(parts[: i + 1]), "is not a table; cannot set a key below it")
        d = nxt
    d[parts[-1]] = value


def _validate(raw: dict, origin: str, allow_remote: bool) -> GraphSpec:
    unknown = sorted(set(raw) - {"graph", "nodes"})
    if unknown:
        raise GraphError(unknown[0], "unknown top-level table; expected [graph] and [nodes.<name>]")
    options = _options(raw.get("graph", {}))
    nodes_raw = raw.get("nodes")
    if not isinstance(nodes_raw, dict) or not nodes_raw:
        raise GraphError("nodes", "a graph needs at least one [nodes.<name>] table")
    nodes: dict[str, NodeSpec] = {}
    for name, body in nodes_raw.items():
        nodes[name] = _node(name, body)
    for spec in nodes.values():
        _check_inputs(spec, nodes)
    order = _toposort(nodes)
    _check_binds(nodes, options.allow_remote or allow_remote)
    workers: dict[str, list[str]] = {}
    for n in order:
        workers.setdefault(nodes[n].worker, []).append(n)
    return GraphSpec(options, nodes, order, workers, raw, origin)


def _options(g: Any) -> GraphOptions:
    if not isinstance(g, dict):
        raise GraphError("graph", "must be a table")
    values = {}
    for k, v in g.items():
        tp = _OPTION_TYPES.get(k)
        key = f"graph.{k}"
        if tp is None:
            raise GraphError(key, f"unknown graph option; known: {sorted(_OPTION_TYPES)}")
        if tp is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, tp) or (tp is int and isinstance(v, bool)):
            raise GraphError(key, f"expected {tp.__name__}, got {v!r}")
        if tp in (int, float) and v < 0:
            raise GraphError(key, f"must be >= 0, got {v!r}")
        values[k] = v
    if values.get("transport", "ipc") not in ("ipc", "tcp"):
        raise GraphError("graph.transport", f"expected 'ipc' or 'tcp', got {values['transport']!r}")
    if "name" in values and not NAME_RE.match(values["name"]):
        raise GraphError("graph.name", f"must match {NAME_RE.pattern}, got {values['name']!r}")
    for k in ("heartbeat_s", "liveness_s"):
        if k in values and values[k] <= 0:
            raise GraphError(f"graph.{k}", f"must be > 0, got {values[k]!r}")
    opts = GraphOptions(**values)
    if opts.liveness_s <= 2 * opts.heartbeat_s:
        raise GraphError("graph.liveness_s", f"must exceed twice heartbeat_s ({opts.heartbeat_s}), got {opts.liveness_s}")
    return opts


def _node(name: str, body: Any) -> NodeSpec:
    key = f"nodes.{name}"
    if not NAME_RE.match(name):
        raise GraphError(key, f"node names must match {NAME_RE.pattern} (no dots: 'node.port' addresses ports)")
    if not isinstance(body, dict):
        raise GraphError(key, "must be a table with type, params, inputs, worker")
    unknown = sorted(set(body) - {"type", "params", "inputs", "worker"})
    if unknown:
        raise GraphError(f"{key}.{unknown[0]}", "unknown key; expected type, params, inputs, worker")
    type_name = body.get("type")
    if not isinstance(type_name, str):
        raise GraphError(f"{key}.type", f"missing or not a string (got {type_name!r})")
    cls = registry.get(type_name, key=f"{key}.type")
    params_raw = body.get("params", {})
    if not isinstance(params_raw, dict):
        raise GraphError(f"{key}.params", "must be a table")
    params = build_params(cls, params_raw, key=f"{key}.params")
    worker = body.get("worker", DEFAULT_WORKER)
    if not isinstance(worker, str) or not NAME_RE.match(worker):
        raise GraphError(f"{key}.worker", f"must be a name matching {NAME_RE.pattern}, got {worker!r}")
    inputs = _inputs(key, cls, body.get("inputs", {}))
    return NodeSpec(name, type_name, cls, params, inputs, worker)


def _inputs(key: str, cls: type, raw: Any) -> dict[str, InputSpec]:
    if not isinstance(raw, dict):
        raise GraphError(f"{key}.inputs", "must be a table of port = \"node.port\"")
    out = {}
    for port, ref in raw.items():
        pkey = f"{key}.inputs.{port}"
        if port not in cls.inputs:
            raise GraphError(pkey, f"unknown input port of {cls.type_name}; its inputs: {sorted(cls.inputs) or 'none'}")
        policy, queue, queue_bytes = "lossless", None, DEFAULT_QUEUE_BYTES
        if isinstance(ref, dict):
            extra = sorted(set(ref) - {"from", "policy", "queue", "queue_bytes"})
            if extra:
                raise GraphError(f"{pkey}.{extra[0]}", "unknown edge key; expected from, policy, queue, queue_bytes")
            policy = ref.get("policy", policy)
            queue = ref.get("queue")
            queue_bytes = ref.get("queue_bytes", queue_bytes)
            budget_given = "queue_bytes" in ref
            ref = ref.get("from")
            if policy not in POLICIES:
                raise GraphError(f"{pkey}.policy", f"expected one of {list(POLICIES)}, got {policy!r}")
            if queue is not None and (isinstance(queue, bool) or not isinstance(queue, int) or queue < 1):
                raise GraphError(f"{pkey}.queue", f"expected an integer >= 1, got {queue!r}")
            if isinstance(queue_bytes, bool) or not isinstance(queue_bytes, int) or queue_bytes < 1:
                raise GraphError(f"{pkey}.queue_bytes", f"expected an integer >= 1, got {queue_bytes!r}")
            if budget_given and policy != "lossless":
                raise GraphError(f"{pkey}.queue_bytes", "only lossless edges have a byte budget; a realtime "
                                                        "edge's queue counts packets")
            if policy == "realtime" and getattr(cls, "requires_lossless", False):
                raise GraphError(f"{pkey}.policy", f"{cls.type_name} must not lose data: only 'lossless' is allowed")
        if queue is None:
            queue = DEFAULT_QUEUE[policy]
        if not isinstance(ref, str) or ref.count(".") != 1:
            raise GraphError(pkey, f"expected \"node.port\", got {ref!r}")
        src, out_port = ref.split(".")
        out[port] = InputSpec(port, src, out_port, policy, queue, pkey, queue_bytes)
    optional = set(getattr(cls, "optional_inputs", ()))
    missing = sorted(set(cls.inputs) - set(out) - optional)
    if missing:
        raise GraphError(f"{key}.inputs.{missing[0]}", f"missing input: {cls.type_name} needs {sorted(cls.inputs)}")
    return out


def _check_inputs(spec: NodeSpec, nodes: dict[str, NodeSpec]) -> None:
    for inp in spec.inputs.values():
        up = nodes.get(inp.node)
        if up is None:
            raise GraphError(inp.key, f"refers to unknown node {inp.node!r}; nodes: {sorted(nodes)}")
        if inp.out_port not in up.cls.outputs:
            raise GraphError(inp.key, f"{inp.node} ({up.type}) has no output port {inp.out_port!r}; "
                                      f"its outputs: {sorted(up.cls.outputs) or 'none'}")


def _toposort(nodes: dict[str, NodeSpec]) -> list[str]:
    """Kahn's algorithm in file order; a cycle is reported as its node path."""
    indeg = {n: len({i.node for i in s.inputs.values()}) for n, s in nodes.items()}
    users: dict[str, list[str]] = {n: [] for n in nodes}
    for n, s in nodes.items():
        for up in {i.node for i in s.inputs.values()}:
            users[up].append(n)
    ready = [n for n in nodes if indeg[n] == 0]
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for u in users[n]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
    if len(order) < len(nodes):
        cycle = _find_cycle(nodes, {n for n in nodes if n not in order})
        edge = next(i for i in nodes[cycle[0]].inputs.values() if i.node == cycle[1])
        raise GraphError(edge.key, "cycle: " + " -> ".join(reversed(cycle)))
    return order


def _find_cycle(nodes: dict[str, NodeSpec], left: set[str]) -> list[str]:
    start = min(left)
    path, seen = [start], {start}
    while True:
        nxt = sorted(i.node for i in nodes[path[-1]].inputs.values() if i.node in left)[0]
        if nxt in seen:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def _check_binds(nodes: dict[str, NodeSpec], allow_remote: bool) -> None:
    """Refuse to bind anything but loopback unless explicitly allowed (graph or command line)."""
    if allow_remote:
        return
    for spec in nodes.values():
        p = spec.params
        if getattr(p, "bind", True) is False:
            continue  # this node connects out; it opens no port here
        for fname in getattr(p, "__dataclass_fields__", {}):
            if fname != "endpoint" and not fname.endswith("_endpoint"):
                continue
            ep = getattr(p, fname)
            host = endpoint_host(ep) if isinstance(ep, str) else None
            if host is not None and host not in LOOPBACK_HOSTS:
                raise GraphError(f"{spec.key}.params.{fname}",
                                 f"binds non-loopback address {ep!r}; set graph.allow_remote = true "
                                 f"or pass --allow-remote to expose it")


def endpoint_host(endpoint: str) -> str | None:
    """Host part of a tcp:// endpoint (None for ipc/inproc)."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "udp", "ws", "wss", "pgm", "epgm"):
        return None
    host = rest.split("/", 1)[0].rsplit(":", 1)[0]
    return host.split(";")[-1]  # "tcp://iface;host:port" binds host


# -- build step ------------------------------------------------------------------------------

def resolve_metas(spec: GraphSpec, known: dict[tuple[str, str], PortMeta] | None = None,
                  only: list[str] | None = None) -> tuple[dict[tuple[str, str], PortMeta], dict[str, Node]]:
    """Instantiate nodes and run ``setup`` in topological order, checking kinds and sizes.

    Returns ``(metas, nodes)``: the metadata of every output port and the set-up node objects.
    With ``only`` (a worker's node list), only those nodes are built; metadata of their
    upstream ports outside ``only`` must be given in ``known``. The caller owns the nodes (it
    runs them, or closes them after a dry build: see :func:`check_graph`).
    """
    metas = dict(known or {})
    built: dict[str, Node] = {}
    names = spec.order if only is None else [n for n in spec.order if n in set(only)]
    try:
        for name in names:
            ns = spec.nodes[name]
            in_meta = {}
            for port, inp in ns.inputs.items():
                m = metas.get((inp.node, inp.out_port))
                if m is None:
                    raise GraphError(inp.key, f"no metadata for upstream port {inp.node}.{inp.out_port}")
                want = ns.cls.inputs[port]
                if "any" not in (want, m.kind) and want != m.kind:
                    raise GraphError(inp.key, f"port kind mismatch: {inp.node}.{inp.out_port} carries "
                                              f"{m.kind!r} but {name}.{port} expects {want!r}")
                in_meta[port] = m
            _check_sizes(ns, in_meta)
            node = ns.instantiate()
            built[name] = node
            try:
                out = node.setup(in_meta)
            except GraphError:
                raise
            except Exception as e:  # noqa: BLE001 - any node's setup failure is a graph error naming it
                raise GraphError(ns.key, f"setup failed: {type(e).__name__}: {e}") from e
            for port, kind in ns.cls.outputs.items():
                m = (out or {}).get(port)
                if m is None:
                    raise GraphError(ns.key, f"setup() returned no metadata for output port {port!r}")
                if not isinstance(m.sensor_size, SensorSize):
                    m = PortMeta(m.kind, SensorSize(*m.sensor_size))
                if m.kind in EVENTISH and (m.sensor_size.width <= 0 or m.sensor_size.height <= 0):
                    raise GraphError(f"{ns.key}.params", f"{name}.{port} has unknown sensor size "
                                                         f"{tuple(m.sensor_size)}; set params.sensor_size")
                metas[(name, port)] = m
    except BaseException:
        for node in built.values():
            _safe_close(node)
        raise
    return metas, built


def _check_sizes(ns: NodeSpec, in_meta: dict[str, PortMeta]) -> None:
    if getattr(ns.cls, "mixed_input_sizes", False):
        return  # e.g. loihi_emulator: each port taps a layer with its own grid, checked by the node
    sized = [(p, m) for p, m in in_meta.items() if m.kind in EVENTISH]
    for p, m in sized[1:]:
        if tuple(m.sensor_size[:2]) != tuple(sized[0][1].sensor_size[:2]):
            raise GraphError(ns.inputs[p].key, f"sensor-size mismatch: {tuple(m.sensor_size)} here but "
                                               f"{tuple(sized[0][1].sensor_size)} on {sized[0][0]}")


def check_graph(spec: GraphSpec) -> dict[tuple[str, str], PortMeta]:
    """Dry build: validate every port's kind and sensor size, release everything, return metas."""
    metas, built = resolve_metas(spec)
    for node in built.values():
        _safe_close(node)
    return metas


def _safe_close(node: Node) -> None:
    try:
        node.close()
    except Exception:  # noqa: BLE001 - closing after a failed/dry build must not mask the cause
        pass


def metas_to_json(metas: dict[tuple[str, str], PortMeta]) -> dict[str, Any]:
    return {f"{n}.{p}": {"kind": m.kind, "sensor_size": list(m.sensor_size)} for (n, p), m in metas.items()}


def metas_from_json(d: dict[str, Any]) -> dict[tuple[str, str], PortMeta]:
    out = {}
    for k, v in d.items():
        n, p = k.split(".", 1)
        out[(n, p)] = PortMeta(v["kind"], SensorSize(*v["sensor_size"]))
    return out


def default_graph_path() -> Path:
    """The embedded default graph (replay a bundled recording -> noise_filter -> print/publish)."""
    return Path(__file__).resolve().parent / "graphs" / "default.toml"
