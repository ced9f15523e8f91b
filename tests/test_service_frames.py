"""The live feed's frames: split at the frame size limit, every event delivered."""

from __future__ import annotations

import json

from taskiq_monitor.service.frames import MAX_FRAME_BYTES, batch_frames


def test_batch_frames_split_at_the_frame_size_limit() -> None:
    item = '{"id":"1-0","event":{"blob":"' + "x" * (MAX_FRAME_BYTES // 3) + '"}}'
    frames = batch_frames([item] * 7)
    assert len(frames) == 4  # 2 + 2 + 2 + 1: every frame under the limit, none empty
    assert all(len(f) <= MAX_FRAME_BYTES + 64 for f in frames)
    assert sum(len(json.loads(f)["events"]) for f in frames) == 7
    huge = '{"id":"1-0","event":{"blob":"' + "x" * (2 * MAX_FRAME_BYTES) + '"}}'
    assert len(batch_frames([huge, item])) == 2  # an oversized event still goes out, alone


def test_a_deflated_batch_frame_is_a_compressed_message_any_client_can_inflate_on_its_own() -> None:
    import zlib

    from taskiq_monitor.service.transport import DEFLATE_WINDOW_BITS, deflated_text_frame

    payload = json.dumps({"type": "events", "v": 2, "events": [{"id": f"1-{i}", "x": "y" * 50} for i in range(200)]})
    frame = deflated_text_frame(payload.encode())
    assert frame[0] == 0xC1  # FIN, RSV1 (compressed), text
    size, offset = frame[1] & 0x7F, 2
    if size == 126:
        size, offset = int.from_bytes(frame[2:4], "big"), 4
    body = frame[offset:]
    assert len(body) == size and size < len(payload) // 4
    # RFC 7692 §7.2.2: the receiver appends the 4 bytes the sender removed; a fresh inflater must do (no context).
    inflater = zlib.decompressobj(-DEFLATE_WINDOW_BITS)
    assert inflater.decompress(body + b"\x00\x00\xff\xff").decode() == payload
