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


@contextmanager
def mapped_file(path: str) -> Iterator[mmap.mmap | None]:
    """The whole file mapped read-only, or None when it cannot be (the caller then takes its
    read path); unmapped on exit, or by the garbage collector if a view of it outlived the
    block (only when a kernel raised)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
    except (OSError, ValueError):
        yield None
        return
    try:
        yield mm
    finally:
        try:
            mm.close()
        except BufferError:
            pass
