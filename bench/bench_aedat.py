"""AEDAT 2.0 / 3.1 / 4 decode throughput against reference decoders, in the same run.

    .venv/bin/python bench/bench_aedat.py [--repeats 7] [--gesture-copies 10] [--markdown]

Rates are M events/s from the median wall time and the median CPU time of ``--repeats`` runs,
decode only (file in the page cache, events iterated chunk by chunk, nothing kept), each run
after a ``gc.collect()`` as in bench_decode.py (so small files are measured with cold caches,
as bench_decode.py measures them). References:

* AEDAT 4: ``aedat`` (Rust) and ``dv-processing`` (C++) on the real files of ../shared. Both
  hand out their own packet arrays, which the bench only counts; ``dv-processing -> EVENT_DTYPE``
  also converts them into one array of our dtype, the same output ours produces.
* AEDAT 3.1: no real file exists, so the ten real DvsGesture clips (SLAYER .bs2) are written
  ``--gesture-copies`` times back to back with our writer; reference: tonic's AEDAT 3 path
  (``get_aer_events_from_file`` + the DvsGesture bit extraction of ``read_dvs_ibm``).
* AEDAT 2.0: tonic's ``get_aer_events_from_file`` alone (raw big-endian words, what
  bench_decode.py times) and followed by the jAER DVS128 bit extraction into x, y, t, p (our
  output), on the real MNIST-DVS file and on its records repeated 100 times (1.57 M events).

Peak memory is the tracemalloc peak of one separate decode (numpy and Python allocations).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "recordings"
BS2 = np.dtype([("x", "<i2"), ("y", "<i2"), ("t", "<i8"), ("p", "<i2")])


def median_s(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds. CPU time (all threads of this process) is the steadier
    figure on a shared machine; wall time is what a user waits."""
    fn()  # warm-up: numba cache load, page cache
    wall, cpu = [], []
    for _ in range(repeats):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def ours(path):
    from spikeflow.drivers.recording import open_recording

    def run():
        n = 0
        with open_recording(path) as rec:
            for chunk in rec:
                n += len(chunk)
        return n
    return run


