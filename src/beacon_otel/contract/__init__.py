"""The ingest contract: an event's fields and limits, and the batch that carries events."""
