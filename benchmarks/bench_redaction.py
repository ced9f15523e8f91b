"""Redaction micro-benchmark: ``Redactor.redact_fields`` with its fast path against the walk alone, side by side.

    PYTHONPATH=exporter python benchmarks/bench_redaction.py [--repeat 3] [--budget 0.1]

Each case runs both ways in this one process, interleaved, and reports the best per-call time of ``--repeat`` rounds
(each about ``--budget`` seconds) and the ratio fast/walk. Before timing, both outputs are compared: a case whose
outputs differ stops the run.

* **taken**: the typical parameters of a task (the running event: args, kwargs and labels; the finished event:
  labels only, ``params_done``), then larger realistic payloads.
* **miss**: the fast path taken, but every call a new shape (free text that changes per call), so the shape's verdict
  is computed each time instead of read from the cache.
* **fall-back**: something the walk must handle (a URL with credentials, a secret key, NaN, an Enum; a payload whose
  size bound — its JSON length + 12 bytes a value — leaves the field cap in doubt): the check fails and the walk
  runs. The ratio is the overhead the check adds to the slow path.
"""

from __future__ import annotations

import argparse
import enum
import math
import os
import random
import string
import sys
import timeit
from collections.abc import Callable
from typing import Any

import orjson

from taskiq_monitor.redaction import _PLAIN_JSON_OPTIONS, Redactor

LABELS = {"taskiq_monitor_enqueued_at": 1764612345.12}
TYPICAL: tuple[list[Any], dict[str, Any]] = ([12345], {"options": {"lang": "en", "retries": 2}})


class Colour(enum.Enum):
    RED = "red"


def _telegram_update() -> dict[str, Any]:
    """A webhook body of about 1 KB: what a bot's task typically receives."""
    user = {"id": 123456789, "is_bot": False, "first_name": "Ann", "last_name": "Lee", "language_code": "en"}
    return {
        "update_id": 987654321,
        "message": {
            "message_id": 4242,
            "from": user,
            "chat": {"id": 123456789, "first_name": "Ann", "last_name": "Lee", "type": "private"},
            "date": 1764612345,
            "text": "Hello, I would like to order two large pizzas for tonight, please.",
            "entities": [{"offset": 0, "length": 5, "type": "bold"}],
            "reply_to_message": {"message_id": 4241, "from": user, "date": 1764612300, "text": "What can I do?"},
        },
    }


def _order(items: int) -> dict[str, Any]:
    return {
        "order_id": 77123,
        "customer": {"id": 991, "name": "Ann Lee", "email_verified": True, "tier": "gold"},
        "items": [
            {"sku": f"SKU{i:05d}", "name": f"Item number {i}", "qty": i % 4 + 1, "price": 9.99 + i, "tags": ["a", "b"]}
            for i in range(items)
        ],
        "notes": None,
    }


def _words(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(count)]


Inputs = tuple[list[Any], dict[str, Any], dict[str, Any], tuple[str, ...], bool]


def _cases() -> list[tuple[str, str, Callable[[], Inputs]]]:
    """(group, name, next_inputs): each call of ``next_inputs`` gives redact_fields' arguments for one call."""
    args, kwargs = TYPICAL
    update = _telegram_update()
    order20, order50, order100 = _order(20), _order(50), _order(100)
    words = _words(4096)  # more distinct shapes than the cache holds: every call a miss

    def cycle(inputs: list[Inputs]) -> Callable[[], Inputs]:
        position = [0]

        def next_inputs() -> Inputs:
            position[0] = (position[0] + 1) % len(inputs)
            return inputs[position[0]]

        return next_inputs

    def fixed(
        args: list[Any], kwargs: dict[str, Any], names: tuple[str, ...] = (), params_done: bool = False
    ) -> Callable[[], Inputs]:
        inputs = (args, kwargs, LABELS, names, params_done)
        return lambda: inputs

    def free_text(word: str) -> Inputs:
        return [12345], {"text": f"please call {word} about the order", "lang": "en"}, LABELS, ("user_id",), False

    def update_text(word: str) -> Inputs:
        body = _telegram_update()
        body["message"]["text"] = f"Hello {word}, two large pizzas for tonight, please."
        return [body], {}, LABELS, ("update",), False

    return [
        ("taken", "typical running (args+kwargs+labels)", fixed(args, kwargs, ("user_id",))),
        ("taken", "typical finished (labels, params_done)", fixed(args, kwargs, params_done=True)),
        ("taken", "telegram update ~0.9 KB", fixed([update], {}, ("update",))),
        ("taken", "order, 20 items ~2 KB", fixed([], {"order": order20})),
        ("taken", "order, 50 items ~4.3 KB", fixed([], {"order": order50})),
        ("taken", "200 ints", fixed([list(range(200))], {})),
        ("miss", "typical + free text, new shape/call", cycle([free_text(word) for word in words])),
        ("miss", "telegram update, new shape/call", cycle([update_text(word) for word in words])),
        (
            "miss",
            "order, 50 items, new shape/call",
            cycle([([], {"order": order50, "by": w}, LABELS, (), False) for w in words]),
        ),
        ("fall-back", "typical + URL with credentials", fixed(args, {**kwargs, "db": "postgres://app:pw@db/app"})),
        ("fall-back", "typical + secret key", fixed(args, {**kwargs, "api_key": "k-123"})),
        ("fall-back", "typical + NaN", fixed(args, {**kwargs, "ratio": math.nan})),
        ("fall-back", "typical + Enum", fixed(args, {**kwargs, "colour": Colour.RED})),
        ("fall-back", "telegram update + token", fixed([update], {"bot_token": "123:abc"}, ("update",))),
        ("fall-back", "order, 100 items + password", fixed([], {"order": order100, "password": "pw"})),
        ("fall-back", "order, 100 items ~9 KB (over the size bound)", fixed([], {"order": order100})),
        ("fall-back", "order, 200 items ~17 KB (over the field cap)", fixed([], {"order": _order(200)})),
    ]


