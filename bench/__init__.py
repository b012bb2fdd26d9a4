"""Benchmarks against the alternatives: ``make bench`` runs them all (``bench/run.py``) into RESULTS.md."""
