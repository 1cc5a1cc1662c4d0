"""The daemon as real processes on loopback: drain on SIGTERM, supervisor restarts, control
socket, the status/stop/top commands. Every wait polls the control socket with a timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

import naive_filters as naive
from spikeflow.drivers.recording import read_recording
from spikeflow.service.control import ControlClient, find_daemon, pid_alive, read_snapshot
from spikeflow.service.errors import SpikeflowError


class DaemonProc:
    """A ``spikeflow serve`` subprocess with its run dir, control client and log."""

    def __init__(self, graph_text: str, tmp: Path, name: str, extra_args=(), ready_s: float = 90.0):
        self.run_dir = tmp / "run"
        self.graph = tmp / f"{name}.toml"
        graph_text = graph_text.replace('name = "d"', f'name = "{name}"', 1)
        self.graph.write_text(graph_text)
        self.name = name
        self.info_file = self.run_dir / f"{name}.json"
        self.pid_file = self.run_dir / f"{name}.pid"
        self.log = self.run_dir / f"{name}.log"
        self.out = tmp / f"{name}.out"
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "spikeflow", "serve", str(self.graph),
                                          "--run-dir", str(self.run_dir), *extra_args],
                                         stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + ready_s
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} at start:\n{self.output()}")
            try:
                self.info = json.loads(self.info_file.read_text())
                if self.info.get("pid") == self.proc.pid:
                    break
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"daemon not ready in {ready_s}s:\n{self.output()}")
            time.sleep(0.05)
        self.client = ControlClient(self.info["control"], timeout_s=15.0)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_metrics(self, pred, timeout_s: float = 60.0, what: str = "condition"):
        return self.client.wait_for(pred, timeout_s=timeout_s, what=what)

    def wait_status(self, pred, timeout_s: float = 60.0, what: str = "status condition"):
        deadline = time.monotonic() + timeout_s
        st = None
        while time.monotonic() < deadline:
            st = self.client.status()
            if pred(st):
                return st
            time.sleep(0.05)
        raise AssertionError(f"{what} not reached in {timeout_s}s; status {st}")

    def terminate(self, sig=signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"daemon did not exit within {timeout_s}s after {sig!r}:\n{self.output()}")

    def worker_pids(self) -> list[int]:
        try:
            return [w["pid"] for w in self.client.status()["workers"].values() if w["pid"]]
        except SpikeflowError:
            return []

    def kill(self) -> None:
        """Last-resort cleanup: the daemon and any worker it left (workers have their own session)."""
        for pid in [self.proc.pid, *self.worker_pids()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)

    def close(self) -> None:
        if self.proc.poll() is None:
            pids = self.worker_pids()
            try:
                self.terminate(timeout_s=30)
            except AssertionError:
                pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def daemons():
    started: list[DaemonProc] = []

    def start(*a, **kw) -> DaemonProc:
        d = DaemonProc(*a, **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        d.close()


@pytest.fixture
def nmnist(shared):
    return shared("recordings/tonic-testdata/sample_nmnist.bin")


def n(metrics: dict, name: str, counter: str) -> int:
    return metrics["nodes"][name][counter]


def pipeline(src: Path, *, speed: float, loop: bool, sink: str, sink_worker: str = "main",
             filter_worker: str = "main", extra_graph: str = "", name: str = "d") -> str:
    return f"""
[graph]
name = "{name}"
heartbeat_s = 0.2
liveness_s = 3.0
drain_timeout_s = 5.0
{extra_graph}
[nodes.src]
type = "replay"
params = {{ path = "{src}", speed = {speed}, window_us = 1000, loop = {str(loop).lower()} }}
[nodes.denoise]
type = "noise_filter"
inputs = {{ events_in = "src.events_out" }}
params = {{ window_us = 2000 }}
worker = "{filter_worker}"
{sink}
worker = "{sink_worker}"
"""


def record_sink(path: Path) -> str:
    return f"""[nodes.rec]
