"""The package's error types: a leaf module, importable from anywhere without pulling in anything else.

``taskiq-monitor``'s ``main()`` prints a :class:`ConfigError` as one line and exits with code 2 (no traceback):
it is a mistake the user fixes by changing a flag, a setting or a directory, not a bug.
"""

from __future__ import annotations

__all__ = ["ConfigError", "UsageError"]


class ConfigError(Exception):
    """A configuration the user must change (a setting, a directory): one line, exit code 2."""


class UsageError(ConfigError):
    """A mistake on the command line (a missing argument, a busy port): one line, exit code 2."""
