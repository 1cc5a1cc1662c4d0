"""Await a condition in tests instead of sleeping a fixed time (one helper for every test file)."""

import time


def wait_until(pred, timeout_s=30.0, what="condition", step=None):
    """Return ``pred()``'s first truthy value; between tries call ``step()`` (e.g. receive one
    message) or sleep 5 ms. Raise TimeoutError naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout_s}s")
        if step is not None:
            step()
        else:
            time.sleep(0.005)