def peak_mib(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def ref_aedat(path):
    import aedat

    def run():
        n = 0
        dec = aedat.Decoder(str(path))
        for pk in dec:
            if "events" in pk:
                n += len(pk["events"])
        return n
    return run


def ref_dv(path):
    import dv_processing as dv

    def run():
        n = 0
        rec = dv.io.MonoCameraRecording(str(path))
        while (b := rec.getNextEventBatch()) is not None:
            ev = b.numpy()
            n += len(ev)
        return n
    return run


def ref_dv_events(path):
    """dv-processing, then its batches converted into one EVENT_DTYPE array: our output."""
    import dv_processing as dv

    from spikeflow.service.events import EVENT_DTYPE

    def run():
        rec = dv.io.MonoCameraRecording(str(path))
        parts = []
        while (b := rec.getNextEventBatch()) is not None:
            parts.append(b.numpy())
        raw = np.concatenate(parts)
        ev = np.empty(len(raw), EVENT_DTYPE)
        ev["t"], ev["x"], ev["y"], ev["p"] = raw["timestamp"], raw["x"], raw["y"], raw["polarity"]
        return len(ev)
    return run


def ref_tonic_raw(path):
    """tonic's AEDAT 2.0 path as bench_decode.py times it: raw (address, timestamp) words only."""
    import tonic.io

    def run():
        v, start, _ = tonic.io.read_aedat_header_from_file(str(path))
        return len(tonic.io.get_aer_events_from_file(str(path), v, start))
    return run


def ref_tonic_aer(path, layout: str):
    import tonic.io

    def run():
        v, start, _ = tonic.io.read_aedat_header_from_file(str(path))
        raw = tonic.io.get_aer_events_from_file(str(path), v, start)
        a = raw["address"].astype(np.int64)
        if layout == "ibm":
            x, y, p = (a >> 17) & 0x1FFF, (a >> 2) & 0x1FFF, (a >> 1) & 1
        else:
            x, y, p = 127 - ((a >> 1) & 0x7F), (a >> 8) & 0x7F, 1 - (a & 1)
        ev = np.empty(len(a), BS2)
        ev["x"], ev["y"], ev["t"], ev["p"] = x, y, raw["timeStamp"], p
        return len(ev)
    return run


def gesture_file(tmp: Path, copies: int) -> Path:
    import tonic.io

    from spikeflow.drivers.recording import open_writer
    from spikeflow.service.events import make_events

    path = tmp / f"gesture_x{copies}.aedat"
    with open_writer(path, (128, 128)) as w:
        offset = 0
        for _ in range(copies):
            for i in range(1, 11):
                r = tonic.io.read_mnist_file(str(SHARED / "slayer-dvsgesture" / f"{i}.bs2"), dtype=BS2)
                w.write(make_events(r["t"] + offset, r["x"], r["y"], r["p"]))
                offset += 1_500_000
    return path


def mnist_dvs_file(tmp: Path, copies: int) -> Path:
    """The real MNIST-DVS records repeated ``copies`` times, each copy 2.3 s later (no wrap)."""
    src = SHARED / "mnist-dvs/mnist_0_scale04_0001.aedat"
    data = src.read_bytes()
    rec = np.frombuffer(data[216:], ">u4").reshape(-1, 2)
    out = np.concatenate([rec + np.array([0, k * 2_300_000], np.uint32) for k in range(copies)]).astype(">u4")
    path = tmp / f"mnist_dvs_x{copies}.aedat"
    path.write_bytes(data[:216] + out.tobytes())
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--gesture-copies", type=int, default=10)
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as td:
        g = gesture_file(Path(td), args.gesture_copies)
        m = mnist_dvs_file(Path(td), 100)
        a2 = [("tonic raw words", ref_tonic_raw), ("tonic -> x,y,t,p", lambda p: ref_tonic_aer(p, "dvs128"))]
        a4 = [("aedat", ref_aedat), ("dv-processing", ref_dv), ("dv-processing -> EVENT_DTYPE", ref_dv_events)]
        cases = [
            ("AEDAT 4", SHARED / "tonic-testdata/sample.aedat4", a4),
            ("AEDAT 4", SHARED / "faery-testdata/davis346.aedat4", a4),
            ("AEDAT 4", SHARED / "aermanager-testdata/data_sample.aedat4", a4),
            ("AEDAT 3.1", g, [("tonic", lambda p: ref_tonic_aer(p, "ibm"))]),
            ("AEDAT 2.0", SHARED / "mnist-dvs/mnist_0_scale04_0001.aedat", a2),
            ("AEDAT 2.0", m, a2),
        ]
        for fmt, path, refs in cases:
            run = ours(path)
            n = run()
            wall, cpu = median_s(run, args.repeats)
            mem = peak_mib(run)
            name = {g: f"{args.gesture_copies}x 10 DvsGesture clips (generated)",
                    m: "100x mnist_0_scale04_0001 (generated)"}.get(path, path.name)
            rates = []
            for ref_name, make in refs:
                rw, rc = median_s(make(path), args.repeats)
                rates.append((ref_name, n / rw / 1e6, n / rc / 1e6))
            rows.append((fmt, name, n, n / wall / 1e6, n / cpu / 1e6, mem, rates))
    if args.markdown:
        print("| format | file | events | spikeflow Mev/s wall / CPU | peak MiB | reference Mev/s wall / CPU "
              "| ratio to fastest ref, wall / CPU |")
        print("|---|---|---:|---:|---:|---|---:|")
    for fmt, name, n, rate_w, rate_c, mem, rates in rows:
        best_w = max(r[1] for r in rates)
        best_c = max(r[2] for r in rates)
        refs = ", ".join(f"{k} {w:.1f} / {c:.1f}" for k, w, c in rates)
        if args.markdown:
            print(f"| {fmt} | {name} | {n:,} | {rate_w:.1f} / {rate_c:.1f} | {mem:.1f} | {refs} "
                  f"| {rate_w / best_w:.2f} / {rate_c / best_c:.2f} |")
        else:
            print(f"{fmt:10s} {name:42s} {n:>11,d} ev  ours {rate_w:6.1f} / {rate_c:6.1f} Mev/s (wall/CPU)  "
                  f"peak {mem:5.1f} MiB  refs: {refs}  ratio {rate_w / best_w:.2f} / {rate_c / best_c:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
