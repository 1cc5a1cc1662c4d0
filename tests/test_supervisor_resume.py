"""Supervisor restarts that resume: a restarted source continues its stream where it was (with
its original sequence numbers; what it sends again is dropped downstream, so subscribers and
files get every packet exactly once), a ``record`` in a killed worker continues its file, a
consumer restarted after its upstream finished still completes, and each restart is timed in
``status``. Real daemon subprocesses, real sockets on loopback; every wait polls the control
socket (or a subscriber) with a timeout."""

from __future__ import annotations

import json
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
from waiting import wait_until

import naive_filters as naive

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


def _replay_graph(nmnist, speed: float) -> str:
    """The start of the restart tests' graphs: fast heartbeats and liveness, and ``src``
    replaying the N-MNIST sample at ``speed`` (slow enough to kill a worker mid-stream)."""
    return f"""
[graph]
name = "d"
heartbeat_s = 0.2
liveness_s = 5.0
drain_timeout_s = 5.0
[nodes.src]
type = "replay"
params = {{ path = "{nmnist}", speed = {speed}, window_us = 1000 }}
"""


def _replay_publish_graph(nmnist, ep: str, publish_worker: str | None = None) -> str:
    """replay (at a tenth of real time) -> lossless publish on ``ep``, fast heartbeats; the
    publish in its own worker when ``publish_worker`` names one."""
    worker = f'worker = "{publish_worker}"\n' if publish_worker else ""
    return _replay_graph(nmnist, 0.1) + f"""[nodes.pub]
type = "publish"
inputs = {{ events_in = "src.events_out" }}
params = {{ endpoint = "{ep}", policy = "lossless", min_subscribers = 1 }}
{worker}"""


def _collector(sub, got: list):
    """``receive_until(pred, timeout_s, what)``: append what ``sub`` receives to ``got`` until
    ``pred()`` holds, failing after ``timeout_s``."""
    def receive_until(pred, timeout_s, what):
        deadline = time.monotonic() + timeout_s
        while not pred():
            assert time.monotonic() < deadline, f"{what} not reached in {timeout_s}s ({len(got)} packets)"
            pkt = sub.recv(100)
            if pkt is not None:
                got.append(pkt)
    return receive_until


def _assert_exactly_once(got, sub, nmnist, log: str, before: int) -> int:
    """The subscriber got every seq once, in order, no gap, and the recording bit-exact; the
    source resumed at a position it had reached before the kill. Returns that position."""
    ev, _ = read_recording(nmnist)
    assert [p.seq for p in got] == list(range(len(got)))  # exactly once: no repeat, no gap
    np.testing.assert_array_equal(np.concatenate([p.events for p in got]), ev)
    assert sub.missing == 0
    resumed_at = int(re.search(r"worker main: sources resume at src packet (\d+)", log).group(1))
    assert 0 < resumed_at <= before
    return resumed_at


def test_killed_source_worker_resumes_its_stream(daemons, tmp_path, nmnist):  # noqa: F811
    """kill -9 of the worker that replays a file: the restarted worker continues the stream
    where it was instead of replaying the file from its start, sending again (with their
    original seq) the packets since its settled position. The receiving end of the edge, in the
    living worker, drops those repeats and counts them: the subscriber, which does no dedupe of
    its own, gets the whole recording bit-exact, every seq once, in order, without a gap. The
    successor is the daemon's warm spare; the restart is counted and timed."""
    from spikeflow.service.client import Subscriber

    ep = f"tcp://127.0.0.1:{free_port()}"
    graph = _replay_publish_graph(nmnist, ep, publish_worker="io")
    sub = Subscriber(ep, rcvhwm=10_000)
    got = []
    receive_until = _collector(sub, got)

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
        m = d.client.metrics()
    finally:
        sub.close()
    assert st["restarts"] == 1 and st["workers"]["main"]["restarts"] == 1
    assert st["workers"]["io"]["restarts"] == 0
    assert st["workers"]["main"]["pid"] == spare["pid"]  # the successor is the warm spare
    timing = st["workers"]["main"]["last_restart"]
    assert timing["why"] == "signal 9" and 0 < timing["ready_s"] <= timing["flowing_s"]
    log = d.log.read_text()
    resumed_at = _assert_exactly_once(got, sub, nmnist, log, before)
    assert f"source src resumes at packet {resumed_at}" in log
    # the successor did send repeats: the receiving end of the edge dropped them, counted
    edge = m["edges"]["pub.events_in"]["recv"]
    dropped = edge["duplicates_dropped"]
    assert dropped > 0 and m["nodes"]["pub"]["duplicates"] == dropped
    assert st["workers"]["io"]["duplicates_dropped"] == dropped
    assert edge["seq_resets"] == 0 and edge["missing"] == 0
    assert m["nodes"]["pub"]["stats"]["duplicates_dropped"] == 0  # (none got as far as publish)
    assert "worker main flows again" in log and "worker main: incarnation 1 runs in the warm spare" in log
    assert d.terminate() == 0


