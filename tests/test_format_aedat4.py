"""AEDAT 4 reader and writer against the two independent AEDAT 4 decoders.

Oracles: ``aedat`` (Rust, the decoder tonic uses) and ``dv-processing`` (iniVation's own C++
library, the format's reference implementation). Both agree with each other on the three real
files of ../shared (MANIFEST.md), so equality with both is the strongest check available.
Files with other compressions (none, ZSTD) are made by re-packing a real file's packets, and
dv-processing is asked to read them too, so the re-packing itself is checked.
"""

from __future__ import annotations

import struct

import aedat
import dv_processing as dv
import lz4.block
import lz4.frame
import numpy as np
import pytest
import zstandard

from fuzzing import fuzz_reader, mutate
from naive_aedat import naive_aedat4_events, naive_lz4_block, naive_xxh32
from spikeflow.drivers.formats import aedat4 as A4
from spikeflow.drivers.formats import aedat_kernels as K
from spikeflow.drivers.recording import detect_format, open_recording, open_writer, read_recording
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, make_events

REAL = {
    "recordings/tonic-testdata/sample.aedat4": (111_954, (320, 240), {"IMUS": 59}),
    "recordings/faery-testdata/davis346.aedat4": (78_830, (346, 260), {"FRME": 59, "IMUS": 236, "TRIG": 177}),
    "recordings/aermanager-testdata/data_sample.aedat4": (323_963, (320, 240), {"IMUS": 146}),
}


def ref_aedat(path):
    dec = aedat.Decoder(str(path))
    sid = min(k for k, v in dec.id_to_stream().items() if v["type"] == "events")
    ev = np.concatenate([pk["events"] for pk in dec if pk["stream_id"] == sid and "events" in pk])
    return ev["t"].astype(np.int64), ev["x"].astype(np.int64), ev["y"].astype(np.int64), ev["on"].astype(np.int64)


def ref_dv(path):
    rec = dv.io.MonoCameraRecording(str(path))
    parts = []
    while (b := rec.getNextEventBatch()) is not None:
        parts.append(b.numpy())
    ev = np.concatenate(parts)
    return (ev["timestamp"].astype(np.int64), ev["x"].astype(np.int64), ev["y"].astype(np.int64),
            ev["polarity"].astype(np.int64))


def same(ev, ref) -> bool:
    return all(np.array_equal(ev[f].astype(np.int64), r) for f, r in zip("txyp", ref))


def packets(data: bytes):
    """(header bytes, [(offset, stream id, body)]) of an AEDAT 4 file, by plain struct walking."""
    hsize, = struct.unpack_from("<I", data, 14)
    start = 18 + hsize
    fb = A4._Flat(data[18:start], "x", 18, "IOHeader")
    table, _ = fb.root(size_prefixed=False)
    end = fb.u("q", fb.field(table, 1))
    end = len(data) if end < 0 else end
    out, off = [], start
    while off < end:
        sid, size = struct.unpack_from("<ii", data, off)
        out.append((off, sid, data[off + 8:off + 8 + size]))
        off += 8 + size
    return data[:start], out


def repack(src, dst, compression: int):
    """Rewrite ``src`` with every packet re-compressed (0 none, 3 ZSTD); data table dropped."""
    head, pkts = packets(src.read_bytes())
    head = bytearray(head)
    fb = A4._Flat(bytes(head[18:]), "x", 18, "IOHeader")
    table, _ = fb.root(size_prefixed=False)
    struct.pack_into("<i", head, 18 + fb.field(table, 0), compression)
    struct.pack_into("<q", head, 18 + fb.field(table, 1), -1)
    out = [bytes(head)]
    for _, sid, body in pkts:
        raw = lz4.frame.decompress(body)
        new = raw if compression == 0 else zstandard.ZstdCompressor(level=3).compress(raw)
        out.append(struct.pack("<ii", sid, len(new)) + new)
    dst.write_bytes(b"".join(out))
    return dst