type = "record"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ path = "{path}" }}"""


PRINT_SINK = """[nodes.show]
type = "print"
inputs = { events_in = "denoise.events_out" }
params = { every = 1000000 }"""


def test_sigterm_during_recording_leaves_a_complete_file(daemons, tmp_path, nmnist):
    """SIGTERM mid-recording: sources stop, in-flight packets drain, the file is closed, exit 0.
    The file is readable and is exactly a prefix of the filtered stream."""
    out = tmp_path / "rec.sfe"
    d = daemons(pipeline(nmnist, speed=0.25, loop=False, sink=record_sink(out), sink_worker="io",
                         extra_graph="checkpoint_s = 0.3"), tmp_path, "rec")
    d.wait_metrics(lambda m: n(m, "rec", "packets_in") >= 50, what="recording under way")
    # periodic checkpoints (checkpoint_s) land atomically in the run dir and become the restart point
    st = d.wait_status(lambda s: s["last_snapshot"] == str(d.run_dir / "rec-checkpoint.npz"), what="checkpoint")
    assert read_snapshot(st["last_snapshot"])["denoise/last_t_us"].shape == (34, 34)
    assert d.terminate(signal.SIGTERM) == 0
    got, info = read_recording(out)
    ev, src_info = read_recording(nmnist)
    want = ev[naive.background_activity(ev, src_info.sensor_size, 2000)]
    assert 0 < len(got) < len(want)
    np.testing.assert_array_equal(got, want[:len(got)])
    assert info.sensor_size == src_info.sensor_size
    assert not d.pid_file.exists() and not d.info_file.exists()
    log = d.log.read_text()
    assert "draining workers" in log and "exits (clean)" in log


def test_snapshots_before_the_workers_are_ready_keep_the_start_snapshot(daemons, tmp_path, nmnist):
    """A snapshot asked before the workers have said hello keeps their state from the snapshot
    the daemon started from (it used to save an empty file, which a restart would then load),
    and periodic checkpoints begin only once the graph has started."""
    start = tmp_path / "start.npz"
    marker = np.arange(34 * 34, dtype=np.int64).reshape(34, 34)
    np.savez(start, **{"denoise/last_t_us": marker})
    d = daemons(pipeline(nmnist, speed=0.1, loop=True, sink=PRINT_SINK, filter_worker="io",
                         extra_graph="checkpoint_s = 0.05"), tmp_path, "early", extra_args=["--snapshot", str(start)])
    snap = d.client.snapshot(tmp_path / "early.npz")  # the workers are still importing
    assert snap["keys"] == snap["carried"] == ["denoise/last_t_us"]
    np.testing.assert_array_equal(read_snapshot(snap["path"])["denoise/last_t_us"], marker)
    ld = d.client.load(start)  # workers launched before the load keep their launch state, and it says so
    assert ld["loaded"] == [] and ld["not_loaded"] == ["io", "main"]
    ck = d.run_dir / "early-checkpoint.npz"
    d.wait_status(lambda s: s["last_snapshot"] == str(ck), what="first checkpoint")
    first = next(line for line in d.log.read_text().splitlines() if f"saved to {ck}" in line)
    assert "snapshot of 1 arrays" in first and "carried" not in first
    assert read_snapshot(ck)["denoise/last_t_us"].shape == (34, 34)
    assert f"worker io: state of ['denoise'] loaded from {start}" in d.log.read_text()
    assert d.terminate() == 0


def test_killed_or_hung_worker_is_restarted_and_the_stream_resumes(daemons, tmp_path, nmnist):
    """kill -9 of the filter worker: the supervisor restarts it (from the last snapshot), the
    source worker keeps running (same pid), packets flow again, the restart is counted. Then the
    same for a worker that hangs (stops heartbeating)."""
    d = daemons(pipeline(nmnist, speed=1.0, loop=True, sink=PRINT_SINK, sink_worker="io", filter_worker="io"),
                tmp_path, "kill")
    d.wait_metrics(lambda m: n(m, "show", "packets_in") > 20, what="stream flowing")
    snap = d.client.snapshot(tmp_path / "before.npz")
    assert snap["keys"] == ["denoise/last_t_us"]
    st = d.client.status()
    src_pid, io_pid = st["workers"]["main"]["pid"], st["workers"]["io"]["pid"]
    os.kill(io_pid, signal.SIGKILL)
    st = d.wait_status(lambda s: s["workers"]["io"]["pid"] not in (None, io_pid)
                       and s["workers"]["io"]["state"] == "running", what="io worker restarted")
    assert st["restarts"] == 1 and st["workers"]["io"]["restarts"] == 1 and st["workers"]["io"]["incarnation"] == 1
    assert st["workers"]["main"]["pid"] == src_pid and st["workers"]["main"]["restarts"] == 0
    assert st["last_snapshot"] == str(tmp_path / "before.npz")
    before = d.client.metrics()
    seen = n(before, "show", "packets_in")  # merged over incarnations
    d.wait_metrics(lambda m: n(m, "show", "packets_in") > seen + 20, what="stream resumed after restart")
    assert d.client.metrics()["restarts"] == 1
    log = d.log.read_text()
    assert "worker io died (signal 9)" in log and "restart 1 (total 1)" in log
    assert f"worker io: state of ['denoise'] loaded from {tmp_path / 'before.npz'}" in log
    # a worker that stops heartbeating (SIGSTOP: hung) is killed after liveness_s and replaced
    hung = st["workers"]["io"]["pid"]
    os.kill(hung, signal.SIGSTOP)
    # a snapshot asked of the hung worker ends when the supervisor declares it dead, and keeps
    # its state from the last snapshot (the state its successor loads) instead of losing it
    snap = d.client.snapshot(tmp_path / "during-hang.npz")
    assert snap["keys"] == snap["carried"] == ["denoise/last_t_us"]
    np.testing.assert_array_equal(read_snapshot(snap["path"])["denoise/last_t_us"],
                                  read_snapshot(tmp_path / "before.npz")["denoise/last_t_us"])
    st = d.wait_status(lambda s: s["workers"]["io"]["restarts"] == 2 and s["workers"]["io"]["state"] == "running",
                       what="hung worker replaced")
    assert st["workers"]["io"]["pid"] != hung and st["restarts"] == 2
    assert "silent for" in d.log.read_text()
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)  # the hung process was killed, not leaked
    seen = n(d.client.metrics(), "show", "packets_in")
    d.wait_metrics(lambda m: n(m, "show", "packets_in") > seen + 20, what="stream resumed after the hang")
    assert d.terminate() == 0


def test_control_socket_commands_and_cli(tmp_path, nmnist):
    """A detached daemon: status/metrics/snapshot/load/errors on the socket, a second daemon of
    the same name refused, and the status/top/stop commands."""
    g = tmp_path / "ctl.toml"
    g.write_text(pipeline(nmnist, speed=1.0, loop=True, sink=PRINT_SINK).replace('name = "d"', 'name = "ctl"'))
    run_dir = tmp_path / "run"
    env = {**os.environ, "SPIKEFLOW_RUN_DIR": str(run_dir)}
    run = lambda *a: subprocess.run([sys.executable, "-m", "spikeflow", *a], capture_output=True, text=True,
                                    env=env, timeout=120)
    r = run("serve", str(g), "--detach")
    assert r.returncode == 0, r.stderr
    info = find_daemon(run_dir, "ctl")
    assert f"pid {info['pid']}" in r.stdout and info["control"].startswith("tcp://127.0.0.1:")
    client = ControlClient(info["control"])
    try:
        _control_checks(client, info, run, tmp_path, g, run_dir)
    finally:
        if pid_alive(info["pid"]):
            os.kill(info["pid"], signal.SIGKILL)


def _control_checks(client, info, run, tmp_path, g, run_dir):
    m = client.wait_for(lambda m: n(m, "show", "packets_in") > 10 and m, what="stream flowing")
    row = m["nodes"]["denoise"]
    assert row["type"] == "noise_filter" and row["worker"] == "main" and row["events_in"] >= row["events_out"] > 0
    assert 0 < row["latency"]["p50_us"] <= row["latency"]["p99_us"] <= row["latency"]["max_us"]
    assert m["e2e"]["count"] > 0
    assert find_daemon(run_dir)["pid"] == info["pid"]
    r = run("serve", str(g))  # a second daemon of the same name is refused
    assert r.returncode == 2 and f"already runs (pid {info['pid']}" in r.stderr
    # snapshot: atomic npz of learned state
    snap = client.snapshot(tmp_path / "s.npz")
    arrays = read_snapshot(snap["path"])
    assert list(arrays) == ["denoise/last_t_us"] and arrays["denoise/last_t_us"].shape == (34, 34)
    assert arrays["denoise/last_t_us"].max() > 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    ld = client.load(snap["path"])
    assert ld["loaded"] == ["denoise"] and ld["not_loaded"] == []
    assert client.status()["last_snapshot"] == snap["path"]
    with pytest.raises(SpikeflowError, match="nothere.npz"):
        client.load(tmp_path / "nothere.npz")
    with pytest.raises(SpikeflowError, match="unknown command 'explode'"):
        client.request("explode")
    # garbage on the control socket gets an error reply; the daemon keeps serving
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(info["control"])
    s.send(b"\xff\x00not json")
    assert s.poll(10_000)
    assert json.loads(s.recv())["ok"] is False
    s.close(0)
    assert client.status()["state"] == "running"
    # the CLI commands
    r = run("status")
    assert r.returncode == 0, r.stderr
    assert f"daemon ctl (pid {info['pid']}) running" in r.stdout and "main" in r.stdout
    r = run("status", "--json")
    assert json.loads(r.stdout)["workers"]["main"]["state"] == "running"
    r = run("top", "--once", "--interval", "0.5")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("spikeflow top: ctl") and lines[1].split()[:2] == ["node", "type"]
    denoise = next(line for line in lines if line.startswith("denoise"))
    assert float(denoise.split()[5].rstrip("kM")) > 0  # a live event rate
    r = run("stop")
    assert r.returncode == 0, r.stderr
    assert "stopped" in r.stdout and not pid_alive(info["pid"])
    assert not (run_dir / "ctl.pid").exists() and not (run_dir / "ctl.json").exists()
    r = run("status")
    assert r.returncode == 2 and "no running daemon" in r.stderr


# -- ZeroMQ inputs and outputs ------------------------------------------------------------------

def free_port() -> int:
    from spikeflow.service.runtime import free_tcp_port

    return free_tcp_port()


def test_end_to_end_publish_and_record_are_bit_exact(daemons, tmp_path, shared):
    """Daemon subprocess: a real AEDAT4 recording -> noise_filter -> publish (own worker) and
    record. In lossless mode the subscriber and the file both get every filtered event, bit-exact."""
    src = shared("recordings/tonic-testdata/sample.aedat4")
    out = tmp_path / "e2e.sfe"
    ep = f"tcp://127.0.0.1:{free_port()}"
    sink = f"""{record_sink(out)}
