"""The '%' text header shared by Prophesee EVT 2.0 / EVT 3.0 ``.raw`` and DAT ``.dat`` files.

A header is a run of ASCII lines, each starting with ``%`` and ending with ``\\n``; the binary
data starts right after it (or after a ``% end`` line, which newer files write so that data
starting with the byte 0x25 is not mistaken for a header line). Examples::

    % evt 3.0                          % Data file containing CD events.
    % format EVT3;height=720;width=1280  % Version 2
    % geometry 1280x720                % Width 1280
    % plugin_name hal_plugin_imx636_evk4 % Height 720

Why one module: the sensor size must come from the header (never from ``max(x)``), with the
same precedence and the same errors for every Prophesee format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import SensorSize

MAX_HEADER_BYTES = 1 << 20
"""A header longer than this is corrupt (real headers are < 1 KiB)."""

# Sensor geometry implied by the HAL plugin name or the sensor generation when the header has
# no explicit size (older Metavision versions did not write ``geometry``). Sources: Prophesee
# sensor datasheets: Gen3/Gen3.1 VGA 640x480, Gen4.1 / IMX636 (Gen4.2) HD 1280x720,
# GenX320 320x320.
PLUGIN_GEOMETRY = (
    (re.compile(r"hal_plugin_(gen3|gen31)_"), (640, 480)),
    (re.compile(r"hal_plugin_(gen41|imx636)_"), (1280, 720)),
    (re.compile(r"hal_plugin_genx320"), (320, 320)),
)
GENERATION_GEOMETRY = {"3.0": (640, 480), "3.1": (640, 480), "4.1": (1280, 720),
                       "4.2": (1280, 720), "320": (320, 320)}

_EVT_NAMES = {"2": "2.0", "2.0": "2.0", "2.1": "2.1", "3": "3.0", "3.0": "3.0"}
_FORMAT_NAMES = {"EVT2": "2.0", "EVT2.0": "2.0", "EVT21": "2.1", "EVT2.1": "2.1",
                 "EVT3": "3.0", "EVT3.0": "3.0"}


@dataclass
class PropheseeHeader:
    """What the '%' header says. ``data_offset`` is the byte where binary data starts."""

    data_offset: int
    fields: dict[str, str] = field(default_factory=dict)  # first word -> rest of the line
    evt_version: str | None = None   # "2.0", "2.1", "3.0" (from ``evt`` or ``format``)
    width: int | None = None
    height: int | None = None
    size_source: str | None = None   # which header line gave width/height
    lines: int = 0
    complete: bool = True            # False when ``head`` ended inside the header
    head: bytes = b""                # the bytes parsed (read_header), header and data after it


def _bad(path, msg, offset):
    return RecordingError(path, f"corrupt Prophesee header: {msg}", offset)


def _positive_int(path, key, text, offset) -> int:
    if not text.isdigit() or not 0 < int(text) <= 65535:
        raise _bad(path, f"{key} must be a positive integer, got {text!r}", offset)
    return int(text)


def parse_header(data: bytes, path: str | Path = "<bytes>", *, at_eof: bool = True) -> PropheseeHeader:
    """Parse the '%' header at the start of ``data``.

    ``at_eof`` says ``data`` is the whole file (so a header line without ``\\n`` is truncation);
    with ``at_eof=False`` (a sniffing head) the parse simply stops there, ``complete=False``.
    """
    hdr = PropheseeHeader(data_offset=0)
    pos = 0
    n = len(data)
    while pos < n and data[pos:pos + 1] == b"%":
        end = data.find(b"\n", pos, pos + MAX_HEADER_BYTES)
        if end < 0:
            if not at_eof and n - pos < MAX_HEADER_BYTES:
                hdr.complete = False
                break
            raise _bad(path, "header line without end of line (truncated file or missing data)", pos)
        line = data[pos + 1:end].rstrip(b"\r").decode("latin-1").strip()
        _interpret(hdr, line, path, pos)
        hdr.lines += 1
        pos = end + 1
        if pos > MAX_HEADER_BYTES:
            raise _bad(path, f"header longer than {MAX_HEADER_BYTES} bytes", pos)
        if line == "end":
            break
    hdr.data_offset = pos
    if hdr.width is None and "Width" in hdr.fields and "Height" in hdr.fields:
        hdr.width, hdr.height = int(hdr.fields["Width"]), int(hdr.fields["Height"])
        hdr.size_source = "Width/Height"
    return hdr


def _interpret(hdr: PropheseeHeader, line: str, path, offset: int) -> None:
    key, _, value = line.partition(" ")
    value = value.strip()
    if not key or key == "end":
        return
    hdr.fields.setdefault(key, value)
    if key == "evt":
        ver = _EVT_NAMES.get(value)
        if ver is None:
            raise _bad(path, f"unknown EVT version {value!r} (expected 2.0, 2.1 or 3.0)", offset)
        _set_version(hdr, ver, path, offset)
    elif key == "format":
        parts = [p.strip() for p in value.split(";") if p.strip()]
        name = parts[0].upper() if parts else ""
        if name in _FORMAT_NAMES:
            _set_version(hdr, _FORMAT_NAMES[name], path, offset)
        opts = dict(p.partition("=")[::2] for p in parts[1:])
        if "width" in opts or "height" in opts:
            if "width" not in opts or "height" not in opts:
                raise _bad(path, f"format line gives only one of width/height: {value!r}", offset)
            _set_size(hdr, _positive_int(path, "format width", opts["width"].strip(), offset),
                      _positive_int(path, "format height", opts["height"].strip(), offset), "format", path, offset)
    elif key == "geometry":
        m = re.fullmatch(r"(\d+)\s*x\s*(\d+)", value)
        if not m:
            raise _bad(path, f"geometry must be WIDTHxHEIGHT, got {value!r}", offset)
        _set_size(hdr, _positive_int(path, "width", m.group(1), offset),
                  _positive_int(path, "height", m.group(2), offset), "geometry", path, offset)
    elif key in ("Width", "Height"):
        _positive_int(path, key, value, offset)


def _set_version(hdr: PropheseeHeader, ver: str, path, offset: int) -> None:
    if hdr.evt_version is not None and hdr.evt_version != ver:
        raise _bad(path, f"header names two encodings: EVT {hdr.evt_version} and EVT {ver}", offset)
    hdr.evt_version = ver


def _set_size(hdr: PropheseeHeader, w: int, h: int, source: str, path, offset: int) -> None:
    if hdr.size_source in ("geometry", "format") and (hdr.width, hdr.height) != (w, h):
        raise _bad(path, f"{source} says {w}x{h} but {hdr.size_source} said {hdr.width}x{hdr.height}", offset)
    hdr.width, hdr.height, hdr.size_source = w, h, source


def sensor_size_from_header(hdr: PropheseeHeader, path, explicit=None,
                            max_coord: int = 2048) -> tuple[SensorSize, str]:
    """The recording's sensor size and where it came from.

    Precedence: ``explicit`` (the caller's ``sensor_size=``), then the header's ``geometry`` /
    ``format ...;width=;height=`` / ``Width``+``Height`` lines, then the sensor named by
    ``plugin_name`` or ``sensor_generation``. Never from the events themselves.
    """
    if explicit is not None:
        ss = SensorSize(*[int(v) for v in explicit])
        if not (0 < ss.width <= max_coord and 0 < ss.height <= max_coord):
            raise RecordingError(path, f"sensor_size={tuple(ss)} outside what this format can address "
                                       f"(1..{max_coord} per axis)")
        return ss, "argument"
    if hdr.width is not None and hdr.height is not None:
        if hdr.width > max_coord or hdr.height > max_coord:
            raise RecordingError(path, f"header size {hdr.width}x{hdr.height} exceeds what this format "
                                       f"can address ({max_coord} per axis)", 0)
        return SensorSize(hdr.width, hdr.height, 2), hdr.size_source or "header"
    plugin = hdr.fields.get("plugin_name", "")
    for pattern, (w, h) in PLUGIN_GEOMETRY:
        if pattern.search(plugin):
            return SensorSize(w, h, 2), f"plugin_name {plugin}"
    gen = hdr.fields.get("sensor_generation", "")
    if gen in GENERATION_GEOMETRY:
        w, h = GENERATION_GEOMETRY[gen]
        return SensorSize(w, h, 2), f"sensor_generation {gen}"
    known = ", ".join(f"{k} {v!r}" for k, v in hdr.fields.items()) or "no header lines"
    raise RecordingError(path, "cannot determine the sensor size: the header has no geometry, "
                               "format width/height, Width/Height, or known plugin_name/sensor_generation "
                               f"({known}); pass sensor_size=(width, height) explicitly "
                               "(e.g. (304, 240) for ATIS / N-CARS recordings)", 0)


HEAD_BYTES = 1 << 16
"""First read of ``read_header``: real headers fit; only a longer one costs a second, full read."""


def read_header(path: Path) -> PropheseeHeader:
    """Parse the header of the file at ``path`` (reads at most ``MAX_HEADER_BYTES`` + 1 bytes).

    ``hdr.head`` keeps the bytes read (at least the header and what follows it, up to 64 KiB)
    so that a format can look at its binary preamble without opening the file again.
    """
    with open(path, "rb") as f:
        data = f.read(HEAD_BYTES)
        if len(data) == HEAD_BYTES:
            hdr = parse_header(data, path, at_eof=False)
            if hdr.complete and hdr.data_offset + 16 <= len(data):  # the header ended inside the head
                hdr.head = data
                return hdr
            data += f.read(MAX_HEADER_BYTES + 1 - len(data))
    hdr = parse_header(data, path, at_eof=len(data) <= MAX_HEADER_BYTES)
    hdr.head = data
    return hdr


def sniff_header(head: bytes) -> PropheseeHeader | None:
    """Header of a sniffing head, or None when it is not a Prophesee '%' header at all."""
    if not head.startswith(b"%"):
        return None
    try:
        return parse_header(head, at_eof=False)
    except RecordingError:
        return None
