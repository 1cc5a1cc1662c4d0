"""The node thread's inbox: FIFO per producer, bounded, woken through a pollable descriptor."""

from __future__ import annotations

import threading
import time

import pytest
import zmq
from spikeflow.service.worker_inbox import Inbox
from waiting import wait_until


def readable(inbox: Inbox, timeout_ms: int = 0) -> bool:
    poller = zmq.Poller()
    poller.register(inbox.fileno(), zmq.POLLIN)
    return bool(poller.poll(timeout_ms))


def test_producers_keep_their_order_and_the_bound_holds():
    """Three producers, a consumer slower than them: every item arrives once, each producer's in
    order, and the inbox never holds more than its limit."""
    inbox = Inbox(4, wait_s=0.01)
    n = 500
    producers = [threading.Thread(target=lambda k=k: [inbox.put((k, i)) for i in range(n)]) for k in range(3)]
    for t in producers:
        t.start()
    got, peak = [], 0
    while len(got) < 3 * n:
        peak = max(peak, len(inbox))
        item = inbox.pop()
        if item is None:
            time.sleep(0.0005)
            continue
        got.append(item)
    for t in producers:
        t.join(10)
    assert peak <= 4
    for k in range(3):
        assert [i for kk, i in got if kk == k] == list(range(n))
    assert inbox.full_waits > 0   # the producers did wait: backpressure, not dropping


def test_waiting_producers_are_released_at_the_low_water_mark():
    inbox = Inbox(4, wait_s=5.0)
    for i in range(4):
        assert inbox.put(i)
    done = threading.Event()
    t = threading.Thread(target=lambda: (inbox.put(4), done.set()))
    t.start()
    wait_until(lambda: inbox.full_waits == 1, what="producer blocked on the full inbox")
    assert inbox.pop() == 0 and len(inbox) == 3
    assert not done.wait(0.05)        # above the low-water mark (2): still waiting
    assert inbox.pop() == 1           # down to 2: released
    assert done.wait(5.0)
    t.join(5)
    assert [inbox.pop() for _ in range(4)] == [2, 3, 4, None]


def test_put_gives_up_when_asked():
    inbox = Inbox(1, wait_s=0.01)
    assert inbox.put("a")
    flag = threading.Event()
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("ok", inbox.put("b", give_up=flag.is_set)))
    t.start()
    wait_until(lambda: inbox.full_waits > 0, what="producer waiting")
    flag.set()
    t.join(5)
    assert res == {"ok": False} and inbox.pop() == "a" and inbox.pop() is None


def test_control_items_never_wait():
    inbox = Inbox(2)
    inbox.put(1)
    inbox.put(2)
    inbox.put_nowait("call")          # full of data: a control item still goes in, at once
    assert [inbox.pop() for _ in range(4)] == [1, 2, "call", None]


def test_wakeup_only_while_the_consumer_sleeps():
    """A put wakes a sleeping consumer through the descriptor; a busy consumer costs no write."""
    inbox = Inbox(8)
    inbox.put("busy")                 # consumer not sleeping: no wake-up written
    assert inbox.wakeups == 0 and not readable(inbox)
    assert not inbox.may_sleep()      # items present: it must not sleep
    assert inbox.pop() == "busy"
    assert inbox.may_sleep()
    threading.Thread(target=lambda: (time.sleep(0.05), inbox.put_nowait("call"))).start()
    assert readable(inbox, 10_000)    # woken by the put, long before the poll's timeout
    inbox.awake()
    assert inbox.wakeups == 1 and not readable(inbox) and inbox.pop() == "call"


def test_no_lost_wakeup_under_contention():
    """Many producer/consumer races on the sleep flag: the consumer never sleeps through an item
    (each poll waits up to 10 s, so a lost wake-up fails the test)."""
    inbox = Inbox(16)
    n = 3000
    t = threading.Thread(target=lambda: [inbox.put(i) for i in range(n)])
    t.start()
    got = []
    while len(got) < n:
        item = inbox.pop()
        if item is not None:
            got.append(item)
            continue
        if inbox.may_sleep():
            assert readable(inbox, 10_000), f"lost wake-up after {len(got)} items"
            inbox.awake()
        else:
            inbox.sleeping = False
    t.join(5)
    assert got == list(range(n))


def test_close_is_idempotent_and_late_producers_are_harmless():
    inbox = Inbox(2)
    inbox.may_sleep()
    inbox.close()
    inbox.close()
    inbox.put_nowait("late")          # after close: queued, no write to a closed descriptor
    assert inbox.pop() == "late" and inbox.wakeups == 0
    with pytest.raises(ValueError):
        Inbox(0)
