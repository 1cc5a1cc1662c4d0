"""Numba kernels for recording statistics: the peak event count in a sliding time window.

Pure array functions (numpy/numba only).
"""

from numba import njit


@njit(cache=True)
def window_peak(t, window_us, final):
    """Largest count of events in ``[t[i], t[i] + window_us)`` over window starts i, t sorted.

    A start whose window reaches past ``t[-1]`` is only decided when ``final`` (end of the
    stream); otherwise it is left pending. Returns ``(peak, first_pending)``: the caller
    carries ``t[first_pending:]`` over to the next chunk. Two pointers, O(n).
    """
    n = t.shape[0]
    peak = 0
    j = 0
    i = 0
    while i < n:
        end = t[i] + window_us
        if not final and end > t[n - 1]:
            break
        if j < i:
            j = i
        while j < n and t[j] < end:
            j += 1
        if j - i > peak:
            peak = j - i
        i += 1
    return peak, i
