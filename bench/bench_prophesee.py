"""Prophesee EVT 2.0 / EVT 3.0 / DAT decode and EVT 3.0 encode throughput, against the reference
decoders on the same files in the same run.

    .venv/bin/python bench/bench_prophesee.py [--repeats 9] [--markdown]

The process pins itself to one core (``os.sched_setaffinity``; numba/rayon threads = 1). Every
repeat runs each decoder once in turn (interleaved, so machine load hits all of them alike);
the table gives M events/s from the median wall time, and the ratio of ours to the fastest
reference from median wall and median CPU time (CPU time is less disturbed by other load).
The order of the decoders rotates every repeat, so none always runs after the same one. ``ours`` = ``read_recording`` (whole file), ``ours stream`` = iterating
``open_recording`` chunks (1 Mi events). Peak memory: tracemalloc peak of one streaming decode
(numpy buffers; the chunk is 14 MiB) and of one ``read_recording``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_v, "1")


REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "recordings"
FILES = [  # (format, file, expelliarmus encoding)
    ("evt3", "faery-testdata/evt3.raw", "evt3"),
    ("evt3", "expelliarmus-samples/evt3_sample.raw", "evt3"),
    ("evt2", "expelliarmus-samples/evt2_sample.raw", "evt2"),
    ("evt2", "faery-testdata/evt2.raw", "evt2"),
    ("dat", "faery-testdata/gen4.dat", "dat"),
]


def decoders(fmt: str, path: Path, enc: str) -> dict:
    import expelliarmus
    import faery

    from spikeflow.drivers.recording import open_recording, read_recording

    def stream():
        with open_recording(path) as rec:
            return sum(len(c) for c in rec)

    d = {"ours": lambda: len(read_recording(path)[0]), "ours stream": stream,
         "faery": lambda: sum(len(c) for c in faery.events_stream_from_file(str(path))),
         "expelliarmus": lambda: len(expelliarmus.Wizard(encoding=enc, fpath=path).read())}
    if fmt == "evt3":
        import evt3
        d["evt3 (PyPI)"] = lambda: len(evt3.decode_file(str(path)).x)
    return d


def peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def bench_decode(repeats: int) -> list[str]:
    rows = ["| format | file | events | ours | ours stream | evt3 (PyPI) | faery | expelliarmus "
            "| ours / fastest ref (wall, CPU) | peak MB stream / whole |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fmt, rel, enc in FILES:
        path = SHARED / rel
        ds = decoders(fmt, path, enc)
        n = ds["ours"]()
        for f in ds.values():  # warm-up: JIT cache, page cache
            f()
        times = {k: [] for k in ds}
        cpu = {k: [] for k in ds}
        names = list(ds)
        for r in range(repeats):
            for k in names[r % len(names):] + names[:r % len(names)]:  # rotate who runs first
                f = ds[k]
                t0, c0 = time.perf_counter(), time.process_time()
                f()
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
        rate = {k: n / statistics.median(v) / 1e6 for k, v in times.items()}
        crate = {k: n / max(statistics.median(v), 1e-9) / 1e6 for k, v in cpu.items()}
        refs = [v for k, v in rate.items() if not k.startswith("ours")]
        crefs = [v for k, v in crate.items() if not k.startswith("ours")]
        mem = f"{peak_mb(ds['ours stream']):.0f} / {peak_mb(ds['ours']):.0f}"
        cell = lambda k: f"{rate[k]:.1f}" if k in rate else "—"  # noqa: E731
        rows.append(f"| {fmt} | {rel} | {n:,} | {cell('ours')} | {cell('ours stream')} | {cell('evt3 (PyPI)')} "
                    f"| {cell('faery')} | {cell('expelliarmus')} | {rate['ours'] / max(refs):.2f}, "
                    f"{crate['ours'] / max(crefs):.2f} | {mem} |")
        print(rows[-1], flush=True)
    return rows


def bench_encode(repeats: int) -> list[str]:
    from spikeflow.drivers.recording import open_writer, read_recording
    rows = ["| source events | events | encode M ev/s (median) | bytes written | original bytes | round trip |",
            "|---|---:|---:|---:|---:|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.raw"
        for rel in ("faery-testdata/evt3.raw", "faery-testdata/gen4.dat", "expelliarmus-samples/evt2_sample.raw"):
            ev, info = read_recording(SHARED / rel)
            ts = []
            for _ in range(repeats + 1):
                t0 = time.perf_counter()
                with open_writer(out, info.sensor_size, format="evt3") as w:
                    w.write(ev)
                ts.append(time.perf_counter() - t0)
            same = read_recording(out)[0].tobytes() == ev.tobytes()
            rows.append(f"| {rel} | {len(ev):,} | {len(ev) / statistics.median(ts[1:]) / 1e6:.1f} "
                        f"| {out.stat().st_size:,} | {(SHARED / rel).stat().st_size:,} | {'bit-exact' if same else 'MISMATCH'} |")
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--markdown", action="store_true", help="print the tables as one markdown block")
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    dec = bench_decode(args.repeats)
    enc = bench_encode(args.repeats)
    if args.markdown:
        print("\nDecode, M events/s (median of %d interleaved repeats, one core):\n" % args.repeats)
        print("\n".join(dec))
        print("\nEVT 3.0 writer:\n")
        print("\n".join(enc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