@pytest.mark.parametrize("rel", sorted(REAL))
def test_real_files_match_aedat_and_dv_processing(shared, rel):
    path = shared(rel)
    n, size, skipped = REAL[rel]
    assert detect_format(path) == "aedat4"
    ev, info = read_recording(path, chunk_events=50_000)
    assert len(ev) == n and tuple(info.sensor_size) == (*size, 2)
    assert same(ev, ref_aedat(path)) and same(ev, ref_dv(path))
    assert info.extra["compression"] == "LZ4" and info.extra["stream"] == 0
    assert info.extra["skipped_packets"] == skipped


def test_chunks_and_stream_selection(shared):
    path = shared("recordings/faery-testdata/davis346.aedat4")
    full, info = read_recording(path)
    assert info.extra["camera"] == "DAVIS346_00000002" and info.extra["streams"] == {0: "EVTS", 1: "FRME", 2: "IMUS", 3: "TRIG"}
    with open_recording(path, chunk_events=3000) as rec:
        chunks = list(rec)
    assert all(len(c) <= 3000 for c in chunks) and sum(map(len, chunks)) == len(full)
    assert np.array_equal(np.concatenate(chunks), full)
    assert np.array_equal(read_recording(path, stream="events")[0], full)
    with pytest.raises(RecordingError, match="no event stream 2"):
        read_recording(path, stream=2)


@pytest.mark.parametrize("compression", [0, 3])
def test_other_compressions(shared, tmp_path, compression):
    src = shared("recordings/tonic-testdata/sample.aedat4")
    dst = repack(src, tmp_path / f"c{compression}.aedat4", compression)
    ev, info = read_recording(dst)
    assert info.extra["compression"] == A4.COMPRESSIONS[compression]
    assert np.array_equal(ev, read_recording(src)[0])
    assert same(ev, ref_dv(dst))


def test_writer_output_read_by_both_references(shared, tmp_path):
    ev, info = read_recording(shared("recordings/aermanager-testdata/data_sample.aedat4"))
    out = tmp_path / "w.aedat4"
    with open_writer(out, info.sensor_size, extra={"source": "DVXplorer_copy", "ts_offset_us": 7}) as w:
        w.write(ev[:100_000])
        w.write(ev[100_000:])
    back, binfo = read_recording(out)
    assert np.array_equal(back, ev) and binfo.extra["camera"] == "DVXplorer_copy"
    assert binfo.extra["ts_offset_us"] == 7
    assert same(ev, ref_aedat(out)) and same(ev, ref_dv(out))
    assert dv.io.MonoCameraRecording(str(out)).getEventResolution() == (320, 240)


def test_writer_rejects_what_it_cannot_store(tmp_path):
    with open_writer(tmp_path / "w.aedat4", (10, 10)) as w:
        with pytest.raises(RecordingError, match="outside the 10x10"):
            w.write(make_events([1], [10], [0], [1]))
        w.write(make_events([5], [1], [1], [1]))
        with pytest.raises(RecordingError, match="non-decreasing"):
            w.write(make_events([4], [1], [1], [1]))


def _file_with_events(tmp_path, name, structs: bytes, n: int, size=(10, 10)):
    """A one-packet AEDAT 4 file whose EVTS vector holds raw ``structs`` (n x 16 bytes)."""
    w = tmp_path / "base.aedat4"
    with open_writer(w, size) as wr:
        wr.write(make_events([1], [0], [0], [0]))
    head, _ = packets(w.read_bytes())
    fb = A4.build_table([(b"\0\0\0\0", 4)], b"EVTS", tail=b"\0\0\0\0" + struct.pack("<I", n) + structs,
                        tail_refs=((0, 4),))
    body = lz4.frame.compress(fb)
    p = tmp_path / name
    p.write_bytes(head + struct.pack("<ii", 0, len(body)) + body)
    return p, len(head)


def _err(path, **kw) -> RecordingError:
    with pytest.raises(RecordingError) as e:
        read_recording(path, format="aedat4", **kw)
    assert str(path) in str(e.value)
    return e.value


