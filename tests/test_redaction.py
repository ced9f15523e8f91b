from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, cast

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from taskiq_monitor.events import TaskEvent, to_record
from taskiq_monitor.redaction import (
    _SHAPES_MAX,
    DEFAULT_REDACT_KEYS,
    REDACTED,
    Redactor,
    mask_url_credentials,
    secret_texts,
)
from taskiq_monitor.settings import Settings


@pytest.fixture
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "db_passwd",
        "client_secret",
        "bot_token",
        "accessToken",
        "api_key",
        "X-Api-Key",
        "apikey",
        "Authorization",
        "cookie",
        "session_id",
        "private_key",
        "SENTRY_DSN",
        "aws_credentials",
    ],
)
def test_secret_keys_are_redacted_case_insensitive_and_by_substring(redactor: Redactor, key: str) -> None:
    assert redactor.sanitize({key: "s3cr3t-value"}) == {key: REDACTED}


def test_redaction_reaches_nested_dicts_and_lists(redactor: Redactor) -> None:
    value = {"update": {"items": [{"meta": {"auth": {"Cookie": "c=1", "user": "ann"}}}]}, "tokens": ["a", "b"]}
    out = redactor.sanitize(value)
    assert out["update"]["items"][0]["meta"]["auth"] == {"Cookie": REDACTED, "user": "ann"}
    assert out["tokens"] == REDACTED
    assert "c=1" not in json.dumps(out)


def test_non_secret_keys_are_kept(redactor: Redactor) -> None:
    assert redactor.sanitize({"user_id": 7, "text": "hello", "chat": {"id": 42}}) == {
        "user_id": 7,
        "text": "hello",
        "chat": {"id": 42},
    }


# A JSON Web Token: a bearer credential wherever it appears, key or not.
_JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        ("https://bot:hunter2@hooks.example.invalid/telegram", "hunter2", "https://bot:***@hooks.example.invalid"),
        ("connect postgres://app:p%40ss@db:5432/app failed", "p%40ss", "postgres://app:***@db:5432/app failed"),
        ("redis://:onlypass@cache:6379/0", "onlypass", "redis://:***@cache:6379/0"),
        ("GET /cb?token=abc123&page=2", "abc123", "page=2"),
        ("Authorization: Bearer eyJhbGciOi.x.y", "eyJhbGciOi", "Authorization: ***"),
        ("login failed password='hunter 2' for ann", "hunter 2", "for ann"),
        ('{"api_key": "k-123", "n": 1}', "k-123", '"n": 1'),
        ("https://u:p@ss@host/x", "p@ss", "@host/x"),
        (f"cannot verify {_JWT} (expired)", _JWT.split(".")[1], "cannot verify *** (expired)"),
        (f"verify({_JWT!r})", _JWT.split(".")[2], "verify('***')"),
        ("alg none: eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0. accepted", "eyJzdWIiOiIxIn0", "alg none: *** accepted"),
        ("Cookie: _ga=GA1.2; sid=s3ss10n; theme=dark\nHost: x", "s3ss10n", "Cookie: ***\nHost: x"),
        ("mysql -uroot -ps3cretpw shop < dump.sql", "s3cretpw", "mysql -uroot -p*** shop"),
        ("Command '['mysqldump', '-u', 'root', '-ps3cretpw', 'shop']' returned 2", "s3cretpw", "'-p***', 'shop'"),
        ("sshpass -ps3cretpw ssh db", "s3cretpw", "sshpass -p*** ssh db"),
    ],
)
def test_credentials_inside_free_text_are_masked(redactor: Redactor, text: str, secret: str, kept: str) -> None:
    out = redactor.redact_text(text)
    assert secret not in out
    assert kept in out


def test_urls_without_credentials_are_unchanged(redactor: Redactor) -> None:
    text = "see https://example.com/a?b=c and mailto:ann@example.com"
    assert redactor.redact_text(text) == text


def test_a_cookie_in_a_query_string_is_one_value(redactor: Redactor) -> None:
    assert redactor.redact_text("GET /x?cookie=abc&page=2") == "GET /x?cookie=***&page=2"


def test_attached_dash_p_is_a_password_only_for_the_tools_that_take_one(redactor: Redactor) -> None:
    text = "gcc -pthread -pedantic x.c && find . -print"
    assert redactor.redact_text(text) == text


def test_text_that_only_starts_like_a_jwt_is_kept(redactor: Redactor) -> None:
    text = "eyJust a.word and eyJabc.de.f (parts too short) and xeyJhbGciOiJ.eyJzdWIi.sig"
    assert redactor.redact_text(text) == text


def test_any_value_renders_json_safe_without_raising(redactor: Redactor) -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    @dataclasses.dataclass
    class Creds:
        user: str
        password: str

    class Model(BaseModel):
        name: str
        secret: str

    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    value = {
        "obj": Unprintable(),
        "dc": Creds("ann", "pw1"),
        "model": Model(name="m", secret="pw2"),
        "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        "id": uuid.UUID(int=1),
        "money": Decimal("1.10"),
        "big": 2**80,
        "nan": float("nan"),
        "raw": b"\x00\xff",
        "set": {3},
        (1, 2): "tuple key",
        "cyclic": cyclic,
    }
    out = redactor.sanitize(value)
    text = json.dumps(out, allow_nan=False)  # strict JSON
    assert out["obj"] == "<unrepresentable Unprintable>"
    assert out["dc"] == {"user": "ann", "password": REDACTED}
    assert out["model"] == {"name": "m", "secret": REDACTED}
    assert out["when"] == "2026-01-02T03:04:05+00:00"
    assert out["big"] == str(2**80) and out["nan"] == "nan"
    assert out["cyclic"] == [1, "[circular]"]
    assert out["(1, 2)"] == "tuple key"
    assert "pw1" not in text and "pw2" not in text


def test_depth_is_bounded() -> None:
    value: dict[str, Any] = {}
    node = value
    for _ in range(50):
        node["x"] = {}
        node = node["x"]
    text = json.dumps(Redactor(max_depth=5).sanitize(value))
    assert "[max depth]" in text and text.count("{") <= 6


def test_field_cap_truncates_long_strings_with_a_marker() -> None:
    out = Redactor().sanitize("x" * 10_000, 1000)
    assert len(out.encode()) <= 1000
    kept, marker = out.split("…")
    assert marker == f"[truncated {10_000 - len(kept)} bytes]"


def test_field_cap_truncates_long_lists_and_dicts_with_a_marker() -> None:
    redactor = Redactor()
    items = redactor.sanitize(list(range(10_000)), 500)
    assert items[-1].startswith("…[truncated ") and items[-1].endswith(" items]")
    assert len(json.dumps(items)) <= 600
    mapping = redactor.sanitize({f"k{i}": i for i in range(10_000)}, 500)
    assert mapping["…"].endswith(" keys]") and len(json.dumps(mapping)) <= 600


