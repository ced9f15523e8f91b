"""Make task parameters and errors safe to leave the process: JSON-safe, size-capped and redacted.

The middleware runs one :class:`Redactor` over every :class:`~taskiq_monitor.events.TaskEvent` before any sink
sees it, so Loki, the live feed and local logs all receive the same, already redacted record — a secret that is
not in the event cannot leak through any sink. Example::

    redactor = Redactor()
    redactor.sanitize({"user": "ann", "bot_token": "123:abc", "db": "postgres://app:hunter2@db/app"})
    # {'user': 'ann', 'bot_token': '[REDACTED]', 'db': 'postgres://app:***@db/app'}

What it guarantees, for any Python value:

* **JSON-safe, never raises.** ``str``/``int``/``float``/``bool``/``None`` pass through; mappings become dicts with
  string keys; sequences and sets become lists; dataclasses, pydantic models, dates, UUIDs, ``Decimal``, ``Path``,
  ``Enum`` and ``bytes`` get a readable form; anything else its ``repr()`` (or ``<unrepresentable T>`` when even
  that raises). Non-finite floats and integers too large for JSON consumers become strings. Cycles render as
  ``[circular]``, nesting deeper than ``max_depth`` as ``[max depth]``.
* **Redaction by key.** A value whose key (dict key, keyword argument, or positional parameter name) *contains*
  one of ``keys`` — case-insensitive, ``-`` read as ``_`` — becomes ``[REDACTED]``, at any depth: ``bot_token``,
  ``X-Api-Key``, ``DATABASE_DSN`` and ``accessToken`` all match. Substring matching errs on the safe side
  (``max_tokens`` is redacted too); configure ``TASKIQ_MONITOR_REDACT_KEYS`` to change the list. ``auth`` is
  matched as a whole word only (``auth``, ``basic_auth``, ``proxyAuth``; not ``author``): its value — a
  ``(user, password)`` tuple, a header string — is redacted as a whole, unless it is a mapping, whose own keys
  then decide.
* **Redaction of pairs given as sequences**: a 2-item list or tuple whose first item is a secret key is a key/value
  pair — ``[("Authorization", "Bearer x")]`` → ``[["Authorization", "[REDACTED]"]]``, ``["api_key", "k"]`` too.
* **Redaction inside free text** (every string, error messages and tracebacks included): the password of URL
  credentials (``scheme://user:pass@host`` → ``scheme://user:***@host``; a userinfo without a colon, a token, as a
  whole: ``https://ghp_x@github.com`` → ``https://***@github.com``; a password may hold ``/`` or ``@``:
  ``postgres://u:pa/ss@h/db`` → ``postgres://u:***@h/db``); ``key=value`` / ``key: value`` pairs whose key matches
  (``?token=abc`` → ``?token=***``, ``Authorization: Bearer x`` → ``Authorization: ***``; a bare cookie header's
  value to the end of its line: ``Cookie: a=1; sid=x`` → ``Cookie: ***``); command-line flags whose name matches,
  and ``-p``, with their next word (``--password pw``, and ``'--password', 'pw'`` in the argument-list repr of a
  ``CalledProcessError``), and ``-p`` with an attached value (``-psecret``) in a text naming mysql/mariadb/sshpass;
  XML-ish elements whose tag matches (``<password>x</password>``);
  the body of PEM private keys (``-----BEGIN … PRIVATE KEY-----``); JSON Web Tokens as a whole (``eyJ….….…``: a
  bearer credential, key or not).
* **What is redacted by key is gone from the event's error text too.** The values an event's parameters had
  redacted by key (args by positional name, kwargs, labels, at any depth, pairs given as sequences) are replaced by
  ``[REDACTED]`` wherever they occur in the same event's error message and traceback, before anything else —
  ``boom(user="alice", password="hunter2")`` raising ``ValueError("… as alice with hunter2")`` is recorded as
  ``… as alice with [REDACTED]``. Each value is searched for as its ``str()`` and, when they differ, the escaped forms
  inside ``repr()`` (a traceback's ``'hunter2'``) and inside JSON; a container under a secret key by each of its
  leaves; only texts of at least ``MIN_SECRET_CHARS`` (4) characters (a ``1`` under ``max_tokens`` would mask half a
  traceback), and at most 256 texts an event. A value that was *not* redacted by key stays readable (``alice``).
  A value under a secret key that the size caps or ``max_depth`` left out of the record is searched for too (the raw
  fields are searched past the caps: ``_FIND_MAX_DEPTH`` levels, ``_FIND_MAX_VALUES`` values at most; for a
  ``running`` event's ``found``, only in fields of up to ``_FIND_MAX_TEXT_BYTES`` of JSON).
  An attempt's final event carries its ``running`` event's already redacted parameters: that event keeps the texts of
  what it redacted (``TaskEvent`` only, freed with it; no cache anywhere) for the final event's error text. The
  free-text patterns below still apply after this (``password=hunter2`` → ``password=***``, as before).
* **Size caps.** Each field of the record (args, kwargs, labels, error message, traceback) is cut to
  ``max_field_bytes`` and the record's fields together to ``max_record_bytes`` (UTF-8 bytes of the JSON text,
  approximately: escapes are not counted). A cut is marked: strings end in ``…[truncated 1234 bytes]``, lists get a
  last item ``…[truncated 12 items]``, dicts a key ``…`` with ``[truncated 12 keys]``. Tracebacks keep their head
  *and* tail (the final exception is at the end). A string longer than twice its cap is cut to about twice the cap
  (head, and tail for tracebacks) *before* the regexes run, so their cost is bounded whatever the input's size. The
  scrub of the parameters' secret values runs before that cut, over the parts it keeps plus the longest secret's
  length: an occurrence reaching into them is masked whole, and the scrub's cost is bounded too.

**Fast path.** Most task parameters are plain JSON (a JSON-decoded message) holding nothing to redact, cap or
convert. :meth:`Redactor.redact_fields` first serialises them with orjson, under options that refuse every
non-JSON-native value, and proves from that text that the walk would return them unchanged (the verdict is cached
by the text's shape: its digits deleted, so an id or a timestamp makes no new shape); its copy is then
``orjson.loads`` of the text — equal to the walk's output, in about 0.3x its time for a typical task's parameters
(``benchmarks/bench_redaction.py``). Any doubt — a key fragment in any case or spelling, a ``-p``, a URL with an
``@``, PEM armour, a ``</``, an ``eyJ``, nesting, size, a value that is not plain JSON — and the walk decides, as
before.

Why one module of ~1,240 lines: it is one policy — what counts as a secret — and the key rules, the free-text
patterns, the walk that applies them under one size budget (and finds the values an error text is scrubbed of), and
the fast path's proof that they would change nothing
must be read and reviewed together; a secret that one part lets through is a leak whichever part it is in. The
patterns are module constants, compiled once.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import enum
import hashlib
import itertools
import json
import math
import re
import string
import traceback
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence, Sized
from decimal import Decimal
from pathlib import PurePath
from typing import Any, cast

import orjson

from taskiq_monitor.events import TaskEvent

REDACTED = "[REDACTED]"
MASK = "***"
# What traceback prints for an exception whose __str__ raises (error_texts).
_STR_FAILED = "<exception str() failed>"

# What a key is, for redaction (Redactor.key_kind).
NOT_SECRET = 0
SECRET = 1  # the value is replaced as a whole
SECRET_WORD = 2  # a whole-word key (``auth``): replaced as a whole unless it is a mapping, whose keys then decide

# Key fragments treated as secrets (substring match, case-insensitive, '-' read as '_').
DEFAULT_REDACT_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "auth_header",
    "cookie",
    "session",
    "private_key",
    "privatekey",
    "dsn",
    "credential",
    "access_key",
    "signature",
    "jwt",
    "bearer",
    "passphrase",
)
# Fragments matched only as a whole word of the key (words split at '_', '-', '.' and camelCase): as a substring
# ``auth`` would hide ``author`` and ``authority``. A value under such a key is redacted as a whole unless it is a
# mapping, whose own keys decide (``{"auth": {"user": "ann", "cookie": "c"}}`` keeps ``user``).
DEFAULT_WORD_KEYS: tuple[str, ...] = ("auth",)
DEFAULT_MAX_FIELD_BYTES = 16 * 1024
DEFAULT_MAX_RECORD_BYTES = 64 * 1024
DEFAULT_MAX_DEPTH = 8

# scheme://user:password@host — the password is masked up to the last '@' (before any '?', '#' or whitespace) that
# is followed by a host name and the end of the authority (``/ : ? #``, whitespace, a quote or the end): a password
# may hold a raw '/' or '@' (``postgres://u:pa/ss@h/db``), a query an '@' (``?email=a@b.c``). When a path holds an
# '@' too (``/@scope/pkg``) the host is masked with it: over-masking is the safe side. Of any length: an RDS IAM
# token or an Entra ID token used as a password has 800 to 2,000 characters.
# scheme://token@host (userinfo without a colon, e.g. a GitHub token) — the whole userinfo is masked.
# Found by mask_url_credentials in time linear in the text: a regex with the password as a backtracking group cost
# each URL head the password's maximal length (``a://b:`` 6,000 times: 170 ms at a 512-character bound).
_URL_SCHEME = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*+://")
_URL_USER = re.compile(r"[^\s:/@]*+")  # after '://': a user up to its ':', or a token up to its '@'
_URL_PASSWORD_END = re.compile(r"[\s?#]")
_URL_AT_HOST = re.compile(r"@[^\s/@?#:'\"]*+(?:[/?#:\s'\"]|$)")
# A command line flag whose name is a secret key, and its value as the next word: ``--password pw`` in a shell
# string, ``'--password', 'pw'`` in the repr of an argument list (``CalledProcessError``'s message). ``-p`` is
# the password flag of psql, mysql, redis-cli …; for tools where it is a port, masking a port is harmless.
# A value scrubbed to ``[REDACTED]`` already (a secret of the event's parameters, see redact_capped) is one value.
_FLAG = re.compile(
    r"(?<![\w\-])(?P<flag>--?+[A-Za-z][\w\-]*+)(?P<sep>['\"]?+,?+\s++['\"]?+)"
    r"(?P<value>\[REDACTED\]|[^\s'\",\])]++)"
)
# <password>…</password> in XML-ish text (SOAP bodies, config dumps); the tag decides, like a key.
_XML_ELEMENT = re.compile(r"<(?P<tag>[A-Za-z_][\w.\-:]*+)(?:\s[^<>]*+)?>(?P<value>[^<]++)</(?P=tag)>")
# PEM private keys anywhere in text: the body is masked, the armour kept so a reader knows what was there.
_PEM_PRIVATE = re.compile(
    r"(?P<begin>-----BEGIN (?P<kind>[A-Z0-9 ]*?)PRIVATE KEY-----)(?P<body>.*?)"
    r"(?P<end>-----END (?P=kind)PRIVATE KEY-----|\Z)",
    re.S,
)
# key=value, key: value, "key": "value", Authorization: Bearer x. Possessive/atomic parts keep it linear on long
# strings; the key is checked against the redaction list in Python (cached).
_PAIR = re.compile(r"(?<![\w.\-])(?P<key>[\w.\-]++)(?P<sep>['\"]?+\s*+[:=]\s*+(?P<quote>['\"]?+))")
# The value after a secret key's separator: up to the closing quote, or a bare token ("Bearer x" as one value).
_VALUE_QUOTED = {'"': re.compile(r'[^"]*+'), "'": re.compile(r"[^']*+")}
_VALUE_BARE = re.compile(r"(?>(?i:bearer|basic|token|digest)\s+)?[^\s&'\",;)}\]]++")
# A cookie header's (``Cookie: …``) bare value is a list of ``name=value; …`` pairs, each may be a session: the rest
# of the line goes. A ``cookie=x`` in a query string is one value, as any key's.
_VALUE_LINE = re.compile(r"[^\r\n'\"]++")
# mysql's (mysqldump's, mariadb's, sshpass's) password given attached to its flag: ``-psecret``, ``'-psecret'`` in an
# argument list's repr. Only in a text that names one of these tools: ``-pthread`` or ``-print`` are not passwords.
_ATTACHED_P = re.compile(r"(?<![\w\-])-p(?!\*\*\*|\[REDACTED\])[^\s'\",\])]++")
_ATTACHED_P_TOOLS = ("mysql", "mariadb", "sshpass")
# A JSON Web Token anywhere in text (a bearer credential on its own: no key needed): ``eyJ`` is base64url of ``{"``,
# the start of every JWT's header; header, payload and (maybe empty) signature, dot-separated. Masked as a whole.
_JWT = re.compile(r"(?<![\w\-])eyJ[\w\-]{4,}+\.[\w\-]{4,}+\.[\w\-]*+(?:\.[\w\-]*+){0,2}")
# Characters that nothing in redact_text reacts to and that JSON does not escape (see Redactor._string).
_PLAIN = re.compile(r"[A-Za-z0-9_ .,!?()+*#$%&/|~^]*+").fullmatch
_PLAIN_MAX = 256
_DICT_ITEMS: type[Any] = type({}.items())
# Largest integer most JSON consumers (JavaScript, Grafana) read exactly.
_MAX_SAFE_INT = 2**53
# A value redacted by key is searched for in its event's error text only when its text has at least this many
# characters: a ``1`` or an ``a`` redacted under ``max_tokens`` would mask half a traceback.
MIN_SECRET_CHARS = 4
# At most this many texts of secret values are searched for in one event's error text: each is one substring search
# of the whole text (C speed; see Redactor.redact_capped). A task with more secret values than this is not one to
# expect, and its first texts are still masked.
_MAX_SECRET_TEXTS = 256
# A walk whose caps left keys, items or levels out (see Redactor._field) is followed by a search of the raw field for
# the values a secret key holds — a value left out of the record is still in an error text that quotes it. The
# search looks this deep and at this many values at most (~30 ms), and stops at _MAX_SECRET_TEXTS values found.
_FIND_MAX_DEPTH = 64
_FIND_MAX_VALUES = 100_000
# ... and only in a field whose JSON text has at most this many bytes, for an event that is not a failure (a running
# event finds the texts its attempt's final event is scrubbed of): its fragment search costs ~10 ms a megabyte, on
# every such event. A failure's own error text is scrubbed of what a search of the whole field finds.
_FIND_MAX_TEXT_BYTES = 64 * 1024
_SCALARS = frozenset({str, int, float, bool, type(None)})
# Put in a walk's budget list where it stopped at max_depth: its caps left something out (Redactor._field).
_DEPTH_CUT: Any = object()
# A string longer than 2x its cap (+ this many characters of context) is cut to its head (and tail) before the
# regexes run: they cost time linear in the input, and a 5 MB argument must not stall the worker's event loop.
_PRECUT_MARGIN = 1024

# The fast path of Redactor.redact_fields (see _plain_fields). Under these options orjson.dumps raises for every value
# the walk would convert: subclasses of str/int/dict/list (the walk may keep or str() them), datetimes, dataclasses,
# integers beyond 53 bits, non-str keys, sets, bytes, cycles, lone surrogates. What it still renders natively — a
# tuple, an Enum, a UUID, an orjson.Fragment, NaN/inf as null — is caught by comparing orjson.loads of the text with
# the input (a tuple is not a list, a UUID not a str, null not NaN).
_PLAIN_JSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_STRICT_INTEGER
)
_ASCII_LOWER = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())
# Brackets only, '{' read as '[': the text of a value's nesting.
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_NOT_BRACKETS_OR_QUOTES = bytes(c for c in range(256) if c not in b'[]{}"')
# A value's walk budget exceeds its JSON text by at most this many bytes: no scalar costs more (a float 12, an int 8,
# None/bool 5), a string never more than its JSON text, a container 1 more than its brackets and commas.
_VALUE_EXCESS = 12
# Shapes (a text with its digits deleted) whose verdict is cached, at most this many and this many bytes together (a
# shape is shorter than a field cap): the cache is cleared when full.
_SHAPES_MAX = 1024
_SHAPES_MAX_BYTES = 1024 * 1024


def mask_url_credentials(text: str) -> str:
    """``scheme://user:pass@host`` → ``scheme://user:***@host``; ``scheme://token@host`` → ``scheme://***@host``."""
    if "@" not in text or "://" not in text:
        return text
    parts: list[str] = []
    pos = 0
    region_end = -1  # the first whitespace, '?' or '#' after the last password's start: where a password ends
    ats: list[int] | None = None  # every '@' followed by a host and the end of an authority, ascending
    for scheme in _URL_SCHEME.finditer(text):
        if scheme.start() < pos:  # inside what was masked
            continue
        start = scheme.end()
        after = _URL_USER.match(text, start).end()  # type: ignore[union-attr]  # matches the empty string too
        if after < len(text) and text[after] == ":":
            password = after + 1
            if password >= region_end:
                end = _URL_PASSWORD_END.search(text, password)
                region_end = end.start() if end is not None else len(text)
            if ats is None:
                ats = [i for i in _at_positions(text) if _URL_AT_HOST.match(text, i)]
            index = bisect.bisect_left(ats, region_end) - 1
            if index >= 0 and ats[index] >= password:  # the last such '@' before the password's end
                parts.append(text[pos:password])
                parts.append(MASK)
                pos = ats[index]
        elif after > start and after < len(text) and text[after] == "@":
            parts.append(text[pos:start])
            parts.append(MASK)
            pos = after
    if not parts:
        return text
    parts.append(text[pos:])
    return "".join(parts)


