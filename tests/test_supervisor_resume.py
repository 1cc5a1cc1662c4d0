"""Supervisor restarts that resume: a restarted source continues its stream where it was (at
least once, with its original sequence numbers), a consumer restarted after its upstream
finished still completes, and each restart is timed in ``status``. Real daemon subprocesses,
real sockets on loopback; every wait polls the control socket (or a subscriber) with a timeout."""

from __future__ import annotations

import os
import re
import signal
import time

import numpy as np
import pytest
from spikeflow.drivers.recording import read_recording
from spikeflow.nodes.base import build_params
from spikeflow.nodes.io import Replay, Simulate
from spikeflow.service.errors import ParamError
from test_daemon import daemons, free_port, n  # noqa: F401 - the fixture is used by name

CLIPS = ["gesture_02_right_hand_wave_s4.sfe", "gesture_07_left_arm_counter_clockwise_s5.sfe"]


def _node(cls, **params):
    node = cls("src", build_params(cls, params, key="nodes.src.params"))
    node.setup({})
    return node


def _take(node, k: int):
    it = node.packets()
    out = [p for _, p in zip(range(k), (q for _, q in it))]
    it.close()
    return out


def _same(a, b) -> bool:
    return (a.seq, a.t0_us, a.t1_us, a.stream, a.sensor_size) == (b.seq, b.t0_us, b.t1_us, b.stream, b.sensor_size) \
        and np.array_equal(a.events, b.events) and a.data == b.data


@pytest.mark.parametrize("params,total,k", [
    ({"window_us": 1000}, 150, 100),
    ({"count": 100}, 150, 20),
    ({"window_us": 5000, "loop": True}, 150, 100),    # in the second pass of the loop
    ({"window_us": 5000, "loop": True}, 800, 700),    # eleven passes skipped by arithmetic
    ({"paths": CLIPS, "window_us": 20_000}, 150, 60),  # a playlist: same shifted clock, same ground truth
], ids=["windows", "count", "loop", "loop-far", "playlist"])
def test_replay_resumes_bit_exact_at_a_packet(nmnist, params, total, k):
    """``resume_at(k)`` yields exactly the packets ``k...`` of an uninterrupted stream."""
    params = {"path": str(nmnist), **params} if "paths" not in params else params
    full = _take(_node(Replay, speed=0, **params), total)
    assert len(full) > k
    node = _node(Replay, speed=0, **params)
    node.resume_at(k)
    got = _take(node, len(full) - k)
    assert len(got) == len(full) - k and all(_same(a, b) for a, b in zip(got, full[k:]))
    assert node.stats()["packets_out"] == len(got)


def test_simulate_resumes_bit_exact_and_positions_are_checked():
    full = _take(_node(Simulate, speed=0, duration_us=100_000, window_us=2000), 1000)
    node = _node(Simulate, speed=0, duration_us=100_000, window_us=2000)
    node.resume_at(30)
    got = _take(node, 1000)
    assert len(full) == 50 and len(got) == 20 and all(_same(a, b) for a, b in zip(got, full[30:]))
    with pytest.raises(ParamError, match="nodes.src: resume position must be a packet seq >= 0"):
        node.resume_at(-1)


@pytest.fixture
def nmnist(shared):
    return shared("recordings/tonic-testdata/sample_nmnist.bin")


