"""The node thread's loop: edges read on the node thread, sources through the inbox, one poller.

Real workers in this process (threads), real ZeroMQ edges over ipc, a real recording.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
from spikeflow.drivers.recording import read_recording
from spikeflow.nodes.base import Node, param
from spikeflow.service import registry, runtime
from spikeflow.service.graph import check_graph, load_graph
from spikeflow.service.runtime import INBOX_PACKETS, Worker, edge_endpoints
from waiting import wait_until


@dataclass(frozen=True)
class CollectParams:
    delay_s: float = param(0.0, "time spent on every packet (a slow node)", min=0.0)


class Collect(Node):
    """A two-input sink that keeps what it receives, per port, in arrival order."""

    type_name = "test_worker_collect"
    Params = CollectParams
    inputs: ClassVar[dict[str, str]] = {"a_in": "events", "b_in": "events"}
    optional_inputs: ClassVar[tuple[str, ...]] = ("b_in",)
    outputs: ClassVar[dict[str, str]] = {}

    def __init__(self, name, params=None):
        super().__init__(name, params)
        self.got: dict[str, list] = {"a_in": [], "b_in": []}
        self.threads: set[str] = set()

    def process(self, port, packet):
        self.got[port].append(packet)
        self.threads.add(threading.current_thread().name)
        if self.params.delay_s:
            time.sleep(self.params.delay_s)
        return {}


if Collect.type_name not in registry.all_types():
    registry.register(Collect)


@pytest.fixture
def nmnist(shared):
    return shared("recordings/tonic-testdata/sample_nmnist.bin")


def graph(src: str, *, a_policy="lossless", a_queue=4, delay_s=0.0, near=True, drain_s=5.0) -> str:
    """``far`` (worker ``up``) feeds ``col.a_in`` over an edge; ``near`` (a source in ``col``'s own
    worker) feeds ``col.b_in`` through the inbox."""
    b = ', b_in = "near.events_out"' if near else ""
    near_node = f"""
[nodes.near]
type = "replay"
params = {{ path = "{src}", speed = 0, window_us = 700 }}
""" if near else ""
    return f"""