[nodes.pub]
type = "publish"
inputs = {{ events_in = {{ from = "denoise.events_out", policy = "lossless", queue = 8 }} }}
params = {{ endpoint = "{ep}", policy = "lossless", min_subscribers = 1, sndhwm = 16 }}"""
    from spikeflow.service.client import Subscriber

    sub = Subscriber(ep, rcvhwm=16)  # connects first; publish waits for its subscription
    try:
        d = daemons(pipeline(src, speed=0, loop=False, sink=sink, sink_worker="io"), tmp_path, "e2e")
        got = []
        deadline = time.monotonic() + 120
        while not sub.ended:
            assert time.monotonic() < deadline, "no end-of-stream from publish"
            pkt = sub.recv(200)
            if pkt is not None:
                got.append(pkt)
        assert sub.missing == 0 and sub.rejects.total == 0
    finally:
        sub.close()
    d.wait_status(lambda s: all(w["state"] == "done" for w in s["workers"].values()), what="streams done")
    ev, info = read_recording(src)
    want = ev[naive.background_activity(ev, info.sensor_size, 2000)]
    received = np.concatenate([p.events for p in got])
    np.testing.assert_array_equal(received, want)
    assert [p.seq for p in got] == list(range(len(got)))
    assert all(p.sensor_size == (320, 240, 2) for p in got)
    recorded, rinfo = read_recording(out)
    np.testing.assert_array_equal(recorded, want)
    m = d.client.metrics()
    assert n(m, "pub", "events_in") == n(m, "rec", "events_in") == len(want)
    assert m["nodes"]["pub"]["drops"] == 0 and m["e2e"]["count"] > 0
    assert d.client.status()["state"] == "running"  # the daemon outlives its finished streams
    assert d.terminate() == 0


def _stall_graph(src: Path, ep: str, policy: str) -> str:
    sink = f"""[nodes.pub]
