"""The ways a batch leaves the process: HTTP to the ingest, or the dry run's console."""
