"""The worker: runs one worker group of a graph, chaining its nodes by direct calls.

Inside a worker a packet goes from node to node as a Python object (operator chaining, no
serialisation). Edges to nodes of other workers are ZeroMQ sockets from
:mod:`spikeflow.service.edges` with the edge's policy (``lossless``: the sender waits;
``realtime``: bounded queue, drops counted). Producers (each source's ``packets()``, each
incoming edge) run in their own thread and hand packets to the one thread that runs nodes
through a bounded inbox, so nodes need no locks and a blocked producer (a quiet network input,
a paced replay) never blocks control requests, which are executed between packets.

Drain (``request_stop``, SIGTERM/SIGINT, or every source at its end): sources stop; incoming
edges are read until their upstream's end-of-stream marker (or ``drain_timeout_s``); then every
node is flushed in topological order (their output still flows downstream), an end-of-stream
marker goes out on every outgoing edge, and nodes are closed (files complete, sockets released).

Run as a process by the daemon: ``python -m spikeflow.service.runtime SPEC.json``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from spikeflow.nodes.base import Node, PortMeta
from spikeflow.service.errors import SpikeflowError
from spikeflow.service.graph import (DEFAULT_WORKER, GraphSpec, InputSpec, load_graph, metas_from_json,
                                     resolve_metas)
from spikeflow.service.metrics import NodeMetrics
from spikeflow.service.packet import Packet, now_ns

log = logging.getLogger("spikeflow.runtime")

INBOX_PACKETS = 16
"""Packets waiting between the producer threads and the node thread (bounded memory)."""

POLL_S = 0.05
"""Longest wait of any loop before it re-checks its stop flag."""


# -- end of stream on edges -------------------------------------------------------------------

def eos_packet(stream: str) -> Packet:
    """The end-of-stream marker a worker sends on each outgoing edge when it drains."""
    return Packet(kind="heartbeat", stream=stream, sent_ns=now_ns(), data={"eos": True})


def is_eos(packet: Packet) -> bool:
    return packet.kind == "heartbeat" and bool(packet.data.get("eos"))


def edge_key(inp: InputSpec, consumer: str) -> str:
    """Name of a cross-worker edge: the consumer's ``node.port``."""
    return f"{consumer}.{inp.port}"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edge_endpoints(spec: GraphSpec, run_dir: str | Path, transport: str | None = None) -> dict[str, str]:
    """An endpoint for every cross-worker edge: ipc sockets in ``run_dir`` or loopback tcp ports."""
    transport = transport or spec.options.transport
    out = {}
    for consumer, inp in spec.cross_edges():
        key = edge_key(inp, consumer)
        if transport == "ipc":
            out[key] = f"ipc://{Path(run_dir).resolve()}/{spec.name}-{consumer}-{inp.port}.edge"
        else:
            out[key] = f"tcp://127.0.0.1:{free_tcp_port()}"
    return out


class _Stop(Exception):
    pass


