"""The worker runtime in this process: chaining, cross-worker edges, drain, policies, metrics."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

import naive_filters as naive
from spikeflow.drivers.recording import read_recording
from spikeflow.service.control import carry_over, read_snapshot, save_snapshot
from spikeflow.service.graph import check_graph, load_graph
from spikeflow.service.metrics import Histogram, NodeMetrics, merge_node_dicts, summarize
from spikeflow.service.runtime import Worker, edge_endpoints, run_inline
from waiting import wait_until


@pytest.fixture
def nmnist(shared):
    return shared("recordings/tonic-testdata/sample_nmnist.bin")


def two_worker_graph(src: str, out: str, policy: str = "lossless", queue: int = 8, speed: float = 0,
                     loop: bool = False) -> str:
    rec = "" if not out else f"""
[nodes.rec]
type = "record"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ path = "{out}" }}
worker = "io"
"""
    return f"""
[graph]
name = "rt"
drain_timeout_s = 5.0
[nodes.src]
type = "replay"
params = {{ path = "{src}", speed = {speed}, window_us = 1000, loop = {str(loop).lower()} }}
[nodes.denoise]
type = "noise_filter"
inputs = {{ events_in = "src.events_out" }}
params = {{ window_us = 2000 }}
[nodes.tap]
type = "print"
inputs = {{ events_in = {{ from = "denoise.events_out", policy = "{policy}", queue = {queue} }} }}
params = {{ every = 1000000 }}
worker = "io"
{rec}"""


def test_single_worker_chain_is_bit_exact(nmnist, tmp_path):
    """replay -> noise_filter -> record in one worker: the file holds exactly the filtered events."""
    out = tmp_path / "out.sfe"
    spec = load_graph(f"""
