"""Wire protocol v1: how a :class:`~spikeflow.service.packet.Packet` travels over ZeroMQ.

One message is a multipart ``[topic, header, payload...]`` (spec: ``docs/protocol.md``):

* ``topic``: bytes for SUB prefix filtering (the stream name by default);
* ``header``: a msgpack map (version, kind, stream, seq, window, count, dtype tag, sensor size,
  send time, optional ``data`` map and ``arrays`` list);
* ``payload``: raw little-endian array bytes, sent and received without copies (the event array
  first when ``dtype`` is set, then one frame per entry of ``arrays``).

This is the only module that speaks msgpack. Decoding never trusts the peer: every length is
checked against explicit limits before anything is allocated, and every violation raises
:class:`ProtocolRejected` (a :class:`ProtocolError`) naming the frame and field and carrying a
short ``reason`` code that receivers count in a :class:`RejectCounter`. No pickle anywhere.
"""

from __future__ import annotations

import dataclasses
import struct
import threading
from collections.abc import Iterable
from typing import Any

import msgpack
import numpy as np
import zmq

from .errors import ProtocolError
from .events import EVENT_DTYPE, SensorSize
from .packet import KINDS, Packet

PROTOCOL_VERSION = 1
"""Major version of the wire protocol; the one place it is defined (docs/protocol.md agrees)."""

# -- limits (a receiver refuses anything beyond them before allocating) --------------------
MAX_TOPIC_BYTES = 1024
MAX_HEADER_BYTES = 64 * 1024
MAX_STR_LEN = 4096
MAX_BIN_LEN = 16 * 1024
MAX_ARRAY_LEN = 4096
MAX_MAP_LEN = 256
MAX_ARRAYS = 16
MAX_NDIM = 4
MAX_PAYLOAD_BYTES = 1 << 30
"""Largest payload frame accepted (also set as ZMQ_MAXMSGSIZE on our receiving sockets)."""

DTYPE_TAGS: dict[str, np.dtype] = {
    "ev1": EVENT_DTYPE,  # t <i8, x <i2, y <i2, p <i2, packed, 14 bytes
    "b1": np.dtype("?"),
    "u1": np.dtype("<u1"), "u2": np.dtype("<u2"), "u4": np.dtype("<u4"), "u8": np.dtype("<u8"),
    "i1": np.dtype("<i1"), "i2": np.dtype("<i2"), "i4": np.dtype("<i4"), "i8": np.dtype("<i8"),
    "f4": np.dtype("<f4"), "f8": np.dtype("<f8"),
}
"""Payload element types by tag; every multi-byte type is little-endian on the wire."""

_TAG_OF = {dt: tag for tag, dt in DTYPE_TAGS.items() if tag != "ev1"}

REJECT_REASONS = ("version", "kind", "dtype", "size", "truncated", "extra_frames",
                  "header_too_large", "topic_too_large", "msgpack", "field")
"""Reason codes of :class:`ProtocolRejected`; receivers count rejects under these names."""

_U64 = 1 << 64
_I64 = 1 << 63
_EVENT_KINDS = ("events", "spikes")
_KIND_SET = frozenset(KINDS)

COPY_THRESHOLD = 64 * 1024
"""Payload frames at least this large are sent without a copy (ZeroMQ reads the array in place);
smaller ones are copied, which is cheaper than tracking a zero-copy buffer (pyzmq's own default)."""

# The hot path calls pyzmq's compiled socket methods directly, with plain int flags: its Python
# layer (``send_multipart``/``recv_multipart``, enum flag arithmetic, attribute lookups) costs
# several µs per message, more than our whole codec.
_zsend = zmq.backend.Socket.send
_zrecv = zmq.backend.Socket.recv
_zget = zmq.backend.Socket.get
_NOBLOCK = int(zmq.NOBLOCK)
_SNDMORE = int(zmq.SNDMORE)
_EVENTS = int(zmq.EVENTS)
_POLLIN = int(zmq.POLLIN)
_Frame = zmq.Frame


class ProtocolRejected(ProtocolError):
    """A message violates protocol v1. ``reason`` is one of ``REJECT_REASONS``.

    The message names the frame index and the header field at fault.
    """

    def __init__(self, reason: str, frame: int, field: str | None, message: str):
        self.reason = reason
        self.frame = frame
        self.field = field
        self.detail = message
        where = f"frame {frame}" + (f" field {field!r}" if field else "")
        super().__init__(f"{where}: {message} [{reason}]")


