"""The configuration: its settings, the kinds of value they hold, and where events may be sent."""
