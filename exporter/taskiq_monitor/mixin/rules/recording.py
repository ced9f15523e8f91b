"""Recording rules, named ``level:metric:operations`` (``task_name:taskiq_tasks_completed:rate5m``).

One group per window of :attr:`Config.ratio_windows` (throughput, started, success and failure ratio, FR-013 mean
duration) and one of histogram quantiles. The ratios and the mean are the expressions of
:mod:`taskiq_monitor.mixin.promql` that the dashboards also show, so a recorded series and its panel agree.
"""

from __future__ import annotations

from typing import Any

from taskiq_monitor.mixin import promql
from taskiq_monitor.mixin.config import Config


def _name(metric: str, operations: str, level: str = "task_name") -> str:
    """``level:metric:operations``; the metric without ``_total``, as the convention has it."""
    return f"{level}:{metric.removesuffix('_total')}:{operations}"


def _quantile_suffix(q: float) -> str:
    return "p" + f"{q * 100:g}".replace(".", "_")


def _window_group(cfg: Config, w: str) -> dict[str, Any]:
    sel = cfg.selector
    by_status = _name(promql.COMPLETED, f"rate{w}", level="task_name_status")
    rules: list[dict[str, Any]] = [
        # Per status: success, failed (final outcomes) and retried (an attempt that will be retried).
        {"record": by_status, "expr": promql.total(promql.COMPLETED, sel, w, by="task_name, status")},
        # Throughput = final outcomes per second (retried attempts are not finished tasks).
        {"record": _name(promql.COMPLETED, f"rate{w}"), "expr": f"sum by (task_name) ({by_status}{{{promql.FINAL}}})"},
        # Attempts started per second (every retry is a new attempt).
        {"record": _name(promql.STARTED, f"rate{w}"), "expr": promql.total(promql.STARTED, sel, w)},
        # success / (success + failed); 0 rather than missing when a status has no series yet;
        # no sample at all when nothing finished in the window (instead of NaN).
        {"record": _name("taskiq_tasks_success", f"ratio_rate{w}"), "expr": promql.success_ratio(sel, w)},
        {"record": _name("taskiq_tasks_failure", f"ratio_rate{w}"), "expr": promql.failure_ratio(sel, w)},
        # FR-013: average execution time = sum(duration of successful runs) / count(successful runs).
        {"record": _name(promql.DURATION, f"mean{w}"), "expr": promql.mean_duration(sel, w)},
    ]
    if w == cfg.ratio_windows[0]:
        rules.insert(3, {"record": _name(promql.ENQUEUED, f"rate{w}"), "expr": promql.total(promql.ENQUEUED, sel, w)})
    return {"name": f"taskiq.recording.{w}", "rules": rules}


def recording_rules(cfg: Config) -> list[dict[str, Any]]:
    groups = [_window_group(cfg, w) for w in cfg.ratio_windows]
    qw = cfg.quantile_window
    quantile_rules = [
        {
            "record": _name(metric, f"{_quantile_suffix(q)}_rate{qw}"),
            "expr": promql.quantile(q, metric, cfg.selector, qw, by="task_name"),
        }
        for metric in (promql.DURATION, promql.QUEUE_WAIT)
        for q in cfg.quantiles
    ]
    groups.append({"name": "taskiq.recording.quantiles", "rules": quantile_rules})
    return groups