[nodes.src]
type = "replay"
params = {{ path = "{nmnist}", speed = 0, window_us = 500 }}
[nodes.denoise]
type = "noise_filter"
inputs = {{ events_in = "src.events_out" }}
params = {{ window_us = 2000 }}
[nodes.rec]
type = "record"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ path = "{out}" }}
""")
    w = run_inline(spec, install_signals=False)
    assert w.exit_code == 0 and w.failures == []
    ev, info = read_recording(nmnist)
    want = ev[naive.background_activity(ev, info.sensor_size, 2000)]
    got, got_info = read_recording(out)
    np.testing.assert_array_equal(got, want)
    assert got_info.sensor_size == info.sensor_size
    m = w.snapshot_metrics()["nodes"]
    assert m["src"]["counters"]["events_out"] == len(ev)
    assert m["denoise"]["counters"]["events_in"] == len(ev)
    assert m["denoise"]["counters"]["events_out"] == len(want) == m["rec"]["counters"]["events_in"]
    assert m["rec"]["counters"]["packets_in"] == m["src"]["counters"]["packets_out"]
    assert m["rec"]["stats"]["events_written"] == len(want)
    lat = Histogram.from_dict(m["rec"]["latency"])
    assert lat.count == m["rec"]["counters"]["packets_in"]
    assert 0 < lat.percentile(50) <= lat.percentile(99) <= lat.max
    assert w.state_name == "done"


def _run_workers(spec, tmp_path, transport="ipc", start=("main", "io")):
    metas = check_graph(spec)
    eps = edge_endpoints(spec, tmp_path, transport)
    workers = {n: Worker(spec, n, metas=metas, endpoints=eps) for n in spec.workers}
    codes = {}
    threads = {n: threading.Thread(target=lambda n=n: codes.setdefault(n, workers[n].run()), daemon=True)
               for n in workers}
    for n in start:
        threads[n].start()
    return workers, threads, codes


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_cross_worker_lossless_edges_deliver_everything(nmnist, tmp_path, transport):
    out = tmp_path / "out.sfe"
    spec = load_graph(two_worker_graph(nmnist, out))
    workers, threads, codes = _run_workers(spec, tmp_path, transport)
    for t in threads.values():
        t.join(60)
    assert codes == {"main": 0, "io": 0}
    ev, info = read_recording(nmnist)
    want = ev[naive.background_activity(ev, info.sensor_size, 2000)]
    np.testing.assert_array_equal(read_recording(out)[0], want)
    io = workers["io"].snapshot_metrics()
    assert io["nodes"]["tap"]["counters"]["events_in"] == len(want)  # queue 8 lossless: nothing lost
    assert io["edges"]["rec.events_in"]["side"] == "recv"
    sent = workers["main"].snapshot_metrics()["edges"]
    assert sent["tap.events_in"]["dropped"] == 0
    # as fast as possible, the node thread sends several packets between two waits: batches
    # (docs/protocol.md §7), each received as one message and delivered packet by packet
    rec = sent["rec.events_in"]
    assert rec["batches"] > 0 and rec["batched"] >= 2 * rec["batches"]
    # each sender has its edge's limits: the defaults for rec, the graph's queue for tap
    assert (rec["window"], rec["max_bytes"]) == (256, 16 << 20)
    assert (sent["tap.events_in"]["window"], sent["tap.events_in"]["max_bytes"]) == (8, 16 << 20)
    assert io["edges"]["rec.events_in"]["batches"] == rec["batches"]


def test_lossless_upstream_waits_for_a_stalled_consumer(nmnist, tmp_path):
    """With the consumer worker not running, a lossless sender waits (nothing dropped); once the
    consumer starts, every event arrives."""
    out = tmp_path / "out.sfe"
    spec = load_graph(two_worker_graph(nmnist, out, queue=4))
    workers, threads, codes = _run_workers(spec, tmp_path, start=("main",))
    main = workers["main"]
    wait_until(lambda: any(e["waiting"] for e in main.snapshot_metrics()["edges"].values()),
               what="upstream waiting")
    sent = main.snapshot_metrics()["nodes"]["src"]["counters"]["packets_out"]
    time.sleep(0.3)  # the stall must hold: nothing more leaves the source while blocked
    assert main.snapshot_metrics()["nodes"]["src"]["counters"]["packets_out"] <= sent + 2 * 16
    assert threads["main"].is_alive()
    threads["io"].start()
    for t in threads.values():
        t.join(60)
    assert codes == {"main": 0, "io": 0}
    ev, info = read_recording(nmnist)
    assert len(read_recording(out)[0]) == int(naive.background_activity(ev, info.sensor_size, 2000).sum())


def test_realtime_edge_drops_and_counts_when_consumer_stalls(nmnist, tmp_path):
    """A realtime edge to a stalled consumer never blocks its upstream: the source finishes and
    the drops are counted; memory stays bounded by the queue."""
    spec = load_graph(two_worker_graph(nmnist, "", policy="realtime", queue=4))
    workers, threads, codes = _run_workers(spec, tmp_path, start=("main",))
    main = workers["main"]
    wait_until(lambda: main.snapshot_metrics()["nodes"]["src"]["counters"]["packets_out"] > 200,
               what="source running")
    st = main._senders["tap.events_in"].stats()
    assert st["queued"] <= 4
    threads["main"].join(30)  # drains: the final EOS waits at most the linger time
    assert codes["main"] == 0
    st = main.snapshot_metrics()["edges"]["tap.events_in"]
    packets = main.snapshot_metrics()["nodes"]["src"]["counters"]["packets_out"]
    assert st["dropped"] >= packets - st["window"] - 4 - 1
    rows = summarize(main.snapshot_metrics()["nodes"] | {"tap": {"type": "print", "counters": {}}},
                     {"tap.events_in": {"send": st}})["nodes"]
    assert rows["tap"]["drops"] == st["dropped"] > 0


def test_request_stop_drains_and_closes_sinks(nmnist, tmp_path):
    """An endless paced stream stopped mid-way: sources stop, in-flight packets reach the sink,
    the recording is complete and holds exactly what the sink received."""
    out = tmp_path / "out.sfe"
    spec = load_graph(two_worker_graph(nmnist, out, speed=1.0, loop=True))
    workers, threads, codes = _run_workers(spec, tmp_path)
    io = workers["io"]
    wait_until(lambda: io.metrics["rec"].counters["packets_in"] > 50, what="recording under way")
    for w in workers.values():
        w.request_stop()
    for t in threads.values():
        t.join(30)
    assert codes == {"main": 0, "io": 0}
    got, info = read_recording(out)
    assert len(got) == io.metrics["rec"].counters["events_in"] > 0
    assert io.metrics["rec"].counters["events_in"] == workers["main"].metrics["denoise"].counters["events_out"]


def test_worker_state_snapshot_roundtrip(nmnist, tmp_path):
    spec = load_graph(f"""