def test_bad_events(tmp_path):
    def ev(t, x, y, on):
        return struct.pack("<qhhB3x", t, x, y, on)

    p, off = _file_with_events(tmp_path, "coord.aedat4", ev(1, 3, 3, 1) + ev(2, 10, 3, 0), 2)
    e = _err(p)
    assert e.offset == off + 8 and "event 1 of the packet lies outside the 10x10" in str(e)
    p, off = _file_with_events(tmp_path, "back.aedat4", ev(5, 3, 3, 1) + ev(4, 3, 3, 0), 2)
    assert "back in time" in str(_err(p)) and _err(p).offset == off + 8
    assert read_recording(p, strict_time=False)[0]["t"].tolist() == [5, 4]
    p, _ = _file_with_events(tmp_path, "pol.aedat4", ev(5, 3, 3, 2), 1)
    assert "polarity byte" in str(_err(p))
    p, _ = _file_with_events(tmp_path, "short.aedat4", ev(5, 3, 3, 1), 2)  # vector claims 2 events
    assert "runs past the end" in str(_err(p))


def test_bad_files(shared, tmp_path):
    data = shared("recordings/tonic-testdata/sample.aedat4").read_bytes()
    head, pkts = packets(data)

    def put(name, blob):
        (tmp_path / name).write_bytes(blob)
        return tmp_path / name

    e = _err(put("magic.aedat4", b"#!AER-DAT3.1\r\n" + data[14:]))
    assert e.offset == 0 and "magic" in str(e)
    cut = pkts[3][0] + 100
    e = _err(put("cut.aedat4", data[:cut]))
    assert e.offset == pkts[3][0] and "truncated or corrupt" in str(e)
    e = _err(put("hdr.aedat4", data[:14] + struct.pack("<I", 10**8) + data[18:]))
    assert e.offset == 14 and "IOHeader size" in str(e)
    e = _err(put("ident.aedat4", data[:22] + b"XXXX" + data[26:]))
    assert e.offset == 22 and "IOHE" in str(e)
    e = _err(put("xml.aedat4", data.replace(b"<dv version", b"<dv versi&n", 1)))
    assert "not valid XML" in str(e)
    e = _err(put("sid.aedat4", head + struct.pack("<ii", 9, 4) + b"abcd"))
    assert e.offset == len(head) and "stream id 9" in str(e)
    body = bytearray(pkts[0][2])
    body[0:4] = b"\0\0\0\0"  # LZ4 frame magic gone
    e = _err(put("lz4.aedat4", head + struct.pack("<ii", 0, len(body)) + bytes(body)))
    assert e.offset == len(head) + 8 and "does not decompress as LZ4" in str(e)
    body = bytearray(pkts[0][2])
    body[20:40] = b"\xff" * 20  # decompresses (no checksum in DV's frames), to a broken flatbuffer
    e = _err(put("fb.aedat4", head + struct.pack("<ii", 0, len(body)) + bytes(body)))
    assert e.offset == len(head) + 8 and "corrupt event packet flatbuffer" in str(e)
    h2 = bytearray(head)
    fb = A4._Flat(bytes(h2[18:]), "x", 18, "IOHeader")
    struct.pack_into("<i", h2, 18 + fb.field(fb.root(size_prefixed=False)[0], 0), 9)
    e = _err(put("comp.aedat4", bytes(h2)))
    assert "unknown compression type 9" in str(e)


@pytest.mark.parametrize("seed", range(6))
def test_event_kernel_matches_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 300))
    t = np.sort(rng.integers(0, 2**50, n))
    ev = make_events(t, rng.integers(0, 640, n), rng.integers(0, 480, n), rng.integers(0, 2, n))
    buf = np.zeros(8 + 16 * n, np.uint8)
    K.aedat4_encode(ev["t"], ev["x"], ev["y"], ev["p"], buf, 8)
    i0 = int(rng.integers(0, n + 1))
    cap = int(rng.integers(1, n + 2))  # output smaller than the packet: stops when full
    out = np.full(cap, -1, EVENT_DTYPE)  # every byte of an event must be written
    state = np.zeros(K.P4_STATE_LEN, np.int64)
    state[K.P4_LAST_T] = np.iinfo(np.int64).min
    k, i, err = K.aedat4_events(buf, 8, i0, n, 640, 480, True, state, out.view(np.uint8), 0)
    assert err == 0 and k == min(n - i0, cap) and i == i0 + k
    got = np.stack([out[f][:k].astype(np.int64) for f in "txyp"], 1)
    assert np.array_equal(got, naive_aedat4_events(buf.tobytes(), 8, n)[i0:i0 + k])
    assert k == 0 or state[K.P4_LAST_T] == got[-1, 0]