def test_publish_in_the_killed_source_worker_publishes_each_packet_once(daemons, tmp_path, nmnist):  # noqa: F811
    """replay -> publish in ONE worker (the default), killed with SIGKILL mid-stream. The publish
    dies with the source; its successor reads the last seq its predecessor handed to ZeroMQ from
    the memory-mapped ``<run_dir>/<name>.state/pub.seqs`` and drops the resumed source's repeats:
    the subscriber, which does no dedupe of its own, gets the recording bit-exact, every seq
    once, in order. (Without that file the repeats were published again.)"""
    from spikeflow.service.client import Subscriber
    from spikeflow.service.sent_seqs import read_seqs

    ep = f"tcp://127.0.0.1:{free_port()}"
    graph = _replay_publish_graph(nmnist, ep)
    sub = Subscriber(ep, rcvhwm=10_000)
    got = []
    receive_until = _collector(sub, got)

    try:
        d = daemons(graph, tmp_path, "pubonce")
        seqs_file = d.run_dir / "pubonce.state" / "pub.seqs"
        receive_until(lambda: len(got) >= 60, 60, "60 packets")
        # what the subscriber has is in the file (marked right after the hand-over to ZeroMQ,
        # whose I/O thread may deliver it first)
        wait_until(lambda: read_seqs(seqs_file, ["src.events_out"]).get("src.events_out", -1) >= got[-1].seq,
                   10, "the subscriber's last seq in the seq file")
        st = d.client.status()
        assert list(st["workers"]) == ["main"]
        os.kill(st["workers"]["main"]["pid"], signal.SIGKILL)
        before = len(got)
        receive_until(lambda: sub.ended, 90, "end of stream after the restart")
        st = d.wait_status(lambda s: s["workers"]["main"]["state"] == "done", timeout_s=60, what="stream done")
        m = d.client.metrics()
    finally:
        sub.close()
    assert st["restarts"] == 1 and st["workers"]["main"]["incarnation"] == 1
    log = d.log.read_text()
    resumed_at = _assert_exactly_once(got, sub, nmnist, log, before)
    # the successor continued after what its predecessor had handed to ZeroMQ, and the resumed
    # source's packets up to there were dropped by the publish (they never reached a socket)
    pub = m["nodes"]["pub"]["stats"]
    restored = pub["restored_seqs"]["src.events_out"]
    assert before - 1 <= restored < len(got)
    assert pub["duplicates_dropped"] == restored - resumed_at + 1 > 0
    assert f"publish pub continues after src.events_out seq {restored}" in log
    assert not seqs_file.exists()  # removed by the clean close at the end of the stream
    assert d.terminate() == 0
    assert not seqs_file.parent.exists()  # the daemon's state directory goes with it


STREAMS = ("src.events_out", "sim.events_out")   # a graph's replayable streams, for the seq-file tests


def _publish(seqs_dir, restarted: bool):
    """A ``publish`` on a free loopback port, using ``seqs_dir`` as the daemon's state dir would."""
    from spikeflow.service.zmq_nodes import Publish

    node = Publish("pub", build_params(Publish, {"endpoint": "tcp://127.0.0.1:*", "heartbeat_ms": 0,
                                                 "linger_ms": 0}, key="nodes.pub.params"))
    node.setup({})
    node.set_replayable_streams(STREAMS)
    node.use_state_dir(seqs_dir, restarted)
    return node


def _killed(node) -> None:
    """Leave ``node``'s seq file as a kill -9 would (mapped stores in it, not removed), then
    release its socket."""
    node._sent_seqs.close(remove=False)
    node._sent_seqs = None
    node.close()


def _events_packet(seq: int):
    from spikeflow.service.events import EVENT_DTYPE, SensorSize
    from spikeflow.service.packet import Packet

    return Packet("events", "src.events_out", seq, SensorSize(4, 4, 2), seq, seq + 1, 1, np.zeros(0, EVENT_DTYPE))


