"""The node thread's inbox: packets from source threads and control calls, with a pollable wake-up.

Why not a ``queue.Queue``: its ``get`` blocks on a condition variable, so the node thread could
not also wait on ZeroMQ sockets (the incoming edges) and every packet paid a lock, a condition
notify and a timed wait. Here producers append to a ``deque`` (atomic under the GIL) and write
an eventfd (a pipe where there is none) *only while the node thread is asleep*; the node thread
polls that descriptor in the same ``zmq.Poller`` as its edge sockets, so a packet or a control
call wakes it at once and no wake-up is lost::

    node thread                           producer
    sleeping = True                       append(item)
    if deque: do not sleep                if sleeping: write(waker)
    poll(waker, sockets...)
    sleeping = False; read(waker)

Under the GIL these steps are sequentially consistent: either the producer sees ``sleeping``
and writes, or the node thread sees the item before it sleeps.

Backpressure (sources are lossless): :meth:`put` waits while ``limit`` items are queued, and
waiting producers are released once the node thread has worked the inbox down to half, so a
producer faster than the nodes is woken once per ``limit / 2`` packets rather than per packet.
Control calls (:meth:`put_nowait`) never wait: a snapshot request must not queue behind data.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class Inbox:
    """Bounded multi-producer, single-consumer hand-over to the node thread (see the module doc)."""

    def __init__(self, limit: int, wait_s: float = 0.05):
        if limit < 1:
            raise ValueError(f"inbox limit must be >= 1, got {limit}")
        self.limit = int(limit)
        self.low = self.limit // 2
        self.wait_s = wait_s
        self._items: deque = deque()
        self._space = threading.Event()
        self._space.set()
        self.sleeping = False
        self.wakeups = 0           # waker writes (how often the node thread had to be woken)
        self.full_waits = 0        # times a producer found the inbox full (backpressure)
        if hasattr(os, "eventfd"):
            self._rfd = self._wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux
            self._rfd, self._wfd = os.pipe()
            os.set_blocking(self._rfd, False)
            os.set_blocking(self._wfd, False)
        self._closed = False
        self._fd_lock = threading.Lock()   # a late wake-up never writes to a closed (reused) descriptor

    def fileno(self) -> int:
        """Descriptor that is readable while a wake-up is pending (register it for POLLIN)."""
        return self._rfd

    def __len__(self) -> int:
        return len(self._items)

    # -- producers (any thread) ---------------------------------------------------------------
    def put(self, item: Any, give_up: Callable[[], bool] | None = None) -> bool:
        """Append ``item``, first waiting while the inbox is full; False (item not queued) once
        ``give_up()`` is true while waiting."""
        items = self._items
        while len(items) >= self.limit:
            self._space.clear()
            if len(items) < self.limit:  # the consumer made room between the check and the clear
                break
            self.full_waits += 1
            if not self._space.wait(self.wait_s) and give_up is not None and give_up():
                return False
        items.append(item)
        if self.sleeping:
            self._wake()
        return True

    def put_nowait(self, item: Any) -> None:
        """Append ``item`` whatever the inbox holds (control calls) and wake the node thread."""
        self._items.append(item)
        if self.sleeping:
            self._wake()

    def _wake(self) -> None:
        with self._fd_lock:
            if self._closed:
                return
            self.wakeups += 1
            try:
                if self._rfd == self._wfd:
                    os.eventfd_write(self._wfd, 1)
                else:  # pragma: no cover - non-Linux
                    os.write(self._wfd, b"\0")
            except BlockingIOError:
                pass  # the pipe is full: a wake-up is pending anyway

    # -- the node thread ----------------------------------------------------------------------
    def pop(self) -> Any | None:
        """Oldest item, or None when empty; releases waiting producers at the low-water mark."""
        items = self._items
        try:
            item = items.popleft()
        except IndexError:
            return None
        if len(items) <= self.low and not self._space.is_set():
            self._space.set()
        return item

    def may_sleep(self) -> bool:
        """Announce that the node thread is about to wait; False if items are already here
        (then poll without waiting). Follow every call with :meth:`awake`."""
        self.sleeping = True
        if self._items:
            self.sleeping = False
            return False
        return True

    def awake(self) -> None:
        """The node thread is running again and its poll reported :meth:`fileno` readable:
        consume the wake-up (without that report, setting ``sleeping = False`` is enough)."""
        self.sleeping = False
        try:
            if self._rfd == self._wfd:
                os.eventfd_read(self._rfd)
            else:  # pragma: no cover - non-Linux
                while os.read(self._rfd, 4096):
                    pass
        except (BlockingIOError, OSError):
            pass

    def release_producers(self) -> None:
        """Let every waiting producer re-check (e.g. the node thread stops consuming)."""
        self._space.set()

    def close(self) -> None:
        """Release the descriptors (items still queued stay readable with :meth:`pop`)."""
        with self._fd_lock:
            if self._closed:
                return
            self._closed = True
            self.sleeping = False
            os.close(self._rfd)
            if self._wfd != self._rfd:  # pragma: no cover - non-Linux
                os.close(self._wfd)
