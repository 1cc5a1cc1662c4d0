"""Exactly-once delivery of replayable streams: drop what a resumed source sends again.

A restarted ``replay`` or ``simulate`` resumes at a settled position and sends again, with
their original ``seq``, the packets between that position and the kill (docs/daemon.md,
"Resume"). Their stream is named ``<source>.<port>``, and every node that keeps a stream's
name also keeps its seq, one packet out per packet in (``noise_filter``); nodes that number
their own output name it after themselves (encoders, layers, classifiers). So on a
*replayable* stream — named after a resumable source — seqs increase strictly for the life of
a daemon (a looping replay keeps counting), and ``(stream, seq)`` identifies a packet: one
whose seq is not above the last delivered is a repeat. Other streams may legitimately start
a new numbering (a restarted encoder counts from 0 again) and are never filtered.

The filter lives where a repeat would do harm and which survives the sender's restart: the
receiving end of an edge, ``publish``, and ``record`` (which also keeps its position in its
file's journal).
"""

from __future__ import annotations

from collections.abc import Iterable


def replayable_streams(spec) -> frozenset[str]:
    """Names of the streams of every resumable source (a node type with ``resume_at``) of ``spec``."""
    from spikeflow.service import registry

    out = set()
    for name, ns in spec.nodes.items():
        cls = registry.get(ns.type)
        if getattr(cls, "is_source", False) and callable(getattr(cls, "resume_at", None)):
            out.update(f"{name}.{port}" for port in getattr(cls, "outputs", {}))
    return frozenset(out)


class RepeatFilter:
    """Per replayable stream, the last seq let through; :meth:`fresh` is False for a repeat.

    One thread calls ``fresh``; ``dropped`` and :meth:`last` may be read from another."""

    __slots__ = ("_last", "dropped", "streams")

    def __init__(self, streams: Iterable[str] = ()):
        self.streams = frozenset(streams)
        self._last: dict[str, int] = {}
        self.dropped = 0

    def fresh(self, packet) -> bool:
        """True if ``packet`` goes on (and is remembered), False if it is a repeat. Heartbeats
        (the end-of-stream marker of an edge, seq 0) always go on."""
        stream, seq = packet.stream, packet.seq
        if stream not in self.streams or packet.kind == "heartbeat":
            return True
        if seq > self._last.get(stream, -1):
            self._last[stream] = seq
            return True
        self.dropped += 1
        return False

    def seen(self, stream: str, seq: int) -> None:
        """Remember that ``(stream, seq)`` was delivered before (e.g. found in a file)."""
        if stream in self.streams and seq > self._last.get(stream, -1):
            self._last[stream] = seq

    def last(self) -> dict[str, int]:
        """The last seq let through, per replayable stream seen."""
        return dict(self._last)
