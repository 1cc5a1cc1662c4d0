"""Prophesee DAT ``.dat`` (CD events, and the older N-CARS "Event2d" type): streaming reader.

Layout: a '%' text header, then two bytes (event type, event size), then 8-byte little-endian
events: ``u32 t`` (µs) and ``u32 data``. Version 2 data: x bits 13..0, y 27..14, p 31..28;
version 1: x 8..0, y 16..9, p 20..17. Types: 0x0C CD, 0x00 Event2d (N-CARS, same layout).
t wraps every 2^32 µs (71.6 min): a drop of more than 2^31 counts a wrap (+2^32 µs); smaller
drops are backwards steps handled by ``time_policy``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikeflow.service.errors import RecordingError

from ..recording import Format, register_format
from . import prophesee_kernels as K
from .prophesee_header import PropheseeHeader, sniff_header
from .prophesee_stream import PropheseeReader

EVENT_TYPES = {0x00: "Event2d", 0x0C: "EventCD"}
EVENT_SIZE = 8


class DatReader(PropheseeReader):
    """Stream DAT CD / Event2d events (``time_policy`` and ``sensor_size`` as in PropheseeReader)."""

    format_name = "dat"
    unit_bytes = 8
    word_dtype = np.dtype("<u4")
    kernel = staticmethod(K.dat_decode)
    max_coord = 1 << 14

    def _check_header(self, hdr: PropheseeHeader) -> int:
        if hdr.evt_version is not None:
            raise RecordingError(self.path, f"header says EVT {hdr.evt_version}; a DAT file has no evt/format line", 0)
        off = hdr.data_offset
        ts = hdr.head[off:off + 2]
        if len(ts) < 2:
            raise RecordingError(self.path, "truncated: expected the 2-byte event type and size after the header", off)
        typ, size = ts[0], ts[1]
        if typ not in EVENT_TYPES:
            known = ", ".join(f"0x{k:02X} {v}" for k, v in EVENT_TYPES.items())
            raise RecordingError(self.path, f"DAT event type 0x{typ:02X} holds no CD events (expected {known})", off)
        if size != EVENT_SIZE:
            raise RecordingError(self.path, f"DAT event size {size} (expected {EVENT_SIZE})", off + 1)
        self._event_type = EVENT_TYPES[typ]
        return off + 2

    def _layout_version(self, hdr: PropheseeHeader) -> int:
        v = hdr.fields.get("Version", "2")
        if v not in ("1", "2"):
            raise RecordingError(self.path, f"unsupported DAT version {v!r} (expected 1 or 2)", 0)
        return int(v)

    def _open(self):
        info = super()._open()
        info.extra["event_type"] = self._event_type
        info.extra["dat_version"] = self._version
        return info


def _sniff(head: bytes, path: Path) -> bool:
    hdr = sniff_header(head)
    if hdr is None or hdr.evt_version is not None:
        return False
    dat_keys = "Version" in hdr.fields or any(k == "Data" for k in hdr.fields)
    if not hdr.complete:
        return dat_keys and path.suffix.lower() == ".dat"
    off = hdr.data_offset
    return dat_keys and len(head) >= off + 2 and head[off + 1] == EVENT_SIZE


FORMAT = register_format(Format(
    name="dat", description="Prophesee DAT .dat (8-byte CD / Event2d events)",
    extensions=(".dat",), sniff=_sniff, reader=DatReader, priority=40))
