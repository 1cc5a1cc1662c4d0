"""check_chunk: the shared validation of decoded chunks (bounds, time order), with the error
naming the byte offset (or the named location) of the first bad event."""

import numpy as np
import pytest
from spikeflow.drivers.formats.checks import check_chunk
from spikeflow.service.errors import RecordingError
from spikeflow.service.events import EVENT_DTYPE, SensorSize

SENSOR = SensorSize(10, 8, 2)


def _events(n=6):
    ev = np.zeros(n, EVENT_DTYPE)
    ev["t"] = np.arange(n) * 5
    ev["x"], ev["y"] = np.arange(n) % 10, np.arange(n) % 8
    return ev


@pytest.mark.parametrize("field,value", [("x", -1), ("x", 10), ("x", -32768), ("y", -1), ("y", 8), ("y", 32767)])
def test_coordinates_outside_the_sensor_name_the_event_and_its_byte(field, value):
    ev = _events()
    ev[field][4] = value
    want = (value, 4) if field == "x" else (4, value)
    with pytest.raises(RecordingError, match=rf"f\.raw at byte 156: event \({want[0]}, {want[1]}\) outside the 10x8"):
        check_chunk("f.raw", ev, SENSOR, None, lambda i: 100 + 14 * i)


def test_edges_of_the_sensor_are_inside_and_the_last_time_is_returned():
    ev = _events(2)
    ev["x"], ev["y"] = [0, 9], [7, 0]
    assert check_chunk("f.raw", ev, SENSOR, None, lambda i: i) == 5
    assert check_chunk("f.raw", ev[:0], SENSOR, 42, lambda i: i) == 42


def test_time_order_across_chunks_and_the_switch_that_allows_it():
    ev = _events()
    with pytest.raises(RecordingError, match=r"at byte 0: timestamp goes backwards: 0 us after 3 us"):
        check_chunk("f.raw", ev, SENSOR, 3, lambda i: i)
    ev["t"][3] = 1
    with pytest.raises(RecordingError, match=r"events\[3\]: timestamp goes backwards: 1 us after 10 us"):
        check_chunk("f.h5", ev, SENSOR, None, lambda i: f"events[{i}]")
    assert check_chunk("f.raw", ev, SENSOR, 3, lambda i: i, check_order=False) == 25