class RejectCounter:
    """Counts rejected messages per reason (thread-safe); ``as_dict()`` for stats."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self.last_error = ""

    def count(self, reason: str, message: str = "") -> None:
        with self._lock:
            self._counts[reason] = self._counts.get(reason, 0) + 1
            if message:
                self.last_error = message

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


# -- encoding -------------------------------------------------------------------------------

def _plain(obj: Any) -> Any:
    """msgpack ``default`` hook: numpy scalars and small nested arrays become plain values."""
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    raise ProtocolError(f"encode: field 'data' holds a {type(obj).__name__}, which protocol v1 "
                        "cannot carry (use str, int, float, bool, None, bytes, lists, maps, arrays)")


_local = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's reusable msgpack packer (a Packer is not thread-safe; building one per
    message costs as much as packing the header)."""
    try:
        return _local.packer
    except AttributeError:
        _local.packer = msgpack.Packer(default=_plain, use_bin_type=True, autoreset=True)
        return _local.packer


def _pack(header: dict) -> bytes:
    """The header's msgpack bytes, within ``MAX_HEADER_BYTES``."""
    try:
        raw = _packer().pack(header)
    except BaseException:
        _local.__dict__.pop("packer", None)   # a failed pack may leave the packer's buffer dirty
        raise
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"encode: header of {len(raw)} bytes > {MAX_HEADER_BYTES}")
    return raw


def _size_ok(size) -> bool:
    return (len(size) == 3 and type(size[0]) is int and type(size[1]) is int and type(size[2]) is int
            and 0 <= size[0] < 1 << 32 and 0 <= size[1] < 1 << 32 and 0 <= size[2] < 1 << 32)


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ProtocolError(f"encode: field {name!r} must be an integer, got {value!r}")
    value = int(value)
    if not lo <= value < hi:
        raise ProtocolError(f"encode: field {name!r} = {value} outside [{lo}, {hi})")
    return value


def _raw(arr: np.ndarray) -> memoryview | bytes:
    """A contiguous array's bytes as a flat view (no copy)."""
    return memoryview(arr.reshape(-1).view(np.uint8)) if arr.size else b""


def _array_frame(name: str, arr: np.ndarray) -> tuple[list, memoryview]:
    """(``arrays`` entry, payload buffer) for one numpy array in ``data``."""
    tag = _TAG_OF.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
    if tag is None:
        raise ProtocolError(f"encode: data[{name!r}] has dtype {arr.dtype}, no protocol v1 tag "
                            f"(known: {sorted(DTYPE_TAGS)})")
    if arr.ndim > MAX_NDIM:
        raise ProtocolError(f"encode: data[{name!r}] has {arr.ndim} dims > {MAX_NDIM}")
    arr = np.ascontiguousarray(arr, dtype=DTYPE_TAGS[tag])
    return [name, tag, list(arr.shape)], _raw(arr)


# -- the canonical header layout ----------------------------------------------------------
# spikeflow writes every packet without ``data`` in one fixed layout: first the five pairs that
# are the same for every packet of a stream (v, kind, stream, dtype, size), then the five
# per-packet integers, each with a fixed-width encoding (uint64 seq, int64 t0/t1/sent_ns, uint32
# count). It is ordinary msgpack (the spec allows any key order and any integer encoding), and
# it lets the encoder build a header with one ``struct.pack`` over a cached prefix, and the
# decoder recognise a header with one dict lookup and one ``struct.unpack`` instead of a general
# parse (about 3 µs less per message on each side). Any other valid header takes the general
# path, with the same result.
_TAIL_KEYS = (b"\xa3seq\xcf", b"\xa2t0\xd3", b"\xa2t1\xd3", b"\xa5count\xce", b"\xa7sent_ns\xd3")
_K_SEQ, _K_T0, _K_T1, _K_COUNT, _K_SENT = _TAIL_KEYS
_TAIL = struct.Struct(">5sQ4sq4sq7sI9sq")
_TAIL_SIZE = _TAIL.size
_CACHE_MAX = 1024
_HEADS: dict[tuple, tuple[struct.Struct, bytes, bytes]] = {}
"""(kind, stream, size, has events) -> (header struct, header prefix, default topic)."""
_KNOWN: dict[bytes, tuple[str, str, SensorSize, str | None]] = {}
"""Header prefix -> (kind, stream, sensor size, dtype tag), for prefixes that decode validly."""