def _event(**kwargs: Any) -> TaskEvent:
    return TaskEvent(status="failed", task_id="t1", task_name="save_telegram_message", timestamp=1.0, **kwargs)


def test_apply_caps_the_whole_record_and_keeps_traceback_tail() -> None:
    redactor = Redactor(max_field_bytes=4000, max_record_bytes=6000)
    tb = "Traceback (most recent call last):\n" + "  frame\n" * 2000 + "ValueError: the real cause\n"
    event = _event(args=["a" * 5000], kwargs={"blob": "b" * 5000}, labels={"l": "c" * 5000}, traceback=tb)
    redactor.apply(event)
    line = json.dumps(to_record(event), ensure_ascii=False)
    assert len(line.encode()) < 6000 + 600  # the cap covers the free-form fields; fixed fields are small
    assert event.traceback is not None and event.traceback.endswith("ValueError: the real cause\n")
    assert "…[truncated" in event.traceback


def test_apply_redacts_positional_secrets_by_parameter_name_and_never_mutates_the_message() -> None:
    redactor = Redactor()
    args = [{"update_id": 1}, "123456:AAE-bot-token"]
    kwargs = {"webhook_url": "https://bot:hunter2@hooks.example.invalid/x", "nested": {"password": "pw"}}
    event = _event(
        args=args,
        kwargs=kwargs,
        error_message="cannot reach https://bot:hunter2@hooks.example.invalid",
        traceback='File "x.py"\n    post(url="https://bot:hunter2@h/x", token=TOKEN)\nConnectionError: token=abc',
    )
    redactor.apply(event, positional_names=("update", "bot_token", "webhook_url"))
    text = json.dumps(to_record(event))
    for secret in ("123456:AAE-bot-token", "hunter2", 'pw"', "abc"):
        assert secret not in text
    assert event.args == [{"update_id": 1}, REDACTED]
    assert args[1] == "123456:AAE-bot-token" and kwargs["nested"] == {"password": "pw"}  # originals untouched


def test_settings_extend_the_default_keys() -> None:
    settings = Settings(redact_keys="+iban")  # type: ignore[arg-type]
    redactor = Redactor(settings.redact_keys)
    assert redactor.sanitize({"customer_iban": "DE00", "password": "x"}) == {
        "customer_iban": REDACTED,
        "password": REDACTED,
    }


# -- regressions of the review: huge strings, token-only URL userinfo, key/value pairs as sequences, Settings repr --
def _spy_inputs(redactor: Redactor) -> list[int]:
    sizes: list[int] = []
    real = redactor.redact_text

    def spy(text: str) -> str:
        sizes.append(len(text))
        return real(text)

    redactor.redact_text = spy  # type: ignore[method-assign]
    return sizes


def test_huge_strings_are_cut_before_the_regexes_run_and_secrets_in_the_kept_part_stay_masked() -> None:
    redactor = Redactor()  # 16 KiB field cap
    cap = redactor.max_field_bytes
    filler = "user=ann path=/x: a=b " * 250_000  # ~5.5 MB of key=value pairs
    head_secret = "connect https://bot:hunter2@db/x password=hunter3 "
    tail_secret = "\nConnectionError: token=abc-tail-secret\n"
    sizes = _spy_inputs(redactor)
    event = _event(
        args=[head_secret + filler],
        kwargs={"text": head_secret + filler},
        error_message=head_secret + filler,
        traceback="Traceback (most recent call last):\n" + head_secret + filler + tail_secret,
    )
    redactor.apply(event)
    assert sizes and max(sizes) <= 2 * cap + 2048, f"a regex ran over {max(sizes)} characters"
    line = json.dumps(to_record(event), ensure_ascii=False)
    assert len(line.encode()) < redactor.max_record_bytes + 1024
    for text in (event.args[0], event.kwargs["text"], event.error_message, event.traceback):
        assert isinstance(text, str) and len(text.encode()) <= cap
        assert "hunter2" not in text and "hunter3" not in text and "password=***" in text
        assert "…[truncated " in text
    assert event.traceback is not None and event.traceback.endswith("ConnectionError: token=***\n")
    assert "abc-tail-secret" not in line


def test_huge_string_truncation_marker_counts_every_cut_byte() -> None:
    redactor = Redactor()
    out = redactor.sanitize("password=hunter2 " + "x" * 3_000_000, 1000)
    kept, marker = out.split("…")
    assert kept.startswith("password=*** ") and len(out.encode()) <= 1000
    original = len("password=hunter2 ") + 3_000_000
    assert marker == f"[truncated {original - len('password=hunter2 ') - (len(kept) - len('password=*** '))} bytes]"


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (
            "git clone https://ghp_abcdef123456@github.com/org/repo.git",
            "ghp_abcdef123456",
            "https://***@github.com/org",
        ),
        ("pip install git+https://oauth2-token@gitlab.example/x", "oauth2-token", "git+https://***@gitlab.example/x"),
        ("https://u:p@ss@host/x", "p@ss", "https://u:***@host/x"),
    ],
)
def test_url_userinfo_without_a_colon_is_masked(redactor: Redactor, text: str, secret: str, kept: str) -> None:
    out = redactor.redact_text(text)
    assert secret not in out and kept in out


def test_key_value_pairs_given_as_sequences_are_redacted(redactor: Redactor) -> None:
    value = {
        "headers": [("Authorization", "Bearer abc"), ("Accept", "application/json")],
        "params": [["api_key", "k-123"], ["page", "2"]],
        "pair": ("X-Auth-Token", {"nested": "t-456"}),
        "not_a_pair": ["token", "is", "three"],
    }
    out = redactor.sanitize(value)
    assert out["headers"] == [["Authorization", REDACTED], ["Accept", "application/json"]]
    assert out["params"] == [["api_key", REDACTED], ["page", "2"]]
    assert out["pair"] == ["X-Auth-Token", REDACTED]
    assert out["not_a_pair"] == ["token", "is", "three"]
    assert "abc" not in json.dumps(out) and "k-123" not in json.dumps(out) and "t-456" not in json.dumps(out)


def test_settings_repr_masks_credentials_in_urls() -> None:
    settings = Settings(
        loki_url="https://tenant:loki-SECRET-1@loki.example",
        demo_broker_url="redis://:redis-SECRET-2@cache:6379/0",
        otlp_endpoint="https://otlp-SECRET-3@tempo.example",
    )
    for text in (repr(settings), str(settings)):
        assert "SECRET" not in text
        assert "https://tenant:***@loki.example" in text and "redis://:***@cache:6379/0" in text
    assert settings.loki_url == "https://tenant:loki-SECRET-1@loki.example"  # the value itself is untouched


# -- issue 14 #8: shapes the defaults used to miss ---------------------------------------------------------------