type = "publish"
inputs = {{ events_in = {{ from = "denoise.events_out", policy = "lossless", queue = 4 }} }}
params = {{ endpoint = "{ep}", policy = "{policy}", sndhwm = 4, heartbeat_ms = 0 }}"""
    return pipeline(src, speed=0, loop=True, sink=sink, sink_worker="io").replace(
        "window_us = 1000, loop", "window_us = 50000, loop")


def _subscribed(d: DaemonProc, subscriber_cls):
    """A subscriber (receive queue of 4, never read unless the test does) on the port publish
    bound, ``tcp://127.0.0.1:*``. It connects once that port is bound, to a port no other
    process chose in advance: a port picked by the test and connected to before the daemon
    bound it could be taken meanwhile (a stall test under triple load once saw no subscriber
    for 60 s)."""
    def bound(m):
        ep = m["nodes"].get("pub", {}).get("stats", {}).get("endpoint", "")
        return ep if ep.startswith("tcp://") and not ep.endswith("*") else None

    return subscriber_cls(d.wait_metrics(bound, what="publish bound"), rcvhwm=4)


def test_stalled_subscriber_realtime_drops_with_bounded_memory(daemons, tmp_path, shared):
    """A subscriber that never reads: in realtime mode publish drops (counted), upstream keeps
    flowing, and the publishing worker's memory stays bounded."""
    import psutil

    from spikeflow.service.client import Subscriber

    src = shared("recordings/tonic-testdata/sample.aedat4")  # 50 ms windows: ~130 KB packets
    d = daemons(_stall_graph(src, "tcp://127.0.0.1:*", "realtime"), tmp_path, "stallrt")
    stalled = _subscribed(d, Subscriber)
    try:
        m = d.wait_metrics(lambda m: m["nodes"]["pub"]["drops"] > 100 and m, what="drops counted")
        io = psutil.Process(d.client.status()["workers"]["io"]["pid"])
        rss0 = io.memory_info().rss
        sent0 = n(m, "src", "packets_out")
        m = d.wait_metrics(lambda m: n(m, "src", "packets_out") > sent0 + 300 and m, what="upstream keeps flowing")
        rss1 = io.memory_info().rss
        pub = m["nodes"]["pub"]
        assert pub["stats"]["dropped_slow"] == pub["drops"] > 100
        # (metrics are read while publish runs: one packet may be counted in but not yet handled)
        assert pub["packets_in"] - 1 <= pub["stats"]["sent"] + pub["drops"] <= pub["packets_in"]
        assert rss1 - rss0 < 30 * 2**20, f"publishing worker grew by {(rss1 - rss0) / 2**20:.1f} MiB"
        assert stalled.received == 0
    finally:
        stalled.close()
    assert d.terminate() == 0


