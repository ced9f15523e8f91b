"""Client input rules shared by the REST API and the live feed: messages stay short whatever was sent or is known."""

from __future__ import annotations

import pytest

from taskiq_monitor.service.query import InputError, parse_filters, parse_id

MANY = {f"billing.tasks:send_invoice_{i}" for i in range(500)} | {"reports:nightly_export"}


def test_an_unknown_task_name_among_few_lists_them_all() -> None:
    with pytest.raises(InputError) as err:
        parse_filters(["reports:nightly"], None, {"reports:nightly_export", "mail:send"})
    assert err.value.code == "unknown_task_name"
    assert err.value.message == "unknown task_name 'reports:nightly'; known: 'mail:send', 'reports:nightly_export'"


def test_an_unknown_task_name_among_hundreds_names_the_closest_few_and_a_count() -> None:
    with pytest.raises(InputError) as err:
        parse_filters(["reports:nightly_exprot"], None, MANY)
    message = err.value.message
    assert message.startswith("unknown task_name 'reports:nightly_exprot'; closest: 'reports:nightly_export'")
    assert "501 task names known; GET /api/v1/tasks lists them" in message
    assert message.count("send_invoice_") <= 5 and len(message) < 400, message


def test_an_unknown_task_name_like_none_of_hundreds_gives_the_count_only() -> None:
    with pytest.raises(InputError) as err:
        parse_filters(["zzz"], None, MANY)
    assert err.value.message == "unknown task_name 'zzz'; 501 task names known; GET /api/v1/tasks lists them"


def test_many_or_long_unknown_values_are_capped_in_the_message() -> None:
    with pytest.raises(InputError) as err:
        parse_filters([",".join(f"n{i}" for i in range(400))], None, MANY)
    assert "'n0', 'n1', 'n10', 'n100', 'n101' and 395 more;" in err.value.message
    with pytest.raises(InputError) as err:
        parse_filters(None, ["Q" * 5000], MANY)
    assert err.value.code == "unknown_status"
    assert "'" + "Q" * 80 + "'… (5,000 characters); one of: pending" in err.value.message
    assert len(err.value.message) < 200


def test_a_long_malformed_event_id_is_not_echoed_in_full() -> None:
    with pytest.raises(InputError) as err:
        parse_id("1" * 5000 + "-0", "cursor")
    assert err.value.code == "malformed_id" and "(5,002 characters)" in err.value.message
    assert len(err.value.message) < 250 and "1" * 81 not in err.value.message
    with pytest.raises(InputError, match="ASCII digits"):
        parse_id("\u0661\u0662-\u0660", "last_event_id")  # Arabic-Indic 12-0
    assert parse_id(" 12-3 ", "cursor") == (12, 3)