def _head(kind: Any, stream: Any, size: Any, has_events: bool) -> tuple[struct.Struct, bytes, bytes]:
    """The cached header struct, prefix and default topic of one stream; validates what goes into
    the prefix and registers it for the decoder's fast path when a receiver would accept it."""
    if type(kind) is not str:
        raise ProtocolError(f"encode: field 'kind' must be a string, got {kind!r}")
    if type(stream) is not str:
        raise ProtocolError(f"encode: field 'stream' must be a string, got {stream!r}")
    try:
        dims = [_check_int("size", n, 0, 1 << 32) for n in size]
    except TypeError:
        dims = []
    if len(dims) != 3:
        raise ProtocolError(f"encode: field 'size' must be [W, H, C], got {size!r}")
    try:
        topic = stream.encode()
    except UnicodeEncodeError as e:
        raise ProtocolError(f"encode: field 'stream' is not valid UTF-8 text ({e})") from None
    tag = "ev1" if has_events else None
    prefix = b"\x8a" + b"".join(msgpack.packb(x) for x in ("v", PROTOCOL_VERSION, "kind", kind, "stream", stream,
                                                            "dtype", tag, "size", dims))
    entry = (struct.Struct(f">{len(prefix)}s5sQ4sq4sq7sI9sq"), prefix, topic)
    try:
        if len(_HEADS) >= _CACHE_MAX:
            _HEADS.clear()
        _HEADS[kind, stream, size, has_events] = entry
    except TypeError:
        return entry  # an unhashable size (a list): not cached
    if (kind in _KIND_SET and len(topic) <= MAX_STR_LEN and (has_events or kind not in _EVENT_KINDS)
            and len(prefix) + _TAIL_SIZE <= MAX_HEADER_BYTES):
        if len(_KNOWN) >= _CACHE_MAX:
            _KNOWN.clear()
        _KNOWN[prefix] = (kind, stream, SensorSize(*dims), tag)
    return entry


_NO_EVENTS = np.zeros(0, EVENT_DTYPE)
_NO_EVENTS.flags.writeable = False


def encode_plain(packet: Packet, topic: bytes | None) -> tuple[bytes, bytes, np.ndarray | None]:
    """``(topic, header, events)`` of a packet without ``data``, in the canonical layout;
    ``events`` is C-contiguous (ZeroMQ may read it in place) or None (no events frame)."""
    kind, stream, size, events = packet.kind, packet.stream, packet.sensor_size, packet.events
    if events is None:
        count = 0
        if kind in _EVENT_KINDS:
            events = _NO_EVENTS
    else:
        if events.dtype is not EVENT_DTYPE and events.dtype != EVENT_DTYPE:
            raise ProtocolError(f"encode: field 'events' has dtype {events.dtype}, expected EVENT_DTYPE")
        if events.ndim != 1:
            raise ProtocolError(f"encode: field 'events' must be 1-D, got shape {events.shape}")
        if not events.flags.c_contiguous:
            events = np.ascontiguousarray(events)
        count = len(events)
    try:
        fmt, prefix, own_topic = _HEADS[kind, stream, size, events is not None]
    except (KeyError, TypeError):
        fmt, prefix, own_topic = _head(kind, stream, size, events is not None)
    if topic is None:
        topic = own_topic
    if len(topic) > MAX_TOPIC_BYTES:
        raise ProtocolError(f"encode: topic of {len(topic)} bytes > {MAX_TOPIC_BYTES}")
    seq, t0, t1, sent_ns = packet.seq, packet.t0_us, packet.t1_us, packet.sent_ns
    if not (type(seq) is int and type(t0) is int and type(t1) is int and type(sent_ns) is int):
        # numpy integers are converted, anything else raises naming the field
        seq = _check_int("seq", seq, 0, _U64)
        t0 = _check_int("t0", t0, -_I64, _I64)
        t1 = _check_int("t1", t1, -_I64, _I64)
        sent_ns = _check_int("sent_ns", sent_ns, -_I64, _I64)
    try:
        return topic, fmt.pack(prefix, _K_SEQ, seq, _K_T0, t0, _K_T1, t1, _K_COUNT, count, _K_SENT, sent_ns), events
    except struct.error:
        _check_int("seq", seq, 0, _U64)   # out of range: raise naming the field
        _check_int("t0", t0, -_I64, _I64)
        _check_int("t1", t1, -_I64, _I64)
        _check_int("sent_ns", sent_ns, -_I64, _I64)
        raise ProtocolError(f"encode: {count} events > 2^32 in one packet") from None