[graph]
name = "loop"
drain_timeout_s = {drain_s}
[nodes.far]
type = "replay"
params = {{ path = "{src}", speed = 0, window_us = 1000 }}
worker = "up"
{near_node}
[nodes.col]
type = "test_worker_collect"
inputs = {{ a_in = {{ from = "far.events_out", policy = "{a_policy}", queue = {a_queue} }}{b} }}
params = {{ delay_s = {delay_s} }}
"""


def start(spec, tmp_path, names=("up", "main")):
    metas = check_graph(spec)
    eps = edge_endpoints(spec, tmp_path, "ipc")
    workers = {n: Worker(spec, n, metas=metas, endpoints=eps) for n in spec.workers}
    codes: dict[str, int] = {}
    threads = {n: threading.Thread(target=lambda n=n: codes.setdefault(n, workers[n].run()), name=f"worker-{n}",
                                   daemon=True) for n in workers}
    for n in names:
        threads[n].start()
    return workers, threads, codes


def test_a_source_and_an_edge_feed_one_node_thread_without_loss_or_reordering(nmnist, tmp_path):
    spec = load_graph(graph(nmnist))
    workers, threads, codes = start(spec, tmp_path)
    for t in threads.values():
        t.join(60)
    assert codes == {"up": 0, "main": 0}
    col = workers["main"].nodes["col"]
    ev, _ = read_recording(nmnist)
    for port, width in (("a_in", 1000), ("b_in", 700)):
        pkts = col.got[port]
        assert len(pkts) > 100
        assert [p.seq for p in pkts] == list(range(len(pkts))), port   # in order, none missing
        assert all(p.t1_us - p.t0_us == width for p in pkts)
        np.testing.assert_array_equal(np.concatenate([p.events for p in pkts]), ev)
    assert col.threads == {"worker-main"}   # edge and source packets both ran on the node thread
    m = workers["main"].snapshot_metrics()
    assert m["nodes"]["col"]["counters"]["packets_in"] == len(col.got["a_in"]) + len(col.got["b_in"])
    rx = m["edges"]["col.a_in"]
    assert rx["side"] == "recv" and rx["received"] == len(col.got["a_in"])   # (the end marker is not counted)
    assert rx["missing"] == 0 and rx["rejected_total"] == 0


def test_a_busy_node_thread_makes_both_inputs_wait_with_bounded_memory(nmnist, tmp_path):
    """A slow node: the lossless edge's sender waits with at most its window in flight, the source
    waits on the inbox (never more than INBOX_PACKETS held), and still nothing is lost."""
    spec = load_graph(graph(nmnist, a_queue=4, delay_s=0.002))
    workers, threads, codes = start(spec, tmp_path)
    up, main = workers["up"], workers["main"]
    seen = {"in_flight": 0, "waiting": False, "inbox": 0}
    while threads["main"].is_alive():
        st = up._senders["col.a_in"].stats()
        seen["in_flight"] = max(seen["in_flight"], st["in_flight"] if st["sent"] else 0)
        seen["waiting"] |= st["waiting"]
        seen["inbox"] = max(seen["inbox"], len(main._inbox))
        time.sleep(0.002)
    for t in threads.values():
        t.join(60)
    assert codes == {"up": 0, "main": 0}
    assert seen["waiting"] and seen["in_flight"] <= 4
    assert 0 < seen["inbox"] <= INBOX_PACKETS and main._inbox.full_waits > 0
    col = main.nodes["col"]
    ev, _ = read_recording(nmnist)
    for port in ("a_in", "b_in"):
        assert [p.seq for p in col.got[port]] == list(range(len(col.got[port])))
        np.testing.assert_array_equal(np.concatenate([p.events for p in col.got[port]]), ev)


def test_control_calls_and_stop_wake_an_idle_node_thread(nmnist, tmp_path, monkeypatch):
    """An idle worker (its upstream never starts) sleeps in its poll; with the idle poll made
    10 minutes long, a control call is still answered on the node thread and request_stop still
    ends the run at the drain deadline: both wake the poll instead of waiting for a timeout."""
    monkeypatch.setattr(runtime, "IDLE_MS", 600_000)
    spec = load_graph(graph(nmnist, near=False, drain_s=0.5))
    workers, threads, codes = start(spec, tmp_path, names=("main",))
    main = workers["main"]
    wait_until(lambda: main.state_name == "running", what="worker running")
    wait_until(lambda: main._inbox.sleeping, what="node thread asleep in its poll")
    for k in range(3):
        assert main.call(lambda: threading.current_thread().name, timeout=20) == "worker-main"
        wait_until(lambda: main._inbox.sleeping, what="node thread asleep again")
    assert main._inbox.wakeups >= 3
    main.request_stop()
    threads["main"].join(60)
    assert not threads["main"].is_alive() and codes == {"main": 0}
    assert main.state_name == "done" and main.nodes["col"].got == {"a_in": [], "b_in": []}
    # after the end, a call runs in the caller's thread
    assert main.call(lambda: threading.current_thread().name, timeout=5) == threading.current_thread().name


def test_realtime_edge_into_a_slow_node_accounts_for_every_packet(nmnist, tmp_path):
    """A realtime edge into a slow node: queued packets go as credit comes back (pumped by the
    sending node thread), the rest is dropped and counted: received + dropped == sent."""
    spec = load_graph(graph(nmnist, a_policy="realtime", a_queue=2, delay_s=0.003, near=False))
    workers, threads, codes = start(spec, tmp_path)
    for t in threads.values():
        t.join(60)
    assert codes == {"up": 0, "main": 0}
    up, main = workers["up"], workers["main"]
    sent = up.metrics["far"].counters["packets_out"]
    st = up.snapshot_metrics()["edges"]["col.a_in"]
    got = main.nodes["col"].got["a_in"]
    assert st["dropped"] > 0 and len(got) + st["dropped"] == sent
    seqs = [p.seq for p in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)   # drops leave gaps, never reorder
    # the receiver sees the drops between its first and last packet as seq gaps
    assert main.snapshot_metrics()["edges"]["col.a_in"]["missing"] == seqs[-1] - seqs[0] + 1 - len(got)


def test_zmq_input_is_read_on_the_node_thread_with_gate_and_end_of_stream(nmnist, tmp_path):
    """A zmq_input source needs no thread of its own: the node thread polls its socket beside
    the edge's. Nothing is taken before the gate opens; every pushed packet arrives in order,
    bit-exact; its end-of-stream (stop_on_eos) ends that input and, with the edge's, the run."""
    from spikeflow.service.client import Pusher
    from spikeflow.service.runtime import polled_source
    from spikeflow.service.zmq_nodes import ZmqInput

    cam_ep = f"ipc://{tmp_path}/cam"
    text = graph(nmnist, near=False).replace(', policy = "lossless", queue = 4 }', ', policy = "lossless", queue = 4 }, '
                                             'b_in = "cam.events_out"') + f"""
[nodes.cam]
type = "zmq_input"
params = {{ endpoint = "{cam_ep}", sensor_size = [34, 34, 2], stop_on_eos = true }}
"""
    spec = load_graph(text)
    metas = check_graph(spec)
    eps = edge_endpoints(spec, tmp_path, "ipc")
    up = Worker(spec, "up", metas=metas, endpoints=eps)
    main = Worker(spec, "main", metas=metas, endpoints=eps, gated=True)
    assert polled_source(main.nodes["cam"])

    class Replayed(ZmqInput):          # overriding packets() alone: its override must run, in a thread
        def packets(self):
            yield from super().packets()

    assert not polled_source(Replayed("x", main.nodes["cam"].params))
    codes: dict[str, int] = {}
    threads = [threading.Thread(target=lambda n=n, w=w: codes.setdefault(n, w.run()), name=f"worker-{n}", daemon=True)
               for n, w in (("up", up), ("main", main))]
    for t in threads:
        t.start()
    ev, _ = read_recording(nmnist)
    chunks = np.array_split(ev, 40)
    with Pusher(cam_ep) as push:
        push.push(chunks[0], (34, 34, 2))
        wait_until(lambda: main.state_name == "running", what="worker running")
        time.sleep(0.2)               # the gate is shut: the packet waits in the socket
        assert main.nodes["cam"].received == 0 and main.nodes["col"].got["b_in"] == []
        assert not [t for t in threading.enumerate() if t.name.startswith("src-")]
        main.open_gate()
        for c in chunks[1:]:
            push.push(c, (34, 34, 2))
        push.end()
    for t in threads:
        t.join(60)
    assert codes == {"up": 0, "main": 0}
    col = main.nodes["col"]
    assert [p.seq for p in col.got["b_in"]] == list(range(40))
    np.testing.assert_array_equal(np.concatenate([p.events for p in col.got["b_in"]]), ev)
    np.testing.assert_array_equal(np.concatenate([p.events for p in col.got["a_in"]]), ev)
    assert col.threads == {"worker-main"}
    m = main.snapshot_metrics()["nodes"]
    assert m["cam"]["counters"]["packets_out"] == 40 and m["cam"]["stats"]["eos"] is True
