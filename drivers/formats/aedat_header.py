"""The ``#!AER-DAT`` text header shared by AEDAT 2.0 and 3.1 (jAER / cAER), and chip sizes.

AEDAT 2.0: ``#``-prefixed lines (``\\r\\n``), the first ``#!AER-DAT2.0``; binary data starts at
the first byte after a line that is not itself followed by ``#``. AEDAT 3.1: the same lines,
closed by ``#!END-HEADER\\r\\n``. The header is capped so a file without line breaks cannot make
us read it whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from spikeflow.service.errors import RecordingError

MAX_HEADER_BYTES = 4 << 20

# Chip / source name (lower case, prefix match after stripping a package path) -> (W, H, family)
CHIP_SIZES: tuple[tuple[str, int, int, str], ...] = (
    ("dvs128", 128, 128, "dvs128"),
    ("tmpdiff128", 128, 128, "dvs128"),
    ("davis346", 346, 260, "davis"),
    ("davis240", 240, 180, "davis"),
    ("davis128", 128, 128, "davis"),
    ("davis208", 208, 192, "davis"),
    ("davis640", 640, 480, "davis"),
    ("dvxplorer", 640, 480, "dvxplorer"),
)


@dataclass
class AedatHeader:
    """A parsed ``#!AER-DAT`` header: version, data start offset, and its ``key: value`` lines."""

    version: str                 # "2.0", "3.1", ...
    data_start: int              # byte offset of the first binary byte
    lines: list[str] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)


def sniff_version(head: bytes) -> str | None:
    """The version string of a ``#!AER-DAT<digits>.<digits>`` first line (``\\r\\n`` or ``\\n``),
    else None. Plain bytes operations: this runs for every small-file decode and every sniff."""
    if not head.startswith(b"#!AER-DAT"):
        return None
    nl = head.find(b"\n", 9, 40)
    if nl < 0:
        return None
    end = nl - 1 if head[nl - 1] == 13 else nl  # b"\r"
    major, dot, minor = head[9:end].partition(b".")
    if not (dot and major.isdigit() and minor.isdigit()):
        return None
    return (major + dot + minor).decode()


def read_header(path: Path, expect_version: str) -> AedatHeader:
    """Parse the text header of ``path``; raise RecordingError unless its version is ``expect_version``."""
    return parse_header(_read_header_bytes(path, expect_version.startswith("3")), path, expect_version)


def parse_header(raw: bytes, path: Path, expect_version: str) -> AedatHeader:
    """Parse the header at the start of ``raw``: the whole file, or its first bytes as far as
    ``_read_header_bytes`` reads them (the header's end, or MAX_HEADER_BYTES and more)."""
    version = sniff_version(raw[:32])
    if version is None:
        raise RecordingError(path, "expected a '#!AER-DAT<version>' first line", 0)
    if version != expect_version:
        raise RecordingError(path, f"expected AEDAT {expect_version}, header says {version}", 9)
    lines: list[str] = []
    fields: dict[str, str] = {}
    pos = 0
    end_marker = expect_version.startswith("3")
    while True:
        if pos >= len(raw) or raw[pos] != 35:  # b"#"
            if pos >= len(raw) and len(raw) > MAX_HEADER_BYTES:
                raise RecordingError(path, f"header longer than {MAX_HEADER_BYTES} bytes", 0)
            if end_marker:
                raise RecordingError(path, "expected '#!END-HEADER' closing the AEDAT 3.1 header", pos)
            break
        nl = raw.find(b"\n", pos)
        if nl < 0:
            if len(raw) > MAX_HEADER_BYTES:
                raise RecordingError(path, f"header line longer than {MAX_HEADER_BYTES} bytes", pos)
            raise RecordingError(path, "truncated header: line without end-of-line", pos)
        line = raw[pos + 1:nl].rstrip(b"\r").decode("latin-1")
        pos = nl + 1
        lines.append(line)
        if ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip().lstrip("!").strip(), value.strip())
        if end_marker and line.strip() == "!END-HEADER":
            break
    return AedatHeader(version, pos, lines, fields)


def _read_header_bytes(path: Path, end_marker: bool) -> bytes:
    """The file's first bytes, read in growing steps until the header's end is surely inside."""
    step = 1 << 16
    with open(path, "rb") as f:
        raw = f.read(step)
        while len(raw) <= MAX_HEADER_BYTES:
            done = b"#!END-HEADER" in raw if end_marker else _binary_starts(raw)
            more = f.read(step) if not done else b""
            if not more:
                break
            raw += more
            step *= 2
    return raw


def _binary_starts(raw: bytes) -> bool:
    """True once ``raw`` holds a line end followed by a non-'#' byte (AEDAT 2.0 data start)."""
    pos = 0
    while True:
        nl = raw.find(b"\n", pos)
        if nl < 0 or nl + 1 >= len(raw):
            return False
        if raw[nl + 1:nl + 2] != b"#":
            return True
        pos = nl + 1


def chip_size(name: str) -> tuple[int, int, str] | None:
    """``(width, height, family)`` of a jAER chip class or cAER source name, or None if unknown.

    ``eu.seebetter.ini.chips.davis.Davis346red`` -> (346, 260, "davis"); ``DVS128`` -> (128, 128, "dvs128").
    """
    short = name.strip().split(".")[-1].lower()
    for prefix, w, h, fam in CHIP_SIZES:
        if short.startswith(prefix):
            return w, h, fam
    return None


def size_attributes(text: str) -> tuple[int, int] | None:
    """``dvsSizeX="W" dvsSizeY="H"`` (cAER source info / our writer) found in ``text``, else None."""
    mx = re.search(r'dvsSizeX\s*=\s*"?(\d+)', text)
    my = re.search(r'dvsSizeY\s*=\s*"?(\d+)', text)
    if mx and my:
        return int(mx.group(1)), int(my.group(1))
    return None
