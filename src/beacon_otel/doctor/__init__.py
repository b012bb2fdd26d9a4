"""`beacon-otel doctor`: whether this environment would send Beacon events, checked step by step."""
