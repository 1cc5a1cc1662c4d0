"""AEDAT 4.0 (iniVation DV): reader and LZ4 writer.

Layout (little-endian)::

    "#!AER-DAT4.0\\r\\n"                          14 bytes
    u32 size + IOHeader flatbuffer ("IOHE")      compression (i32 enum), dataTablePosition (i64),
                                                 infoNode (string: XML describing the streams)
    packets, until dataTablePosition (or EOF when it is -1):
        i32 stream_id, i32 size, `size` bytes = compress(size-prefixed flatbuffer)
    [FileDataTable ("FTAB"), compressed, at dataTablePosition: an index we do not need]

Compression: 0 none, 1 LZ4, 2 LZ4_HIGH (LZ4 frames), 3 ZSTD, 4 ZSTD_HIGH (zstd frames).
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
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from xml.sax.saxutils import escape

import lz4.frame
import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format
from . import aedat_kernels as K

MAGIC = b"#!AER-DAT4.0\r\n"
COMPRESSIONS = {0: "NONE", 1: "LZ4", 2: "LZ4_HIGH", 3: "ZSTD", 4: "ZSTD_HIGH"}
MAX_HEADER_BYTES = 16 << 20
MAX_PACKET_BYTES = 1 << 28
EVENT_BYTES = 16
READ_BYTES = 1 << 20
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


class _Decompressor:
    """Decompress packet bodies, refusing output beyond MAX_PACKET_BYTES.

    One LZ4 frame context is reused across packets (creating one per packet costs more than
    the decompression itself); it is replaced after any error.
    """

    def __init__(self, compression: int, path: Path):
        self.compression, self.path = compression, path
        self._lz4 = lz4.frame.LZ4FrameDecompressor() if compression in (1, 2) else None

    def __call__(self, data, where: int) -> bytes:
        try:
            if self.compression == 0:
                return bytes(data)
            if self._lz4 is not None:
                return self._lz4_frame(data, where)
            import zstandard  # only for ZSTD files

            with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=False) as r:
                out = r.read(MAX_PACKET_BYTES + 1)
            if len(out) > MAX_PACKET_BYTES:
                raise RecordingError(self.path, "packet exceeds the packet size limit", where)
            return out
        except RecordingError:
            self._reset()
            raise
        except Exception as e:  # lz4/zstd raise their own error types (RuntimeError, ZstdError)
            self._reset()
            raise RecordingError(self.path, f"packet does not decompress as "
                                            f"{COMPRESSIONS[self.compression]}: {e}", where) from None

    def _reset(self) -> None:
        if self._lz4 is not None:
            self._lz4 = lz4.frame.LZ4FrameDecompressor()

    def _lz4_frame(self, data: bytes, where: int) -> bytes:
        d = self._lz4
        step = max(1 << 16, 8 * len(data))  # grow the output gradually: max_length preallocates
        parts = [d.decompress(data, max_length=step)]
        total = len(parts[0])
        while not d.eof and not d.needs_input:
            if total >= MAX_PACKET_BYTES:
                raise RecordingError(self.path, "packet exceeds the packet size limit", where)
            parts.append(d.decompress(b"", max_length=min(step, MAX_PACKET_BYTES - total + 1)))
            total += len(parts[-1])
        if not d.eof:
            raise RecordingError(self.path, "packet is a truncated LZ4 frame", where)
        if d.unused_data:
            raise RecordingError(self.path, f"{len(d.unused_data)} bytes after the packet's LZ4 frame", where)
        return parts[0] if len(parts) == 1 else b"".join(parts)


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
        file_size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(18)
            if head[:14] != MAGIC:
                raise RecordingError(self.path, f"expected AEDAT 4 magic {MAGIC!r}", 0)
            if len(head) < 18:
                raise RecordingError(self.path, "truncated: expected a u32 IOHeader size", 14)
            (hsize,) = struct.unpack_from("<I", head, 14)
            if hsize > MAX_HEADER_BYTES or 18 + hsize > file_size:
                raise RecordingError(self.path, f"IOHeader size {hsize} exceeds the file ({file_size} bytes)", 14)
            hbuf = f.read(hsize)
        fb = _Flat(hbuf, self.path, 18, "IOHeader")
        table, ident = fb.root(size_prefixed=False)
        if ident != b"IOHE":
            raise RecordingError(self.path, f"expected IOHeader identifier b'IOHE', got {ident!r}", 22)
        pc, pd, px = fb.field(table, 0), fb.field(table, 1), fb.field(table, 2)
        compression = fb.u("i", pc) if pc is not None else 0
        table_pos = fb.u("q", pd) if pd is not None else -1
        xml_text = fb.string(px) if px is not None else ""
        if compression not in COMPRESSIONS:
            raise RecordingError(self.path, f"unknown compression type {compression} (expected 0..4)", 18)
        self._data_start = 18 + hsize
        if table_pos >= 0 and table_pos < self._data_start:
            raise RecordingError(self.path, f"dataTablePosition {table_pos} lies inside the header", 18)
        self._data_end = file_size if table_pos < 0 else min(table_pos, file_size)
        self._compression = compression
        self._streams = parse_streams(xml_text, self.path, 18)
        sel = self._select()
        size = self._opt_size if self._opt_size is not None else sel.size
        if size is None:
            raise RecordingError(self.path, f"event stream {sel.id} has no sizeX/sizeY: pass sensor_size=", 18)
        extra = {"version": "4.0", "compression": COMPRESSIONS[compression], "stream": sel.id,
                 "stream_name": sel.name, "camera": sel.source, "ts_offset_us": sel.ts_offset_us,
                 "streams": {s.id: s.type for s in self._streams.values()}, "data_table_position": table_pos}
        self._stream = sel
        return RecordingInfo(str(self.path), "aedat4", SensorSize(*[int(v) for v in size]), extra)

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
        ss = self.info.sensor_size
        skipped: dict[str, int] = {}
        self.info.extra["skipped_packets"] = skipped
        self.info.extra["event_packets"] = 0
        ev = np.empty(self.chunk_events, EVENT_DTYPE)
        cols = (ev["t"], ev["x"], ev["y"], ev["p"])
        k, last_t = 0, INT64_MIN
        decompress = _Decompressor(self._compression, self.path)
        with open(self.path, "rb") as f:
            for off, sid, body in self._packets(f):
                if sid != self._stream.id:
                    typ = self._streams[sid].type or str(sid)
                    skipped[typ] = skipped.get(typ, 0) + 1
                    continue
                rec = self._event_vector(decompress(body, off + 8), off + 8)
                self.info.extra["event_packets"] += 1
                n, i = len(rec), 0
                src = (rec["t"], rec["x"], rec["y"], rec["on"])
                while i < n:
                    j = min(n, i + self.chunk_events - k)
                    k2, err, bad, last_t = K.aedat4_decode(*src, i, j, ss.width, ss.height,
                                                           self.strict_time, last_t, *cols, k)
                    if err:
                        self._raise(err, bad, off + 8)
                    k, i = k2, j
                    if k == self.chunk_events:
                        yield ev
                        ev = np.empty(self.chunk_events, EVENT_DTYPE)
                        cols = (ev["t"], ev["x"], ev["y"], ev["p"])
                        k = 0
        yield ev[:k]

    def _packets(self, f) -> Iterator[tuple[int, int, memoryview | None]]:
        """``(file offset, stream id, body)`` per packet, read in blocks of READ_BYTES.

        Bodies of the selected stream are zero-copy views of the block; other streams' bodies
        are skipped (None) without being read when they lie past the block.
        """
        off = self._data_start
        f.seek(off)
        buf, bpos = b"", 0  # buf[0] is at file offset off - bpos
        while off < self._data_end:
            if len(buf) - bpos < 8:
                buf, bpos = buf[bpos:] + f.read(READ_BYTES), 0
            if len(buf) - bpos < 8:
                raise RecordingError(self.path, "truncated: expected an 8-byte packet header (stream id, size)", off)
            sid, size = struct.unpack_from("<ii", buf, bpos)
            if size <= 0 or off + 8 + size > self._data_end:
                raise RecordingError(self.path, f"packet size {size} does not fit in the remaining "
                                                f"{self._data_end - off - 8} bytes (truncated or corrupt)", off)
            if sid not in self._streams:
                raise RecordingError(self.path, f"packet of stream id {sid}, which the header does not "
                                                f"declare (streams {sorted(self._streams)})", off)
            bpos += 8
            have = len(buf) - bpos
            if sid != self._stream.id and have < size:
                f.seek(size - have, 1)  # skip a large foreign packet unread
                buf, bpos = b"", 0
                yield off, sid, None
            else:
                if have < size:
                    buf, bpos = buf[bpos:] + f.read(max(size - have, READ_BYTES)), 0
                    if len(buf) < size:
                        raise RecordingError(self.path, "file shrank while reading", off)
                yield off, sid, memoryview(buf)[bpos:bpos + size]
                bpos += size
            off += 8 + size

    def _event_vector(self, raw: bytes, off: int) -> np.ndarray:
        """The Event structs of an EVTS packet body (file offset ``off``) as a read-only view."""
        data, n, err, at = K.aedat4_event_vector(np.frombuffer(raw, np.uint8))
        if err:
            what = {K.ERR_FB_SIZE: "size prefix larger than the packet",
                    K.ERR_FB_IDENT: f"identifier {bytes(raw[8:12])!r}, expected b'EVTS'",
                    K.ERR_FB_BOUNDS: "an offset points outside the packet",
                    K.ERR_FB_VECTOR: "the Event vector runs past the end of the packet"}[err]
            raise RecordingError(self.path, f"corrupt event packet flatbuffer (byte {at} of the "
                                            f"{len(raw)}-byte decompressed packet): {what}", off)
        return np.frombuffer(raw, EVENT4_DTYPE, n, data)

    def _raise(self, err: int, index: int, off: int) -> None:
        ss = self.info.sensor_size
        msg = {K.ERR_COORD: f"event {index} of the packet lies outside the {ss.width}x{ss.height} sensor",
               K.ERR_POLARITY: f"event {index} of the packet has a polarity byte other than 0/1",
               K.ERR_BACKWARDS: f"event {index} of the packet goes back in time (expected non-decreasing "
                                "timestamps; strict_time=False keeps it)"}[err]
        raise RecordingError(self.path, msg + " (offset: the packet body)", off)


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