@pytest.mark.parametrize("left", ["missing", "garbage", "truncated", "other graph"])
def test_publish_starts_empty_from_an_unusable_seq_file(tmp_path, caplog, left):
    """A restarted ``publish`` whose seq file is missing or cannot be trusted logs a warning and
    starts empty (it publishes what it gets) instead of failing; it then keeps a new, whole
    file. A fresh ``publish`` replaces whatever file it finds; a clean close removes it."""
    from spikeflow.service.sent_seqs import SentSeqs, read_seqs

    path = tmp_path / "pub.seqs"
    if left == "garbage":
        path.write_bytes(b"not a seq file at all")
    elif left == "truncated":
        SentSeqs(path, STREAMS, {"src.events_out": 7}).close(remove=False)
        path.write_bytes(path.read_bytes()[:-3])
    elif left == "other graph":
        SentSeqs(path, ["elsewhere.events_out"], {"elsewhere.events_out": 7}).close(remove=False)
    with caplog.at_level("WARNING", logger="spikeflow.publish"):
        node = _publish(tmp_path, restarted=True)
    assert "repeats of a resumed source may be published again" in caplog.text
    assert node.restored_seqs == {}
    assert read_seqs(path, STREAMS) == {}
    node.process("events_in", _events_packet(0))
    assert node.stats()["sent"] == 1 and read_seqs(path, STREAMS) == {"src.events_out": 0}
    node.close()
    assert not path.exists()


def test_publish_seq_file_seeds_a_restarted_publish_and_not_a_fresh_one(tmp_path):
    """What one ``publish`` handed to ZeroMQ (its file, left by a kill: no close) is dropped by a
    restarted successor, which goes on from there; a fresh one starts a new file."""
    from spikeflow.service.sent_seqs import read_seqs

    first = _publish(tmp_path, restarted=False)
    for seq in range(5):
        first.process("events_in", _events_packet(seq))
    _killed(first)
    assert read_seqs(tmp_path / "pub.seqs", STREAMS) == {"src.events_out": 4}
    second = _publish(tmp_path, restarted=True)
    assert second.restored_seqs == {"src.events_out": 4}
    for seq in range(3, 7):   # a resumed source sends 3 and 4 again
        second.process("events_in", _events_packet(seq))
    st = second.stats()
    assert st["sent"] == 2 and st["duplicates_dropped"] == 2
    assert read_seqs(tmp_path / "pub.seqs", STREAMS) == {"src.events_out": 6}
    _killed(second)
    fresh = _publish(tmp_path, restarted=False)
    assert fresh.restored_seqs is None and read_seqs(tmp_path / "pub.seqs", STREAMS) == {}
    fresh.process("events_in", _events_packet(0))
    assert fresh.stats()["sent"] == 1
    fresh.close()
    assert not (tmp_path / "pub.seqs").exists()


def _journal_seq(path) -> int:
    """The last seq of ``src.events_out`` that a record's journal says its file holds (-1: none)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return -1
    seqs = [-1]
    for line in lines:
        try:
            seqs.append(json.loads(line)["seqs"].get("src.events_out", -1))
        except (ValueError, KeyError):
            pass  # a line being written
    return max(seqs)


def test_record_in_a_killed_worker_continues_its_file(daemons, tmp_path, nmnist):  # noqa: F811
    """replay -> noise_filter -> record in one worker, killed with SIGKILL twice mid-stream. Each
    successor resumes the source no later than what the file holds (the record's commits cap
    the settled position), cuts the file back to its last commit, drops the repeats it already
    holds and appends the rest: the finished file is the whole filtered recording, bit-exact,
    each event once, and readable. A second record in another worker, which lives through the
    kills, gets the same file: its edge dropped the repeats."""
    out, out2 = tmp_path / "rec.sfe", tmp_path / "rec2.sfe"
    journal = tmp_path / "rec.sfe.journal"
    graph = _replay_graph(nmnist, 0.05) + f"""[nodes.denoise]
