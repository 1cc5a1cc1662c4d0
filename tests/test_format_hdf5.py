"""HDF5 event files: DSEC-like columns, structured datasets, tonic's disk cache; the writer.

No real HDF5 recording is reachable (MANIFEST.md §4), so real events (a DVSGesture clip)
are written in each layout with h5py directly, and read back through
the layout's own reference code (tonic's DSEC loader logic, ``tonic.cached_dataset``).
"""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import tonic
from tonic.cached_dataset import load_from_disk_cache, save_to_disk_cache

import naive_formats as naive
from fuzzing import fuzz_reader, mutate
from spikeflow.drivers.formats import hdf5_kernels
from spikeflow.drivers.recording import detect_format, open_recording, open_writer, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize


@pytest.fixture
def gesture(shared):
    ev, _ = read_recording(shared("recordings/slayer-dvsgesture/4.bs2"), dataset="dvsgesture")
    return ev


def test_writer_round_trip_in_chunks(gesture, tmp_path):
    path = tmp_path / "g.h5"
    with open_writer(path, (128, 128), extra={"camera": "DVS128"}) as w:
        for i in range(0, len(gesture), 50_000):
            w.write(gesture[i:i + 50_000])
    with h5py.File(path) as f:  # plain h5py sees the DSEC-like layout
        assert list(f["events"].attrs["sensor_size"]) == [128, 128, 2]
        np.testing.assert_array_equal(f["events/x"][()], gesture["x"])
    with open_recording(path, chunk_events=7000) as rec:
        assert rec.info.format == "hdf5" and rec.info.sensor_size == (128, 128, 2)
        chunks = list(rec)
    assert max(map(len, chunks)) <= 7000
    np.testing.assert_array_equal(np.concatenate(chunks), gesture)


def test_dsec_layout_with_t_offset(gesture, tmp_path):
    path = tmp_path / "events.h5"
    t_offset = 49_599_300_523
    with h5py.File(path, "w") as f:  # DSEC's dtypes: u2 x/y, u1 p, u4 t relative to t_offset
        f["events/x"] = gesture["x"].astype("u2")
        f["events/y"] = gesture["y"].astype("u2")
        f["events/p"] = gesture["p"].astype("u1")
        f["events/t"] = gesture["t"].astype("u4")
        f["t_offset"] = np.int64(t_offset)
        f["ms_to_idx"] = np.searchsorted(gesture["t"], np.arange(0, 1450, dtype=np.int64) * 1000).astype("u8")
    ev, info = read_recording(path)
    assert info.sensor_size == SensorSize(640, 480, 2) and info.extra["t_offset_us"] == t_offset
    with h5py.File(path) as file:  # what tonic.datasets.DSEC.__getitem__ does
        ref = tonic.io.make_structured_array(file["events"]["x"][()], file["events"]["y"][()],
                                             file["events"]["t"][()], file["events"]["p"][()],
                                             dtype=tonic.io.events_struct)
        ref["t"] += file["t_offset"][()]
    for k in "txyp":
        np.testing.assert_array_equal(ev[k], ref[k].astype(np.int64))


def test_tonic_disk_cache(gesture, tmp_path):
    path = tmp_path / "0_0.hdf5"
    tev = tonic.io.make_structured_array(gesture["x"], gesture["y"], gesture["t"], gesture["p"],
                                         dtype=tonic.io.events_struct)
    save_to_disk_cache(tev, 3, path)  # tonic.DiskCachedDataset's own writer (lzf)
    ev, info = read_recording(path, sensor_size=(128, 128))
    ref, target = load_from_disk_cache(path)
    assert info.extra["key"] == "data/0" and target == 3
    for k in "txyp":
        np.testing.assert_array_equal(ev[k], ref[k].astype(np.int64))


def test_structured_events_dataset_and_width_height_attrs(gesture, tmp_path):
    path = tmp_path / "s.h5"
    dt = np.dtype([("x", "<u2"), ("y", "<u2"), ("p", "i1"), ("t", "<i8")])
    arr = np.empty(len(gesture), dt)
    for k in "txyp":
        arr[k] = gesture[k]
    with h5py.File(path, "w") as f:
        f.create_dataset("events", data=arr, chunks=(4096,), compression="gzip")
        f.attrs["width"], f.attrs["height"] = 128, 128
    ev, info = read_recording(path, chunk_events=10_000)
    assert info.sensor_size == (128, 128, 2)
    np.testing.assert_array_equal(ev, gesture)