def _at_positions(text: str) -> Iterator[int]:
    index = text.find("@")
    while index >= 0:
        yield index
        index = text.find("@", index + 1)


def error_texts(error: BaseException) -> tuple[str, str]:
    """An exception's message and formatted traceback (chained causes included), for an event; never raises.

    Both run the exception's own ``__str__`` (user code): one that raises, or returns a non-``str``, must not cost
    the attempt its final event (the task would stay ``running`` in the state store and never reach the history).
    Its message is then ``<exception str() failed>``, as :mod:`traceback` prints it.
    """
    try:
        message = str(error)
    except Exception:
        message = _STR_FAILED
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:  # a broken __traceback__/__cause__ chain: the type and message are still worth recording
        text = f"{type(error).__name__}: {message}\n"
    return message, text


def secret_texts(values: Iterable[Any], max_depth: int = DEFAULT_MAX_DEPTH) -> tuple[str, ...]:
    """The texts under which ``values`` (values redacted by key) may appear in an error message or a traceback.

    Longest first, at least ``MIN_SECRET_CHARS`` characters each. A string gives itself, and its escaped forms when
    they differ: inside ``repr`` (how a traceback or ``f"{x!r}"`` shows it: ``'it\\\\'s'``) and inside JSON; bytes
    their ``repr`` and UTF-8 text; a container its leaves (its keys are names, not secrets: ``password`` in a
    traceback's source line stays); ``None`` and booleans nothing (``True`` is no secret of ``use_token=True``).
    """
    found: dict[str, None] = {}  # ordered and deduplicated
    # At most _FIND_MAX_VALUES values are looked at: a secret container of a million short strings or Nones would
    # otherwise cost the worker seconds (each string's repr and JSON forms), yielding nothing.
    visits = [_FIND_MAX_VALUES]
    for value in values:
        try:
            _add_secret_texts(value, max_depth, found, visits)
        except Exception:  # user code (iteration, attributes) raised: what was found so far is still searched for
            continue
    return tuple(sorted(found, key=len, reverse=True))