type = "noise_filter"
inputs = {{ events_in = "src.events_out" }}
params = {{ window_us = 2000 }}
[nodes.rec]
type = "record"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ path = "{out}", commit_ms = 100 }}
[nodes.rec2]
type = "record"
inputs = {{ events_in = "denoise.events_out" }}
params = {{ path = "{out2}" }}
worker = "io"
"""
    d = daemons(graph, tmp_path, "reckill")
    for k, at in enumerate((60, 180)):
        wait_until(lambda: _journal_seq(journal) >= at, 90, f"record committed packet {at}")
        pid = d.client.status()["workers"]["main"]["pid"]
        os.kill(pid, signal.SIGKILL)
        d.wait_status(lambda s: s["workers"]["main"]["incarnation"] == k + 1 and s["workers"]["main"]["pid"] != pid,
                      what=f"restart {k + 1}")
    st = d.wait_status(lambda s: all(w["state"] == "done" for w in s["workers"].values()), timeout_s=90,
                       what="streams done")
    assert st["workers"]["main"]["restarts"] == 2 and st["workers"]["io"]["restarts"] == 0
    got, info = read_recording(out)
    ev, src_info = read_recording(nmnist)
    want = ev[naive.background_activity(ev, src_info.sensor_size, 2000)]
    assert info.sensor_size == src_info.sensor_size
    np.testing.assert_array_equal(got, want)  # every event once: nothing lost, nothing twice
    np.testing.assert_array_equal(read_recording(out2)[0], want)
    assert not journal.exists()  # closed complete
    m = d.client.metrics()
    assert m["edges"]["rec2.events_in"]["recv"]["duplicates_dropped"] > 0 and m["nodes"]["rec2"]["duplicates"] > 0
    # the last successor continued after its predecessor's last commit and dropped what the file held
    rec = m["nodes"]["rec"]["stats"]
    held = rec["continued_at"]["seqs"]["src.events_out"]
    resumed = [int(x) for x in re.findall(r"worker main: sources resume at src packet (\d+)", d.log.read_text())]
    assert len(resumed) == 2 and 0 < resumed[0] <= resumed[1] <= held + 1
    assert rec["duplicates_dropped"] == held - resumed[1] + 1
    assert d.terminate() == 0


def test_record_of_another_format_keeps_the_killed_workers_file(daemons, tmp_path, nmnist):  # noqa: F811
    """A ``record`` writing text (a format that cannot be continued) with ``overwrite = false``,
    killed with SIGKILL mid-stream: the successor comes up (its file existing is no refusal: the
    journal says it was being written), keeps the predecessor's file as ``rec.partial-1.txt``
    untouched, and records the resumed stream into a new ``rec.txt``, which ends with the
    recording's last events."""
    out, journal = tmp_path / "rec.txt", tmp_path / "rec.txt.journal"
    graph = _replay_graph(nmnist, 0.05) + f"""[nodes.rec]
type = "record"
inputs = {{ events_in = "src.events_out" }}
params = {{ path = "{out}", overwrite = false }}
"""
    d = daemons(graph, tmp_path, "rectxt")
    wait_until(lambda: out.exists() and out.stat().st_size > 0 and journal.exists(), 90, "record wrote its first bytes")
    pid = d.client.status()["workers"]["main"]["pid"]
    os.kill(pid, signal.SIGKILL)
    kept = tmp_path / "rec.partial-1.txt"
    wait_until(kept.exists, 60, "the successor moved the predecessor's file aside")
    kept_bytes = kept.read_bytes()
    st = d.wait_status(lambda s: all(w["state"] == "done" for w in s["workers"].values()), timeout_s=90,
                       what="stream done")
    assert st["workers"]["main"]["restarts"] == 1 and st["workers"]["main"]["incarnation"] == 1
    assert kept.read_bytes() == kept_bytes and len(kept_bytes) > 0   # never touched again
    got, _ = read_recording(out)
    ev, _ = read_recording(nmnist)
    assert 0 < len(got) < len(ev)
    np.testing.assert_array_equal(got, ev[len(ev) - len(got):])   # the resumed stream, to its end
    assert not journal.exists()   # closed complete
    assert d.client.metrics()["nodes"]["rec"]["stats"]["kept_partial"] == str(kept)
    assert "is kept as" in d.log.read_text()
    assert d.terminate() == 0


@pytest.mark.parametrize("name,journal,overwrite", [
    ("rec.sfe", None, True), ("rec.txt", '{"format": "TextWriter"}', False), ("rec.sfe", "not json", False)])
def test_a_restarted_record_moves_a_file_it_cannot_continue_aside(tmp_path, name, journal, overwrite):
    """``continue_after_restart`` with a file it cannot continue (another format; a ``.sfe``
    without a commit): renamed to the first free ``<stem>.partial-<k><suffix>``, contents
    untouched, journal gone; with no file there, nothing happens. (Without a journal, a file
    is not known to be this recording's own: ``overwrite = false`` refuses it at build.)"""
    from spikeflow.nodes.base import PortMeta
    from spikeflow.nodes.io import Record
    from spikeflow.service.events import SensorSize

    def restarted():
        node = Record("rec", build_params(Record, {"path": str(tmp_path / name), "overwrite": overwrite},
                                          key="nodes.rec.params"))
        node.setup({"events_in": PortMeta("events", SensorSize(8, 8, 2))})
        node.continue_after_restart()
        return node

    assert restarted().kept_partial is None   # no file: nothing to keep
    stem, suffix = name.split(".")
    for k in (1, 2):
        (tmp_path / name).write_bytes(b"written before the kill %d" % k)
        if journal is not None:
            (tmp_path / (name + ".journal")).write_text(journal + "\n")
        node = restarted()
        kept = tmp_path / f"{stem}.partial-{k}.{suffix}"
        assert node.kept_partial == str(kept) and node.stats()["kept_partial"] == str(kept)
        assert kept.read_bytes() == b"written before the kill %d" % k
        assert not (tmp_path / name).exists() and not (tmp_path / (name + ".journal")).exists()


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