[nodes.src]
type = "replay"
params = {{ path = "{nmnist}", speed = 0 }}
[nodes.denoise]
type = "noise_filter"
inputs = {{ events_in = "src.events_out" }}
[nodes.show]
type = "print"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ every = 100000 }}
""")
    w = run_inline(spec, install_signals=False)
    st = w.state()
    assert sorted(st) == ["denoise/last_t_us"] and st["denoise/last_t_us"].shape == (34, 34)
    ev, _ = read_recording(nmnist)
    assert st["denoise/last_t_us"].max() == ev["t"].max()
    path = save_snapshot(tmp_path / "snap.npz", st)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away
    fresh = Worker(spec, "main", snapshot=path)
    np.testing.assert_array_equal(fresh.nodes["denoise"].state()["last_t_us"], st["denoise/last_t_us"])
    assert read_snapshot(path).keys() == st.keys()
    from spikeflow.service.errors import ModelError, ParamError
    with pytest.raises(ParamError, match="nodes.denoise"):
        fresh.load_state({"denoise/last_t_us": np.zeros((3, 3), np.int64)})
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="bad.npz"):
        read_snapshot(tmp_path / "bad.npz")


def test_carry_over_takes_only_the_absent_nodes_missing_keys():
    """What a snapshot keeps from the previous one for workers that could not answer: their
    nodes' keys only (not a node with a shared prefix), never over a fresh answer."""
    fresh = {"a/w": np.array([1])}
    previous = {"a/w": np.array([0]), "a/v": np.array([2]), "b/w": np.array([3]), "bb/w": np.array([4]),
                "c/w": np.array([5])}
    assert carry_over(fresh, previous, ["a", "b"]) == ["a/v", "b/w"]
    assert sorted(fresh) == ["a/v", "a/w", "b/w"] and fresh["a/w"][0] == 1 and fresh["b/w"][0] == 3
    assert carry_over(fresh, {}, ["a"]) == []


def test_call_runs_on_the_node_thread_while_running(nmnist, tmp_path):
    spec = load_graph(two_worker_graph(nmnist, "", speed=1.0, loop=True))
    workers, threads, codes = _run_workers(spec, tmp_path)
    main = workers["main"]
    wait_until(lambda: main.state_name == "running" and main.metrics["denoise"].counters["packets_in"] > 5)
    names = main.call(lambda: threading.current_thread().name, timeout=10)
    assert names == threads["main"].name
    for w in workers.values():
        w.request_stop()
    for t in threads.values():
        t.join(30)
    assert codes == {"main": 0, "io": 0}


# -- metrics ----------------------------------------------------------------------------------

def test_histogram_percentiles_within_bucket_precision():
    rng = np.random.default_rng(3)
    vals = rng.lognormal(11, 1.2, 20_000).astype(np.int64)
    h = Histogram()
    for v in vals:
        h.record(int(v))
    for q in (50, 90, 99):
        exact = np.percentile(vals, q)
        assert abs(h.percentile(q) - exact) / exact < 0.1
    assert h.max == vals.max() and h.min == vals.min() and h.count == len(vals)
    assert h.percentile(100) == vals.max()


def test_histogram_reads_see_waiting_values_and_never_count_one_twice():
    # record() only queues a value; reads include what waits (without folding it), so a
    # snapshot taken by another thread mid-stream never counts more values than were recorded
    from spikeflow.service.metrics import bucket_of

    h = Histogram()
    for v in (-5, 0, 7, 3_000):                  # fewer than FOLD: all still waiting
        h.record(v)
    d = h.to_dict()
    assert (d["n"], d["sum"], d["min"], d["max"]) == (4, 3_007, 0, 3_000)   # negatives count as 0
    assert dict(zip(d["b"], d["c"])) == {0: 2, bucket_of(7): 1, bucket_of(3_000): 1}
    assert Histogram.from_dict(d).to_dict() == d
    assert len(h._pending) == 4 and h.count == 4  # the read folded nothing: only the recording thread folds
    n_values, recorded, seen = 8 * Histogram.FOLD + 17, [4], []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            snap = h.to_dict()
            seen.append((snap["n"], recorded[0], sum(snap["c"])))

    t = threading.Thread(target=reader)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)                  # (the threads take turns often)
    t.start()
    try:
        for v in range(1, n_values + 1):
            recorded[0] = 4 + v                  # (before: a snapshot may include v from now on)
            h.record(v)
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(switch)
    assert seen and all(n <= done and n == buckets for n, done, buckets in seen)
    final = h.to_dict()
    assert final["n"] == 4 + n_values and final["sum"] == 3_007 + n_values * (n_values + 1) // 2
    assert final["max"] == n_values and h.percentile(100) == n_values


