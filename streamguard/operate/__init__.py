"""Watch a running pipeline: top, alerts, metrics scrapes, the Grafana dashboard."""
