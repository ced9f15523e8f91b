"""taskiq-monitor: Prometheus/Loki/Grafana/Alertmanager monitoring for TaskIQ."""
