"""spikeflow's native recording format ``.sfe``: compact, streaming, bit-exact.

Layout (all little-endian)::

    magic      8 bytes  b"\\x89SFE\\r\\n\\x1a\\n"  (PNG-style: catches text-mode and truncation damage)
    hdr_len    u32      length of the JSON header
    header     JSON     {"version": 1, "sensor_size": [W, H, C], "extra": {...}}
    blocks...  each:
        b"SFB1" | u32 n_events | u32 payload_len | u32 crc | i64 t_first
        payload = lz4.block( t deltas (i64, first = 0) | x (i2) | y (i2) | p (i2) ), columns
        crc = crc32 over (n_events, payload_len, t_first) packed "<IIq", continued over payload

Each block is independent, so memory is bounded by the block size. Any ``EVENT_DTYPE`` array
round-trips bit-exactly, including unsorted timestamps and negative values. Because blocks are
independent, a file can be continued: :meth:`NativeWriter.continue_file` keeps the blocks
before a given block boundary, cuts what follows (a block half written when its writer was
killed) and appends (the ``record`` node does so in a restarted worker).
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Iterator

import lz4.block
import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

from ..recording import Format, Reader, RecordingInfo, Writer, register_format

MAGIC = b"\x89SFE\r\n\x1a\n"
VERSION = 1
BLOCK = struct.Struct("<4sIIIq")
BLOCK_MAGIC = b"SFB1"
MAX_HEADER = 1 << 20
MAX_BLOCK_EVENTS = 1 << 22
DEFAULT_BLOCK_EVENTS = 1 << 16


def _block_crc(n: int, plen: int, t_first: int, payload: bytes) -> int:
    """CRC of the block header fields and payload: a flipped bit in t_first is caught too."""
    return zlib.crc32(payload, zlib.crc32(struct.pack("<IIq", n, plen, t_first)))


def _encode_block(ev: np.ndarray) -> tuple[bytes, int]:
    t = ev["t"]
    dt = np.empty(len(t), dtype="<i8")
    dt[0] = 0
    np.subtract(t[1:], t[:-1], out=dt[1:])
    raw = b"".join([dt.tobytes(), ev["x"].astype("<i2").tobytes(),
                    ev["y"].astype("<i2").tobytes(), ev["p"].astype("<i2").tobytes()])
    return lz4.block.compress(raw, store_size=False), int(t[0])


class NativeWriter(Writer):
    """Write ``.sfe``; ``write`` buffers up to one block, ``close`` flushes (atomic per block)."""

    format_name = "native"

    def __init__(self, path, sensor_size, extra=None, block_events: int = DEFAULT_BLOCK_EVENTS):
        super().__init__(path, sensor_size, extra)
        self.block_events = int(block_events)
        self._f = open(self.path, "wb")
        header = json.dumps({"version": VERSION, "sensor_size": list(self.sensor_size),
                             "extra": self.extra}).encode()
        self._f.write(MAGIC + struct.pack("<I", len(header)) + header)
        self._pending: list[np.ndarray] = []
        self._n_pending = 0
        self.events_written = 0

    def _write(self, events: np.ndarray) -> None:
        self._pending.append(events.copy())
        self._n_pending += len(events)
        while self._n_pending >= self.block_events:
            allev = np.concatenate(self._pending)
            self._write_block(allev[: self.block_events])
            rest = allev[self.block_events:]
            self._pending = [rest] if len(rest) else []
            self._n_pending = len(rest)

    def _write_block(self, ev: np.ndarray) -> None:
        payload, t_first = _encode_block(ev)
        crc = _block_crc(len(ev), len(payload), t_first, payload)
        self._f.write(BLOCK.pack(BLOCK_MAGIC, len(ev), len(payload), crc, t_first) + payload)
        self.events_written += len(ev)

    @classmethod
    def continue_file(cls, path, offset: int, block_events: int = DEFAULT_BLOCK_EVENTS) -> "NativeWriter":
        """Reopen ``path`` to append after byte ``offset``, which must end a block: the block
        headers from the start to ``offset`` are walked (sizes checked, and the CRC of the last
        block, the one a kill could have cut), everything after ``offset`` is cut off. Header,
        sensor size and metadata stay; ``events_written`` counts the events kept."""
        info = NativeReader(path).info
        path = Path(path)
        total = 0
        with open(path, "rb") as f:
            f.seek(0)
            (hlen,) = struct.unpack("<I", f.read(12)[8:12])
            off = 12 + hlen
            last = None
            while off < offset:
                f.seek(off)
                bh = f.read(BLOCK.size)
                if len(bh) < BLOCK.size:
                    raise RecordingError(path, f"truncated block header before byte {offset}", off)
                magic, n, plen, crc, t_first = BLOCK.unpack(bh)
                if magic != BLOCK_MAGIC or n == 0 or n > MAX_BLOCK_EVENTS or plen > 16 * n + 64:
                    raise RecordingError(path, f"no valid block here (continuing at byte {offset})", off)
                last = (off, n, plen, crc, t_first)
                total += n
                off += BLOCK.size + plen
            if off != offset:
                raise RecordingError(path, f"byte {offset} is not the end of a block (the block there ends at {off})",
                                     last[0] if last else off)
            if last is not None:
                b_off, n, plen, crc, t_first = last
                f.seek(b_off + BLOCK.size)
                payload = f.read(plen)
                if len(payload) < plen or _block_crc(n, plen, t_first, payload) != crc:
                    raise RecordingError(path, "block CRC mismatch (corrupt data)", b_off + BLOCK.size)
        self = cls.__new__(cls)
        Writer.__init__(self, path, info.sensor_size, info.extra)
        self.block_events = int(block_events)
        self._f = open(path, "r+b")
        self._f.truncate(offset)
        self._f.seek(offset)
        self._pending, self._n_pending = [], 0
        self.events_written = total
        return self

    def tell(self) -> int:
        """The file's length as written so far (after :meth:`flush`: the end of the last block)."""
        return self._f.tell()

    def flush(self) -> None:
        """Write buffered events as a (short) block and flush the OS buffer."""
        if self._n_pending:
            self._write_block(np.concatenate(self._pending))
            self._pending, self._n_pending = [], 0
        self._f.flush()

    def close(self) -> None:
        if self._f.closed:
            return
        self.flush()
        self._f.close()


