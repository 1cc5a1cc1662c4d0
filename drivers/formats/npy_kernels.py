"""Numba kernel for .npy event arrays: copy four (strided, any integer dtype) columns into the
event array's fields in one pass, about twice as fast as four numpy field assignments.

Pure array function (numpy/numba only). The caller checks that every value fits.
"""

from numba import njit


@njit(cache=True)
def copy_columns(src_t, src_x, src_y, src_p, t, x, y, p):
    """t[i], x[i], y[i], p[i] = src_t[i], src_x[i], src_y[i], src_p[i] for every i."""
    for i in range(src_t.shape[0]):
        t[i] = src_t[i]
        x[i] = src_x[i]
        y[i] = src_y[i]
        p[i] = src_p[i]