def _frame_cases():
    """LZ4 frames of every flavour liblz4 writes: block sizes, linked/independent blocks,
    checksums, content size, stored (incompressible) blocks, empty content."""
    rng = np.random.default_rng(7)
    ev = make_events(np.cumsum(rng.integers(0, 40, 30_000)), rng.integers(0, 320, 30_000),
                     rng.integers(0, 240, 30_000), rng.integers(0, 2, 30_000))
    structs = np.zeros(16 * len(ev), np.uint8)
    K.aedat4_encode(ev["t"], ev["x"], ev["y"], ev["p"], structs, 0)
    payloads = [b"", b"a", structs[:16 * 7].tobytes(), structs.tobytes(), bytes(rng.integers(0, 256, 70_000, dtype=np.uint8)),
                b"ab" * 50_000 + b"abc" * 1000]
    opts = [{}, {"block_size": lz4.frame.BLOCKSIZE_MAX256KB, "block_linked": False},
            {"block_size": lz4.frame.BLOCKSIZE_MAX1MB, "content_checksum": True, "block_checksum": True},
            {"block_size": lz4.frame.BLOCKSIZE_MAX4MB, "store_size": False, "compression_level": 12}]
    return [(data, o) for data in payloads for o in opts]


@pytest.mark.parametrize("case", range(24))
def test_lz4_frame_kernel_matches_liblz4(case):
    """Oracle: liblz4 (python-lz4) compresses; our decoder must give back the exact bytes."""
    data, opts = _frame_cases()[case]
    frame = lz4.frame.compress(data, **opts)
    src = np.zeros(len(frame) + 8 + K.LZ4_SLACK, np.uint8)
    src[8:8 + len(frame)] = np.frombuffer(frame, np.uint8)  # a frame inside a larger buffer
    cap = 1000
    while True:  # the reader's protocol: grow the output to what the decoder asks for
        dst = np.empty(cap + K.LZ4_SLACK, np.uint8)
        n, code, need = K.lz4_frame_decode(src, 8, 8 + len(frame), dst, cap, 1 << 28)
        if code != K.LZ4_NEED_SCRATCH:
            break
        assert need > cap
        cap = need
    assert code == K.LZ4_OK and dst[:n].tobytes() == data
    small = np.empty(64 + K.LZ4_SLACK, np.uint8)  # too small: asks for more rather than overflowing
    n, code, need = K.lz4_frame_decode(src, 8, 8 + len(frame), small, 64, 1 << 28)
    assert (code == K.LZ4_OK and n == len(data) <= 64) or (code == K.LZ4_NEED_SCRATCH and need > 64)
    n, code, _ = K.lz4_frame_decode(src, 8, 8 + len(frame), small, 64, 64)  # ...or refuses past the limit
    assert (code == K.LZ4_OK and n == len(data) <= 64) or code == K.LZ4_LIMIT


@pytest.mark.parametrize("seed", range(8))
def test_lz4_block_kernel_matches_naive(seed):
    rng = np.random.default_rng(seed)
    unit = rng.integers(0, 256, int(rng.integers(1, 40)), dtype=np.uint8).tobytes()
    data = b"".join(unit[: int(rng.integers(0, len(unit) + 1))] + bytes(rng.integers(0, 256, int(rng.integers(0, 20)),
                                                                                      dtype=np.uint8))
                    for _ in range(int(rng.integers(0, 3000))))
    block = lz4.block.compress(data, store_size=False)
    src = np.zeros(len(block) + K.LZ4_SLACK, np.uint8)
    src[:len(block)] = np.frombuffer(block, np.uint8)
    dst = np.zeros(len(data) + K.LZ4_SLACK, np.uint8)
    n = K.lz4_block_decode(src, 0, len(block), dst, 0, len(data), 0)
    assert n == len(data) and dst[:n].tobytes() == data == naive_lz4_block(block)
    if data:
        assert K.lz4_block_decode(src, 0, len(block), dst, 0, len(data) - 1, 0) == -2  # output bound
        assert K.lz4_block_decode(src, 0, len(block) - 1, dst, 0, len(data), 0) in (-1, len(data) - 1)


