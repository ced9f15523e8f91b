"""The live feed's frames, encoded once: the JSON text of each event, the version 1 and 2 frames built from it, and
the :class:`Batch` of one tick that every client of a filter group shares.

Pure string work, no I/O. An event record is stored as JSON and embedded in the frame as is: it is never decoded
and encoded again, so a frame costs one join however many clients receive it (the wire bytes of a batch are built
once too, :meth:`Batch.wire`). The frame shapes are the protocol of ``service/feed.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskiq_monitor.service.transport import deflated_text_frame, text_frame
from taskiq_monitor.store import Entry

# One v2 frame holds at most this much (more events are split over several frames): under the 1 MiB default
# max_size of the websockets library and of most clients.
MAX_FRAME_BYTES = 512 * 1024


def event_item(entry: Entry) -> str:
    """``{"id": ..., "event": {...}}``: the record is stored as JSON and embedded as is (never re-encoded)."""
    return f'{{"id":"{entry.id}","event":{entry.payload}}}'


def event_frame(entry: Entry) -> str:
    """The version 1 frame of one event."""
    return f'{{"type":"event","id":"{entry.id}","event":{entry.payload}}}'


def single_frame(item: str) -> str:
    """The version 1 frame of an encoded :func:`event_item`, without re-encoding."""
    # '{"id":...}' -> '{"type":"event","id":...}'
    return '{"type":"event",' + item[1:]


def batch_frames(items: list[str]) -> list[str]:
    """Version 2 frames for ``items`` (encoded :func:`event_item`), split at ``MAX_FRAME_BYTES``."""
    frames: list[str] = []
    start, size = 0, 0
    for i, item in enumerate(items):
        if size and size + len(item) > MAX_FRAME_BYTES:
            frames.append('{"type":"events","v":2,"events":[' + ",".join(items[start:i]) + "]}")
            start, size = i, 0
        size += len(item) + 1
    if start < len(items):
        frames.append('{"type":"events","v":2,"events":[' + ",".join(items[start:]) + "]}")
    return frames


@dataclass(slots=True)
class Batch:
    """The events of one tick that one filter group is due: encoded once, shared by all the group's clients."""

    keys: list[tuple[int, int]]
    items: list[str]  # version 2 items
    singles: list[str]  # version 1 frames, one per event
    nbytes: int
    _frames: list[str] | None = None
    _prepared: dict[tuple[int, bool], bytes] | None = None

    @classmethod
    def of(cls, keys: list[tuple[int, int]], items: list[str]) -> Batch:
        """The batch of encoded ``items`` (their stream ids are ``keys``)."""
        return cls(keys, items, [single_frame(item) for item in items], sum(map(len, items)))

    @property
    def frames(self) -> list[str]:
        if self._frames is None:  # built once, on first use, for every v2 client of the group
            self._frames = batch_frames(self.items)
        return self._frames

    def wire(self, version: int, deflated: bool) -> bytes:
        """The frames of ``version`` as WebSocket frames on the wire — compressed for clients that negotiated
        per-message deflate — built once for the group, on first use. Frames delimit themselves: joined, they go
        out in one write (one syscall per client, not per frame)."""
        if self._prepared is None:
            self._prepared = {}
        key = (version, deflated)
        prepared = self._prepared.get(key)
        if prepared is None:
            frame = deflated_text_frame if deflated else text_frame
            prepared = b"".join(frame(text.encode()) for text in (self.frames if version == 2 else self.singles))
            self._prepared[key] = prepared
        return prepared
