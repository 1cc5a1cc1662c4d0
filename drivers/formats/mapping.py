"""A read-only memory map of a whole recording, for ``read_all`` paths that decode straight from
the page cache (no copy of the file into a buffer).

A file truncated by another process while it is mapped raises SIGBUS on access, as with
``np.memmap``/``np.load(mmap_mode=...)``; the streaming readers read blocks instead.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager


def map_whole(fd: int) -> mmap.mmap | None:
    """The whole file behind an open descriptor mapped read-only, or None when it cannot be
    (an empty file, a pipe, no address space)."""
    try:
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def unmap(mm: mmap.mmap) -> None:
    """Unmap now, or leave it to the garbage collector if a view of it is still alive (only
    when a kernel raised and its traceback holds one)."""
    try:
        mm.close()
    except BufferError:
        pass


@contextmanager
def mapped_file(path: str) -> Iterator[mmap.mmap | None]:
    """The whole file mapped read-only, or None when it cannot be (the caller then takes its
    read path); unmapped on exit."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            mm = map_whole(fd)
        finally:
            os.close(fd)
    except OSError:
        mm = None
    try:
        yield mm
    finally:
        if mm is not None:
            unmap(mm)