@pytest.mark.parametrize("key", ["auth", "bearer", "passphrase", "credentials", "private_key", "proxyAuth", "X-Auth"])
def test_more_secret_keys_are_redacted(redactor: Redactor, key: str) -> None:
    assert redactor.sanitize({key: "s3cr3t-value"}) == {key: REDACTED}


def test_auth_tuple_is_redacted_as_a_whole(redactor: Redactor) -> None:
    out = redactor.sanitize({"url": "https://api.example/x", "auth": ("ann", "hunter2")})
    assert out == {"url": "https://api.example/x", "auth": REDACTED}
    assert "hunter2" not in json.dumps(out)


def test_auth_is_a_whole_word_so_author_is_kept(redactor: Redactor) -> None:
    assert redactor.sanitize({"author": "ann", "authority": "x", "auth_user": "u"}) == {
        "author": "ann",
        "authority": "x",
        "auth_user": REDACTED,
    }


def test_auth_given_positionally_is_redacted() -> None:
    event = TaskEvent(status="running", task_id="t", task_name="fetch", timestamp=0.0, args=["u", ("ann", "pw")])
    Redactor().apply(event, ("url", "auth"))
    assert event.args == ["u", REDACTED]


# The rule, as one regex (the password a backtracking group): what mask_url_credentials computes in linear time.
_URL_RULE = re.compile(
    r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*+://(?:[^\s:/@]*+:))(?P<secret>[^\s?#]*)"
    r"(?=@[^\s/@?#:'\"]*+(?:[/?#:\s'\"]|$))"
    r"|(?P<thead>\b[a-zA-Z][a-zA-Z0-9+.\-]*+://)(?P<token>[^\s:/@]++)(?=@)"
)


def _url_rule(text: str) -> str:
    return _URL_RULE.sub(lambda m: (m.group("head") or m.group("thead")) + "***", text)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a://", "postgres://", "u", "pw", ":", "@", "/", "?", "#", " ", "\n", "'", ".", "h", "x.y"]),
        max_size=30,
    ).map("".join)
)
def test_url_credentials_are_masked_by_the_rule(text: str) -> None:
    assert mask_url_credentials(text) == _url_rule(text)


@pytest.mark.parametrize(
    "password",
    [
        "A" * 1000,
        # An RDS IAM token as a DSN password: a percent-encoded presigned request, ~900 characters.
        "db.example.com%3A5432%2F%3FAction%3Dconnect%26DBUser%3Dapp%26X-Amz-Signature%3D" + "f" * 800,
    ],
)
def test_url_passwords_of_any_length_are_masked(redactor: Redactor, password: str) -> None:
    text = f"cannot connect postgresql://app:{password}@db.example.com:5432/app: timeout"
    assert redactor.redact_text(text) == "cannot connect postgresql://app:***@db.example.com:5432/app: timeout"


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        ("postgres://u:pa/ss@h/db", "pa/ss", "postgres://u:***@h/db"),
        ("dsn postgres://u:p@ss/w@db.local:5432/app end", "p@ss/w", "dsn postgres://u:***@db.local:5432/app end"),
        ("https://u:pw@api.example/x?email=a@b.example", "pw", "https://u:***@api.example/x?email=a@b.example"),
    ],
)
def test_url_passwords_holding_slashes_and_ats_are_masked(
    redactor: Redactor, text: str, secret: str, expected: str
) -> None:
    out = redactor.redact_text(text)
    assert out == expected
    assert secret not in out


def test_password_flags_in_a_called_process_error_are_masked(redactor: Redactor) -> None:
    import subprocess

    as_list = subprocess.CalledProcessError(1, ["psql", "--password", "hunter2", "-p", "s3cret", "-U", "app"])
    as_shell = subprocess.CalledProcessError(2, "mysqldump --password hunter2 -p s3cret --user app db")
    for error in (as_list, as_shell):
        out = redactor.redact_text(str(error))
        assert "hunter2" not in out and "s3cret" not in out
        assert "app" in out and "returned non-zero exit status" in out
    assert redactor.redact_text("psql --password hunter2 --user app") == "psql --password *** --user app"


def test_secret_xml_elements_are_masked(redactor: Redactor) -> None:
    text = '<login><user>ann</user><password>hunter2</password><ns:token a="1">abc</ns:token></login>'
    expected = '<login><user>ann</user><password>***</password><ns:token a="1">***</ns:token></login>'
    assert redactor.redact_text(text) == expected


def test_pem_private_key_bodies_are_masked(redactor: Redactor) -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nq83x\n-----END RSA PRIVATE KEY-----"
    out = redactor.redact_text(f"key={pem} loaded")
    assert "MIIEpAIBAAKCAQEA" not in out and "q83x" not in out
    assert out.endswith("-----END RSA PRIVATE KEY----- loaded")


def test_new_shapes_are_redacted_in_events_error_text() -> None:
    event = TaskEvent(
        status="failed",
        task_id="t",
        task_name="backup",
        timestamp=0.0,
        error_type="CalledProcessError",
        error_message="Command 'pg_dump postgres://u:pa/ss@h/db --password hunter2' returned non-zero exit status 1.",
    )
    Redactor().apply(event)
    assert event.error_message is not None
    assert "pa/ss" not in event.error_message and "hunter2" not in event.error_message


# -- the fast path of redact_fields ----------------------------------------------------------------------------------
class _CountingRedactor(Redactor):
    """Counts the walk's calls: zero calls means the fast path gave the result."""

    walks = 0
    verdicts = 0  # shapes judged (the fast path's costly step, spared by its cache)

    def _walk(self, value: Any, depth: int, budget: list[int], path: set[int]) -> Any:
        self.walks += 1
        return super()._walk(value, depth, budget, path)

    def _plain_shape(self, shape: bytes, opens: int) -> bool:
        self.verdicts += 1
        return super()._plain_shape(shape, opens)


def _walker(**config: Any) -> Redactor:
    redactor = Redactor(**config)
    redactor._fast_path = False
    return redactor


def _typed(value: Any) -> Any:
    """``value`` with every node's type made visible, so that equal outputs must also have the same types.

    The one documented difference: an IntEnum/StrEnum member the walk keeps comes back from the fast path as the
    plain int/str (equal, and the same JSON).
    """
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, dict):
        return ("dict", [(type(k).__name__, k, _typed(v)) for k, v in value.items()])
    if isinstance(value, list | tuple):
        return (type(value).__name__, [_typed(v) for v in value])
    return (type(value).__name__, value)


class _Colour(enum.Enum):
    RED = 1


class _Level(enum.IntEnum):
    HIGH = 3


class _Mode(enum.StrEnum):
    FAST = "fast"


_PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"
_PLAIN_WORDS = ["user", "lang", "en", "options", "retries", "id", "name", "items", "chat", "Hello world", "", "a.b"]