def encode(packet: Packet, topic: bytes | None = None) -> list:
    """Frames ``[topic, header, payload...]`` for ``packet``; payloads are zero-copy views.

    ``topic`` defaults to the stream name in UTF-8. Do not modify ``packet.events`` until the
    frames are sent (ZeroMQ reads the array's memory in place). Packets without ``data`` get
    the canonical header layout (see ``_TAIL_KEYS``), others a general msgpack map.
    """
    if not packet.data:
        topic, header, events = encode_plain(packet, topic)
        if events is None:
            return [topic, header]
        return [topic, header, memoryview(events).cast("B") if len(events) else b""]
    if topic is None:
        topic = packet.stream.encode()
    if len(topic) > MAX_TOPIC_BYTES:
        raise ProtocolError(f"encode: topic of {len(topic)} bytes > {MAX_TOPIC_BYTES}")
    seq, t0, t1, sent_ns, size = packet.seq, packet.t0_us, packet.t1_us, packet.sent_ns, packet.sensor_size
    if not (type(seq) is int and type(t0) is int and type(t1) is int and type(sent_ns) is int
            and 0 <= seq < _U64 and -_I64 <= t0 < _I64 and -_I64 <= t1 < _I64 and -_I64 <= sent_ns < _I64
            and _size_ok(size)):
        # slow path: numpy integers are converted, anything else raises naming the field
        seq = _check_int("seq", seq, 0, _U64)
        t0 = _check_int("t0", t0, -_I64, _I64)
        t1 = _check_int("t1", t1, -_I64, _I64)
        sent_ns = _check_int("sent_ns", sent_ns, -_I64, _I64)
        size = [_check_int("size", n, 0, 1 << 32) for n in size]
    events = packet.events
    if events is None and packet.kind in _EVENT_KINDS:
        events = _NO_EVENTS
    if events is not None:
        if events.dtype != EVENT_DTYPE:
            raise ProtocolError(f"encode: field 'events' has dtype {events.dtype}, expected EVENT_DTYPE")
        if events.ndim != 1:
            raise ProtocolError(f"encode: field 'events' must be 1-D, got shape {events.shape}")
        if not events.flags.c_contiguous:
            events = np.ascontiguousarray(events)
        count = len(events)
        header: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": packet.kind, "stream": packet.stream,
                                  "seq": seq, "t0": t0, "t1": t1, "count": count, "dtype": "ev1",
                                  "size": list(size), "sent_ns": sent_ns}
        payloads: list = [memoryview(events).cast("B") if count else b""]
    else:
        header = {"v": PROTOCOL_VERSION, "kind": packet.kind, "stream": packet.stream,
                  "seq": seq, "t0": t0, "t1": t1, "count": 0, "dtype": None,
                  "size": list(size), "sent_ns": sent_ns}
        payloads = []
    data = {}
    arrays = []
    for key, value in packet.data.items():
        if not isinstance(key, str):
            raise ProtocolError(f"encode: data key {key!r} is not a string")
        if isinstance(value, np.ndarray):
            entry, buf = _array_frame(key, value)
            arrays.append(entry)
            payloads.append(buf)
        else:
            data[key] = value
    if data:
        header["data"] = data
    if arrays:
        if len(arrays) > MAX_ARRAYS:
            raise ProtocolError(f"encode: {len(arrays)} arrays in 'data' > {MAX_ARRAYS}")
        header["arrays"] = arrays
    return [topic, _pack(header), *payloads]


# -- decoding -------------------------------------------------------------------------------

_PACKET_FIELDS = ("kind", "stream", "seq", "sensor_size", "t0_us", "t1_us", "sent_ns", "events", "data")
_FAST_PACKET = tuple(f.name for f in dataclasses.fields(Packet)) == _PACKET_FIELDS
"""decode builds a Packet without re-running its __init__ checks (done by decode already), as
long as Packet has exactly these fields (otherwise the ordinary constructor is used)."""
_new = object.__new__
_frombuffer = np.frombuffer
_EV_SIZE = EVENT_DTYPE.itemsize
_SIZES: dict[tuple, SensorSize] = {}


def _sensor_size(size: list) -> SensorSize:
    """A validated ``[W, H, C]`` as a SensorSize, built once per distinct size."""
    key = (size[0], size[1], size[2])
    out = _SIZES.get(key)
    if out is None:
        if len(_SIZES) > 256:
            _SIZES.clear()
        out = _SIZES[key] = SensorSize(*key)
    return out


def _buffer(frame, index: int) -> memoryview | bytes:
    """The frame's bytes without copying (a zmq.Frame's own buffer)."""
    if type(frame) is _Frame or isinstance(frame, zmq.Frame):
        return frame.buffer
    if isinstance(frame, (bytes, bytearray)):
        return frame
    if isinstance(frame, memoryview):
        if frame.format == "B" and frame.ndim == 1 and frame.c_contiguous:
            return frame
        try:
            return frame.cast("B")
        except TypeError:
            raise ProtocolRejected("field", index, None, "frame is a non-contiguous buffer") from None
    raise ProtocolRejected("field", index, None, f"frame of type {type(frame).__name__} is not bytes")