def test_root_columns_and_aliases_with_key(gesture, tmp_path):
    path = tmp_path / "r.h5"
    with h5py.File(path, "w") as f:
        f["ts"], f["x"], f["y"], f["polarity"] = gesture["t"], gesture["x"], gesture["y"], gesture["p"]
        f.attrs["sensor_size"] = [128, 128]
    np.testing.assert_array_equal(read_recording(path)[0], gesture)
    np.testing.assert_array_equal(read_recording(path, key="/")[0], gesture)


def test_errors_name_key(gesture, tmp_path):
    nolayout = tmp_path / "n.h5"
    with h5py.File(nolayout, "w") as f:
        f["frames"] = np.zeros((2, 4, 4))
    with pytest.raises(RecordingError, match="no event layout found"):
        read_recording(nolayout)
    nosize = tmp_path / "ns.h5"
    with h5py.File(nosize, "w") as f:
        f["events"] = gesture
    with pytest.raises(RecordingError, match="events: sensor size unknown"):
        read_recording(nosize)
    ragged = tmp_path / "rg.h5"
    with h5py.File(ragged, "w") as f:
        f["events/t"], f["events/x"] = gesture["t"], gesture["x"][:-1]
        f["events/y"], f["events/p"] = gesture["y"], gesture["p"]
    with pytest.raises(RecordingError, match="equal length"):
        read_recording(ragged, sensor_size=(128, 128))
    floats = tmp_path / "fl.h5"
    with h5py.File(floats, "w") as f:
        f["events/t"], f["events/x"] = gesture["t"] / 1e6, gesture["x"]
        f["events/y"], f["events/p"] = gesture["y"], gesture["p"]
    with pytest.raises(RecordingError, match="events/t: expected integers"):
        read_recording(floats, sensor_size=(128, 128))
    with pytest.raises(RecordingError, match=r"events\[\d+\]: event \(\d+, \d+\) outside the 64x64"):
        read_recording(_written(gesture, tmp_path), sensor_size=(64, 64))


def _written(ev, tmp_path):
    p = tmp_path / "w.h5"
    with open_writer(p, (128, 128)) as w:
        w.write(ev)
    return p


def test_truncated_file(gesture, tmp_path):
    p = _written(gesture, tmp_path)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(RecordingError, match=r"cut\.h5"):
        read_recording(cut)


def test_detection_by_magic(gesture, tmp_path):
    p = _written(gesture, tmp_path)
    renamed = tmp_path / "clip.raw"
    renamed.write_bytes(p.read_bytes())
    assert detect_format(renamed) == "hdf5"


