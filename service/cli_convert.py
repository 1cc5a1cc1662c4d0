"""``spikeflow convert IN OUT [--format NAME]``: re-encode a recording, chunk by chunk.

The input is streamed through the output format's writer, so memory stays bounded by the
chunk size. The sensor size (and JSON-safe metadata) travel with the events. A failed
conversion removes its partial output.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from spikeflow.service.errors import SpikeflowError

from .cli_info import add_reader_arguments, open_input


def add_arguments(parser) -> None:
    parser.add_argument("input", help="recording to read (format detected from its magic bytes)")
    parser.add_argument("output", help="file to write (format from --format or the extension, e.g. .sfe)")
    parser.add_argument("--format", dest="out_format", default=None,
                        help="output format name (default: from OUT's extension); see docs/formats.md")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    add_reader_arguments(parser)


def _json_safe(extra: dict) -> dict:
    out = {}
    for k, v in extra.items():
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


def convert(args) -> tuple[int, str, str]:
    """Stream args.input into args.output; returns (events, input format, output format)."""
    from spikeflow.drivers.recording import open_writer

    src, dst = Path(args.input), Path(args.output)
    if dst.exists() and not args.force:
        raise SpikeflowError(f"{dst}: exists (use --force to overwrite)")
    if dst.resolve() == src.resolve():
        raise SpikeflowError(f"{dst}: output is the input")
    n = 0
    with open_input(args, src) as rec:
        info = rec.info
        writer = open_writer(dst, info.sensor_size, args.out_format,
                             extra={"source": src.name, "source_format": info.format, **_json_safe(info.extra)})
        try:
            with writer:
                for chunk in rec:
                    writer.write(chunk)
                    n += len(chunk)
        except BaseException:
            dst.unlink(missing_ok=True)
            Path(str(dst) + ".json").unlink(missing_ok=True)
            raise
        return n, info.format, writer.format_name


def run(args) -> int:
    t0 = time.perf_counter()
    n, fin, fout = convert(args)
    dt = time.perf_counter() - t0
    print(f"converted {n:,} events: {args.input} ({fin}) -> {args.output} ({fout}) in {dt:.2f} s")
    return 0
