"""Numba kernels of the event filters: pure array functions, per-pixel state passed in and mutated.

Both kernels take the event columns (``x``, ``y``, ``t``) and a per-pixel timestamp map
``last_t_us`` of shape (H, W), int64, that survives across packets (the node owns it). They
write a boolean ``keep`` mask and return how many events fell outside the sensor (those are
never kept and never touch the map). A trailing underscore marks that they mutate their
arguments (SpykeTorch's ``fire_`` convention).
"""

import numpy as np
from numba import njit

NEVER_US = -(1 << 62)
"""Timestamp of a pixel that never fired: far enough back that ``t - NEVER_US`` cannot overflow."""


@njit(cache=True)
def background_activity_(last_t_us, x, y, t, window_us, radius, eight, keep):
    """Background-activity filter (Delbruck 2008): keep an event when a *neighbour* pixel fired
    within the last ``window_us`` (``0 <= t - t_nb < window_us``), the event's own pixel excluded.

    Neighbourhood: the (2r+1)^2 square minus the centre (``eight`` true) or the 4-connected
    cross of radius r (``eight`` false). After the test, ``last_t_us[y, x] = t``.
    """
    h, w = last_t_us.shape
    out_of_range = 0
    for i in range(t.shape[0]):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        ti = t[i]
        if xi < 0 or yi < 0 or xi >= w or yi >= h:
            keep[i] = False
            out_of_range += 1
            continue
        ok = False
        for dy in range(-radius, radius + 1):
            yy = yi + dy
            if yy < 0 or yy >= h:
                continue
            for dx in range(-radius, radius + 1):
                if dx == 0 and dy == 0:
                    continue
                if not eight and dx != 0 and dy != 0:
                    continue
                xx = xi + dx
                if xx < 0 or xx >= w:
                    continue
                age = ti - last_t_us[yy, xx]
                if age >= 0 and age < window_us:
                    ok = True
                    break
            if ok:
                break
        keep[i] = ok
        last_t_us[yi, xi] = ti
    return out_of_range


@njit(cache=True)
def refractory_(last_t_us, x, y, t, refractory_us, keep):
    """Per-pixel refractory period: keep an event when its pixel's last *kept* event is at least
    ``refractory_us`` older (``t - t_last >= refractory_us``); only kept events reset the pixel.
    """
    h, w = last_t_us.shape
    out_of_range = 0
    for i in range(t.shape[0]):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        if xi < 0 or yi < 0 or xi >= w or yi >= h:
            keep[i] = False
            out_of_range += 1
            continue
        ti = t[i]
        if ti - last_t_us[yi, xi] >= refractory_us:
            keep[i] = True
            last_t_us[yi, xi] = ti
        else:
            keep[i] = False
    return out_of_range
