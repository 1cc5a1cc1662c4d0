"""Run a graph's processing nodes in the caller's thread, fed from outside: training, evaluation
and benchmarks push many labeled samples through exactly the nodes the daemon runs.

    chain = LocalChain(spec, {("src", "events_out"): PortMeta("events", SensorSize(128, 128, 2))})
    chain.feed("src", "events_out", packet)       # routed through every consumer, depth first
    chain.flush()                                  # end of stream, in topological order
    chain.taps[("cls", "labels_out")]              # packets emitted on tapped ports

Sources are replaced by :meth:`feed`; sink nodes (``is_sink``: publish, record, print) are left
out unless ``keep_sinks``. The nodes are the same classes with the same parameters as in the
graph file, so what is trained here is what the daemon later runs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Iterable

from spikeflow.nodes.base import Node, PortMeta
from spikeflow.service.errors import GraphError
from spikeflow.service.graph import GraphSpec, resolve_metas
from spikeflow.service.packet import Packet


class LocalChain:
    """Synchronous, single-threaded executor of a graph's non-source nodes."""

    def __init__(self, spec: GraphSpec, source_metas: dict[tuple[str, str], PortMeta],
                 taps: Iterable[tuple[str, str]] = (), keep_sinks: bool = False,
                 exclude: Iterable[str] = ()):
        self.spec = spec
        excluded = set(exclude)
        only = [n for n in spec.order
                if not spec.nodes[n].cls.is_source and n not in excluded
                and (keep_sinks or not spec.nodes[n].cls.is_sink)]
        for (node, port) in source_metas:
            if node not in spec.nodes:
                raise GraphError(f"nodes.{node}", "fed node is not in the graph")
        # nodes downstream of an excluded node cannot run
        reachable = set(n for n, _ in source_metas)
        for n in spec.order:
            if n in only and any(i.node in reachable for i in spec.nodes[n].inputs.values()):
                reachable.add(n)
        only = [n for n in only if n in reachable]
        self.metas, self.nodes = resolve_metas(spec, known=dict(source_metas), only=only)
        self.order = [n for n in spec.order if n in self.nodes]
        self._routes: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for n in self.order:
            for port, inp in spec.nodes[n].inputs.items():
                self._routes[(inp.node, inp.out_port)].append((n, port))
        self.taps: dict[tuple[str, str], list[Packet]] = {tuple(t): [] for t in taps}
        self.busy_ns: dict[str, int] = defaultdict(int)

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def feed(self, node: str, port: str, packet: Packet) -> None:
        """Deliver ``packet`` as if ``node`` had emitted it on ``port``."""
        self._emit(node, port, packet)

    def _emit(self, node: str, port: str, packet: Packet) -> None:
        tap = self.taps.get((node, port))
        if tap is not None:
            tap.append(packet)
        for consumer, in_port in self._routes.get((node, port), ()):
            t0 = time.perf_counter_ns()
            out = self.nodes[consumer].process(in_port, packet)
            self.busy_ns[consumer] += time.perf_counter_ns() - t0
            self._route(consumer, out)

    def _route(self, name: str, out) -> None:
        for out_port, packets in (out or {}).items():
            for p in packets:
                self._emit(name, out_port, p)

    def flush(self) -> None:
        """End of stream: flush every node in topological order, routing what each emits."""
        for name in self.order:
            self._route(name, self.nodes[name].flush())

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

    def clear_taps(self) -> None:
        for v in self.taps.values():
            v.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
