"""PromQL expressions shared by the rules and the dashboards: each is written once, here.

Every function takes the series ``selector`` (the rules' ``job=~"taskiq|taskiq-app"``, or the dashboards'
``job=~"$job", task_name=~"$task_name"``) and returns text; only the raw metrics of the contract are read, so the
dashboards work on a Prometheus without the recording rules.

The ratios were written three times before and had drifted: the rules guarded against a missing status series,
the dashboards did not, so a task type that had only ever failed showed no success rate instead of 0 %.
:func:`guarded_ratio` is that guard, and every ratio goes through it::

    >>> failure_ratio('job="taskiq"', "5m")  # doctest: +ELLIPSIS
    '(sum by (task_name) (rate(taskiq_tasks_completed_total{job="taskiq", status="failed"}[5m])) or 0 * ...'
"""

from __future__ import annotations

COMPLETED = "taskiq_tasks_completed_total"
STARTED = "taskiq_tasks_started_total"
ENQUEUED = "taskiq_tasks_enqueued_total"
ERRORS = "taskiq_task_errors_total"
DURATION = "taskiq_task_duration_seconds"
QUEUE_WAIT = "taskiq_task_queue_wait_seconds"
RUNNING = "taskiq_tasks_running"
PENDING = "taskiq_tasks_pending"
OLDEST_PENDING_AGE = "taskiq_task_oldest_pending_age_seconds"
PENDING_EXPIRED = "taskiq_tasks_pending_expired_total"
WORKERS = "taskiq_workers"
HISTORY_EXECUTIONS = "taskiq_monitor_history_executions"
HISTORY_EVICTED = "taskiq_monitor_history_evicted_total"
# The monitoring's own health.
LOG_RECORDS = "taskiq_monitor_log_records_total"
STATE_EVENTS = "taskiq_monitor_state_events_total"
STATE_UP = "taskiq_monitor_state_up"

# Final outcomes: a retried attempt is not a finished task.
FINAL = 'status=~"success|failed"'


def status_is(status: str) -> str:
    return f'status="{status}"'


def series(metric: str, selector: str, extra: str = "") -> str:
    """``metric{selector, extra}``."""
    return f"{metric}{{{selector}{', ' + extra if extra else ''}}}"


def aggregate(op: str, inner: str, by: str = "") -> str:
    """``op by (by) (inner)``, or ``op(inner)`` across everything when ``by`` is empty."""
    return f"{op} by ({by}) ({inner})" if by else f"{op}({inner})"


def total(metric: str, selector: str, window: str, *, extra: str = "", by: str = "task_name", fn: str = "rate") -> str:
    """``sum by (<by>) (<fn>(metric{selector, extra}[window]))``, e.g. completions per second per task type."""
    return aggregate("sum", f"{fn}({series(metric, selector, extra)}[{window}])", by)


def guarded_ratio(part: str, whole: str) -> str:
    """``part / whole``: 0, not missing, when ``part`` has no series (a status never seen yet); no sample, not NaN,
    when ``whole`` is 0 (nothing happened in the window)."""
    return f"({part} or 0 * {whole}) / ({whole} > 0)"


def outcome_ratio(status: str, selector: str, window: str, by: str = "task_name") -> str:
    """Share of the final outcomes (success + failed) that ended in ``status``; retried attempts excluded."""
    return guarded_ratio(
        total(COMPLETED, selector, window, extra=status_is(status), by=by),
        total(COMPLETED, selector, window, extra=FINAL, by=by),
    )


def success_ratio(selector: str, window: str, by: str = "task_name") -> str:
    return outcome_ratio("success", selector, window, by)


def failure_ratio(selector: str, window: str, by: str = "task_name") -> str:
    return outcome_ratio("failed", selector, window, by)


def retry_ratio(selector: str, window: str, by: str = "task_name") -> str:
    """Attempts that ended in a retry per attempt started (every retry is a new attempt)."""
    return guarded_ratio(
        total(COMPLETED, selector, window, extra=status_is("retried"), by=by),
        total(STARTED, selector, window, by=by),
    )


def finished(selector: str, window: str, by: str = "task_name") -> str:
    """Final outcomes counted over the window: the volume guard of the failure-ratio alert."""
    return total(COMPLETED, selector, window, extra=FINAL, by=by, fn="increase")


def completed(status: str, selector: str, window: str, by: str = "task_name") -> str:
    """Attempts that ended in ``status`` over the window (a count, for stat panels and table cells)."""
    return total(COMPLETED, selector, window, extra=status_is(status), by=by, fn="increase")


def dropped(metric: str, selector: str, window: str) -> str:
    """Records the monitoring dropped over the window (``result="dropped"``), per exporter instance."""
    return total(metric, selector, window, extra='result="dropped"', by="job, instance", fn="increase")


def mean_duration(selector: str, window: str, by: str = "task_name") -> str:
    """FR-013: sum(duration of successful runs) / count(successful runs); no sample when nothing succeeded."""
    ok = status_is("success")
    return (
        f"{total(DURATION + '_sum', selector, window, extra=ok, by=by)}"
        f" / ({total(DURATION + '_count', selector, window, extra=ok, by=by)} > 0)"
    )


def quantile(q: float, metric: str, selector: str, window: str, by: str = "") -> str:
    """``histogram_quantile`` of a histogram family, grouped by ``le`` plus ``by``."""
    grouping = f"le, {by}" if by else "le"
    return f"histogram_quantile({q:g}, {total(metric + '_bucket', selector, window, by=grouping)})"


# Queue-wide gauges: every exporter sharing the Redis reports the same value, so max de-duplicates the exporters
# (sum would multiply them); a sum over task types comes after the max.


def pending(selector: str, by: str = "task_name") -> str:
    per_type = aggregate("max", series(PENDING, selector), "task_name")
    return per_type if by == "task_name" else aggregate("sum", per_type, by)


def oldest_pending_age(selector: str, by: str = "task_name") -> str:
    return aggregate("max", series(OLDEST_PENDING_AGE, selector), by)


def workers(selector: str) -> str:
    """Live worker processes by heartbeat (queue-wide: max, not sum)."""
    return aggregate("max", series(WORKERS, selector))


def running(selector: str, by: str = "task_name") -> str:
    """Tasks executing now: each worker process reports its own, so these add up."""
    return aggregate("sum", series(RUNNING, selector), by)