def test_stalled_subscriber_lossless_makes_upstream_wait(daemons, tmp_path, shared):
    """Same stall in lossless mode: nothing is dropped, the source waits; once the subscriber
    reads, the stream flows again without gaps."""
    from spikeflow.service.client import Subscriber

    src = shared("recordings/tonic-testdata/sample.aedat4")
    d = daemons(_stall_graph(src, "tcp://127.0.0.1:*", "lossless"), tmp_path, "stallll")
    sub = _subscribed(d, Subscriber)
    try:
        last = {"packets": -1}

        def stalled_upstream(m):
            # a stall is the absence of progress: the same count twice, 0.5 s apart, while waiting
            v = n(m, "src", "packets_out")
            same, last["packets"] = v == last["packets"], v
            return v > 0 and same and m["edges"].get("pub.events_in", {}).get("send", {}).get("waiting")

        d.client.wait_for(stalled_upstream, timeout_s=60, interval_s=0.5, what="upstream waiting")
        m = d.client.metrics()
        a = n(m, "src", "packets_out")
        assert m["nodes"]["pub"]["drops"] == 0 and m["nodes"]["pub"]["stats"]["wait_ns"] > 0
        got = 0
        deadline = time.monotonic() + 60
        while got < a + 20:
            assert time.monotonic() < deadline
            if sub.recv(200) is not None:
                got += 1
        assert sub.missing == 0
        d.wait_metrics(lambda m: n(m, "src", "packets_out") > a + 10, what="upstream flowing again")
    finally:
        sub.close()
    assert d.terminate() == 0


