"""A finished HTTP server span and the request's facts become one Beacon event."""
