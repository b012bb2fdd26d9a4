"""Setting Beacon up: ``configure()`` by hand, or ``opentelemetry-instrument``'s entry points."""