class NativeReader(Reader):
    """Stream a ``.sfe`` file block by block; CRC and sizes checked, offsets in every error."""

    format_name = "native"

    def _open(self) -> RecordingInfo:
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:8] != MAGIC:
                raise RecordingError(self.path, f"not a spikeflow .sfe file: expected magic {MAGIC!r}", 0)
            (hlen,) = struct.unpack("<I", head[8:12])
            if hlen > MAX_HEADER or 12 + hlen > size:
                raise RecordingError(self.path, f"header length {hlen} exceeds file size {size}", 8)
            try:
                hdr = json.loads(f.read(hlen))
                ss = SensorSize(*[int(v) for v in hdr["sensor_size"]])
                version = int(hdr["version"])
                extra = dict(hdr.get("extra") or {})
            except (ValueError, KeyError, TypeError) as e:
                raise RecordingError(self.path, f"corrupt JSON header: {e}", 12) from None
        if version != VERSION:
            raise RecordingError(self.path, f"unsupported .sfe version {version} (expected {VERSION})", 12)
        self._data_start = 12 + hlen
        self._size = size
        return RecordingInfo(str(self.path), "native", ss, extra)

    def _chunks(self) -> Iterator[np.ndarray]:
        with open(self.path, "rb") as f:
            f.seek(self._data_start)
            off = self._data_start
            while off < self._size:
                bh = f.read(BLOCK.size)
                if len(bh) < BLOCK.size:
                    raise RecordingError(self.path, f"truncated block header ({len(bh)} of {BLOCK.size} bytes)", off)
                magic, n, plen, crc, t_first = BLOCK.unpack(bh)
                if magic != BLOCK_MAGIC:
                    raise RecordingError(self.path, f"expected block magic {BLOCK_MAGIC!r}, got {magic!r}", off)
                if n == 0 or n > MAX_BLOCK_EVENTS or plen > 16 * n + 64:
                    raise RecordingError(self.path, f"implausible block: {n} events in {plen} bytes", off)
                payload = f.read(plen)
                if len(payload) < plen:
                    raise RecordingError(self.path, f"truncated block payload ({len(payload)} of {plen} bytes)", off + BLOCK.size)
                if _block_crc(n, plen, t_first, payload) != crc:
                    raise RecordingError(self.path, "block CRC mismatch (corrupt data)", off + BLOCK.size)
                try:
                    raw = lz4.block.decompress(payload, uncompressed_size=14 * n)
                except lz4.block.LZ4BlockError as e:
                    raise RecordingError(self.path, f"block does not decompress: {e}", off + BLOCK.size) from None
                if len(raw) != 14 * n:
                    raise RecordingError(self.path, f"block decompresses to {len(raw)} bytes, expected {14 * n}", off + BLOCK.size)
                ev = np.empty(n, EVENT_DTYPE)
                dt = np.frombuffer(raw, "<i8", n, 0)
                ev["t"] = np.cumsum(dt) + t_first
                ev["x"] = np.frombuffer(raw, "<i2", n, 8 * n)
                ev["y"] = np.frombuffer(raw, "<i2", n, 10 * n)
                ev["p"] = np.frombuffer(raw, "<i2", n, 12 * n)
                for i in range(0, n, self.chunk_events):
                    yield ev[i:i + self.chunk_events]
                off += BLOCK.size + plen


def _sniff(head: bytes, path: Path) -> bool:
    return head.startswith(MAGIC)


FORMAT = register_format(Format(
    name="native", description="spikeflow native (.sfe): LZ4 columnar blocks, bit-exact",
    extensions=(".sfe",), sniff=_sniff, reader=NativeReader, writer=NativeWriter, priority=100))
