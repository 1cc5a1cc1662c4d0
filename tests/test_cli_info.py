"""``spikeflow info`` / ``convert`` as a user runs them (the installed console command in a
subprocess, on real files), and the streaming statistics behind ``info``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tonic

import naive_formats as naive
from spikeflow.drivers.recording import formats, open_recording, read_recording
from spikeflow.drivers.stats import recording_stats, stats_of_reader
from spikeflow.drivers.stats_kernels import window_peak
from spikeflow.service.cli import main as cli_main

SPIKEFLOW = str(Path(sys.executable).with_name("spikeflow"))


def _run(*args, ok=True):
    out = subprocess.run([SPIKEFLOW, *map(str, args)], capture_output=True, text=True, timeout=120)
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def _peak_oracle(t, window_us):
    """Independent of the kernel: per start i, searchsorted for the window's end."""
    return int((np.searchsorted(t, t + window_us, side="left") - np.arange(len(t))).max())


def test_info_json_on_nmnist_matches_tonic(shared):
    path = shared("recordings/tonic-testdata/sample_nmnist.bin")
    d = json.loads(_run("info", path, "--json").stdout)
    ref = tonic.io.read_mnist_file(str(path), dtype=tonic.io.events_struct)
    t = ref["t"].astype(np.int64)
    assert d["format"] == "nmnist_bin"
    assert (d["width"], d["height"], d["channels"]) == (34, 34, 2)
    assert d["count"] == len(ref) == 4325
    assert (d["t_first_us"], d["t_last_us"]) == (int(t[0]), int(t[-1]))
    assert d["duration_us"] == int(t[-1] - t[0])
    assert d["mean_rate_hz"] == pytest.approx(len(t) / ((t[-1] - t[0]) * 1e-6))
    assert d["peak_rate_hz"]["1ms"] == pytest.approx(naive.window_peak(t, 1000) / 1e-3)
    assert d["peak_rate_hz"]["10ms"] == pytest.approx(naive.window_peak(t, 10_000) / 1e-2)
    assert d["on_count"] == int(ref["p"].sum()) and d["off_count"] == len(ref) - int(ref["p"].sum())
    assert d["on_fraction"] == pytest.approx(ref["p"].mean())
    assert d["sorted"] is True and d["file_bytes"] == path.stat().st_size


def test_info_human_output_on_gesture(shared):
    path = shared("recordings/slayer-dvsgesture/1.bs2")
    out = _run("info", path, "--sensor-size", "128x128").stdout
    assert "format      nmnist_bin" in out
    assert "resolution  128 x 128 (2 channels)" in out
    assert "events      63,471" in out  # MANIFEST.md
    assert "duration    1.449968 s" in out
    assert "polarity    ON 32,164 (50.7 %), OFF 31,307" in out


def test_info_json_on_largest_evt3(shared):
    if "evt3" not in formats():
        pytest.skip("evt3 reader not registered yet")
    path = shared("recordings/faery-testdata/evt3.raw")
    d = json.loads(_run("info", path, "--json").stdout)
    assert d["format"] == "evt3" and (d["width"], d["height"]) == (1280, 720)
    assert d["count"] == 1_218_618  # MANIFEST.md
    assert (d["t_first_us"], d["t_last_us"]) == (11_200_224, 21_968_221)
    ev, _ = read_recording(path)
    for w in (1000, 10_000):
        assert d["peak_rate_hz"][f"{w // 1000}ms"] == pytest.approx(_peak_oracle(ev["t"], w) / (w * 1e-6))
    assert d["on_count"] == int(np.count_nonzero(ev["p"] == 1))


def test_info_errors_are_clean(tmp_path, shared):
    junk = tmp_path / "junk.raw"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    out = _run("info", junk, ok=False)
    assert out.returncode == 2
    assert "spikeflow info: error:" in out.stderr and "junk.raw at byte 0: unknown recording format" in out.stderr
    assert "Traceback" not in out.stderr
    gest = shared("recordings/slayer-dvsgesture/1.bs2")
    out = _run("info", gest, ok=False)
    assert out.returncode == 2 and "outside the 34x34 sensor" in out.stderr
    out = _run("info", shared("recordings/tonic-testdata/sample_nmnist.bin"), "-o", "bogus=1", ok=False)
    assert out.returncode == 2 and "does not take option" in out.stderr


def test_a_missing_sensor_size_error_names_the_command_line_option(tmp_path, shared):
    """The readers word it for the Python API (``sensor_size=``); the CLI adds its own option."""
    npy = shared("recordings/expelliarmus-samples/evt3_sample.npy")
    for cmd in (("info", npy), ("convert", npy, tmp_path / "out.sfe")):
        out = _run(*cmd, ok=False)
        assert out.returncode == 2 and "sensor size unknown" in out.stderr, out.stderr
        assert "(on the command line: --sensor-size WxH)" in out.stderr
    out = _run("info", npy, "--sensor-size", "1280x720", "--json")
    assert json.loads(out.stdout)["count"] == 219_596


def test_convert_command_round_trip(shared, tmp_path):
    src = shared("recordings/slayer-dvsgesture/3.bs2")
    sfe = tmp_path / "g.sfe"
    out = _run("convert", src, sfe, "-o", "dataset=dvsgesture").stdout
    assert "converted 113,063 events" in out and "(native)" in out
    h5, txt = tmp_path / "g.h5", tmp_path / "g.txt"
    assert cli_main(["convert", str(sfe), str(h5)]) == 0  # in-process: the console path is covered above
    assert cli_main(["convert", str(h5), str(txt)]) == 0
    a = json.loads(_run("info", sfe, "--json").stdout)
    c = json.loads(_run("info", txt, "--json").stdout)
    for k in ("count", "width", "height", "t_first_us", "t_last_us", "peak_rate_hz", "on_count"):
        assert a[k] == c[k], k
    np.testing.assert_array_equal(read_recording(txt)[0], read_recording(src, dataset="dvsgesture")[0])


@pytest.mark.parametrize("seed", range(10))
def test_window_peak_kernel_matches_naive(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    t = np.sort(rng.integers(0, int(rng.integers(1, 50_000)), n)).astype(np.int64)
    w = int(rng.integers(1, 5000))
    peak, pending = window_peak(t, w, True)
    assert (peak, pending) == (naive.window_peak(t, w), n)
    peak2, pending2 = window_peak(t, w, False)
    assert np.all(t[pending2:] + w > t[-1]) and np.all(t[:pending2] + w <= t[-1])
    assert peak2 <= peak


@pytest.mark.parametrize("chunk", [1, 97, 5000, 1 << 20])
def test_stats_do_not_depend_on_chunking(shared, chunk):
    path = shared("recordings/slayer-nmnist/123.bs2")
    whole = recording_stats(path).to_dict()
    with open_recording(path, chunk_events=chunk) as rec:
        parts = stats_of_reader(rec).to_dict()
    assert parts == whole


def test_stats_of_unsorted_recording(tmp_path):
    from spikeflow.drivers.recording import open_writer
    from spikeflow.service.events import make_events
    ev = make_events([5, 3, 1000, 2], [0, 1, 2, 3], [0, 0, 0, 0], [1, 0, 1, 7])
    p = tmp_path / "u.sfe"
    with open_writer(p, (4, 1)) as w:
        w.write(ev)
    st = recording_stats(p)
    assert (st.count, st.t_first_us, st.t_last_us, st.duration_us) == (4, 2, 1000, 998)
    assert (st.on_count, st.off_count, st.other_polarity_count, st.sorted) == (2, 1, 1, False)
