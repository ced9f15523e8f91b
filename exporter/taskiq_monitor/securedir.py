"""Directories and files that only this user can read or write.

The defaults of the metrics directory and the Loki spool live under the shared temporary directory, at names any
local user can predict. A directory planted there by someone else would let them feed records into the spool (shipped
to Loki as ours) or counter files into the metrics directory (served as our counts), and read what we write. So a
directory is used only when it is owned by the current user and nobody else can write to it; one we create gets
mode 0700, and the files we write get 0600. A leaf module: it imports nothing of the package but its errors.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from taskiq_monitor.errors import ConfigError

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "ensure_private_dir", "private_opener"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def ensure_private_dir(path: Path, *, what: str = "directory") -> Path:
    """Create ``path`` (mode 0700) if needed and check that only the current user controls it; return it.

    Raises :class:`ConfigError` (one line naming ``what``, the path and the way out) when ``path`` is not a
    directory, cannot be created, is owned by another user, or is writable by its group or by others. Parent
    directories are not checked: a private directory inside ``/tmp`` (sticky, world-writable) is safe.
    """
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True)
        # mkdir's mode is filtered by the umask; a umask never adds bits, but make the result explicit.
        os.chmod(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be created: {exc.strerror}") from None
    uid = os.geteuid()
    try:
        link = os.lstat(path)
        info = os.stat(path)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror}") from None
    # A symbolic link someone else planted could point at a directory of ours; only our own links are followed.
    if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
        raise ConfigError(
            f"{what} {path} is a symbolic link owned by uid {link.st_uid}, not by this user (uid {uid}); "
            "use a directory of your own"
        )
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{what} {path} is not a directory")
    if info.st_uid != uid:
        raise ConfigError(
            f"{what} {path} is owned by uid {info.st_uid}, not by this user (uid {uid}); "
            "use a directory of your own (a new one is created with mode 0700)"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"{what} {path} is writable by other users (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"run `chmod go-w {path}` or use a new directory (created with mode 0700)"
        )
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path} is not writable by uid {uid}")
    return path


def private_opener(path: str, flags: int) -> int:
    """``open(path, "wb", opener=private_opener)``: a new file gets mode 0600 instead of 0666 minus the umask."""
    return os.open(path, flags, PRIVATE_FILE_MODE)
