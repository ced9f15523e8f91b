"""Raw deflate of history records with a preset dictionary, without releasing the GIL.

The flusher thread compresses every finished record (``history.encode_record``). Python's ``zlib`` releases the
GIL around each ``compress`` and ``flush`` call, two per record. Beside a busy event loop, every release hands the
GIL to the loop, and the flusher then waits for the loop's switch interval (5 ms) to get it back: measured here,
one 170-byte record took ~1.9 ms of the flusher's wall time and 30-40 µs of its CPU, against 5-8 µs alone
(docs/benchmarks.md, "Tenth pass"). A saturated worker's flusher then wrote ~500 records a second and fell behind.

This module calls the same zlib library through ``ctypes.PyDLL``, which keeps the GIL for the call: a few µs per
record, the same compressed bytes as ``zlib.compressobj`` with the same parameters (the tests compare them).
Records above ``HOLD_GIL_MAX`` bytes still go through ``zlib``: the GIL is given up while a large one is compressed,
so the loop is never held for longer than a small record takes. Where the library cannot be loaded this way (no
``libz`` found, an unexpected ABI: ``deflateInit2_`` checks the size of our ``z_stream``), ``packer_for`` returns
None and the caller uses ``zlib``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import threading
from collections.abc import Callable
from typing import Any

# The largest record compressed while holding the GIL: ~20 µs of deflate at level 9. Larger records are rare (a
# long traceback, big parameters) and worth a GIL hand-over.
HOLD_GIL_MAX = 8192

_Z_OK, _Z_STREAM_END, _Z_FINISH, _Z_DEFLATED, _Z_DEFAULT_STRATEGY = 0, 1, 4, 8, 0


class _ZStream(ctypes.Structure):
    """zlib's ``z_stream`` (zlib.h); its size is checked by ``deflateInit2_``."""

    _fields_ = [
        ("next_in", ctypes.c_char_p),
        ("avail_in", ctypes.c_uint),
        ("total_in", ctypes.c_ulong),
        ("next_out", ctypes.c_void_p),
        ("avail_out", ctypes.c_uint),
        ("total_out", ctypes.c_ulong),
        ("msg", ctypes.c_char_p),
        ("state", ctypes.c_void_p),
        ("zalloc", ctypes.c_void_p),
        ("zfree", ctypes.c_void_p),
        ("opaque", ctypes.c_void_p),
        ("data_type", ctypes.c_int),
        ("adler", ctypes.c_ulong),
        ("reserved", ctypes.c_ulong),
    ]


def _open() -> ctypes.PyDLL | None:
    # PyDLL, not CDLL: the GIL is kept during the calls (the point of this module). The usual names first:
    # find_library runs ldconfig or a compiler in a subprocess.
    for name in ("libz.so.1", "libz.1.dylib"):
        try:
            return ctypes.PyDLL(name)
        except OSError:
            continue
    found = ctypes.util.find_library("z")
    try:
        return ctypes.PyDLL(found) if found else None
    except OSError:
        return None


def _load() -> ctypes.PyDLL | None:
    lib = _open()
    if lib is None:
        return None
    try:
        stream = ctypes.POINTER(_ZStream)
        lib.zlibVersion.restype = ctypes.c_char_p
        lib.zlibVersion.argtypes = []
        lib.deflateInit2_.argtypes = [
            stream,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.deflateSetDictionary.argtypes = [stream, ctypes.c_char_p, ctypes.c_uint]
        lib.deflateReset.argtypes = [stream]
        lib.deflate.argtypes = [stream, ctypes.c_int]
        lib.deflateEnd.argtypes = [stream]
        for function in (lib.deflateInit2_, lib.deflateSetDictionary, lib.deflateReset, lib.deflate, lib.deflateEnd):
            function.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return lib


_UNLOADED: Any = object()
_LIB: Any = _UNLOADED  # loaded on first use: importing the package starts no subprocess
_LOAD_LOCK = threading.Lock()


def _library() -> ctypes.PyDLL | None:
    global _LIB
    if _LIB is _UNLOADED:
        with _LOAD_LOCK:
            if _LIB is _UNLOADED:
                _LIB = _load()
    lib: ctypes.PyDLL | None = _LIB
    return lib


class DictPacker:
    """One reusable deflate stream (raw, level 9, ``wbits``, preset dictionary ``zdict``) for one thread.

    ``compress(raw)`` returns the complete raw-deflate stream of ``raw``, or None when it would not be shorter than
    ``raw`` (or ``raw`` exceeds ``HOLD_GIL_MAX``): the caller then stores ``raw`` as it is, or uses ``zlib``."""

    def __init__(self, lib: ctypes.PyDLL, wbits: int, zdict: bytes) -> None:
        self._lib = lib
        self._zdict, self._zdict_len = zdict, len(zdict)
        self._stream = _ZStream()
        self._ref = ctypes.byref(self._stream)
        # memLevel as history._packer: small tables, sized for the window.
        code = lib.deflateInit2_(
            self._ref,
            9,
            _Z_DEFLATED,
            -wbits,
            max(1, wbits - 7),
            _Z_DEFAULT_STRATEGY,
            lib.zlibVersion(),
            ctypes.sizeof(_ZStream),
        )
        if code != _Z_OK:
            raise OSError(f"deflateInit2_ returned {code}")
        self._out = ctypes.create_string_buffer(HOLD_GIL_MAX)
        self._out_address = ctypes.addressof(self._out)

    def compress(self, raw: bytes) -> bytes | None:
        size = len(raw)
        if size > HOLD_GIL_MAX or size < 2:
            return None
        lib, ref, stream = self._lib, self._ref, self._stream
        # A reset forgets the dictionary: set it again (hashing ~400 bytes, ~1 µs; cheaper than a copy of the state).
        if lib.deflateReset(ref) != _Z_OK or lib.deflateSetDictionary(ref, self._zdict, self._zdict_len) != _Z_OK:
            return None
        stream.next_in = raw  # points into the bytes object, which outlives the call
        stream.avail_in = size
        stream.next_out = self._out_address
        stream.avail_out = size - 1  # only a shorter result is wanted: deflate stops short of the end otherwise
        if lib.deflate(ref, _Z_FINISH) != _Z_STREAM_END:
            return None
        return ctypes.string_at(self._out_address, stream.total_out)  # a PYFUNCTYPE: keeps the GIL too

    def __del__(self) -> None:
        # Frees zlib's state when the thread ends (its packers go with its thread-local storage). Never raises: at
        # interpreter shutdown ctypes may already be torn down.
        with contextlib.suppress(Exception):
            self._lib.deflateEnd(self._ref)


_LOCAL = threading.local()


def packer_for(wbits: int, zdict: bytes) -> Callable[[bytes], bytes | None] | None:
    """This thread's ``DictPacker.compress`` for ``wbits``, or None when zlib cannot be called this way."""
    lib = _library()
    if lib is None:
        return None
    packers: dict[tuple[int, bytes], Callable[[bytes], bytes | None]] | None = getattr(_LOCAL, "packers", None)
    if packers is None:
        packers = _LOCAL.packers = {}
    key = (wbits, zdict)
    compress = packers.get(key)
    if compress is None:
        try:
            compress = packers[key] = DictPacker(lib, wbits, zdict).compress
        except OSError:
            return None
    return compress


def available() -> bool:
    """Whether records are compressed with the GIL held (zlib was loaded through ctypes)."""
    return _library() is not None
