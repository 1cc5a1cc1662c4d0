"""Decode figures for the columnar formats (.npy, HDF5, text, native .sfe, N-MNIST .bin):
ours now, ours at git HEAD (the baseline, same run), the raw reference, and a same-work
reference that also converts to EVENT_DTYPE and runs our checks in numpy.

    .venv/bin/python bench/bench_columnar.py [--rounds 3] [--repeats 5] [--only npy,hdf5] [--no-head]

Every cell runs in fresh subprocesses pinned to one core (NUMBA/OMP threads 1): a warm-up
decode, then ``--repeats`` timed decodes; the decoders of a row alternate for ``--rounds``
rounds (interleaved, so load from other jobs hits all of them alike) and the medians over all
rounds x repeats are reported, wall clock and thread CPU time. ``HEAD`` runs the same
``read_recording`` from a ``git archive HEAD`` copy of the package (PYTHONPATH), so before and
after come from the same run. Also prints the cost of importing h5py (the HDF5 reader imports it
lazily, on the first HDF5 file).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REC = (REPO / ".." / "shared" / "recordings").resolve()


# ---------------------------------------------------------------- decoders (run in the worker)
def _same_work(ev_cols, width, height):
    """What ``read_recording`` does beyond reading, in plain numpy: one EVENT_DTYPE array,
    coordinates inside the sensor, time order."""
    import numpy as np
    from spikeflow.service.events import EVENT_DTYPE
    n = len(ev_cols["t"])
    ev = np.empty(n, EVENT_DTYPE)
    for k in "txyp":
        ev[k] = ev_cols[k]
    x, y = ev["x"], ev["y"]
    if ((x < 0) | (x >= width) | (y < 0) | (y >= height)).any():
        raise ValueError("outside")
    if n and (ev["t"][1:] < ev["t"][:-1]).any():
        raise ValueError("backwards")
    return ev


def decode(decoder: str, fmt: str, path: str, opts: dict, sensor) -> int:
    import numpy as np
    if decoder in ("ours", "HEAD"):
        from spikeflow.drivers.recording import read_recording
        return len(read_recording(path, fmt, **opts)[0])
    if decoder == "np.load":
        return len(np.load(path))
    if decoder == "np.load+same work":
        a = np.load(path)
        return len(_same_work({k: a[k] for k in "txyp"}, *sensor[:2]))
    if decoder == "h5py":
        import h5py
        with h5py.File(path, "r") as f:
            return len({k: f["events"][k][()] for k in "txyp"}["t"])
    if decoder == "h5py+same work":
        import h5py
        with h5py.File(path, "r") as f:
            cols = {k: f["events"][k][()] for k in "txyp"}
        return len(_same_work(cols, *sensor[:2]))
    if decoder == "np.loadtxt":
        return len(np.loadtxt(path, dtype=np.float64, comments="#"))
    if decoder == "tonic":
        import tonic.io as tio
        return len(tio.read_mnist_file(path, dtype=tio.events_struct))
    raise ValueError(decoder)


def worker(spec: dict) -> dict:
    try:
        os.sched_setaffinity(0, {spec["cpu"]})
    except (AttributeError, OSError):
        pass
    args = (spec["decoder"], spec["format"], spec["path"], spec["options"], spec["sensor"])
    if spec["decoder"] in ("ours", "HEAD"):  # the baseline must really be the committed copy
        import spikeflow
        assert (os.sep + "head" + os.sep in spikeflow.__file__) == (spec["decoder"] == "HEAD"), spikeflow.__file__
    n = decode(*args)  # warm-up: imports, numba cache, page cache
    wall, cpu = [], []
    for _ in range(spec["repeats"]):
        t0, c0 = time.perf_counter(), time.thread_time()
        decode(*args)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return {"events": n, "wall": wall, "cpu": cpu}


# ---------------------------------------------------------------- driver
def _env(pythonpath: str | None) -> dict:
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def run_worker(spec: dict, pythonpath: str | None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                         env=_env(pythonpath), timeout=1800, cwd=str(REPO), check=False)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:160]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_cases(tmp: Path, only: set[str] | None):
    """(key, format, path, options, sensor, label, decoders) rows; generated files come from real events."""
    import numpy as np
    from spikeflow.drivers.recording import open_writer, read_recording
    ev, info = read_recording(REC / "faery-testdata/evt3.raw")
    size = tuple(info.sensor_size)
    cases = []

    def want(key):
        return only is None or key in only

    if want("npy"):
        cases.append(("npy", "tonic_npy", REC / "expelliarmus-samples/evt3_sample.npy", {"sensor_size": [1280, 720]},
                      (1280, 720), "expelliarmus evt3_sample.npy (t i8, x i2, y i2, p u1; 16-byte records)",
                      ["ours", "HEAD", "np.load", "np.load+same work"]))
        p = tmp / "evt3_ours.npy"
        with open_writer(p, size, format="tonic_npy") as w:
            w.write(ev)
        cases.append(("npy", "tonic_npy", p, {}, size, "faery evt3.raw events written by our .npy writer (EVENT_DTYPE)",
                      ["ours", "HEAD", "np.load", "np.load+same work"]))
    if want("hdf5"):
        p = tmp / "evt3.h5"
        with open_writer(p, size, format="hdf5") as w:
            w.write(ev)
        cases.append(("hdf5", "hdf5", p, {}, size, "faery evt3.raw events, our HDF5 writer (LZF, 65,536-event chunks)",
                      ["ours", "HEAD", "h5py", "h5py+same work"]))
        from spikeflow.drivers.formats.hdf5 import Hdf5Writer
        p = tmp / "evt3_raw.h5"
        with Hdf5Writer(p, size, compression=None) as w:
            w.write(ev)
        cases.append(("hdf5", "hdf5", p, {}, size, "the same, uncompressed (Hdf5Writer(compression=None))",
                      ["ours", "HEAD", "h5py", "h5py+same work"]))
    if want("text"):
        p = tmp / "evt3.txt"
        with open_writer(p, size, format="text") as w:
            w.write(ev[:400_000])
        cases.append(("text", "text", p, {}, size, "400,000 faery evt3.raw events, our text writer",
                      ["ours", "HEAD", "np.loadtxt"]))
    if want("native"):
        p = tmp / "evt3.sfe"
        with open_writer(p, size, format="native") as w:
            w.write(ev)
        cases.append(("native", "native", p, {}, size, "faery evt3.raw events, our .sfe writer", ["ours", "HEAD"]))
    if want("nmnist"):
        cases.append(("nmnist", "nmnist_bin", REC / "slayer-dvsgesture/5.bs2", {"dataset": "dvsgesture"}, (128, 128),
                      "slayer-dvsgesture/5.bs2 (DVS128 Gesture, 40-bit records)", ["ours", "HEAD", "tonic"]))
    del np
    return cases


def head_tree(tmp: Path) -> str:
    """A copy of the committed package (``git archive HEAD``, read-only for the repository)."""
    dst = tmp / "head" / "spikeflow"
    dst.mkdir(parents=True)
    arch = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=arch, check=True)
    return str(dst.parent)


def import_costs(runs: int = 5) -> dict:
    code = {"import h5py": "import h5py",
            "import spikeflow.drivers.recording + formats()":
                "from spikeflow.drivers.recording import formats; formats()"}
    out = {}
    for name, stmt in code.items():
        ts = []
        for _ in range(runs):
            prog = (f"import time; t0 = time.perf_counter(); {stmt}; "
                    "import sys; print(time.perf_counter() - t0, 'h5py' in sys.modules)")
            r = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=_env(None),
                               cwd=str(REPO), check=True)
            val, loaded = r.stdout.split()
            ts.append(float(val))
        out[name] = (statistics.median(ts), loaded == "True")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=None, help="comma-separated: npy,hdf5,text,native,nmnist")
    ap.add_argument("--no-head", action="store_true", help="skip the git HEAD baseline")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    cpu = max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    only = set(args.only.split(",")) if args.only else None
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        head = None if args.no_head else head_tree(tmp)
        for key, fmt, path, opts, sensor, label, decoders in make_cases(tmp, only):
            decoders = [d for d in decoders if d != "HEAD" or head]
            res = {d: {"wall": [], "cpu": [], "events": None} for d in decoders}
            for _ in range(args.rounds):
                for d in decoders:
                    spec = {"decoder": d, "format": fmt, "path": str(path), "options": opts, "sensor": list(sensor),
                            "repeats": args.repeats, "cpu": cpu}
                    r = run_worker(spec, head if d == "HEAD" else None)
                    if "error" in r:
                        res[d]["error"] = r["error"]
                        continue
                    res[d]["wall"] += r["wall"]
                    res[d]["cpu"] += r["cpu"]
                    res[d]["events"] = r["events"]
            rows.append((key, label, res))
            print(_row_text(label, res), flush=True)
        costs = import_costs()
    load1 = os.getloadavg()
    print()
    print(f"Command: `.venv/bin/python bench/bench_columnar.py --rounds {args.rounds} --repeats {args.repeats}"
          f"{' --only ' + args.only if args.only else ''}` ({started}; load average {load0[0]:.1f} at the start, "
          f"{load1[0]:.1f} at the end; pinned to CPU {cpu})")
    print()
    print("| format | file | events | decoder | M ev/s wall | M ev/s CPU | ms wall (median) | ours speed / this, wall | ours speed / this, CPU |")
    print("|---|---|---:|---|---:|---:|---:|---:|---:|")
    for key, label, res in rows:
        ours = res.get("ours", {})
        for d, r in res.items():
            if "error" in r or not r["wall"]:
                print(f"| {key} | {label} | | {d} | error: {r.get('error', 'no result')} | | | | |")
                continue
            w, c = statistics.median(r["wall"]), statistics.median(r["cpu"])
            ratio_w = ratio_c = ""
            if d != "ours" and ours.get("wall"):
                ratio_w = f"{w / statistics.median(ours['wall']):.2f}"
                ratio_c = f"{c / statistics.median(ours['cpu']):.2f}"
            print(f"| {key} | {label} | {r['events']:,} | {d} | {r['events'] / w / 1e6:.1f} | {r['events'] / c / 1e6:.1f} "
                  f"| {w * 1e3:.2f} | {ratio_w} | {ratio_c} |")
    print()
    for name, (sec, loaded) in costs.items():
        print(f"- `{name}` in a fresh interpreter: {sec * 1e3:.0f} ms (median of 5; h5py loaded: {loaded})")
    return 0


def _row_text(label, res):
    parts = []
    for d, r in res.items():
        if "error" in r or not r["wall"]:
            parts.append(f"{d}: error {r.get('error')}")
        else:
            parts.append(f"{d}: {r['events'] / statistics.median(r['wall']) / 1e6:.1f} wall / "
                         f"{r['events'] / statistics.median(r['cpu']) / 1e6:.1f} CPU M ev/s")
    return f"{label}: " + "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
