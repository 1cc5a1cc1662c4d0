"""The last seq a sink has handled per replayable stream, in a small memory-mapped file.

A ``publish`` in the same worker as a resumed source dies with it; its successor must know what
was already published, or subscribers get the source's repeats again (docs/daemon.md,
"Resume"). :class:`SentSeqs` keeps that knowledge where a ``kill -9`` cannot take it: a file
mapped ``MAP_SHARED``, whose pages belong to the operating system's page cache, so a store
into them is in the file as soon as the instruction has run (no syscall, no flush). It does
not survive a crash of the machine; nothing of the daemon does.

Layout (little-endian, fixed size, written whole when the file is created)::

    magic  8 bytes  b"SFSEQ\\x00\\x00\\x01"
    slots  u32      number of slots
    pad    u32      0
    slots × (key u64, seq i64)   key: first 8 bytes of blake2b(stream name); seq -1: none yet

Every stream gets its slot when the file is created (all replayable streams of the graph, in
sorted order), so :meth:`SentSeqs.mark` is one dict lookup and one aligned 8-byte store.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

MAGIC = b"SFSEQ\x00\x00\x01"
HEADER = struct.Struct("<8sII")
SLOT = struct.Struct("<Qq")


class SeqFileError(ValueError):
    """A seq file that cannot be trusted (wrong magic, size, unknown stream, bad seq)."""


def stream_key(stream: str) -> int:
    """A stream name's slot key (stable across processes, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(stream.encode(), digest_size=8).digest(), "little")


def read_seqs(path: Path, streams: Iterable[str]) -> dict[str, int]:
    """The seqs in the file at ``path`` for ``streams`` (those with a seq >= 0).

    Raises FileNotFoundError if it is missing, :class:`SeqFileError` if it is not a whole,
    consistent seq file for these streams."""
    data = Path(path).read_bytes()
    if len(data) < HEADER.size:
        raise SeqFileError(f"{path}: {len(data)} bytes, shorter than the header")
    magic, n, _ = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SeqFileError(f"{path}: not a seq file (magic {magic!r})")
    if len(data) != HEADER.size + n * SLOT.size:
        raise SeqFileError(f"{path}: {len(data)} bytes for {n} slots (expected {HEADER.size + n * SLOT.size})")
    names = {stream_key(s): s for s in streams}
    out = {}
    for i in range(n):
        key, seq = SLOT.unpack_from(data, HEADER.size + i * SLOT.size)
        if key not in names:
            raise SeqFileError(f"{path}: slot {i} names no stream of this graph")
        if seq < -1:
            raise SeqFileError(f"{path}: slot {i} ({names[key]}) holds seq {seq}")
        if seq >= 0:
            out[names[key]] = seq
    return out


class SentSeqs:
    """A new seq file at ``path`` with a slot per stream of ``streams``, starting at ``seeds``.

    Created whole under a temporary name and renamed over ``path``: a kill during creation
    leaves the previous file or the new one, never a partial one."""

    def __init__(self, path: Path, streams: Iterable[str], seeds: Mapping[str, int] | None = None):
        self.path = Path(path)
        names = sorted(set(streams))
        keys = [stream_key(s) for s in names]
        if len(set(keys)) != len(keys):  # (8-byte hashes of a graph's few stream names)
            raise SeqFileError(f"{path}: two stream names share a slot key")
        seeds = dict(seeds or {})
        buf = bytearray(HEADER.pack(MAGIC, len(names), 0))
        for s, key in zip(names, keys):
            buf += SLOT.pack(key, int(seeds.get(s, -1)))
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(buf)
        os.replace(tmp, self.path)
        fd = os.open(self.path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, len(buf), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)   # (the mapping keeps the file)
        self._words = memoryview(self._map).cast("q")
        # the seq of slot i is word 2 + 2 i + 1 (the header is two words)
        self._index = {s: HEADER.size // 8 + 2 * i + 1 for i, s in enumerate(names)}

    def mark(self, stream: str, seq: int) -> None:
        """``seq`` of ``stream`` was handled (a stream without a slot is ignored)."""
        i = self._index.get(stream)
        if i is not None and self._words is not None:
            self._words[i] = seq

    def close(self, remove: bool = True) -> None:
        """Unmap; ``remove`` the file too (a clean end: nothing will resume from it)."""
        if self._words is not None:
            self._words.release()
            self._words = None
            self._map.close()
        if remove:
            self.path.unlink(missing_ok=True)