def _key_variants(fragment: str) -> list[str]:
    camel = "".join(part.capitalize() for part in fragment.split("_"))
    return [fragment, fragment.upper(), fragment.replace("_", "-"), "x_" + fragment, camel, "my" + camel]


_SECRET_KEYS = [variant for key in (*DEFAULT_REDACT_KEYS, "auth") for variant in _key_variants(key)]
_TRICKY_KEYS = ["author", "max_tokens", "proxyAuth", "X-Basic-Auth", "TO\u212aEN", "passwordHint", "p"]
_TRIGGER_TEXTS = [
    "postgres://app:hunter2@db/app",
    "https://ghp_x@github.com/o/r",
    "psql -p s3cret",
    "run --password pw now",
    "GET /cb?token=abc&page=2",
    "Authorization: Bearer x.y",
    "<password>x</password>",
    _PEM,
    "TO\u212aEN=abc",
    "x" * 20_000,
    "line\n" * 3_000,
    'quote " and \\ backslash',
    "mail a@b.c from https://host/x",
]
_keys = (
    st.sampled_from(_PLAIN_WORDS) | st.sampled_from(_SECRET_KEYS) | st.sampled_from(_TRICKY_KEYS) | st.text(max_size=12)
)
_scalars = (
    st.sampled_from(_PLAIN_WORDS)
    | st.sampled_from(_TRIGGER_TEXTS)
    | st.sampled_from(_SECRET_KEYS)
    | st.text(max_size=40)
    | st.integers(min_value=-(2**60), max_value=2**60)
    | st.sampled_from([2**53, -(2**53), 2**53 - 1, 2**64])
    | st.floats()
    | st.booleans()
    | st.none()
    | st.sampled_from([_Colour.RED, _Level.HIGH, _Mode.FAST, uuid.UUID(int=7), dt.datetime(2026, 12, 1, 17, 0)])
)


def _nest(depth: int, leaf: Any) -> Any:
    for level in range(depth):
        leaf = [leaf] if level % 2 else {"k": leaf}
    return leaf


_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(_keys, children, max_size=5)
        | st.lists(children, max_size=3).map(tuple)
        | children.map(lambda item: ["api_key", item])
        | st.tuples(st.integers(1, 12), children).map(lambda nested: _nest(*nested))
    ),
    max_leaves=25,
)
_CONFIGS = [{}, {"max_field_bytes": 300, "max_record_bytes": 700, "max_depth": 3}, {"keys": ["s3cret", "x-Tra"]}]


