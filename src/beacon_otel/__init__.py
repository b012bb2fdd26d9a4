"""beacon-otel."""