def _get_int(h: dict, name: str, lo: int, hi: int) -> int:
    if name not in h:
        raise ProtocolRejected("field", 1, name, "missing")
    v = h[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise ProtocolRejected("field", 1, name, f"expected an integer, got {type(v).__name__}")
    if not lo <= v < hi:
        raise ProtocolRejected("field", 1, name, f"{v} outside [{lo}, {hi})")
    return v


def _get_str(h: dict, name: str) -> str:
    if name not in h:
        raise ProtocolRejected("field", 1, name, "missing")
    v = h[name]
    if not isinstance(v, str):
        raise ProtocolRejected("field", 1, name, f"expected a string, got {type(v).__name__}")
    return v


def _payload(frames: list, index: int, field: str, dtype: np.dtype, n_items: int) -> np.ndarray:
    if index >= len(frames):
        raise ProtocolRejected("truncated", index, field,
                               f"payload frame missing: message has {len(frames)} frames")
    frame = frames[index]
    if type(frame) is _Frame:
        buf = frame           # numpy maps a zmq.Frame directly (cheaper than its .buffer)
        nbytes = len(frame)
    else:
        buf = _buffer(frame, index)
        nbytes = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
    if nbytes != n_items * dtype.itemsize:
        raise ProtocolRejected("size", index, field,
                               f"payload is {nbytes} bytes, header says {n_items} x {dtype.itemsize}")
    if nbytes == 0:
        return np.zeros(0, dtype)
    return np.frombuffer(buf, dtype=dtype, count=n_items)


def _small_bytes(frame, index: int, limit: int, reason: str, what: str) -> bytes:
    """The bytes of a topic or header frame, refused (``reason``) beyond ``limit`` bytes
    before anything is copied."""
    if type(frame) is bytes:
        n = len(frame)
    elif type(frame) is _Frame:
        n = len(frame)
        if n <= limit:
            return frame.bytes
    else:
        frame = _buffer(frame, index)
        n = len(frame) if not isinstance(frame, memoryview) else frame.nbytes
        if n <= limit:
            return bytes(frame)
    if n > limit:
        raise ProtocolRejected(reason, index, None, f"{what} of {n} bytes > {limit}")
    return frame


def _parse_arrays(raw: Any) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    if not isinstance(raw, list) or len(raw) > MAX_ARRAYS:
        raise ProtocolRejected("field", 1, "arrays", f"expected a list of at most {MAX_ARRAYS} entries")
    out = []
    for i, entry in enumerate(raw):
        name = f"arrays[{i}]"
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], str) and isinstance(entry[2], list)):
            raise ProtocolRejected("field", 1, name, "expected [name, dtype tag, shape]")
        key, tag, shape = entry
        if tag not in DTYPE_TAGS or tag == "ev1":
            raise ProtocolRejected("dtype", 1, name, f"unknown dtype tag {tag!r}")
        if len(shape) > MAX_NDIM or not all(isinstance(d, int) and not isinstance(d, bool)
                                            and 0 <= d < MAX_PAYLOAD_BYTES for d in shape):
            raise ProtocolRejected("field", 1, name, f"bad shape {shape!r}")
        out.append((key, DTYPE_TAGS[tag], tuple(shape)))
    return out


def _header_problem(h: dict) -> None:
    """Raise the precise rejection for a header that failed decode's fast check."""
    kind = _get_str(h, "kind")
    if kind not in KINDS:
        raise ProtocolRejected("kind", 1, "kind", f"unknown kind {kind!r}; expected one of {KINDS}")
    _get_str(h, "stream")
    _get_int(h, "seq", 0, _U64)
    _get_int(h, "t0", -_I64, _I64)
    _get_int(h, "t1", -_I64, _I64)
    _get_int(h, "sent_ns", -_I64, _I64)
    _get_int(h, "count", 0, MAX_PAYLOAD_BYTES)
    size = h.get("size")
    raise ProtocolRejected("field", 1, "size", f"expected [W, H, C] of unsigned ints, got {size!r}")


def _packet(kind, stream, seq, sensor_size, t0, t1, sent_ns, events, data) -> Packet:
    """A Packet from validated fields, without re-running its ``__init__`` checks."""
    if _FAST_PACKET:
        packet = _new(Packet)
        packet.__dict__ = {"kind": kind, "stream": stream, "seq": seq, "sensor_size": sensor_size,
                           "t0_us": t0, "t1_us": t1, "sent_ns": sent_ns, "events": events, "data": data}
        return packet
    return Packet(kind=kind, stream=stream, seq=seq, sensor_size=sensor_size, t0_us=t0,
                  t1_us=t1, sent_ns=sent_ns, events=events, data=data)


