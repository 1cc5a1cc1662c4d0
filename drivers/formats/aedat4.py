"""AEDAT 4.0 (iniVation DV): reader and LZ4 writer.

Layout (little-endian)::

    "#!AER-DAT4.0\\r\\n"                          14 bytes
    u32 size + IOHeader flatbuffer ("IOHE")      compression (i32 enum), dataTablePosition (i64),
                                                 infoNode (string: XML describing the streams)
    packets, until dataTablePosition (or EOF when it is -1):
        i32 stream_id, i32 size, `size` bytes = compress(size-prefixed flatbuffer)
    [FileDataTable ("FTAB"), compressed, at dataTablePosition: an index we do not need]

Compression: 0 none, 1 LZ4, 2 LZ4_HIGH (LZ4 frames), 3 ZSTD, 4 ZSTD_HIGH (zstd frames). LZ4
frames are decoded by our own numba kernel, inside the one call that walks a whole read block of
packets (see ``aedat_kernels.aedat4_walk``); ZSTD packets by ``zstandard``.
Event packets carry the identifier ``EVTS``: table EventPacket { elements: [Event] } with
``struct Event { t: int64 (µs, absolute); x: int16; y: int16; on: bool }`` (16 bytes, 3 of
padding). Other streams (frames FRME, IMU IMUS, triggers TRIG...) are skipped without being
decompressed, their packets counted in ``info.extra["skipped_packets"]``.

Stream choice: the event stream with the lowest id (as tonic/aedat do), or ``stream=`` (id or
``originalOutputName``). Sensor size: ``sizeX``/``sizeY`` of that stream's XML ``info`` node (or
``sensor_size=``). Policy: timestamps that go backwards in the chosen stream raise RecordingError
(``strict_time=False`` keeps them); decompressed packets are capped at ``MAX_PACKET_BYTES``.
"""

from __future__ import annotations

import io
import os
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import lz4.frame  # the writer's compressor
import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from . import aedat_kernels as K
from .mapping import mapped_file

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSIONS = {0: "NONE", 1: "LZ4", 2: "LZ4_HIGH", 3: "ZSTD", 4: "ZSTD_HIGH"}
MAX_HEADER_BYTES = 16 << 20
MAX_PACKET_BYTES = 1 << 28
EVENT_BYTES = 16
READ_BYTES = 1 << 20      # file block read at a time (grown only for a larger packet)
SCRATCH_BYTES = 1 << 18   # decompressed-packet buffer (grown on demand up to MAX_PACKET_BYTES)
INT64_MIN = -(1 << 63)
EVENT4_DTYPE = np.dtype({"names": ["t", "x", "y", "on"], "formats": ["<i8", "<i2", "<i2", "u1"],
                         "offsets": [0, 8, 10, 12], "itemsize": EVENT_BYTES})
"""The on-disk ``struct Event`` of DV's flatbuffer schema."""