def test_lz4_block_kernel_on_mutated_blocks():
    """Corrupt blocks: the kernel's fast path (short sequences far from both ends) and its checked
    path must agree with the specification's decoder, which is the oracle: where that one finds
    the block invalid the kernel returns -1, where the output would pass the bound -2, and
    otherwise the same bytes."""
    rng = np.random.default_rng(7)
    events = np.zeros(600, np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "u1"), ("_", "V3")]))
    events["t"] = np.cumsum(rng.integers(0, 40, len(events)))
    events["x"], events["y"], events["p"] = rng.integers(0, 346, 600), rng.integers(0, 260, 600), rng.integers(0, 2, 600)
    block = lz4.block.compress(events.tobytes(), store_size=False)   # DV-like: short sequences
    outcomes = {"ok": 0, -1: 0, -2: 0}
    for k in range(1500):
        bad = bytearray(block)
        for _ in range(int(rng.integers(1, 4))):
            bad[int(rng.integers(0, len(bad)))] = int(rng.integers(0, 256))
        cut = len(bad) if k % 5 else int(rng.integers(1, len(bad)))
        bad = bytes(bad[:cut])
        cap = len(events.tobytes()) + int(rng.integers(-64, 64))
        src = np.zeros(len(bad) + K.LZ4_SLACK, np.uint8)
        src[:len(bad)] = np.frombuffer(bad, np.uint8)
        dst = np.zeros(max(cap, 0) + K.LZ4_SLACK, np.uint8)
        n = K.lz4_block_decode(src, 0, len(bad), dst, 0, cap, 0)
        try:
            want = naive_lz4_block(bad, strict=True)
        except ValueError:
            want = None
        if n >= 0:
            assert want is not None and dst[:n].tobytes() == want, k
            outcomes["ok"] += 1
        elif n == -2:
            assert want is None or len(want) > cap, k
            outcomes[-2] += 1
        else:
            assert n == -1 and want is None, k
            outcomes[-1] += 1
    assert min(outcomes.values()) > 20, outcomes  # every outcome exercised


@pytest.mark.parametrize("n", [0, 1, 3, 4, 15, 16, 17, 31, 64, 1000])
def test_xxh32_matches_naive(n):
    data = np.random.default_rng(n).integers(0, 256, n + 5, dtype=np.uint8)
    for seed in (0, 1, 2**32 - 1):
        assert K.xxh32(data, 5, n, seed) == naive_xxh32(data[5:].tobytes(), seed)


def test_corrupt_lz4_frames_are_errors(shared, tmp_path):
    """Checks liblz4 makes, as RecordingErrors at the packet body: header checksum, block
    checksum, content size, bytes after the frame, a frame cut short."""
    data = shared("recordings/tonic-testdata/sample.aedat4").read_bytes()
    head, pkts = packets(data)
    raw = lz4.frame.decompress(pkts[0][2])

    def err_for(body, name):
        p = tmp_path / name
        p.write_bytes(head + struct.pack("<ii", 0, len(body)) + body)
        e = _err(p)
        assert e.offset == len(head) + 8
        return str(e)

    good = lz4.frame.compress(raw, block_checksum=True, content_checksum=True)
    bad = bytearray(good)
    bad[6] ^= 1  # a header byte: header checksum
    assert "header checksum" in err_for(bytes(bad), "hc.aedat4")
    bad = bytearray(good)
    bad[20] ^= 1  # a compressed byte: block checksum
    assert "block checksum" in err_for(bytes(bad), "bc.aedat4")
    sized = bytearray(lz4.frame.compress(raw, store_size=True))
    struct.pack_into("<Q", sized, 6, len(raw) + 1)
    sized[14] = (K.xxh32(np.frombuffer(bytes(sized[4:14]), np.uint8), 0, 10, 0) >> 8) & 0xFF
    assert "content size" in err_for(bytes(sized), "cs.aedat4")
    assert "4 bytes after the packet's LZ4 frame" in err_for(good + b"abcd", "trail.aedat4")
    assert "truncated LZ4 frame" in err_for(good[:-6], "cut.aedat4")