def _add_secret_texts(value: Any, depth: int, found: dict[str, None], visits: list[int]) -> None:
    visits[0] -= 1
    if visits[0] < 0 or len(found) >= _MAX_SECRET_TEXTS or value is None or isinstance(value, bool):
        return
    texts: tuple[str, ...]
    if isinstance(value, str):
        if len(value) < MIN_SECRET_CHARS:  # its escaped forms may be longer, but it is too short to be looked for
            return
        texts = (value, _safe_repr(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1])
    elif isinstance(value, bytes | bytearray | memoryview):
        try:
            raw = bytes(value)
        except Exception:
            return
        texts = (raw.decode("utf-8", "replace"), repr(raw)[2:-1])
    elif isinstance(value, int | float) or depth <= 0:
        texts = (_safe_str(value),)
    elif isinstance(value, Mapping):
        for item in _safe_values(value):
            if visits[0] <= 0:
                break
            _add_secret_texts(item, depth - 1, found, visits)
        return
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            if visits[0] <= 0:
                break
            _add_secret_texts(item, depth - 1, found, visits)
        return
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _add_secret_texts(getattr(value, field.name, None), depth - 1, found, visits)
        return
    else:
        dumped = _model_fields(value)  # pydantic v2 models: their fields, as the walk renders them
        if dumped is not None:
            _add_secret_texts(dumped, depth, found, visits)
        texts = (_safe_str(value), _scalar_text(value))
    if len(texts[0]) < MIN_SECRET_CHARS:
        return
    for text in texts:
        if len(text) >= MIN_SECRET_CHARS:
            found[text] = None


def _json_default(value: Any) -> Any:
    """orjson's ``default`` for :meth:`Redactor._mentions_a_key`: what the search would look into, as JSON."""
    dumped = _model_fields(value)
    if dumped is not None:
        return dumped
    if isinstance(value, Mapping):
        return {_safe_str(key): item for key, item in value.items()}
    if isinstance(value, set | frozenset | tuple | list):
        return list(value)
    return _safe_repr(value)


def _model_fields(value: Any) -> dict[str, Any] | None:
    """A pydantic v2 model instance's fields as JSON-mode data; None for anything else (or when dumping fails)."""
    if getattr(type(value), "model_dump", None) is None or isinstance(value, type):
        return None
    try:
        dumped = value.model_dump(mode="json")
    except Exception:
        return None
    return dumped if isinstance(dumped, dict) else None


def _safe_values(mapping: Mapping[Any, Any]) -> list[Any]:
    try:
        return list(mapping.values())
    except Exception:
        return []