class _Flat:
    """Bounds-checked reads in one flatbuffer; every failure is a RecordingError at a file offset."""

    def __init__(self, buf: bytes, path: Path, where: int, what: str):
        self.buf, self.path, self.where, self.what = buf, path, where, what

    def fail(self, pos: int, msg: str):
        raise RecordingError(self.path, f"corrupt {self.what} flatbuffer (byte {pos} of it): {msg}", self.where)

    def u(self, fmt: str, pos: int) -> int:
        n = struct.calcsize(fmt)
        if pos < 0 or pos + n > len(self.buf):
            self.fail(pos, f"read of {n} bytes past its end ({len(self.buf)} bytes)")
        return struct.unpack_from("<" + fmt, self.buf, pos)[0]

    def root(self, size_prefixed: bool = True) -> tuple[int, bytes]:
        """``(root table position, file identifier)``."""
        start = 0
        if size_prefixed:
            size = self.u("I", 0)
            if size + 4 > len(self.buf):
                self.fail(0, f"size prefix {size} exceeds the {len(self.buf) - 4} bytes present")
            start = 4
        table = start + self.u("I", start)
        ident = bytes(self.buf[start + 4:start + 8])
        return table, ident

    def field(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, None when absent."""
        vt = table - self.u("i", table)
        vt_size = self.u("H", vt)
        if vt_size < 4 or vt_size % 2:
            self.fail(vt, f"vtable size {vt_size}")
        slot = 4 + 2 * index
        if slot + 2 > vt_size:
            return None
        off = self.u("H", vt + slot)
        return table + off if off else None

    def vector(self, pos: int, item: int) -> tuple[int, int]:
        """``(data position, length)`` of the vector referenced at ``pos``."""
        vec = pos + self.u("I", pos)
        n = self.u("I", vec)
        if vec + 4 + n * item > len(self.buf):
            self.fail(vec, f"vector of {n} x {item} bytes runs past the end")
        return vec + 4, n

    def string(self, pos: int) -> str:
        data, n = self.vector(pos, 1)
        return bytes(self.buf[data:data + n]).decode("utf-8", "replace")


@dataclass
class StreamInfo:
    """One output stream declared in the header's XML."""

    id: int
    type: str            # typeIdentifier: EVTS, FRME, IMUS, TRIG, ...
    name: str            # originalOutputName
    size: tuple[int, int] | None
    source: str | None
    ts_offset_us: int | None


def parse_streams(xml_text: str, path: Path, offset: int) -> dict[int, StreamInfo]:
    """The streams of the infoNode XML (``<node name="outInfo">`` children)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise RecordingError(path, f"infoNode is not valid XML ({e})", offset) from None
    out: dict[int, StreamInfo] = {}
    for outinfo in root.iter("node"):
        if outinfo.get("name") != "outInfo":
            continue
        for node in outinfo.findall("node"):
            try:
                sid = int(node.get("name", ""))
            except ValueError:
                raise RecordingError(path, f"infoNode stream name {node.get('name')!r} is not an integer id", offset) from None
            attrs = {a.get("key"): (a.text or "") for a in node.findall("attr")}
            info = {a.get("key"): (a.text or "") for n in node.findall("node") if n.get("name") == "info"
                    for a in n.findall("attr")}
            try:
                size = (int(info["sizeX"]), int(info["sizeY"])) if "sizeX" in info and "sizeY" in info else None
                ts_off = int(info["tsOffset"]) if "tsOffset" in info else None
            except ValueError:
                raise RecordingError(path, f"stream {sid}: sizeX/sizeY/tsOffset are not integers", offset) from None
            out[sid] = StreamInfo(sid, attrs.get("typeIdentifier", ""), attrs.get("originalOutputName", ""),
                                  size, info.get("source"), ts_off)
    return out


LZ4_REASONS = {K.LZ4_BAD_MAGIC: "not an LZ4 frame (bad magic number)",
               K.LZ4_BAD_HEADER: "bad LZ4 frame header (version, reserved bits or block size)",
               K.LZ4_BAD_HC: "LZ4 frame header checksum mismatch",
               K.LZ4_BAD_BLOCK_SIZE: "LZ4 block larger than the frame's block maximum",
               K.LZ4_CORRUPT: "corrupt LZ4 block data",
               K.LZ4_BAD_BLOCK_SUM: "LZ4 block checksum mismatch",
               K.LZ4_BAD_CONTENT_SIZE: "decompressed size differs from the frame's content size",
               K.LZ4_BAD_CONTENT_SUM: "LZ4 content checksum mismatch",
               K.LZ4_TRUNCATED: "packet is a truncated LZ4 frame"}


def _zstd_decompress(data, path: Path, where: int) -> bytes:
    """One ZSTD packet body, refusing output beyond MAX_PACKET_BYTES (ZSTD files are rare: Python)."""
    import zstandard  # only for ZSTD files

    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=False) as r:
            out = r.read(MAX_PACKET_BYTES + 1)
    except Exception as e:  # noqa: BLE001 - zstandard raises its own ZstdError (and others)
        raise RecordingError(path, f"packet does not decompress as ZSTD: {e}", where) from None
    if len(out) > MAX_PACKET_BYTES:
        raise RecordingError(path, "packet exceeds the packet size limit", where)
    return out


class Aedat4Reader(Reader):
    """Stream the events of one AEDAT 4 event stream, packet by packet (bounded by one packet).

    Options: ``stream=`` (id or output name), ``sensor_size=(W, H[, C])``, ``strict_time=True``.
    """

    format_name = "aedat4"

    def __init__(self, path, chunk_events: int = 1 << 20, stream: int | str | None = None,
                 sensor_size=None, strict_time: bool = True):
        self._opt_stream, self._opt_size = stream, sensor_size
        self.strict_time = bool(strict_time)
        super().__init__(path, chunk_events)

    def _open(self) -> RecordingInfo:
        path = self._path_str  # os-level calls on the string path: pathlib and io.open's buffered
        try:                   # files are a visible share of opening a small recording
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise   # Reader words it as every format does: "no such file"
        except OSError as e:
            raise RecordingError(path, f"cannot open: {e.strerror or e}") from None
        try:
            file_size = os.fstat(fd).st_size
            head = os.read(fd, 18)
            if head[:14] != MAGIC:
                raise RecordingError(path, f"expected AEDAT 4 magic {MAGIC!r}", 0)
            if len(head) < 18:
                raise RecordingError(path, "truncated: expected a u32 IOHeader size", 14)
            (hsize,) = struct.unpack_from("<I", head, 14)
            if hsize > MAX_HEADER_BYTES or 18 + hsize > file_size:
                raise RecordingError(path, f"IOHeader size {hsize} exceeds the file ({file_size} bytes)", 14)
            hbuf = os.read(fd, hsize)
            while len(hbuf) < hsize:  # (a regular file returns it all at once; a pipe may not)
                more = os.read(fd, hsize - len(hbuf))
                if not more:
                    raise RecordingError(path, f"truncated IOHeader: {len(hbuf)} of {hsize} bytes", 18 + len(hbuf))
                hbuf += more
        finally:
            os.close(fd)
        fb = _Flat(hbuf, path, 18, "IOHeader")
        table, ident = fb.root(size_prefixed=False)
        if ident != b"IOHE":
            raise RecordingError(path, f"expected IOHeader identifier b'IOHE', got {ident!r}", 22)
        pc, pd, px = fb.field(table, 0), fb.field(table, 1), fb.field(table, 2)
        compression = fb.u("i", pc) if pc is not None else 0
        table_pos = fb.u("q", pd) if pd is not None else -1
        xml_text = fb.string(px) if px is not None else ""
        if compression not in COMPRESSIONS:
            raise RecordingError(path, f"unknown compression type {compression} (expected 0..4)", 18)
        self._data_start = 18 + hsize
        if table_pos >= 0 and table_pos < self._data_start:
            raise RecordingError(path, f"dataTablePosition {table_pos} lies inside the header", 18)
        self._data_end = file_size if table_pos < 0 else min(table_pos, file_size)
        self._compression = compression
        self._streams = parse_streams(xml_text, path, 18)
        sel = self._select()
        size = self._opt_size if self._opt_size is not None else sel.size
        if size is None:
            raise RecordingError(path, f"event stream {sel.id} has no sizeX/sizeY: pass sensor_size=", 18)
        extra = {"version": "4.0", "compression": COMPRESSIONS[compression], "stream": sel.id,
                 "stream_name": sel.name, "camera": sel.source, "ts_offset_us": sel.ts_offset_us,
                 "streams": {s.id: s.type for s in self._streams.values()}, "data_table_position": table_pos}
        self._stream = sel
        return RecordingInfo(path, "aedat4", SensorSize(*[int(v) for v in size]), extra)

    def _select(self) -> StreamInfo:
        evs = sorted((s for s in self._streams.values() if s.type == "EVTS"), key=lambda s: s.id)
        want = self._opt_stream
        if want is None:
            if not evs:
                raise RecordingError(self.path, f"no event stream (typeIdentifier EVTS) among "
                                                f"{ {s.id: s.type for s in self._streams.values()} }", 18)
            return evs[0]
        for s in evs:
            if s.id == want or s.name == want:
                return s
        raise RecordingError(self.path, f"no event stream {want!r}; event streams: "
                                        f"{[(s.id, s.name) for s in evs]}", 18)

    def _chunks(self) -> Iterator[np.ndarray]:
        """Read the data in blocks of READ_BYTES; one kernel call walks every packet of a block.

        The kernel decompresses (none / LZ4) and converts in one pass, straight into the output
        chunk; it comes back here only to refill the block, hand out a full chunk, grow the
        scratch buffer or have a ZSTD packet decompressed.
        """
        ids, skipped, state, scratch, args = self._walk_setup()
        buf = np.empty(READ_BYTES + K.LZ4_SLACK, np.uint8)
        out = np.empty(self.chunk_events, EVENT_DTYPE)
        out_bytes = out.view(np.uint8)
        base, pos, end, k = self._data_start, 0, 0, 0
        try:
            with open(self._path_str, "rb", buffering=0) as f:
                f.seek(base)
                while True:
                    pos, k, st = K.aedat4_walk(buf, pos, end, self._data_end - base, base, *args, scratch, state, out_bytes, k)
                    if st == K.ST4_FULL:
                        self._publish(ids, skipped, state)
                        yield out
                        out, k = np.empty(self.chunk_events, EVENT_DTYPE), 0
                        out_bytes = out.view(np.uint8)
                    elif st == K.ST4_INPUT:
                        buf, base, pos, end = self._refill(f, buf, base, pos, end, state)
                    elif st == K.ST4_DONE:
                        break
                    elif st == K.ST4_SCRATCH:
                        scratch = np.empty(min(max(int(state[K.P4_NEED]), 2 * (len(scratch) - K.LZ4_SLACK)),
                                               MAX_PACKET_BYTES) + K.LZ4_SLACK, np.uint8)
                    elif st == K.ST4_EXTERNAL:
                        size = int.from_bytes(buf[pos + 4:pos + 8].tobytes(), "little")
                        raw = _zstd_decompress(buf[pos + 8:pos + 8 + size], self.path, base + pos + 8)
                        if len(raw) + K.LZ4_SLACK > len(scratch):
                            scratch = np.empty(len(raw) + K.LZ4_SLACK, np.uint8)
                        scratch[:len(raw)] = np.frombuffer(raw, np.uint8)
                        if K.aedat4_begin(scratch, len(raw), state):
                            self._raise(state, scratch)
                        pos += 8 + size
                    else:
                        self._raise(state, scratch)
        finally:
            self._publish(ids, skipped, state)
        yield out[:k]

    def _walk_setup(self):
        """What one walk over the data needs: stream ids, skip counters, state, scratch, and the
        walker's fixed arguments."""
        ss = self.info.sensor_size
        ids = np.array(sorted(self._streams), np.int64)
        skipped = np.zeros(len(ids), np.int64)
        state = np.zeros(K.P4_STATE_LEN, np.int64)
        state[K.P4_LAST_T] = INT64_MIN
        scratch = np.empty(SCRATCH_BYTES + K.LZ4_SLACK, np.uint8)
        args = (self._stream.id, ids, skipped, self._compression, MAX_PACKET_BYTES, ss.width, ss.height,
                self.strict_time)
        return ids, skipped, state, scratch, args

    def read_all(self) -> np.ndarray:
        """The whole file goes to memory anyway: walk a memory map of it in one kernel call (no
        block reads, no copy of the compressed bytes; ~8 % faster on DV recordings). ZSTD files,
        files that cannot be mapped or that shrank since opening take the streaming path. (A file
        truncated by another process while it is mapped raises SIGBUS, as with ``np.memmap``.)"""
        if self._compression > 2:
            return super().read_all()
        with mapped_file(self._path_str) as mm:
            if mm is None or len(mm) < self._data_end:
                return super().read_all()
            return self._walk_mapped(np.frombuffer(mm, np.uint8))

    def _walk_mapped(self, buf: np.ndarray) -> np.ndarray:
        ids, skipped, state, scratch, args = self._walk_setup()
        parts, k, pos, end = [], 0, self._data_start, self._data_end
        out = np.empty(self.chunk_events, EVENT_DTYPE)
        try:
            while True:
                # the whole data is in ``buf``, so the walker never asks for input; its reads stay
                # inside the packets it checked (no LZ4_SLACK needed past the end of the map)
                pos, k, st = K.aedat4_walk(buf, pos, end, end, 0, *args, scratch, state, out.view(np.uint8), k)
                if st == K.ST4_DONE:
                    break
                if st == K.ST4_FULL:
                    parts.append(out)
                    out, k = np.empty(self.chunk_events, EVENT_DTYPE), 0
                elif st == K.ST4_SCRATCH:
                    scratch = np.empty(min(max(int(state[K.P4_NEED]), 2 * (len(scratch) - K.LZ4_SLACK)),
                                           MAX_PACKET_BYTES) + K.LZ4_SLACK, np.uint8)
                elif st == K.ST4_ERROR:
                    self._raise(state, scratch)
                else:  # ST4_INPUT / ST4_EXTERNAL cannot happen here; never guess
                    raise AssertionError(f"AEDAT 4 walker asked for {st} over a whole mapped file")
        finally:
            self._publish(ids, skipped, state)
        parts.append(out[:k])
        if len(parts) == 1:
            return parts[0]
        return np.concatenate([p.view(np.uint8) for p in parts]).view(EVENT_DTYPE)

    def _refill(self, f, buf, base, pos, end, state):
        """Keep ``buf[pos:end]`` (an incomplete packet), read on up to the block size (or the
        packet's size, when larger) without passing the data end; skip unread foreign bytes."""
        skip = int(state[K.P4_SKIP])
        if skip:  # the rest of a foreign packet lies past the block: seek over it
            f.seek(skip, 1)
            base, pos, end = base + end + skip, 0, 0
            state[K.P4_SKIP] = 0
        keep = end - pos
        need = 8 + int.from_bytes(buf[pos + 4:pos + 8].tobytes(), "little", signed=True) if keep >= 8 else 8
        cap = len(buf) - K.LZ4_SLACK
        if need > cap:  # a packet larger than the block (its size was checked against the file)
            cap = need
            new = np.empty(cap + K.LZ4_SLACK, np.uint8)
            new[:keep] = buf[pos:end]
            buf = new
        elif keep:
            buf[:keep] = buf[pos:end]
        base, end = base + pos, keep
        want = min(cap, self._data_end - base) - end
        got = f.readinto(memoryview(buf)[end:end + want]) or 0
        end += got
        if end < min(need, self._data_end - base):
            raise RecordingError(self.path, "file shrank while reading", base + end)
        return buf, base, 0, end

    def _publish(self, ids, skipped, state) -> None:
        out: dict[str, int] = {}
        for sid, n in zip(ids.tolist(), skipped.tolist()):
            if n:
                typ = self._streams[sid].type or str(sid)
                out[typ] = out.get(typ, 0) + n
        self.info.extra["skipped_packets"] = out
        self.info.extra["event_packets"] = int(state[K.P4_EVENT_PACKETS])

    def _raise(self, state, scratch) -> None:
        err, off = int(state[K.P4_ERR]), int(state[K.P4_ERR_OFF])
        a, b = int(state[K.P4_ERR_A]), int(state[K.P4_ERR_B])
        ss = self.info.sensor_size
        if err == K.ERR_PKT_HEADER:
            msg = "truncated: expected an 8-byte packet header (stream id, size)"
        elif err == K.ERR_PKT_SIZE:
            msg = f"packet size {a} does not fit in the remaining {b} bytes (truncated or corrupt)"
        elif err == K.ERR_PKT_STREAM:
            msg = f"packet of stream id {a}, which the header does not declare (streams {sorted(self._streams)})"
        elif err == K.ERR_PKT_LIMIT:
            msg = f"packet exceeds the packet size limit ({MAX_PACKET_BYTES} bytes decompressed)"
        elif err == K.ERR_LZ4:
            why = f"{b} bytes after the packet's LZ4 frame" if a == K.LZ4_TRAILING else LZ4_REASONS[a]
            msg = f"packet does not decompress as {COMPRESSIONS[self._compression]}: {why}"
        elif err in (K.ERR_FB_SIZE, K.ERR_FB_IDENT, K.ERR_FB_BOUNDS, K.ERR_FB_VECTOR):
            what = {K.ERR_FB_SIZE: "size prefix larger than the packet",
                    K.ERR_FB_IDENT: f"identifier {bytes(scratch[8:12])!r}, expected b'EVTS'",
                    K.ERR_FB_BOUNDS: "an offset points outside the packet",
                    K.ERR_FB_VECTOR: "the Event vector runs past the end of the packet"}[err]
            msg = f"corrupt event packet flatbuffer (byte {a} of the {b}-byte decompressed packet): {what}"
        else:
            msg = {K.ERR_COORD: f"event {a} of the packet lies outside the {ss.width}x{ss.height} sensor",
                   K.ERR_POLARITY: f"event {a} of the packet has a polarity byte other than 0/1",
                   K.ERR_BACKWARDS: f"event {a} of the packet goes back in time (expected non-decreasing "
                                    "timestamps; strict_time=False keeps it)"}[err] + " (offset: the packet body)"
        raise RecordingError(self.path, msg, off)


# ----------------------------------------------------------------------------------- writer
def build_table(fields: list[tuple[bytes, int]], ident: bytes, tail: bytes = b"",
                tail_refs: tuple[tuple[int, int], ...] = ()) -> bytes:
    """A size-prefixed flatbuffer whose root table has inline ``fields`` (bytes, alignment).

    Layout: [u32 size][u32 root][ident][vtable][pad][table: soffset + fields][tail]; alignment
    is counted from the size prefix, as flatbuffers' FinishSizePrefixed does. ``tail_refs``
    lists (field index, offset within ``tail``) for uoffset fields pointing into ``tail``.
    """
    vt_pos = 12
    vt_size = 4 + 2 * len(fields)
    table_pos = vt_pos + vt_size + (-(vt_pos + vt_size)) % 8
    body = bytearray(4)  # soffset to the vtable, filled below
    offsets = []
    for data, align in fields:
        body += b"\0" * ((-(table_pos + len(body))) % align)
        offsets.append(len(body))
        body += data
    body += b"\0" * ((-len(body)) % 8)
    struct.pack_into("<i", body, 0, table_pos - vt_pos)
    tail_pos = table_pos + len(body)
    for idx, target in tail_refs:
        at = offsets[idx]
        struct.pack_into("<I", body, at, tail_pos + target - (table_pos + at))
    vt = struct.pack("<HH", vt_size, len(body)) + b"".join(struct.pack("<H", o) for o in offsets)
    out = bytearray(struct.pack("<I", table_pos - 4)) + ident + vt
    out += b"\0" * (table_pos - 4 - len(out))
    out += body + tail
    return struct.pack("<I", len(out)) + bytes(out)


def encode_event_packet(events: np.ndarray) -> bytes:
    """A size-prefixed ``EVTS`` flatbuffer holding ``events`` (EventPacket.elements)."""
    n = len(events)
    vec = np.zeros(8 + EVENT_BYTES * n, np.uint8)  # 4 pad + u32 length + 8-aligned structs
    vec[4:8] = np.frombuffer(struct.pack("<I", n), np.uint8)
    K.aedat4_encode(events["t"], events["x"], events["y"], events["p"], vec, 8)
    return build_table([(b"\0\0\0\0", 4)], b"EVTS", tail=vec.tobytes(), tail_refs=((0, 4),))


def info_xml(sensor_size: SensorSize, source: str, ts_offset_us: int) -> str:
    """The infoNode XML declaring one event stream (id 0) as DV writes it."""
    w, h = sensor_size.width, sensor_size.height
    return (
        '<dv version="2.0">\n    <node name="outInfo" path="/mainloop/Recorder/outInfo/">\n'
        '        <node name="0" path="/mainloop/Recorder/outInfo/0/">\n'
        '            <attr key="compression" type="string">LZ4</attr>\n'
        '            <attr key="originalModuleName" type="string">spikeflow</attr>\n'
        '            <attr key="originalOutputName" type="string">events</attr>\n'
        '            <attr key="typeDescription" type="string">Array of events (polarity ON/OFF).</attr>\n'
        '            <attr key="typeIdentifier" type="string">EVTS</attr>\n'
        '            <node name="info" path="/mainloop/Recorder/outInfo/0/info/">\n'
        f'                <attr key="sizeX" type="int">{w}</attr>\n'
        f'                <attr key="sizeY" type="int">{h}</attr>\n'
        f'                <attr key="source" type="string">{escape(source)}</attr>\n'
        f'                <attr key="tsOffset" type="long">{int(ts_offset_us)}</attr>\n'
        '            </node>\n        </node>\n    </node>\n</dv>\n')


class Aedat4Writer(Writer):
    """Write events as an AEDAT 4 file: one EVTS stream, LZ4-compressed packets.

    ``extra`` may give ``source`` (or ``camera``: the camera name) and ``ts_offset_us``. The data table is not
    written (``dataTablePosition = -1``), which DV readers accept by scanning packets.
    """

    format_name = "aedat4"

    def __init__(self, path, sensor_size, extra=None, packet_events: int = 8192):
        super().__init__(path, sensor_size, extra)
        self.packet_events = int(packet_events)
        ss = self.sensor_size
        if not (0 < ss.width <= 32767 and 0 < ss.height <= 32767):
            raise RecordingError(self.path, f"AEDAT 4 coordinates are int16: sensor {ss.width}x{ss.height} too large")
        source = self.extra.get("source") or self.extra.get("camera") or "spikeflow"
        ts_off = self.extra.get("ts_offset_us")
        xml = info_xml(ss, str(source), ts_off if isinstance(ts_off, int) else 0)
        xb = xml.encode()
        string = struct.pack("<I", len(xb)) + xb + b"\0"
        hdr = build_table([(struct.pack("<i", 1), 4), (struct.pack("<q", -1), 8), (b"\0\0\0\0", 4)],
                          b"IOHE", tail=string, tail_refs=((2, 0),))
        self._f = open(self.path, "wb")
        self._f.write(MAGIC + hdr)
        self._last_t = INT64_MIN
        self.events_written = 0

    def _write(self, events: np.ndarray) -> None:
        ss = self.sensor_size
        t = events["t"]
        bad = (events["x"] < 0) | (events["x"] >= ss.width) | (events["y"] < 0) | (events["y"] >= ss.height)
        if bad.any():
            i = int(np.argmax(bad))
            raise RecordingError(self.path, f"event {self.events_written + i} lies outside the "
                                            f"{ss.width}x{ss.height} sensor")
        if int(t[0]) < self._last_t or (len(t) > 1 and bool(np.any(t[1:] < t[:-1]))):
            raise RecordingError(self.path, "AEDAT 4 needs non-decreasing timestamps")
        self._last_t = int(t[-1])
        for i in range(0, len(events), self.packet_events):
            body = lz4.frame.compress(encode_event_packet(events[i:i + self.packet_events]))
            self._f.write(struct.pack("<ii", 0, len(body)) + body)
        self.events_written += len(events)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()


def _sniff(head: bytes, path: Path) -> bool:
    return head.startswith(MAGIC)


FORMAT = register_format(Format(
    name="aedat4", description="iniVation DV AEDAT 4.0 (flatbuffer packets, LZ4/ZSTD)",
    extensions=(".aedat4",), sniff=_sniff, reader=Aedat4Reader, writer=Aedat4Writer, priority=50))