def test_large_packets_grow_the_buffers(shared, tmp_path):
    """Packets larger than the read block and the scratch buffer (1.6 MB compressed, 3.2 MB of
    events): both grow, and the events still match the references."""
    ev, info = read_recording(shared("recordings/aermanager-testdata/data_sample.aedat4"))
    out = tmp_path / "big_packets.aedat4"
    with open_writer(out, info.sensor_size, format="aedat4") as w:
        w.packet_events = 200_000
        w.write(ev)
    assert max(len(b) for _, _, b in packets(out.read_bytes())[1]) > A4.READ_BYTES
    back, _ = read_recording(out, chunk_events=70_000)
    assert np.array_equal(back, ev) and same(back, ref_dv(out))


@pytest.mark.parametrize("rel,n_packets", [("recordings/tonic-testdata/sample.aedat4", 6),
                                           ("recordings/faery-testdata/davis346.aedat4", 12)])
def test_fuzz_aedat4(shared, tmp_path, rel, n_packets):
    data = shared(rel).read_bytes()
    _, pkts = packets(data)
    stop = pkts[n_packets][0]  # whole packets only: an unmutated head is a valid file
    small = tmp_path / "head.aedat4"
    small.write_bytes(data[:stop])
    assert len(read_recording(small)[0]) > 0
    counts = fuzz_reader(small, tmp_path, format=None, n_mutants=1000, head_bytes=None)
    assert counts["ok"] + counts["error"] == 1000 and counts["ok"] > 20 and counts["error"] > 100


def _outcome(fn):
    try:
        return fn().tobytes()
    except RecordingError as e:
        return (str(e), e.offset)


def test_mapped_read_all_equals_streaming(shared, tmp_path):
    """``read_all`` walks a memory map of the whole file; iterating reads 1 MiB blocks. Both must
    give the same events, and on corrupt files the same error at the same byte: checked on the
    real files with output chunks small enough to fill many times, and on 300 mutants."""
    for rel in sorted(REAL):
        path = shared(rel)
        for chunk in (1_000, 1 << 20):
            with A4.Aedat4Reader(path, chunk_events=chunk) as rec:
                mapped = rec.read_all()
            with A4.Aedat4Reader(path, chunk_events=chunk) as rec:
                streamed = np.concatenate(list(rec))
            assert mapped.tobytes() == streamed.tobytes()
    data = shared("recordings/tonic-testdata/sample.aedat4").read_bytes()
    _, pkts = packets(data)
    head = data[:pkts[6][0]]
    rng = np.random.default_rng(3)
    target = tmp_path / "m.aedat4"
    errors = 0
    for _ in range(300):
        target.write_bytes(mutate(head, rng))
        try:
            rec = A4.Aedat4Reader(target, chunk_events=5_000)
        except RecordingError:
            continue
        with rec:
            mapped = _outcome(rec.read_all)
        with A4.Aedat4Reader(target, chunk_events=5_000) as rec:
            streamed = _outcome(lambda: np.concatenate(list(rec) or [np.zeros(0, EVENT_DTYPE)]))
        assert mapped == streamed
        errors += isinstance(mapped, tuple)
    assert errors > 30


def test_memory_is_bounded_by_chunk_and_block(tmp_path, shared):
    import tracemalloc

    ev, info = read_recording(shared("recordings/aermanager-testdata/data_sample.aedat4"))
    big = tmp_path / "big.aedat4"
    with open_writer(big, info.sensor_size) as w:
        for k in range(4):  # 1.3 M events, ~12 MB uncompressed events
            part = ev.copy()
            part["t"] += k * 2_000_000
            w.write(part)
    tracemalloc.start()
    n = 0
    with open_recording(big, chunk_events=10_000) as rec:
        for c in rec:
            n += len(c)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 4 * len(ev) and peak < 4 << 20  # 1 MiB read block (x2 while refilling) + one packet + chunks