class Worker:
    """Builds and runs the nodes of one worker group.

    With ``gated``, sources wait for :meth:`open_gate` (the daemon's ``start``, sent when every
    worker of the graph is connected, so the first packets do not wait for slower starters).
    ``metas`` gives the metadata of upstream ports in other workers (computed by the daemon's
    dry build); ``endpoints`` the ZeroMQ endpoint of every cross-worker edge; ``snapshot`` an
    npz from :func:`save_snapshot` whose ``node/key`` arrays are loaded into the nodes.
    """

    def __init__(self, spec: GraphSpec, worker: str = DEFAULT_WORKER, *,
                 metas: dict[tuple[str, str], PortMeta] | None = None, endpoints: dict[str, str] | None = None,
                 snapshot: str | Path | None = None, context=None, inbox_packets: int = INBOX_PACKETS,
                 gated: bool = False):
        if worker not in spec.workers:
            raise SpikeflowError(f"graph {spec.name!r} has no worker {worker!r}; workers: {sorted(spec.workers)}")
        self.spec, self.worker = spec, worker
        self.names = spec.workers[worker]
        self.endpoints = dict(endpoints or {})
        self.state_name = "starting"
        self.started = time.time()
        self._context = context
        self._inbox: queue.Queue = queue.Queue(maxsize=inbox_packets)
        self._stop = threading.Event()
        self._gate = threading.Event()  # sources wait on it: a pipeline starts when all its workers are up
        if not gated:
            self._gate.set()
        self._stop_deadline: float | None = None
        self.failures: list[str] = []
        self.metas, self.nodes = resolve_metas(spec, metas, only=self.names)
        self.metrics = {n: NodeMetrics() for n in self.names}
        self._route_local: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._route_remote: dict[tuple[str, str], list[tuple[str, Any]]] = {}
        self._receivers: list[tuple[str, str, str, InputSpec]] = []   # (edge key, consumer, port, inp)
        self._senders: dict[str, Any] = {}
        self._realtime: list[Any] = []
        self._receiver_stats: dict[str, Callable[[], dict]] = {}
        self._wire()
        if snapshot:
            loaded = self.load_state(snapshot)
            log.info("worker %s: state of %s loaded from %s", worker, loaded or "no node", snapshot)

    # -- construction -----------------------------------------------------------------------
    def _wire(self) -> None:
        mine = set(self.names)
        for consumer in self.spec.order:
            ns = self.spec.nodes[consumer]
            for inp in ns.inputs.values():
                up_here, down_here = inp.node in mine, consumer in mine
                key = edge_key(inp, consumer)
                if up_here and down_here:
                    self._route_local.setdefault((inp.node, inp.out_port), []).append((consumer, inp.port))
                elif up_here:
                    sender = self._sender(key, inp)
                    self._route_remote.setdefault((inp.node, inp.out_port), []).append((key, sender))
                elif down_here:
                    self._endpoint(key)
                    self._receivers.append((key, consumer, inp.port, inp))

    def _endpoint(self, key: str) -> str:
        ep = self.endpoints.get(key)
        if ep is None:
            raise SpikeflowError(f"no endpoint for cross-worker edge {key}; run the graph through the daemon")
        return ep

    def _sender(self, key: str, inp: InputSpec):
        from spikeflow.service.edges import EdgeSender

        s = EdgeSender(self._endpoint(key), policy=inp.policy, queue=inp.queue, bind=True, context=self._context)
        self._senders[key] = s
        if inp.policy == "realtime":
            self._realtime.append(s)
        return s

    # -- learned state ----------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Every node's learned state as ``node/key`` arrays (what a snapshot holds)."""
        out = {}
        for name, node in self.nodes.items():
            for k, v in (node.state() or {}).items():
                out[f"{name}/{k}"] = np.asarray(v)
        return out

    def load_state(self, source: str | Path | dict[str, np.ndarray]) -> list[str]:
        """Load ``node/key`` arrays into this worker's nodes; returns the nodes loaded."""
        if isinstance(source, dict):
            arrays = source
        else:
            from spikeflow.service.control import read_snapshot

            arrays = read_snapshot(source)
        per_node: dict[str, dict[str, np.ndarray]] = {}
        for k, v in arrays.items():
            node, _, key = k.partition("/")
            if node in self.nodes:
                per_node.setdefault(node, {})[key] = v
        for node, st in per_node.items():
            self.nodes[node].load_state(st)
        return sorted(per_node)

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` to run on the node thread between two packets (runs now if the worker ended)."""
        if self.state_name in ("done", "failed") or threading.current_thread() is self._node_thread:
            job()
        else:
            self._inbox.put(("call", job))

    def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``fn`` on the node thread (thread-safe) and return its result."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def job():
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001 - handed back to the caller
                box["error"] = e
            done.set()

        self.submit(job)
        if not done.wait(timeout):
            raise TimeoutError(f"worker {self.worker} did not run the request within {timeout}s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    # -- running ----------------------------------------------------------------------------
    _node_thread: threading.Thread | None = None

    def request_stop(self) -> None:
        """Begin the drain (thread-safe, idempotent; signal handlers call this)."""
        if not self._stop.is_set():
            self._stop_deadline = time.monotonic() + self.spec.options.drain_timeout_s
            self._stop.set()
            for n in self.names:
                node = self.nodes[n]
                if node.is_source:
                    node.stop()
            # past the drain timeout, a lossless send waiting on a dead consumer gives up
            t = threading.Timer(self.spec.options.drain_timeout_s, self._abort_senders)
            t.daemon = True
            t.start()

    def _abort_senders(self) -> None:
        for s in list(self._senders.values()):
            s.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Run until every producer has ended, then flush and close. Returns 0, or 1 on failures."""
        self._node_thread = threading.current_thread()
        producers = [threading.Thread(target=self._source_loop, args=(n,), name=f"src-{n}", daemon=True)
                     for n in self.names if self.nodes[n].is_source]
        producers += [threading.Thread(target=self._edge_loop, args=r, name=f"edge-{r[0]}", daemon=True)
                      for r in self._receivers]
        self.state_name = "running"
        for t in producers:
            t.start()
        live = len(producers)
        try:
            while live:
                try:
                    item = self._inbox.get(timeout=self._idle_wait())
                except queue.Empty:
                    self._pump()
                    continue
                kind = item[0]
                if kind == "pkt":
                    _, node, port, packet = item
                    if node:  # from a source: count what it emitted
                        sm = self.metrics[node]
                        sm.counters["packets_out"] += 1
                        sm.counters["events_out"] += packet.count
                        sm.seen(now_ns())
                    self._emit(node, port, packet)
                elif kind == "call":
                    item[1]()
                elif kind == "end":
                    live -= 1
            self.state_name = "draining"
            self._drain()
        finally:
            self._close()
            for t in producers:
                t.join(timeout=1.0)
            self._drain_calls()
            self.state_name = "failed" if self.failures else "done"
        return 1 if self.failures else 0

    def _idle_wait(self) -> float:
        """Short waits while a realtime edge holds queued packets (they go out when credit returns)."""
        return 0.002 if any(s.stats()["queued"] for s in self._realtime) else POLL_S

    def _pump(self) -> None:
        for s in self._realtime:
            s.pump(0)

    def _put(self, item) -> bool:
        """Hand an item to the node thread, waiting while the inbox is full (backpressure)."""
        while True:
            try:
                self._inbox.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                if self._stop.is_set() and self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                    return False

    def open_gate(self) -> None:
        """Let sources start (the daemon opens it once every worker is connected)."""
        self._gate.set()

    def _source_loop(self, name: str) -> None:
        node = self.nodes[name]
        while not self._gate.wait(POLL_S):
            if self._stop.is_set():
                self._inbox.put(("end", name))
                return
        try:
            for port, packet in node.packets():
                if not self._put(("pkt", name, port, packet)):
                    break
                if self._stop.is_set() and not node.stopping:
                    node.stop()
        except Exception as e:  # noqa: BLE001 - a failing source ends its stream, recorded and logged
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            self.metrics[name].counters["errors"] += 1
            log.error("source %s failed: %s", name, e)
        finally:
            self._inbox.put(("end", name))

    def _edge_loop(self, key: str, consumer: str, port: str, inp: InputSpec) -> None:
        from spikeflow.service.edges import EdgeReceiver

        rx = None
        try:
            rx = EdgeReceiver(self._endpoint(key), bind=False, context=self._context)
            self._receiver_stats[key] = rx.stats
            while True:
                if self._stop.is_set() and self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                    log.warning("edge %s: no end-of-stream from %s within the drain timeout", key, inp.node)
                    break
                packet = rx.recv(int(POLL_S * 1000) * 2)
                if packet is None:
                    continue
                if is_eos(packet):
                    break
                if not self._put(("pkt", "", key, packet)):
                    break
        except Exception as e:  # noqa: BLE001
            self.failures.append(f"edge {key}: {type(e).__name__}: {e}")
            log.error("edge %s failed: %s", key, e)
        finally:
            if rx is not None:
                stats = rx.stats()
                self._receiver_stats[key] = lambda s=stats: s
                rx.close() if hasattr(rx, "close") else None
            self._inbox.put(("end", key))

    # -- the chain --------------------------------------------------------------------------
    def _emit(self, node: str, port: str, packet: Packet) -> None:
        """``packet`` leaves ``node.port`` (``node == ""``: it arrived on the edge named ``port``)."""
        if not node:
            consumer, _, in_port = port.rpartition(".")
            self._deliver(consumer, in_port, packet)
            return
        for consumer, in_port in self._route_local.get((node, port), ()):
            self._deliver(consumer, in_port, packet)
        for key, sender in self._route_remote.get((node, port), ()):
            try:
                sender.send(packet)
            except SpikeflowError as e:  # e.g. a packet the wire cannot carry: counted, not fatal
                c = self.metrics[node].counters
                c["errors"] += 1
                if c["errors"] <= 3 or c["errors"] % 1000 == 0:
                    log.error("edge %s: cannot send %s#%d: %s", key, packet.stream, packet.seq, e)

    def _deliver(self, name: str, port: str, packet: Packet) -> None:
        m = self.metrics[name]
        c = m.counters
        c["packets_in"] += 1
        c["events_in"] += packet.count
        node = self.nodes[name]
        t0 = time.perf_counter_ns()
        try:
            out = node.process(port, packet)
        except Exception as e:  # noqa: BLE001 - one bad packet must not take the graph down
            c["errors"] += 1
            if c["errors"] <= 3 or c["errors"] % 1000 == 0:
                log.error("node %s failed on packet %s#%d (%d errors so far): %s: %s",
                          name, packet.stream, packet.seq, c["errors"], type(e).__name__, e)
            return
        m.proc.record(time.perf_counter_ns() - t0)
        self._route_outputs(name, m, out, packet)
        m.seen(now_ns())

    def _route_outputs(self, name: str, m: NodeMetrics, out, packet: Packet | None) -> None:
        now = now_ns()
        if not out:
            if packet is not None and node_is_sink(self.nodes[name]) and packet.sent_ns:
                m.latency.record(now - packet.sent_ns)  # end-to-end: the age of data consumed here
            return
        for oport, pkts in out.items():
            for p in pkts:
                m.counters["packets_out"] += 1
                m.counters["events_out"] += p.count
                if p.sent_ns:
                    m.latency.record(now - p.sent_ns)
                self._emit(name, oport, p)

    def _drain(self) -> None:
        for name in self.names:
            node = self.nodes[name]
            try:
                out = node.flush()
            except Exception as e:  # noqa: BLE001
                self.failures.append(f"{name}.flush: {type(e).__name__}: {e}")
                log.error("flush of %s failed: %s", name, e)
                continue
            self._route_outputs(name, self.metrics[name], out, None)
        for key, sender in self._senders.items():
            consumer, _, port = key.rpartition(".")
            inp = self.spec.nodes[consumer].inputs[port]
            sender.send(eos_packet(f"{inp.node}.{inp.out_port}"))

    def _close(self) -> None:
        for name in self.names:
            try:
                self.nodes[name].close()
            except Exception as e:  # noqa: BLE001
                self.failures.append(f"{name}.close: {type(e).__name__}: {e}")
                log.error("close of %s failed: %s", name, e)
        linger_ms = int(1000 * min(2.0, self.spec.options.drain_timeout_s))
        for s in self._senders.values():
            try:
                s.close(linger_ms=linger_ms)
            except Exception as e:  # noqa: BLE001
                log.error("closing edge sender failed: %s", e)

    def _drain_calls(self) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return
            if item[0] == "call":
                item[1]()

    # -- metrics ----------------------------------------------------------------------------
    def snapshot_metrics(self) -> dict[str, Any]:
        """Counters, histograms, node stats and edge stats, JSON-ready (sent with heartbeats)."""
        nodes = {}
        for name in self.names:
            node = self.nodes[name]
            try:
                st = node.stats()
            except Exception as e:  # noqa: BLE001
                st = {"stats_error": str(e)}
            nodes[name] = {"type": self.spec.nodes[name].type, **self.metrics[name].to_dict(),
                           "stats": jsonable(st), "sink": node_is_sink(node), "source": bool(node.is_source)}
        edges = {}
        for key, s in list(self._senders.items()):
            edges[key] = {"side": "send", **jsonable(_safe_stats(s.stats))}
        for key, fn in list(self._receiver_stats.items()):
            edges[key] = {"side": "recv", **jsonable(_safe_stats(fn))}
        return {"worker": self.worker, "pid": os.getpid(), "state": self.state_name,
                "uptime_s": time.time() - self.started, "inbox": self._inbox.qsize(), "nodes": nodes,
                "edges": edges, "failures": list(self.failures)}


def node_is_sink(node: Node) -> bool:
    return bool(getattr(node, "is_sink", False) or not type(node).outputs)


def _safe_stats(fn) -> dict:
    try:
        return dict(fn() or {})
    except Exception as e:  # noqa: BLE001
        return {"stats_error": str(e)}


def jsonable(obj: Any) -> Any:
    """Numpy scalars/arrays and tuples to plain JSON types (node stats are free-form)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 64 else f"<array {obj.shape} {obj.dtype}>"
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# -- running a whole graph in this process ------------------------------------------------------

def run_inline(spec: GraphSpec, *, install_signals: bool = True,
               state: str | Path | dict[str, np.ndarray] | None = None) -> Worker:
    """Run a single-worker graph in this process until it ends or a signal asks it to stop;
    ``state`` (a snapshot or model bundle, or its arrays) is loaded into the nodes first."""
    if len(spec.workers) != 1:
        raise SpikeflowError(f"graph {spec.name!r} has {len(spec.workers)} workers; use the daemon to run it")
    worker = Worker(spec, next(iter(spec.workers)))
    if state is not None:
        worker.load_state(state)
    old = {}
    if install_signals and threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            old[sig] = signal.signal(sig, lambda *_: worker.request_stop())
    try:
        worker.exit_code = worker.run()
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
    return worker


# -- the worker process -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """Worker process entry: ``python -m spikeflow.service.runtime SPEC.json`` (written by the daemon)."""
    argv = sys.argv[1:] if argv is None else argv
    cfg = json.loads(Path(argv[0]).read_text())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s worker {cfg['worker']}[{os.getpid()}] %(levelname)s %(message)s")
    from spikeflow.service.control import WorkerLink

    spec = load_graph(cfg["graph"], allow_remote=cfg.get("allow_remote", False))
    link = WorkerLink(cfg["daemon"], cfg["worker"], cfg.get("incarnation", 0), spec.options.heartbeat_s)
    try:
        worker = Worker(spec, cfg["worker"], metas=metas_from_json(cfg["metas"]), endpoints=cfg["endpoints"],
                        snapshot=cfg.get("snapshot"), gated=True)
    except SpikeflowError as e:
        log.error("cannot build worker: %s", e)
        link.send_fatal(str(e))
        return 3
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.request_stop())
    link.start(worker)
    code = worker.run()
    link.finish(worker)
    log.info("worker %s finished (%s)", cfg["worker"], "ok" if code == 0 else "; ".join(worker.failures))
    return code


if __name__ == "__main__":
    sys.exit(main())