def scrub_secrets(text: str, secrets: Sequence[str]) -> str:
    """Every occurrence in ``text`` of each of ``secrets`` (longest first: see :func:`secret_texts`) → ``[REDACTED]``.

    Plain substring searches, no regex: a pattern made of secrets would stay in ``re``'s module-wide cache. A mask
    already placed is never searched again, so a shorter secret that is part of a longer one, or of ``[REDACTED]``
    itself, cannot garble it.
    """
    pieces = _scrub_pieces(text, secrets)
    if len(pieces) == 1 and isinstance(pieces[0], str):
        return pieces[0]
    return "".join(REDACTED if isinstance(piece, int) else piece for piece in pieces)


def _scrub_pieces(text: str, secrets: Sequence[str]) -> list[str | int]:
    """``text`` split into the parts no secret occurs in (``str``) and the occurrences (``int``: their length)."""
    pieces: list[str | int] = [text]
    for secret in secrets:
        if not secret or secret not in text:
            continue
        split: list[str | int] = []
        for piece in pieces:
            if isinstance(piece, int) or secret not in piece:
                split.append(piece)
                continue
            for index, chunk in enumerate(piece.split(secret)):
                if index:
                    split.append(len(secret))
                if chunk:
                    split.append(chunk)
        pieces = split
    return pieces


def _scrub_end(text: str, secrets: Sequence[str], keep: int, *, tail: bool) -> tuple[str, int]:
    """``text``'s first (``tail``: last) ``keep`` characters or a few more, scrubbed of ``secrets``, and how many
    characters of ``text`` that leaves out.

    Only ``keep`` plus the longest secret's length are searched: an occurrence that reaches into the kept
    characters lies within them, so it is masked whole, and the scrub's cost no longer grows with the text (a 20 MB
    error message and 30 secret values cost half a second of the worker's CPU, holding the GIL). The result stops
    at the first piece boundary at or beyond ``keep``: a partial occurrence at the searched part's far end is never
    in it.
    """
    reach = keep + max(map(len, secrets))
    part = text[len(text) - reach :] if tail else text[:reach]
    pieces = _scrub_pieces(part, secrets)
    if tail:
        pieces.reverse()
    out: list[str] = []
    covered = 0
    for piece in pieces:
        if covered >= keep:
            break
        if isinstance(piece, int):
            out.append(REDACTED)
            covered += piece
            continue
        take = min(len(piece), keep - covered)
        out.append(piece[len(piece) - take :] if tail else piece[:take])
        covered += take
    if tail:
        out.reverse()
    return "".join(out), len(text) - covered


def _mask_pem(match: re.Match[str]) -> str:
    return match.group("begin") + MASK + match.group("end")


def _norm(key: str) -> str:
    return key.lower().replace("-", "_")


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[_.\s]+")


def _words(key: str) -> list[str]:
    """``proxyAuth`` → ``['proxy', 'auth']``; ``X-Basic-Auth`` → ``['x', 'basic', 'auth']``."""
    return _WORD_SPLIT.split(_norm(_CAMEL.sub("_", key)))


