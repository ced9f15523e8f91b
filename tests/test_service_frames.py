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
