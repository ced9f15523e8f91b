"""Another local user, for tests of directories someone else planted (needs root to hand a directory over)."""

from __future__ import annotations

import os
import pwd

import pytest


def other_uid() -> int:
    """The uid of ``nobody`` (or skip the test: only root can give a directory to another user)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    try:
        return pwd.getpwnam("nobody").pw_uid
    except KeyError:
        return 65534
