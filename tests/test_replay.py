"""Paced replay: slicing (time windows, counts), looping, pacing against the schedule, stop."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from spikeflow.drivers.recording import open_writer
from spikeflow.drivers.replay import Replay, replay
from spikeflow.service.errors import ParamError, RecordingError
from spikeflow.service.events import EVENT_DTYPE, as_events, make_events

GESTURE = "recordings/slayer-dvsgesture/4.bs2"


@pytest.fixture
def real_sfe(shared, tmp_path):
    """A real DVS128 Gesture clip (decoded by tonic, the reference) as a native .sfe file."""
    from tonic.io import read_mnist_file

    raw = read_mnist_file(str(shared(GESTURE)), dtype=np.dtype([("x", int), ("y", int), ("t", int), ("p", int)]))
    ev = as_events(raw)
    path = tmp_path / "gesture4.sfe"
    with open_writer(path, (128, 128, 2)) as w:
        w.write(ev)
    return path, ev


def _check_contiguous(packets, window_us=None):
    for a, b in zip(packets[:-1], packets[1:]):
        assert a.t1_us == b.t0_us
        assert b.seq == a.seq + 1
    for p in packets:
        assert p.t0_us < p.t1_us
        if window_us is not None:
            assert p.t1_us - p.t0_us == window_us
        if p.count:
            assert p.events["t"].min() >= p.t0_us and p.events["t"].max() < p.t1_us


@pytest.mark.parametrize("window_us", [1000, 7777, 50_000])
def test_time_windows_deliver_every_event_once(real_sfe, window_us):
    path, ev = real_sfe
    r = Replay(path, window_us=window_us, speed=0, chunk_events=10_000)  # many chunk boundaries
    packets = list(r)
    assert packets[0].seq == 0 and packets[0].t0_us == ev["t"][0]
    _check_contiguous(packets, window_us)
    assert np.array_equal(np.concatenate([p.events for p in packets]), ev)
    assert len(packets) == (ev["t"][-1] - ev["t"][0]) // window_us + 1
    assert all(p.sensor_size == (128, 128, 2) and p.stream == "replay" and p.kind == "events" for p in packets)
    assert r.stats()["events"] == len(ev) and r.stats()["packets"] == len(packets)


def test_empty_windows_still_advance_time():
    ev = make_events([10, 20, 5020, 5021], [1, 2, 3, 4], [0, 0, 0, 0], [1, 0, 1, 0])
    packets = list(replay(ev, sensor_size=(8, 8, 2), window_us=1000, speed=0))
    assert [p.count for p in packets] == [2, 0, 0, 0, 0, 2]
    assert [p.t0_us for p in packets] == [10, 1010, 2010, 3010, 4010, 5010]
    _check_contiguous(packets, 1000)


@pytest.mark.parametrize("count", [50, 999, 20_000])
def test_count_slicing(real_sfe, count):
    path, ev = real_sfe
    packets = list(replay(path, count=count, speed=0))
    _check_contiguous(packets)
    assert np.array_equal(np.concatenate([p.events for p in packets]), ev)
    for p in packets[:-1]:
        assert p.count >= count
        # more than `count` only to keep one timestamp in one packet
        assert np.all(p.events["t"][count - 1:] == p.events["t"][count - 1])
    assert 0 < packets[-1].count


def test_count_slicing_never_splits_a_timestamp():
    ev = make_events([0, 0, 0, 1, 1, 2, 3, 3, 3, 3], range(10), [0] * 10, [1] * 10)
    packets = list(replay(ev, sensor_size=(16, 1, 2), count=2, speed=0))
    assert [p.count for p in packets] == [3, 2, 5]  # the last takes t=2 and all four t=3
    assert [(p.t0_us, p.t1_us) for p in packets] == [(0, 1), (1, 2), (2, 4)]


def test_loop_continues_time_and_seq(real_sfe):
    path, ev = real_sfe
    seen = []
    r = Replay(path, window_us=10_000, speed=0, loop=True, stop=lambda: len(seen) >= 3 * n_per_pass)
    n_per_pass = (ev["t"][-1] - ev["t"][0]) // 10_000 + 1
    for p in r:
        seen.append(p)
    assert len(seen) == 3 * n_per_pass
    _check_contiguous(seen, 10_000)
    span = n_per_pass * 10_000
    got = np.concatenate([p.events for p in seen])
    want = np.concatenate([ev, ev, ev])
    want["t"] += np.repeat(np.arange(3) * span, len(ev))
    assert np.array_equal(got, want)
    assert r.passes >= 2


def test_speed_zero_does_not_sleep(real_sfe):
    path, ev = real_sfe
    span_s = (ev["t"][-1] - ev["t"][0]) * 1e-6
    t0 = time.monotonic()
    n = sum(1 for _ in replay(path, speed=float("inf")))
    assert n > 1000
    assert time.monotonic() - t0 < span_s / 3


def test_paced_replay_never_runs_ahead_of_schedule(real_sfe):
    path, ev = real_sfe
    speed = 20.0
    start_ns = time.time_ns() + 20_000_000
    r = Replay(path, window_us=20_000, speed=speed, start_ns=start_ns)
    packets = list(r)
    t_first = packets[0].t0_us
    for p in packets:
        due_ns = start_ns + (p.t1_us - t_first) * 1000 / speed
        assert p.sent_ns >= due_ns - 1_000_000  # wall clock vs monotonic: 1 ms slack
    span_ns = (packets[-1].t1_us - t_first) * 1000 / speed
    assert packets[-1].sent_ns - start_ns >= span_ns - 1_000_000
    st = r.stats()
    assert st["packets"] == len(packets) and "late_p50_us" in st and st["late_p50_us"] >= 0


def test_stop_callable_interrupts_a_long_wait():
    ev = make_events([0, 60_000_000], [0, 1], [0, 0], [1, 1])  # next window is due in a minute
    flag = threading.Event()
    got = []
    t0 = time.monotonic()
    for p in replay(ev, sensor_size=(2, 1, 2), window_us=1000, speed=1.0, start_ns=time.time_ns() - 1_000_000,
                    stop=flag.is_set):
        got.append(p)
        if len(got) == 1:
            threading.Timer(0.05, flag.set).start()
    assert time.monotonic() - t0 < 2.0
    assert len(got) >= 1 and got[0].count == 1


def test_stop_method_from_another_thread():
    ev = make_events([0, 60_000_000], [0, 1], [0, 0], [1, 1])
    r = Replay(ev, sensor_size=(2, 1, 2), window_us=30_000_000, speed=1.0)
    started = threading.Event()

    def consume(out):
        started.set()
        out.extend(r)

    out: list = []
    th = threading.Thread(target=consume, args=(out,))
    t0 = time.monotonic()
    th.start()
    started.wait(5)
    r.stop()
    th.join(5)
    assert not th.is_alive()
    assert time.monotonic() - t0 < 2.0
    assert out == []  # the first window was not due yet


def test_bad_input():
    ev = make_events([0, 5, 3], [0, 0, 0], [0, 0, 0], [1, 1, 1])
    with pytest.raises(RecordingError, match="backwards at event 2"):
        list(replay(ev, sensor_size=(1, 1, 2), speed=0))
    with pytest.raises(ParamError, match="replay.sensor_size"):
        replay(np.zeros(3, EVENT_DTYPE))
    with pytest.raises(ParamError, match="replay.speed"):
        replay(np.zeros(3, EVENT_DTYPE), sensor_size=(1, 1, 2), speed=-1)
    with pytest.raises(ParamError, match="replay.count"):
        replay(np.zeros(3, EVENT_DTYPE), sensor_size=(1, 1, 2), count=0)
    with pytest.raises(ParamError, match="replay.window_us"):
        replay(np.zeros(3, EVENT_DTYPE), sensor_size=(1, 1, 2), window_us=0)
    with pytest.raises(RecordingError, match="(?i)no such file"):
        replay("/nonexistent/file.sfe")


def test_empty_source_yields_nothing_even_when_looping():
    assert list(replay(np.zeros(0, EVENT_DTYPE), sensor_size=(4, 4, 2), loop=True, speed=0)) == []


def test_replays_the_real_file_through_its_reader(shared, real_sfe):
    _, ev = real_sfe  # tonic's decode of the same file
    r = Replay(shared(GESTURE), format="nmnist_bin", reader_options={"sensor_size": (128, 128, 2)},
               window_us=5000, speed=0, chunk_events=30_000)
    packets = list(r)
    _check_contiguous(packets, 5000)
    assert packets[0].sensor_size == (128, 128, 2)
    assert np.array_equal(np.concatenate([p.events for p in packets]), ev)
