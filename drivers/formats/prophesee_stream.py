"""Streaming base of the Prophesee readers (EVT 2.0, EVT 3.0, DAT).

Why a shared base: the three formats differ only in word size, header checks and decode
kernel. The file is read in byte chunks into one reusable buffer; a numba kernel decodes the
words into an ``EVENT_DTYPE`` array, carrying its state (time base, row, vector base,
polarity, wraps) across chunk boundaries, so memory is bounded by the chunk size.
``read_all`` (``read_recording``) maps the file instead and decodes it into one array.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator

import numpy as np

from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE

from ..recording import DEFAULT_CHUNK_EVENTS, Reader, RecordingInfo
from . import prophesee_kernels as K
from .prophesee_header import PropheseeHeader, read_header, sensor_size_from_header

TIME_POLICIES = {"monotonic": K.POLICY_MONOTONIC, "spec": K.POLICY_SPEC, "strict": K.POLICY_STRICT}
MIN_READ_BYTES = 1 << 16
MAX_READ_BYTES = 1 << 24
MAP_SLICE_BYTES = 1 << 22  # read_all decodes the mapped file in slices of 4 MiB, unmapping each after


class PropheseeReader(Reader):
    """Chunked reader over fixed-size words after a '%' header.

    Options (through ``open_recording(path, **options)``):
        sensor_size: (width, height) used when the header names none (or to override it).
        time_policy: what to do when a timestamp steps backwards (not a wrap):
            ``"monotonic"`` (default) clamps to the running maximum, so ``t`` never decreases
            (the graph slices time by binary search); ``"spec"`` keeps the raw decoded value,
            like the reference spec decoders; ``"strict"`` raises RecordingError.
        read_bytes: bytes per file read (default: from ``chunk_events``, 64 KiB..16 MiB);
            rounded down to whole words. Decoding state carries across reads.
    """

    unit_bytes = 2                      # bytes per decode unit (EVT3 word, EVT2 word, DAT event)
    word_dtype = np.dtype("<u2")        # dtype handed to the kernel
    kernel: Callable = staticmethod(K.evt3_decode)
    max_coord = 2048

    def __init__(self, path, chunk_events: int = DEFAULT_CHUNK_EVENTS, sensor_size=None,
                 time_policy: str = "monotonic", read_bytes: int | None = None):
        if time_policy not in TIME_POLICIES:
            raise ValueError(f"time_policy must be one of {sorted(TIME_POLICIES)}, got {time_policy!r}")
        self.time_policy = time_policy
        if read_bytes is not None and int(read_bytes) <= 0:
            raise ValueError(f"read_bytes must be > 0, got {read_bytes}")
        self._read_bytes = read_bytes
        self._explicit_size = sensor_size
        self._state = None
        super().__init__(path, chunk_events)

    # subclasses check the header (and read any binary preamble) here
    def _check_header(self, hdr: PropheseeHeader) -> int:
        """Return the byte offset where the words start."""
        return hdr.data_offset

    def _layout_version(self, hdr: PropheseeHeader) -> int:
        return 2

    def _open(self) -> RecordingInfo:
        hdr = read_header(self.path)
        self._data_start = self._check_header(hdr)
        ss, source = sensor_size_from_header(hdr, self.path, self._explicit_size, self.max_coord)
        self._version = self._layout_version(hdr)
        self._size = self.path.stat().st_size
        extra = {"header": dict(hdr.fields), "sensor_size_source": source,
                 "time_policy": self.time_policy, "data_offset": self._data_start}
        if hdr.evt_version:
            extra["evt_version"] = hdr.evt_version
        return RecordingInfo(str(self.path), self.format_name, ss, extra)

    @property
    def stats(self) -> dict:
        """Decoder counters after (or during) iteration."""
        st = self._state
        if st is None:
            return {}
        return {"wraps": int(st[K.ST_LOOPS]), "skipped_words": int(st[K.ST_SKIPPED]),
                "triggers": int(st[K.ST_TRIGGERS]), "backwards_events": int(st[K.ST_BACKWARDS])}

    def _error(self, status: int, unit_index: int) -> RecordingError:
        st = self._state
        bad = int(st[K.ST_BAD])
        off = self._data_start + unit_index * self.unit_bytes
        ss = self.info.sensor_size
        if status == K.ERR_X:
            msg = f"event x={bad} is outside the sensor (expected x < width {ss.width})"
        elif status == K.ERR_Y:
            msg = f"event y={bad} is outside the sensor (expected y < height {ss.height})"
        elif status == K.ERR_TYPE:
            msg = self._type_error(bad)
        elif status == K.ERR_BACKWARDS:
            msg = (f"timestamp goes backwards to {bad} us, below the running maximum "
                   f"{int(st[K.ST_MAX])} us (time_policy='strict'; 'monotonic' clamps, 'spec' keeps it)")
        elif status == K.ERR_POLARITY:
            msg = f"polarity value {bad} (expected 0 or 1)"
        elif status == K.ERR_SMALL_OUT:
            msg = f"decoder output buffer below {K.MIN_OUT_EVENTS} events (internal error)"
        else:  # pragma: no cover - the kernels return only the codes above
            msg = f"decoder status {status}"
        return RecordingError(self.path, msg, off)

    def _type_error(self, typ: int) -> str:
        return f"unknown word type 0x{typ:X}"

    def _blocks(self, read_bytes: int) -> Iterator[tuple[np.ndarray, int]]:
        """``(words, first unit index)`` per file read, in one reused buffer (cache-resident);
        a partial word is carried to the next read; trailing bytes at the end are an error."""
        ub = self.unit_bytes
        buf = np.empty(read_bytes + ub, np.uint8)
        units_before = 0      # units in earlier reads
        carry = 0             # bytes of a partial unit kept at the start of buf
        with open(self.path, "rb") as f:
            f.seek(self._data_start)
            while True:
                got = f.readinto(memoryview(buf)[carry:carry + read_bytes])
                if got == 0:
                    if carry:
                        raise RecordingError(self.path, f"truncated data: {carry} trailing byte(s) do not form "
                                                        f"a whole {ub}-byte word",
                                             self._data_start + units_before * ub)
                    return
                total = carry + got
                whole = total // ub * ub
                yield buf[:whole].view(self.word_dtype), units_before
                units_before += whole // ub
                carry = total - whole
                if carry:
                    buf[:carry] = buf[whole:total]

    def _new_state(self) -> np.ndarray:
        ss = self.info.sensor_size
        self._state = K.new_state(ss.width, ss.height, TIME_POLICIES[self.time_policy], self._version)
        return self._state

    def _chunks(self) -> Iterator[np.ndarray]:
        st = self._new_state()
        cap = max(self.chunk_events, 2 * K.MIN_OUT_EVENTS)
        ub = self.unit_bytes
        if self._read_bytes is None:
            read_bytes = min(max(self.chunk_events * ub, MIN_READ_BYTES), MAX_READ_BYTES) // ub * ub
        else:
            read_bytes = max(int(self._read_bytes) // ub, 1) * ub
        kernel = self.kernel
        out = np.empty(cap, EVENT_DTYPE)
        n = 0
        for words, unit0 in self._blocks(read_bytes):
            pos = 0
            while True:
                pos, n, status = kernel(words, pos, out, n, st)
                if status < 0:
                    raise self._error(status, unit0 + pos)
                if status != K.STATUS_FULL:
                    break
                yield from self._split(out, n)
                out = np.empty(cap, EVENT_DTYPE)
                n = 0
        if n:
            yield from self._split(out, n)

    def read_all(self) -> np.ndarray:
        """Every event as one array: the data region memory-mapped and decoded straight into one
        output sized by ``_capacity_hint`` (grown by doubling if the file packs more events than
        guessed); returns the used part.

        Why not the chunk loop: mapping skips the copy of every byte into a read buffer, and a
        single output needs no joins. The mapping is decoded in 4 MiB slices, each released from
        the resident set once decoded (MADV_DONTNEED), so the file does not count on top of the
        result. Errors (file, offset, message) are those of iteration.
        """
        st = self._new_state()
        ub = self.unit_bytes
        with open(self.path, "rb") as f:
            nbytes = max(os.fstat(f.fileno()).st_size - self._data_start, 0)
            nunits = nbytes // ub
            n = 0
            if not nunits:
                out = np.empty(0, EVENT_DTYPE)
            else:
                # the mapping stays alive only as long as ``words`` (no explicit close: an error's
                # traceback may still hold the array)
                try:
                    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError):  # a file system that cannot map files: the chunk loop
                    return Reader.read_all(self)
                words = np.frombuffer(m, np.uint8, nunits * ub, self._data_start).view(self.word_dtype)
                out = np.empty(self._capacity_hint(nunits, words) + 2 * K.MIN_OUT_EVENTS, EVENT_DTYPE)
                per_unit = ub // self.word_dtype.itemsize  # kernel words per unit (DAT: t and data)
                step = max(MAP_SLICE_BYTES // ub, 1)
                pos = released = 0
                while pos < nunits:  # slices of the mapping, each unmapped once decoded
                    view = words[:min(pos + step, nunits) * per_unit]
                    while True:
                        pos, n, status = self.kernel(view, pos, out, n, st)
                        if status < 0:
                            raise self._error(status, pos)
                        if status != K.STATUS_FULL:
                            break
                        bigger = np.empty(2 * len(out), EVENT_DTYPE)
                        bigger[:n].view(np.uint8)[:] = out[:n].view(np.uint8)  # raw bytes: a structured copy is slow
                        out = bigger
                    done = (self._data_start + pos * ub) // mmap.PAGESIZE * mmap.PAGESIZE
                    if pos < nunits and done > released and hasattr(mmap, "MADV_DONTNEED"):
                        # the file's pages stay cached; only this process's resident set shrinks
                        # (after the last slice the whole mapping goes anyway)
                        m.madvise(mmap.MADV_DONTNEED, released, done - released)
                        released = done
                del words, view, m
        if nbytes % ub:
            raise RecordingError(self.path, f"truncated data: {nbytes % ub} trailing byte(s) do not form "
                                            f"a whole {ub}-byte word", self._data_start + nunits * ub)
        # a view, not a trimmed copy or realloc: freeing the whole block lets the allocator hand
        # it to the next decode without faulting in fresh pages (a realloc-shrunk block does not)
        return out[:n]

    def _capacity_hint(self, n_units: int, words: np.ndarray) -> int:
        """Output slots for ``read_all`` to allocate for ``n_units`` units (the kernel's
        ``words``); grown by doubling when exceeded. EVT 2.0 and DAT make at most one event per unit."""
        return n_units

    def _split(self, out: np.ndarray, n: int) -> Iterator[np.ndarray]:
        c = self.chunk_events
        for i in range(0, n, c):
            yield out[i:min(i + c, n)]
