#!/usr/bin/env python3
"""Generate the Prometheus recording and alerting rules of taskiq-monitor (taskiq_monitor.mixin.rules).

Edit ``exporter/taskiq_monitor/mixin/config.py`` (or pass flags), never the YAML:

    python prometheus/rules/generate.py                 # rewrite the committed files
    python prometheus/rules/generate.py --check         # exit 1 if the committed files are stale
    python prometheus/rules/generate.py --grafana-url https://grafana.example.org \\
        --runbook-url https://git.example.org/ops/taskiq-monitor/-/blob/main/docs/runbook.md
"""

import sys
from pathlib import Path

from taskiq_monitor.mixin.rules import main

if __name__ == "__main__":
    sys.exit(main(default_out_dir=Path(__file__).resolve().parent))