def _json_len(text: str) -> int:
    """Bytes of ``text`` inside a JSON document (UTF-8; the common escapes \\n, \\", \\\\ counted)."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return size + text.count("\n") + text.count('"') + text.count("\\")


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _truncate_text(text: str, limit: int, *, keep_tail: bool = False, hidden: int = 0) -> str:
    """Cut ``text`` so that its JSON form is at most about ``limit`` bytes, marking how many bytes were cut.

    ``hidden``: bytes of the original already cut off after ``text`` (the pre-cut of a huge string).
    """
    size = _json_len(text)
    if size <= limit and not hidden:
        return text
    # Work in characters, scaled by the text's bytes-per-character (exact for plain ASCII).
    ratio = len(text) / size
    keep = max(0, int((limit - 32) * ratio))
    if keep_tail and keep > 64:
        head = keep // 3
        tail = keep - head
        cut = len(text) - keep
        return f"{text[:head]}…[truncated {cut} chars]…{text[len(text) - tail :]}"
    cut = _utf8_len(text[keep:]) + hidden
    return f"{text[:keep]}…[truncated {cut} bytes]"


class Redactor:
    """Renders values JSON-safe, redacts secrets and enforces size caps; see the module docstring."""

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        *,
        word_keys: Iterable[str] = DEFAULT_WORD_KEYS,
        max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
    ) -> None:
        self.keys = tuple(sorted({_norm(k) for k in keys if k}))
        self.word_keys = frozenset(_norm(k) for k in word_keys if k)
        self.max_field_bytes = max_field_bytes
        self.max_record_bytes = max_record_bytes
        self.max_depth = max_depth
        self._key_cache: dict[str, int] = {}
        self._names_cache: dict[tuple[str, ...], bool] = {}
        # The fast path's key fragments: a fragment containing another is implied by it. JSON escapes '"', '\\' and
        # control characters, so a fragment holding one would not appear in the text as it is: no fast path then.
        fragments = set(self.keys) | self.word_keys
        self._fragments = tuple(sorted(f for f in fragments if not any(g != f and g in f for g in fragments)))
        self._fast_path = all(ch not in '"\\' and ch >= " " for fragment in fragments for ch in fragment)
        self._fragment_bytes = tuple(fragment.encode("utf-8") for fragment in self._fragments)
        # Digits are deleted from the text before the shape cache lookup (an id or a timestamp must not make every
        # message a new shape) — except those a fragment holds: deleting one could hide the fragment.
        self._shape_delete = bytes(d for d in string.digits.encode() if not any(chr(d) in f for f in fragments))
        self._shapes: dict[bytes, int] = {}
        self._shapes_bytes = 0

    # -- keys and text ---------------------------------------------------------------------------------------------
    def key_kind(self, key: Any) -> int:
        """``SECRET`` (a key fragment matches), ``SECRET_WORD`` (a whole-word key matches) or ``NOT_SECRET``."""
        if not isinstance(key, str):
            return NOT_SECRET
        kind = self._key_cache.get(key)
        if kind is None:
            norm = _norm(key)
            if any(k in norm for k in self.keys):
                kind = SECRET
            elif self.word_keys and not self.word_keys.isdisjoint(_words(key)):
                kind = SECRET_WORD
            else:
                kind = NOT_SECRET
            if len(self._key_cache) < 10_000:
                self._key_cache[key] = kind
        return kind

    def is_secret_key(self, key: Any) -> bool:
        return self.key_kind(key) != NOT_SECRET

    def redact_text(self, text: str) -> str:
        """Mask URL credentials, private keys, JWTs, and the values of secret keys, flags and XML elements in free
        text."""
        text = mask_url_credentials(text)
        if "eyJ" in text:
            text = _JWT.sub(MASK, text)
        if "PRIVATE KEY-----" in text:
            text = _PEM_PRIVATE.sub(_mask_pem, text)
        if self.keys or self.word_keys:
            if "=" in text or ":" in text:
                text = self._mask_pairs(text)
            if "-" in text:
                text = self._mask_flags(text)
            if "</" in text:
                text = _XML_ELEMENT.sub(self._mask_element, text)
        return text

    def _mask_flags(self, text: str) -> str:
        def repl(match: re.Match[str]) -> str:
            flag = match.group("flag")
            if flag != "-p" and not self.is_secret_key(flag.lstrip("-")):
                return match.group(0)
            if match.group("value") == MASK:
                return match.group(0)
            return flag + match.group("sep") + MASK

        text = _FLAG.sub(repl, text)
        if "-p" in text:
            lowered = text.lower()
            if any(tool in lowered for tool in _ATTACHED_P_TOOLS):
                text = _ATTACHED_P.sub("-p" + MASK, text)
        return text

    def _mask_element(self, match: re.Match[str]) -> str:
        if not self.is_secret_key(match.group("tag").rpartition(":")[2]):
            return match.group(0)
        start, end = match.span("value")
        whole = match.group(0)
        offset = match.start()
        return whole[: start - offset] + MASK + whole[end - offset :]

    def redact_capped(self, text: str, limit: int, *, keep_tail: bool = False, secrets: Sequence[str] = ()) -> str:
        """``redact_text`` then cut to about ``limit`` JSON bytes (head, or head and tail), marking the cut.

        ``secrets`` (texts of values redacted by key, longest first: :func:`secret_texts`) are replaced by
        ``[REDACTED]`` first: before the cut, so no cut leaves a part of one visible, and before the patterns, which
        would otherwise have changed a secret's text (a DSN's password masked, its user left). A substring search
        per secret, at C speed — of a huge text, over the parts the cut below keeps and the longest secret's length
        more (``_scrub_end``), so that 30 secret values and a 20 MB error text cost no more than a short one.

        A huge ``text`` is then cut to about twice ``limit`` — its head, and its tail when ``keep_tail`` — so the
        regexes never run over megabytes. The kept parts are redacted with ``_PRECUT_MARGIN`` characters of context
        (a ``token=`` just before the visible part still masks its value); a secret value longer than that context
        and cut in its middle could show its end.
        """
        limit = max(0, limit)
        window = 2 * limit + _PRECUT_MARGIN  # characters; a character is at least one JSON byte
        half = window // 2
        if secrets and len(text) > 2 * window:
            # Only what the cut below can keep is scrubbed (_scrub_end): the scrub's cost stays bounded too.
            if not keep_tail:
                head, left = _scrub_end(text, secrets, window, tail=False)
                return _truncate_text(self.redact_text(head), limit, hidden=_utf8_len(text[len(text) - left :]))
            head, left = _scrub_end(text, secrets, half, tail=False)
            tail, before = _scrub_end(text, secrets, half, tail=True)
            middle = text[len(text) - left : before]  # empty when the head and tail overlap (a huge secret)
            return self._head_and_tail(head, tail, len(middle), _utf8_len(middle), limit)
        if secrets:
            text = scrub_secrets(text, secrets)
        if len(text) <= window:
            return _truncate_text(self.redact_text(text), limit, keep_tail=keep_tail)
        if not keep_tail:
            return _truncate_text(self.redact_text(text[:window]), limit, hidden=_utf8_len(text[window:]))
        middle = text[half : len(text) - half]
        return self._head_and_tail(text[:half], text[len(text) - half :], len(middle), _utf8_len(middle), limit)

    def _head_and_tail(self, head: str, tail: str, middle: int, middle_bytes: int, limit: int) -> str:
        """A huge text's head and tail (``middle`` characters, ``middle_bytes`` bytes, between them cut already),
        redacted and cut to about ``limit`` JSON bytes together, the cut marked."""
        head, tail = self.redact_text(head), self.redact_text(tail)
        ratio = (len(head) + len(tail)) / max(1, _json_len(head) + _json_len(tail))
        keep = max(0, int((limit - 32) * ratio))
        if keep <= 64:
            return _truncate_text(head, limit, hidden=middle_bytes + _utf8_len(tail))
        head_keep = min(len(head), keep // 3)
        tail_keep = min(len(tail), keep - head_keep)
        cut = len(head) + middle + len(tail) - head_keep - tail_keep
        return f"{head[:head_keep]}…[truncated {cut} chars]…{tail[len(tail) - tail_keep :]}"

    def _mask_pairs(self, text: str) -> str:
        # Only key and separator are matched, so after a harmless pair (``https:``) the scan resumes right after the
        # separator and still sees a secret inside its value (``…/x?token=abc``); linear in the text's length.
        parts: list[str] = []
        pos = 0
        for match in _PAIR.finditer(text):
            if match.start() < pos or not self.is_secret_key(match.group("key")):
                continue
            quote = match.group("quote")
            if text.startswith(REDACTED, match.end()):
                # A secret of the event's parameters, scrubbed already (redact_capped): masked as a pair's value is,
                # not cut at its ']' by the bare value's pattern.
                end = match.end() + len(REDACTED)
            else:
                if quote:
                    pattern = _VALUE_QUOTED[quote]
                else:
                    header = ":" in match.group("sep") and "cookie" in _norm(match.group("key"))
                    pattern = _VALUE_LINE if header else _VALUE_BARE
                value = pattern.match(text, match.end())
                if value is None or not value.group(0) or value.group(0) == MASK:
                    continue
                end = value.end()
            parts.append(text[pos : match.end()])
            parts.append(MASK)
            pos = end
        if not parts:
            return text
        parts.append(text[pos:])
        return "".join(parts)

    # -- values ----------------------------------------------------------------------------------------------------
    def sanitize(self, value: Any, limit: int | None = None) -> Any:
        """A JSON-safe, redacted copy of ``value`` whose JSON text is at most about ``limit`` bytes."""
        budget = [self.max_field_bytes if limit is None else limit]
        try:
            return self._walk(value, 0, budget, set())
        except Exception:  # defensive: the walker guards every conversion, this is the last line
            return f"<unrepresentable {type(value).__name__}>"

    def _string(self, text: str, budget: list[Any]) -> str:
        # Most parameters are short plain words ("en", an id, a name): nothing in them can be redacted (no URL
        # '@', no ':'/'=' of a pair, no '-' of a flag or PEM armour, no '<' of an element) and nothing needs
        # escaping in JSON, so their size is their length. One C-level scan instead of the regexes.
        if len(text) <= _PLAIN_MAX and budget[0] > _PLAIN_MAX + 2 and _PLAIN(text) is not None and "eyJ" not in text:
            budget[0] -= len(text) + 2
            return text
        text = self.redact_capped(text, budget[0] - 2)
        budget[0] -= _json_len(text) + 2
        return text

    def _walk(self, value: Any, depth: int, budget: list[Any], path: set[int]) -> Any:
        # ``budget``: the JSON bytes left, then every value redacted by key so far (raw), appended where it is
        # redacted — what the event's error text is then scrubbed of (redact_fields). One list, passed down already:
        # a second argument through every call of the walk would cost the common case, which redacts nothing.
        # Fast exits by exact type for what task parameters nearly always are (JSON-decoded messages: str, int,
        # float, dict, list): isinstance against the collections ABCs costs more than the rest of the walk.
        cls = type(value)
        if cls is str:
            return self._string(value, budget)
        if cls is int:
            if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
                budget[0] -= 8
                return value
            return self._string(_safe_str(value), budget)
        if cls is float:
            budget[0] -= 12
            return value if math.isfinite(value) else str(value)
        if (cls is dict or cls is list) and depth < self.max_depth:
            key = id(value)
            if key in path:
                budget[0] -= 12
                return "[circular]"
            path.add(key)
            try:
                if cls is dict:
                    return self._mapping(value.items(), depth, budget, path)
                return self._list(value, depth, budget, path)
            finally:
                path.discard(key)
        # The general path, for subclasses and every other type.
        if isinstance(value, str):
            return self._string(value, budget)
        if value is None or isinstance(value, bool):
            budget[0] -= 5
            return value
        if isinstance(value, int):
            if -_MAX_SAFE_INT <= value <= _MAX_SAFE_INT:
                budget[0] -= 8
                return value
            return self._string(_safe_str(value), budget)
        if isinstance(value, float):
            budget[0] -= 12
            return value if math.isfinite(value) else str(value)
        if depth >= self.max_depth:
            budget[0] -= 11
            budget.append(_DEPTH_CUT)
            return "[max depth]"
        container = isinstance(value, Mapping | list | tuple | set | frozenset) or dataclasses.is_dataclass(value)
        if container:
            if id(value) in path:
                budget[0] -= 12
                return "[circular]"
            path.add(id(value))
            try:
                return self._container(value, depth, budget, path)
            finally:
                path.discard(id(value))
        dumped = _model_fields(value)  # pydantic v2 models: walk their fields (keys redacted)
        if dumped is not None:
            return self._walk(dumped, depth, budget, path)
        return self._string(_scalar_text(value), budget)

    def _container(self, value: Any, depth: int, budget: list[Any], path: set[int]) -> Any:
        if isinstance(value, Mapping):
            return self._mapping(value.items(), depth, budget, path)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            try:
                items = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
            except Exception:
                return self._string(_safe_repr(value), budget)
            return self._mapping(items, depth, budget, path)
        items_seq: Sequence[Any] = list(value) if isinstance(value, set | frozenset) else value
        return self._list(items_seq, depth, budget, path)

    def _list(self, items_seq: Sequence[Any], depth: int, budget: list[Any], path: set[int]) -> list[Any]:
        if len(items_seq) == 2 and self.is_secret_key(items_seq[0]):
            # A key/value pair as a sequence: ("Authorization", "Bearer x") in a header list, ["api_key", "k"].
            budget[0] -= len(REDACTED) + 5
            budget.append(items_seq[1])  # redacted by key (see _walk)
            return [self._string(items_seq[0], budget), REDACTED]
        out: list[Any] = []
        budget[0] -= 2
        for index, item in enumerate(items_seq):
            if budget[0] <= 0:
                out.append(f"…[truncated {len(items_seq) - index} items]")
                break
            out.append(self._walk(item, depth + 1, budget, path))
            budget[0] -= 1
        return out

    def _mapping(self, items: Iterable[tuple[Any, Any]], depth: int, budget: list[Any], path: set[int]) -> Any:
        out: dict[str, Any] = {}
        budget[0] -= 2
        # dict views first, by exact type: an isinstance check against the Sized ABC costs more than the loop below
        # for a small mapping.
        sized = type(items) is _DICT_ITEMS or isinstance(items, Sized)
        pairs = cast("Collection[tuple[Any, Any]]", items) if sized else list(items)
        cache = self._key_cache
        walk = self._walk
        for index, (key, item) in enumerate(pairs):
            if budget[0] <= 0:
                out["…"] = f"[truncated {len(pairs) - index} keys]"
                break
            name = key if type(key) is str else _safe_str(key)
            budget[0] -= len(name) + 4
            kind = cache.get(name)
            if kind is None:
                kind = self.key_kind(name)
            if kind == NOT_SECRET or (kind == SECRET_WORD and isinstance(item, Mapping)):
                out[name] = walk(item, depth + 1, budget, path)
            else:
                out[name] = REDACTED
                budget[0] -= len(REDACTED) + 2
                budget.append(item)  # redacted by key (see _walk)
        return out

    # -- events ----------------------------------------------------------------------------------------------------
    def apply(self, event: TaskEvent, positional_names: Sequence[str] = (), *, params_done: bool = False) -> None:
        """Replace the event's free-form fields by their safe form (new objects: the message is never mutated).

        ``positional_names`` are the task function's parameter names, so a secret passed positionally (e.g.
        ``save_telegram_message(update, "123:token")``) is redacted by its parameter name too. ``params_done``:
        ``args``/``kwargs`` already are the output of an earlier ``apply`` (the same attempt's ``running`` event).
        """
        (
            event.args,
            event.kwargs,
            event.labels,
            event.error_message,
            event.traceback,
        ) = self.redact_fields(
            event.args,
            event.kwargs,
            event.labels,
            event.error_message,
            event.traceback,
            positional_names,
            params_done=params_done,
        )
        event.error_type = None if event.error_type is None else self.cap_error_type(event.error_type)

    @staticmethod
    def cap_error_type(error_type: str) -> str:
        return _truncate_text(error_type, 256)

    def redact_fields(
        self,
        args: Any,
        kwargs: Any,
        labels: Any,
        error_message: str | None,
        traceback: str | None,
        positional_names: Sequence[str] = (),
        *,
        params_done: bool = False,
        as_json: bool = False,
        secrets: Sequence[str] = (),
        found: list[str] | None = None,
    ) -> tuple[Any, Any, Any, str | None, str | None]:
        """The safe form of an event's free-form fields (see :meth:`apply`).

        The error message and traceback are scrubbed of every value the fields' redaction replaces by key (args by
        positional name, kwargs, labels, at any depth, pairs given as sequences), under each text it may have there
        (:func:`secret_texts`): ``dsn=…`` redacted in kwargs is not left in plain text in ``cannot connect to …``.
        With ``params_done`` the raw parameters are gone: ``secrets`` brings the texts of theirs, which ``found``
        received when they were redacted (the attempt's ``running`` event). ``found``: receives the texts of the
        values this call redacted by key — nothing when the fast path proved there were none.

        ``as_json``: where the fast path proves a field safe as it is, return orjson's text of it (``bytes``) instead
        of a copy. The text is the snapshot the proof was made on, so a record built from it holds exactly what was
        checked, whatever the task does to its containers later; and bytes are nothing for the cyclic GC to track
        (a queued event's copies were, and made collections about a third more frequent in the process).
        """
        remaining = self.max_record_bytes
        field = self.max_field_bytes
        if error_message is not None or traceback is not None:
            # A failure: the error text comes first in the record's budget, so it is redacted before the fields' walk
            # below; what that walk will redact by key is found here, by a walk of its own (failures are rare).
            secrets = self._redacted_texts(args, kwargs, labels, positional_names, params_done, secrets)
        if error_message is not None:
            error_message = self.redact_capped(error_message, min(field, remaining), secrets=secrets)
            remaining -= _json_len(error_message) + 2
        if traceback is not None:
            traceback = self.redact_capped(traceback, min(field, remaining), keep_tail=True, secrets=secrets)
            remaining -= _json_len(traceback) + 2
        indexes = (2,) if params_done else (0, 1, 2)
        parts: list[bytes] = []  # the fast path's JSON texts of the fields, when it made them (see _secret_values)
        if self._fast_path and type(labels) is dict:
            try:
                if params_done:
                    plain = self._plain_fields([labels], remaining, as_json, parts)
                    if plain is not None:
                        return args, kwargs, plain[0], error_message, traceback
                elif type(args) is list and type(kwargs) is dict and not self._any_secret(positional_names):
                    plain = self._plain_fields([args, kwargs, labels], remaining, as_json, parts)
                    if plain is not None:
                        return plain[0], plain[1], plain[2], error_message, traceback
            except Exception:  # defensive: the walk below decides
                pass
        texts: dict[int, bytes] = dict(zip(indexes, parts, strict=True)) if len(parts) == len(indexes) else {}
        out: list[Any] = [args, kwargs, labels]
        redacted: list[Any] | None = None if found is None else []
        for index in indexes:
            limit = max(64, min(field, remaining))
            out[index], used = self._field(index, out[index], positional_names, limit, redacted, text=texts.get(index))
            remaining -= used
        if found is not None and redacted:
            found.extend(secret_texts(redacted, self.max_depth))
        return out[0], out[1], out[2], error_message, traceback

    def _field(
        self,
        index: int,
        raw: Any,
        names: Sequence[str],
        limit: int,
        redacted: list[Any] | None,
        past_caps_bytes: int = _FIND_MAX_TEXT_BYTES,
        text: bytes | None = None,
    ) -> tuple[Any, int]:
        """The walk's safe form of one field (0 args, 1 kwargs, 2 labels) and the bytes of budget it used; the raw
        values it redacted by key are appended to ``redacted`` — and those the caps left out of the safe form, for a
        field whose JSON text has at most ``past_caps_bytes`` (see ``_secret_values``)."""
        budget: list[Any] = [limit]
        try:
            if index == 0 and self._any_secret(names):
                safe: Any = self._args(raw, names, budget)
            else:
                safe = self._walk(raw, 0, budget, set())
        except Exception:
            safe = f"<unrepresentable {type(raw).__name__}>"
        if index == 0 and not isinstance(safe, list):
            safe = [safe]
        elif index != 0 and not isinstance(safe, dict):
            safe = {"…": safe}
        if redacted is not None and (budget[0] <= 0 or (len(budget) > 1 and any(x is _DEPTH_CUT for x in budget))):
            # The caps left keys, items or levels out: a secret value among them is not in the record, but an error
            # text may quote it (``sync(rows=[…3000 rows], db_password=…)`` failing with "login failed for <pw>").
            redacted.extend(self._secret_values(index, raw, names, past_caps_bytes, text))
        elif redacted is not None and len(budget) > 1:
            redacted.extend(budget[1:])
        return safe, limit - budget[0]

    def _secret_values(
        self, index: int, raw: Any, names: Sequence[str], max_bytes: int, text: bytes | None = None
    ) -> list[Any]:
        """The raw values under secret keys in one field (0 args, 1 kwargs, 2 labels), found as the walk finds
        them, but past its size caps and ``max_depth`` (up to ``_FIND_MAX_DEPTH`` levels, ``_FIND_MAX_VALUES``
        values) — none when the field's JSON text (``text``, when the fast path made it already) names no key
        fragment, or has more than ``max_bytes``."""
        found: list[Any] = []
        visits = [_FIND_MAX_VALUES]
        try:
            if not (index == 0 and self._any_secret(names)) and not self._mentions_a_key(raw, max_bytes, text):
                return found
            if index == 0 and isinstance(raw, list | tuple) and self._any_secret(names):
                for position, item in enumerate(raw):
                    if position < len(names) and self.is_secret_key(names[position]):
                        found.append(item)
                    else:
                        self._find(item, 1, found, visits, {id(raw)})
            else:
                self._find(raw, 0, found, visits, set())
        except Exception:  # defensive: what was found so far is still scrubbed
            pass
        return found

    def _mentions_a_key(self, raw: Any, max_bytes: int, text: bytes | None = None) -> bool:
        """Whether a key fragment occurs anywhere in ``raw``'s JSON text (``True`` when that cannot be told; ``False``
        when the text has more than ``max_bytes``: the search of a few megabytes would cost the worker more).

        Most fields cut by the caps are large and hold no secret key at all (a list of rows): orjson's text of them
        and a substring search a fragment, at C speed, spare the search of their every value in Python (~1.5 µs a
        value: 15 ms for 10,000 rows, on every such event)."""
        if not self._fast_path:
            return True
        if text is None:
            try:
                text = orjson.dumps(raw, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
            except Exception:  # a cycle, an odd key: the search decides
                return True
        if len(text) > max_bytes:
            return False
        lowered = text.translate(_ASCII_LOWER)
        if not lowered.isascii():
            lowered = lowered.decode("utf-8").lower().encode("utf-8")
        if b"-" in lowered:
            lowered = lowered.replace(b"-", b"_")
        return any(fragment in lowered for fragment in self._fragment_bytes)

    def _find(self, value: Any, depth: int, found: list[Any], visits: list[int], path: set[int]) -> None:
        # Scalars are skipped by the caller's loop, not in a call each: most of a large field's values are scalars.
        if depth > _FIND_MAX_DEPTH or len(found) >= _MAX_SECRET_TEXTS or visits[0] <= 0 or id(value) in path:
            return
        cls = type(value)
        items: Any
        if cls is dict:  # exact types first: isinstance against the ABCs costs more than the rest of a visit
            items = value.items()
        elif cls is list or cls is tuple or isinstance(value, list | tuple | set | frozenset):
            seq = list(value) if isinstance(value, set | frozenset) else value
            if len(seq) == 2 and self.is_secret_key(seq[0]):  # a key/value pair as a sequence (see _list)
                found.append(seq[1])
                return
            budget = visits[0]
            visits[0] -= len(seq)
            path.add(id(value))
            for item in itertools.islice(seq, budget):
                if type(item) not in _SCALARS:
                    self._find(item, depth + 1, found, visits, path)
            path.discard(id(value))
            return
        elif isinstance(value, str | bytes | bytearray | int | float):
            return
        elif isinstance(value, Mapping):
            items = value.items()
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            items = [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
        else:
            dumped = _model_fields(value)
            if dumped is None:
                return
            items = dumped.items()
        budget = visits[0]
        visits[0] -= len(items)
        cache = self._key_cache
        path.add(id(value))
        for key, item in itertools.islice(items, budget):
            name = key if type(key) is str else _safe_str(key)
            kind = cache.get(name)
            if kind is None:
                kind = self.key_kind(name)
            if kind == NOT_SECRET or (kind == SECRET_WORD and isinstance(item, Mapping)):
                if type(item) not in _SCALARS:
                    self._find(item, depth + 1, found, visits, path)
            else:
                found.append(item)
        path.discard(id(value))

    def _redacted_texts(
        self, args: Any, kwargs: Any, labels: Any, names: Sequence[str], params_done: bool, known: Sequence[str]
    ) -> Sequence[str]:
        """``known`` and the texts of the values the fields' walk redacts by key: what an error text is scrubbed of.

        The fields walked under the whole field cap, as if each had the record to itself: a value the real walk
        reaches is reached here too, and one the caps leave out is found past them (``_field``). Parameters the fast
        path proves plain hold no secret key: no walk for them.
        """
        indexes = (2,) if params_done else (0, 1, 2)
        fields = [labels] if params_done else [args, kwargs, labels]
        try:
            plain = (
                self._fast_path
                and type(labels) is dict
                and (params_done or (type(args) is list and type(kwargs) is dict and not self._any_secret(names)))
                and self._plain_fields(fields, 2**62) is not None
            )
        except Exception:  # defensive: the walk decides
            plain = False
        if plain:
            return known
        redacted: list[Any] = []
        for index, raw in zip(indexes, fields, strict=True):
            self._field(index, raw, names, self.max_field_bytes, redacted, past_caps_bytes=2**62)
        if not redacted:
            return known
        return secret_texts([*known, *redacted], self.max_depth)

    def _plain_fields(
        self, fields: list[Any], remaining: int, as_json: bool = False, parts_out: list[bytes] | None = None
    ) -> list[Any] | None:
        """What the walk returns for ``fields`` (each under its own budget), when it provably returns them unchanged.

        ``None`` when that is not proven. The proof, on orjson's text of ``fields`` (see ``_PLAIN_JSON_OPTIONS``):

        * no key fragment, no ``-p`` flag, no ``://`` with ``@``, no ``private key``, no ``</``, no ``eyj`` anywhere in
          the lower-cased text (``-`` read as ``_``): every key is ``NOT_SECRET`` and ``redact_text`` changes no string;
        * nesting at most ``max_depth``, and ``len(text) + 12 * values`` (a bound of the walk's budget arithmetic)
          small enough that no field, string or record cap can apply, whatever ``remaining`` the fields share;
        * ``orjson.loads(text) == fields``: only str/int/float/bool/None/list/dict with str keys were there.

        The copy returned is ``orjson.loads(text)``, not the input: like the walk's output it shares no container
        with the message, which the task may still mutate (a key added later would never have been checked), and
        orjson's text is a snapshot taken under the GIL. Its one difference from the walk: an ``IntEnum``/``StrEnum``
        member (an int or str subclass orjson renders by value) comes back as the plain int or str, equal to it and
        rendered the same in JSON. With ``as_json``, each field's part of that snapshot is returned instead (``bytes``,
        the JSON text the copy would render as).
        """
        if as_json:
            if len(fields) == 3:  # the usual call: spelled out, a third cheaper than a comprehension and a join
                parts = [
                    orjson.dumps(fields[0], option=_PLAIN_JSON_OPTIONS),
                    orjson.dumps(fields[1], option=_PLAIN_JSON_OPTIONS),
                    orjson.dumps(fields[2], option=_PLAIN_JSON_OPTIONS),
                ]
                text = b"[%b,%b,%b]" % (parts[0], parts[1], parts[2])
            else:
                parts = [orjson.dumps(f, option=_PLAIN_JSON_OPTIONS) for f in fields]
                text = b"[" + b",".join(parts) + b"]"
            if parts_out is not None:
                parts_out.extend(parts)
        else:
            text = orjson.dumps(fields, option=_PLAIN_JSON_OPTIONS)
        # Each field's walk charges at most `bound` of its budget, so while `remaining - bound >= field` every field's
        # limit is the whole field cap, and the budget before any string stays above the plain-string threshold
        # (_PLAIN_MAX) and above that string's size: nothing is cut, no list or dict truncated.
        field = self.max_field_bytes
        if len(text) + _PLAIN_MAX + 4 > field or remaining - len(text) < field:
            return None  # too large whatever its shape: the shape's verdict would be wasted
        shape = text.translate(_ASCII_LOWER, self._shape_delete)
        values = self._shapes.get(shape)
        key = shape
        if values is None:
            # A rejected shape is kept under a digest of its text, never the text: that may hold a secret value (a
            # password under its key, lower-cased), and no cache here may hold one. Plain shapes hold none to redact.
            key = hashlib.blake2b(shape, digest_size=20).digest()
            values = self._shapes.get(key)
        if values is None:
            # A value is the first item of a container, or follows a comma (the outer list adds 1 and 2 of them);
            # brackets and commas inside strings count too: the bound only grows.
            opens = shape.count(b"[") + shape.count(b"{")
            values = shape.count(b",") + opens
            if len(text) + _VALUE_EXCESS * (values + 1) + _PLAIN_MAX + 4 > field:
                return None  # too large: spare the verdict, the costly part
            if self._plain_shape(shape, opens):
                key = shape
            else:
                values = -1
            if len(self._shapes) >= _SHAPES_MAX or self._shapes_bytes + len(key) > _SHAPES_MAX_BYTES:
                self._shapes.clear()
                self._shapes_bytes = 0
            self._shapes[key] = values
            self._shapes_bytes += len(key)
        if values < 0:
            return None
        bound = len(text) + _VALUE_EXCESS * (values + 1)
        if bound + _PLAIN_MAX + 4 > field or remaining - bound < field:
            return None
        copy: list[Any] = orjson.loads(text)
        if copy != fields:
            return None
        if as_json:
            # Exact-size copies, not orjson's own objects, are what a queued event keeps: orjson allocates its output
            # with room to spare in the C heap and shrinks it in place, so each one kept pins a block there and the
            # next dumps allocates afresh. 10,000 events held: 4.8 µs an event for its three texts as orjson made
            # them, 0.5 µs as copies (benchmarks/bench_redaction.py).
            return [b"%b" % part for part in parts]
        return copy

    def _plain_shape(self, shape: bytes, opens: int) -> bool:
        """Whether the walk leaves a JSON text of ``shape`` (lowered, digits deleted; ``opens`` brackets) as it is."""
        # str, not bytes: `in` on a short bytes costs ~150 ns, on a str ~40 ns. ASCII is lower-cased already; str.lower
        # of the rest is what _norm does (a Kelvin sign 'K' lowers to an ASCII 'k').
        text = shape.decode("utf-8")
        if not shape.isascii():
            text = text.lower()
        if ("://" in text and "@" in text) or "-p" in text or "private key" in text or "</" in text or "eyj" in text:
            return False
        text = text.replace("-", "_")
        for fragment in self._fragments:
            if fragment in text:
                return False
        # Brackets anywhere, strings included, bound the nesting from above; the outer list of fields is one level.
        return opens <= self.max_depth + 1 or self._nesting(shape) <= self.max_depth + 1

    @staticmethod
    def _nesting(shape: bytes) -> int:
        """How deep the containers of a JSON text nest (a large number when it is not well-formed)."""
        # The brackets outside strings. Escaped backslashes, then escaped quotes, go first (a backslash escapes the
        # character after it, pairing from the left of a run), so the quotes left delimit the strings; kept with
        # the brackets only, a string holding no bracket is '""'. Any quote left: a string holds a bracket, and only
        # an exact strip (slower: a piece per string) tells. A regex over the strings cost ~15 ns a byte.
        unquoted = shape.replace(b"\\\\", b"").replace(b'\\"', b"") if b"\\" in shape else shape
        brackets = unquoted.translate(_BRACKETS, _NOT_BRACKETS_OR_QUOTES).replace(b'""', b"")
        if b'"' in brackets:
            brackets = b"".join(unquoted.split(b'"')[::2]).translate(_BRACKETS, _NOT_BRACKETS)
        # Each pass deletes the innermost (empty) pairs: passes = nesting.
        passes = 0
        while brackets:
            passes += 1
            shorter = brackets.replace(b"[]", b"")
            if len(shorter) == len(brackets):
                return len(shape)
            brackets = shorter
        return passes

    def _any_secret(self, names: Sequence[str]) -> bool:
        if not names:
            return False
        key = tuple(names)
        hit = self._names_cache.get(key)
        if hit is None:
            hit = any(self.is_secret_key(name) for name in names)
            if len(self._names_cache) < 10_000:
                self._names_cache[key] = hit
        return hit

    def _args(self, args: Any, names: Sequence[str], budget: list[Any]) -> Any:
        if not isinstance(args, list | tuple):
            return self._walk(args, 0, budget, set())
        out: list[Any] = []
        budget[0] -= 2
        for index, item in enumerate(args):
            if budget[0] <= 0:
                out.append(f"…[truncated {len(args) - index} items]")
                break
            if index < len(names) and self.is_secret_key(names[index]):
                out.append(REDACTED)
                budget[0] -= len(REDACTED) + 3
                budget.append(item)  # redacted by key (see _walk)
            else:
                out.append(self._walk(item, 1, budget, {id(args)}))
                budget[0] -= 1
        return out


def _safe_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    return text if isinstance(text, str) else f"<unrepresentable {type(value).__name__}>"


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        return _safe_repr(value)


def _scalar_text(value: Any) -> str:
    """The readable text of a non-container value."""
    try:
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value.isoformat()
        if isinstance(value, uuid.UUID | Decimal | PurePath | dt.timedelta):
            return str(value)
        if isinstance(value, enum.Enum):
            return _safe_str(value.value)
        if isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value[:2048]) if not isinstance(value, memoryview) else value[:2048].tobytes()
            return repr(raw) + (f"…[{len(value)} bytes]" if len(value) > 2048 else "")
    except Exception:
        pass
    return _safe_repr(value)