def test_histograms_merge_like_one():
    rng = np.random.default_rng(4)
    a_vals, b_vals = rng.integers(1, 10**6, 500), rng.integers(10**5, 10**8, 700)
    a, b, both = Histogram(), Histogram(), Histogram()
    for v in a_vals:
        a.record(int(v))
        both.record(int(v))
    for v in b_vals:
        b.record(int(v))
        both.record(int(v))
    merged = Histogram.from_dict(a.to_dict()).merge(Histogram.from_dict(b.to_dict()))
    assert np.array_equal(merged.counts, both.counts)
    assert (merged.min, merged.max, merged.count, merged.total) == (both.min, both.max, both.count, both.total)
    m1, m2 = NodeMetrics(), NodeMetrics()
    m1.counters["events_in"], m2.counters["events_in"] = 3, 4
    m1.latency.record(1000)
    m2.latency.record(5000)
    d = merge_node_dicts(m1.to_dict(), m2.to_dict())
    assert d["counters"]["events_in"] == 7 and d["latency"]["n"] == 2 and d["latency"]["max"] == 5000
    with pytest.raises(ValueError):
        Histogram.from_dict({"b": [10**6], "c": [1]})


# -- built-in sources -------------------------------------------------------------------------

def test_simulate_gesture_source_windows_the_generator():
    from spikeflow.drivers.gestures import simulate_gesture
    from spikeflow.nodes.base import build_params
    from spikeflow.nodes.io import Simulate

    p = build_params(Simulate, {"scene": "gesture", "class_id": 3, "seed": 2, "duration_us": 200_000,
                                "size": 48, "window_us": 10_000, "speed": 0})
    node = Simulate("sim", p)
    meta = node.setup({})
    assert meta["events_out"].sensor_size == (48, 48, 2)
    pkts = [pkt for _, pkt in node.packets()]
    assert [pk.seq for pk in pkts] == list(range(20))
    assert [(pk.t0_us, pk.t1_us) for pk in pkts] == [(k * 10_000, (k + 1) * 10_000) for k in range(20)]
    want = simulate_gesture(3, seed=2, duration_us=200_000, size=48)
    want = want[(want["t"] >= 0) & (want["t"] < 200_000)]
    np.testing.assert_array_equal(np.concatenate([pk.events for pk in pkts]), want)
    assert all(np.all((pk.events["t"] >= pk.t0_us) & (pk.events["t"] < pk.t1_us)) for pk in pkts)


def _register(cls) -> None:
    """Register a test node type once (tests may run more than once in a process)."""
    from spikeflow.service import registry

    if cls.type_name not in registry.all_types():
        registry.register(cls)


def _replay_through(nmnist, name: str, node_type: str, out, window_us: int, rec_worker: str | None = None) -> str:
    """replay (as fast as possible) -> node ``name`` of ``node_type`` -> record to ``out``; the
    record in worker ``rec_worker`` when named."""
    worker = f'worker = "{rec_worker}"\n' if rec_worker else ""
    return f"""
[graph]
name = "through"
drain_timeout_s = 5.0
[nodes.src]
type = "replay"
params = {{ path = "{nmnist}", speed = 0, window_us = {window_us} }}
[nodes.{name}]
type = "{node_type}"
inputs = {{ events_in = "src.events_out" }}
[nodes.rec]
type = "record"
inputs = {{ events_in = "{name}.events_out" }}
params = {{ path = "{out}" }}
{worker}"""


