#!/usr/bin/env python3
"""Generate the TaskIQ Grafana dashboards from code (taskiq_monitor.mixin.dashboards).

The JSON under ``grafana/dashboards/`` is rendered by the package and committed; ``tests/test_grafana_dashboards.py``
fails when the committed files differ, so edit the package and regenerate instead of editing the JSON::

    python grafana/generate.py           # rewrite grafana/dashboards/*.json
    python grafana/generate.py --check   # exit 1 if the committed JSON is stale
"""

import sys
from pathlib import Path

from taskiq_monitor.mixin.dashboards import main

if __name__ == "__main__":
    sys.exit(main(default_out=Path(__file__).resolve().parent / "dashboards"))