def test_zmq_input_rejects_garbage_and_keeps_running(daemons, tmp_path, nmnist):
    """Malformed frames and garbage bytes pushed into zmq_input are rejected and counted; valid
    packets around them arrive intact; the daemon and its worker keep running."""
    import msgpack

    from spikeflow.service.client import Pusher
    from spikeflow.service.packet import events_packet
    from spikeflow.service.protocol import encode

    ep = f"tcp://127.0.0.1:{free_port()}"
    out = tmp_path / "in.sfe"
    graph = f"""
[graph]
name = "zin"
drain_timeout_s = 5.0
[nodes.inp]
type = "zmq_input"
params = {{ endpoint = "{ep}", sensor_size = [34, 34, 2] }}
[nodes.rec]
type = "record"
inputs = {{ events_in = "inp.events_out" }}
params = {{ path = "{out}" }}
"""
    d = daemons(graph, tmp_path, "zin")
    # pushed frames wait in the pusher only until it closes: push once zmq_input is bound (worker up)
    d.wait_status(lambda s: s["workers"]["main"]["state"] == "running", what="worker running")
    ev, _ = read_recording(nmnist)
    good = [ev[i:i + 500] for i in range(0, len(ev), 500)]
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUSH)
    raw.setsockopt(zmq.LINGER, 2000)
    raw.connect(ep)
    frames = [bytes(f) for f in encode(events_packet(good[0], "x", 0, (34, 34, 2), 0, 10**9))]
    header = msgpack.unpackb(frames[1])
    bad = [
        [b"\x00\xff garbage"],                                               # one frame of junk
        [b"topic", b"\xc1\xc1\xc1", frames[2]],                                # header not msgpack
        [frames[0], msgpack.packb({**header, "v": 99}), frames[2]],            # version mismatch
        [frames[0], frames[1], frames[2][:-7]],                                # truncated payload
        [frames[0], msgpack.packb({**header, "dtype": "zz9"}), frames[2]],     # unknown dtype
        [frames[0], frames[1], frames[2], b"extra"],                           # extra frame
        [frames[0], b"\x81" + b"\xa1k" + b"\xdb" + (1 << 20).to_bytes(4, "big")],  # oversized str claim
    ]
    oob = good[1].copy()
    oob["x"][3] = 200                                                          # outside the sensor
    with Pusher(ep, stream="cam") as push:
        push.push(good[0], sensor_size=(34, 34, 2))
        for msg in bad:
            raw.send_multipart(msg)
        push.push(oob, sensor_size=(34, 34, 2))
        push.push(good[1], sensor_size=(128, 128, 2))                          # wrong sensor size
        for g in good[1:]:
            push.push(g, sensor_size=(34, 34, 2))
        # both sockets stay open until the daemon has everything: a socket closed earlier keeps
        # undelivered messages only for its linger (2 s), which a starved loopback connect on a
        # loaded machine can outlast (the test then waited for packets that had been dropped)
        m = d.wait_metrics(lambda m: n(m, "rec", "events_in") == len(ev)
                           and m["nodes"]["inp"]["stats"]["rejected_total"] >= len(bad) + 2 and m,
                           what="valid packets recorded and the bad ones counted")
    raw.close()
    st = m["nodes"]["inp"]["stats"]
    assert st["rejected_total"] == len(bad) + 2
    assert st["rejected"].get("out_of_bounds") == 1 and st["rejected"].get("sensor_size") == 1
    assert st["rejected"].get("version") == 1
    assert st["received"] == len(good)
    status = d.client.status()
    assert status["restarts"] == 0 and status["workers"]["main"]["state"] == "running"
    assert d.terminate() == 0
    np.testing.assert_array_equal(read_recording(out)[0], ev)
