"""The request being served: what it says that its span must not carry, kept until its span ends."""
