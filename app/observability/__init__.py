"""What operators see of a running kmflow: Prometheus metrics, structured logs, request ids."""
