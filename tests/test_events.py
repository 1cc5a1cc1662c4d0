"""The event model: one dtype with tonic's field names, tonic transforms accept it, slices are views."""

from __future__ import annotations

import numpy as np
import pytest
import tonic
import tonic.transforms as T

from spikeflow.drivers.recording import read_recording
from spikeflow.service.events import (EVENT_DTYPE, SensorSize, as_events, empty, is_sorted, make_events,
                                      time_slice, window_bounds)
from spikeflow.service.packet import Packet, events_packet


@pytest.fixture
def nmnist(shared):
    ev, info = read_recording(shared("recordings/tonic-testdata/sample_nmnist.bin"))
    return ev, info.sensor_size


def _tonic_copy(ev):
    return tonic.io.make_structured_array(ev["x"], ev["y"], ev["t"], ev["p"], dtype=tonic.io.events_struct)


def test_dtype_contract():
    assert EVENT_DTYPE.names == ("t", "x", "y", "p")
    assert EVENT_DTYPE.itemsize == 14
    assert [EVENT_DTYPE[k].str for k in "txyp"] == ["<i8", "<i2", "<i2", "<i2"]
    assert SensorSize(34, 34) == (34, 34, 2)
    assert len(empty(3)) == 3 and empty().dtype == EVENT_DTYPE


def test_as_events_from_tonic_and_identity(nmnist):
    ev, _ = nmnist
    assert as_events(ev) is ev  # no copy when already ours
    back = as_events(_tonic_copy(ev))
    np.testing.assert_array_equal(back, ev)
    with pytest.raises(ValueError, match="lacks fields"):
        as_events(np.zeros(2, [("x", "i2"), ("y", "i2")]))


def test_time_slice_is_half_open_view(nmnist):
    ev, _ = nmnist
    t0, t1 = int(ev["t"][100]), int(ev["t"][2000])
    s = time_slice(ev, t0, t1)
    assert np.shares_memory(s, ev) and s.base is not None
    assert s["t"].min() >= t0 and s["t"].max() < t1
    assert len(s) == int(np.count_nonzero((ev["t"] >= t0) & (ev["t"] < t1)))
    assert len(time_slice(ev, t1, t1)) == 0
    s["x"][0] = 33  # writing through the view changes the parent: proof of no copy
    assert ev["x"][np.searchsorted(ev["t"], t0)] == 33


def test_window_bounds_partition(nmnist):
    ev, _ = nmnist
    b = window_bounds(ev, 1000)
    edges, idx = b[:, 0], b[:, 1]
    assert idx[0] == 0 and idx[-1] == len(ev)
    assert np.all(np.diff(edges) == 1000)
    for k in range(0, len(b) - 1, 37):
        w = ev[idx[k]:idx[k + 1]]
        assert np.all((w["t"] >= edges[k]) & (w["t"] < edges[k + 1]))
    with pytest.raises(ValueError):
        window_bounds(ev, 0)


def test_packet_slice_is_view_and_clips_window(nmnist):
    ev, ss = nmnist
    pk = events_packet(ev, "cam.events_out", 5, ss, 0, 400_000)
    sub = pk.slice(100_000, 500_000)
    assert (sub.t0_us, sub.t1_us, sub.seq, sub.sensor_size) == (100_000, 400_000, 5, ss)
    assert np.shares_memory(sub.events, ev)
    assert sub.count == int(np.count_nonzero(ev["t"] >= 100_000))
    with pytest.raises(ValueError):
        Packet(kind="bogus")
    with pytest.raises(ValueError):
        events_packet(_tonic_copy(ev), "s", 0, ss, 0, 1)


def test_with_events_keeps_the_metadata_around_new_events():
    ev = make_events(np.arange(5), np.arange(5), np.arange(5), np.ones(5))
    p = Packet("spikes", "f.events_out", 7, SensorSize(8, 8, 2), 100, 200, 123, ev, {"k": 1})
    q = p.with_events(ev[1:3])
    assert type(q) is Packet and q is not p and q.events.tolist() == ev[1:3].tolist()
    assert (q.kind, q.stream, q.seq, q.sensor_size, q.t0_us, q.t1_us, q.sent_ns, q.data) == \
           ("spikes", "f.events_out", 7, SensorSize(8, 8, 2), 100, 200, 123, {"k": 1})
    assert p.events is ev and p.seq == 7     # the original is unchanged
    r = p.with_events(ev[:1], seq=8, t1_us=150)
    assert (r.seq, r.t0_us, r.t1_us, r.stream, len(r.events)) == (8, 100, 150, "f.events_out", 1)
    with pytest.raises(ValueError):
        p.with_events(ev, kind="bogus")       # changes are checked like a new packet


def test_is_sorted_and_make_events():
    ev = make_events([3, 1], [0, 1], [0, 1], [1, 0])
    assert ev.dtype == EVENT_DTYPE and not is_sorted(ev)
    assert is_sorted(np.sort(ev, order="t"))


def test_tonic_denoise_accepts_our_arrays(nmnist):
    ev, _ = nmnist
    ours = T.Denoise(filter_time=10_000)(ev)
    ref = T.Denoise(filter_time=10_000)(_tonic_copy(ev))
    assert ours.dtype == EVENT_DTYPE and 0 < len(ours) < len(ev)
    for k in "txyp":
        np.testing.assert_array_equal(ours[k], ref[k].astype(np.int64))


def test_tonic_downsample_accepts_our_arrays(nmnist):
    ev, _ = nmnist
    ours = T.Downsample(spatial_factor=0.5)(ev)
    ref = T.Downsample(spatial_factor=0.5)(_tonic_copy(ev))
    assert ours.dtype.names == EVENT_DTYPE.names
    np.testing.assert_array_equal(ours["x"], ref["x"])
    np.testing.assert_array_equal(ours["y"], ref["y"])
    assert ours["x"].max() < 17


def test_tonic_toframe_accepts_our_arrays(nmnist):
    ev, ss = nmnist
    frames = T.ToFrame(sensor_size=tuple(ss), time_window=10_000, include_incomplete=True)(ev)
    ref = T.ToFrame(sensor_size=tuple(ss), time_window=10_000, include_incomplete=True)(_tonic_copy(ev))
    assert frames.shape[1:] == (2, 34, 34)
    np.testing.assert_array_equal(frames, ref)
    assert frames.sum() == len(ev)