def decode(frames: Iterable) -> tuple[bytes, Packet]:
    """``(topic, Packet)`` from frames (bytes or zmq.Frame); payload arrays are zero-copy views.

    Raises :class:`ProtocolRejected` naming the frame/field for any protocol violation.
    Arrays received from a zmq.Frame share its memory (the frame stays alive as their base).
    """
    if type(frames) is not list:
        frames = list(frames)
    n_frames = len(frames)
    if n_frames < 2:
        raise ProtocolRejected("truncated", n_frames, None,
                               f"need at least [topic, header], got {n_frames} frame(s)")
    f0, f1 = frames[0], frames[1]
    if type(f0) is _Frame and type(f1) is _Frame and len(f0) <= MAX_TOPIC_BYTES and len(f1) <= MAX_HEADER_BYTES:
        topic, hb = f0.bytes, f1.bytes   # (what a socket gives; checked before copying)
    else:
        topic = _small_bytes(f0, 0, MAX_TOPIC_BYTES, "topic_too_large", "topic")
        hb = _small_bytes(f1, 1, MAX_HEADER_BYTES, "header_too_large", "header")
    # fast path: a header in the canonical layout after a prefix already known to be valid
    # (each field of the tail is then in range by construction, except count)
    cut = len(hb) - _TAIL_SIZE
    known = _KNOWN.get(hb[:cut]) if cut > 0 else None
    if known is not None:
        k_seq, seq, k_t0, t0, k_t1, t1, k_count, count, k_sent, sent_ns = _TAIL.unpack_from(hb, cut)
        if (k_seq == _K_SEQ and k_t0 == _K_T0 and k_t1 == _K_T1 and k_count == _K_COUNT
                and k_sent == _K_SENT and count < MAX_PAYLOAD_BYTES):
            kind, stream, sensor_size, tag = known
            if tag is not None and n_frames == 3:
                f2 = frames[2]
                if count and type(f2) is _Frame and len(f2) == count * _EV_SIZE:
                    events = _frombuffer(f2, EVENT_DTYPE, count)   # zero-copy view of the frame
                else:
                    events = _payload(frames, 2, "count", EVENT_DTYPE, count)
            elif tag is None and n_frames == 2 and count == 0:
                events = None
            else:
                events = False
            if events is not False:
                if _FAST_PACKET:
                    packet = _new(Packet)
                    packet.__dict__ = {"kind": kind, "stream": stream, "seq": seq, "sensor_size": sensor_size,
                                       "t0_us": t0, "t1_us": t1, "sent_ns": sent_ns, "events": events, "data": {}}
                    return topic, packet
                return topic, _packet(kind, stream, seq, sensor_size, t0, t1, sent_ns, events, {})
        # anything else is reported by the general path, which names the problem
    try:
        h = msgpack.unpackb(hb, raw=False, strict_map_key=True, use_list=True,
                            max_str_len=MAX_STR_LEN, max_bin_len=MAX_BIN_LEN,
                            max_array_len=MAX_ARRAY_LEN, max_map_len=MAX_MAP_LEN, max_ext_len=0)
    except Exception as e:  # noqa: BLE001 - msgpack raises several unrelated types on garbage
        raise ProtocolRejected("msgpack", 1, None, f"header is not valid msgpack ({type(e).__name__}: {e})") from None
    if type(h) is not dict:
        raise ProtocolRejected("field", 1, None, f"header must be a map, got {type(h).__name__}")
    if "v" not in h:
        raise ProtocolRejected("version", 1, "v", "missing protocol version")
    v = h["v"]
    if v != PROTOCOL_VERSION or type(v) is bool:
        raise ProtocolRejected("version", 1, "v", f"protocol version {v!r}, this receiver speaks {PROTOCOL_VERSION}")
    get = h.get
    kind, stream, seq, t0, t1 = get("kind"), get("stream"), get("seq"), get("t0"), get("t1")
    sent_ns, count, size = get("sent_ns"), get("count"), get("size")
    if not (type(kind) is str and kind in _KIND_SET and type(stream) is str
            and type(seq) is int and type(t0) is int and type(t1) is int and type(sent_ns) is int
            and type(count) is int and 0 <= seq < _U64 and -_I64 <= t0 < _I64 and -_I64 <= t1 < _I64
            and -_I64 <= sent_ns < _I64 and 0 <= count < MAX_PAYLOAD_BYTES
            and type(size) is list and _size_ok(size)):
        _header_problem(h)   # slow path: raises naming the first bad field
    if "dtype" not in h:
        raise ProtocolRejected("field", 1, "dtype", "missing")
    tag = h["dtype"]
    if tag is not None and tag != "ev1":
        raise ProtocolRejected("dtype", 1, "dtype", f"unknown event dtype tag {tag!r}; protocol v1 knows 'ev1'")
    if tag is None and (kind in _EVENT_KINDS or count):
        raise ProtocolRejected("dtype", 1, "dtype", f"kind {kind!r} with count {count} needs dtype 'ev1'")
    if "data" in h:
        data = h["data"]
        if type(data) is not dict or not all(type(k) is str for k in data):
            raise ProtocolRejected("field", 1, "data", "expected a map with string keys")
    else:
        data = {}
    arrays = _parse_arrays(h["arrays"]) if "arrays" in h else ()
    index = 2
    events = None
    if tag is not None:
        events = _payload(frames, 2, "count", EVENT_DTYPE, count)
        index = 3
    for key, dtype, shape in arrays:
        n = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if n * dtype.itemsize > MAX_PAYLOAD_BYTES:
            raise ProtocolRejected("size", index, f"arrays.{key}", "array larger than the payload limit")
        data[key] = _payload(frames, index, f"arrays.{key}", dtype, n).reshape(shape)
        index += 1
    if n_frames != index:
        raise ProtocolRejected("extra_frames", index, None, f"{n_frames - index} unexpected frame(s) after the payloads")
    sensor_size = _sensor_size(size)
    if len(h) == 10 and not data and known is None:
        # a stream we have not seen yet: learn its canonical prefix, so that its next headers,
        # if they come in that layout, take the fast path (a dict lookup after the first one)
        try:
            _HEADS[kind, stream, sensor_size, tag is not None]
        except KeyError:
            _head(kind, stream, sensor_size, tag is not None)
    return topic, _packet(kind, stream, seq, sensor_size, t0, t1, sent_ns, events, data)


