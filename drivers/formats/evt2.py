"""Prophesee EVT 2.0 ``.raw``: streaming reader.

EVT 2.0 is a stream of little-endian 32-bit words after a '%' text header: CD_OFF/CD_ON words
carry x, y and the low 6 bits of time; EV_TIME_HIGH carries time bits 33..6 (28 bits), so time
wraps every 2^34 µs (4 h 46 min). A TIME_HIGH dropping by more than half its range (2^27) counts
a wrap and adds 2^34 µs; smaller drops are backwards steps handled by ``time_policy``. Words
before the first TIME_HIGH have no time base and are skipped (as OpenEB does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spikeflow.service.errors import RecordingError

from ..recording import Format, register_format
from . import prophesee_kernels as K
from .prophesee_header import PropheseeHeader, sniff_header
from .prophesee_stream import PropheseeReader

KNOWN_TYPES = "0 CD_OFF, 1 CD_ON, 8 EV_TIME_HIGH, A EXT_TRIGGER, E OTHERS, F CONTINUED"


class Evt2Reader(PropheseeReader):
    """Stream EVT 2.0 events (``time_policy`` and ``sensor_size`` as in PropheseeReader)."""

    format_name = "evt2"
    unit_bytes = 4
    word_dtype = np.dtype("<u4")
    kernel = staticmethod(K.evt2_decode)

    def _check_header(self, hdr: PropheseeHeader) -> int:
        if hdr.evt_version not in (None, "2.0"):
            raise RecordingError(self.path, f"header says EVT {hdr.evt_version}; expected EVT 2.0", 0)
        return hdr.data_offset

    def _type_error(self, typ: int) -> str:
        return f"unknown EVT 2.0 event type 0x{typ:X} (expected one of {KNOWN_TYPES})"


def _sniff(head: bytes, path: Path) -> bool:
    hdr = sniff_header(head)
    return hdr is not None and hdr.evt_version == "2.0"


FORMAT = register_format(Format(
    name="evt2", description="Prophesee EVT 2.0 .raw (32-bit words, 34-bit time)",
    extensions=(".raw",), sniff=_sniff, reader=Evt2Reader, priority=50))