def test_a_failing_node_is_counted_and_the_stream_goes_on(nmnist, tmp_path):
    """A node raising on some packets loses those packets only: errors are counted, the rest flows."""
    from spikeflow.nodes.base import Node

    class Flaky(Node):
        type_name = "test_runtime_flaky"

        def process(self, port, packet):
            if packet.seq % 3 == 0:
                raise ValueError(f"bad packet {packet.seq}")
            return {"events_out": [packet]}

    _register(Flaky)
    out = tmp_path / "out.sfe"
    spec = load_graph(_replay_through(nmnist, "flaky", Flaky.type_name, out, 1000))
    w = run_inline(spec, install_signals=False)
    assert w.exit_code == 0
    m = w.metrics
    n_packets = m["src"].counters["packets_out"]
    assert m["flaky"].counters["errors"] == (n_packets + 2) // 3
    assert m["rec"].counters["packets_in"] == n_packets - (n_packets + 2) // 3
    ev, _ = read_recording(nmnist)
    from spikeflow.service.events import window_bounds
    b = window_bounds(ev, 1000)
    want = np.concatenate([ev[b[k, 1]:b[k + 1, 1]] for k in range(len(b) - 1) if k % 3])
    np.testing.assert_array_equal(read_recording(out)[0], want)


def test_a_slow_node_sends_each_output_at_once_instead_of_batching(nmnist, tmp_path):
    """Behind a node that takes ~1 ms per packet (HEAVY_DELIVERY_NS is 0.1 ms), the lossless
    edge flushes after every delivery: no batch, so the consumer gets each packet while the
    next one is being computed. The same graph with a fast node batches (see
    test_cross_worker_lossless_edges_deliver_everything)."""
    from spikeflow.nodes.base import Node

    class Slow(Node):
        type_name = "test_runtime_slow"

        def process(self, port, packet):
            t_end = time.perf_counter() + 0.001   # stands for a heavy computation
            while time.perf_counter() < t_end:
                pass
            return {"events_out": [packet]}

    _register(Slow)
    out = tmp_path / "out.sfe"
    spec = load_graph(_replay_through(nmnist, "slow", Slow.type_name, out, 5000, rec_worker="io"))
    workers, threads, codes = _run_workers(spec, tmp_path)
    for t in threads.values():
        t.join(60)
    assert codes == {"main": 0, "io": 0}
    np.testing.assert_array_equal(read_recording(out)[0], read_recording(nmnist)[0])
    sent = workers["main"].snapshot_metrics()["edges"]["rec.events_in"]
    assert sent["sent"] > 10 and sent["batches"] == 0 and sent["dropped"] == 0


def test_a_batch_is_sent_when_due():
    """``flush_due``: a batch goes when forced, or once its first packet has waited
    BATCH_MAX_AGE_NS; before that it waits for the node thread's next wait."""
    import zmq as _zmq

    from spikeflow.service.edges import BATCH_MAX_AGE_NS, EdgeReceiver, EdgeSender
    from spikeflow.service.events import SensorSize, make_events
    from spikeflow.service.packet import Packet

    ctx = _zmq.Context()
    ev = make_events([1, 2], [3, 4], [5, 6], [1, 0])
    pk = [Packet("events", "a.events_out", k, SensorSize(8, 8, 2), k, k + 1, 0, ev) for k in range(3)]
    try:
        with EdgeSender("inproc://due", batch=8, queue=16, context=ctx) as tx, \
                EdgeReceiver("inproc://due", context=ctx) as rx:
            tx.send(pk[0], 5000)
            tx.send(pk[1], 5000)
            t0 = time.perf_counter_ns()
            tx.flush_due(t0)
            assert tx.stats()["unsent"] == 2            # young: it waits
            tx.flush_due(t0 + 2 * BATCH_MAX_AGE_NS)
            assert tx.stats()["unsent"] == 0 and tx.stats()["batches"] == 1
            tx.send(pk[2], 5000)
            tx.flush_due(time.perf_counter_ns(), force=True)
            assert tx.stats()["unsent"] == 0
            assert [rx.recv(5000).seq for _ in range(3)] == [0, 1, 2]
    finally:
        ctx.destroy(linger=0)
