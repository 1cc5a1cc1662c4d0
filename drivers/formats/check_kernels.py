"""Numba kernel shared by the simple formats' readers: one pass over a decoded chunk to find the
first event outside the sensor or going back in time (pure array function)."""

from numba import njit

OK = 0
OUTSIDE = 1
BACKWARDS = 2


@njit(cache=True)
def first_invalid(t, x, y, width, height, last_t, check_order):
    """(index, code) of the first bad event, or (-1, OK).

    Bad: x not in [0, width), y not in [0, height), or (when ``check_order``) t below the
    previous event's t (``last_t`` for the first event of the chunk).
    """
    prev = last_t
    for i in range(t.shape[0]):
        if x[i] < 0 or x[i] >= width or y[i] < 0 or y[i] >= height:
            return i, OUTSIDE
        if check_order:
            if t[i] < prev:
                return i, BACKWARDS
            prev = t[i]
    return -1, OK