def test_clear_error_without_h5py(gesture, tmp_path):
    p = _written(gesture, tmp_path)
    code = ("import sys; sys.modules['h5py'] = None\n"
            "from spikeflow.drivers.recording import read_recording\n"
            "from spikeflow.service.errors import RecordingError\n"
            f"try:\n    read_recording({str(p)!r})\n"
            "except RecordingError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ERR" in out.stdout and "pip install 'spikeflow[hdf5]'" in out.stdout, out.stderr


def test_fuzz_hdf5(gesture, tmp_path):
    src = tmp_path / "src.h5"
    with open_writer(src, (128, 128)) as w:
        w.write(gesture[:2000])
    fz = tmp_path / "fz"
    fz.mkdir()
    counts = fuzz_reader(src, fz, format="hdf5", n_mutants=1000)
    assert counts["ok"] > 0 and counts["error"] > 0
    assert EVENT_DTYPE.names == ("t", "x", "y", "p")


# ------------------------------------------------------------ read_all's fused path (raw LZF chunks)


def _h5py_columns(path, key="events"):
    with h5py.File(path) as f:
        return {k: f[key][k][()] for k in "txyp"}


def _raw_chunks(path):
    """(compressed bytes, decompressed size, filter mask) of every chunk of every column."""
    out = []
    with h5py.File(path) as f:
        for k in "txyp":
            ds = f["events"][k]
            for i in range(ds.id.get_num_chunks()):
                info = ds.id.get_chunk_info(i)
                mask, data = ds.id.read_direct_chunk(info.chunk_offset)
                out.append((data, ds.chunks[0] * ds.dtype.itemsize, mask))
    return out


def test_lzf_kernel_matches_naive_and_h5py(gesture, tmp_path):
    path = _written(gesture, tmp_path)
    cols = _h5py_columns(path)
    decoded = {}
    for data, size, mask in _raw_chunks(path):
        assert mask == 0
        dst = np.empty(size, np.uint8)
        assert hdf5_kernels.lzf_decompress(np.frombuffer(data, np.uint8), dst) == size
        assert dst.tobytes() == naive.lzf_decompress(data, size)
        decoded.setdefault(size, []).append(dst.tobytes())
    joined = b"".join(b for size in decoded for b in decoded[size])
    assert joined.startswith(cols["t"].tobytes())  # chunk padding after the last event is h5py's too


@pytest.mark.parametrize("seed", range(4))
def test_lzf_kernel_on_corrupt_streams_agrees_with_naive(gesture, tmp_path, seed):
    rng = np.random.default_rng(seed)
    data, size, _ = _raw_chunks(_written(gesture[:6000], tmp_path))[seed]  # t, x, y, p
    for _ in range(60):
        bad = mutate(data, rng)
        dst = np.empty(size, np.uint8)
        got = hdf5_kernels.lzf_decompress(np.frombuffer(bad, np.uint8), dst)
        want = naive.lzf_decompress(bad, size)
        assert got == (-1 if want is None else len(want))
        if want is not None:
            assert dst[:got].tobytes() == want


@pytest.mark.parametrize("seed", range(10))
def test_columns_kernel_matches_naive(seed):
    rng = np.random.default_rng(seed)
    width, height, n = int(rng.integers(1, 300)), int(rng.integers(1, 300)), int(rng.integers(1, 300))
    t = (np.cumsum(rng.integers(0, 3, n)) + 5).astype("u4")
    x, y = rng.integers(0, width, n).astype("u2"), rng.integers(0, height, n).astype("i4")
    p = rng.integers(0, 2, n).astype("i4")
    i = int(rng.integers(0, n))
    kind = int(rng.integers(0, 5))
    if kind == 1:
        x[i] = width
    elif kind == 4:
        y[i] = -1  # negative: outside as well
    elif kind == 2 and i:
        t[i] = t[i - 1] - 1
    elif kind == 3:
        p[i] = -40_000
    t_offset, last, check = int(rng.integers(0, 10**12)), int(rng.integers(0, 10)), bool(rng.integers(0, 2))
    out = np.zeros(n + 2, EVENT_DTYPE)
    got = hdf5_kernels.columns_to_events_(t, x, y, p, t_offset, out, 2, width, height, last + t_offset, check)
    good, want = naive.events_or_first_bad(t.tolist(), x.tolist(), y.tolist(), p.tolist(), width, height,
                                           last + t_offset, check, t_offset)
    assert got == want and out[2:2 + len(good)].tolist() == good


def _plan(path, **opts):
    with open_recording(path, **opts) as rec:
        return rec._plan()


def test_fused_read_all_equals_h5py_columns(gesture, tmp_path):
    path = _written(gesture, tmp_path)
    assert len(gesture) > 2 * 65536  # three chunks, the last one partial
    plan = _plan(path)
    assert plan[0] == "chunks" and plan[1] == 65536 and len(plan[2][0]) == 3
    ev, _ = read_recording(path)
    np.testing.assert_array_equal(ev, gesture)
    cols = _h5py_columns(path)
    for k in "txyp":
        np.testing.assert_array_equal(ev[k], cols[k])


def test_uncompressed_columns_chunked_or_contiguous(gesture, tmp_path):
    from spikeflow.drivers.formats.hdf5 import Hdf5Writer
    path = tmp_path / "u.h5"
    with Hdf5Writer(path, (128, 128), compression=None) as w:  # chunked, no filter: raw chunk reads
        w.write(gesture)
    plan = _plan(path)
    assert plan[0] == "chunks" and all(raw for lst in plan[2] for _, _, raw in lst)
    np.testing.assert_array_equal(read_recording(path)[0], gesture)
    contiguous = tmp_path / "c.h5"
    with h5py.File(contiguous, "w") as f:
        for k in "txyp":
            f[f"events/{k}"] = gesture[k]
        f["events"].attrs["sensor_size"] = [128, 128, 2]
    assert _plan(contiguous) == ("direct",)
    np.testing.assert_array_equal(read_recording(contiguous)[0], gesture)


def test_chunks_the_filter_declined_are_read_raw(gesture, tmp_path):
    """LZF gives up on incompressible chunks; HDF5 then stores them as is (filter mask bit 0)."""
    rng = np.random.default_rng(0)
    n = 70_000
    path = tmp_path / "noise.h5"
    t = rng.integers(-2**62, 2**62, n)
    with h5py.File(path, "w") as f:
        g = f.create_group("events")
        g.attrs["sensor_size"] = [128, 128, 2]
        g.create_dataset("t", data=t, chunks=(65536,), compression="lzf")
        for k in "xy":
            g.create_dataset(k, data=rng.integers(0, 128, n).astype("i2"), chunks=(65536,), compression="lzf")
        g.create_dataset("p", data=rng.integers(0, 2, n).astype("i2"), chunks=(65536,), compression="lzf")
    assert any(mask for _, _, mask in _raw_chunks(path))
    assert _plan(path, check_order=False)[0] == "chunks"
    ev, _ = read_recording(path, check_order=False)
    cols = _h5py_columns(path)
    for k in "txyp":
        np.testing.assert_array_equal(ev[k], cols[k])
    with pytest.raises(RecordingError, match=r"events\[\d+\]: timestamp goes backwards"):
        read_recording(path)


def test_fused_path_errors_name_the_index(gesture, tmp_path):
    bad = gesture.copy()
    bad["t"][70_001] = bad["t"][70_000] - 1
    with pytest.raises(RecordingError, match=r"events\[70001\]: timestamp goes backwards"):
        read_recording(_written(bad, tmp_path))
    path = tmp_path / "p32.h5"
    with h5py.File(path, "w") as f:
        for k in "txy":
            f.create_dataset(f"events/{k}", data=gesture[k], chunks=(65536,), compression="lzf")
        p = gesture["p"].astype("i4")
        p[100_000] = 99_999
        f.create_dataset("events/p", data=p, chunks=(65536,), compression="lzf")
        f["events"].attrs["sensor_size"] = [128, 128, 2]
    assert _plan(path)[0] == "chunks"
    with pytest.raises(RecordingError, match=r"events/p\[65536\.\.131072\): value does not fit int16"):
        read_recording(path)


def test_corrupt_chunk_names_column_chunk_and_byte(gesture, tmp_path):
    """A damaged compressed chunk that still decodes, to the wrong size: h5py would return the
    rest of the chunk uninitialised; read_all refuses it."""
    path = _written(gesture, tmp_path)
    _, lists = _plan(path)[1:]
    at, size, _ = lists[1][1]  # x, second chunk
    data = bytearray(path.read_bytes())
    for k in range(at + size - 64, at + size):  # first byte whose change breaks the stream's length
        chunk = bytes(data[at:k]) + b"\xe0" + bytes(data[k + 1:at + size])
        out = naive.lzf_decompress(chunk, 1 << 17)
        if out is None or len(out) != 1 << 17:
            data[k] = 0xE0
            break
    path.write_bytes(bytes(data))
    with pytest.raises(RecordingError, match=rf"w\.h5 at byte {at}: events/x chunk 1: corrupt chunk"):
        read_recording(path)
    with pytest.raises(RecordingError, match=rf"w\.h5 at byte {at}: events/x chunk 1: corrupt chunk"):
        with open_recording(path, chunk_events=50_000) as rec:   # streaming refuses it too
            list(rec)


def test_streaming_takes_the_chunk_path_and_equals_read_all(gesture, tmp_path):
    """Iterating reads the raw chunks as read_all does, whatever the output chunk size: HDF5
    chunks straddling output chunks, output chunks larger than the file, one event at a time."""
    path = _written(gesture, tmp_path)
    assert _plan(path)[0] == "chunks"
    whole, _ = read_recording(path)
    for chunk_events in (1, 1000, 65_536, 100_000, 10 ** 7):
        n = len(gesture) if chunk_events > 1 else 5_000
        with open_recording(path, chunk_events=chunk_events) as rec:
            parts = []
            for c in rec:
                assert 0 < len(c) <= chunk_events
                parts.append(c.copy())
                if sum(map(len, parts)) >= n:
                    break
        assert np.concatenate(parts).tobytes() == whole[:sum(map(len, parts))].tobytes()
        assert chunk_events == 1 or sum(map(len, parts)) == len(whole)


def test_fuzz_hdf5_read_all(gesture, tmp_path):
    src = _written(gesture[:70_000], tmp_path)
    data = src.read_bytes()
    rng = np.random.default_rng(2)
    mutant = tmp_path / "m.h5"
    counts = {"ok": 0, "error": 0}
    for _ in range(150):
        mutant.write_bytes(mutate(data, rng))
        try:
            ev, _ = read_recording(mutant, format="hdf5")
        except RecordingError:
            counts["error"] += 1
            continue
        counts["ok"] += 1
        with open_recording(mutant, format="hdf5", chunk_events=30_000) as rec:
            np.testing.assert_array_equal(np.concatenate(list(rec) or [np.zeros(0, EVENT_DTYPE)]), ev)
    assert counts["ok"] > 0 and counts["error"] > 0, counts


def test_file_with_a_userblock_takes_h5py_path(gesture, tmp_path):
    """Chunk addresses in front of a user block differ between HDF5 versions: h5py reads those."""
    path = tmp_path / "ub.h5"
    with h5py.File(path, "w", userblock_size=1024) as f:
        for k in "txyp":
            f.create_dataset(f"events/{k}", data=gesture[k], chunks=(65536,), compression="lzf")
        f["events"].attrs["sensor_size"] = [128, 128, 2]
    assert _plan(path, format="hdf5") is None
    np.testing.assert_array_equal(read_recording(path, format="hdf5")[0], gesture)
