"""``spikeflow info FILE [--json]``: format, resolution, duration, count, rates, polarity balance.

Streams the file once (bounded memory), so it works on recordings larger than RAM.
"""

from __future__ import annotations

import json

from spikeflow.service.errors import SpikeflowError


def add_reader_arguments(parser) -> None:
    """Options shared with ``convert``: how to read the input."""
    parser.add_argument("--in-format", dest="in_format", default=None,
                        help="input format name (default: detected from the file's magic bytes)")
    parser.add_argument("--sensor-size", dest="sensor_size", default=None, metavar="WxH",
                        help="sensor size for formats that do not store it (e.g. 128x128 for DVSGesture .bs2)")
    parser.add_argument("-o", "--option", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option, e.g. dataset=dvsgesture, t_unit=ms, key=events (repeatable)")


def reader_options(args) -> dict:
    """Reader keyword options from ``--sensor-size`` and ``-o KEY=VALUE`` (values parsed as JSON if possible)."""
    opts = {}
    for item in args.options:
        if "=" not in item:
            raise SpikeflowError(f"--option {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            opts[k.strip()] = json.loads(v)
        except ValueError:
            opts[k.strip()] = v
    if args.sensor_size:
        opts["sensor_size"] = args.sensor_size
    return opts


def open_input(args, path):
    """Open the input recording with the CLI's options; unknown options become a clear error."""
    from spikeflow.drivers.recording import open_recording

    opts = reader_options(args)
    try:
        return open_recording(path, args.in_format, **opts)
    except TypeError as e:
        if not opts:
            raise
        raise SpikeflowError(f"{path}: this format does not take option(s) {sorted(opts)}: {e}") from None


def add_arguments(parser) -> None:
    parser.add_argument("file", help="recording file (any supported format)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    add_reader_arguments(parser)


def format_stats(st) -> str:
    """Human-readable lines for a RecordingStats."""
    lines = [f"file        {st.path} ({st.file_bytes:,} bytes)",
             f"format      {st.format}",
             f"resolution  {st.width} x {st.height} ({st.channels} channels)",
             f"events      {st.count:,}"]
    if st.count:
        lines += [f"duration    {st.duration_us / 1e6:.6f} s  (t = {st.t_first_us} .. {st.t_last_us} us)",
                  f"mean rate   {st.mean_rate_hz / 1e6:.4f} M ev/s",
                  "peak rate   " + ", ".join(f"{hz / 1e6:.4f} M ev/s ({w} window)"
                                             for w, hz in st.peak_rate_hz.items())]
        pol = st.on_count + st.off_count
        bal = f"ON {st.on_count:,} ({100 * st.on_fraction:.1f} %), OFF {st.off_count:,}" if pol else "no 0/1 polarities"
        if st.other_polarity_count:
            bal += f", other p values {st.other_polarity_count:,}"
        lines.append(f"polarity    {bal}")
        if not st.sorted:
            lines.append("note        timestamps are not sorted: peak rates are lower bounds")
    return "\n".join(lines)


def run(args) -> int:
    from spikeflow.drivers.stats import stats_of_reader

    with open_input(args, args.file) as rec:
        st = stats_of_reader(rec)
    print(json.dumps(st.to_dict()) if args.json else format_stats(st))
    return 0