def test_killed_source_worker_resumes_its_stream(daemons, tmp_path, nmnist):  # noqa: F811
    """kill -9 of the worker that replays a file: the restarted worker continues the stream
    where it was instead of replaying the file from its start. A subscriber gets every packet
    at least once, with the original seq numbers: deduplicated by seq, the stream is the whole
    recording, bit-exact, without a hole; the repeats are identical to the originals and fewer
    than what had been delivered before the kill. The successor is the daemon's warm spare; the
restart is counted and timed."""
    from spikeflow.service.client import Subscriber

    ep = f"tcp://127.0.0.1:{free_port()}"
    graph = f"""
[graph]
name = "d"
heartbeat_s = 0.2
liveness_s = 5.0
drain_timeout_s = 5.0
[nodes.src]
type = "replay"
params = {{ path = "{nmnist}", speed = 0.1, window_us = 1000 }}
[nodes.pub]
type = "publish"
inputs = {{ events_in = "src.events_out" }}
params = {{ endpoint = "{ep}", policy = "lossless", min_subscribers = 1 }}
worker = "io"
"""
    sub = Subscriber(ep, rcvhwm=10_000)
    got = []

    def receive_until(pred, timeout_s, what):
        deadline = time.monotonic() + timeout_s
        while not pred():
            assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s ({len(got)} packets)"
            pkt = sub.recv(100)
            if pkt is not None:
                got.append(pkt)

    try:
        d = daemons(graph, tmp_path, "resume")
        receive_until(lambda: len(got) >= 60, 60, "60 packets")
        st = d.client.status()
        main, spare = st["workers"]["main"], st["spare"]
        assert spare is not None and spare["pid"] not in (main["pid"], st["workers"]["io"]["pid"])
        os.kill(main["pid"], signal.SIGKILL)
        before = len(got)
        receive_until(lambda: sub.ended, 90, "end of stream after the restart")
        st = d.client.status()
    finally:
        sub.close()
    assert st["restarts"] == 1 and st["workers"]["main"]["restarts"] == 1
    assert st["workers"]["io"]["restarts"] == 0
    assert st["workers"]["main"]["pid"] == spare["pid"]  # the successor is the warm spare
    timing = st["workers"]["main"]["last_restart"]
    assert timing["why"] == "signal 9" and 0 < timing["ready_s"] <= timing["flowing_s"]
    ev, _ = read_recording(nmnist)
    first: dict[int, object] = {}
    repeats = 0
    for p in got:
        if p.seq in first:
            repeats += 1
            assert _same(p, first[p.seq])  # a repeat is the very same packet
        else:
            first[p.seq] = p
    seqs = sorted(first)
    assert seqs == list(range(len(seqs)))  # nothing lost
    np.testing.assert_array_equal(np.concatenate([first[s].events for s in seqs]), ev)
    assert repeats < before, f"{repeats} repeats after {before} packets: the successor replayed from the start"
    log = d.log.read_text()
    resumed_at = int(re.search(r"worker main: sources resume at src packet (\d+)", log).group(1))
    assert 0 < resumed_at <= before
    assert [p.seq for p in got].count(resumed_at) == 2  # the successor's first packet was a repeat
    assert f"worker main: sources resume at src packet {resumed_at}" in log
    assert f"source src resumes at packet {resumed_at}" in log
    assert "worker main flows again" in log and "worker main: incarnation 1 runs in the warm spare" in log
    assert d.terminate() == 0


def test_consumer_restarted_after_its_upstream_finished_completes(daemons, tmp_path, nmnist):  # noqa: F811
    """Worker ``io`` consumes a short replay (worker ``main``, done within a second) and a
    longer simulation (worker ``live``). kill -9 of ``io`` after ``main`` has finished: the
    restarted ``io`` gets the end-of-stream of ``main``'s edge from the daemon, which held the
    finished edge open, so every worker ends (before: ``io`` waited for that input forever)."""
    graph = f"""
[graph]
name = "d"
heartbeat_s = 0.2
liveness_s = 5.0
drain_timeout_s = 5.0
[nodes.a]
type = "replay"
params = {{ path = "{nmnist}", speed = 0, window_us = 1000 }}
[nodes.b]
type = "simulate"
params = {{ duration_us = 3000000, window_us = 10000, size = 32 }}
worker = "live"
[nodes.show_a]
type = "print"
inputs = {{ events_in = "a.events_out" }}
params = {{ every = 1000000 }}
worker = "io"
[nodes.show_b]
type = "print"
inputs = {{ events_in = "b.events_out" }}
params = {{ every = 1000000 }}
worker = "io"
"""
    d = daemons(graph, tmp_path, "ended")
    st = d.wait_status(lambda s: s["workers"]["main"]["state"] == "done", timeout_s=60, what="replay finished")
    io = st["workers"]["io"]
    assert io["state"] == "running" and st["workers"]["live"]["state"] == "running"
    m = d.client.metrics()
    assert n(m, "show_a", "packets_in") == n(m, "a", "packets_out") > 300  # all of it
    os.kill(io["pid"], signal.SIGKILL)
    st = d.wait_status(lambda s: all(w["state"] == "done" for w in s["workers"].values()), timeout_s=60,
                       what="every worker done after the restart")
    assert st["restarts"] == 1 and st["workers"]["io"]["restarts"] == 1
    assert st["ended_edges"]["show_a.events_in"] == 1  # the marker went once, to the successor
    assert st["ended_edges"].get("show_b.events_in", 0) == 0  # (live may finish first: io got its own marker)
    assert "edge show_a.events_in: end-of-stream sent on behalf of its finished upstream" in d.log.read_text()
    assert d.client.status()["state"] == "running"  # the daemon keeps serving
    assert d.terminate() == 0
