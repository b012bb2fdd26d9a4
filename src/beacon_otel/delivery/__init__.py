"""Events to the ingest: the buffer, the delivery thread, what an answer means, and the spool policy."""