@settings(max_examples=400, deadline=None)
@given(
    config=st.sampled_from(_CONFIGS),
    args=st.lists(_values, max_size=4),
    kwargs=st.dictionaries(_keys, _values, max_size=4),
    labels=st.dictionaries(_keys, _values, max_size=3),
    error=st.none() | st.sampled_from(["boom", "password=x", "e" * 40_000]),
    names=st.sampled_from([(), ("update", "lang"), ("update", "bot_token"), ("url", "auth")]),
    params_done=st.booleans(),
    as_json=st.booleans(),
)
def test_redact_fields_with_the_fast_path_equals_the_walk(
    config: dict[str, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    labels: dict[str, Any],
    error: str | None,
    names: tuple[str, ...],
    params_done: bool,
    as_json: bool,
) -> None:
    fast = Redactor(**config).redact_fields(
        args, kwargs, labels, error, error, names, params_done=params_done, as_json=as_json
    )
    walk = _walker(**config).redact_fields(args, kwargs, labels, error, error, names, params_done=params_done)
    # With as_json a field the fast path proved is its JSON text: the walk's output, as orjson renders it.
    fast = tuple(orjson.loads(v) if type(v) is bytes else v for v in fast)
    assert fast == walk
    assert _typed(fast) == _typed(walk)


_plain_scalars = (
    st.sampled_from(_PLAIN_WORDS)
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.none()
)
_plain_values = st.recursive(
    _plain_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(_PLAIN_WORDS), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None)
@given(
    args=st.lists(_plain_values, max_size=4),
    kwargs=st.dictionaries(st.sampled_from(_PLAIN_WORDS), _plain_values, max_size=4),
    labels=st.dictionaries(st.sampled_from(_PLAIN_WORDS), _plain_values, max_size=3),
)
def test_plain_json_parameters_take_the_fast_path_and_equal_the_walk(
    args: list[Any], kwargs: dict[str, Any], labels: dict[str, Any]
) -> None:
    redactor = _CountingRedactor()
    fast = redactor.redact_fields(args, kwargs, labels, None, None, ("update", "lang"))
    assert redactor.walks == 0
    walk = _walker().redact_fields(args, kwargs, labels, None, None, ("update", "lang"))
    assert fast == walk
    assert _typed(fast) == _typed(walk)


_TYPICAL = ([12345], {"options": {"lang": "en", "retries": 2}}, {"taskiq_monitor_enqueued_at": 1764612345.12})


def test_typical_parameters_take_the_fast_path_and_share_no_container_with_the_message() -> None:
    redactor = _CountingRedactor()
    args, kwargs, labels = _TYPICAL
    out = redactor.redact_fields(args, kwargs, labels, "boom", "Traceback …", ("user_id",))
    assert redactor.walks == 0
    assert out == (args, kwargs, labels, "boom", "Traceback …")
    assert out[0] is not args and out[1] is not kwargs and out[2] is not labels
    assert out[1]["options"] is not kwargs["options"]  # a task mutating its kwargs later changes nothing checked
    done = redactor.redact_fields(out[0], out[1], {"_retries": 1, **labels}, None, None, params_done=True)
    assert redactor.walks == 0
    assert done[0] is out[0] and done[1] is out[1]
    assert done[2] == {"_retries": 1, **labels}
    texts = redactor.redact_fields(args, kwargs, labels, None, None, ("user_id",), as_json=True)
    assert redactor.walks == 0
    assert texts[:3] == (orjson.dumps(args), orjson.dumps(kwargs), orjson.dumps(labels))


@pytest.mark.parametrize(
    ("args", "kwargs", "secret"),
    [
        ([], {"db": "postgres://app:hunter2@db/app"}, "hunter2"),
        ([], {"repo": "https://ghp_t0k@github.com/o/r"}, "ghp_t0k"),
        (["psql -p s3cretpw"], {}, "s3cretpw"),
        (["run --password s3cretpw"], {}, "s3cretpw"),
        ([], {"url": "/cb?token=s3cretpw"}, "s3cretpw"),
        ([], {"x": "<password>s3cretpw</password>"}, "s3cretpw"),
        ([], {"key": _PEM}, "MIIEow"),
        ([], {"accessToken": "s3cretpw"}, "s3cretpw"),
        ([], {"X-Api-Key": "s3cretpw"}, "s3cretpw"),
        ([], {"DB_PASSWORD": "s3cretpw"}, "s3cretpw"),
        ([], {"proxyAuth": "s3cretpw"}, "s3cretpw"),
        ([], {"TO\u212aEN": "s3cretpw"}, "s3cretpw"),  # a Kelvin sign: str.lower() makes it 'token', bytes.lower() not
        ([["Authorization", "Bearer s3cretpw"]], {}, "s3cretpw"),
        ([_JWT], {}, _JWT),  # letters, digits, '_' and '.': plain to every other check
        (["mysqldump -ps3cretpw shop"], {}, "s3cretpw"),
        ([], {"headers": "Cookie: a=1; sid=s3cretpw"}, "s3cretpw"),
        ([], {"note": f"session of {_JWT}"}, _JWT),
        ([], {"n": 2**53}, None),
        ([], {"f": math.nan}, None),
        ([], {"c": _Colour.RED}, None),
        ([], {"u": uuid.UUID(int=7)}, None),
        ([], {"d": dt.date(2026, 12, 1)}, None),
        ([], {"t": (1, 2)}, None),
        ([], {"s": {1, 2}}, None),
        ([], {1: "int key"}, None),
        ([], {"deep": _nest(9, 1)}, None),
        ([], {"long": "x" * 20_000}, None),
        ([], {"many": list(range(3_000))}, None),
    ],
)
def test_the_walk_decides_when_anything_could_be_redacted_capped_or_converted(
    args: list[Any], kwargs: dict[Any, Any], secret: str | None
) -> None:
    redactor = _CountingRedactor()
    out = redactor.redact_fields(args, kwargs, {}, None, None)
    assert redactor.walks > 0
    assert out == _walker().redact_fields(args, kwargs, {}, None, None)
    if secret is not None:
        assert secret not in json.dumps(out)


@pytest.mark.parametrize("max_depth", [3, 8])
@pytest.mark.parametrize("leaf", ["leaf", '[[[{{ \\" ]]', "]]]] }}", '\\\\"[[[[[[[[[[[['])
def test_nesting_up_to_max_depth_takes_the_fast_path_one_more_level_the_walk(max_depth: int, leaf: str) -> None:
    # Brackets, quotes and backslashes inside strings must not count as nesting, either way.
    redactor = _CountingRedactor(max_depth=max_depth)
    kwargs = {"a": _nest(max_depth - 1, leaf), "b": [leaf, {"c": leaf}]}  # kwargs itself is the first level
    assert redactor.redact_fields([], kwargs, {}, None, None)[1] == kwargs
    assert redactor.walks == 0
    deeper = {"a": _nest(max_depth, leaf)}
    out = redactor.redact_fields([], deeper, {}, None, None)
    assert redactor.walks > 0
    assert "[max depth]" in json.dumps(out)
    assert out == _walker(max_depth=max_depth).redact_fields([], deeper, {}, None, None)


def test_a_secret_positional_name_makes_the_walk_decide() -> None:
    redactor = _CountingRedactor()
    out = redactor.redact_fields(["update", "123:abc"], {}, {}, None, None, ("update", "bot_token"))
    assert redactor.walks > 0
    assert out[0] == ["update", REDACTED]


def test_a_record_near_its_cap_makes_the_walk_decide() -> None:
    # The error message and traceback leave less than a field cap for the parameters: the walk's arithmetic decides.
    redactor = _CountingRedactor(max_field_bytes=1000, max_record_bytes=2500)
    args, kwargs, labels = _TYPICAL
    out = redactor.redact_fields(args, kwargs, labels, "e" * 900, "t" * 900, ())
    assert redactor.walks > 0
    assert out == _walker(max_field_bytes=1000, max_record_bytes=2500).redact_fields(
        args, kwargs, labels, "e" * 900, "t" * 900, ()
    )


def test_a_configured_key_with_a_digit_is_still_found() -> None:
    # Digits are deleted from the cached shape, except those a key holds.
    redactor = _CountingRedactor(keys=["s3cret"])
    assert redactor.redact_fields([], {"my_s3cret": "v"}, {}, None, None)[1] == {"my_s3cret": REDACTED}
    assert redactor.walks > 0


def test_the_shape_cache_is_bounded() -> None:
    redactor = Redactor()
    for index in range(_SHAPES_MAX + 10):
        redactor.redact_fields([], {f"k{'x' * (index % 50)}{'y' * (index // 50)}": 1}, {}, None, None)
    assert 0 < len(redactor._shapes) <= _SHAPES_MAX


def test_the_shape_cache_never_holds_a_secret_value_and_still_spares_the_verdict() -> None:
    redactor = _CountingRedactor()
    for _ in range(3):
        out = redactor.redact_fields([], {"password": "hunter-two"}, {}, None, None)
        assert out[1] == {"password": REDACTED}
    assert not any(b"hunter" in key for key in redactor._shapes)  # the rejected shape is kept by its digest
    verdicts = redactor.verdicts
    redactor.redact_fields([], {"password": "hunter-two"}, {}, None, None)
    assert redactor.verdicts == verdicts == 1  # found again under its digest: judged once


def test_a_payload_over_the_size_bound_is_walked_and_its_shape_not_judged() -> None:
    # 2,000 ints: 8 KB of JSON, but 12 bytes of budget a value could exceed the 16 KiB field cap.
    redactor = _CountingRedactor()
    out = redactor.redact_fields([list(range(2_000))], {}, {}, None, None)
    assert redactor.walks > 0
    assert redactor._shapes == {}
    assert out == _walker().redact_fields([list(range(2_000))], {}, {}, None, None)


# -- values redacted by key are scrubbed from the same event's error text ------------------------------------------
DSN = "postgres://alice:s3cr3tpw@db:5432/prod"
BOOM = f"cannot connect to {DSN} as alice with hunter2"
BOOM_TB = f'Traceback (most recent call last):\n  File "tasks.py", line 9, in boom\nValueError: {BOOM}\n'


def test_kwargs_redacted_by_key_are_scrubbed_from_the_error_message_and_traceback(redactor: Redactor) -> None:
    kwargs = {"user": "alice", "password": "hunter2", "dsn": DSN}
    _, safe, _, message, tb = redactor.redact_fields([], kwargs, {}, BOOM, BOOM_TB)
    assert safe == {"user": "alice", "password": REDACTED, "dsn": REDACTED}
    assert message == f"cannot connect to {REDACTED} as alice with {REDACTED}"  # the user was not redacted: kept
    assert tb is not None and tb.endswith(f"ValueError: {message}\n")
    assert kwargs["password"] == "hunter2"  # the message is never mutated


def test_positional_parameters_redacted_by_name_are_scrubbed(redactor: Redactor) -> None:
    args, _, _, message, tb = redactor.redact_fields(
        ["alice", "hunter2", DSN], {}, {}, BOOM, BOOM_TB, ("user", "password", "dsn")
    )
    assert args == ["alice", REDACTED, REDACTED]
    assert "hunter2" not in f"{message}{tb}" and "s3cr3tpw" not in f"{message}{tb}" and "alice" in f"{message}"


def test_nested_values_and_labels_redacted_by_key_are_scrubbed(redactor: Redactor) -> None:
    kwargs = {"config": {"db": [{"host": "db", "password": "hunter2"}]}, "credentials": {"user": "bobby", "pin": 98765}}
    labels = {"api_token": "tok-4711-x"}
    text = "login as bobby with hunter2 (pin 98765) failed, token tok-4711-x; host db"
    _, _, _, message, _ = redactor.redact_fields([], kwargs, labels, text, None)
    # `credentials` is redacted as a whole: each of its leaves goes, its keys (names, not secrets) stay.
    assert message == f"login as {REDACTED} with {REDACTED} (pin {REDACTED}) failed, token {REDACTED}; host db"


def test_pairs_given_as_sequences_are_scrubbed(redactor: Redactor) -> None:
    kwargs = {"headers": [("Authorization", "Bearer abc.def.ghi"), ("Accept", "application/json")]}
    text = "401 for Bearer abc.def.ghi (Accept application/json)"
    _, safe, _, message, _ = redactor.redact_fields([], kwargs, {}, text, None)
    assert safe == {"headers": [["Authorization", REDACTED], ["Accept", "application/json"]]}
    assert message == f"401 for {REDACTED} (Accept application/json)"


def test_a_value_too_short_to_mean_anything_is_not_scrubbed(redactor: Redactor) -> None:
    # `max_tokens` holds "token": redacted by key, but masking every "512" or "pw" would mask half a traceback.
    text = "line 512: pw rejected, retry 1; password 'pw'"
    _, safe, _, message, _ = redactor.redact_fields(
        [], {"max_tokens": 512, "password": "pw", "retry": 1}, {}, text, None
    )
    assert safe == {"max_tokens": REDACTED, "password": REDACTED, "retry": 1}
    assert message == text
    # From four characters on, it is.
    _, _, _, message, _ = redactor.redact_fields([], {"password": "pw12"}, {}, "wrong pw12", None)
    assert message == f"wrong {REDACTED}"


def test_values_not_redacted_by_key_are_not_scrubbed(redactor: Redactor) -> None:
    # Only what redaction by key hid is scrubbed: a plain parameter (here proven so by the fast path) stays readable.
    _, safe, _, message, _ = redactor.redact_fields([], {"user": "alice", "city": "Paris"}, {}, "alice in Paris", None)
    assert safe == {"user": "alice", "city": "Paris"} and message == "alice in Paris"


def test_repr_quoted_and_escaped_occurrences_in_a_traceback_are_scrubbed(redactor: Redactor) -> None:
    secret = "hun'ter\\2\n"  # a quote, a backslash, a newline: repr escapes them
    tb = (
        "Traceback (most recent call last):\n"
        f"  login({'alice'!r}, {secret!r})\n"
        f"KeyError: {json.dumps({'given': secret})}\n"
        f"ValueError: rejected {secret!r} and 'hunter2'\n"
    )
    _, _, _, _, out = redactor.redact_fields([], {"password": secret, "old_password": "hunter2"}, {}, None, tb)
    assert out is not None
    assert "hun" not in out and "hunter2" not in out
    assert f"login('alice', \"{REDACTED}\")" in out  # repr's own quotes are kept around the mask
    assert f"ValueError: rejected \"{REDACTED}\" and '{REDACTED}'" in out


def test_a_secret_inside_a_longer_one_does_not_garble_the_mask(redactor: Redactor) -> None:
    kwargs = {"password": "hunter2", "old_password": "hunter2-2019", "token": "REDACTED"}
    text = "tried hunter2-2019 then hunter2 then REDACTED"
    _, _, _, message, _ = redactor.redact_fields([], kwargs, {}, text, None)
    assert message == f"tried {REDACTED} then {REDACTED} then {REDACTED}"


def test_a_scrubbed_value_of_a_free_text_pair_is_masked_as_before(redactor: Redactor) -> None:
    # The patterns still apply after the scrub: `password=hunter2` is `password=***`, as without the parameter.
    text = "denied for password=hunter2 --token hunter2 postgres://u:hunter2@h/db"
    _, _, _, message, _ = redactor.redact_fields([], {"password": "hunter2"}, {}, text, None)
    assert message == "denied for password=*** --token *** postgres://u:***@h/db"


def test_the_scrub_keeps_the_field_cap() -> None:
    # A 4-character secret masked by 10 characters makes the text longer: it is capped after the scrub.
    redactor = Redactor(max_field_bytes=300, max_record_bytes=1000)
    _, _, _, message, tb = redactor.redact_fields([], {"password": "abcd"}, {}, "abcd " * 500, "x abcd\n" * 500)
    assert message is not None and tb is not None
    assert len(message.encode()) <= 300 and len(tb.encode()) <= 300
    assert "abcd" not in message + tb and "…[truncated" in message


def test_secrets_throughout_a_huge_error_text_are_scrubbed_from_its_kept_head_and_tail() -> None:
    redactor = Redactor(max_field_bytes=2000, max_record_bytes=8000)
    secrets = [f"tok-{i:04d}-secret" for i in range(40)]
    kwargs = {f"k{i}_token": secret for i, secret in enumerate(secrets)}
    body = " ".join(secrets * 5000)  # ~3 MB, a secret every 16 characters: one straddles every possible cut
    message = f"bad payload {body}"
    tb = f"Traceback (most recent call last):\n  {body}\nValueError: bad {secrets[3]}\n"
    _, safe, _, out_message, out_tb = redactor.redact_fields([], kwargs, {}, message, tb)
    assert safe == dict.fromkeys(kwargs, REDACTED)
    assert out_message is not None and out_tb is not None
    for text in (out_message, out_tb):
        assert "tok-" not in text and "secret" not in text and "…[truncated" in text
        assert len(text.encode()) <= 2000
    assert out_message.startswith(f"bad payload {REDACTED} {REDACTED} ")
    assert out_tb.endswith(f" {REDACTED}\nValueError: bad {REDACTED}\n")
    # The marker counts the megabytes the text lost (about: masks are counted as they are shown).
    cut = int(out_message.rsplit("…[truncated ", 1)[1].split(" ")[0])
    assert len(message) - 10_000 <= cut <= len(message)


class _WatchedText(str):
    """An error text that records the length of every text a substring search ran over, when run over it whole."""

    searched: list[int]

    def __contains__(self, part: object) -> bool:
        self.searched.append(len(self))
        return str.__contains__(self, cast("str", part))

    def split(self, sep: str | None = None, maxsplit: int = -1) -> list[str]:  # type: ignore[override]
        self.searched.append(len(self))
        return str.split(self, sep, maxsplit)


def test_the_scrub_of_a_huge_error_text_searches_only_what_the_caps_can_keep() -> None:
    # Each secret value is one substring search of the error text: over a 20 MB text, 30 of them held the worker's
    # GIL for half a second. Only the head (and tail) the cap can keep, plus the longest secret, is searched now.
    redactor = Redactor()
    kwargs = {f"k{i}_token": f"value-{i:06d}" for i in range(30)}
    huge = "e" * 5_000_000 + " value-000007"
    message, tb = _WatchedText(huge), _WatchedText(huge)
    message.searched, tb.searched = [], []
    _, _, _, out_message, out_tb = redactor.redact_fields([], kwargs, {}, message, tb)
    assert message.searched == [] and tb.searched == []
    assert out_tb is not None and out_tb.endswith(f" {REDACTED}")
    assert out_message is not None and "…[truncated" in out_message


def _nested(levels: int, leaf: dict[str, Any]) -> dict[str, Any]:
    for _ in range(levels):
        leaf = {"a": leaf}
    return leaf


@pytest.mark.parametrize(
    ("args", "kwargs", "names"),
    [
        ([], {**{f"item{i}": "v" * 100 for i in range(200)}, "password": "hunter2"}, ()),
        ([], {"rows": [{"id": i} for i in range(3000)], "db_password": "hunter2"}, ()),
        ([], {"config": _nested(12, {"password": "hunter2"})}, ()),
        (["x" * 40_000, "y" * 40_000, "hunter2"], {}, ("a", "b", "password")),
        ([[{"id": i} for i in range(3000)], [("Authorization", "hunter2")]], {}, ()),
    ],
    ids=["many keys first", "a long list first", "deeper than max_depth", "positional, after huge ones", "pair"],
)
def test_a_secret_value_the_caps_left_out_of_the_record_is_still_scrubbed_from_the_error_text(
    redactor: Redactor, args: list[Any], kwargs: dict[str, Any], names: tuple[str, ...]
) -> None:
    # The record has no room for the secret (its key is cut or too deep), but the error text quotes its value.
    message = "login failed with hunter2"
    tb = f"Traceback (most recent call last):\n  sync(rows)\nValueError: {message}\n"
    found: list[str] = []
    safe_args, safe_kwargs, _, out_message, out_tb = redactor.redact_fields(args, kwargs, {}, message, tb, names)
    assert "hunter2" not in orjson.dumps([safe_args, safe_kwargs]).decode()
    assert out_message == f"login failed with {REDACTED}"
    assert out_tb is not None and out_tb.endswith(f"ValueError: login failed with {REDACTED}\n")
    # The running event's walk finds it too, for its attempt's final event (params_done: raw values gone).
    safe_args, safe_kwargs, _, _, _ = redactor.redact_fields(args, kwargs, {}, None, None, names, found=found)
    assert "hunter2" in found
    out = redactor.redact_fields(
        safe_args, safe_kwargs, {"x": 1}, message, None, names, params_done=True, secrets=found
    )
    assert out[3] == f"login failed with {REDACTED}"


def test_a_failures_error_text_is_scrubbed_of_a_secret_past_the_caps_of_a_field_of_megabytes(
    redactor: Redactor,
) -> None:
    kwargs = {"rows": [{"id": i, "name": "x"} for i in range(50_000)], "db_password": "hunter2"}  # ~1.2 MB
    _, _, _, message, _ = redactor.redact_fields([], kwargs, {}, "login failed for hunter2", None, as_json=True)
    assert message == f"login failed for {REDACTED}"
    # A running event (no error text) searches past the caps only in fields of up to 64 KiB: every such event pays
    # for the search, and a field of megabytes would cost it ~10 ms a megabyte. Its texts come from the capped walk.
    found: list[str] = []
    redactor.redact_fields([], kwargs, {}, None, None, as_json=True, found=found)
    assert found == []


def test_the_search_for_secret_values_past_the_caps_is_bounded(redactor: Redactor) -> None:
    # A cycle and 200,000 rows: the search stops (cycle, _FIND_MAX_VALUES) instead of walking them all in the worker.
    loop: dict[str, Any] = {"id": 0}
    loop["self"] = loop
    rows: list[Any] = [loop, *({"id": i} for i in range(200_000)), {"token": "tok-past-the-bound"}]
    kwargs = {"first_token": "tok-within-the-bound", "rows": rows}
    text = "failed: tok-within-the-bound tok-past-the-bound"
    _, safe, _, message, _ = redactor.redact_fields([], kwargs, {}, text, None)
    assert safe["first_token"] == REDACTED and "…[truncated" in orjson.dumps(safe["rows"]).decode()
    assert message == f"failed: {REDACTED} tok-past-the-bound"


class _CountingList(list[Any]):
    """A list that counts the items iterated over."""

    taken = 0

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            self.taken += 1
            yield item


def test_the_texts_of_a_huge_secret_container_are_looked_for_among_a_bounded_number_of_its_values() -> None:
    # A secret container of a million short strings: each one's repr and JSON forms cost seconds of the worker's CPU
    # for nothing (too short to be searched for). The search stops at _FIND_MAX_VALUES values.
    tokens = _CountingList(["ab"] * 1_000_000 + ["tok-at-the-end"])
    texts = secret_texts([{"first": "tok-first"}, tokens])
    assert texts == ("tok-first",)
    assert 0 < tokens.taken <= 100_000


class _UnreadableTokens(list[str]):
    """A container that cannot be iterated any more (a lazy result set whose session is closed)."""

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("the session is closed")


def test_a_secret_value_that_cannot_be_read_keeps_the_error_text_and_the_other_secrets_scrubbed(
    redactor: Redactor,
) -> None:
    # Its texts cannot be known; before, the whole redaction raised and the event lost its error message, traceback
    # and parameters (emptied, counted as a redaction failure).
    kwargs = {"tokens": _UnreadableTokens(["tok-1234"]), "password": "hunter2"}
    _, safe, _, message, tb = redactor.redact_fields([], kwargs, {}, "login with hunter2 failed", "Traceback\n")
    assert safe["password"] == REDACTED and safe["tokens"] == REDACTED
    assert message == f"login with {REDACTED} failed" and tb == "Traceback\n"


def test_a_finished_events_error_is_scrubbed_of_the_secrets_its_running_event_found(redactor: Redactor) -> None:
    # The final event carries the running event's redacted parameters (params_done): the raw values are gone, and
    # `found` of the running event's call is what brings their texts to the final one's.
    found: list[str] = []
    args, kwargs, _, _, _ = redactor.redact_fields(
        ["hunter2"], {"dsn": DSN}, {}, None, None, ("password",), found=found
    )
    assert found and "hunter2" in found and DSN in found
    out = redactor.redact_fields(args, kwargs, {"x": 1}, BOOM, BOOM_TB, ("password",), params_done=True, secrets=found)
    assert "hunter2" not in f"{out[3]}{out[4]}" and "s3cr3tpw" not in f"{out[3]}{out[4]}"
    # Without them, only the free-text patterns apply (the URL's password), not redaction by key.
    alone = redactor.redact_fields(args, kwargs, {"x": 1}, BOOM, None, ("password",), params_done=True)
    assert alone[3] == "cannot connect to postgres://alice:***@db:5432/prod as alice with hunter2"


def test_plain_parameters_find_no_secret(redactor: Redactor) -> None:
    found: list[str] = []
    redactor.redact_fields([1], {"lang": "en"}, {"q": "default"}, None, None, found=found)
    assert found == []


def test_secret_texts_of_odd_values() -> None:
    @dataclasses.dataclass
    class Login:
        user: str
        secret: bytes

    class Model(BaseModel):
        key: str

    texts = secret_texts([Login("ann-1", b"\x00raw-bytes"), Model(key="mdl-key"), None, True, 3.25, 10**20, ("abc",)])
    assert {"ann-1", "\\x00raw-bytes", "mdl-key", "3.25", str(10**20)} <= set(texts)
    assert not {"True", "None", "abc"} & set(texts)
    assert list(texts) == sorted(texts, key=len, reverse=True)


# -- through the real middleware: eager (events built on the loop) and deferred (handles built in a sink's thread)
@pytest.mark.parametrize("path", ["eager", "deferred, coalesced", "deferred, running event built"])
@pytest.mark.parametrize("positional", [False, True])
async def test_a_task_raising_with_its_password_in_the_message_records_no_password(path: str, positional: bool) -> None:
    from prometheus_client import CollectorRegistry
    from taskiq import InMemoryBroker

    from taskiq_monitor.events import record_json, resolve
    from taskiq_monitor.middleware import MonitoringMiddleware
    from tests.recording_sink import HandleSink, RecordingSink

    sink = RecordingSink() if path == "eager" else HandleSink()
    settings = Settings(events_coalesce=path == "deferred, coalesced")
    monitor = MonitoringMiddleware(settings, registry=CollectorRegistry(), sinks=[sink])
    broker = InMemoryBroker(await_inplace=True).with_middlewares(monitor)

    @broker.task(task_name="boom")
    async def boom(user: str, password: str, dsn: str) -> None:
        raise ValueError(f"cannot connect to {dsn} as {user} with {password}")

    await broker.startup()
    if positional:
        await boom.kiq("alice", "hunter2", DSN)
    else:
        await boom.kiq(user="alice", password="hunter2", dsn=DSN)
    await broker.shutdown()
    items = sink.events if isinstance(sink, RecordingSink) else sink.items
    events = [event for event in map(resolve, items) if event is not None]
    statuses = [event.status for event in events]
    assert statuses == (["failed", "pending"] if path == "deferred, coalesced" else ["running", "failed", "pending"])
    failed = events[statuses.index("failed")]
    assert failed.error_message == f"cannot connect to {REDACTED} as alice with {REDACTED}"
    assert failed.traceback is not None and failed.traceback.endswith(f"ValueError: {failed.error_message}\n")
    assert (failed.args, failed.kwargs) == (
        (["alice", REDACTED, REDACTED], {})
        if positional
        else ([], {"user": "alice", "password": REDACTED, "dsn": REDACTED})
    )
    for event in events:
        line = record_json(event)
        assert "hunter2" not in line and "s3cr3tpw" not in line, event.status


class _UnprintableError(Exception):
    """An exception whose message cannot be rendered: its ``__str__`` raises (a bug in an app's exception class)."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


@pytest.mark.parametrize("path", ["eager", "deferred, coalesced", "deferred, running event built"])
async def test_a_task_raising_an_exception_whose_str_raises_is_still_recorded_as_failed(path: str) -> None:
    from prometheus_client import CollectorRegistry
    from taskiq import InMemoryBroker

    from taskiq_monitor.events import resolve
    from taskiq_monitor.middleware import MonitoringMiddleware
    from tests.recording_sink import HandleSink, RecordingSink

    sink = RecordingSink() if path == "eager" else HandleSink()
    registry = CollectorRegistry()
    settings = Settings(events_coalesce=path == "deferred, coalesced")
    monitor = MonitoringMiddleware(settings, registry=registry, sinks=[sink])
    broker = InMemoryBroker(await_inplace=True).with_middlewares(monitor)

    @broker.task(task_name="unprintable")
    async def unprintable() -> None:
        raise _UnprintableError()

    await broker.startup()
    await unprintable.kiq()
    await broker.shutdown()
    items = sink.events if isinstance(sink, RecordingSink) else sink.items
    events = [event for event in map(resolve, items) if event is not None]
    failed = [event for event in events if event.status == "failed"]
    # Without its final event the attempt stayed `running` in the state store and never reached the history.
    assert len(failed) == 1, [event.status for event in events]
    assert failed[0].error_type == "_UnprintableError"
    assert failed[0].error_message == "<exception str() failed>"
    assert failed[0].traceback is not None
    assert failed[0].traceback.endswith("_UnprintableError: <exception str() failed>\n")
    errors = [s for f in registry.collect() for s in f.samples if s.name == "taskiq_monitor_errors_total"]
    assert not [s for s in errors if s.value], errors


@pytest.mark.parametrize("path", ["eager", "deferred, coalesced", "deferred, running event built"])
async def test_a_task_whose_password_follows_a_long_list_records_no_password_in_its_error(path: str) -> None:
    from prometheus_client import CollectorRegistry
    from taskiq import InMemoryBroker

    from taskiq_monitor.events import record_json, resolve
    from taskiq_monitor.middleware import MonitoringMiddleware
    from tests.recording_sink import HandleSink, RecordingSink

    sink = RecordingSink() if path == "eager" else HandleSink()
    settings = Settings(events_coalesce=path == "deferred, coalesced")
    monitor = MonitoringMiddleware(settings, registry=CollectorRegistry(), sinks=[sink])
    broker = InMemoryBroker(await_inplace=True).with_middlewares(monitor)

    @broker.task(task_name="sync_rows")
    async def sync_rows(rows: list[dict[str, int]], db_password: str) -> None:
        raise PermissionError(f"login failed for {db_password} after {len(rows)} rows")

    await broker.startup()
    await sync_rows.kiq(rows=[{"id": i} for i in range(3000)], db_password="hunter2")
    await broker.shutdown()
    items = sink.events if isinstance(sink, RecordingSink) else sink.items
    events = [event for event in map(resolve, items) if event is not None]
    failed = [event for event in events if event.status == "failed"]
    assert len(failed) == 1
    assert failed[0].error_message == f"login failed for {REDACTED} after 3000 rows"
    assert "…" in failed[0].kwargs  # the record had no room for the password's key: the caps cut it
    for event in events:
        assert "hunter2" not in record_json(event), event.status