def _best_ns(call: Callable[[], Any], repeat: int, budget: float) -> float:
    timer = timeit.Timer(call)
    number, _ = timer.autorange()
    number = max(1, int(number * budget / 0.2))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e9


# What a sink's queue holds at once when its thread falls behind the loop (the state store's default buffer).
QUEUED = 10_000


def _kept(repeat: int) -> None:
    """The cost of the texts a queued event keeps, which the timings above (results dropped at once) cannot show.

    The fast path keeps, per event, the JSON text of each field it proved safe. orjson's own output is allocated with
    room to spare in the C heap and shrunk in place: ``QUEUED`` of them kept alive at once pin that heap, and each
    new ``dumps`` allocates afresh. Side by side, for ``QUEUED`` typical running events (three fields each), in one
    process, best of ``repeat`` interleaved rounds: the texts dropped at once; kept as orjson made them; kept as
    exact-size copies (what ``redact_fields(as_json=True)`` returns); and the whole ``redact_fields`` call, kept."""
    fields = [[[i], TYPICAL[1], {"taskiq_monitor_enqueued_at": 1764612345.12 + i}] for i in range(QUEUED)]
    redactor = Redactor()

    def dropped() -> None:
        for a, k, lab in fields:
            orjson.dumps(a, option=_PLAIN_JSON_OPTIONS)
            orjson.dumps(k, option=_PLAIN_JSON_OPTIONS)
            orjson.dumps(lab, option=_PLAIN_JSON_OPTIONS)

    def kept_own() -> list[Any]:
        return [
            (
                orjson.dumps(a, option=_PLAIN_JSON_OPTIONS),
                orjson.dumps(k, option=_PLAIN_JSON_OPTIONS),
                orjson.dumps(lab, option=_PLAIN_JSON_OPTIONS),
            )
            for a, k, lab in fields
        ]

    def kept_copies() -> list[Any]:
        return [
            (
                b"%b" % orjson.dumps(a, option=_PLAIN_JSON_OPTIONS),
                b"%b" % orjson.dumps(k, option=_PLAIN_JSON_OPTIONS),
                b"%b" % orjson.dumps(lab, option=_PLAIN_JSON_OPTIONS),
            )
            for a, k, lab in fields
        ]

    def kept_calls() -> list[Any]:
        return [redactor.redact_fields(a, k, lab, None, None, (), as_json=True) for a, k, lab in fields]

    ways: dict[str, Callable[[], Any]] = {
        "dumps x3, dropped": dropped,
        "dumps x3, kept as orjson made them": kept_own,
        "dumps x3, kept as exact-size copies": kept_copies,
        "redact_fields(as_json=True), kept": kept_calls,
    }
    best = dict.fromkeys(ways, math.inf)
    for _ in range(max(2, repeat)):
        for name, way in ways.items():
            start = timeit.default_timer()
            held = way()
            best[name] = min(best[name], (timeit.default_timer() - start) / QUEUED * 1e9)
            del held
    print(f"{QUEUED:,} typical running events held at once (a sink's queue behind), ns per event:")
    for name, ns in best.items():
        print(f"  {name:40} {ns:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--budget", type=float, default=0.1, help="seconds per timing round")
    opts = parser.parse_args()
    fast = Redactor()
    walk = Redactor()
    walk._fast_path = False
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, orjson {orjson.__version__}, load average {load[0]:.2f} {load[1]:.2f}")
    print(f"{'group':10} {'case':46} {'walk µs':>9} {'fast µs':>9} {'fast/walk':>9}")
    for group, name, next_inputs in _cases():
        for _ in range(3):
            args, kwargs, labels, names, done = next_inputs()
            expected = walk.redact_fields(args, kwargs, labels, None, None, names, params_done=done)
            assert fast.redact_fields(args, kwargs, labels, None, None, names, params_done=done) == expected, name

        def call(redactor: Redactor, next_inputs: Callable[[], Inputs] = next_inputs) -> Any:
            args, kwargs, labels, names, done = next_inputs()
            return redactor.redact_fields(args, kwargs, labels, None, None, names, params_done=done)

        walk_ns = fast_ns = math.inf
        for _ in range(2):  # interleaved, so that a load spike hits both ways
            walk_ns = min(walk_ns, _best_ns(lambda: call(walk), opts.repeat, opts.budget / 2))
            fast_ns = min(fast_ns, _best_ns(lambda: call(fast), opts.repeat, opts.budget / 2))
        print(f"{group:10} {name:46} {walk_ns / 1e3:9.2f} {fast_ns / 1e3:9.2f} {fast_ns / walk_ns:9.2f}")
    # Where the typical case's fast path spends its time: the copy (loads) and its proof (== the input).
    args, kwargs = TYPICAL
    fields = [args, kwargs, LABELS]
    text = orjson.dumps(fields, option=_PLAIN_JSON_OPTIONS)
    dumps_ns = _best_ns(lambda: orjson.dumps(fields, option=_PLAIN_JSON_OPTIONS), opts.repeat, opts.budget)
    copy_ns = _best_ns(lambda: orjson.loads(text) == fields, opts.repeat, opts.budget)
    print(f"typical running, parts of the fast path: dumps {dumps_ns:.0f} ns, loads + compare {copy_ns:.0f} ns")
    _kept(opts.repeat)
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f}")


if __name__ == "__main__":
    main()
