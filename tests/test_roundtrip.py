"""Every writer's output reads back bit-exactly, and ``spikeflow convert`` of real files to .sfe
and back gives identical arrays. Formats still being written are skipped with the reason."""

from __future__ import annotations

import numpy as np
import pytest

from spikeflow.drivers.recording import formats, open_recording, open_writer, read_recording
from spikeflow.service.cli import main as cli_main
from spikeflow.service.events import EVENT_DTYPE

WRITERS = ["native", "evt3", "aedat31", "aedat4", "nmnist_bin", "tonic_npy", "hdf5", "text"]
REAL = {  # one real file per readable format (+ reader options)
    "evt3": ("faery-testdata/evt3.raw", {}),
    "evt2": ("faery-testdata/evt2.raw", {}),
    "dat": ("faery-testdata/gen4.dat", {}),
    "aedat4": ("tonic-testdata/sample.aedat4", {}),
    "aedat2": ("mnist-dvs/mnist_0_scale04_0001.aedat", {}),
    "nmnist_bin": ("slayer-dvsgesture/6.bs2", {"dataset": "dvsgesture"}),
    "tonic_npy": ("expelliarmus-samples/evt3_sample.npy", {"sensor_size": (1280, 720)}),
}


def _fmt(name):
    fm = formats()
    if name not in fm:
        pytest.skip(f"format {name!r} is not registered yet")
    return fm[name]


@pytest.fixture(scope="module")
def real_events():
    from conftest import shared_file
    return read_recording(shared_file("recordings/slayer-dvsgesture/8.bs2"), dataset="dvsgesture")[0]


@pytest.mark.parametrize("name", WRITERS)
@pytest.mark.parametrize("t_shift_us", [0, 20_000_000])  # 20 s: past 24-bit (EVT3) and 23-bit (N-MNIST) time fields
def test_writer_round_trips_bit_exactly(real_events, tmp_path, name, t_shift_us):
    fmt = _fmt(name)
    if fmt.writer is None:
        pytest.skip(f"format {name!r} has no writer yet")
    ev = real_events.copy()
    ev["t"] += t_shift_us
    path = tmp_path / f"out{fmt.extensions[0]}"
    with open_writer(path, (128, 128, 2), format=name) as w:
        for part in np.array_split(ev, 5):
            w.write(part)
    with open_recording(path, format=name, chunk_events=20_000) as rec:
        assert rec.info.sensor_size[:2] == (128, 128)
        back = rec.read_all()
    assert back.dtype == EVENT_DTYPE
    assert len(back) == len(ev)
    for k in "txyp":
        np.testing.assert_array_equal(back[k], ev[k], err_msg=f"{name}: field {k}")


@pytest.mark.parametrize("name", sorted(REAL))
def test_convert_real_file_to_sfe_and_back(shared, tmp_path, name):
    _fmt(name)
    rel, opts = REAL[name]
    src = shared(f"recordings/{rel}")
    ref, info = read_recording(src, **opts)
    args = []
    if "dataset" in opts:
        args += ["-o", f"dataset={opts['dataset']}"]
    if "sensor_size" in opts:
        args += ["--sensor-size", "x".join(map(str, opts["sensor_size"]))]
    sfe = tmp_path / "conv.sfe"
    assert cli_main(["convert", str(src), str(sfe), *args]) == 0
    got, ginfo = read_recording(sfe)
    assert ginfo.sensor_size == info.sensor_size
    assert got.tobytes() == ref.tobytes()
    fmt = formats()[name]
    if fmt.writer is not None:  # and back into the original format
        back = tmp_path / f"back{fmt.extensions[0]}"
        assert cli_main(["convert", str(sfe), str(back), "--format", name]) == 0
        again, ainfo = read_recording(back, format=name)  # sensor size travels (header or sidecar)
        assert ainfo.sensor_size == info.sensor_size
        assert again.tobytes() == ref.tobytes()


def test_convert_refuses_to_overwrite_and_cleans_up(shared, tmp_path, capsys):
    src = shared("recordings/tonic-testdata/sample_nmnist.bin")
    out = tmp_path / "x.sfe"
    out.write_bytes(b"keep")
    assert cli_main(["convert", str(src), str(out)]) == 2
    assert out.read_bytes() == b"keep" and "exists" in capsys.readouterr().err
    gest = shared("recordings/slayer-dvsgesture/1.bs2")  # needs 128x128: fails mid-stream at 34x34
    bad = tmp_path / "bad.sfe"
    assert cli_main(["convert", str(gest), str(bad)]) == 2
    assert not bad.exists()
    assert "outside the 34x34 sensor" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["native", "nmnist_bin", "tonic_npy", "hdf5", "text"])
def test_empty_recording_round_trips_with_its_sensor_size(tmp_path, name):
    fmt = _fmt(name)
    path = tmp_path / f"empty{fmt.extensions[0]}"
    with open_writer(path, (32, 24, 2)):
        pass
    ev, info = read_recording(path)  # detected, not told
    assert info.format == name and len(ev) == 0 and ev.dtype == EVENT_DTYPE
    assert info.sensor_size == (32, 24, 2)
