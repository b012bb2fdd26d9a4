"""Everything Beacon knows about each web framework: its hooks, route templates and errors."""
