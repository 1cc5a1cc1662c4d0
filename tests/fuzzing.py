"""Mutation fuzzing of readers on real files: every mutant either decodes or raises RecordingError.

Used by each format's test file::

    from fuzzing import fuzz_reader
    fuzz_reader(real_path, tmp_path, format="evt3", n_mutants=1000)

A mutant must never hang (each decode has a time budget), never raise anything but
RecordingError, and never allocate far beyond its own size (checked with tracemalloc).
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np

from spikeflow.drivers.recording import open_recording
from spikeflow.service.errors import RecordingError


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random structural mutation: bit flips, byte overwrites, truncation, splices, repeats."""
    b = bytearray(data)
    kind = rng.integers(0, 6)
    n = len(b)
    if n == 0:
        return bytes(rng.integers(0, 256, 16, dtype=np.uint8))
    if kind == 0:  # flip bits
        for i in rng.integers(0, n, rng.integers(1, 9)):
            b[i] ^= 1 << int(rng.integers(0, 8))
    elif kind == 1:  # overwrite a run with random bytes
        i = int(rng.integers(0, n))
        k = int(rng.integers(1, 64))
        b[i:i + k] = bytes(rng.integers(0, 256, k, dtype=np.uint8))
    elif kind == 2:  # truncate
        b = b[: int(rng.integers(0, n))]
    elif kind == 3:  # overwrite with extreme values (0x00 / 0xff)
        i = int(rng.integers(0, n))
        k = int(rng.integers(1, 16))
        b[i:i + k] = (b"\xff" if rng.integers(0, 2) else b"\x00") * k
    elif kind == 4:  # duplicate a slice somewhere else
        i, j = sorted(rng.integers(0, n, 2))
        k = int(rng.integers(0, n))
        b[k:k] = b[i:j][:4096]
    else:  # delete a slice
        i = int(rng.integers(0, n))
        del b[i:i + int(rng.integers(1, 256))]
    return bytes(b)


def decode_or_error(path: Path, format: str | None, time_budget_s: float = 5.0,
                    memory_factor: float = 64.0, chunk_events: int = 1 << 16) -> str:
    """Decode ``path``; return "ok" or "error". Anything else (other exception, hang, blow-up) fails."""
    size = max(path.stat().st_size, 1)
    t0 = time.monotonic()
    tracemalloc.start()
    try:
        with open_recording(path, format=format, chunk_events=chunk_events) as rec:
            for _ in rec:
                if time.monotonic() - t0 > time_budget_s:
                    raise AssertionError(f"decoding {path} exceeded {time_budget_s}s")
        return "ok"
    except RecordingError:
        return "error"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        limit = memory_factor * size + 14 * chunk_events * 8 + (32 << 20)
        assert peak <= limit, f"decoding {path} peaked at {peak} bytes (> {limit})"


def fuzz_reader(real_file: Path, tmp_path: Path, format: str | None, n_mutants: int = 1000,
                seed: int = 0, head_bytes: int | None = 1 << 16) -> dict[str, int]:
    """Run ``n_mutants`` mutations of ``real_file`` (its first ``head_bytes``) through the reader.

    ``format=None`` also exercises detection (a mutant may then be "unknown format").
    Returns the outcome counts; fails the calling test on any non-RecordingError exception.
    """
    data = Path(real_file).read_bytes()
    if head_bytes is not None:
        data = data[:head_bytes]
    rng = np.random.default_rng(seed)
    counts = {"ok": 0, "error": 0}
    target = tmp_path / f"mutant{Path(real_file).suffix}"
    for i in range(n_mutants):
        target.write_bytes(mutate(data, rng))
        try:
            counts[decode_or_error(target, format)] += 1
        except RecordingError:
            counts["error"] += 1
        except Exception as e:  # noqa: BLE001 - the point is to report any other exception
            raise AssertionError(f"mutant {i} (seed {seed}) of {real_file} raised {type(e).__name__}: {e}") from e
    return counts