# -- edge batches (docs/protocol.md §7) ------------------------------------------------------

BATCH_HEADER = msgpack.packb({"v": PROTOCOL_VERSION, "kind": "batch"}, use_bin_type=True)
"""Frame 1 of an edge batch ``[topic, BATCH_HEADER, (header, payload) x n]``: several events
packets in one message between two spikeflow workers. Kind ``batch`` is no packet kind, so a
receiver that does not know batches rejects the message (``kind``) instead of misreading it."""

MAX_BATCH = 256
"""Most packets one batch may carry (a receiver refuses more before decoding any)."""

_BATCH_LEN = len(BATCH_HEADER)


def is_batch(frames: list) -> bool:
    """The message is an edge batch (frame 1 is :data:`BATCH_HEADER`); cheap for single packets,
    whose header is never that short."""
    if len(frames) < 2:
        return False
    f1 = frames[1]
    if len(f1) != _BATCH_LEN:
        return False
    return (f1.bytes if type(f1) is _Frame else bytes(f1)) == BATCH_HEADER


def batch_size(frames: list) -> int:
    """How many packets a batch message carries by its frame count (at least 1: a receiver
    credits that many even when it rejects the message)."""
    return max(1, (len(frames) - 2) // 2)


def decode_batch(frames: list) -> list[Packet]:
    """The packets of an edge batch, in order. Every packet is an events or spikes packet with
    its events frame and nothing else (no ``data``, no ``arrays``); any violation rejects the
    whole message, naming the frame of the message at fault."""
    n_frames = len(frames)
    if n_frames < 6 or n_frames % 2:
        raise ProtocolRejected("truncated", n_frames, None, f"an edge batch is [topic, batch header, "
                                                            f"(header, payload) x n >= 2], got {n_frames} frames")
    if (n_frames - 2) // 2 > MAX_BATCH:
        raise ProtocolRejected("field", 1, "batch", f"{(n_frames - 2) // 2} packets > {MAX_BATCH}")
    topic = frames[0]
    out = []
    for i in range(2, n_frames, 2):
        try:
            _, packet = decode([topic, frames[i], frames[i + 1]])
        except ProtocolRejected as e:
            frame = 0 if e.frame == 0 else i + e.frame - 1
            raise ProtocolRejected(e.reason, frame, e.field, f"batch packet {(i - 2) // 2}: {e.detail}") from None
        if packet.kind not in _EVENT_KINDS or packet.data:
            raise ProtocolRejected("field", i, "kind", f"batch packet {(i - 2) // 2}: a batch carries events "
                                                      f"or spikes packets without data, got {packet.kind!r}")
        out.append(packet)
    return out


# -- socket helpers ---------------------------------------------------------------------------

def send_frames(sock: zmq.Socket, frames: list, flags: int = 0) -> None:
    """``sock.send_multipart(frames, flags)`` at a fraction of its cost: payload frames of at
    least ``COPY_THRESHOLD`` bytes go without a copy, smaller frames are copied. Raises
    ``zmq.Again`` like ``send_multipart`` when ``flags`` has NOBLOCK and the socket cannot take
    the message (ZeroMQ accepts the rest of a message once its first frame went)."""
    flags = int(flags)
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i, frame in enumerate(frames):
        copy = type(frame) is not memoryview or frame.nbytes < COPY_THRESHOLD
        _zsend(sock, frame, more if i < last else flags, copy)


def recv_frames(sock: zmq.Socket, flags: int = 0) -> list:
    """``sock.recv_multipart(flags, copy=False)`` at a fraction of its cost: a list of zmq.Frame."""
    frame = _zrecv(sock, int(flags), False)
    frames = [frame]
    while frame.more:
        frame = _zrecv(sock, 0, False)
        frames.append(frame)
    return frames


def has_input(sock: zmq.Socket) -> bool:
    """A message is waiting on ``sock`` (ZMQ_EVENTS & POLLIN, without pyzmq's Python layer)."""
    return bool(_zget(sock, _EVENTS) & _POLLIN)


def send_packet(sock: zmq.Socket, packet: Packet, topic: bytes | None = None, flags: int = 0) -> None:
    """Encode and send ``packet`` on ``sock`` (zero-copy for large payloads)."""
    send_frames(sock, encode(packet, topic), flags)


def recv_packet(sock: zmq.Socket, flags: int = 0,
                rejects: RejectCounter | None = None) -> tuple[bytes, Packet] | None:
    """Receive one message (no copy) and decode it.

    Returns ``None`` when the message is rejected, after counting the reason in ``rejects``
    (without a counter the :class:`ProtocolRejected` propagates). ``zmq.Again`` propagates
    with ``flags=zmq.NOBLOCK`` when nothing is waiting.
    """
    frames = recv_frames(sock, flags)
    try:
        return decode(frames)
    except ProtocolRejected as e:
        if rejects is None:
            raise
        rejects.count(e.reason, str(e))
        return None


class SeqTracker:
    """Detects sequence gaps per stream: ``gaps[stream]`` = number of missing seq numbers.

    A seq lower than expected (a restarted producer) counts as a ``reset`` and resynchronises.
    Gap updates hold a lock, so a metrics thread may read ``snapshot()`` meanwhile.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._next: dict[str, int] = {}
        self.gaps: dict[str, int] = {}
        self.resets = 0

    def update(self, stream: str, seq: int) -> int:
        """Record ``seq`` on ``stream``; returns how many packets were missed just before it.

        The usual case (the expected seq) is one dict write, atomic under the GIL, so it takes
        no lock; gaps and resets, which change several fields, do. One thread updates a
        tracker, any number read it."""
        nxt = self._next
        if nxt.get(stream) == seq:
            nxt[stream] = seq + 1
            return 0
        with self._lock:
            return self._update(stream, seq)

    def _update(self, stream: str, seq: int) -> int:
        expected = self._next.get(stream)
        self._next[stream] = seq + 1
        if expected is None or seq == expected:
            return 0
        if seq < expected:
            self.resets += 1
            return 0
        missed = seq - expected
        self.gaps[stream] = self.gaps.get(stream, 0) + missed
        return missed

    def last_seq(self, stream: str) -> int | None:
        nxt = self._next.get(stream)
        return None if nxt is None else nxt - 1

    def add_gap(self, stream: str, n: int) -> None:
        """Count ``n`` more missing packets on ``stream`` (e.g. a tail drop a heartbeat revealed)."""
        with self._lock:
            self.gaps[stream] = self.gaps.get(stream, 0) + n

    def snapshot(self) -> dict[str, int]:
        """A copy of ``gaps`` (safe while another thread updates)."""
        with self._lock:
            return dict(self.gaps)

    @property
    def missing(self) -> int:
        return sum(self.snapshot().values())


def receiving_socket_options(sock: zmq.Socket) -> None:
    """Options every receiving socket of ours gets: refuse oversized frames at the transport."""
    sock.setsockopt(zmq.MAXMSGSIZE, MAX_PAYLOAD_BYTES)
