"""Dashboards and Prometheus rules of taskiq-monitor, shaped like a monitoring mixin (celery-mixin, kubernetes-mixin).

- ``config``: the one :class:`~taskiq_monitor.mixin.config.Config` (selectors, dashboard uids, tags, windows,
  thresholds, links). Standard library only: the exporter reads the health thresholds at run time.
- ``promql``: PromQL expressions shared by the rules and the dashboards (one success/failure ratio, written once).
- ``rules``: recording and alerting rules, rendered to ``prometheus/rules/*.yml`` (needs PyYAML).
- ``dashboards``: the panel library and one module per Grafana dashboard, rendered to ``grafana/dashboards/*.json``
  (needs the development-only grafana-foundation-sdk).

``grafana/generate.py`` and ``prometheus/rules/generate.py`` are thin entry points over the last two; the rendered
files are committed and the tests fail when they drift. This module imports only the configuration, so importing the
package never pulls in a generator dependency.
"""

from taskiq_monitor.mixin.config import CONFIG, Config

__all__ = ["CONFIG", "Config"]
