"""The worker: runs one worker group of a graph, chaining its nodes by direct calls.

Inside a worker a packet goes from node to node as a Python object (operator chaining, no
serialisation). Edges to nodes of other workers are ZeroMQ sockets from
:mod:`spikeflow.service.edges` with the edge's policy (``lossless``: the sender waits;
``realtime``: bounded queue, drops counted). One thread runs every node, so nodes need no locks.
It waits in a single ``zmq.Poller`` on the sockets of its incoming edges (read directly, no
hand-over: a packet from another worker never crosses a Python queue, and credits go back as
it consumes, so a busy node thread makes its upstream wait), on the credit sockets of its
realtime outgoing edges (queued packets go when credit returns), and on the wake-up descriptor
of its :class:`~spikeflow.service.worker_inbox.Inbox`. A source that offers its socket
(``zmq_input``: see :func:`polled_source`) is read by the node thread too. Other sources, which
may block (a paced replay, a file read), run ``packets()`` in their own threads and hand packets
over through that bounded inbox; control requests (:meth:`Worker.call`) arrive the same way and
run between packets. Nothing waits on a timer: data and requests wake the poller at once.
(Why: a hand-over between two Python threads costs a lock, a wake-up and a switch of the GIL
per packet, which at 1k events per packet was most of a worker's CPU time.)

Drain (``request_stop``, SIGTERM/SIGINT, or every source at its end): sources stop; incoming
edges are read until their upstream's end-of-stream marker (or ``drain_timeout_s``); then every
node is flushed in topological order (their output still flows downstream), an end-of-stream
marker goes out on every outgoing edge, and nodes are closed (files complete, sockets released).

Repeats (docs/daemon.md, "Resume"): every incoming edge drops the packets of replayable
streams (:mod:`spikeflow.service.repeats`) that it has already delivered, so a restarted
upstream that resumes its stream is seen exactly once. Nodes may take part: the worker calls
``set_replayable_streams(names)`` on nodes that have it (``publish``, ``record``); then, given a
``state_dir`` (the daemon's, which outlives every worker), ``use_state_dir(state_dir,
restarted)`` (``publish`` keeps there, in a file named after itself, what it has published);
and, in a restarted worker (incarnation > 0), ``continue_after_restart()`` (``record`` continues
its file).

Run as a process by the daemon: ``python -m spikeflow.service.runtime SPEC.json``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from spikeflow.nodes.base import Node, PortMeta
from spikeflow.service.errors import SpikeflowError
from spikeflow.service.graph import (
    DEFAULT_WORKER,
    GraphSpec,
    InputSpec,
    load_graph,
    metas_from_json,
    resolve_metas,
)
from spikeflow.service.metrics import NodeMetrics
from spikeflow.service.packet import Packet, is_eos, now_ns
from spikeflow.service.repeats import RepeatFilter, replayable_streams
from spikeflow.service.worker_inbox import Inbox

log = logging.getLogger("spikeflow.runtime")

INBOX_PACKETS = 16
"""Packets waiting between the source threads and the node thread (bounded memory)."""

POLL_S = 0.05
"""Longest wait of a blocked source thread before it re-checks its stop flag."""

IDLE_MS = 100
"""Longest poll of an idle node thread: idle edge receivers repeat their credit then (a
restarted sender learns about them that way) and the drain deadline is checked."""

TAKE_BATCH = 32
"""Most packets the node thread takes from one input before it looks at the others (fairness)."""

_time_ns = time.time_ns   # now_ns's clock, without the call through packet.now_ns
_perf_ns = time.perf_counter_ns

HEAVY_DELIVERY_NS = 100_000
"""A delivery (a packet through this worker's nodes) slower than this sends what it batched at
once: the next packet would keep its outputs waiting as long (docs/protocol.md §7)."""


# -- end of stream on edges -------------------------------------------------------------------

def eos_packet(stream: str) -> Packet:
    """The end-of-stream marker a worker sends on each outgoing edge when it drains."""
    return Packet(kind="heartbeat", stream=stream, sent_ns=now_ns(), data={"eos": True})


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


class _Edge:
    """An incoming cross-worker edge as the node thread reads it."""

    __slots__ = ("consumer", "key", "port", "recv", "rx", "socket", "upstream")

    def __init__(self, key: str, consumer: str, port: str, upstream: str, rx):
        self.key, self.consumer, self.port, self.upstream, self.rx = key, consumer, port, upstream, rx
        self.socket = rx.socket
        # a packet or None, never waiting (recv(0) where the receiver has no recv_nowait)
        self.recv = getattr(rx, "recv_nowait", None) or (lambda: rx.recv(0))


class _NodePlan:
    """What delivering a packet to one node needs, looked up once when the worker is built
    (not per packet): its process method, metrics and where each output port goes."""

    __slots__ = ("counters", "latency", "metrics", "name", "proc", "process", "routes", "sink")

    def __init__(self, name: str, node: Node, metrics: NodeMetrics, sink: bool):
        self.name, self.process, self.metrics, self.sink = name, node.process, metrics, sink
        self.counters, self.latency, self.proc = metrics.counters, metrics.latency, metrics.proc
        self.routes: dict[str, tuple[tuple, tuple]] = {}   # out port -> ((plan, in port)...), ((key, sender)...)


_NOWHERE: tuple[tuple, tuple] = ((), ())


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
                 gated: bool = False, incarnation: int = 0, state_dir: str | Path | None = None):
        if worker not in spec.workers:
            raise SpikeflowError(f"graph {spec.name!r} has no worker {worker!r}; workers: {sorted(spec.workers)}")
        self.spec, self.worker = spec, worker
        self.names = spec.workers[worker]
        self.endpoints = dict(endpoints or {})
        self.state_name = "starting"
        self.started = time.time()
        self._context = context
        self._inbox = Inbox(inbox_packets, POLL_S)
        self._consuming = True   # False once run() stops reading its inbox: blocked sources give up
        self._stop = threading.Event()
        self._gate = threading.Event()  # sources wait on it: a pipeline starts when all its workers are up
        if not gated:
            self._gate.set()
        self._stop_deadline: float | None = None
        self.failures: list[str] = []
        self.metas, self.nodes = resolve_metas(spec, metas, only=self.names)
        self.metrics = {n: NodeMetrics() for n in self.names}
        self._sinks = frozenset(n for n in self.names if node_is_sink(self.nodes[n]))
        self._route_local: dict[tuple[str, str], list[tuple[str, str]]] = {}
        self._route_remote: dict[tuple[str, str], list[tuple[str, Any]]] = {}
        self._receivers: list[tuple[str, str, str, InputSpec]] = []   # (edge key, consumer, port, inp)
        self._senders: dict[str, Any] = {}
        self._realtime: list[Any] = []
        self._batching: list[Any] = []   # lossless senders that batch (run() flushes them)
        self._receiver_stats: dict[str, Callable[[], dict]] = {}
        self.replayable = replayable_streams(spec)
        self._wire()
        self._plans = self._make_plans()
        if snapshot:
            loaded = self.load_state(snapshot)
            log.info("worker %s: state of %s loaded from %s", worker, loaded or "no node", snapshot)
        for name in self.names:
            node = self.nodes[name]
            if callable(getattr(node, "set_replayable_streams", None)):
                node.set_replayable_streams(self.replayable)
            if state_dir is not None and callable(getattr(node, "use_state_dir", None)):
                node.use_state_dir(Path(state_dir), incarnation > 0)
            if incarnation > 0 and callable(getattr(node, "continue_after_restart", None)):
                node.continue_after_restart()

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

    def _make_plans(self) -> dict[str, _NodePlan]:
        plans = {n: _NodePlan(n, self.nodes[n], self.metrics[n], n in self._sinks) for n in self.names}
        for node, port in self._route_local.keys() | self._route_remote.keys():
            plans[node].routes[port] = (tuple((plans[c], p) for c, p in self._route_local.get((node, port), ())),
                                        tuple(self._route_remote.get((node, port), ())))
        return plans

    def _endpoint(self, key: str) -> str:
        ep = self.endpoints.get(key)
        if ep is None:
            raise SpikeflowError(f"no endpoint for cross-worker edge {key}; run the graph through the daemon")
        return ep

    def _sender(self, key: str, inp: InputSpec):
        from spikeflow.service.edges import BATCH_MAX, EdgeSender

        # lossless edges batch what the node thread sends between two waits (run() flushes them)
        lossless = inp.policy == "lossless"
        s = EdgeSender(self._endpoint(key), policy=inp.policy, queue=inp.queue, bind=True, context=self._context,
                       batch=BATCH_MAX if lossless else 1, max_bytes=inp.queue_bytes if lossless else None)
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
        """Queue ``job`` to run on the node thread between two packets (runs now if the worker ended).

        Never waits for room: a control request does not queue behind data backpressure."""
        if self.state_name in ("done", "failed") or threading.current_thread() is self._node_thread:
            job()
            return
        self._inbox.put_nowait(("call", job))
        if self.state_name in ("done", "failed"):  # the node thread ended meanwhile: nobody else will
            self._drain_calls()

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
            self._inbox.put_nowait(("stop",))  # wake the node thread: its poll now ends at the deadline

    def _abort_senders(self) -> None:
        for s in list(self._senders.values()):
            s.stop()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self) -> int:
        """Run until every source and incoming edge has ended, then flush and close.
        Returns 0, or 1 on failures."""
        self._node_thread = threading.current_thread()
        inbox = self._inbox
        sources = [threading.Thread(target=self._source_loop, args=(n,), name=f"src-{n}", daemon=True)
                   for n in self.names if self.nodes[n].is_source and not polled_source(self.nodes[n])]
        gated = [n for n in self.names if self.nodes[n].is_source and polled_source(self.nodes[n])]
        polled: dict[Any, str] = {}   # socket -> source read on this thread (registered once the gate opens)
        poller = zmq.Poller()
        wake_fd = inbox.fileno()
        poller.register(wake_fd, zmq.POLLIN)
        edges: dict[Any, _Edge] = {}
        pumps = {}
        batching = self._batching = [s for s in self._senders.values() if s.batch_max > 1]
        try:
            for key, consumer, port, inp in self._receivers:
                e = self._open_edge(key, consumer, port, inp)
                if e is not None:
                    edges[e.socket] = e
                    poller.register(e.socket, zmq.POLLIN)
            for s in self._realtime:  # POLLIN here = credit returned: queued packets may go
                pumps[s.socket] = s
                poller.register(s.socket, zmq.POLLIN)
            self.state_name = "running"
            for t in sources:
                t.start()
            live = len(sources) + len(gated)
            while live or edges:
                # source packets and control calls (a bounded batch, then the sockets get their turn)
                for _ in range(TAKE_BATCH):
                    item = inbox.pop()
                    if item is None:
                        break
                    kind = item[0]
                    if kind == "pkt":
                        t0 = _perf_ns()
                        self._from_source(item[1], item[2], item[3])
                        if batching:
                            self._batches_due(t0)
                    elif kind == "call":
                        item[1]()
                    elif kind == "end":
                        live -= 1
                    # ("stop",) and ("gate",) only wake the loop
                if gated and (self._gate.is_set() or self._stop.is_set()):
                    for n in gated:
                        if self._stop.is_set():
                            live -= 1   # stopped before it started
                        else:
                            sock = self.nodes[n].pollable()
                            polled[sock] = n
                            poller.register(sock, zmq.POLLIN)
                    gated = []
                if polled and self._stop.is_set():   # a stopped source ends at once, as packets() does
                    for sock in list(polled):
                        poller.unregister(sock)
                        del polled[sock]
                        live -= 1
                if edges and self._stop_deadline is not None and time.monotonic() > self._stop_deadline:
                    for e in list(edges.values()):
                        log.warning("edge %s: no end-of-stream from %s within the drain timeout", e.key, e.upstream)
                        self._end_edge(e, edges, poller)
                    continue
                for snd in batching:   # batched packets go before the node thread waits or polls
                    snd.flush()
                if inbox.may_sleep():
                    timeout = IDLE_MS
                    if edges and self._stop_deadline is not None:  # (the deadline concerns edges)
                        timeout = max(1, min(timeout, int((self._stop_deadline - time.monotonic()) * 1e3) + 1))
                else:
                    if not edges and not pumps and not polled:
                        continue  # only the inbox to serve: no need to look at sockets
                    timeout = 0
                ready = poller.poll(timeout)
                inbox.sleeping = False
                if not ready:
                    if timeout:  # idle: let each edge repeat its credit (and catch a late arrival)
                        for e in list(edges.values()):
                            self._take(e, edges, poller)
                    continue
                for sock, _ in ready:
                    e = edges.get(sock)
                    if e is not None:
                        self._take(e, edges, poller)
                    elif sock == wake_fd:
                        inbox.awake()
                    elif sock in polled:
                        if self._take_source(polled[sock]):
                            poller.unregister(sock)
                            del polled[sock]
                            live -= 1
                    else:
                        pumps[sock].pump(0)
            self.state_name = "draining"
            self._drain()
        finally:
            self._consuming = False
            inbox.release_producers()
            for e in list(edges.values()):
                self._end_edge(e, edges, poller)
            self._close()
            for n in self.names:
                if self.nodes[n].is_source and not self.nodes[n].stopping:
                    self.nodes[n].stop()  # (only on a failure: after a normal run every source ended)
            for t in sources:
                t.join(timeout=1.0)
            self.state_name = "failed" if self.failures else "done"
            self._drain_calls()
            inbox.close()
        return 1 if self.failures else 0

    def open_gate(self) -> None:
        """Let sources start (the daemon opens it once every worker is connected)."""
        self._gate.set()
        self._inbox.put_nowait(("gate",))  # sources read on the node thread start now

    def _from_source(self, name: str, port: str, packet: Packet) -> None:
        sm = self.metrics[name]  # count what the source emitted
        sm.counters["packets_out"] += 1
        sm.counters["events_out"] += packet.count
        sm.seen(_time_ns())
        self._emit(name, port, packet)

    def _take_source(self, name: str) -> bool:
        """Emit what a polled source holds now (its socket is readable); True when it has ended."""
        node = self.nodes[name]
        try:
            pkts, ended = node.take_nowait(TAKE_BATCH)
        except Exception as e:  # noqa: BLE001 - a failing source ends its stream, recorded and logged
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            self.metrics[name].counters["errors"] += 1
            log.error("source %s failed: %s", name, e)
            return True
        batching = self._batching
        for port, packet in pkts:
            t0 = _perf_ns()
            self._from_source(name, port, packet)
            if batching:
                self._batches_due(t0)
        return ended

    def _give_up(self) -> bool:
        """A source blocked on a full inbox stops waiting: past the drain deadline, or run() ended."""
        if not self._consuming:
            return True
        return self._stop.is_set() and self._stop_deadline is not None and time.monotonic() > self._stop_deadline

    def _source_loop(self, name: str) -> None:
        node = self.nodes[name]
        while not self._gate.wait(POLL_S):
            if self._stop.is_set():
                self._inbox.put_nowait(("end", name))
                return
        put, give_up = self._inbox.put, self._give_up
        try:
            for port, packet in node.packets():
                if not put(("pkt", name, port, packet), give_up):
                    break
                if self._stop.is_set() and not node.stopping:
                    node.stop()
        except Exception as e:  # noqa: BLE001 - a failing source ends its stream, recorded and logged
            self.failures.append(f"{name}: {type(e).__name__}: {e}")
            self.metrics[name].counters["errors"] += 1
            log.error("source %s failed: %s", name, e)
        finally:
            self._inbox.put_nowait(("end", name))

    # -- incoming edges (read on the node thread) ---------------------------------------------
    def _open_edge(self, key: str, consumer: str, port: str, inp: InputSpec) -> _Edge | None:
        from spikeflow.service.edges import EdgeReceiver, default_window

        try:  # (the receiver knows the sender's window: credits are batched, see EdgeReceiver)
            rx = EdgeReceiver(self._endpoint(key), bind=False, context=self._context,
                              repeats=RepeatFilter(self.replayable), window=default_window(inp.policy, inp.queue))
        except Exception as e:  # noqa: BLE001
            self.failures.append(f"edge {key}: {type(e).__name__}: {e}")
            log.error("edge %s failed: %s", key, e)
            return None
        self._receiver_stats[key] = rx.stats
        return _Edge(key, consumer, port, inp.node, rx)

    def _take(self, e: _Edge, edges: dict, poller: zmq.Poller) -> None:
        """Deliver what edge ``e`` holds, without waiting: at most ``TAKE_BATCH`` packets, and
        then the rest of a batch message already read (its socket will not report it)."""
        recv, deliver, consumer, port, rx = e.recv, self._deliver, e.consumer, e.port, e.rx
        taken = 0
        while taken < TAKE_BATCH or rx.pending:
            taken += 1
            try:
                packet = recv()
            except Exception as exc:  # noqa: BLE001 - a broken edge ends that input, recorded
                self.failures.append(f"edge {e.key}: {type(exc).__name__}: {exc}")
                log.error("edge %s failed: %s", e.key, exc)
                self._end_edge(e, edges, poller)
                return
            if packet is None:
                return
            if is_eos(packet):
                self._end_edge(e, edges, poller)
                return
            t0 = _perf_ns()
            deliver(consumer, port, packet)
            if self._batching:
                self._batches_due(t0)

    def _batches_due(self, t0: int) -> None:
        """After a delivery that started at ``t0``: send the lossless edges' batches now if it
        was slow (HEAVY_DELIVERY_NS), or if a batch has waited BATCH_MAX_AGE_NS; else they go
        when the node thread is about to wait."""
        now = _perf_ns()
        heavy = now - t0 > HEAVY_DELIVERY_NS
        for s in self._batching:
            s.flush_due(now, heavy)

    def _end_edge(self, e: _Edge, edges: dict, poller: zmq.Poller) -> None:
        """Stop reading edge ``e``: its final stats stay readable, its socket is closed."""
        edges.pop(e.socket, None)
        try:
            poller.unregister(e.socket)
        except KeyError:
            pass
        try:
            stats = e.rx.stats()
            self._receiver_stats[e.key] = lambda s=stats: s
            e.rx.close()
        except Exception as exc:  # noqa: BLE001
            log.error("closing edge %s failed: %s", e.key, exc)

    # -- the chain --------------------------------------------------------------------------
    def _emit(self, node: str, port: str, packet: Packet) -> None:
        """``packet`` leaves ``node.port``: direct calls into local consumers, sends on edges."""
        plan = self._plans[node]
        local, remote = plan.routes.get(port, _NOWHERE)
        for consumer, in_port in local:
            self._run_node(consumer, in_port, packet)
        if remote:
            self._send_remote(plan, remote, packet)

    def _send_remote(self, plan: _NodePlan, remote: tuple, packet: Packet) -> None:
        for key, sender in remote:
            try:
                sender.send(packet)
            except SpikeflowError as e:  # e.g. a packet the wire cannot carry: counted, not fatal
                c = plan.counters
                c["errors"] += 1
                if c["errors"] <= 3 or c["errors"] % 1000 == 0:
                    log.error("edge %s: cannot send %s#%d: %s", key, packet.stream, packet.seq, e)

    def _deliver(self, name: str, port: str, packet: Packet) -> None:
        """Run ``packet`` through node ``name`` and route what it emits."""
        self._run_node(self._plans[name], port, packet)

    def _run_node(self, plan: _NodePlan, port: str, packet: Packet) -> None:
        """:meth:`_deliver` with the node's plan in hand (what local consumers get).

        Two reads of the wall clock per node serve all its metrics: processing time (after -
        before), the age of what it emits or consumes (after - sent_ns) and its throughput span.
        (The processing time shares the wall clock with latency: a clock step during one call,
        rare, would show in that one sample, clamped at 0 if negative.)"""
        c = plan.counters
        c["packets_in"] += 1
        ev = packet.events
        if ev is not None:
            c["events_in"] += len(ev)
        t0 = _time_ns()
        try:
            out = plan.process(port, packet)
        except Exception as e:  # noqa: BLE001 - one bad packet must not take the graph down
            c["errors"] += 1
            if c["errors"] <= 3 or c["errors"] % 1000 == 0:
                log.error("node %s failed on packet %s#%d (%d errors so far): %s: %s",
                          plan.name, packet.stream, packet.seq, c["errors"], type(e).__name__, e)
            return
        now = _time_ns()
        plan.proc.record(now - t0)
        m = plan.metrics
        if not m.first_ns:   # (NodeMetrics.seen, inlined: this runs for every node and packet)
            m.first_ns = now
        m.last_ns = now
        if out:
            self._fan_out(plan, out, now)
        elif plan.sink and packet.sent_ns:
            plan.latency.record(now - packet.sent_ns)  # end-to-end: the age of data consumed here

    def _fan_out(self, plan: _NodePlan, out, now: int) -> None:
        """Count what ``plan``'s node emitted, record its age and pass it on."""
        c, latency, routes = plan.counters, plan.latency, plan.routes
        for oport, pkts in out.items():
            local, remote = routes.get(oport, _NOWHERE)
            for p in pkts:
                c["packets_out"] += 1
                ev = p.events
                if ev is not None:
                    c["events_out"] += len(ev)
                if p.sent_ns:
                    latency.record(now - p.sent_ns)
                for consumer, in_port in local:
                    self._run_node(consumer, in_port, p)
                if remote:
                    self._send_remote(plan, remote, p)

    def _route_flushed(self, name: str, out) -> None:
        """Route what node ``name`` emitted outside a delivery (its ``flush``)."""
        if out:
            self._fan_out(self._plans[name], out, _time_ns())

    def _drain(self) -> None:
        for name in self.names:
            node = self.nodes[name]
            try:
                out = node.flush()
            except Exception as e:  # noqa: BLE001
                self.failures.append(f"{name}.flush: {type(e).__name__}: {e}")
                log.error("flush of %s failed: %s", name, e)
                continue
            self._route_flushed(name, out)
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
        """Run the control calls still queued (the worker has ended; any thread may call this)."""
        while True:
            item = self._inbox.pop()
            if item is None:
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
                "uptime_s": time.time() - self.started, "inbox": len(self._inbox), "nodes": nodes,
                "edges": edges, "failures": list(self.failures)}


def polled_source(node: Node) -> bool:
    """Whether the node thread reads ``node`` itself: a source offering ``pollable()`` (a ZeroMQ
    socket or descriptor) and ``take_nowait(limit) -> (packets, ended)`` next to its
    ``packets()``, like ``zmq_input``. Its packets then never cross threads. (A subclass that
    overrides ``packets()`` alone keeps a thread: its override is what must run.)"""
    if not (callable(getattr(node, "pollable", None)) and callable(getattr(node, "take_nowait", None))):
        return False
    mro = type(node).__mro__
    owner = {a: next((k for k in mro if a in k.__dict__), None) for a in ("packets", "take_nowait", "pollable")}
    return owner["packets"] is owner["take_nowait"] is owner["pollable"]


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
                        snapshot=cfg.get("snapshot"), gated=True, incarnation=int(cfg.get("incarnation", 0)),
                        state_dir=cfg.get("state_dir"))
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
